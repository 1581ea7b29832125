//! Live-bus telemetry as small typed events (no per-device labels).

pub const PUBLISHED: &str = "pettracker_live_events_published_total";
pub const BUS_LAGGED: &str = "pettracker_live_bus_lagged_total";

pub fn published() {
    metrics::counter!(PUBLISHED).increment(1);
}

/// A bus subscriber fell `n` events behind and skipped them.
pub fn bus_lagged(n: u64) {
    metrics::counter!(BUS_LAGGED).increment(n);
}
