//! The web app's map settings (`[map]`): which basemap tiles it draws under the pets.

use serde::{Deserialize, Serialize};

/// Where the owner web app gets its basemap. Operators pick a tile server whose usage policy
/// fits their traffic; the default, OpenStreetMap's standard tiles, is meant for light use.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MapSettings {
    /// A Leaflet URL template (`{z}`, `{x}`, `{y}`, optionally `{s}` and `{r}`). Empty: no
    /// basemap; pets, tracks and zones still render on a plain background.
    pub tile_url: String,
    /// Shown in the map's corner, as HTML (tile servers require their credit, often as a
    /// link). Written by the operator, never by users.
    pub tile_attribution: String,
    /// The deepest zoom the tile server has.
    pub max_zoom: u8,
}

/// OpenStreetMap's credit as its tile usage policy asks for it.
pub const OSM_ATTRIBUTION: &str =
    r#"&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors"#;

impl Default for MapSettings {
    fn default() -> Self {
        Self {
            tile_url: "https://tile.openstreetmap.org/{z}/{x}/{y}.png".to_owned(),
            tile_attribution: OSM_ATTRIBUTION.to_owned(),
            max_zoom: 19,
        }
    }
}

impl MapSettings {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_zoom == 0 || self.max_zoom > 24 {
            return Err((
                "map.max_zoom",
                format!("{} is outside 1..=24", self.max_zoom),
            ));
        }
        let url = self.tile_url.trim();
        if url.is_empty() {
            return Ok(());
        }
        for part in ["{z}", "{x}", "{y}"] {
            if !url.contains(part) {
                return Err((
                    "map.tile_url",
                    format!(
                        "{url:?} has no {part}: it must be a tile URL template such as https://tile.openstreetmap.org/{{z}}/{{x}}/{{y}}.png (or empty for no basemap)"
                    ),
                ));
            }
        }
        if self.tile_origin().is_none() {
            return Err((
                "map.tile_url",
                format!(
                    "{url:?} must start with https://, http:// or / (tiles served by this server)"
                ),
            ));
        }
        Ok(())
    }

    /// The tiles' origin as a Content-Security-Policy source (`{s}` subdomains become a
    /// wildcard), `'self'` for a path on this server, `None` when there is no basemap or the
    /// template cannot be used.
    pub fn tile_origin(&self) -> Option<String> {
        let url = self.tile_url.trim();
        if url.is_empty() {
            return None;
        }
        if url.starts_with('/') && !url.starts_with("//") {
            return Some("'self'".to_owned());
        }
        let (scheme, rest) = url.split_once("://")?;
        if scheme != "https" && scheme != "http" {
            return None;
        }
        let host = rest.split('/').next().unwrap_or_default();
        let host = host.replace("{s}", "*");
        let valid = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '*' | '[' | ']')
            });
        valid.then(|| format!("{scheme}://{host}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_url(url: &str) -> MapSettings {
        MapSettings {
            tile_url: url.to_owned(),
            ..MapSettings::default()
        }
    }

    #[test]
    fn the_default_is_openstreetmap_with_its_credit() {
        let map = MapSettings::default();
        assert!(map.validate().is_ok());
        assert_eq!(
            map.tile_origin().as_deref(),
            Some("https://tile.openstreetmap.org")
        );
        assert!(map.tile_attribution.contains("openstreetmap.org/copyright"));
    }

    #[test]
    fn subdomain_templates_become_a_wildcard_source_and_paths_are_self() {
        assert_eq!(
            with_url("https://{s}.tile.example.org:8443/{z}/{x}/{y}{r}.png")
                .tile_origin()
                .as_deref(),
            Some("https://*.tile.example.org:8443")
        );
        assert_eq!(
            with_url("/tiles/{z}/{x}/{y}.png").tile_origin().as_deref(),
            Some("'self'")
        );
        assert_eq!(with_url("").tile_origin(), None);
        assert!(with_url("").validate().is_ok());
    }

    #[test]
    fn a_template_without_coordinates_or_with_another_scheme_is_refused_naming_the_key() {
        for bad in [
            "https://tile.example.org/tile.png",
            "ftp://tile.example.org/{z}/{x}/{y}.png",
            "//tile.example.org/{z}/{x}/{y}.png",
            "https://tile.example.org; script-src *//{z}/{x}/{y}",
        ] {
            let (key, _) = with_url(bad).validate().unwrap_err();
            assert_eq!(key, "map.tile_url", "{bad}");
        }
        let map = MapSettings {
            max_zoom: 30,
            ..MapSettings::default()
        };
        assert_eq!(map.validate().unwrap_err().0, "map.max_zoom");
    }
}
