//! Counters a collar keeps about itself, readable while it runs, and a way to wait until they say
//! something (tests wait on them instead of sleeping).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// Counters a collar keeps about itself (tests and progress lines).
#[derive(Debug, Default)]
pub struct CollarStats {
    pub fixes_recorded: AtomicU64,
    pub messages_sent: AtomicU64,
    pub fixes_sent: AtomicU64,
    /// Fixes sent again because no ack covered them in time, or after a reconnect.
    pub fixes_resent: AtomicU64,
    /// Messages that carried more than one fix.
    pub batches_sent: AtomicU64,
    pub acks_received: AtomicU64,
    /// Highest seq acknowledged by the server (0: none yet).
    pub acked_seq: AtomicU64,
    pub connects: AtomicU64,
    pub commands_received: AtomicU64,
    pub malformed_sent: AtomicU64,
    pub duplicates_sent: AtomicU64,
    /// Fixes held and not yet acknowledged.
    pub buffered: AtomicU64,
    /// Highest seq recorded so far.
    pub last_seq: AtomicU64,
    pub offline: AtomicBool,
    /// Milliseconds between fixes now (live mode changes it).
    pub interval_ms: AtomicU64,
    /// Woken whenever the collar has handled something, so waiters look at the counters again.
    changed: Notify,
}

impl CollarStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Wakes everyone in [`CollarStats::wait_until`]; the collar calls it after each event.
    pub(crate) fn changed(&self) {
        self.changed.notify_waiters();
    }

    /// Returns once `done` holds, looking again each time the collar has handled an event
    /// (a fix, a packet, a timer). Bound it with a timeout: a collar that stops never says so.
    pub async fn wait_until(&self, done: impl Fn(&CollarStats) -> bool) {
        loop {
            // Registered before looking, so a change between the look and the wait is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if done(self) {
                return;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_waiter_returns_when_a_change_makes_its_condition_true() {
        let stats = Arc::new(CollarStats::default());
        let waiter = tokio::spawn({
            let stats = stats.clone();
            async move {
                stats
                    .wait_until(|s| s.fixes_recorded.load(Ordering::Relaxed) >= 2)
                    .await
            }
        });
        for _ in 0..2 {
            tokio::task::yield_now().await;
            CollarStats::add(&stats.fixes_recorded, 1);
            stats.changed();
        }
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("woken by the second change")
            .unwrap();
    }
}
