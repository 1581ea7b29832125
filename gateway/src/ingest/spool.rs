//! The on-disk spool: batches that could not reach the database wait here, one file each, until replayed in order.
//!
//! A file is written to a temporary name, synced, then renamed, so a crash leaves either a whole
//! batch or none. Only after the sync does a QoS 1 publisher get its PUBACK. What a file holds is
//! [`format`]'s job: versioned, so a spool left by an older release is still replayed.
//!
//! [`Spool`] is the blocking core; the pipeline uses it through [`SharedSpool`], which runs every
//! file operation on tokio's blocking threads. The spool is written exactly when the database is
//! down, and an fsync can take long on a busy disk: on the async workers it would stall the
//! broker's connections and every other task while they wait.

pub mod format;

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::storage::ingest::BatchRows;

use super::events;

/// A spooled batch with the acks to send once it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct SpooledBatch {
    pub rows: BatchRows,
    pub acks: Vec<(String, i64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool file {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("the spool's blocking task failed: {0}")]
    Blocking(String),
}

/// The spool directory and its bookkeeping.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next: u64,
    files: u64,
    bytes: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Spool {
    /// Opens (creating) the spool and finds batches left by an earlier run.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, SpoolError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut spool = Spool {
            dir,
            next: 0,
            files: 0,
            bytes: 0,
        };
        for (n, path) in spool.pending()? {
            spool.next = spool.next.max(n + 1);
            spool.files += 1;
            spool.bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
        Ok(spool)
    }

    pub fn is_empty(&self) -> bool {
        self.files == 0
    }

    pub fn files(&self) -> u64 {
        self.files
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Spooled batches, oldest first.
    pub fn pending(&self) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("batch-")
                .and_then(|r| r.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                out.push((n, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Durably appends a batch.
    pub fn append(&mut self, batch: &SpooledBatch) -> Result<(), SpoolError> {
        let body = format::encode(batch).map_err(|e| SpoolError::Corrupt {
            path: self.dir.clone(),
            reason: e.to_string(),
        })?;
        let path = self.dir.join(format!("batch-{:020}.json", self.next));
        let tmp = self.dir.join(format!("batch-{:020}.tmp", self.next));
        let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(&body).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename is durable only once the directory is synced.
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&self.dir))?;
        self.next += 1;
        self.files += 1;
        self.bytes += body.len() as u64;
        Ok(())
    }

    pub fn read(&self, path: &Path) -> Result<SpooledBatch, SpoolError> {
        let body = fs::read(path).map_err(io(path))?;
        format::decode(&body).map_err(|reason| SpoolError::Corrupt {
            path: path.to_owned(),
            reason,
        })
    }

    /// Forgets a batch once it is committed.
    pub fn remove(&mut self, path: &Path) -> Result<(), SpoolError> {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        fs::remove_file(path).map_err(io(path))?;
        self.files = self.files.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
        Ok(())
    }

    /// Moves an unreadable file aside so it neither blocks replay nor disappears.
    pub fn quarantine(&mut self, path: &Path) -> Result<(), SpoolError> {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let target = path.with_extension("corrupt");
        fs::rename(path, &target).map_err(io(path))?;
        self.files = self.files.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(len);
        Ok(())
    }
}

/// Consecutive spooled batches merged for one commit, with the acks they owe.
#[derive(Debug, Default)]
pub struct Group {
    /// The files, oldest first; removed once the group is committed.
    pub paths: Vec<PathBuf>,
    pub rows: BatchRows,
    /// Highest `seq` per tracker over the group.
    pub acks: Vec<(String, i64)>,
}

/// The spool shared by the writers and the replayer.
///
/// Every operation runs on tokio's blocking pool under a plain mutex, which is therefore only
/// ever held on a blocking thread, never across an `.await` and never on an async worker. The
/// number of files is mirrored in an atomic, because the writers ask for it for every batch.
#[derive(Debug, Clone)]
pub struct SharedSpool {
    inner: Arc<Mutex<Spool>>,
    files: Arc<AtomicU64>,
}

impl SharedSpool {
    pub fn new(spool: Spool) -> SharedSpool {
        let files = Arc::new(AtomicU64::new(spool.files()));
        events::spool(spool.files(), spool.bytes());
        SharedSpool {
            inner: Arc::new(Mutex::new(spool)),
            files,
        }
    }

    /// Whether no batch waits; without touching the disk or the lock.
    pub fn is_empty(&self) -> bool {
        self.files() == 0
    }

    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Acquire)
    }

    /// Runs `op` on a blocking thread with the spool locked, then publishes its new size.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Spool) -> T + Send + 'static,
    ) -> Result<T, SpoolError> {
        let inner = self.inner.clone();
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding it leaves the bookkeeping of a finished operation: usable.
            let mut spool = inner.lock().unwrap_or_else(PoisonError::into_inner);
            let out = op(&mut spool);
            files.store(spool.files(), Ordering::Release);
            events::spool(spool.files(), spool.bytes());
            out
        })
        .await
        .map_err(|e| SpoolError::Blocking(e.to_string()))
    }

    /// Durably appends a batch: returns once it is synced and renamed into place.
    pub async fn append(&self, batch: SpooledBatch) -> Result<(), SpoolError> {
        self.run(move |spool| spool.append(&batch)).await?
    }

    /// Spooled batches, oldest first.
    pub async fn pending(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let list = self.run(|spool| spool.pending()).await??;
        Ok(list.into_iter().map(|(_, path)| path).collect())
    }

    /// Reads the oldest of `pending` into one group of at most `max_rows` rows (at least one
    /// batch), taking them off `pending`. Unreadable files are moved aside.
    pub async fn take_group(
        &self,
        pending: VecDeque<PathBuf>,
        max_rows: usize,
    ) -> Result<(VecDeque<PathBuf>, Group), SpoolError> {
        self.run(move |spool| {
            let mut pending = pending;
            let group = spool.take_group(&mut pending, max_rows);
            (pending, group)
        })
        .await
    }

    /// Forgets committed batches. A file that cannot be removed is replayed again later, which
    /// is harmless: writes are idempotent.
    pub async fn remove(&self, paths: Vec<PathBuf>) -> Result<(), SpoolError> {
        self.run(move |spool| {
            for path in &paths {
                if let Err(err) = spool.remove(path) {
                    tracing::error!(%err, "cannot remove a replayed spool file");
                }
            }
        })
        .await
    }
}

