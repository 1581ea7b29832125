//! Webhook delivery: every alert goes, as a signed JSON POST, to the webhooks of the tracker's owner and members, retried with jittered exponential backoff until it succeeds or the attempts run out.
//!
//! Deliveries are rows (`webhook_deliveries`), so they survive restarts and their status is
//! visible through the API. A worker claims due rows with `FOR UPDATE SKIP LOCKED`, leasing each
//! for twice the attempt timeout, and sends everything it claimed at once: every attempt ends
//! (or times out) while its lease holds, so no other process can claim and send it meanwhile.
//! The lease's end is also its token: an outcome is recorded only while the row still carries
//! it. Targets are checked by [`super::egress`]: public addresses only, after resolution too.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::StreamExt;
use gateway::backoff::Backoff;
use gateway::shutdown::Shutdown;
use gateway::storage::{StorageError, pool_error_reason};
use hmac::{Hmac, Mac};

use serde::Serialize;
use sha2::Sha256;

use super::egress::Egress;

/// How the delivery worker works; from the `[alerts]` settings.
#[derive(Debug, Clone, Copy)]
pub struct DeliverySettings {
    /// First wait before a retry; doubles per attempt, jittered.
    pub retry_base: Duration,
    /// How long one attempt may take. A claimed delivery is leased for twice this.
    pub timeout: Duration,
    /// Deliveries sent at once by this process (and claimed at once: all are sent at once).
    pub concurrency: usize,
    /// Which addresses may be reached.
    pub egress: Egress,
}

impl DeliverySettings {
    /// From the `[alerts]` settings.
    pub fn from_settings(alerts: &crate::config::AlertSettings) -> DeliverySettings {
        DeliverySettings {
            retry_base: alerts.webhook_retry_base(),
            timeout: Duration::from_millis(alerts.webhook_timeout_ms),
            concurrency: alerts.webhook_concurrency,
            egress: Egress::from_settings(alerts),
        }
    }
}

/// Attempts before a delivery is given up as failed.
pub const MAX_ATTEMPTS: i32 = 8;
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-pettracker-signature";

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}

/// The hex HMAC-SHA256 of `body` under `secret`, as sent in [`SIGNATURE_HEADER`].
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The wait before attempt `attempts + 1`: `base` doubled per attempt, capped, then a random
/// 50-100% of it so that many failed deliveries do not retry in step.
pub fn backoff(base: Duration, attempts: i32) -> Duration {
    Backoff::new(base, MAX_BACKOFF).delay(u32::try_from(attempts).unwrap_or(0))
}

/// A webhook as its owner sees it (the secret only at creation).
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub alert_id: i64,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub async fn create(pool: &Pool, user: i64, url: &str) -> Result<WebhookView, StorageError> {
    let secret = crate::auth::tokens::random_hex(32);
    let row = client(pool)
        .await?
        .query_one(
            "INSERT INTO webhooks (user_id, url, secret) VALUES ($1, $2, $3)
             RETURNING id, created_at",
            &[&user, &url, &secret],
        )
        .await
        .map_err(StorageError::query("creating a webhook"))?;
    Ok(WebhookView {
        id: row.get(0),
        url: url.to_owned(),
        secret: Some(secret),
        created_at: row.get(1),
    })
}

pub async fn list(pool: &Pool, user: i64) -> Result<Vec<WebhookView>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT id, url, created_at FROM webhooks WHERE user_id = $1 ORDER BY id",
            &[&user],
        )
        .await
        .map_err(StorageError::query("listing webhooks"))?;
    Ok(rows
        .iter()
        .map(|r| WebhookView {
            id: r.get(0),
            url: r.get(1),
            secret: None,
            created_at: r.get(2),
        })
        .collect())
}

pub async fn delete(pool: &Pool, user: i64, id: i64) -> Result<bool, StorageError> {
    let n = client(pool)
        .await?
        .execute(
            "DELETE FROM webhooks WHERE id = $1 AND user_id = $2",
            &[&id, &user],
        )
        .await
        .map_err(StorageError::query("deleting a webhook"))?;
    Ok(n == 1)
}

