//! The database side of safe zones and alerts: geofence CRUD, stored alerts, and the alert engine's per-tracker state.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::storage::ingest::FixRow;
use gateway::storage::{StorageError, pool_error_reason};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::Row;

use super::zone::Shape;

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}

/// A geofence as its user sees it.
#[derive(Debug, Clone, Serialize)]
pub struct GeofenceView {
    pub id: i64,
    pub name: String,
    pub shape: Value,
    pub trackers: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const FENCE_COLUMNS: &str = "g.id, g.name, g.shape, g.created_at, g.updated_at,
    coalesce((SELECT array_agg(gt.tracker_id ORDER BY gt.tracker_id) FROM geofence_trackers gt
              WHERE gt.geofence_id = g.id), '{}') AS trackers";

fn fence_view(r: &Row) -> GeofenceView {
    GeofenceView {
        id: r.get("id"),
        name: r.get("name"),
        shape: r.get("shape"),
        trackers: r.get("trackers"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Creates a geofence; the caller must have checked that the user owns every tracker.
pub async fn create_geofence(
    pool: &Pool,
    user: i64,
    name: &str,
    shape: &Shape,
    trackers: &[String],
) -> Result<GeofenceView, StorageError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("creating a geofence"))?;
    let id: i64 = tx
        .query_one(
            "INSERT INTO geofences (user_id, name, shape) VALUES ($1, $2, $3) RETURNING id",
            &[&user, &name, &shape.to_json()],
        )
        .await
        .map_err(StorageError::query("creating a geofence"))?
        .get(0);
    tx.execute(
        "INSERT INTO geofence_trackers (geofence_id, tracker_id) SELECT $1, unnest($2::text[])",
        &[&id, &trackers],
    )
    .await
    .map_err(StorageError::query("creating a geofence"))?;
    let sql = format!("SELECT {FENCE_COLUMNS} FROM geofences g WHERE g.id = $1");
    let row = tx
        .query_one(&sql, &[&id])
        .await
        .map_err(StorageError::query("creating a geofence"))?;
    tx.commit()
        .await
        .map_err(StorageError::query("creating a geofence"))?;
    Ok(fence_view(&row))
}

pub async fn list_geofences(pool: &Pool, user: i64) -> Result<Vec<GeofenceView>, StorageError> {
    let sql = format!("SELECT {FENCE_COLUMNS} FROM geofences g WHERE g.user_id = $1 ORDER BY g.id");
    let rows = client(pool)
        .await?
        .query(&sql, &[&user])
        .await
        .map_err(StorageError::query("listing geofences"))?;
    Ok(rows.iter().map(fence_view).collect())
}

pub async fn get_geofence(
    pool: &Pool,
    user: i64,
    id: i64,
) -> Result<Option<GeofenceView>, StorageError> {
    let sql = format!("SELECT {FENCE_COLUMNS} FROM geofences g WHERE g.id = $1 AND g.user_id = $2");
    let row = client(pool)
        .await?
        .query_opt(&sql, &[&id, &user])
        .await
        .map_err(StorageError::query("reading a geofence"))?;
    Ok(row.as_ref().map(fence_view))
}

/// Changes what is given; false when the user has no such geofence.
pub async fn update_geofence(
    pool: &Pool,
    user: i64,
    id: i64,
    name: Option<&str>,
    shape: Option<&Shape>,
    trackers: Option<&[String]>,
) -> Result<bool, StorageError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("changing a geofence"))?;
    let n = tx
        .execute(
            "UPDATE geofences SET name = coalesce($3, name), shape = coalesce($4, shape),
                    updated_at = now()
             WHERE id = $1 AND user_id = $2",
            &[&id, &user, &name, &shape.map(Shape::to_json)],
        )
        .await
        .map_err(StorageError::query("changing a geofence"))?;
    if n == 1
        && let Some(trackers) = trackers
    {
        tx.execute(
            "DELETE FROM geofence_trackers WHERE geofence_id = $1",
            &[&id],
        )
        .await
        .map_err(StorageError::query("changing a geofence"))?;
        tx.execute(
            "INSERT INTO geofence_trackers (geofence_id, tracker_id) SELECT $1, unnest($2::text[])",
            &[&id, &trackers],
        )
        .await
        .map_err(StorageError::query("changing a geofence"))?;
    }
    tx.commit()
        .await
        .map_err(StorageError::query("changing a geofence"))?;
    Ok(n == 1)
}

