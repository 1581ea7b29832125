//! How a pet moves around its home: resting indoors, roaming the garden, walks along streets, escapes; and the GPS fixes a collar would take of it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::city::Home;

/// Street blocks are this long; walks follow a grid of them, with some diagonal streets.
const BLOCK_M: f64 = 110.0;
/// Walks stay within this distance of home (a dog walk is rarely longer than a few km in all).
pub const WALK_RADIUS_M: f64 = 900.0;
/// Escapes end at most this many safe-zone radii from home.
const ESCAPE_FACTOR: f64 = 3.0;
/// The garden: a pet roams within this radius of the door.
const GARDEN_M: f64 = 25.0;

/// The furthest a pet's true position gets from home with this safe zone.
pub fn max_range_m(home: &Home) -> f64 {
    // A walk's return leg runs along the grid, so it can reach the corner of the walk's square.
    (WALK_RADIUS_M * std::f64::consts::SQRT_2 + BLOCK_M).max(home.safe_radius_m * ESCAPE_FACTOR)
}

#[derive(Debug, Clone)]
enum Activity {
    Rest { left_s: f64 },
    Garden { left_s: f64, target: (f64, f64) },
    Walk { path: Vec<(f64, f64)>, speed: f64 },
    Escape { path: Vec<(f64, f64)>, speed: f64 },
}

/// What a pet is doing, for people reading the simulator's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Doing {
    Resting,
    InGarden,
    Walking,
    Escaping,
}

/// One reading of the pet as a collar's GPS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Fix {
    pub lat: f64,
    pub lon: f64,
    pub alt: f64,
    /// Horizontal accuracy radius in metres (worse indoors).
    pub acc: f64,
    /// Metres per second over ground, from the path.
    pub spd: f64,
    /// Degrees clockwise from north; `None` when standing still (GPS heading is noise then).
    pub hdg: Option<f64>,
    pub sat: u8,
    pub doing: Doing,
}

/// A pet and its movement state. Positions are metres east/north of home.
#[derive(Debug, Clone)]
pub struct Pet {
    home: Home,
    rng: StdRng,
    pos: (f64, f64),
    heading: f64,
    speed: f64,
    activity: Activity,
    /// The street grid is offset per home so that home is not on a crossing.
    grid: (f64, f64),
}

