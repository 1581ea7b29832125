//! The on-disk spool: batches that could not reach the database wait here, one file each, until replayed in order.
//!
//! A file is written to a temporary name, synced, then renamed, so a crash leaves either a whole
//! batch or none. Only after the sync does a QoS 1 publisher get its PUBACK. What a file holds is
//! [`format`]'s job: versioned, so a spool left by an older release is still replayed.

pub mod format;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::storage::ingest::BatchRows;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