pub async fn delete_geofence(pool: &Pool, user: i64, id: i64) -> Result<bool, StorageError> {
    let n = client(pool)
        .await?
        .execute(
            "DELETE FROM geofences WHERE id = $1 AND user_id = $2",
            &[&id, &user],
        )
        .await
        .map_err(StorageError::query("deleting a geofence"))?;
    Ok(n == 1)
}

/// The zones assigned to a tracker, by whoever owns them now (a fence of a previous owner or of
/// a user who lost access no longer applies).
pub async fn fences_for(
    pool: &Pool,
    tracker: &str,
) -> Result<Vec<(i64, String, Shape)>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT g.id, g.name, g.shape FROM geofences g
             JOIN geofence_trackers gt ON gt.geofence_id = g.id
             JOIN trackers t ON t.tracker_id = gt.tracker_id
             WHERE gt.tracker_id = $1 AND t.owner_id = g.user_id",
            &[&tracker],
        )
        .await
        .map_err(StorageError::query("reading geofences"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let shape: Value = r.get(2);
            // Stored shapes were checked when written; one that no longer parses is skipped.
            Shape::parse(&shape).ok().map(|s| (r.get(0), r.get(1), s))
        })
        .collect())
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub id: i64,
    pub tracker_id: String,
    pub kind: String,
    pub geofence_id: Option<i64>,
    pub at: DateTime<Utc>,
    pub details: Value,
    pub created_at: DateTime<Utc>,
    pub acked_at: Option<DateTime<Utc>>,
    pub acked_by: Option<i64>,
}

const ALERT_COLUMNS: &str = "a.id, a.tracker_id, a.kind, a.geofence_id, a.at, a.details, a.created_at, a.acked_at, a.acked_by";

fn alert_view(r: &Row) -> AlertView {
    AlertView {
        id: r.get(0),
        tracker_id: r.get(1),
        kind: r.get(2),
        geofence_id: r.get(3),
        at: r.get(4),
        details: r.get(5),
        created_at: r.get(6),
        acked_at: r.get(7),
        acked_by: r.get(8),
    }
}

/// The NOTIFY channel every stored alert is announced on (its [`AlertView`] as JSON): each
/// instance serving owners passes it to its live feeds, whichever instance raised it.
pub const ALERT_CHANNEL: &str = "pettracker_alert";

/// Stores an alert and announces it ([`ALERT_CHANNEL`]) in one transaction: the announcement
/// leaves only if the alert is stored.
pub async fn insert_alert(
    pool: &Pool,
    tracker: &str,
    kind: &str,
    geofence_id: Option<i64>,
    at: DateTime<Utc>,
    details: &Value,
) -> Result<AlertView, StorageError> {
    let sql = format!(
        "INSERT INTO alerts AS a (tracker_id, kind, geofence_id, at, details)
         VALUES ($1, $2, $3, $4, $5) RETURNING {ALERT_COLUMNS}"
    );
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("storing an alert"))?;
    let row = tx
        .query_one(&sql, &[&tracker, &kind, &geofence_id, &at, details])
        .await
        .map_err(StorageError::query("storing an alert"))?;
    let view = alert_view(&row);
    // NOTIFY payloads are limited to 8,000 bytes; details are a few fields.
    let payload = serde_json::to_string(&view).unwrap_or_default();
    tx.execute("SELECT pg_notify($1, $2)", &[&ALERT_CHANNEL, &payload])
        .await
        .map_err(StorageError::query("announcing an alert"))?;
    tx.commit()
        .await
        .map_err(StorageError::query("storing an alert"))?;
    Ok(view)
}