impl Spool {
    fn take_group(&mut self, pending: &mut VecDeque<PathBuf>, max_rows: usize) -> Group {
        let mut group = Group::default();
        let mut acks: HashMap<String, i64> = HashMap::new();
        while let Some(path) = pending.front() {
            let batch = match self.read(path) {
                Ok(b) => b,
                Err(err) => {
                    tracing::error!(%err, "moving an unreadable spool file aside");
                    let _ = self.quarantine(path);
                    pending.pop_front();
                    continue;
                }
            };
            if !group.paths.is_empty() && group.rows.len() + batch.rows.len() > max_rows {
                break;
            }
            group.rows.extend(batch.rows);
            for (tracker, seq) in batch.acks {
                let entry = acks.entry(tracker).or_insert(seq);
                *entry = (*entry).max(seq);
            }
            group.paths.extend(pending.pop_front());
        }
        group.acks = acks.into_iter().collect();
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl SpooledBatch {
        fn default_for_test() -> SpooledBatch {
            SpooledBatch {
                rows: BatchRows::default(),
                acks: vec![("rex".into(), 1)],
            }
        }
    }

    #[test]
    fn spooled_batches_come_back_in_order_after_reopening() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut spool = Spool::open(&dir).unwrap();
        for i in 0..3 {
            spool
                .append(&SpooledBatch {
                    rows: BatchRows::default(),
                    acks: vec![("t".into(), i)],
                })
                .unwrap();
        }
        let spool = Spool::open(&dir).unwrap();
        assert_eq!(spool.files(), 3);
        let acks: Vec<i64> = spool
            .pending()
            .unwrap()
            .iter()
            .map(|(_, p)| spool.read(p).unwrap().acks[0].1)
            .collect();
        assert_eq!(acks, vec![0, 1, 2]);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The spool's writes happen exactly when the database is down; a disk that is slow to take
    /// them must not stall the runtime the broker and the rest of the pipeline run on. Here the
    /// batch's temporary file is a FIFO, so creating it blocks until someone opens the other
    /// end, and that someone is a task on the same single-threaded runtime: if the append ran
    /// on it, nobody would ever open the other end (a watchdog thread then does, and says so).
    #[test]
    fn a_spool_write_that_blocks_on_the_disk_leaves_the_async_runtime_free() {
        let dir = std::env::temp_dir().join(format!("spool-fifo-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let spool = SharedSpool::new(Spool::open(&dir).unwrap());
        let fifo = dir.join(format!("batch-{:020}.tmp", 0));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());

        let rescued = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = {
            let (fifo, rescued) = (fifo.clone(), rescued.clone());
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            std::thread::spawn(move || {
                if done_rx
                    .recv_timeout(std::time::Duration::from_secs(30))
                    .is_err()
                {
                    rescued.store(true, Ordering::SeqCst);
                    let _ = fs::read(&fifo);
                }
            });
            done_tx
        };

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let append = tokio::spawn({
                let spool = spool.clone();
                async move { spool.append(SpooledBatch::default_for_test()).await }
            });
            // Lets the append start: inline, it would now hold this thread in open(2).
            tokio::task::yield_now().await;
            // A free runtime gets here while the append waits: open the FIFO's other end (off
            // the runtime too). A held one gets here only after the watchdog did.
            assert!(
                !rescued.load(Ordering::SeqCst),
                "the spool write held the async runtime until the watchdog opened the FIFO"
            );
            let reader = tokio::task::spawn_blocking(move || fs::read(&fifo));
            let result = append.await.unwrap();
            // fsync of a FIFO fails, which is fine: what matters is that the write was reached.
            assert!(result.is_err(), "a FIFO cannot be synced: {result:?}");
            reader.await.unwrap().unwrap();
        });
        let _ = watchdog.send(());
        fs::remove_dir_all(&dir).unwrap();
    }
}
