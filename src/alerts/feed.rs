//! The alert engine's input: what every committed batch stored (fixes, status reports, presence), handed over by the write path without ever blocking it, and without ever losing a tracker's news.
//!
//! The write path calls [`Feed`] (the gateway's `CommittedBatches`) after each commit. The queue
//! is bounded; a batch that does not fit is not queued, but its trackers are marked *behind*:
//! their queued inputs are dropped too, and the engine reads their news back from the database
//! (everything there is committed, which is why the engine takes committed batches and not the
//! live bus). So memory stays bounded, ingest never waits, and no fix is skipped.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use gateway::ingest::CommittedBatches;
use gateway::storage::ingest::{BatchRows, FixRow};
use tokio::sync::Notify;

/// One thing the engine learns of a tracker.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Fix(FixRow),
    /// A status report; `battery` in percent.
    Status {
        tracker: String,
        at: DateTime<Utc>,
        battery: Option<i16>,
    },
    /// The tracker connected (or said it is online).
    Online {
        tracker: String,
        at: DateTime<Utc>,
    },
}

impl Input {
    pub fn tracker(&self) -> &str {
        match self {
            Input::Fix(fix) => &fix.tracker_id,
            Input::Status { tracker, .. } | Input::Online { tracker, .. } => tracker,
        }
    }

    /// The inputs of a committed batch: its fixes, status reports and connections, each kind
    /// in the order the batch holds it.
    pub fn from_batch(rows: &BatchRows) -> Vec<Input> {
        let fixes = rows.fixes.iter().cloned().map(Input::Fix);
        let statuses = rows.statuses.iter().map(|s| Input::Status {
            tracker: s.tracker_id.clone(),
            at: s.received_at,
            battery: s.battery,
        });
        let online = rows
            .presence
            .iter()
            .filter(|p| p.online)
            .map(|p| Input::Online {
                tracker: p.tracker_id.clone(),
                at: p.at,
            });
        fixes.chain(statuses).chain(online).collect()
    }
}

/// What the engine does next.
#[derive(Debug, PartialEq)]
pub enum Work {
    Input(Input),
    /// Read this tracker's news since its watermark back from the database.
    Resync(String),
}

#[derive(Debug, Default)]
struct Queue {
    inputs: VecDeque<Input>,
    /// Trackers whose news did not fit; until the engine resyncs one, its inputs are dropped.
    behind: BTreeSet<String>,
}

/// The bounded queue between the write path and the engine.
#[derive(Debug)]
pub struct Feed {
    queue: Mutex<Queue>,
    wake: Notify,
    capacity: usize,
}

impl Feed {
    /// A feed holding at most `capacity` inputs.
    pub fn new(capacity: usize) -> Feed {
        Feed {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Takes a committed batch's inputs; never waits (a plain lock held for a copy).
    pub fn push(&self, inputs: Vec<Input>) {
        if inputs.is_empty() {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.inputs.len() + inputs.len() > self.capacity {
            let trackers: BTreeSet<String> =
                inputs.iter().map(|i| i.tracker().to_owned()).collect();
            // Their queued inputs go too: the resync reads them back with the rest, and
            // applying an older status after it would undo what it found.
            queue.inputs.retain(|i| !trackers.contains(i.tracker()));
            events::behind(trackers.len());
            queue.behind.extend(trackers);
        } else {
            let Queue {
                inputs: queued,
                behind,
            } = &mut *queue;
            queued.extend(inputs.into_iter().filter(|i| !behind.contains(i.tracker())));
        }
        drop(queue);
        self.wake.notify_one();
    }

    /// Has the engine read these trackers' news back from the database (another instance
    /// committed it); their queued inputs go, as the read-back includes them.
    pub fn resync(&self, trackers: impl IntoIterator<Item = String>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let before = queue.behind.len();
        queue.behind.extend(trackers);
        if queue.behind.len() == before {
            return;
        }
        let Queue { inputs, behind } = &mut *queue;
        inputs.retain(|i| !behind.contains(i.tracker()));
        drop(queue);
        self.wake.notify_one();
    }

    /// The next thing to do: resyncs first (they replace inputs that were dropped), then the
    /// queued inputs in order.
    pub async fn next(&self) -> Work {
        loop {
            let notified = self.wake.notified();
            {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(tracker) = queue.behind.pop_first() {
                    return Work::Resync(tracker);
                }
                if let Some(input) = queue.inputs.pop_front() {
                    return Work::Input(input);
                }
            }
            notified.await;
        }
    }
}

impl CommittedBatches for Feed {
    fn committed(&self, rows: &BatchRows) {
        self.push(Input::from_batch(rows));
    }
}

pub(crate) mod events {
    //! Feed telemetry.
    pub const BEHIND: &str = "pettracker_alerts_resyncs_total";

    /// Trackers whose news the engine will read back from the database.
    pub fn behind(trackers: usize) {
        metrics::counter!(BEHIND).increment(trackers as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(tracker: &str) -> Input {
        Input::Online {
            tracker: tracker.to_owned(),
            at: DateTime::UNIX_EPOCH,
        }
    }

    async fn drain(feed: &Feed) -> Vec<Work> {
        let mut out = Vec::new();
        while let Ok(work) =
            tokio::time::timeout(std::time::Duration::from_millis(10), feed.next()).await
        {
            out.push(work);
        }
        out
    }

    #[tokio::test]
    async fn a_batch_that_does_not_fit_marks_its_trackers_behind_and_drops_their_queued_news() {
        let feed = Feed::new(3);
        feed.push(vec![online("rex"), online("fido")]);
        // Does not fit: rex's news is read back from the database instead, all of it.
        feed.push(vec![online("rex"), online("rex")]);
        // While rex is behind, its news is not queued; others' is.
        feed.push(vec![online("rex"), online("bello")]);
        assert_eq!(
            drain(&feed).await,
            [
                Work::Resync("rex".into()),
                Work::Input(online("fido")),
                Work::Input(online("bello")),
            ]
        );
        // Once resynced, it is queued again.
        feed.push(vec![online("rex")]);
        assert_eq!(drain(&feed).await, [Work::Input(online("rex"))]);
    }
}