/// Alerts of the trackers the user may see (owner or member), raised since the current claim,
/// with id > `since`, oldest first.
pub async fn list_alerts(
    pool: &Pool,
    user: i64,
    tracker: Option<&str>,
    since: i64,
    limit: i64,
) -> Result<Vec<AlertView>, StorageError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts a JOIN trackers t USING (tracker_id)
         WHERE a.id > $2 AND ($3::text IS NULL OR a.tracker_id = $3)
           AND a.created_at >= t.claimed_at
           AND (t.owner_id = $1 OR EXISTS (SELECT 1 FROM tracker_members m
                WHERE m.tracker_id = t.tracker_id AND m.user_id = $1))
         ORDER BY a.id LIMIT $4"
    );
    let rows = client(pool)
        .await?
        .query(&sql, &[&user, &since, &tracker, &limit])
        .await
        .map_err(StorageError::query("listing alerts"))?;
    Ok(rows.iter().map(alert_view).collect())
}

/// An alert with the user's role for its tracker; `None` when the user may not see it.
pub async fn alert_for(
    pool: &Pool,
    user: i64,
    id: i64,
) -> Result<Option<(AlertView, bool)>, StorageError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS}, (t.owner_id = $1) AS owned FROM alerts a JOIN trackers t USING (tracker_id)
         WHERE a.id = $2 AND a.created_at >= t.claimed_at
           AND (t.owner_id = $1 OR EXISTS (SELECT 1 FROM tracker_members m
                WHERE m.tracker_id = t.tracker_id AND m.user_id = $1))"
    );
    let row = client(pool)
        .await?
        .query_opt(&sql, &[&user, &id])
        .await
        .map_err(StorageError::query("reading an alert"))?;
    Ok(row.map(|r| {
        (
            alert_view(&r),
            r.get::<_, Option<bool>>("owned").unwrap_or(false),
        )
    }))
}

/// Marks an alert acknowledged (the first acknowledgement stays); returns it.
pub async fn ack_alert(pool: &Pool, user: i64, id: i64) -> Result<Option<AlertView>, StorageError> {
    let sql = format!(
        "UPDATE alerts a SET acked_at = coalesce(acked_at, now()), acked_by = coalesce(acked_by, $2)
         WHERE id = $1 RETURNING {ALERT_COLUMNS}"
    );
    let row = client(pool)
        .await?
        .query_opt(&sql, &[&id, &user])
        .await
        .map_err(StorageError::query("acknowledging an alert"))?;
    Ok(row.as_ref().map(alert_view))
}

/// What the engine keeps per tracker between restarts.
#[derive(Debug, Clone, Default)]
pub struct StoredState {
    pub last_fix_time: Option<DateTime<Utc>>,
    pub battery_low: bool,
    pub offline_alerted: bool,
    pub zones: Value,
}

pub async fn load_state(pool: &Pool, tracker: &str) -> Result<StoredState, StorageError> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT last_fix_time, battery_low, offline_alerted, zones FROM alert_state
             WHERE tracker_id = $1",
            &[&tracker],
        )
        .await
        .map_err(StorageError::query("reading alert state"))?;
    Ok(row.map_or_else(StoredState::default, |r| StoredState {
        last_fix_time: r.get(0),
        battery_low: r.get(1),
        offline_alerted: r.get(2),
        zones: r.get(3),
    }))
}

