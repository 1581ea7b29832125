//! Write stage: commits batches, retries what is worth retrying, spools to disk while the database is away, and replays in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use rand::Rng;
use tokio::sync::{Mutex, mpsc};

use crate::storage::ingest::{BatchRows, DeadLetterRow, WriteOutcome, write_batch};
use crate::storage::{StorageError, pool_error_reason};

use super::batch::Batch;
use super::events;
use super::spool::{Spool, SpooledBatch};

/// An acknowledgement owed to a collar: its fixes up to `seq` are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckDue {
    pub tracker: String,
    pub seq: i64,
}

/// One of the pipeline's writers. Each owns a shard of the trackers (see `ingest::start`), so a
/// tracker's batches are committed in order; all share one spool, replayed in order by whichever
/// writer gets to it first.
pub struct Writer {
    pub pool: Pool,
    pub spool: Arc<Mutex<Spool>>,
    pub acks: mpsc::Sender<AckDue>,
    /// Attempts for one batch before it goes to the spool.
    pub attempts: u32,
    /// How often to try replaying the spool while it holds batches.
    pub replay_every: Duration,
}

impl Writer {
    /// Runs until `input` closes; what cannot be written by then stays in the spool for the next start.
    pub async fn run(mut self, mut input: mpsc::Receiver<Batch>) {
        let mut replay = tokio::time::interval(self.replay_every);
        replay.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        {
            let spool = self.spool.lock().await;
            events::spool(spool.files(), spool.bytes());
        }
        loop {
            tokio::select! {
                batch = input.recv() => match batch {
                    Some(batch) => self.handle(batch).await,
                    None => break,
                },
                _ = replay.tick() => self.replay().await,
            }
        }
        self.replay().await;
        let spool = self.spool.lock().await;
        if !spool.is_empty() {
            tracing::warn!(
                batches = spool.files(),
                "database unavailable at shutdown: batches stay spooled and are replayed at the next start"
            );
        }
    }

    async fn handle(&mut self, batch: Batch) {
        let Batch { rows, acks, done } = batch;
        let acks: Vec<(String, i64)> = acks.into_iter().collect();
        // While older batches wait in the spool, newer ones queue behind them.
        let spool_empty = self.spool.lock().await.is_empty();
        let committed = if spool_empty {
            self.write_with_retry(&rows).await
        } else {
            Err(())
        };
        if committed.is_ok() {
            self.send_acks(&acks);
        } else {
            let spooled = SpooledBatch { rows, acks };
            let mut spool = self.spool.lock().await;
            if let Err(err) = spool.append(&spooled) {
                // Neither the database nor the disk took it: the publishers get no PUBACK and
                // will send again, so nothing is lost; their waiters see the channel drop.
                tracing::error!(%err, "cannot spool a batch; QoS 1 publishers will resend");
                return;
            }
            events::spool(spool.files(), spool.bytes());
        }
        for waiter in done {
            let _ = waiter.send(());
        }
    }

    /// Writes with jittered backoff for retriable errors. A batch the database refuses for its
    /// content is stored as dead letters instead, so one bad row never blocks ingest.
    async fn write_with_retry(&self, rows: &BatchRows) -> Result<WriteOutcome, ()> {
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=self.attempts {
            match self.write_once(rows).await {
                Ok(outcome) => return Ok(outcome),
                Err(err) if err.is_retriable() => {
                    events::write_retry();
                    tracing::warn!(%err, attempt, "batch write failed; will retry");
                    if attempt < self.attempts {
                        let jitter = rand::rng().random_range(0.5..1.5);
                        tokio::time::sleep(delay.mul_f64(jitter)).await;
                        delay *= 2;
                    }
                }
                Err(err) => {
                    tracing::error!(%err, "database refused a batch; storing it as dead letters");
                    let dead = as_dead_letters(rows, &err.to_string());
                    return self.write_once(&dead).await.map_err(|_| ());
                }
            }
        }
        Err(())
    }

    async fn write_once(&self, rows: &BatchRows) -> Result<WriteOutcome, StorageError> {
        let started = Instant::now();
        let mut client = self
            .pool
            .get()
            .await
            .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
        let outcome = write_batch(&mut client, rows).await?;
        events::batch_committed(
            rows.len(),
            outcome.fixes_stored,
            outcome.duplicates,
            outcome.dead_letters,
            started.elapsed(),
        );
        Ok(outcome)
    }

    /// Replays the spool in order, unless it is empty or another writer is already at it.
    async fn replay(&mut self) {
        let spool = self.spool.clone();
        let Ok(mut spool) = spool.try_lock() else {
            return;
        };
        if spool.is_empty() {
            return;
        }
        let pending = match spool.pending() {
            Ok(p) => p,
            Err(err) => {
                tracing::error!(%err, "cannot list the spool");
                return;
            }
        };
        for (_, path) in pending {
            let batch = match spool.read(&path) {
                Ok(b) => b,
                Err(err) => {
                    tracing::error!(%err, "moving an unreadable spool file aside");
                    let _ = spool.quarantine(&path);
                    continue;
                }
            };
            match self.write_once(&batch.rows).await {
                Ok(_) => {
                    if let Err(err) = spool.remove(&path) {
                        // Replaying it again later is harmless: writes are idempotent.
                        tracing::error!(%err, "cannot remove a replayed spool file");
                        return;
                    }
                    self.send_acks(&batch.acks);
                }
                Err(err) if err.is_retriable() => {
                    tracing::debug!(%err, "database still unavailable; spool kept");
                    break;
                }
                Err(err) => {
                    tracing::error!(%err, "database refused a spooled batch; storing it as dead letters");
                    let dead = as_dead_letters(&batch.rows, &err.to_string());
                    if self.write_once(&dead).await.is_ok() {
                        let _ = spool.remove(&path);
                        self.send_acks(&batch.acks);
                    } else {
                        break;
                    }
                }
            }
        }
        events::spool(spool.files(), spool.bytes());
        if spool.is_empty() {
            tracing::info!("spool replayed: the database has every batch");
        }
    }

    fn send_acks(&self, acks: &[(String, i64)]) {
        for (tracker, seq) in acks {
            // Acks are cumulative: a dropped one is covered by the next, so never block on them.
            if self
                .acks
                .try_send(AckDue {
                    tracker: tracker.clone(),
                    seq: *seq,
                })
                .is_err()
            {
                events::ack_dropped();
            }
        }
    }
}

fn as_dead_letters(rows: &BatchRows, reason: &str) -> BatchRows {
    let reason = format!("database refused the batch: {reason}");
    let mut dead = rows.dead_letters.clone();
    dead.extend(rows.fixes.iter().map(|f| DeadLetterRow {
        tracker_id: Some(f.tracker_id.clone()),
        topic: format!("trackers/{}/telemetry", f.tracker_id),
        payload: serde_json::to_vec(f).unwrap_or_default(),
        reason: reason.clone(),
        received_at: f.received_at,
    }));
    dead.extend(rows.command_results.iter().map(|r| DeadLetterRow {
        tracker_id: Some(r.tracker_id.clone()),
        topic: r.topic.clone(),
        payload: r.payload.clone(),
        reason: reason.clone(),
        received_at: r.received_at,
    }));
    BatchRows {
        dead_letters: dead,
        ..BatchRows::default()
    }
}
