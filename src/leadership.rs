//! Exactly one of each fleet-wide job: several pettracker processes on one database elect, per job, a leader that runs it, by a session-level PostgreSQL advisory lock held on a connection of its own.
//!
//! Each process runs one [`elect`] task per job. It connects, tries the job's lock and, while
//! it does not get it, tries again with jittered backoff (`gateway::backoff`). Once it holds
//! it, it starts the job and checks its connection every [`LIVENESS_INTERVAL`]: when the
//! connection is lost the session's lock is gone too (PostgreSQL releases it when the session
//! ends), so the job is stopped and the task goes back to trying. Another process takes over
//! within its backoff's cap after PostgreSQL has noticed the session's end.
//!
//! Which jobs need this (docs/operations.md, *Scale-out*): the alert engine's sweep for silent
//! trackers, the retention loop and the daily summaries' settle pass, which scan the whole fleet. Webhook deliveries (leases) and
//! command dispatch (`FOR UPDATE SKIP LOCKED`) already share their work safely among
//! processes, and alerts on fixes are computed where the fixes are committed.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use gateway::backoff::Backoff;
use gateway::shutdown::{self, Shutdown};
use gateway::storage::advisory;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a leader checks that its connection (and so its lock) is still there.
pub const LIVENESS_INTERVAL: Duration = Duration::from_secs(2);

/// How long the liveness check may take before the connection counts as lost.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);

/// A follower's waits between attempts: a leader that went away is replaced within the cap.
const RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));

/// A job that runs once per fleet. Each has its own lock, so different jobs may be led by
/// different processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    /// `retention::run`: deleting history past its windows.
    Retention,
    /// `days::run`: settling the kept daily summaries (plain PostgreSQL).
    Days,
    /// The alert engine's fleet-wide work: the periodic search for trackers silent past
    /// `alerts.offline_after_secs`, and behind an external broker the judging of every fix.
    Alerts,
}

impl Job {
    pub const ALL: [Job; 3] = [Job::Retention, Job::Alerts, Job::Days];

    pub fn name(self) -> &'static str {
        match self {
            Job::Retention => "retention",
            Job::Alerts => "alerts",
            Job::Days => "days",
        }
    }

    /// The advisory lock key: "pettld" and a number per job, apart from the retention pass's
    /// own lock ("pettret1", `gateway::storage::retention::ADVISORY_LOCK_KEY`).
    pub fn lock_key(self) -> i64 {
        const BASE: i64 = 0x7065_7474_6c64_0000; // "pettld\0\0"
        match self {
            Job::Retention => BASE + 1,
            Job::Alerts => BASE + 2,
            Job::Days => BASE + 3,
        }
    }

    /// The `application_name` of the job's leadership connection, so an operator (and a
    /// test) can find the session holding the lock in `pg_stat_activity`.
    pub fn application_name(self) -> String {
        format!("pettracker leader {}", self.name())
    }
}

/// Where this process stands for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Holds the lock and runs the job now.
    pub leading: bool,
    /// Times this process has become the leader since it started.
    pub terms: u64,
    /// Liveness checks passed in the current term: a test (or an operator) can see a leader
    /// keep its lock through them instead of guessing from elapsed time.
    pub checks: u64,
}

/// The job's work while this process leads: it gets a shutdown that fires when leadership ends
/// or the process stops, and must return soon after.
pub type Work = Box<dyn FnMut(Shutdown) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A running election for one job.
pub struct Leadership {
    job: Job,
    standing: watch::Receiver<Standing>,
    task: JoinHandle<()>,
}

impl Leadership {
    pub fn job(&self) -> Job {
        self.job
    }

    /// Where this process stands now.
    pub fn standing(&self) -> Standing {
        *self.standing.borrow()
    }

    /// Follows the standing (the alert engine asks it before each sweep).
    pub fn watch(&self) -> watch::Receiver<Standing> {
        self.standing.clone()
    }

