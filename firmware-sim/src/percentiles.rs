//! Latency percentiles for the benchmark modes' reports, from samples in microseconds.

use std::time::Duration;

use serde::Serialize;

/// Percentiles in milliseconds of the samples taken; `None` without samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Percentiles {
    /// Nearest-rank percentiles of samples in microseconds (plenty for a millisecond report).
    pub(crate) fn of_micros(mut samples: Vec<u32>) -> Percentiles {
        samples.sort_unstable();
        let pct = |p: f64| {
            (!samples.is_empty()).then(|| {
                let i = ((samples.len() - 1) as f64 * p).round() as usize;
                f64::from(samples[i]) / 1_000.0
            })
        };
        Percentiles {
            p50: pct(0.5),
            p90: pct(0.9),
            p99: pct(0.99),
            max: pct(1.0),
        }
    }
}

/// A sample for [`Percentiles::of_micros`]; 4 bytes each keeps millions of them affordable.
pub(crate) fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_in_milliseconds() {
        let p = Percentiles::of_micros((1..=100).rev().map(|ms| ms * 1_000).collect());
        assert_eq!(
            (p.p50, p.p90, p.p99, p.max),
            (Some(51.0), Some(90.0), Some(99.0), Some(100.0))
        );
        assert_eq!(Percentiles::of_micros(Vec::new()).p50, None);
        assert_eq!(micros(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
