//! Dead letters as owners and operators see them: what a collar sent that could not be used, and why.
//!
//! An owner sees the dead letters of the trackers they own, from their claim on (the previous
//! owner's collar trouble is not theirs to read); an admin sees all, including messages whose
//! topic named no valid tracker.

use base64::Engine;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::protocol::TrackerId;
use gateway::storage::{StorageError, pool_error_reason};
use serde::Serialize;

/// One refused message.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    /// Absent when the topic named no valid tracker.
    pub tracker_id: Option<String>,
    pub topic: String,
    /// Why decoding or validation refused it.
    pub reason: String,
    /// The payload exactly as received.
    pub payload_base64: String,
    /// The payload again, when it is UTF-8 text (JSON payloads are), for reading by eye.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
}

/// Which dead letters to list.
#[derive(Debug, Clone)]
pub struct DeadLetterQuery {
    /// `None`: all trackers the caller may read dead letters of.
    pub tracker: Option<TrackerId>,
    pub since: Option<DateTime<Utc>>,
    /// Keyset: ids greater than this.
    pub after: Option<i64>,
    pub limit: i64,
}

/// Whose dead letters the caller may read.
#[derive(Debug, Clone, Copy)]
pub enum Reader {
    Owner(i64),
    Admin,
}

pub const DEFAULT_PAGE: i64 = 100;
pub const MAX_PAGE: i64 = 1000;

/// Dead letters in id (arrival) order.
pub async fn list(
    pool: &Pool,
    reader: Reader,
    q: &DeadLetterQuery,
) -> Result<Vec<DeadLetterView>, StorageError> {
    let client = pool
        .get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))?;
    let tracker = q.tracker.as_ref().map(TrackerId::as_str);
    let owner = match reader {
        Reader::Owner(user) => Some(user),
        Reader::Admin => None,
    };
    let rows = client
        .query(
            "SELECT d.id, d.received_at, d.tracker_id, d.topic, d.reason, d.payload
             FROM dead_letters d
             WHERE ($1::bigint IS NULL OR EXISTS (
                       SELECT 1 FROM trackers t
                       WHERE t.tracker_id = d.tracker_id AND t.owner_id = $1
                         AND d.received_at >= t.claimed_at))
               AND ($2::text IS NULL OR d.tracker_id = $2)
               AND ($3::timestamptz IS NULL OR d.received_at >= $3)
               AND ($4::bigint IS NULL OR d.id > $4)
             ORDER BY d.id LIMIT $5",
            &[&owner, &tracker, &q.since, &q.after, &q.limit],
        )
        .await
        .map_err(StorageError::query("reading dead letters"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let payload: Vec<u8> = r.get(5);
            DeadLetterView {
                id: r.get(0),
                received_at: r.get(1),
                tracker_id: r.get(2),
                topic: r.get(3),
                reason: r.get(4),
                payload_base64: base64::engine::general_purpose::STANDARD.encode(&payload),
                payload_text: String::from_utf8(payload).ok(),
            }
        })
        .collect())
}
