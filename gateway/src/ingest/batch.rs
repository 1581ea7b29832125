//! Batch stage: gathers decoded messages until its writer is free, the batch is full, or its timer (started by its first item) fires.
//!
//! A batch goes to its writer as soon as the writer is free and the batch is `linger` old, with
//! whatever arrived meanwhile: under load, batches grow to what arrives during one write, and a
//! message waits about one write, never a timer on top of it; at a fleet's rates a batch gathers
//! `linger`'s worth of messages instead of one. The timer only closes a batch while the writer is
//! busy, so one batch never spans more than `batch_timeout` of arrivals; it is set well above a write's
//! time (1 s by default), because a batch closed early only queues behind the busy writer as one
//! more statement and COMMIT: at a 20 ms timer, batches of ~440 rows queued ~95 ms each, and
//! single-fix ingest made 21,000 fixes/s against 27,000–30,000 with the long timer (BENCHMARKS.md).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant as StdInstant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::storage::ingest::BatchRows;

use super::decode::Decoded;
use super::events::{self, Stage};

/// A batch on its way to the database.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: BatchRows,
    /// Highest `seq` per tracker, sent to the collars once committed.
    pub acks: HashMap<String, i64>,
    /// Publishers waiting for their QoS 1 acknowledgement, told when their batch was stored.
    pub done: Vec<oneshot::Sender<StdInstant>>,
    /// When the first item arrived, and when the batch closed: the batch and writer-wait stages.
    pub opened: Option<StdInstant>,
    pub closed: Option<StdInstant>,
    /// Held while the writer works on this batch: its release tells the batcher the writer is
    /// free. Batches closed by size or timer while the writer was busy carry none.
    pub writer_slot: Option<OwnedSemaphorePermit>,
}

impl Batch {
    fn add(&mut self, decoded: Decoded) {
        let Decoded {
            rows, ack, done, ..
        } = decoded;
        self.opened.get_or_insert_with(StdInstant::now);
        self.rows.extend(rows);
        if let Some((tracker, seq)) = ack {
            let entry = self.acks.entry(tracker).or_insert(seq);
            *entry = (*entry).max(seq);
        }
        self.done.extend(done);
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.done.is_empty()
    }

    /// Takes the batch to hand it to the writer, timing how long it was open.
    fn close(&mut self) -> Batch {
        let mut batch = std::mem::take(self);
        let now = StdInstant::now();
        if let Some(opened) = batch.opened {
            events::stage(Stage::Batch, now.saturating_duration_since(opened));
        }
        batch.closed = Some(now);
        batch
    }
}

/// When a batch closes.
#[derive(Debug, Clone, Copy)]
pub struct Closing {
    /// Rows at most: a full batch closes at once.
    pub max_rows: usize,
    /// While the writer is busy, a batch closes this long after its first item and queues.
    pub max_wait: Duration,
    /// A free writer takes a batch once it is this old. At a fleet's rates most messages find
    /// the writer free, and each would otherwise be a transaction of its own: a commit and a
    /// handful of statements for one fix, where a batch's fixed cost is nearly all of
    /// PostgreSQL's and much of pettracker's CPU per fix (BENCHMARKS.md, issue 17). Under load a
    /// write takes longer than this, so a batch is older by the time the writer is free and
    /// nothing waits.
    pub linger: Duration,
}

/// Runs until `input` closes, then flushes what it holds. `writer_free` has one permit, which
/// the writer holds while it writes a batch this sent it.
pub async fn run(
    mut input: mpsc::Receiver<Decoded>,
    output: mpsc::Sender<Batch>,
    writer_free: Arc<Semaphore>,
    closing: Closing,
) {
    let Closing {
        max_rows,
        max_wait,
        linger,
    } = closing;
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let holding = !batch.is_empty();
        // Old enough for a free writer; until then, a timer for the moment it will be (a linger
        // too long for the clock is none).
        let ripe_at = batch
            .opened
            .and_then(|opened| Instant::from_std(opened).checked_add(linger));
        let ripe = holding && ripe_at.is_none_or(|at| at <= Instant::now());
        let ripening = async {
            match ripe_at {
                Some(at) if holding && !ripe => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            slot = writer_free.clone().acquire_owned(), if ripe => {
                let Ok(slot) = slot else { break };
                // What is queued already joins: one write for all of it.
                while batch.rows.len() < max_rows {
                    match input.try_recv() {
                        Ok(decoded) => batch.add(decoded),
                        Err(_) => break,
                    }
                }
                deadline = None;
                let mut closed = batch.close();
                closed.writer_slot = Some(slot);
                if output.send(closed).await.is_err() {
                    return;
                }
            }
            item = input.recv() => match item {
                Some(decoded) => {
                    batch.add(decoded);
                    // A wait too long for the clock sets no timer: size and writers close it.
                    if deadline.is_none() {
                        deadline = Instant::now().checked_add(max_wait);
                    }
                    if batch.rows.len() >= max_rows {
                        deadline = None;
                        if output.send(batch.close()).await.is_err() {
                            return;
                        }
                    }
                }
                None => break,
            },
            // Ripe now: the next turn offers it to the writer.
            () = ripening => {}
            () = timer => {
                deadline = None;
                if !batch.is_empty() && output.send(batch.close()).await.is_err() {
                    return;
                }
            }
        }
    }
    if !batch.is_empty() {
        let _ = output.send(batch.close()).await;
    }
}
