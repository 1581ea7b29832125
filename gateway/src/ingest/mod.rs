//! The ingest pipeline: broker hooks -> decode/validate -> batch -> write (or spool) -> acks, with bounded channels between.
//!
//! Every stage owns one bounded channel to the next, so a slow database slows the batcher, which
//! slows decoding, which makes the broker's publish hooks wait: backpressure reaches the collars
//! instead of memory growing. A QoS 1 publish is acknowledged only once its batch is committed or
//! spooled to disk; acks on `trackers/{id}/ack` only once committed.

pub mod batch;
pub mod decode;
pub mod events;
pub mod spool;
pub mod write;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::broker::{Accepting, Authentication, DeviceHooks, DevicePublish, Refused};
use crate::protocol::{TrackerId, ValidationLimits};
use crate::shutdown::Shutdown;
use crate::storage;
use crate::storage::ingest::CommandReports;

pub use decode::{Envelope, Inbound};
pub use spool::SpoolError;
pub use write::{AckDue, CommittedBatches};

/// Tuning of the pipeline.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// A batch closes when it holds this many rows...
    pub batch_size: usize,
    /// ...or this long after its first row arrived, while its writer is still busy (a free writer
    /// takes it at once). Longer than a write under load, so a busy writer's next batch is one
    /// batch, not a queue of small ones that each pay a statement and a COMMIT (BENCHMARKS.md).
    pub batch_timeout: Duration,
    /// How old a batch must be before a free writer takes it (see `batch::Closing::linger`):
    /// what a message may wait for others to share its transaction.
    pub batch_linger: Duration,
    /// Messages waiting to be decoded; when full, publish hooks wait (backpressure).
    pub queue_capacity: usize,
    /// How long a QoS 1 publish may wait to be committed or spooled before the collar is told to resend.
    pub accept_timeout: Duration,
    /// Where batches wait while the database is unreachable.
    pub spool_dir: PathBuf,
    /// A tracker silent for this long is marked offline even without a disconnect.
    pub silence_timeout: Duration,
    pub limits: ValidationLimits,
    /// The server clock that device times are checked against; fixed in tests of the time rules.
    pub clock: Clock,
    /// Batchers and writers working in parallel, each on its own connection, for a shard of the
    /// trackers: a tracker always lands in the same shard, so its fixes and acks stay in order,
    /// while the database works on several batches at once.
    pub writers: usize,
    /// Where validated fixes, statuses and presence go for the live feeds, before they are stored.
    pub live: crate::live::LivePublisher,
    /// Who applies the collars' command reports in their batch's transaction: the server, which
    /// owns commands. Without it they are dead letters.
    pub commands: Option<Arc<dyn CommandReports>>,
    /// Who hears of every committed batch (the server's alert engine), or nobody.
    pub committed: Option<Arc<dyn CommittedBatches>>,
    /// Whether the database is there and migrated: until it is, collars are told "server
    /// unavailable" and the spool's replay and the silence check wait.
    pub database: storage::Ready,
}

/// Where "now" comes from: the system, or a clock a test holds and moves.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// Stands still until [`Clock::advance`] moves it; clones share it, so a test moves the
    /// clock of the server it started.
    Manual(Arc<std::sync::Mutex<chrono::DateTime<Utc>>>),
}

impl Clock {
    /// A clock standing at `at` until it is moved.
    pub fn manual(at: chrono::DateTime<Utc>) -> Clock {
        Clock::Manual(Arc::new(std::sync::Mutex::new(at)))
    }

    pub fn now(&self) -> chrono::DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(at) => *at.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// Moves a manual clock (and its clones) on by `by`; the system clock moves by itself.
    pub fn advance(&self, by: chrono::TimeDelta) {
        if let Clock::Manual(at) = self {
            let mut at = at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *at += by;
        }
    }
}

