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

pub fn stage(stage: Stage, took: Duration) {
    metrics::histogram!(STAGE_SECONDS, "stage" => stage.label()).record(took.as_secs_f64());
}

pub fn puback_wait(took: Duration) {
    metrics::histogram!(PUBACK_WAIT_SECONDS).record(took.as_secs_f64());
}

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

pub fn batch_rewritten() {
    metrics::counter!(BATCHES_REWRITTEN).increment(1);
}

pub fn ack_dropped() {
    metrics::counter!(ACKS_DROPPED).increment(1);
}
