//! Batch stage: gathers decoded messages until the batch is full or its timer (started by its first item) fires.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::storage::ingest::BatchRows;

use super::decode::Decoded;

/// A batch on its way to the database.
#[derive(Debug, Default)]
pub struct Batch {
    pub rows: BatchRows,
    /// Highest `seq` per tracker, sent to the collars once committed.
    pub acks: HashMap<String, i64>,
    /// Publishers waiting for their QoS 1 acknowledgement.
    pub done: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn add(&mut self, decoded: Decoded) {
        let Decoded {
            rows, ack, done, ..
        } = decoded;
        self.rows.extend(rows);
        if let Some((tracker, seq)) = ack {
            let entry = self.acks.entry(tracker).or_insert(seq);
            *entry = (*entry).max(seq);
        }
        self.done.extend(done);
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.done.is_empty()
    }
}

/// Runs until `input` closes, then flushes what it holds.
pub async fn run(
    mut input: mpsc::Receiver<Decoded>,
    output: mpsc::Sender<Batch>,
    max_rows: usize,
    max_wait: Duration,
) {
    let mut batch = Batch::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = input.recv() => match item {
                Some(decoded) => {
                    batch.add(decoded);
                    deadline.get_or_insert_with(|| Instant::now() + max_wait);
                    if batch.rows.len() >= max_rows {
                        deadline = None;
                        if output.send(std::mem::take(&mut batch)).await.is_err() {
                            return;
                        }
                    }
                }
                None => break,
            },
            () = timer => {
                deadline = None;
                if !batch.is_empty() && output.send(std::mem::take(&mut batch)).await.is_err() {
                    return;
                }
            }
        }
    }
    if !batch.is_empty() {
        let _ = output.send(batch).await;
    }
}