/// `IngestConfig::batch_linger`'s default, in milliseconds: long enough that a fleet's messages
/// share transactions, short beside a collar's wait for its PUBACK (BENCHMARKS.md, issue 17).
pub const DEFAULT_LINGER_MS: u64 = 10;

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            batch_size: 4000,
            batch_timeout: Duration::from_millis(1000),
            batch_linger: Duration::from_millis(DEFAULT_LINGER_MS),
            queue_capacity: 10_000,
            accept_timeout: Duration::from_secs(5),
            spool_dir: PathBuf::from("data/spool"),
            silence_timeout: Duration::from_secs(600),
            limits: ValidationLimits::default(),
            clock: Clock::System,
            writers: 2,
            live: crate::live::LivePublisher::default(),
            commands: None,
            committed: None,
            database: storage::Ready::now(),
        }
    }
}

/// The broker-facing end of the pipeline.
pub struct Ingest {
    pool: Pool,
    input: mpsc::Sender<Queued>,
    accept_timeout: Duration,
    database: storage::Ready,
}

/// A started pipeline.
pub struct IngestHandle {
    pub hooks: Arc<Ingest>,
    /// Acks owed to collars; the server publishes them on `trackers/{id}/ack`.
    pub acks: mpsc::Receiver<AckDue>,
    /// Completes once everything accepted is committed or spooled, after shutdown.
    pub task: JoinHandle<()>,
}

/// Starts the stages. They drain and stop after `shutdown` fires.
pub fn start(
    pool: Pool,
    config: IngestConfig,
    shutdown: Shutdown,
) -> Result<IngestHandle, SpoolError> {
    let spool = spool::Spool::open(&config.spool_dir)?;
    if !spool.is_empty() {
        tracing::info!(
            batches = spool.files(),
            "found spooled batches from an earlier run; replaying"
        );
    }
    let (input_tx, input_rx) = mpsc::channel::<Queued>(config.queue_capacity.max(1));
    let (ack_tx, ack_rx) = mpsc::channel(config.queue_capacity.max(1));
    let spool = spool::SharedSpool::new(spool);
    let mut shards = Vec::new();
    let mut stage_tasks = Vec::new();
    for _ in 0..config.writers.max(1) {
        let (decoded_tx, decoded_rx) = mpsc::channel(config.batch_size.max(1) * 2);
        let (batch_tx, batch_rx) = mpsc::channel(2);
        shards.push(decoded_tx);
        stage_tasks.push(tokio::spawn(batch::run(
            decoded_rx,
            batch_tx,
            Arc::new(tokio::sync::Semaphore::new(1)),
            batch::Closing {
                max_rows: config.batch_size.max(1),
                max_wait: config.batch_timeout,
                linger: config.batch_linger,
            },
        )));
        let writer = write::Writer {
            pool: pool.clone(),
            spool: spool.clone(),
            acks: ack_tx.clone(),
            attempts: 3,
            commands: config.commands.clone(),
            committed: config.committed.clone(),
        };
        stage_tasks.push(tokio::spawn(writer.run(batch_rx)));
    }
    let replayer = write::Replayer {
        pool: pool.clone(),
        spool: spool.clone(),
        acks: ack_tx.clone(),
        every: Duration::from_secs(1),
        max_rows: config.batch_size.max(1),
        commands: config.commands.clone(),
        committed: config.committed.clone(),
        database: config.database.clone(),
    };
    let (replay_stop, replay_stop_rx) = oneshot::channel();
    let replay_task = tokio::spawn(replayer.run(replay_stop_rx));
    drop(ack_tx);

    let decode_task = tokio::spawn(run_decode(
        input_rx,
        shards,
        config.limits,
        config.clock,
        config.live,
        shutdown.clone(),
    ));
    let silence_task = tokio::spawn(run_silence(
        pool.clone(),
        config.silence_timeout,
        config.database.clone(),
        shutdown,
    ));

    let task = tokio::spawn(async move {
        let _ = decode_task.await;
        for stage in stage_tasks {
            let _ = stage.await;
        }
        // The writers have written or spooled everything; one last replay, then done.
        let _ = replay_stop.send(());
        let _ = replay_task.await;
        silence_task.abort();
    });
    Ok(IngestHandle {
        hooks: Arc::new(Ingest {
            pool,
            input: input_tx,
            accept_timeout: config.accept_timeout,
            database: config.database,
        }),
        acks: ack_rx,
        task,
    })
}

