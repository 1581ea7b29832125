//! Checks of request values shared by several routes: ids in the path, names in bodies; each error names its field.

use super::error::ApiError;

/// A numeric id from the path (geofence, webhook, alert). Anything else cannot name one, so it
/// is a 404 like an id that does not exist.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// The `name` of something the caller creates (API key, geofence): trimmed, 1 to 100 characters.
pub fn name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "name must be 1 to 100 characters",
            Some("name"),
        ));
    }
    Ok(name.to_owned())
}

/// A pet's name: trimmed, at most 64 characters; empty means none.
pub fn pet_name(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let name = raw.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 64) {
        return Err(ApiError::bad_request(
            "pet_name is at most 64 characters",
            Some("pet_name"),
        ));
    }
    Ok(name.map(str::to_owned))
}
