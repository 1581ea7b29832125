//! Access: which trackers a user may see, in which role, and each tracker as they see it.
//!
//! Every query here takes the caller's user id and answers only about trackers that user owns or
//! was invited to; an unknown tracker and another user's tracker look the same (`None`), so the
//! API never reveals that a tracker exists.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::protocol::TrackerId;
use gateway::storage::StorageError;
use serde::Serialize;
use tokio_postgres::Row;

use super::client;
use super::history::FixView;

/// What a user may do with a tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Claimed it: sees everything, changes settings, shares, commands, releases.
    Owner,
    /// Invited by the owner: sees positions, status and alerts; changes nothing.
    Viewer,
}

/// A tracker as its owner and members see it.
#[derive(Debug, Clone, Serialize)]
pub struct TrackerView {
    pub id: String,
    pub pet_name: Option<String>,
    pub role: Role,
    /// Revoked by an operator: the collar can no longer connect.
    pub revoked: bool,
    pub claimed_at: Option<DateTime<Utc>>,
    pub status: StatusView,
}

/// The tracker's current state.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    pub online: bool,
    pub online_since: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub battery: Option<i16>,
    pub charging: Option<bool>,
    pub firmware: Option<String>,
    /// The fix with the newest device time (not the last to arrive).
    pub last_fix: Option<FixView>,
}

const VIEW_COLUMNS: &str = "
    t.tracker_id, t.pet_name, (t.owner_id = $1) AS owned, t.revoked, t.claimed_at,
    coalesce(s.online, false) AS online, s.online_changed_at, s.last_seen, s.battery, s.charging,
    s.firmware,
    -- A fix from before the claim belongs to the previous owner.
    CASE WHEN s.last_fix_time >= t.claimed_at THEN s.last_fix_time END AS last_fix_time,
    s.last_lat, s.last_lon, s.last_accuracy, s.last_speed, s.last_heading, s.last_seq";

/// Trackers the user owns or was invited to, and the user's role for each.
const VISIBLE: &str = "(t.owner_id = $1 OR EXISTS (SELECT 1 FROM tracker_members m
                        WHERE m.tracker_id = t.tracker_id AND m.user_id = $1))";

fn view(row: &Row) -> TrackerView {
    let last_fix_time: Option<DateTime<Utc>> = row.get("last_fix_time");
    let last_fix = last_fix_time.and_then(|ts| {
        Some(FixView {
            ts,
            lat: row.get::<_, Option<f64>>("last_lat")?,
            lon: row.get::<_, Option<f64>>("last_lon")?,
            alt: None,
            acc: row.get("last_accuracy"),
            spd: row.get("last_speed"),
            hdg: row.get("last_heading"),
            sat: None,
            bat: None,
            seq: row.get("last_seq"),
            received_at: None,
        })
    });
    TrackerView {
        id: row.get("tracker_id"),
        pet_name: row.get("pet_name"),
        role: if row.get::<_, Option<bool>>("owned").unwrap_or(false) {
            Role::Owner
        } else {
            Role::Viewer
        },
        revoked: row.get("revoked"),
        claimed_at: row.get("claimed_at"),
        status: StatusView {
            online: row.get("online"),
            online_since: row.get("online_changed_at"),
            last_seen: row.get("last_seen"),
            battery: row.get("battery"),
            charging: row.get("charging"),
            firmware: row.get("firmware"),
            last_fix,
        },
    }
}

/// The user's trackers with their status, ordered by id.
pub async fn list(pool: &Pool, user: i64) -> Result<Vec<TrackerView>, StorageError> {
    // The user's trackers by their two indexes (owner, membership), not by testing VISIBLE on
    // every tracker of the fleet: the OR in it rules out an index.
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM trackers t LEFT JOIN tracker_status s USING (tracker_id)
         WHERE t.tracker_id IN (SELECT tracker_id FROM trackers WHERE owner_id = $1
                                UNION ALL
                                SELECT tracker_id FROM tracker_members WHERE user_id = $1)
         ORDER BY t.tracker_id"
    );
    let client = client(pool).await?;
    // Cached per connection: parsing and planning cost more than this query's execution.
    let stmt = client
        .prepare_cached(&sql)
        .await
        .map_err(StorageError::query("listing trackers"))?;
    let rows = client
        .query(&stmt, &[&user])
        .await
        .map_err(StorageError::query("listing trackers"))?;
    Ok(rows.iter().map(view).collect())
}

/// One tracker, if the user may see it.
pub async fn get(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
) -> Result<Option<TrackerView>, StorageError> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM trackers t LEFT JOIN tracker_status s USING (tracker_id)
         WHERE t.tracker_id = $2 AND {VISIBLE}"
    );
    let row = client(pool)
        .await?
        .query_opt(&sql, &[&user, &tracker.as_str()])
        .await
        .map_err(StorageError::query("reading a tracker"))?;
    Ok(row.as_ref().map(view))
}

/// The user's role for a tracker; `None` when the user may not see it (or it does not exist).
pub async fn role(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
) -> Result<Option<Role>, StorageError> {
    Ok(get(pool, user, tracker).await?.map(|t| t.role))
}
