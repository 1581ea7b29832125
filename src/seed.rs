//! `pettracker seed`: realistic history for development, demos and query benchmarks, from the simulator's movement model through the ingest write path.
//!
//! Rows go through `gateway::storage::ingest::write_batch`, the statement live ingest uses, so
//! seeded data is shaped and deduplicated exactly as collars' data is (a second seed over the
//! same range stores nothing twice), and `tracker_status` ends at each tracker's newest fix.
//! Speed comes from large batches (one statement per `batch_rows` fixes) written over several
//! connections at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use gateway::protocol::TrackerId;
use gateway::storage::ingest::{BatchRows, FixRow, write_batch};
use gateway::storage::trackers::{self, ProvisionError};

/// What to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub trackers: u32,
    pub days: f64,
    /// Seconds between fixes of one tracker.
    pub interval_s: u32,
    /// Tracker ids are `{prefix}-0001`, `{prefix}-0002`, ...
    pub prefix: String,
    /// Attach the trackers to this account, claimed from the start of the history.
    pub owner: Option<String>,
    pub city: firmware_sim::City,
    pub seed: u64,
    /// Parallel database connections.
    pub connections: usize,
    /// Fixes per write.
    pub batch_rows: usize,
    /// The history ends here (default: now).
    pub end: Option<DateTime<Utc>>,
}

impl SeedOptions {
    pub fn new(trackers: u32, days: f64, interval_s: u32) -> SeedOptions {
        SeedOptions {
            trackers,
            days,
            interval_s,
            prefix: "seed".to_owned(),
            owner: None,
            city: firmware_sim::BERLIN,
            seed: 1,
            connections: 4,
            batch_rows: 10_000,
            end: None,
        }
    }

    /// Fixes per tracker: the whole days at the interval.
    pub fn fixes_per_tracker(&self) -> u64 {
        (self.days * 86_400.0 / f64::from(self.interval_s.max(1))).floor() as u64
    }

    pub fn tracker_id(&self, i: u32) -> String {
        format!("{}-{:04}", self.prefix, i + 1)
    }
}

/// What a seed run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedReport {
    pub trackers: u32,
    pub trackers_created: u32,
    pub rows_written: u64,
    pub rows_stored: u64,
    pub seconds: f64,
    pub rows_per_second: f64,
}

/// Creates the trackers (those that exist are reused), attaches them to `owner`, and writes
/// their history. `progress` is called about every 5 s with the rows written so far.
pub async fn run(
    pool: &deadpool_postgres::Pool,
    opts: &SeedOptions,
    progress: impl Fn(u64, u64),
) -> anyhow::Result<SeedReport> {
    anyhow::ensure!(opts.trackers > 0, "--trackers must be at least 1");
    anyhow::ensure!(opts.interval_s > 0, "--interval must be at least 1 second");
    anyhow::ensure!(
        opts.days > 0.0 && opts.days <= 365.0,
        "--days must be in 0..=365 (older fixes are outside the retention window)"
    );
    let per = opts.fixes_per_tracker();
    anyhow::ensure!(per > 0, "--days is shorter than one --interval");
    let started = Instant::now();
    let end = opts.end.unwrap_or_else(Utc::now).with_timezone(&Utc) - TimeDelta::seconds(5);
    let end = DateTime::<Utc>::from_timestamp(end.timestamp(), 0).unwrap_or(end);
    let interval = TimeDelta::seconds(i64::from(opts.interval_s));
    let start = end - interval * (per as i32 - 1).max(0);

    let created = ensure_trackers(pool, opts).await?;
    if let Some(email) = &opts.owner {
        let attached = pool
            .get()
            .await?
            .execute(
                "UPDATE trackers SET owner_id = u.id,
                        claimed_at = CASE WHEN trackers.owner_id = u.id
                                          THEN least(trackers.claimed_at, $2) ELSE $2 END
                 FROM users u
                 WHERE lower(u.email) = lower($1) AND trackers.tracker_id = ANY($3)",
                &[
                    email,
                    &start,
                    &(0..opts.trackers)
                        .map(|i| opts.tracker_id(i))
                        .collect::<Vec<_>>(),
                ],
            )
            .await
            .context("cannot attach the trackers to their owner")?;
        anyhow::ensure!(attached > 0, "no account with email {email}");
    }

    let homes = opts.city.homes(opts.trackers as usize, opts.seed);
    let written = Arc::new(AtomicU64::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let workers = opts.connections.clamp(1, opts.trackers as usize);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (pool, opts) = (pool.clone(), opts.clone());
        let (written, stored) = (written.clone(), stored.clone());
        let homes = homes.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = pool.get().await.context("no database connection")?;
            for i in (w..opts.trackers as usize).step_by(workers) {
                let id = opts.tracker_id(i as u32);
                let mut history =
                    History::new(id, homes[i], opts.seed ^ (i as u64 + 1), start, interval);
                let mut left = per;
                while left > 0 {
                    let n = left.min(opts.batch_rows as u64);
                    let rows = BatchRows {
                        fixes: history.take(n as usize),
                        ..BatchRows::default()
                    };
                    let outcome = write_batch(&mut client, &rows, None)
                        .await
                        .context("writing seeded fixes")?;
                    written.fetch_add(n, Ordering::Relaxed);
                    stored.fetch_add(outcome.fixes_stored, Ordering::Relaxed);
                    left -= n;
                }
            }
            anyhow::Ok(())
        }));
    }
    let all = futures::future::try_join_all(tasks);
    tokio::pin!(all);
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.tick().await;
    let total = per * u64::from(opts.trackers);
    let results = loop {
        tokio::select! {
            r = &mut all => break r.context("a seed worker panicked")?,
            _ = ticker.tick() => progress(written.load(Ordering::Relaxed), total),
        }
    };
    for r in results {
        r?;
    }
    // The history is read at once (benchmarks, the demo): its days are kept now, not at the
    // next settle pass.
    crate::days::settle_now(pool)
        .await
        .context("settling the seeded days")?;
    let seconds = started.elapsed().as_secs_f64();
    let rows_written = written.load(Ordering::Relaxed);
    Ok(SeedReport {
        trackers: opts.trackers,
        trackers_created: created,
        rows_written,
        rows_stored: stored.load(Ordering::Relaxed),
        seconds,
        rows_per_second: rows_written as f64 / seconds,
    })
}

