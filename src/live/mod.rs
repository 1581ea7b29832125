//! The live hub: reads the live bus and hands each event to the WebSocket sessions subscribed to its tracker, through one bounded queue per session.
//!
//! The hub never waits for a session: a full queue drops the event for that session and counts
//! it, and the session then tells its client it overflowed (see [`session`]). It also remembers
//! the last few seconds of positions per tracker, because events leave before their batch is
//! committed: a client that subscribes with `since` gets the database's rows *and* these, so a
//! fix that is on its way to the database is neither lost nor sent twice.

pub mod announce;
pub mod bus;
pub mod events;
pub mod relay;
pub mod session;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gateway::shutdown::Shutdown;
use tokio::sync::mpsc;

pub use bus::{LiveBus, LiveEvent, LiveSubscription, Published};

/// How long the hub remembers a tracker's positions: longer than a batch takes to be committed.
const RECENT_WINDOW: Duration = Duration::from_secs(10);
/// At most this many remembered positions per tracker.
const RECENT_MAX: usize = 64;

/// Settings of the live feed sessions.
#[derive(Debug, Clone, Copy)]
pub struct LiveOptions {
    pub queue_capacity: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

impl LiveOptions {
    /// From the `[live]` settings.
    pub fn from_settings(live: &crate::config::LiveSettings) -> LiveOptions {
        LiveOptions {
            queue_capacity: live.queue_capacity,
            ping_interval: Duration::from_secs(live.ping_interval_secs),
            // Never shorter than two ping intervals, or a healthy client could time out between pings.
            idle_timeout: Duration::from_secs(
                live.idle_timeout_secs
                    .max(live.ping_interval_secs.saturating_mul(2)),
            ),
        }
    }
}

/// A session's inbox as the hub sees it.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Arc<Published>>,
    /// Events dropped because the queue was full, since the session last looked.
    dropped: AtomicU64,
}

