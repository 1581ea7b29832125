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
    /// Times it was run through decoding again.
    pub retries: i32,
    /// When a retry stored it.
    pub resolved_at: Option<DateTime<Utc>>,
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

/// Dead letters `d` the reader `$1` may read: an owner's (user id) from their claim on, or all
/// when `$1` is NULL (an admin).
const READABLE: &str = "($1::bigint IS NULL OR EXISTS (
    SELECT 1 FROM trackers t
    WHERE t.tracker_id = d.tracker_id AND t.owner_id = $1 AND d.received_at >= t.claimed_at))";

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
            &format!(
                "SELECT d.id, d.received_at, d.tracker_id, d.topic, d.reason, d.payload, d.retries,
                    d.resolved_at
             FROM dead_letters d
             WHERE {READABLE}
               AND ($2::text IS NULL OR d.tracker_id = $2)
               AND ($3::timestamptz IS NULL OR d.received_at >= $3)
               AND ($4::bigint IS NULL OR d.id > $4)
             ORDER BY d.id LIMIT $5"
            ),
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
                retries: r.get(6),
                resolved_at: r.get(7),
            }
        })
        .collect())
}

/// What re-running one dead letter did.
#[derive(Debug, Clone, Serialize)]
pub struct RetryOutcome {
    pub id: i64,
    /// It passed decoding and validation this time and is stored.
    pub stored: bool,
    /// Why it is still refused, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Runs unresolved dead letters matching `q` (at most `q.limit`, oldest first) through decoding
/// and validation again, with today's rules and `clock`'s time: what passes is written like any
/// ingested message and the dead letter marked resolved; what fails again gets the new reason.
pub async fn retry(
    pool: &Pool,
    reader: Reader,
    q: &DeadLetterQuery,
    only: Option<i64>,
    limits: &gateway::protocol::ValidationLimits,
    clock: &gateway::ingest::Clock,
) -> Result<Vec<RetryOutcome>, StorageError> {
    use gateway::ingest::{Envelope, Inbound, decode};

    let mut client = pool
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
            &format!(
                "SELECT d.id, d.tracker_id, d.topic, d.payload, d.received_at
             FROM dead_letters d
             WHERE d.resolved_at IS NULL
               AND {READABLE}
               AND ($2::text IS NULL OR d.tracker_id = $2)
               AND ($3::timestamptz IS NULL OR d.received_at >= $3)
               AND ($4::bigint IS NULL OR d.id = $4)
             ORDER BY d.id LIMIT $5"
            ),
            &[&owner, &tracker, &q.since, &only, &q.limit],
        )
        .await
        .map_err(StorageError::query("reading dead letters"))?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in rows {
        let id: i64 = row.get(0);
        let tracker: Option<String> = row.get(1);
        let topic: String = row.get(2);
        let payload: Vec<u8> = row.get(3);
        let received_at: DateTime<Utc> = row.get(4);
        let problems = match tracker.as_deref().map(TrackerId::parse) {
            Some(Ok(tracker)) => {
                let publish = gateway::broker::DevicePublish {
                    tracker,
                    topic,
                    payload: payload.into(),
                    qos: 0,
                    received_at,
                    last_will: false,
                };
                let envelope = Envelope {
                    inbound: Inbound::Publish(publish),
                    done: None,
                };
                let mut decoded = decode::decode(envelope, clock.now(), limits);
                let refused = std::mem::take(&mut decoded.rows.dead_letters);
                if !decoded.rows.is_empty() {
                    gateway::storage::ingest::write_batch(
                        &mut client,
                        &decoded.rows,
                        Some(&crate::commands::reports::Reports),
                    )
                    .await?;
                }
                refused.into_iter().map(|d| d.reason).collect::<Vec<_>>()
            }
            _ => vec!["the topic names no valid tracker".to_owned()],
        };
        let reason = (!problems.is_empty()).then(|| problems.join("; "));
        client
            .execute(
                "UPDATE dead_letters SET retries = retries + 1, last_retry_at = now(),
                        reason = coalesce($2, reason),
                        resolved_at = CASE WHEN $2::text IS NULL THEN now() END
                 WHERE id = $1",
                &[&id, &reason],
            )
            .await
            .map_err(StorageError::query("recording a dead-letter retry"))?;
        outcomes.push(RetryOutcome {
            id,
            stored: reason.is_none(),
            reason,
        });
    }
    Ok(outcomes)
}
