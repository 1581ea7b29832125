//! Secrets a person types (account passwords, claim codes) at rest: argon2id PHC strings with the crate's default (OWASP-recommended) parameters.
//!
//! One implementation for both, because both are short enough to guess at and must cost the
//! guesser the same. Device secrets are random 256-bit values and use a fast digest instead
//! (`storage::trackers`).

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash, PasswordVerifier};

/// Hashing could not run (only if a fresh random salt cannot be encoded).
#[derive(Debug, thiserror::Error)]
#[error("hashing failed: {0}")]
pub struct HashError(String);

/// The stored form of `secret`, with a fresh random salt. Slow on purpose: run it off the
/// async threads (`spawn_blocking`).
pub fn hash(secret: &str) -> Result<String, HashError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `secret` is the one `stored` was made from; a malformed `stored` matches nothing.
pub fn matches(stored: &str, secret: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(secret.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_the_secret_it_was_made_from() {
        let stored = hash("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(matches(&stored, "correct horse"));
        assert!(!matches(&stored, "battery staple"));
        assert!(!matches("not a hash", "x"));
    }

    #[test]
    fn the_same_secret_hashes_differently_each_time() {
        assert_ne!(hash("ABCD2345EFGH").unwrap(), hash("ABCD2345EFGH").unwrap());
    }
}
