//! The operators' view of the fleet: every tracker with its owner and connection state, for `pettracker tracker list` and the admin API.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::storage::{StorageError, pool_error_reason};

/// A tracker as listed for operators.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrackerInfo {
    pub tracker_id: String,
    pub pet_name: Option<String>,
    pub owner_id: Option<i64>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
    pub online: Option<bool>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// What [`tracker_info`] reads, from `trackers t` and its status `s`.
const SELECT: &str = "SELECT t.tracker_id, t.pet_name, t.owner_id, t.revoked, t.created_at,
                             s.online, s.last_seen
                      FROM trackers t LEFT JOIN tracker_status s USING (tracker_id)";

/// Every tracker with its connection state, oldest first.
pub async fn list(pool: &Pool) -> Result<Vec<TrackerInfo>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            &format!("{SELECT} ORDER BY t.created_at, t.tracker_id"),
            &[],
        )
        .await
        .map_err(StorageError::query("listing trackers"))?;
    Ok(rows.iter().map(tracker_info).collect())
}

/// At most `limit` trackers with ids after `after`, in id order: a page of a fleet too large to
/// list at once, stable while trackers are added.
pub async fn list_page(
    pool: &Pool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<TrackerInfo>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            &format!(
                "{SELECT} WHERE $1::text IS NULL OR t.tracker_id > $1 ORDER BY t.tracker_id LIMIT $2"
            ),
            &[&after, &limit],
        )
        .await
        .map_err(StorageError::query("listing trackers"))?;
    Ok(rows.iter().map(tracker_info).collect())
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}

fn tracker_info(r: &tokio_postgres::Row) -> TrackerInfo {
    TrackerInfo {
        tracker_id: r.get(0),
        pet_name: r.get(1),
        owner_id: r.get(2),
        revoked: r.get(3),
        created_at: r.get(4),
        online: r.get(5),
        last_seen: r.get(6),
    }
}
