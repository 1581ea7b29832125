//! Write stage: commits batches, retries what is worth retrying, spools to disk while the database is away, and replays the spool in order.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::storage::ingest::{BatchRows, CommandReports, DeadLetterRow, WriteOutcome, write_batch};
use crate::storage::{StorageError, pool_error_reason};

use super::batch::Batch;
use super::events;
use super::spool::{Group, SharedSpool, SpooledBatch, format};

/// An acknowledgement owed to a collar: its fixes up to `seq` are committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckDue {
    pub tracker: String,
    pub seq: i64,
}

/// The server's side of what the write path stored: told after each commit, with the rows of
/// that batch (never those the database refused, which became dead letters). The alert engine
/// computes from these, so it sees every fix that is stored, in each tracker's commit order.
/// Implementations must not block: this runs on the write path, once per committed batch.
pub trait CommittedBatches: std::fmt::Debug + Send + Sync + 'static {
    fn committed(&self, rows: &BatchRows);
}

/// What became of a batch the database took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    AsSent,
    /// Refused for its content and stored as dead letters instead.
    AsDeadLetters,
}

/// One of the pipeline's writers. Each owns a shard of the trackers (see `ingest::start`), so a
/// tracker's batches are committed in order. While the spool holds batches, new ones are spooled
/// behind them and the [`Replayer`] commits them in order.
pub struct Writer {
    pub pool: Pool,
    pub spool: SharedSpool,
    pub acks: mpsc::Sender<AckDue>,
    /// Attempts for one batch before it goes to the spool.
    pub attempts: u32,
    /// The server's handler of command reports (see `IngestConfig::commands`).
    pub commands: Option<Arc<dyn CommandReports>>,
    /// Told of every committed batch (see `IngestConfig::committed`).
    pub committed: Option<Arc<dyn CommittedBatches>>,
}

impl Writer {
    /// Runs until `input` closes.
    pub async fn run(self, mut input: mpsc::Receiver<Batch>) {
        while let Some(batch) = input.recv().await {
            self.handle(batch).await;
        }
    }

    async fn handle(&self, batch: Batch) {
        let Batch {
            rows,
            acks,
            done,
            closed,
            writer_slot,
            ..
        } = batch;
        let acks: Vec<(String, i64)> = acks.into_iter().collect();
        // While older batches wait in the spool, newer ones queue behind them.
        let committed = if self.spool.is_empty() {
            self.write_with_retry(&rows, closed).await
        } else {
            Err(())
        };
        // The ack stage starts here: the alert engine's feed and the collars' acks are its part.
        let mut stored_at = Instant::now();
        if let Ok(stored) = committed {
            if stored == Stored::AsSent
                && let Some(committed) = &self.committed
            {
                committed.committed(&rows);
            }
            send_acks(&self.acks, &acks);
        } else {
            // Off the async workers: see `SharedSpool`. PUBACKs wait for the fsync.
            if let Err(err) = self.spool.append(SpooledBatch { rows, acks }).await {
                // Neither the database nor the disk took it: the publishers get no PUBACK and
                // will send again, so nothing is lost; their waiters see the channel drop.
                tracing::error!(%err, "cannot spool a batch; QoS 1 publishers will resend");
                return;
            }
            stored_at = Instant::now();
        }
        for waiter in done {
            let _ = waiter.send(stored_at);
        }
        // Free for the next batch, which the batcher has been filling meanwhile.
        drop(writer_slot);
    }