/// An envelope on the decode queue, with when it entered it.
struct Queued {
    at: Instant,
    envelope: Envelope,
}

async fn run_decode(
    mut input: mpsc::Receiver<Queued>,
    shards: Vec<mpsc::Sender<decode::Decoded>>,
    limits: ValidationLimits,
    clock: Clock,
    live: crate::live::LivePublisher,
    mut shutdown: Shutdown,
) {
    loop {
        let envelope = tokio::select! {
            e = input.recv() => e,
            () = shutdown.recv() => {
                // No new messages; what is already queued is still processed below.
                input.close();
                input.recv().await
            }
        };
        let Some(Queued { at, envelope }) = envelope else {
            break;
        };
        events::stage(events::Stage::DecodeQueue, at.elapsed());
        events::queue_depth(input.len());
        let mut decoded = decode::decode(envelope, clock.now(), &limits);
        // Live feeds hear of it now, not after the commit; publishing never waits.
        live.publish(std::mem::take(&mut decoded.live));
        let shard = &shards[shard_of(decoded.tracker(), shards.len())];
        if shard.send(decoded).await.is_err() {
            break;
        }
    }
}

/// The shard a tracker's messages go to; messages naming no valid tracker go to the first.
fn shard_of(tracker: Option<&str>, shards: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    // A fixed hasher, not a randomly seeded one: the shard must not change while running.
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    tracker.map_or(0, |t| (hasher.hash_one(t) % shards as u64) as usize)
}

async fn run_silence(
    pool: Pool,
    silence: Duration,
    database: storage::Ready,
    mut shutdown: Shutdown,
) {
    tokio::select! {
        () = database.wait() => {}
        () = shutdown.recv() => return,
    }
    let mut tick =
        tokio::time::interval((silence / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.recv() => return,
        }
        if let Ok(client) = pool.get().await {
            match storage::ingest::mark_silent_offline(&client, silence).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(trackers = n, "marked silent trackers offline"),
                Err(err) => tracing::warn!(%err, "cannot mark silent trackers offline"),
            }
        }
    }
}

/// A message taken by [`Ingest::submit`], until its batch is committed or spooled.
#[derive(Debug)]
pub struct Pending(Option<oneshot::Receiver<Instant>>);

impl Pending {
    /// Completes once the message is committed or spooled to disk (at once for QoS 0); `Err`
    /// when neither the database nor the disk took it, so its source should hand it in again.
    /// Cancel-safe: a `&mut` borrow may be polled in a `select!` and polled again later.
    pub async fn stored(&mut self) -> Result<(), Refused> {
        match &mut self.0 {
            None => Ok(()),
            Some(done) => done
                .await
                .map(|_stored_at| ())
                .map_err(|_| Refused("could not be stored".to_owned())),
        }
    }
}

