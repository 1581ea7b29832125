//! Trackers revoked while an external broker may still hold their connections: their messages are not ingested from the moment of revocation, whatever the broker does.
//!
//! The embedded broker disconnects a revoked collar at once. An external broker only refuses its
//! next CONNECT (pettracker's authentication says no) and, through pettracker's authorization,
//! its next publish once the broker's authorization cache lets the question through; until
//! then it keeps delivering. So every ingest instance keeps the set of revoked trackers (read at
//! start, then kept by the database's `pettracker_tracker_revoked` notifications) and drops
//! their messages, acknowledged to the broker and counted
//! (`pettracker_external_revoked_dropped_total`).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use secrecy::SecretString;

use crate::backoff::Backoff;
use crate::shutdown::Shutdown;
use crate::storage::{notify, trackers};

/// The revoked trackers this instance knows of.
#[derive(Debug, Default)]
pub struct Revoked {
    set: RwLock<HashSet<String>>,
}

impl Revoked {
    pub fn contains(&self, tracker: &str) -> bool {
        self.set
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(tracker)
    }

    fn add(&self, trackers: impl IntoIterator<Item = String>) {
        self.set
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .extend(trackers);
    }
}

/// Listens for revocations, then reads the revoked trackers (retrying while the database is
/// away), so that none revoked in between is missed.
pub fn start(pool: Pool, database_url: SecretString, mut shutdown: Shutdown) -> Arc<Revoked> {
    let revoked = Arc::new(Revoked::default());
    let mut news = notify::listen(database_url, notify::TRACKER_REVOKED, shutdown.clone());
    let kept = revoked.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match trackers::revoked(&pool).await {
                Ok(all) => {
                    kept.add(all);
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, "cannot read the revoked trackers yet");
                    tokio::select! {
                        () = backoff.wait() => {}
                        () = shutdown.recv() => return,
                    }
                }
            }
        }
        while let Some(tracker) = news.recv().await {
            kept.add([tracker]);
        }
    });
    revoked
}