/// Provisions the trackers that do not exist yet (their secrets are not printed: seeded
/// trackers carry history, not collars; `tracker provision` makes ones that connect).
async fn ensure_trackers(
    pool: &deadpool_postgres::Pool,
    opts: &SeedOptions,
) -> anyhow::Result<u32> {
    let names = [
        "Rex", "Luna", "Milo", "Bella", "Max", "Nala", "Oskar", "Kira",
    ];
    let ids = (0..opts.trackers)
        .map(|i| {
            let id = opts.tracker_id(i);
            TrackerId::parse(&id)
                .map(|t| (t, names[i as usize % names.len()]))
                .map_err(|e| anyhow::anyhow!("invalid tracker id {id:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut created = 0;
    let mut results = futures::stream::iter(ids)
        .map(|(t, pet)| async move { trackers::provision(pool, &t, Some(pet)).await })
        .buffer_unordered(8);
    while let Some(r) = results.next().await {
        match r {
            Ok(_) => created += 1,
            Err(ProvisionError::Exists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(created)
}

/// One tracker's fixes, generated in time order by the simulator's pet.
struct History {
    id: String,
    pet: firmware_sim::Pet,
    next: DateTime<Utc>,
    interval: TimeDelta,
    seq: i64,
    battery: firmware_sim::Charge,
}

impl History {
    fn new(
        id: String,
        home: firmware_sim::Home,
        seed: u64,
        start: DateTime<Utc>,
        interval: TimeDelta,
    ) -> History {
        History {
            id,
            pet: firmware_sim::Pet::new(home, seed),
            next: start,
            interval,
            seq: 0,
            battery: firmware_sim::Charge::new(60.0 + (seed % 40) as f64),
        }
    }

    fn take(&mut self, n: usize) -> Vec<FixRow> {
        let dt = self.interval.as_seconds_f64();
        let battery = firmware_sim::Battery::default();
        (0..n)
            .map(|_| {
                let fix = self.pet.step(dt);
                // The collar's battery as firmware-sim drains and charges it.
                self.battery.step(&battery, dt, fix.doing);
                self.seq += 1;
                let t = self.next;
                self.next += self.interval;
                FixRow {
                    tracker_id: self.id.clone(),
                    device_time: t,
                    // Uploaded a second or two after the fix, as a connected collar would be.
                    received_at: t + TimeDelta::milliseconds(800 + (self.seq % 7) * 150),
                    lat: fix.lat,
                    lon: fix.lon,
                    altitude: Some(fix.alt as f32),
                    accuracy: Some(fix.acc as f32),
                    speed: Some(fix.spd as f32),
                    heading: fix.hdg.map(|h| h as f32),
                    satellites: Some(i16::from(fix.sat)),
                    battery: Some(self.battery.percent() as i16),
                    seq: Some(self.seq),
                }
            })
            .collect()
    }
}
