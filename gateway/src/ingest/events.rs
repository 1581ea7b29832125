//! Ingest telemetry as small typed events, each one place that names a metric (no per-device labels).

use std::time::Duration;

pub const MESSAGES_RECEIVED: &str = "pettracker_messages_received_total";
pub const FIXES_STORED: &str = "pettracker_fixes_stored_total";
pub const DUPLICATES: &str = "pettracker_fixes_duplicate_total";
pub const DEAD_LETTERS: &str = "pettracker_dead_letters_total";
pub const BATCH_SIZE: &str = "pettracker_batch_size";
pub const BATCH_SECONDS: &str = "pettracker_batch_write_seconds";
pub const QUEUE_DEPTH: &str = "pettracker_ingest_queue_depth";
pub const SPOOL_FILES: &str = "pettracker_spool_batches";
pub const SPOOL_BYTES: &str = "pettracker_spool_bytes";
pub const WRITE_RETRIES: &str = "pettracker_write_retries_total";
pub const ACKS_DROPPED: &str = "pettracker_acks_dropped_total";

pub fn message_received(kind: &'static str) {
    metrics::counter!(MESSAGES_RECEIVED, "topic" => kind).increment(1);
}

pub fn batch_committed(rows: usize, stored: u64, duplicates: u64, dead: u64, took: Duration) {
    metrics::counter!(FIXES_STORED).increment(stored);
    metrics::counter!(DUPLICATES).increment(duplicates);
    metrics::counter!(DEAD_LETTERS).increment(dead);
    metrics::histogram!(BATCH_SIZE).record(rows as f64);
    metrics::histogram!(BATCH_SECONDS).record(took.as_secs_f64());
}

pub fn queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub fn spool(files: u64, bytes: u64) {
    metrics::gauge!(SPOOL_FILES).set(files as f64);
    metrics::gauge!(SPOOL_BYTES).set(bytes as f64);
}

pub fn write_retry() {
    metrics::counter!(WRITE_RETRIES).increment(1);
}

pub fn ack_dropped() {
    metrics::counter!(ACKS_DROPPED).increment(1);
}
