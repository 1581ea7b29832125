//! Membership: claiming a tracker with its collar's code, renaming the pet, releasing it, and sharing it with viewers.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::protocol::TrackerId;
use gateway::storage::StorageError;
use serde::Serialize;

use super::access::{Role, TrackerView, get};
use super::client;

/// A member of a tracker, as its owner sees them.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub user_id: i64,
    pub email: String,
    pub role: Role,
    pub added_at: DateTime<Utc>,
}

/// Why a claim did not go through. One variant on purpose: wrong code, unknown tracker and a
/// tracker owned by someone else must be indistinguishable to the caller.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("no unclaimed tracker with that id and claim code")]
    NotClaimable,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why a member could not be added.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("no account with that email")]
    NoSuchUser,
    #[error("the owner is not added as a member")]
    IsOwner,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A well-formed argon2 hash of a random string: verifying a guess against it costs what a real
/// verification costs, so an unknown tracker id answers as slowly as a wrong claim code.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| gateway::typed_secret::hash("not-a-claim-code-at-all").unwrap_or_default())
}

/// Makes `user` the owner of an unclaimed tracker whose claim code matches. Claiming a tracker
/// one already owns succeeds again (a retried request must not fail).
pub async fn claim(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
    code: &str,
) -> Result<TrackerView, ClaimError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    let row = tx
        .query_opt(
            "SELECT claim_code_hash, owner_id FROM trackers
             WHERE tracker_id = $1 AND NOT revoked FOR UPDATE",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    let (hash, owner): (String, Option<i64>) = match &row {
        Some(r) => (r.get(0), r.get(1)),
        None => (dummy_hash().to_owned(), None),
    };
    let candidate = code.trim().to_ascii_uppercase();
    let matches =
        tokio::task::spawn_blocking(move || gateway::typed_secret::matches(&hash, &candidate))
            .await
            .unwrap_or(false);
    let claimable = row.is_some() && matches && owner.is_none_or(|o| o == user);
    if !claimable {
        return Err(ClaimError::NotClaimable);
    }
    if owner.is_none() {
        tx.execute(
            "UPDATE trackers SET owner_id = $2, claimed_at = now() WHERE tracker_id = $1",
            &[&tracker.as_str(), &user],
        )
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    }
    tx.commit()
        .await
        .map_err(StorageError::query("claiming a tracker"))?;
    drop(client);
    get(pool, user, tracker)
        .await?
        .ok_or(ClaimError::NotClaimable)
}

/// Renames the pet. Only the owner; returns false when the user does not own the tracker.
pub async fn set_pet_name(
    pool: &Pool,
    user: i64,
    tracker: &TrackerId,
    pet_name: Option<&str>,
) -> Result<bool, StorageError> {
    let n = client(pool)
        .await?
        .execute(
            "UPDATE trackers SET pet_name = $3 WHERE tracker_id = $1 AND owner_id = $2",
            &[&tracker.as_str(), &user, &pet_name],
        )
        .await
        .map_err(StorageError::query("renaming a pet"))?;
    Ok(n == 1)
}

/// Gives the tracker up: no owner, no members, claimable again with its code. Only the owner.
pub async fn release(pool: &Pool, user: i64, tracker: &TrackerId) -> Result<bool, StorageError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    let n = tx
        .execute(
            "UPDATE trackers SET owner_id = NULL, claimed_at = NULL, pet_name = NULL
             WHERE tracker_id = $1 AND owner_id = $2",
            &[&tracker.as_str(), &user],
        )
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    if n == 1 {
        tx.execute(
            "DELETE FROM tracker_members WHERE tracker_id = $1",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    }
    tx.commit()
        .await
        .map_err(StorageError::query("releasing a tracker"))?;
    Ok(n == 1)
}

/// Invites the account with `email` as a viewer. The caller must have checked ownership.
pub async fn add_member(
    pool: &Pool,
    owner: i64,
    tracker: &TrackerId,
    email: &str,
) -> Result<MemberView, MemberError> {
    let client = client(pool).await?;
    let row = client
        .query_opt(
            "SELECT id, email FROM users WHERE lower(email) = lower($1)",
            &[&email.trim()],
        )
        .await
        .map_err(StorageError::query("adding a member"))?
        .ok_or(MemberError::NoSuchUser)?;
    let (user_id, email): (i64, String) = (row.get(0), row.get(1));
    if user_id == owner {
        return Err(MemberError::IsOwner);
    }
    let added_at: DateTime<Utc> = client
        .query_one(
            "INSERT INTO tracker_members (tracker_id, user_id, role, added_by)
             VALUES ($1, $2, 'viewer', $3)
             ON CONFLICT (tracker_id, user_id) DO UPDATE SET role = excluded.role
             RETURNING created_at",
            &[&tracker.as_str(), &user_id, &owner],
        )
        .await
        .map_err(StorageError::query("adding a member"))?
        .get(0);
    Ok(MemberView {
        user_id,
        email,
        role: Role::Viewer,
        added_at,
    })
}

/// The tracker's members. The caller must have checked that the user may see the tracker.
pub async fn members(pool: &Pool, tracker: &TrackerId) -> Result<Vec<MemberView>, StorageError> {
    let rows = client(pool)
        .await?
        .query(
            "SELECT m.user_id, u.email, m.created_at FROM tracker_members m
             JOIN users u ON u.id = m.user_id WHERE m.tracker_id = $1 ORDER BY m.created_at",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("listing members"))?;
    Ok(rows
        .iter()
        .map(|r| MemberView {
            user_id: r.get(0),
            email: r.get(1),
            role: Role::Viewer,
            added_at: r.get(2),
        })
        .collect())
}

/// Removes a member; false when they were not one.
pub async fn remove_member(
    pool: &Pool,
    tracker: &TrackerId,
    member: i64,
) -> Result<bool, StorageError> {
    let n = client(pool)
        .await?
        .execute(
            "DELETE FROM tracker_members WHERE tracker_id = $1 AND user_id = $2",
            &[&tracker.as_str(), &member],
        )
        .await
        .map_err(StorageError::query("removing a member"))?;
    Ok(n == 1)
}
