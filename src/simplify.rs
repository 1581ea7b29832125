//! Track simplification for maps: Douglas-Peucker (the `geo` crate) with a tolerance in metres.
//!
//! `geo` works in the units of its coordinates, so the track is first projected onto a local
//! plane in metres (equirectangular around the track's mean latitude: within a city or a day's
//! walk the error is far below GPS noise). Its Douglas-Peucker recurses once per kept point in
//! the worst case, and the points come from collars, so a crafted track could otherwise run a
//! thread out of stack: the track is simplified in windows of [`WINDOW`] points whose ends are
//! always kept, which bounds the depth and costs one extra point per window.

use geo::{Coord, LineString, SimplifyIdx};

/// Points per independently simplified window.
pub const WINDOW: usize = 2_000;

/// Mean Earth radius in metres, as in `haversine_m`.
const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// Indices (ascending) of the points to keep so that no dropped point is farther than
/// `tolerance_m` metres from the simplified line. The first and last point are always kept.
pub fn keep(points: &[(f64, f64)], tolerance_m: f64) -> Vec<usize> {
    if points.len() <= 2 {
        return (0..points.len()).collect();
    }
    let mean_lat = points.iter().map(|p| p.0).sum::<f64>() / points.len() as f64;
    let x_scale = EARTH_RADIUS_M * mean_lat.to_radians().cos();
    let projected: Vec<Coord<f64>> = points
        .iter()
        .map(|&(lat, lon)| Coord {
            x: lon.to_radians() * x_scale,
            y: lat.to_radians() * EARTH_RADIUS_M,
        })
        .collect();
    let mut kept = Vec::new();
    let mut start = 0;
    while start < projected.len() - 1 {
        // Windows share their end points, so the joins are kept and the line stays connected.
        let end = (start + WINDOW).min(projected.len() - 1);
        let window = LineString::from(projected[start..=end].to_vec());
        let indices = window.simplify_idx(tolerance_m);
        let skip_first = usize::from(!kept.is_empty());
        kept.extend(indices.into_iter().skip(skip_first).map(|i| start + i));
        start = end;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Metres north of (48.0, 11.0) as a latitude.
    fn north(m: f64) -> f64 {
        48.0 + (m / EARTH_RADIUS_M).to_degrees()
    }

    #[test]
    fn a_straight_walk_keeps_only_its_ends() {
        let points: Vec<_> = (0..100).map(|i| (north(i as f64 * 10.0), 11.0)).collect();
        assert_eq!(keep(&points, 5.0), vec![0, 99]);
    }

    #[test]
    fn a_corner_further_than_the_tolerance_is_kept_and_nearer_wiggles_are_not() {
        // North 500 m with 2 m wiggles east and west, then east 500 m.
        let east = |m: f64| 11.0 + (m / (EARTH_RADIUS_M * 48f64.to_radians().cos())).to_degrees();
        let mut points: Vec<_> = (0..=50)
            .map(|i| {
                (
                    north(i as f64 * 10.0),
                    east(if i % 2 == 0 { 2.0 } else { -2.0 }),
                )
            })
            .collect();
        points.extend((1..=50).map(|i| (north(500.0), east(i as f64 * 10.0))));
        let kept = keep(&points, 10.0);
        assert_eq!(kept.first(), Some(&0));
        assert_eq!(kept.last(), Some(&100));
        assert!(kept.contains(&50), "the corner: {kept:?}");
        assert!(kept.len() <= 4, "wiggles of 2 m are within 10 m: {kept:?}");
        // With a tolerance below the wiggle, every wiggle stays.
        assert!(keep(&points, 1.0).len() > 50);
    }

    /// Distance in metres from `p` to the segment `a`-`b`, on the same local plane as [`keep`].
    fn off_segment(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
        let k = EARTH_RADIUS_M * 48f64.to_radians().cos();
        let xy = |q: (f64, f64)| (q.1.to_radians() * k, q.0.to_radians() * EARTH_RADIUS_M);
        let (p, a, b) = (xy(p), xy(a), xy(b));
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        let t = if len2 == 0.0 {
            0.0
        } else {
            (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
        };
        ((p.0 - a.0 - t * dx).powi(2) + (p.1 - a.1 - t * dy).powi(2)).sqrt()
    }

    #[test]
    fn no_dropped_point_of_a_long_random_walk_is_farther_than_the_tolerance() {
        // A deterministic random walk of 5,000 fixes (more than two windows), steps up to 20 m.
        let mut seed: u64 = 42;
        let mut rand = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mut points = vec![(48.0, 11.0)];
        for _ in 1..5_000 {
            let last = points[points.len() - 1];
            points.push((last.0 + rand() * 0.00036, last.1 + rand() * 0.00054));
        }
        let kept = keep(&points, 15.0);
        assert_eq!(kept.first(), Some(&0));
        assert_eq!(kept.last(), Some(&4_999));
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "ascending");
        assert!(
            kept.contains(&WINDOW) && kept.contains(&(2 * WINDOW)),
            "joins kept"
        );
        assert!(
            kept.len() < points.len() / 2,
            "it simplified: {}",
            kept.len()
        );
        for pair in kept.windows(2) {
            let (a, b) = (points[pair[0]], points[pair[1]]);
            for (i, &p) in points.iter().enumerate().take(pair[1]).skip(pair[0] + 1) {
                let d = off_segment(p, a, b);
                assert!(d <= 15.0 + 1e-6, "point {i} is {d} m off the line");
            }
        }
        // And a straight track of the same length keeps the window joins only.
        let straight: Vec<_> = (0..5_000).map(|i| (north(i as f64), 11.0)).collect();
        assert_eq!(keep(&straight, 1.0), vec![0, 2_000, 4_000, 4_999]);
    }

    #[test]
    fn tiny_tracks_come_back_whole() {
        assert!(keep(&[], 10.0).is_empty());
        assert_eq!(keep(&[(48.0, 11.0)], 10.0), vec![0]);
        assert_eq!(keep(&[(48.0, 11.0), (48.1, 11.0)], 10.0), vec![0, 1]);
    }
}
