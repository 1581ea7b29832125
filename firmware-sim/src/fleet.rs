//! A fleet: many collars, each its own task and MQTT connection, started and stopped together.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use gateway::protocol::TrackerId;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::collar::{Collar, CollarConfig, CollarStats};

/// Running collars. Dropping it without [`Fleet::stop`] aborts them (no clean `offline`).
pub struct Fleet {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// One per collar, in the order of the configs.
    pub stats: Vec<Arc<CollarStats>>,
    pub tracker_ids: Vec<TrackerId>,
}

impl Fleet {
    /// Starts every collar on the current runtime.
    pub fn start(configs: Vec<CollarConfig>) -> Fleet {
        let (stop, rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut stats = Vec::new();
        let mut tracker_ids = Vec::new();
        for cfg in configs {
            let s = Arc::new(CollarStats::default());
            tracker_ids.push(cfg.credential.tracker_id.clone());
            tasks.push(tokio::spawn(Collar::new(cfg, s.clone()).run(rx.clone())));
            stats.push(s);
        }
        Fleet {
            stop,
            tasks,
            stats,
            tracker_ids,
        }
    }

    /// Fixes recorded and fixes sent (re-sends included) over the whole fleet.
    pub fn totals(&self) -> (u64, u64) {
        self.stats.iter().fold((0, 0), |(r, a), s| {
            (
                r + s.fixes_recorded.load(Ordering::Relaxed),
                a + s.fixes_sent.load(Ordering::Relaxed),
            )
        })
    }

    /// Asks every collar to say `offline` and disconnect, and waits until they have.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
