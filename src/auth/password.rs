//! Account passwords at rest: the same argon2id hashing as claim codes ([`gateway::typed_secret`]), with the error this crate reports.

/// The stored form of a password. Fails only if a fresh random salt cannot be encoded.
pub fn hash(password: &str) -> Result<String, String> {
    gateway::typed_secret::hash(password).map_err(|e| e.to_string())
}

/// Whether `password` is the one `stored` was made from; a malformed `stored` matches nothing.
pub fn matches(stored: &str, password: &str) -> bool {
    gateway::typed_secret::matches(stored, password)
}
