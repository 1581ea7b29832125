//! Users, refresh tokens and API keys in PostgreSQL. Only hashes of secrets are stored.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use gateway::storage::{StorageError, pool_error_reason};
use serde::Serialize;

use super::tokens::{hash_token, new_api_key, new_refresh_token, random_hex};
use super::{AccountError, Email, Password, Scope, hash_password};

/// An account as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub is_admin: bool,
}

/// An account with its password hash, for logging in.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Who an API key belongs to and what it may do.
#[derive(Debug, Clone, Copy)]
pub struct ApiKeyOwner {
    pub key_id: i64,
    pub user_id: i64,
    pub is_admin: bool,
    pub scope: Scope,
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Object, StorageError> {
    pool.get()
        .await
        .map_err(|e| StorageError::Pool(pool_error_reason(&e)))
}

fn user_from(row: &tokio_postgres::Row) -> User {
    User {
        id: row.get("id"),
        email: row.get("email"),
        is_admin: row.get("is_admin"),
    }
}

/// Creates an account; [`AccountError::EmailTaken`] when the email exists in any letter case.
pub async fn create_user(
    pool: &Pool,
    email: &Email,
    password: &Password,
    is_admin: bool,
) -> Result<User, AccountError> {
    let hash = hash_password(password).await?;
    let client = client(pool).await?;
    let row = client
        .query_opt(
            "INSERT INTO users (email, password_hash, is_admin) VALUES ($1, $2, $3)
             ON CONFLICT ((lower(email))) DO NOTHING
             RETURNING id, email, is_admin",
            &[&email.as_str(), &hash, &is_admin],
        )
        .await
        .map_err(StorageError::query("creating a user"))?;
    row.map(|r| user_from(&r)).ok_or(AccountError::EmailTaken)
}

/// The account with this email (any letter case) and its password hash.
pub async fn find_credentials(
    pool: &Pool,
    email: &Email,
) -> Result<Option<Credentials>, StorageError> {
    let client = client(pool).await?;
    let row = client
        .query_opt(
            "SELECT id, email, is_admin, password_hash FROM users WHERE lower(email) = $1",
            &[&email.normalized()],
        )
        .await
        .map_err(StorageError::query("looking up a user"))?;
    Ok(row.map(|r| Credentials {
        user: user_from(&r),
        password_hash: r.get("password_hash"),
    }))
}

pub async fn get_user(pool: &Pool, id: i64) -> Result<Option<User>, StorageError> {
    let client = client(pool).await?;
    let row = client
        .query_opt(
            "SELECT id, email, is_admin FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(StorageError::query("reading a user"))?;
    Ok(row.map(|r| user_from(&r)))
}

fn expiry(ttl: std::time::Duration) -> DateTime<Utc> {
    Utc::now() + chrono::TimeDelta::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2))
}

/// Starts a new refresh token family (a login) and returns its first token, in plain text once.
pub async fn issue_refresh_token(
    pool: &Pool,
    user_id: i64,
    ttl: std::time::Duration,
) -> Result<String, StorageError> {
    let token = new_refresh_token();
    let client = client(pool).await?;
    client
        .execute(
            "INSERT INTO refresh_tokens (user_id, token_hash, family, expires_at)
             VALUES ($1, $2, $3, $4)",
            &[&user_id, &hash_token(&token), &random_hex(16), &expiry(ttl)],
        )
        .await
        .map_err(StorageError::query("storing a refresh token"))?;
    Ok(token)
}

/// Exchanges a refresh token for a new one in the same family; the old one stops working.
///
/// A token that was already exchanged is proof that someone else holds a copy (the legitimate
/// client always uses the newest), so presenting one revokes the whole family: both the thief
/// and the victim must log in again, and the thief cannot.
pub async fn rotate_refresh_token(
    pool: &Pool,
    token: &str,
    ttl: std::time::Duration,
) -> Result<(User, String), AccountError> {
    let failed = StorageError::query("rotating a refresh token");
    let mut client = client(pool).await?;
    let tx = client.transaction().await.map_err(&failed)?;
    // FOR UPDATE: two concurrent uses of one token are serialised; the second sees it rotated.
    let row = tx
        .query_opt(
            "SELECT r.id, r.family, r.revoked_at IS NOT NULL AS revoked,
                    r.replaced_by IS NOT NULL AS rotated, r.expires_at <= now() AS expired,
                    u.id AS user_id, u.email, u.is_admin
             FROM refresh_tokens r JOIN users u ON u.id = r.user_id
             WHERE r.token_hash = $1
             FOR UPDATE OF r",
            &[&hash_token(token)],
        )
        .await
        .map_err(&failed)?;
    let Some(row) = row else {
        return Err(AccountError::BadRefreshToken);
    };
    let family: String = row.get("family");
    if row.get::<_, bool>("rotated") {
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE family = $1",
            &[&family],
        )
        .await
        .map_err(&failed)?;
        tx.commit().await.map_err(&failed)?;
        tracing::warn!(
            user_id = row.get::<_, i64>("user_id"),
            "a rotated refresh token was reused: its whole family is revoked"
        );
        return Err(AccountError::BadRefreshToken);
    }
    if row.get::<_, bool>("revoked") || row.get::<_, bool>("expired") {
        return Err(AccountError::BadRefreshToken);
    }
    let user = User {
        id: row.get("user_id"),
        email: row.get("email"),
        is_admin: row.get("is_admin"),
    };
    let old_id: i64 = row.get("id");
    let fresh = new_refresh_token();
    let new_id: i64 = tx
        .query_one(
            "INSERT INTO refresh_tokens (user_id, token_hash, family, expires_at)
             VALUES ($1, $2, $3, $4) RETURNING id",
            &[&user.id, &hash_token(&fresh), &family, &expiry(ttl)],
        )
        .await
        .map_err(&failed)?
        .get(0);
    tx.execute(
        "UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE id = $1",
        &[&old_id, &new_id],
    )
    .await
    .map_err(&failed)?;
    tx.commit().await.map_err(&failed)?;
    Ok((user, fresh))
}

