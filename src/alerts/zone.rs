//! Safe-zone shapes (circle, GeoJSON polygon) as types that cannot hold invalid data, and where a fix lies relative to one given its GPS accuracy.

use geo::{Contains, Distance, Haversine, HaversineClosestPoint, LineString, Point, Polygon};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest circle radius, and most polygon vertices.
pub const MAX_RADIUS_M: f64 = 100_000.0;
pub const MAX_VERTICES: usize = 1000;

/// A zone as drawn by the user. Build one with [`Shape::parse`].
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Circle { center: Point<f64>, radius_m: f64 },
    Polygon(Polygon<f64>),
}

/// Where a fix is, allowing for its accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Inside,
    /// Outside by more than the accuracy margin: certainly outside.
    Outside,
    /// Outside, but within the margin: could be GPS noise; decides nothing.
    Unsure,
}

/// The JSON form, for the API and the database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
enum ShapeJson {
    #[serde(rename = "circle")]
    Circle { center: [f64; 2], radius_m: f64 },
    #[serde(rename = "Polygon")]
    Polygon { coordinates: Vec<Vec<[f64; 2]>> },
}

fn check_position([lon, lat]: [f64; 2]) -> Result<Point<f64>, String> {
    if !(-180.0..=180.0).contains(&lon) || !(-90.0..=90.0).contains(&lat) {
        return Err(format!(
            "[{lon}, {lat}] is not a [longitude, latitude] position"
        ));
    }
    Ok(Point::new(lon, lat))
}

impl Shape {
    /// Parses `{"type":"circle","center":[lon,lat],"radius_m":R}` or a GeoJSON `Polygon` (one
    /// closed outer ring; holes are not supported), with the reason when it is not one.
    pub fn parse(value: &Value) -> Result<Shape, String> {
        let json: ShapeJson = serde_json::from_value(value.clone()).map_err(|e| {
            format!("must be a circle {{\"type\":\"circle\",\"center\":[lon,lat],\"radius_m\":R}} or a GeoJSON Polygon: {e}")
        })?;
        match json {
            ShapeJson::Circle { center, radius_m } => {
                let center = check_position(center)?;
                if !(radius_m.is_finite() && (1.0..=MAX_RADIUS_M).contains(&radius_m)) {
                    return Err(format!("radius_m must be 1 to {MAX_RADIUS_M} metres"));
                }
                Ok(Shape::Circle { center, radius_m })
            }
            ShapeJson::Polygon { coordinates } => {
                let [ring] = coordinates.as_slice() else {
                    return Err(
                        "a Polygon must have exactly one ring (holes are not supported)".to_owned(),
                    );
                };
                if ring.len() < 4 || ring.len() > MAX_VERTICES {
                    return Err(format!(
                        "a Polygon ring has 4 to {MAX_VERTICES} positions, the last equal to the first"
                    ));
                }
                if ring.first() != ring.last() {
                    return Err(
                        "a Polygon ring must be closed: the last position equals the first"
                            .to_owned(),
                    );
                }
                let points = ring
                    .iter()
                    .map(|p| check_position(*p))
                    .collect::<Result<Vec<_>, _>>()?;
                let polygon = Polygon::new(LineString::from(points), Vec::new());
                if geo::Area::unsigned_area(&polygon) == 0.0 {
                    return Err("a Polygon must enclose an area".to_owned());
                }
                Ok(Shape::Polygon(polygon))
            }
        }
    }

    /// The JSON form (what [`Shape::parse`] reads).
    pub fn to_json(&self) -> Value {
        let json = match self {
            Shape::Circle { center, radius_m } => ShapeJson::Circle {
                center: [center.x(), center.y()],
                radius_m: *radius_m,
            },
            Shape::Polygon(polygon) => ShapeJson::Polygon {
                coordinates: vec![polygon.exterior().coords().map(|c| [c.x, c.y]).collect()],
            },
        };
        serde_json::to_value(json).unwrap_or(Value::Null)
    }

    /// Where a fix at `lat`/`lon` lies, counting anything within `margin_m` outside as unsure.
    pub fn place(&self, lat: f64, lon: f64, margin_m: f64) -> Place {
        let fix = Point::new(lon, lat);
        let outside_by = match self {
            Shape::Circle { center, radius_m } => Haversine.distance(*center, fix) - radius_m,
            Shape::Polygon(polygon) => {
                if polygon.contains(&fix) {
                    return Place::Inside;
                }
                match polygon.haversine_closest_point(&fix) {
                    geo::Closest::SinglePoint(p) => Haversine.distance(p, fix),
                    geo::Closest::Intersection(_) => 0.0,
                    geo::Closest::Indeterminate => return Place::Unsure,
                }
            }
        };
        if outside_by <= 0.0 {
            Place::Inside
        } else if outside_by > margin_m {
            Place::Outside
        } else {
            Place::Unsure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_circle_knows_inside_outside_and_the_noisy_band_in_between() {
        let home =
            Shape::parse(&json!({"type": "circle", "center": [13.4, 52.5], "radius_m": 100}))
                .unwrap();
        assert_eq!(home.place(52.5, 13.4, 20.0), Place::Inside);
        // About 111 m north: outside by ~11 m, within a 20 m margin.
        assert_eq!(home.place(52.501, 13.4, 20.0), Place::Unsure);
        // About 1.1 km north.
        assert_eq!(home.place(52.51, 13.4, 20.0), Place::Outside);
    }

    #[test]
    fn a_geojson_polygon_contains_its_inside_and_measures_distance_to_its_edge() {
        let square = json!({"type": "Polygon", "coordinates": [[[13.0, 52.0], [13.01, 52.0], [13.01, 52.01], [13.0, 52.01], [13.0, 52.0]]]});
        let zone = Shape::parse(&square).unwrap();
        assert_eq!(zone.place(52.005, 13.005, 10.0), Place::Inside);
        assert_eq!(zone.place(52.0101, 13.005, 50.0), Place::Unsure);
        assert_eq!(zone.place(52.02, 13.005, 50.0), Place::Outside);
        assert_eq!(Shape::parse(&zone.to_json()).unwrap(), zone);
    }

    #[test]
    fn broken_shapes_are_refused_with_a_reason() {
        for bad in [
            json!({"type": "circle", "center": [200, 52], "radius_m": 10}),
            json!({"type": "circle", "center": [13, 52], "radius_m": 0}),
            json!({"type": "circle", "center": [13, 52]}),
            json!({"type": "Polygon", "coordinates": [[[13, 52], [13.1, 52], [13, 52.1]]]}),
            json!({"type": "Polygon", "coordinates": [[[13, 52], [13.1, 52], [13, 52.1], [13, 52.2]]]}),
            json!({"type": "Polygon", "coordinates": [[[13, 52], [13.1, 52], [13.2, 52], [13, 52]]]}),
            json!({"type": "Point", "coordinates": [13, 52]}),
        ] {
            assert!(Shape::parse(&bad).is_err(), "{bad}");
        }
    }
}