    /// Writes with jittered backoff for retriable errors. A batch the database refuses for its
    /// content is stored as dead letters instead, so one bad row never blocks ingest.
    async fn write_with_retry(
        &self,
        rows: &BatchRows,
        closed: Option<Instant>,
    ) -> Result<Stored, ()> {
        let mut waiting_since = closed;
        let attempt = || {
            // Only the first attempt's wait is the batch's wait for a writer.
            let since = waiting_since.take();
            async move {
                let result = write_once(&self.pool, rows, self.commands.as_deref(), since).await;
                if let Err(err) = &result
                    && err.is_retriable()
                {
                    events::write_retry();
                    tracing::warn!(%err, "batch write failed");
                }
                result
            }
        };
        match WRITE_BACKOFF
            .retry(self.attempts, attempt, StorageError::is_retriable)
            .await
        {
            Ok(_) => Ok(Stored::AsSent),
            // Out of attempts: the caller spools the batch.
            Err(err) if err.is_retriable() => Err(()),
            Err(err) => {
                tracing::error!(%err, "database refused a batch; storing it as dead letters");
                let dead = as_dead_letters(rows, &err.to_string());
                write_once(&self.pool, &dead, None, None)
                    .await
                    .map(|_| Stored::AsDeadLetters)
                    .map_err(|_| ())
            }
        }
    }
}

/// Between the attempts at one batch: brief, since a publisher waits for its PUBACK meanwhile
/// and the spool takes the batch when the attempts run out.
const WRITE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// Commits the spool to the database in order, on a task of its own, shared by all writers.
///
/// Not a writer's job: a writer replaying would not take its shard's batches meanwhile, and
/// replaying the backlog of a long outage takes far longer than a publisher may wait
/// (`ingest.accept_timeout_ms`), so collars would be refused and disconnected after every outage.
/// For the same reason the spool is locked only to read and to remove files, never during a
/// database write.
pub struct Replayer {
    pub pool: Pool,
    pub spool: SharedSpool,
    pub acks: mpsc::Sender<AckDue>,
    /// How often to try while the spool holds batches.
    pub every: Duration,
    /// Rows per transaction at most (`ingest.batch_size`). Spooled batches are as small as the
    /// batch timer made them; one commit each would replay hardly faster than the fleet spools
    /// new ones during the drain, so consecutive batches are committed together.
    pub max_rows: usize,
    pub commands: Option<Arc<dyn CommandReports>>,
    pub committed: Option<Arc<dyn CommittedBatches>>,
    /// Replay starts once the database is migrated: a spool of an earlier run must not meet a
    /// database without its tables (that would turn it into dead letters).
    pub database: crate::storage::Ready,
}

