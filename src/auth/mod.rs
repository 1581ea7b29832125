//! Accounts of the HTTP API: emails and passwords as validated types, tokens, API keys, throttling.
//!
//! - [`password`] hashes and checks passwords (argon2id).
//! - [`store`] keeps users, refresh tokens and API keys in PostgreSQL (secrets only hashed).
//! - [`tokens`] signs and checks access tokens and makes the random secrets.
//! - [`throttle`] slows repeated login failures.
//! - [`admission`] bounds the password hashing of registrations and logins.

pub mod admission;
pub mod password;
pub mod store;
pub mod throttle;
pub mod tokens;

use gateway::storage::StorageError;
use secrecy::{ExposeSecret, SecretString};

pub use throttle::LoginThrottle;
pub use tokens::AuthKeys;

/// Stated in full whenever a password is refused, so a client can show it to the person typing.
pub const PASSWORD_RULES: &str = "a password must be 10 to 1024 characters long, must not be one \
                                  character repeated, and must not be the email address";

/// Longest accepted password: argon2 cost grows with the input, and nobody types more.
const MAX_PASSWORD_CHARS: usize = 1024;

/// An email address as the user typed it (trimmed). Accounts compare emails case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Accepts `local@domain.tld` without spaces or control characters, at most 254 characters.
    /// Deliberately loose: the only real check of an address is mail reaching it.
    pub fn parse(raw: &str) -> Result<Email, AccountError> {
        let email = raw.trim();
        let invalid = || {
            AccountError::InvalidEmail(
                "an email address looks like name@example.com (at most 254 characters, no spaces)"
                    .to_owned(),
            )
        };
        if email.is_empty()
            || email.chars().count() > 254
            || email.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid());
        }
        let (local, domain) = email.rsplit_once('@').ok_or_else(invalid)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.');
        if local.is_empty() || local.contains('@') || !domain_ok {
            return Err(invalid());
        }
        Ok(Email(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form accounts are compared by.
    pub fn normalized(&self) -> String {
        self.0.to_lowercase()
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password that meets [`PASSWORD_RULES`]; the text stays wrapped so it is never logged.
#[derive(Debug, Clone)]
pub struct Password(SecretString);

impl Password {
    /// Checks a new password against the rules; `email` is the account it is for.
    pub fn parse(raw: &SecretString, email: &Email) -> Result<Password, AccountError> {
        let text = raw.expose_secret();
        let count = text.chars().count();
        let mut chars = text.chars();
        let first = chars.next();
        let one_repeated = first.is_some_and(|f| chars.all(|c| c == f));
        if !(10..=MAX_PASSWORD_CHARS).contains(&count)
            || one_repeated
            || text.trim().to_lowercase() == email.normalized()
        {
            return Err(AccountError::WeakPassword);
        }
        Ok(Password(raw.clone()))
    }

    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// What an API key (or access token) may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything the user may do.
    Full,
    /// Reading only: every change is refused with 403.
    Read,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Full => "full",
            Scope::Read => "read",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "full" => Some(Scope::Full),
            "read" => Some(Scope::Read),
            _ => None,
        }
    }
}

/// Why an account operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    InvalidEmail(String),
    #[error("{PASSWORD_RULES}")]
    WeakPassword,
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("wrong email or password")]
    BadCredentials,
    #[error("the refresh token is invalid, expired or revoked")]
    BadRefreshToken,
    #[error("not found")]
    NotFound,
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A failure that is ours, not the client's (a hashing task panicked, ...).
    #[error("{0}")]
    Internal(String),
}

/// argon2id on the blocking pool: one hash takes tens of milliseconds of CPU, which must not
/// stall the async workers serving everyone else.
pub async fn hash_password(password: &Password) -> Result<String, AccountError> {
    let secret = password.secret().clone();
    tokio::task::spawn_blocking(move || password::hash(secret.expose_secret()))
        .await
        .map_err(|e| AccountError::Internal(format!("password hashing task failed: {e}")))?
        .map_err(AccountError::Internal)
}

/// Checks `password` against a stored hash, or against a dummy hash when there is no account,
/// so that an unknown email takes as long as a wrong password and timing reveals nothing.
pub async fn verify_password(
    stored: Option<String>,
    password: &SecretString,
) -> Result<bool, AccountError> {
    let password = password.clone();
    tokio::task::spawn_blocking(move || match stored {
        Some(stored) => password::matches(&stored, password.expose_secret()),
        None => {
            let _ = password::matches(dummy_hash(), password.expose_secret());
            false
        }
    })
    .await
    .map_err(|e| AccountError::Internal(format!("password check task failed: {e}")))
}

/// A hash of a random password with the same parameters as real ones, made once per process.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = tokens::random_hex(16);
        // Hashing fails only if the salt cannot be encoded, which a fixed-size random salt always
        // can; an empty string then still makes verification fail (quickly, the one time).
        password::hash(&random).unwrap_or_default()
    })
}

/// Makes sure the dummy hash exists before the first login, so that one is not slower.
pub fn warm_up() {
    tokio::task::spawn_blocking(|| {
        let _ = dummy_hash();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(s: &str) -> Email {
        Email::parse(s).unwrap()
    }

    fn password(s: &str, for_email: &str) -> Result<Password, AccountError> {
        Password::parse(&SecretString::from(s.to_owned()), &email(for_email))
    }

    #[test]
    fn an_ordinary_email_is_accepted_and_trimmed() {
        assert_eq!(email("  Ada@Example.com ").as_str(), "Ada@Example.com");
        assert_eq!(email("Ada@Example.com").normalized(), "ada@example.com");
        assert_eq!(
            email("a.b+tag@mail.example.org").as_str(),
            "a.b+tag@mail.example.org"
        );
    }

    #[test]
    fn emails_without_at_sign_domain_dot_or_with_spaces_are_refused() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@.com",
            "ada@example.",
            "a da@example.com",
            "ada@@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn a_password_of_ten_varied_characters_is_accepted() {
        assert!(password("correct horse", "ada@example.com").is_ok());
        assert!(password("abcdefghij", "ada@example.com").is_ok());
    }

    #[test]
    fn a_password_shorter_than_ten_characters_is_refused_with_the_rules() {
        let err = password("abcdefghi", "ada@example.com").unwrap_err();
        assert!(matches!(err, AccountError::WeakPassword));
        let message = err.to_string();
        assert!(message.contains("10"), "{message}");
        assert!(message.contains("repeated"), "{message}");
        assert!(message.contains("email"), "{message}");
    }

    #[test]
    fn characters_not_bytes_are_counted() {
        // 9 characters, 18 bytes.
        assert!(password("ééééééééa", "ada@example.com").is_err());
        assert!(password("éééééééééa", "ada@example.com").is_ok());
    }

    #[test]
    fn a_password_of_one_repeated_character_is_refused() {
        assert!(password("aaaaaaaaaaaa", "ada@example.com").is_err());
    }

    #[test]
    fn a_password_equal_to_the_email_is_refused_whatever_the_case() {
        assert!(password("Ada@Example.com", "ada@example.com").is_err());
    }

    #[test]
    fn a_password_longer_than_1024_characters_is_refused() {
        let long = "ab".repeat(513);
        assert!(password(&long, "ada@example.com").is_err());
    }

    #[test]
    fn scopes_round_trip_through_their_names() {
        for scope in [Scope::Full, Scope::Read] {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("admin"), None);
    }
}
