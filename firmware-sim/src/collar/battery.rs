//! The collar's battery: how it drains with time and GPS fixes, when the owner charges it, and
//! when the collar tells the server.

use crate::movement::Doing;

/// Battery drain and charging, in percent.
#[derive(Debug, Clone)]
pub struct Battery {
    pub start: f64,
    /// Drain while idle, per hour.
    pub drain_per_hour: f64,
    /// Extra drain per GPS fix (live mode costs battery).
    pub drain_per_fix: f64,
    /// Gain per hour on the charger; the owner puts the collar on it below 20%.
    pub charge_per_hour: f64,
}

impl Default for Battery {
    fn default() -> Battery {
        Battery {
            start: 90.0,
            drain_per_hour: 1.0,
            drain_per_fix: 0.01,
            charge_per_hour: 40.0,
        }
    }
}

/// Below this the owner puts a resting pet's collar on the charger.
const CHARGE_BELOW: f64 = 20.0;

/// A battery's state, fix by fix: the collar's and the seeder's history share it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// Percent, 0 to 100.
    pub level: f64,
    pub charging: bool,
}

impl Charge {
    pub fn new(level: f64) -> Charge {
        Charge {
            level: level.clamp(0.0, 100.0),
            charging: false,
        }
    }

    /// One fix `dt` seconds after the last, while the pet was `doing` this: drains (the fix
    /// itself too) or charges; full, it comes off the charger.
    pub fn step(&mut self, model: &Battery, dt: f64, doing: Doing) {
        if self.charging {
            self.level += model.charge_per_hour * dt / 3600.0;
            if self.level >= 100.0 {
                self.level = 100.0;
                self.charging = false;
            }
        } else {
            self.level -= model.drain_per_hour * dt / 3600.0 + model.drain_per_fix;
            // The owner charges it when it is low and the pet is home.
            if self.level < CHARGE_BELOW && doing == Doing::Resting {
                self.charging = true;
            }
        }
        self.level = self.level.clamp(0.0, 100.0);
    }

    /// Whole percent, as the collar reports it (`bat`).
    pub fn percent(&self) -> i64 {
        self.level.round() as i64
    }
}

/// When the collar sends a status report: on connecting, when charging starts or stops, and
/// every 5% of battery.
#[derive(Debug)]
pub(crate) struct StatusReports {
    battery: i64,
    charging: bool,
}

impl Default for StatusReports {
    fn default() -> StatusReports {
        StatusReports {
            // Far from any level, so the first check reports.
            battery: -100,
            charging: false,
        }
    }
}

impl StatusReports {
    /// Whether to report `charge` now (`force`: always), remembering it if so.
    pub fn due(&mut self, charge: &Charge, force: bool) -> bool {
        let battery = charge.percent();
        if !force && (battery - self.battery).abs() < 5 && charge.charging == self.charging {
            return false;
        }
        self.battery = battery;
        self.charging = charge.charging;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draining_collar_goes_on_the_charger_only_when_low_and_the_pet_rests() {
        let model = Battery::default();
        let mut charge = Charge::new(20.005);
        charge.step(&model, 1.0, Doing::Walking);
        assert!(!charge.charging, "{charge:?}");
        charge.step(&model, 1.0, Doing::Resting);
        assert!(charge.charging, "{charge:?}");
    }

    #[test]
    fn a_charging_collar_fills_up_and_comes_off_the_charger_at_100() {
        let model = Battery::default();
        let mut charge = Charge {
            level: 99.0,
            charging: true,
        };
        charge.step(&model, 3600.0, Doing::Resting);
        assert_eq!(
            charge,
            Charge {
                level: 100.0,
                charging: false
            }
        );
    }

    #[test]
    fn status_is_reported_every_5_percent_and_on_charging_changes() {
        let mut reports = StatusReports::default();
        let mut charge = Charge::new(90.0);
        assert!(reports.due(&charge, false), "the first check reports");
        charge.level = 86.0;
        assert!(!reports.due(&charge, false));
        assert!(reports.due(&charge, true), "forced");
        charge.level = 81.0;
        assert!(reports.due(&charge, false));
        charge.charging = true;
        assert!(reports.due(&charge, false));
        assert!(!reports.due(&charge, false));
    }
}