impl Replayer {
    /// Replays every `every` until `stop` fires, then once more; what cannot be written by then
    /// stays in the spool for the next start.
    pub async fn run(self, mut stop: oneshot::Receiver<()>) {
        tokio::select! {
            () = self.database.wait() => {}
            _ = &mut stop => {
                if !self.spool.is_empty() {
                    tracing::warn!(batches = self.spool.files(), "the database never came: batches stay spooled for the next start");
                }
                return;
            }
        }
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.replay().await,
                _ = &mut stop => break,
            }
        }
        self.replay().await;
        if !self.spool.is_empty() {
            tracing::warn!(
                batches = self.spool.files(),
                "database unavailable at shutdown: batches stay spooled and are replayed at the next start"
            );
        }
    }

    /// Replays the spool in order until it is empty or the database fails.
    async fn replay(&self) {
        // Files only ever get appended (with higher numbers) by the writers and removed here, so
        // a listing stays valid until this removes its files.
        let mut pending: VecDeque<PathBuf> = VecDeque::new();
        // Batches to commit alone, after a merged group was refused for its content.
        let mut alone = 0usize;
        let mut replayed_any = false;
        loop {
            if pending.is_empty() {
                if self.spool.is_empty() {
                    break;
                }
                match self.spool.pending().await {
                    Ok(list) => pending = list.into(),
                    Err(err) => {
                        tracing::error!(%err, "cannot list the spool");
                        return;
                    }
                }
                if pending.is_empty() {
                    break;
                }
            }
            let max_rows = if alone > 0 { 1 } else { self.max_rows };
            let (rest, group) = match self.spool.take_group(pending, max_rows).await {
                Ok(taken) => taken,
                Err(err) => {
                    tracing::error!(%err, "cannot read the spool");
                    return;
                }
            };
            pending = rest;
            let Group {
                paths: group,
                rows,
                acks,
            } = group;
            if group.is_empty() {
                continue;
            }
            match write_once(&self.pool, &rows, self.commands.as_deref(), None).await {
                Ok(_) => {
                    if let Some(committed) = &self.committed {
                        committed.committed(&rows);
                    }
                    self.committed(&group, &acks).await;
                }
                Err(err) if err.is_retriable() => {
                    tracing::debug!(%err, "database still unavailable; spool kept");
                    return;
                }
                Err(err) if group.len() > 1 => {
                    // One of them holds what the database refuses: one at a time finds which.
                    tracing::warn!(%err, batches = group.len(), "database refused merged spooled batches; replaying them one by one");
                    alone = group.len();
                    for path in group.into_iter().rev() {
                        pending.push_front(path);
                    }
                    continue;
                }
                Err(err) => {
                    tracing::error!(%err, "database refused a spooled batch; storing it as dead letters");
                    let dead = as_dead_letters(&rows, &err.to_string());
                    if write_once(&self.pool, &dead, None, None).await.is_err() {
                        return;
                    }
                    self.committed(&group, &acks).await;
                }
            }
            alone = alone.saturating_sub(1);
            replayed_any = true;
        }
        if replayed_any {
            tracing::info!("spool replayed: the database has every batch");
        }
    }

    async fn committed(&self, group: &[PathBuf], acks: &[(String, i64)]) {
        if let Err(err) = self.spool.remove(group.to_vec()).await {
            // Replaying them again later is harmless: writes are idempotent.
            tracing::error!(%err, "cannot remove replayed spool files");
        }
        send_acks(&self.acks, acks);
    }
}

/// `closed`: when the batch was handed to the writers, to time its wait for a writer and a
/// connection (replays and retries have no such wait to report).
async fn write_once(
    pool: &Pool,
    rows: &BatchRows,
    commands: Option<&dyn CommandReports>,
    closed: Option<Instant>,
) -> Result<WriteOutcome, StorageError> {
    let started = Instant::now();
    let mut client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    if let Some(closed) = closed {
        events::stage(events::Stage::WriterWait, closed.elapsed());
    }
    let outcome = write_batch(&mut client, rows, commands).await?;
    if outcome.rewritten {
        events::batch_rewritten();
    }
    events::stage(events::Stage::Statement, outcome.statements);
    events::stage(events::Stage::Commit, outcome.commit);
    events::batch_committed(
        rows.len(),
        outcome.fixes_stored,
        outcome.duplicates,
        outcome.dead_letters,
        started.elapsed(),
    );
    Ok(outcome)
}

fn send_acks(acks: &mpsc::Sender<AckDue>, due: &[(String, i64)]) {
    for (tracker, seq) in due {
        // Acks are cumulative: a dropped one is covered by the next, so never block on them.
        if acks
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

fn as_dead_letters(rows: &BatchRows, reason: &str) -> BatchRows {
    let reason = format!("database refused the batch: {reason}");
    let mut dead = rows.dead_letters.clone();
    dead.extend(rows.fixes.iter().map(|f| DeadLetterRow {
        tracker_id: Some(f.tracker_id.clone()),
        topic: format!("trackers/{}/telemetry", f.tracker_id),
        // The fix's plain JSON, as the spool keeps it: the message itself is gone.
        payload: serde_json::to_vec(&format::Fix::from(f)).unwrap_or_default(),
        reason: reason.clone(),
        received_at: f.received_at,
    }));
    dead.extend(
        rows.command_reports
            .iter()
            .map(|r| r.dead_letter(reason.clone())),
    );
    BatchRows {
        dead_letters: dead,
        ..BatchRows::default()
    }
}