    /// Waits until the task has stopped its job and let go of the lock (after shutdown).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Starts competing for `job`'s leadership on the database at `url`; while this process holds
/// it, `work` runs. Stops at `shutdown`.
pub fn elect(url: SecretString, job: Job, work: Work, shutdown: Shutdown) -> Leadership {
    let (tx, standing) = watch::channel(Standing::default());
    let task = tokio::spawn(campaign(url, job, work, tx, shutdown));
    Leadership {
        job,
        standing,
        task,
    }
}

/// How one connection's session ended.
enum Ended {
    /// The process is stopping.
    Shutdown,
    /// The connection is gone (or could not be made): the lock with it.
    Lost,
}

async fn campaign(
    url: SecretString,
    job: Job,
    mut work: Work,
    standing: watch::Sender<Standing>,
    mut shutdown: Shutdown,
) {
    let mut backoff = RETRY;
    loop {
        match session(&url, job, &mut work, &standing, &mut backoff, &shutdown).await {
            Ended::Shutdown => return,
            Ended::Lost => {}
        }
        tokio::select! {
            () = backoff.wait() => {}
            () = shutdown.recv() => return,
        }
    }
}

/// One connection: tries the lock until it gets it, then leads until the connection is lost or
/// the process stops.
async fn session(
    url: &SecretString,
    job: Job,
    work: &mut Work,
    standing: &watch::Sender<Standing>,
    backoff: &mut Backoff,
    shutdown: &Shutdown,
) -> Ended {
    let mut shutdown = shutdown.clone();
    let config = match url.expose_secret().parse::<tokio_postgres::Config>() {
        Ok(mut config) => {
            config.application_name(job.application_name());
            config
        }
        Err(err) => {
            tracing::warn!(job = job.name(), %err, "leadership: the database URL does not parse");
            return Ended::Lost;
        }
    };
    let (client, connection) = tokio::select! {
        connected = config.connect(tokio_postgres::NoTls) => match connected {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(job = job.name(), %err, "leadership: cannot connect; trying again");
                return Ended::Lost;
            }
        },
        () = shutdown.recv() => return Ended::Shutdown,
    };
    // Driven here rather than spawned: when it ends, this session (and its lock) has ended.
    let connection = async move {
        if let Err(err) = connection.await {
            tracing::debug!(%err, "leadership connection ended");
        }
    };
    tokio::pin!(connection);

    let what = "taking a leadership lock";
    loop {
        let attempt = advisory::try_lock(&client, job.lock_key(), what);
        let held = tokio::select! {
            held = attempt => held,
            () = &mut connection => return Ended::Lost,
            () = shutdown.recv() => return Ended::Shutdown,
        };
        match held {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => {
                tracing::debug!(job = job.name(), %err, "leadership: lock attempt failed");
                return Ended::Lost;
            }
        }
        tokio::select! {
            () = backoff.wait() => {}
            () = &mut connection => return Ended::Lost,
            () = shutdown.recv() => return Ended::Shutdown,
        }
    }

    backoff.reset();
    standing.send_modify(|s| {
        s.leading = true;
        s.terms = s.terms.saturating_add(1);
        s.checks = 0;
    });
    tracing::info!(job = job.name(), "leading this job for the fleet");
    let (stop_job, job_shutdown) = shutdown::channel();
    let mut running = tokio::spawn(work(job_shutdown));
    let mut liveness = tokio::time::interval(LIVENESS_INTERVAL);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            () = &mut connection => break Ended::Lost,
            _ = liveness.tick() => {
                // The connection is driven only where it is polled: the check waits on both,
                // or the query would never be sent and every check would time out.
                let check = tokio::time::timeout(LIVENESS_TIMEOUT, client.simple_query("SELECT 1"));
                let alive = tokio::select! {
                    alive = check => matches!(alive, Ok(Ok(_))),
                    () = &mut connection => false,
                };
                if !alive {
                    break Ended::Lost;
                }
                standing.send_modify(|s| s.checks = s.checks.saturating_add(1));
            }
            result = &mut running => {
                // A job ends only when told to; one that ends early (a panic) is restarted
                // after a pause, still under the lock.
                if let Err(err) = result {
                    tracing::error!(job = job.name(), %err, "fleet job failed; restarting it");
                }
                tokio::select! {
                    () = tokio::time::sleep(LIVENESS_INTERVAL) => {}
                    () = shutdown.recv() => break Ended::Shutdown,
                }
                running = tokio::spawn(work(stop_job.subscribe()));
            }
            () = shutdown.recv() => break Ended::Shutdown,
        }
    };
    if matches!(ended, Ended::Lost) {
        tracing::warn!(
            job = job.name(),
            "lost the leadership connection: stopping the job; another process may take it over"
        );
    }
    stop_job.trigger();
    let _ = running.await;
    standing.send_modify(|s| s.leading = false);
    // Dropping the client ends the session, which releases the lock: nothing to unlock.
    drop(client);
    ended
}

/// A [`Work`] that only holds the leadership: for jobs that run inside another loop and ask
/// [`Leadership::watch`] whether to act (the alert engine's sweep).
pub fn hold() -> Work {
    Box::new(|mut stop: Shutdown| Box::pin(async move { stop.recv().await }))
}
