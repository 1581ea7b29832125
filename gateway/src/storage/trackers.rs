//! Tracker credentials: provisioning a tracker with its device secret and claim code (stored hashed, shown once), authenticating devices, revoking them.
//!
//! Device secrets are 256 random bits, so a fast SHA-256 digest is as safe to store as a slow
//! password hash (nobody can guess through 2^256 values) and lets thousands of collars reconnect
//! at once without the CPU cost of argon2. Claim codes are short enough for a person to type from
//! the box, so they get argon2 like passwords
//! ([`crate::typed_secret`]).

use deadpool_postgres::Pool;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::{StorageError, pool_error_reason};
use crate::protocol::TrackerId;

/// The one-time output of provisioning.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Provisioned {
    pub tracker_id: String,
    pub secret: String,
    pub claim_code: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("tracker {0} already exists")]
    Exists(String),
    #[error("no tracker {0}")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn random_token(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

/// The stored form of a device secret.
pub fn hash_secret(secret: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(secret)))
}

/// Compares in constant time, so response timing says nothing about how much of a guess was right.
fn secret_matches(stored: &str, secret: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(stored.as_bytes().ct_eq(hash_secret(secret).as_bytes()))
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}

/// Creates a tracker with a fresh secret and claim code, returned once in plain text.
pub async fn provision(
    pool: &Pool,
    tracker: &TrackerId,
    pet_name: Option<&str>,
) -> Result<Provisioned, ProvisionError> {
    let secret = random_token(
        43,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    );
    // No 0/O or 1/I/L: people type this from a printed card.
    let claim_code = random_token(12, b"ABCDEFGHJKMNPQRSTUVWXYZ23456789");
    let claim_hash = tokio::task::spawn_blocking({
        let code = claim_code.clone();
        move || crate::typed_secret::hash(&code)
    })
    .await
    .map_err(|e| StorageError::Pool(e.to_string()))?
    .map_err(|e| StorageError::Pool(e.to_string()))?;
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("provisioning a tracker"))?;
    let inserted = tx
        .execute(
            "INSERT INTO trackers (tracker_id, pet_name, secret_hash, claim_code_hash)
             VALUES ($1, $2, $3, $4) ON CONFLICT (tracker_id) DO NOTHING",
            &[
                &tracker.as_str(),
                &pet_name,
                &hash_secret(secret.as_bytes()),
                &claim_hash,
            ],
        )
        .await
        .map_err(StorageError::query("provisioning a tracker"))?;
    if inserted == 0 {
        return Err(ProvisionError::Exists(tracker.to_string()));
    }
    tx.execute(
        "INSERT INTO tracker_status (tracker_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&tracker.as_str()],
    )
    .await
    .map_err(StorageError::query("provisioning a tracker"))?;
    tx.commit()
        .await
        .map_err(StorageError::query("provisioning a tracker"))?;
    Ok(Provisioned {
        tracker_id: tracker.to_string(),
        secret,
        claim_code,
    })
}

/// Whether `secret` is the current secret of a tracker that is not revoked.
pub async fn authenticate(
    pool: &Pool,
    tracker: &TrackerId,
    secret: &[u8],
) -> Result<bool, StorageError> {
    let client = client(pool).await?;
    let row = client
        .query_opt(
            "SELECT secret_hash FROM trackers WHERE tracker_id = $1 AND NOT revoked",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("authenticating a device"))?;
    Ok(row.is_some_and(|r| secret_matches(r.get(0), secret)))
}

/// Whether `tracker` is provisioned and not revoked (what a broker asks before letting a
/// connected collar publish or subscribe).
pub async fn is_live(pool: &Pool, tracker: &TrackerId) -> Result<bool, StorageError> {
    let row = client(pool)
        .await?
        .query_opt(
            "SELECT 1 FROM trackers WHERE tracker_id = $1 AND NOT revoked",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("checking a tracker"))?;
    Ok(row.is_some())
}

/// Every revoked tracker (revocation is for good).
pub async fn revoked(pool: &Pool) -> Result<Vec<String>, StorageError> {
    let rows = client(pool)
        .await?
        .query("SELECT tracker_id FROM trackers WHERE revoked", &[])
        .await
        .map_err(StorageError::query("listing revoked trackers"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Marks a tracker revoked; its credentials stop working at once, and running servers
/// are told (NOTIFY) to disconnect it.
pub async fn revoke(pool: &Pool, tracker: &TrackerId) -> Result<(), ProvisionError> {
    let mut client = client(pool).await?;
    let tx = client
        .transaction()
        .await
        .map_err(StorageError::query("revoking a tracker"))?;
    let n = tx
        .execute(
            "UPDATE trackers SET revoked = true, revoked_at = coalesce(revoked_at, now()) WHERE tracker_id = $1",
            &[&tracker.as_str()],
        )
        .await
        .map_err(StorageError::query("revoking a tracker"))?;
    if n == 0 {
        return Err(ProvisionError::NotFound(tracker.to_string()));
    }
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&super::notify::TRACKER_REVOKED, &tracker.as_str()],
    )
    .await
    .map_err(StorageError::query("announcing a revocation"))?;
    tx.commit()
        .await
        .map_err(StorageError::query("revoking a tracker"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_only_its_own_hash() {
        let stored = hash_secret(b"right");
        assert!(secret_matches(&stored, b"right"));
        assert!(!secret_matches(&stored, b"wrong"));
        assert!(!secret_matches("", b"right"));
    }
}