/// The newest deliveries of one of the user's webhooks; `None` if the user has no such webhook.
pub async fn deliveries(
    pool: &Pool,
    user: i64,
    id: i64,
) -> Result<Option<Vec<DeliveryView>>, StorageError> {
    let client = client(pool).await?;
    let owned = client
        .query_opt(
            "SELECT 1 FROM webhooks WHERE id = $1 AND user_id = $2",
            &[&id, &user],
        )
        .await
        .map_err(StorageError::query("listing deliveries"))?;
    if owned.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT id, alert_id, status, attempts,
                    CASE WHEN status = 'pending' THEN next_attempt_at END,
                    last_status, last_error, delivered_at, created_at
             FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY id DESC LIMIT 100",
            &[&id],
        )
        .await
        .map_err(StorageError::query("listing deliveries"))?;
    Ok(Some(
        rows.iter()
            .map(|r| DeliveryView {
                id: r.get(0),
                alert_id: r.get(1),
                status: r.get(2),
                attempts: r.get(3),
                next_attempt_at: r.get(4),
                last_status: r.get(5),
                last_error: r.get(6),
                delivered_at: r.get(7),
                created_at: r.get(8),
            })
            .collect(),
    ))
}

/// Queues the alert for the webhooks of everyone who may see its tracker.
pub async fn enqueue(pool: &Pool, alert_id: i64, tracker: &str) -> Result<u64, StorageError> {
    client(pool)
        .await?
        .execute(
            "INSERT INTO webhook_deliveries (webhook_id, alert_id)
             SELECT w.id, $1 FROM webhooks w JOIN trackers t ON t.tracker_id = $2
             WHERE w.user_id = t.owner_id
                OR w.user_id IN (SELECT m.user_id FROM tracker_members m WHERE m.tracker_id = $2)",
            &[&alert_id, &tracker],
        )
        .await
        .map_err(StorageError::query("queueing webhook deliveries"))
}

struct Due {
    id: i64,
    attempts: i32,
    url: String,
    secret: String,
    body: serde_json::Value,
    /// The end of our lease, as stored: the token that proves the row is still ours.
    lease_until: DateTime<Utc>,
}

/// Claims up to `limit` due deliveries, leasing each for `lease`.
async fn claim(pool: &Pool, limit: i64, lease: Duration) -> Result<Vec<Due>, StorageError> {
    let lease = lease.as_secs_f64();
    let rows = client(pool)
        .await?
        .query(
            "WITH due AS (
                 SELECT id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
             UPDATE webhook_deliveries d SET next_attempt_at = now() + make_interval(secs => $1)
             FROM due, webhooks w, alerts a
             WHERE d.id = due.id AND w.id = d.webhook_id AND a.id = d.alert_id
             RETURNING d.id, d.attempts, w.url, w.secret,
                 json_build_object('type', 'alert', 'alert', json_build_object(
                     'id', a.id, 'tracker_id', a.tracker_id, 'kind', a.kind,
                     'geofence_id', a.geofence_id, 'at', a.at, 'details', a.details,
                     'created_at', a.created_at))::jsonb,
                 d.next_attempt_at",
            &[&lease, &limit],
        )
        .await
        .map_err(StorageError::query("claiming webhook deliveries"))?;
    Ok(rows
        .iter()
        .map(|r| Due {
            id: r.get(0),
            attempts: r.get(1),
            url: r.get(2),
            secret: r.get(3),
            body: r.get(4),
            lease_until: r.get(5),
        })
        .collect())
}