impl Ingest {
    /// Takes a publish from a source that acknowledges by itself, once stored: the external
    /// broker's subscription ([`crate::external`]). Unlike [`DeviceHooks::accept_publish`] it
    /// does not give up after `accept_timeout`: the source holds the message (its broker keeps
    /// it unacknowledged) and waits, which is the backpressure. Messages are queued in the order
    /// of the calls, so one tracker's messages stay in order.
    pub async fn submit(&self, publish: DevicePublish) -> Result<Pending, Refused> {
        let (done, pending) = if publish.qos >= 1 {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Pending(Some(rx)))
        } else {
            (None, Pending(None))
        };
        self.input
            .send(Queued {
                at: Instant::now(),
                envelope: Envelope {
                    inbound: Inbound::Publish(publish),
                    done,
                },
            })
            .await
            .map_err(|_| Refused("ingest is shutting down".to_owned()))?;
        Ok(pending)
    }

    async fn enqueue(&self, inbound: Inbound, wait: bool) -> Result<(), Refused> {
        self.enter(inbound, wait).await?.await
    }

    /// Puts `inbound` on the pipeline's queue (waiting for room at most the accept timeout) and
    /// returns what completes once it is stored, if `wait`, within the same timeout.
    async fn enter(&self, inbound: Inbound, wait: bool) -> Result<Accepting, Refused> {
        let (done, committed) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let entered = Instant::now();
        let deadline = tokio::time::Instant::from_std(entered) + self.accept_timeout;
        let queued = Queued {
            at: entered,
            envelope: Envelope { inbound, done },
        };
        tokio::time::timeout_at(deadline, self.input.send(queued))
            .await
            .map_err(|_| Refused("ingest queue full".to_owned()))?
            .map_err(|_| Refused("ingest is shutting down".to_owned()))?;
        let Some(committed) = committed else {
            return Ok(Box::pin(std::future::ready(Ok(()))));
        };
        Ok(Box::pin(async move {
            let stored_at = tokio::time::timeout_at(deadline, committed)
                .await
                .map_err(|_| Refused("not committed in time".to_owned()))?
                .map_err(|_| Refused("could not be stored".to_owned()))?;
            events::stage(events::Stage::Ack, stored_at.elapsed());
            events::puback_wait(entered.elapsed());
            Ok(())
        }))
    }
}

#[async_trait::async_trait]
impl DeviceHooks for Ingest {
    async fn authenticate(&self, tracker: &TrackerId, secret: &[u8]) -> Authentication {
        if !self.database.is_ready() {
            return Authentication::Unavailable;
        }
        match storage::trackers::authenticate(&self.pool, tracker, secret).await {
            Ok(true) => Authentication::Accepted,
            Ok(false) => Authentication::Refused,
            Err(err) => {
                tracing::warn!(%err, %tracker, "cannot check device credentials; the collar is told the server is unavailable");
                Authentication::Unavailable
            }
        }
    }

    async fn accept_publish(&self, publish: DevicePublish) -> Result<(), Refused> {
        let wait = publish.qos >= 1;
        self.enqueue(Inbound::Publish(publish), wait).await
    }

    async fn submit_publish(&self, publish: DevicePublish) -> Result<Accepting, Refused> {
        let wait = publish.qos >= 1;
        self.enter(Inbound::Publish(publish), wait).await
    }

    async fn connected(&self, tracker: &TrackerId) {
        let inbound = Inbound::Presence {
            tracker: tracker.clone(),
            online: true,
            at: Utc::now(),
        };
        if let Err(err) = self.enqueue(inbound, false).await {
            tracing::warn!(%err, %tracker, "presence update dropped");
        }
    }

    async fn disconnected(&self, tracker: &TrackerId) {
        let inbound = Inbound::Presence {
            tracker: tracker.clone(),
            online: false,
            at: Utc::now(),
        };
        if let Err(err) = self.enqueue(inbound, false).await {
            tracing::warn!(%err, %tracker, "presence update dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn a_tracker_always_lands_in_the_same_shard_and_trackers_spread_over_all() {
        let shards = 4;
        let mut used = [0usize; 4];
        for i in 0..1000 {
            let id = format!("collar-{i}");
            let shard = shard_of(Some(&id), shards);
            assert_eq!(shard, shard_of(Some(&id), shards));
            used[shard] += 1;
        }
        assert!(used.iter().all(|&n| n > 150), "{used:?}");
        assert_eq!(shard_of(None, shards), 0);
    }
}