impl Outbox {
    /// Takes the count of events dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

#[derive(Default)]
struct TrackerEntry {
    subscribers: HashMap<u64, Arc<Outbox>>,
    recent: VecDeque<Arc<Published>>,
}

impl TrackerEntry {
    fn prune(&mut self, now: Instant) {
        while self.recent.len() > RECENT_MAX
            || self
                .recent
                .front()
                .is_some_and(|p| now.duration_since(p.published_at) > RECENT_WINDOW)
        {
            self.recent.pop_front();
        }
    }
}

/// The live hub of one server process.
pub struct Hub {
    trackers: Mutex<HashMap<String, TrackerEntry>>,
    next_id: AtomicU64,
    pub options: LiveOptions,
    pub shutdown: Shutdown,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub fed by `bus`; its dispatch task ends at shutdown.
    pub fn start(bus: &LiveBus, options: LiveOptions, shutdown: Shutdown) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            trackers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            options,
            shutdown: shutdown.clone(),
        });
        tokio::spawn(dispatch(hub.clone(), bus.subscribe(), shutdown));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TrackerEntry>> {
        // A panic while holding the lock cannot leave the map half-changed in a way that matters
        // more than stopping every live feed would.
        self.trackers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new session: its id, its queue's receiving end and its outbox.
    pub fn attach(&self) -> (u64, mpsc::Receiver<Arc<Published>>, Arc<Outbox>) {
        let (tx, rx) = mpsc::channel(self.options.queue_capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox {
            tx,
            dropped: AtomicU64::new(0),
        });
        (id, rx, outbox)
    }

    /// Starts sending `tracker`'s events to the session; returns the positions of the last
    /// seconds, which may not be in the database yet.
    pub fn subscribe(
        &self,
        session: u64,
        outbox: &Arc<Outbox>,
        tracker: &str,
    ) -> Vec<Arc<Published>> {
        let mut trackers = self.lock();
        let entry = trackers.entry(tracker.to_owned()).or_default();
        entry.prune(Instant::now());
        entry.subscribers.insert(session, outbox.clone());
        entry.recent.iter().cloned().collect()
    }

    /// How many sessions get `tracker`'s events now.
    pub fn subscribers(&self, tracker: &str) -> usize {
        self.lock().get(tracker).map_or(0, |e| e.subscribers.len())
    }

    pub fn unsubscribe(&self, session: u64, tracker: &str) {
        let mut trackers = self.lock();
        if let Some(entry) = trackers.get_mut(tracker) {
            entry.subscribers.remove(&session);
        }
    }

    fn deliver(&self, published: Arc<Published>) {
        let now = Instant::now();
        let mut trackers = self.lock();
        let tracker = published.event.tracker_id();
        let entry = match trackers.get_mut(tracker) {
            Some(entry) => entry,
            None if published.event.is_position() => {
                trackers.entry(tracker.to_owned()).or_default()
            }
            None => return,
        };
        if published.event.is_position() {
            entry.recent.push_back(published.clone());
            entry.prune(now);
        }
        for outbox in entry.subscribers.values() {
            match outbox.tx.try_send(published.clone()) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    outbox.dropped.fetch_add(1, Ordering::Relaxed);
                    events::dropped_for_slow_client();
                }
                // The session is ending and will unsubscribe itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Forgets trackers nobody watches whose remembered positions are all old.
    fn sweep(&self) {
        let now = Instant::now();
        let mut trackers = self.lock();
        trackers.retain(|_, entry| {
            entry.prune(now);
            !entry.subscribers.is_empty() || !entry.recent.is_empty()
        });
    }
}

async fn dispatch(hub: Arc<Hub>, mut events: LiveSubscription, mut shutdown: Shutdown) {
    let mut sweep = tokio::time::interval(RECENT_WINDOW);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(published) => hub.deliver(published),
                None => return,
            },
            _ = sweep.tick() => hub.sweep(),
            () = shutdown.recv() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(tracker: &str, second: i64) -> Arc<Published> {
        Arc::new(Published {
            event: bus::tests::position(tracker, (1_700_000_000 + second) * 1_000_000),
            published_at: Instant::now(),
        })
    }

    fn hub(queue_capacity: usize) -> Arc<Hub> {
        let (_trigger, shutdown) = gateway::shutdown::channel();
        let options = LiveOptions {
            queue_capacity,
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
        };
        Hub::start(&LiveBus::new(16), options, shutdown)
    }

    #[tokio::test]
    async fn a_full_session_queue_drops_and_counts_instead_of_waiting() {
        let hub = hub(2);
        let (slow, mut slow_queue, slow_outbox) = hub.attach();
        let (fast, mut fast_queue, fast_outbox) = hub.attach();
        hub.subscribe(slow, &slow_outbox, "rex");
        hub.subscribe(fast, &fast_outbox, "rex");
        for second in 0..5 {
            hub.deliver(position("rex", second));
            // The fast session keeps up; the slow one never reads.
            assert!(fast_queue.recv().await.is_some());
        }
        assert_eq!(slow_outbox.take_dropped(), 3);
        assert_eq!(slow_outbox.take_dropped(), 0);
        assert_eq!(fast_outbox.take_dropped(), 0);
        assert!(slow_queue.try_recv().is_ok());
    }

    #[tokio::test]
    async fn a_session_hears_only_its_trackers_and_gets_their_recent_positions_on_subscribe() {
        let hub = hub(16);
        hub.deliver(position("rex", 1));
        hub.deliver(position("bello", 1));
        let (id, mut queue, outbox) = hub.attach();
        let recent = hub.subscribe(id, &outbox, "rex");
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].event.tracker_id(), "rex");
        hub.deliver(position("bello", 2));
        hub.deliver(position("rex", 2));
        let got = queue.recv().await.unwrap();
        assert_eq!(got.event, position("rex", 2).event);
        assert!(queue.try_recv().is_err());
        hub.unsubscribe(id, "rex");
        hub.deliver(position("rex", 3));
        assert!(queue.try_recv().is_err());
    }
}
