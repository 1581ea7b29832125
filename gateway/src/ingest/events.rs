//! Ingest telemetry as small typed events, each one place that names a metric (no per-device labels).

use std::sync::LazyLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use crate::protocol::TopicKind;

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
/// Batches whose `COPY` met a fix already stored (a re-send), written again with `ON CONFLICT DO
/// NOTHING` (see `storage::ingest::write_batch`). A steady rate says collars re-send a lot.
pub const BATCHES_REWRITTEN: &str = "pettracker_batches_rewritten_total";
/// Where a message's time goes between the publish hook and its PUBACK, one series per stage.
pub const STAGE_SECONDS: &str = "pettracker_ingest_stage_seconds";
/// The whole wait of a QoS 1 publish hook, from entering the pipeline to committed (or spooled).
pub const PUBACK_WAIT_SECONDS: &str = "pettracker_puback_wait_seconds";

/// The stages of [`STAGE_SECONDS`], in the order a message passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Per message: from the publish hook to the decoder taking it off the queue.
    DecodeQueue,
    /// Per batch: from its first item to its close (size or timer).
    Batch,
    /// Per batch: from its close until a writer holds it and a connection.
    WriterWait,
    /// Per batch: the statements, up to (not including) COMMIT.
    Statement,
    /// Per batch: COMMIT, the WAL flush.
    Commit,
    /// Per message: from its batch's commit (or spool fsync) to its publish hook returning to
    /// the broker, which then sends PUBACK.
    Ack,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::DecodeQueue,
        Stage::Batch,
        Stage::WriterWait,
        Stage::Statement,
        Stage::Commit,
        Stage::Ack,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Stage::DecodeQueue => "decode_queue",
            Stage::Batch => "batch",
            Stage::WriterWait => "writer_wait",
            Stage::Statement => "statement",
            Stage::Commit => "commit",
            Stage::Ack => "ack",
        }
    }
}

// Handles of the metrics recorded for every message, taken once. Naming a metric builds its key
// and looks it up in the recorder's registry; per message that was 4.6 % of pettracker's CPU
// (BENCHMARKS.md, "per-message metric handles"). A handle is taken on first use, so the recorder
// must be installed before the pipeline starts (the server does that first thing, in
// `app::spawn`); one installed later records nothing of these.
static STAGES: LazyLock<[Histogram; 6]> =
    LazyLock::new(|| Stage::ALL.map(|s| metrics::histogram!(STAGE_SECONDS, "stage" => s.label())));
static PUBACK_WAIT: LazyLock<Histogram> =
    LazyLock::new(|| metrics::histogram!(PUBACK_WAIT_SECONDS));
static RECEIVED: LazyLock<[Counter; 6]> = LazyLock::new(|| {
    TopicKind::ALL.map(|kind| metrics::counter!(MESSAGES_RECEIVED, "topic" => kind.as_str()))
});
static RECEIVED_UNKNOWN: LazyLock<Counter> =
    LazyLock::new(|| metrics::counter!(MESSAGES_RECEIVED, "topic" => "unknown"));
static DEPTH: LazyLock<Gauge> = LazyLock::new(|| metrics::gauge!(QUEUE_DEPTH));

pub fn stage(stage: Stage, took: Duration) {
    // `ALL` lists the stages in declaration order, so the discriminant is the index.
    STAGES[stage as usize].record(took.as_secs_f64());
}

pub fn puback_wait(took: Duration) {
    PUBACK_WAIT.record(took.as_secs_f64());
}

/// A message arrived on a topic of `kind`, or on no device topic (`None`).
pub fn message_received(kind: Option<TopicKind>) {
    match kind {
        // `ALL` lists the kinds in declaration order, so the discriminant is the index.
        Some(kind) => RECEIVED[kind as usize].increment(1),
        None => RECEIVED_UNKNOWN.increment(1),
    }
}

pub fn batch_committed(rows: usize, stored: u64, duplicates: u64, dead: u64, took: Duration) {
    metrics::counter!(FIXES_STORED).increment(stored);
    metrics::counter!(DUPLICATES).increment(duplicates);
    metrics::counter!(DEAD_LETTERS).increment(dead);
    metrics::histogram!(BATCH_SIZE).record(rows as f64);
    metrics::histogram!(BATCH_SECONDS).record(took.as_secs_f64());
}

pub fn queue_depth(depth: usize) {
    DEPTH.set(depth as f64);
}

pub fn spool(files: u64, bytes: u64) {
    metrics::gauge!(SPOOL_FILES).set(files as f64);
    metrics::gauge!(SPOOL_BYTES).set(bytes as f64);
}

pub fn write_retry() {
    metrics::counter!(WRITE_RETRIES).increment(1);
}

pub fn batch_rewritten() {
    metrics::counter!(BATCHES_REWRITTEN).increment(1);
}

pub fn ack_dropped() {
    metrics::counter!(ACKS_DROPPED).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_handles_are_indexed_by_discriminant_in_the_order_of_all() {
        for (i, stage) in Stage::ALL.into_iter().enumerate() {
            assert_eq!(stage as usize, i, "{stage:?}");
        }
        for (i, kind) in TopicKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "{kind:?}");
        }
    }
}