/// Saves the engine's state of these trackers in one statement (and one commit): one tracker
/// when a decision changed, or the watermarks of many once a second. Sorted by tracker by the
/// caller, so two of these take the rows in the same order. A tracker deleted meanwhile is
/// skipped rather than failing the whole save.
pub async fn save_states(pool: &Pool, states: &[(&str, StoredState)]) -> Result<(), StorageError> {
    if states.is_empty() {
        return Ok(());
    }
    let tracker: Vec<&str> = states.iter().map(|(t, _)| *t).collect();
    let last_fix: Vec<Option<DateTime<Utc>>> =
        states.iter().map(|(_, s)| s.last_fix_time).collect();
    let low: Vec<bool> = states.iter().map(|(_, s)| s.battery_low).collect();
    let offline: Vec<bool> = states.iter().map(|(_, s)| s.offline_alerted).collect();
    let zones: Vec<&Value> = states.iter().map(|(_, s)| &s.zones).collect();
    client(pool)
        .await?
        .execute(
            "INSERT INTO alert_state (tracker_id, last_fix_time, battery_low, offline_alerted, zones)
             SELECT u.* FROM unnest($1::text[], $2::timestamptz[], $3::bool[], $4::bool[], $5::jsonb[])
                 AS u(tracker_id, last_fix_time, battery_low, offline_alerted, zones)
             WHERE EXISTS (SELECT 1 FROM trackers t WHERE t.tracker_id = u.tracker_id)
             ON CONFLICT (tracker_id) DO UPDATE SET last_fix_time = excluded.last_fix_time,
                 battery_low = excluded.battery_low, offline_alerted = excluded.offline_alerted,
                 zones = excluded.zones",
            &[&tracker, &last_fix, &low, &offline, &zones],
        )
        .await
        .map_err(StorageError::query("saving alert state"))?;
    Ok(())
}

/// Claimed trackers silent for longer than `after_secs` that have not had their offline alert.
pub async fn due_offline(
    pool: &Pool,
    after_secs: f64,
) -> Result<Vec<(String, DateTime<Utc>)>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT s.tracker_id, s.last_seen FROM tracker_status s
             JOIN trackers t USING (tracker_id)
             LEFT JOIN alert_state a USING (tracker_id)
             WHERE t.owner_id IS NOT NULL AND NOT t.revoked
               AND s.last_seen < now() - make_interval(secs => $1)
               AND NOT coalesce(a.offline_alerted, false)",
            &[&after_secs],
        )
        .await
        .map_err(StorageError::query("finding offline trackers"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Trackers heard from in the last `secs` seconds: those whose news the alert engine may not
/// have judged when it starts to lead, or after its notices were interrupted.
pub async fn heard_since(pool: &Pool, secs: f64) -> Result<Vec<String>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT tracker_id FROM tracker_status
             WHERE last_seen > now() - make_interval(secs => $1)",
            &[&secs],
        )
        .await
        .map_err(StorageError::query("finding trackers heard from lately"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A tracker's committed fixes with a device time after `after`, oldest first, at most `limit`:
/// what the engine reads back when it fell behind.
pub async fn fixes_after(
    pool: &Pool,
    tracker: &str,
    after: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<FixRow>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT device_time, received_at, lat, lon, accuracy, battery FROM positions
             WHERE tracker_id = $1 AND device_time > $2
             ORDER BY device_time LIMIT $3",
            &[&tracker, &after, &limit],
        )
        .await
        .map_err(StorageError::query("reading fixes back for alerts"))?;
    Ok(rows
        .iter()
        .map(|r| FixRow {
            tracker_id: tracker.to_owned(),
            device_time: r.get(0),
            received_at: r.get(1),
            lat: r.get(2),
            lon: r.get(3),
            altitude: None,
            accuracy: r.get(4),
            speed: None,
            heading: None,
            satellites: None,
            battery: r.get(5),
            seq: None,
        })
        .collect())
}

/// What `tracker_status` says of a tracker now, as the alert rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusNow {
    pub online: bool,
    pub last_seen: DateTime<Utc>,
    pub battery: Option<i16>,
}

pub async fn status_of(pool: &Pool, tracker: &str) -> Result<Option<StatusNow>, StorageError> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT coalesce(online, false), last_seen, battery FROM tracker_status
             WHERE tracker_id = $1 AND last_seen IS NOT NULL",
            &[&tracker],
        )
        .await
        .map_err(StorageError::query("reading a tracker's status for alerts"))?;
    Ok(row.map(|r| StatusNow {
        online: r.get(0),
        last_seen: r.get(1),
        battery: r.get(2),
    }))
}
