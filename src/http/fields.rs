//! Checks of request values shared by several routes: ids in the path, names in bodies, text no
//! field may hold; each error names its field.

use serde_json::Value;

use super::error::ApiError;

/// Characters no text of a JSON body may hold: the control characters but tab, line feed and
/// carriage return. U+0000 in particular: PostgreSQL stores it in neither `text` nor `jsonb`,
/// so letting it through turned a bad request into a 500. The others only ever come from a
/// broken or hostile client, and would reach logs, exports and other users' screens.
fn forbidden(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

/// 400 naming the first string (a value, or an object key) of a JSON body that holds a
/// [`forbidden`] character. Every JSON body the API takes passes through here
/// ([`super::auth::json_body`]), whatever the route stores.
pub fn no_control_characters(body: &Value) -> Result<(), ApiError> {
    match first_forbidden(body, String::new()) {
        None => Ok(()),
        Some(path) => Err(ApiError::bad_request(
            format!(
                "{} must not contain control characters such as U+0000",
                if path.is_empty() { "the body" } else { &path }
            ),
            (!path.is_empty()).then_some(path.as_str()),
        )),
    }
}

/// The path of the first offending string, in the form the other body errors use
/// (`name`, `params.label`, `trackers[2]`).
fn first_forbidden(value: &Value, path: String) -> Option<String> {
    match value {
        Value::String(s) => s.chars().any(forbidden).then_some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_forbidden(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(key, item)| {
            let inner = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.chars().any(forbidden) {
                return Some(inner);
            }
            first_forbidden(item, inner)
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

/// A numeric id from the path (geofence, webhook, alert). Anything else cannot name one, so it
/// is a 404 like an id that does not exist.
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound)
}

/// The `name` of something the caller creates (API key, geofence): trimmed, 1 to 100 characters.
pub fn name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "name must be 1 to 100 characters, none of them control characters",
            Some("name"),
        ));
    }
    Ok(name.to_owned())
}

/// A pet's name: trimmed, at most 64 characters; empty means none.
pub fn pet_name(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let name = raw.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 64 || n.chars().any(char::is_control)) {
        return Err(ApiError::bad_request(
            "pet_name is at most 64 characters, none of them control characters",
            Some("pet_name"),
        ));
    }
    Ok(name.map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: Value) -> Option<String> {
        match no_control_characters(&body) {
            Ok(()) => None,
            Err(ApiError::BadRequest { field, .. }) => Some(field.unwrap_or_default()),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_nul_anywhere_in_a_body_is_refused_naming_its_path() {
        let cases = [
            (serde_json::json!({"name": "a\u{0}b"}), "name"),
            (
                serde_json::json!({"params": {"label": "x\u{0}"}}),
                "params.label",
            ),
            (
                serde_json::json!({"trackers": ["rex", "\u{0}"]}),
                "trackers[1]",
            ),
            (
                serde_json::json!({"params": {"k\u{0}": 1}}),
                "params.k\u{0}",
            ),
            (serde_json::json!("\u{1b}[31m"), ""),
        ];
        for (body, want) in cases {
            assert_eq!(field_of(body.clone()).as_deref(), Some(want), "{body}");
        }
    }

    #[test]
    fn ordinary_text_with_tabs_and_newlines_passes() {
        let body = serde_json::json!({"name": "Rex\tthe dog\r\n", "n": 1, "ok": [true, null]});
        assert_eq!(field_of(body), None);
    }

    #[test]
    fn names_refuse_every_control_character() {
        assert!(name("Rex\nRex").is_err());
        assert!(pet_name(Some("Rex\u{7f}")).is_err());
        assert_eq!(name(" Rex ").unwrap(), "Rex");
    }
}