/// Revokes one refresh token (logout). Unknown or already revoked tokens are not an error: the
/// outcome the client wants, a token that no longer works, holds either way.
pub async fn revoke_refresh_token(pool: &Pool, token: &str) -> Result<(), StorageError> {
    let client = client(pool).await?;
    client
        .execute(
            "UPDATE refresh_tokens SET revoked_at = now()
             WHERE token_hash = $1 AND revoked_at IS NULL",
            &[&hash_token(token)],
        )
        .await
        .map_err(StorageError::query("revoking a refresh token"))?;
    Ok(())
}

/// Creates an API key; the key itself is returned this once and stored only hashed.
pub async fn create_api_key(
    pool: &Pool,
    user_id: i64,
    name: &str,
    scope: Scope,
) -> Result<(ApiKeyInfo, String), StorageError> {
    let key = new_api_key();
    let client = client(pool).await?;
    let row = client
        .query_one(
            "INSERT INTO api_keys (user_id, name, key_hash, scope) VALUES ($1, $2, $3, $4)
             RETURNING id, created_at",
            &[&user_id, &name, &hash_token(&key), &scope.as_str()],
        )
        .await
        .map_err(StorageError::query("creating an API key"))?;
    let info = ApiKeyInfo {
        id: row.get(0),
        name: name.to_owned(),
        scope,
        created_at: row.get(1),
        last_used_at: None,
    };
    Ok((info, key))
}

/// A user's keys that are not revoked, oldest first.
pub async fn list_api_keys(pool: &Pool, user_id: i64) -> Result<Vec<ApiKeyInfo>, StorageError> {
    let client = client(pool).await?;
    let rows = client
        .query(
            "SELECT id, name, scope, created_at, last_used_at FROM api_keys
             WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id",
            &[&user_id],
        )
        .await
        .map_err(StorageError::query("listing API keys"))?;
    Ok(rows
        .iter()
        .map(|r| ApiKeyInfo {
            id: r.get(0),
            name: r.get(1),
            // The CHECK constraint allows only the two names.
            scope: Scope::parse(r.get(2)).unwrap_or(Scope::Read),
            created_at: r.get(3),
            last_used_at: r.get(4),
        })
        .collect())
}

/// Revokes one of the user's keys. Another user's key, or one already revoked, is
/// [`AccountError::NotFound`]: whether someone else's key exists is not the caller's business.
pub async fn revoke_api_key(pool: &Pool, user_id: i64, key_id: i64) -> Result<(), AccountError> {
    let client = client(pool).await?;
    let n = client
        .execute(
            "UPDATE api_keys SET revoked_at = now()
             WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
            &[&key_id, &user_id],
        )
        .await
        .map_err(StorageError::query("revoking an API key"))?;
    if n == 0 {
        return Err(AccountError::NotFound);
    }
    Ok(())
}

/// The owner of a live API key, noting its use (at most once a minute, to spare writes).
pub async fn authenticate_api_key(
    pool: &Pool,
    key: &str,
) -> Result<Option<ApiKeyOwner>, StorageError> {
    let client = client(pool).await?;
    let row = client
        .query_opt(
            "SELECT k.id, k.user_id, k.scope, u.is_admin,
                    k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' AS stale
             FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
            &[&hash_token(key)],
        )
        .await
        .map_err(StorageError::query("checking an API key"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let owner = ApiKeyOwner {
        key_id: row.get(0),
        user_id: row.get(1),
        scope: Scope::parse(row.get(2)).unwrap_or(Scope::Read),
        is_admin: row.get(3),
    };
    if row.get::<_, bool>(4) {
        client
            .execute(
                "UPDATE api_keys SET last_used_at = now() WHERE id = $1",
                &[&owner.key_id],
            )
            .await
            .map_err(StorageError::query("noting an API key's use"))?;
    }
    Ok(Some(owner))
}