impl Pet {
    /// A pet at home; `seed` makes its life repeatable. It starts in a random activity so that
    /// a fresh fleet already has some pets out walking.
    pub fn new(home: Home, seed: u64) -> Pet {
        let mut rng = StdRng::seed_from_u64(seed);
        let grid = (
            rng.random_range(0.2..0.8) * BLOCK_M,
            rng.random_range(0.2..0.8) * BLOCK_M,
        );
        let mut pet = Pet {
            home,
            rng,
            pos: (0.0, 0.0),
            heading: 0.0,
            speed: 0.0,
            activity: Activity::Rest { left_s: 0.0 },
            grid,
        };
        pet.activity = match pet.rng.random_range(0..10) {
            0..=3 => pet.rest(),
            4..=6 => pet.garden(),
            _ => pet.walk(),
        };
        pet
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Advances the pet by `dt` seconds and returns the collar's GPS fix of where it is now.
    pub fn step(&mut self, dt: f64) -> Fix {
        self.advance(dt.max(0.0));
        self.fix()
    }

    /// Metres from home of the true (noise-free) position.
    pub fn true_distance_m(&self) -> f64 {
        self.pos.0.hypot(self.pos.1)
    }

    fn advance(&mut self, mut dt: f64) {
        while dt > 1e-9 {
            let used = match &mut self.activity {
                Activity::Rest { left_s } => {
                    self.speed = 0.0;
                    let used = dt.min(*left_s);
                    *left_s -= used;
                    used
                }
                Activity::Garden { left_s, target } => {
                    let used = dt.min(*left_s);
                    *left_s -= used;
                    let target = *target;
                    let arrived = move_towards(&mut self.pos, target, 0.4 * used);
                    self.set_motion(target, if arrived { 0.0 } else { 0.4 });
                    if arrived {
                        let a = self.rng.random::<f64>() * std::f64::consts::TAU;
                        let r = GARDEN_M * self.rng.random::<f64>().sqrt();
                        if let Activity::Garden { target, .. } = &mut self.activity {
                            *target = (r * a.cos(), r * a.sin());
                        }
                    }
                    used
                }
                Activity::Walk { path, speed } | Activity::Escape { path, speed } => {
                    let speed = *speed;
                    let mut budget = speed * dt;
                    while budget > 0.0 {
                        let Some(&next) = path.first() else { break };
                        let d = dist(self.pos, next);
                        if d <= budget {
                            self.pos = next;
                            budget -= d;
                            path.remove(0);
                            if let Some(&after) = path.first() {
                                self.heading = bearing(self.pos, after);
                            }
                        } else {
                            self.heading = bearing(self.pos, next);
                            move_towards(&mut self.pos, next, budget);
                            budget = 0.0;
                        }
                    }
                    let done = path.is_empty();
                    self.speed = if done { 0.0 } else { speed };
                    if done {
                        dt - budget / speed.max(0.1)
                    } else {
                        dt
                    }
                }
            };
            dt -= used.max(1e-6).min(dt);
            if self.finished() {
                self.activity = self.next_activity();
            }
        }
    }

    fn finished(&self) -> bool {
        match &self.activity {
            Activity::Rest { left_s } | Activity::Garden { left_s, .. } => *left_s <= 0.0,
            Activity::Walk { path, .. } | Activity::Escape { path, .. } => path.is_empty(),
        }
    }

    fn next_activity(&mut self) -> Activity {
        let roll = self.rng.random::<f64>();
        match self.activity {
            // An escape ends where the owner caught up; they walk home together.
            Activity::Escape { .. } => Activity::Walk {
                path: vec![(0.0, 0.0)],
                speed: 1.3,
            },
            Activity::Garden { .. } if roll < 0.12 => self.escape(),
            Activity::Rest { .. } if roll < 0.45 => self.garden(),
            Activity::Rest { .. } => self.walk(),
            _ => self.rest(),
        }
    }

    fn rest(&mut self) -> Activity {
        self.pos = (0.0, 0.0);
        Activity::Rest {
            left_s: self.rng.random_range(600.0..2_400.0),
        }
    }

    fn garden(&mut self) -> Activity {
        Activity::Garden {
            left_s: self.rng.random_range(120.0..900.0),
            target: (GARDEN_M * 0.5, 0.0),
        }
    }

    /// A walk: out to the street, a random route over the block grid (sometimes a diagonal
    /// street), and back home along the grid.
    fn walk(&mut self) -> Activity {
        let (gx, gy) = self.grid;
        let snap = |v: f64, o: f64| ((v - o) / BLOCK_M).round() * BLOCK_M + o;
        let start = (snap(self.pos.0, gx), snap(self.pos.1, gy));
        let mut path = vec![(start.0, self.pos.1), start];
        let mut at = start;
        let mut dir = self.rng.random_range(0..4usize);
        let legs = self.rng.random_range(8..30);
        const DIRS: [(f64, f64); 8] = [
            (1.0, 0.0),
            (0.0, 1.0),
            (-1.0, 0.0),
            (0.0, -1.0),
            (1.0, 1.0),
            (-1.0, 1.0),
            (-1.0, -1.0),
            (1.0, -1.0),
        ];
        for _ in 0..legs {
            let mut choice = match self.rng.random_range(0..10) {
                0..=4 => dir,
                5 | 6 => (dir + 1) % 4,
                7 | 8 => (dir + 3) % 4,
                _ => 4 + self.rng.random_range(0..4),
            };
            for _ in 0..8 {
                let (dx, dy) = DIRS[choice];
                let next = (at.0 + dx * BLOCK_M, at.1 + dy * BLOCK_M);
                if next.0.abs() <= WALK_RADIUS_M && next.1.abs() <= WALK_RADIUS_M {
                    break;
                }
                choice = (choice + 1) % 8;
            }
            let (dx, dy) = DIRS[choice];
            let next = (at.0 + dx * BLOCK_M, at.1 + dy * BLOCK_M);
            if next.0.abs() > WALK_RADIUS_M || next.1.abs() > WALK_RADIUS_M {
                continue;
            }
            path.push(next);
            at = next;
            if choice < 4 {
                dir = choice;
            }
        }
        // Home along the grid: east-west first, then north-south, then to the door.
        path.push((start.0, at.1));
        path.push(start);
        path.push((start.0, 0.0));
        path.push((0.0, 0.0));
        Activity::Walk {
            path,
            speed: self.rng.random_range(1.1..1.6),
        }
    }

    /// A dash out of the safe zone, then some sniffing around where it stopped.
    fn escape(&mut self) -> Activity {
        let r = self.home.safe_radius_m;
        let a = self.rng.random::<f64>() * std::f64::consts::TAU;
        let far = self.rng.random_range(1.3..ESCAPE_FACTOR) * r;
        let end = (far * a.cos(), far * a.sin());
        let mut path = vec![end];
        for _ in 0..3 {
            let last = path[path.len() - 1];
            let p = (
                last.0 + self.rng.random_range(-20.0..20.0),
                last.1 + self.rng.random_range(-20.0..20.0),
            );
            let scale = (ESCAPE_FACTOR * r / p.0.hypot(p.1)).min(1.0);
            path.push((p.0 * scale, p.1 * scale));
        }
        Activity::Escape {
            path,
            speed: self.rng.random_range(2.5..4.5),
        }
    }

    fn set_motion(&mut self, target: (f64, f64), speed: f64) {
        if speed > 0.0 {
            self.heading = bearing(self.pos, target);
        }
        self.speed = speed;
    }

    fn doing(&self) -> Doing {
        match self.activity {
            Activity::Rest { .. } => Doing::Resting,
            Activity::Garden { .. } => Doing::InGarden,
            Activity::Walk { .. } => Doing::Walking,
            Activity::Escape { .. } => Doing::Escaping,
        }
    }

    /// A GPS fix of the current position: indoors the sky is hidden, so fewer satellites, a
    /// larger accuracy radius and noise to match; outside a few metres.
    fn fix(&mut self) -> Fix {
        let doing = self.doing();
        let indoor = doing == Doing::Resting;
        let (acc, sat) = if indoor {
            (
                self.rng.random_range(20.0..60.0),
                self.rng.random_range(3..7),
            )
        } else {
            (
                self.rng.random_range(3.0..12.0),
                self.rng.random_range(7..13),
            )
        };
        // About 68% of fixes lie within the accuracy radius, as a 1-sigma figure means.
        let sigma = acc / 1.5;
        let (e, n) = (
            self.pos.0 + sigma * gaussian(&mut self.rng),
            self.pos.1 + sigma * gaussian(&mut self.rng),
        );
        let (lat, lon) = self.home.at(e, n);
        let moving = self.speed > 0.3;
        Fix {
            lat,
            lon,
            alt: self.home.altitude_m + 3.0 * gaussian(&mut self.rng),
            acc: (acc * 10.0).round() / 10.0,
            spd: if moving {
                (self.speed + 0.1 * gaussian(&mut self.rng)).max(0.0)
            } else {
                0.0
            },
            hdg: moving.then(|| (self.heading + 3.0 * gaussian(&mut self.rng)).rem_euclid(360.0)),
            sat,
            doing,
        }
    }
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    (b.0 - a.0).hypot(b.1 - a.1)
}

/// Degrees clockwise from north, from `a` towards `b`.
fn bearing(a: (f64, f64), b: (f64, f64)) -> f64 {
    (b.0 - a.0).atan2(b.1 - a.1).to_degrees().rem_euclid(360.0)
}

/// Moves `pos` up to `by` metres towards `target`; true when it got there.
fn move_towards(pos: &mut (f64, f64), target: (f64, f64), by: f64) -> bool {
    let d = dist(*pos, target);
    if d <= by {
        *pos = target;
        true
    } else {
        pos.0 += (target.0 - pos.0) / d * by;
        pos.1 += (target.1 - pos.1) / d * by;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::city::BERLIN;

    #[test]
    fn a_week_of_movement_stays_within_range_of_home_and_does_everything() {
        for (i, home) in BERLIN.homes(6, 1).into_iter().enumerate() {
            let mut pet = Pet::new(home, i as u64);
            let mut seen = std::collections::HashSet::new();
            let mut outside = 0;
            for _ in 0..(7 * 24 * 360) {
                let fix = pet.step(10.0);
                assert!(pet.true_distance_m() <= max_range_m(&home) + 1.0);
                assert!(home.distance_m(fix.lat, fix.lon) <= max_range_m(&home) + 6.0 * fix.acc);
                assert!((0.0..360.0).contains(&fix.hdg.unwrap_or(0.0)));
                assert!(fix.spd < 6.0);
                if pet.true_distance_m() > home.safe_radius_m {
                    outside += 1;
                }
                seen.insert(fix.doing);
            }
            assert_eq!(seen.len(), 4, "pet {i} did only {seen:?}");
            assert!(outside > 0);
        }
    }

    #[test]
    fn heading_follows_the_path_while_walking() {
        let angle = |a: f64, b: f64| {
            let d = (a - b).rem_euclid(360.0);
            d.min(360.0 - d)
        };
        let home = BERLIN.homes(1, 3)[0];
        let mut pet = Pet::new(home, 5);
        let (mut straight, mut turns) = (0, 0);
        let (mut last, mut last_heading) = (pet.pos, pet.heading);
        for _ in 0..20_000 {
            pet.step(1.0);
            let moved = (pet.pos.0 - last.0, pet.pos.1 - last.1);
            if matches!(pet.activity, Activity::Walk { .. }) && moved.0.hypot(moved.1) > 0.9 {
                let b = moved.0.atan2(moved.1).to_degrees().rem_euclid(360.0);
                if angle(b, pet.heading) < 1e-6 {
                    straight += 1;
                } else {
                    // Turning a corner within the second: the step lies between the two streets.
                    let (a, c) = (angle(b, last_heading), angle(b, pet.heading));
                    assert!(
                        a + c <= angle(last_heading, pet.heading) + 1e-6,
                        "{b} vs {last_heading}..{}",
                        pet.heading
                    );
                    turns += 1;
                }
            }
            (last, last_heading) = (pet.pos, pet.heading);
        }
        assert!(
            straight > 100 && turns < straight / 10,
            "{straight} straight, {turns} turns"
        );
    }
}