/// Records an attempt's outcome, if the lease is still ours; `false` if it was not (the
/// delivery was claimed again after our lease ran out, and that claim's outcome counts).
async fn record(
    pool: &Pool,
    due: &Due,
    outcome: Result<u16, String>,
    retry_base: Duration,
) -> Result<bool, StorageError> {
    let attempts = due.attempts + 1;
    let client = client(pool).await?;
    let updated = match outcome {
        Ok(status) if (200..300).contains(&status) => {
            client
                .execute(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2,
                         last_status = $3, last_error = NULL, delivered_at = now()
                     WHERE id = $1 AND status = 'pending' AND next_attempt_at = $4",
                    &[&due.id, &attempts, &i32::from(status), &due.lease_until],
                )
                .await
        }
        outcome => {
            let (status, error) = match outcome {
                Ok(status) => (Some(i32::from(status)), format!("HTTP status {status}")),
                Err(error) => (None, error),
            };
            let give_up = attempts >= MAX_ATTEMPTS;
            let wait = backoff(retry_base, due.attempts).as_secs_f64();
            client
                .execute(
                    "UPDATE webhook_deliveries SET attempts = $2, last_status = $3, last_error = $4,
                         status = CASE WHEN $5 THEN 'failed' ELSE 'pending' END,
                         next_attempt_at = now() + make_interval(secs => $6)
                     WHERE id = $1 AND status = 'pending' AND next_attempt_at = $7",
                    &[
                        &due.id,
                        &attempts,
                        &status,
                        &error,
                        &give_up,
                        &wait,
                        &due.lease_until,
                    ],
                )
                .await
        }
    }
    .map_err(StorageError::query("recording a webhook delivery"))?;
    Ok(updated == 1)
}

async fn attempt(http: &reqwest::Client, egress: Egress, due: &Due) -> Result<u16, String> {
    let url = reqwest::Url::parse(&due.url).map_err(|e| format!("invalid url: {e}"))?;
    egress.check_literal(&url)?;
    let body = serde_json::to_vec(&due.body).map_err(|e| e.to_string())?;
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header(
            SIGNATURE_HEADER,
            format!("sha256={}", signature(&due.secret, &body)),
        )
        .header("x-pettracker-delivery", due.id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    Ok(response.status().as_u16())
}

/// An error with its causes: reqwest's own message ("error sending request") hides why, such
/// as the resolver's refusal of a private address.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Sends one claimed delivery and records the outcome.
async fn deliver(pool: &Pool, http: &reqwest::Client, settings: &DeliverySettings, due: Due) {
    let outcome = attempt(http, settings.egress, &due).await;
    let delivered = matches!(outcome, Ok(s) if (200..300).contains(&s));
    super::events::webhook_attempt(delivered);
    match record(pool, &due, outcome, settings.retry_base).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            delivery = due.id,
            "a webhook delivery's lease ran out before its outcome was recorded"
        ),
        Err(err) => tracing::warn!(%err, "cannot record a webhook delivery"),
    }
}

/// Runs the delivery worker until shutdown.
pub fn start(pool: Pool, settings: DeliverySettings, mut shutdown: Shutdown) {
    tokio::spawn(async move {
        let http = match reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve names itself, past the resolver's checks.
            .no_proxy()
            .dns_resolver(settings.egress.resolver())
            .build()
        {
            Ok(http) => http,
            Err(err) => {
                tracing::error!(%err, "cannot build the webhook HTTP client; webhooks are not delivered");
                return;
            }
        };
        let concurrency = settings.concurrency.max(1);
        let limit = i64::try_from(concurrency).unwrap_or(i64::MAX);
        let lease = settings.timeout.saturating_mul(2);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.recv() => return,
            }
            let due = match claim(&pool, limit, lease).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(%err, "cannot claim webhook deliveries");
                    continue;
                }
            };
            // All at once: each attempt ends within the timeout, well inside its lease.
            futures::stream::iter(due)
                .for_each_concurrent(concurrency, |d| deliver(&pool, &http, &settings, d))
                .await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_secs(1);
        for attempts in 0..5 {
            let full = Duration::from_secs(1 << attempts);
            let wait = backoff(base, attempts);
            assert!(wait >= full / 2 && wait <= full, "{attempts}: {wait:?}");
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF);
    }
}
