//! Access tokens (short-lived HS256 JWTs) and the random opaque secrets behind refresh tokens and API keys.
//!
//! Access tokens are checked without the database, which is why they live only minutes: they
//! cannot be revoked. Refresh tokens and API keys are 256 random bits, stored as SHA-256 digests,
//! and checked against the database on every use, so revoking them takes effect at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use std::num::NonZeroU32;

use super::admission::PasswordGate;
use super::{LoginThrottle, Scope};
use crate::config::AuthConfig;

/// Prefix of every API key: lets the server tell keys from JWTs without trying both, and lets
/// secret scanners recognise a leaked key.
pub const API_KEY_PREFIX: &str = "ptk_";

/// What an access token says about its bearer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// The user id, as a string (JWT's `sub` is a string).
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub admin: bool,
    pub scope: Scope,
}

/// Signing keys and lifetimes for the HTTP API's tokens, and the login throttle.
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Lower-cased `auth.admin_emails`.
    admin_emails: Vec<String>,
    pub throttle: LoginThrottle,
    /// Bounds the argon2 work of registrations and logins: per address, and in all.
    pub passwords: PasswordGate,
}

impl std::fmt::Debug for AuthKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The keys are deliberately left out.
        f.debug_struct("AuthKeys")
            .field("access_ttl", &self.access_ttl)
            .field("refresh_ttl", &self.refresh_ttl)
            .finish_non_exhaustive()
    }
}

impl AuthKeys {
    /// Uses `auth.token_secret`, or a random key (with a warning) when it is unset.
    pub fn from_config(config: &AuthConfig) -> AuthKeys {
        let secret: Vec<u8> = match &config.token_secret {
            Some(secret) => secret.expose_secret().as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "auth.token_secret is not set: using a random key, so access tokens will not \
                     survive a restart and will not work across several server processes"
                );
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                key
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        // Lifetimes are minutes; one of our own clocks checks them, so no leeway is needed.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        AuthKeys {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            access_ttl: Duration::from_secs(config.access_token_ttl_secs),
            refresh_ttl: Duration::from_secs(u64::from(config.refresh_token_ttl_days) * 86_400),
            admin_emails: config
                .admin_emails
                .iter()
                .map(|e| e.trim().to_lowercase())
                .collect(),
            throttle: LoginThrottle::new(),
            // Validation keeps both counts at least 1; the fallback only makes this total.
            passwords: PasswordGate::new(
                config.hash_concurrency,
                Duration::from_millis(config.hash_wait_ms),
                NonZeroU32::new(config.address_attempts_per_minute).unwrap_or(NonZeroU32::MIN),
                NonZeroU32::new(config.address_attempts_burst).unwrap_or(NonZeroU32::MIN),
            ),
        }
    }

    /// Whether a user registering with this (normalized) email becomes an admin.
    pub fn is_admin_email(&self, normalized_email: &str) -> bool {
        self.admin_emails.iter().any(|e| e == normalized_email)
    }

    /// A signed access token for a user, with full scope.
    pub fn issue_access_token(
        &self,
        user_id: i64,
        is_admin: bool,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = unix_now();
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            admin: is_admin,
            scope: Scope::Full,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// The claims of a valid, unexpired token signed with our key; `None` for anything else.
    pub fn verify_access_token(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|data| data.claims)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `bytes` random bytes as lower-case hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A new refresh token: 256 random bits.
pub fn new_refresh_token() -> String {
    random_hex(32)
}

/// A new API key: the prefix and 256 random bits.
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", random_hex(32))
}

/// The stored form of a refresh token or API key: SHA-256, lower-case hex.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn keys(secret: &str) -> AuthKeys {
        AuthKeys::from_config(&AuthConfig {
            token_secret: Some(SecretString::from(secret.to_owned())),
            ..AuthConfig::default()
        })
    }

    #[test]
    fn an_access_token_verifies_with_its_key_and_not_another() {
        let a = keys("a".repeat(32).as_str());
        let b = keys("b".repeat(32).as_str());
        let token = a.issue_access_token(42, true).unwrap();
        let claims = a.verify_access_token(&token).unwrap();
        assert_eq!(claims.sub, "42");
        assert!(claims.admin);
        assert_eq!(claims.scope, Scope::Full);
        assert_eq!(claims.exp - claims.iat, 900);
        assert!(b.verify_access_token(&token).is_none());
        assert!(a.verify_access_token("not.a.token").is_none());
    }

    #[test]
    fn an_expired_access_token_is_refused() {
        let a = keys("a".repeat(32).as_str());
        let claims = Claims {
            sub: "1".into(),
            iat: unix_now() - 100,
            exp: unix_now() - 1,
            admin: false,
            scope: Scope::Full,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding).unwrap();
        assert!(a.verify_access_token(&token).is_none());
    }

    #[test]
    fn tokens_and_keys_are_256_random_bits_and_hash_to_sha256_hex() {
        let token = new_refresh_token();
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_refresh_token());
        let key = new_api_key();
        assert!(key.starts_with(API_KEY_PREFIX));
        assert_eq!(key.len(), API_KEY_PREFIX.len() + 64);
        let hash = hash_token(&key);
        assert_eq!(hash.len(), 64);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
