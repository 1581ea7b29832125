//! Session-level PostgreSQL advisory locks: how processes sharing one database agree that only one of them does a thing (a retention pass, a fleet-wide job's leadership).
//!
//! A session lock belongs to the connection that took it and goes when that session ends, so
//! a process that dies or loses its connection never leaves one behind.

use tokio_postgres::Client;

use super::StorageError;

/// Takes the lock `key` for this connection's session; false when another session holds it.
/// `what` names the lock in errors.
pub async fn try_lock(client: &Client, key: i64, what: &'static str) -> Result<bool, StorageError> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(StorageError::query(what))?;
    Ok(row.get(0))
}

/// Releases the lock [`try_lock`] took on this session.
pub async fn unlock(client: &Client, key: i64, what: &'static str) -> Result<(), StorageError> {
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .map_err(StorageError::query(what))?;
    Ok(())
}
