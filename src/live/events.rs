//! Live-feed telemetry as small typed events (no per-device or per-user labels).

use std::sync::LazyLock;
use std::time::Duration;

use metrics::Counter;

pub const CONNECTIONS: &str = "pettracker_live_connections";
pub const SENT: &str = "pettracker_live_events_sent_total";
pub const DROPPED: &str = "pettracker_live_events_dropped_total";
pub const OVERFLOWS: &str = "pettracker_live_overflows_total";
pub const CLOSED: &str = "pettracker_live_closed_total";
pub const LATENCY: &str = "pettracker_live_publish_to_send_seconds";
pub const PUBLISHED: &str = "pettracker_live_events_published_total";
pub const BUS_LAGGED: &str = "pettracker_live_bus_lagged_total";

// Taken once: every fix is published, and naming the metric each time costs a registry lookup
// (see gateway::ingest::events, whose handles are taken the same way).
static PUBLISHED_COUNT: LazyLock<Counter> = LazyLock::new(|| metrics::counter!(PUBLISHED));

/// An event was put on the live bus.
pub fn published() {
    PUBLISHED_COUNT.increment(1);
}

/// A bus subscriber fell `n` events behind and skipped them.
pub fn bus_lagged(n: u64) {
    metrics::counter!(BUS_LAGGED).increment(n);
}

pub fn connected() {
    metrics::gauge!(CONNECTIONS).increment(1.0);
}

pub fn disconnected() {
    metrics::gauge!(CONNECTIONS).decrement(1.0);
}

/// An event was written to a WebSocket `took` after the ingest side published it.
pub fn sent(took: Duration) {
    metrics::counter!(SENT).increment(1);
    metrics::histogram!(LATENCY).record(took.as_secs_f64());
}

/// The hub dropped an event because a session's queue was full.
pub fn dropped_for_slow_client() {
    metrics::counter!(DROPPED).increment(1);
}

/// A session was told it overflowed.
pub fn overflow_signalled() {
    metrics::counter!(OVERFLOWS).increment(1);
}

/// The server ended a session; `reason` is one of a few fixed words.
pub fn closed(reason: &'static str) {
    metrics::counter!(CLOSED, "reason" => reason).increment(1);
}
