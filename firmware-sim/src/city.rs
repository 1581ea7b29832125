//! Real cities to simulate in: district centres, homes spread over them, and the local metric frame pets move in.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Metres per degree of latitude (and of longitude at the equator) on a spherical Earth.
const METRES_PER_DEGREE: f64 = 111_320.0;

/// A city: a name and the centres of its residential districts.
#[derive(Debug, Clone, Copy)]
pub struct City {
    pub name: &'static str,
    /// Metres above sea level, roughly, for `alt`.
    pub altitude_m: f64,
    pub districts: &'static [(&'static str, f64, f64)],
}

pub const BERLIN: City = City {
    name: "Berlin",
    altitude_m: 34.0,
    districts: &[
        ("Mitte", 52.5200, 13.4050),
        ("Kreuzberg", 52.4986, 13.4030),
        ("Prenzlauer Berg", 52.5390, 13.4240),
        ("Charlottenburg", 52.5160, 13.3040),
        ("Neukölln", 52.4811, 13.4353),
        ("Friedrichshain", 52.5155, 13.4540),
        ("Schöneberg", 52.4830, 13.3530),
        ("Wedding", 52.5500, 13.3660),
        ("Pankow", 52.5690, 13.4010),
        ("Steglitz", 52.4560, 13.3220),
        ("Lichtenberg", 52.5150, 13.4990),
        ("Moabit", 52.5300, 13.3420),
        ("Tempelhof", 52.4660, 13.3850),
        ("Spandau", 52.5350, 13.2000),
    ],
};

pub const LYON: City = City {
    name: "Lyon",
    altitude_m: 170.0,
    districts: &[
        ("Presqu'île", 45.7600, 4.8350),
        ("Vieux Lyon", 45.7620, 4.8270),
        ("Croix-Rousse", 45.7750, 4.8320),
        ("Part-Dieu", 45.7610, 4.8570),
        ("Guillotière", 45.7500, 4.8450),
        ("Villeurbanne", 45.7660, 4.8800),
        ("Monplaisir", 45.7440, 4.8700),
        ("Vaise", 45.7740, 4.8050),
        ("Gerland", 45.7300, 4.8330),
        ("Confluence", 45.7430, 4.8180),
    ],
};

impl City {
    /// `berlin` or `lyon`, case-insensitive.
    pub fn by_name(name: &str) -> Option<City> {
        match name.to_ascii_lowercase().as_str() {
            "berlin" => Some(BERLIN),
            "lyon" => Some(LYON),
            _ => None,
        }
    }

    /// `count` homes, districts taken in turn, each scattered up to 1.2 km from its district's
    /// centre, with a safe zone of 80-250 m (a garden and the block around it). The same seed
    /// gives the same homes, so a second demo run finds its pets where it left them.
    pub fn homes(&self, count: usize, seed: u64) -> Vec<Home> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count)
            .map(|i| {
                let (district, lat, lon) = self.districts[i % self.districts.len()];
                let r = 1_200.0 * rng.random::<f64>().sqrt();
                let a = rng.random::<f64>() * std::f64::consts::TAU;
                let (lat, lon) = offset(lat, lon, r * a.cos(), r * a.sin());
                Home {
                    lat,
                    lon,
                    safe_radius_m: rng.random_range(80.0..250.0_f64).round(),
                    district,
                    altitude_m: self.altitude_m,
                }
            })
            .collect()
    }
}

/// Where a pet lives, and the radius beyond which it has escaped (its safe zone).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Home {
    pub lat: f64,
    pub lon: f64,
    pub safe_radius_m: f64,
    pub district: &'static str,
    pub altitude_m: f64,
}

impl Home {
    /// The point `east_m`, `north_m` metres from home.
    pub fn at(&self, east_m: f64, north_m: f64) -> (f64, f64) {
        offset(self.lat, self.lon, east_m, north_m)
    }

    /// Metres from home to (lat, lon).
    pub fn distance_m(&self, lat: f64, lon: f64) -> f64 {
        let (e, n) = local(self.lat, self.lon, lat, lon);
        e.hypot(n)
    }
}

/// An equirectangular step: within a few kilometres its error is centimetres, far below GPS noise.
pub fn offset(lat: f64, lon: f64, east_m: f64, north_m: f64) -> (f64, f64) {
    (
        lat + north_m / METRES_PER_DEGREE,
        lon + east_m / (METRES_PER_DEGREE * lat.to_radians().cos()),
    )
}

/// The inverse of [`offset`]: (east, north) metres from the origin to the point.
pub fn local(origin_lat: f64, origin_lon: f64, lat: f64, lon: f64) -> (f64, f64) {
    (
        (lon - origin_lon) * METRES_PER_DEGREE * origin_lat.to_radians().cos(),
        (lat - origin_lat) * METRES_PER_DEGREE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_lie_in_their_city_and_repeat_for_a_seed() {
        let a = BERLIN.homes(30, 7);
        assert_eq!(a, BERLIN.homes(30, 7));
        for h in &a {
            assert!(
                (52.40..52.62).contains(&h.lat) && (13.15..13.56).contains(&h.lon),
                "{h:?}"
            );
            assert!((80.0..=250.0).contains(&h.safe_radius_m));
        }
    }

    #[test]
    fn offset_and_local_invert_each_other() {
        let (lat, lon) = offset(45.76, 4.835, 300.0, -120.0);
        let (e, n) = local(45.76, 4.835, lat, lon);
        assert!((e - 300.0).abs() < 0.01 && (n + 120.0).abs() < 0.01);
    }
}
