//! The owner web app: its page at `/`, its own files (web/app) at `/assets/`, its npm libraries
//! at `/vendor/`, all compiled into the binary, each answer with a Content-Security-Policy that
//! allows no inline script; and `GET /api/v1/map`, the basemap settings the app draws with.
//!
//! Release builds embed the files; debug builds read them from disk on each request, so an edit
//! shows on reload. Only the library files listed on [`Vendor`] are served, never the rest of
//! node_modules.

use std::sync::Arc;

use rust_embed::{EmbeddedFile, RustEmbed};
use warp::http::StatusCode;
use warp::http::header::{self, HeaderValue};
use warp::hyper::body::Bytes;
use warp::{Filter, Rejection};

use crate::config::MapSettings;

/// The app's own HTML, JavaScript (plain ES modules, no bundler) and CSS.
#[derive(RustEmbed)]
#[folder = "web/app/"]
struct App;

/// The parts of the npm packages the app loads (fetched by build.rs from web/package-lock.json),
/// and their licences.
#[derive(RustEmbed)]
#[folder = "web/node_modules/"]
#[include = "leaflet/dist/leaflet.js"]
#[include = "leaflet/dist/leaflet.css"]
#[include = "leaflet/dist/images/*.png"]
#[include = "leaflet/LICENSE"]
#[include = "@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.min.js"]
#[include = "@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css"]
#[include = "@geoman-io/leaflet-geoman-free/LICENSE"]
struct Vendor;

/// What the app's routes need, computed once at start.
#[derive(Debug, Clone)]
pub struct WebSettings {
    pub map: MapSettings,
    /// The page's Content-Security-Policy: scripts, styles and connections from this origin only;
    /// images also from the tile server.
    csp: HeaderValue,
}

impl WebSettings {
    pub fn new(map: MapSettings) -> WebSettings {
        let csp = content_security_policy(map.tile_origin().as_deref());
        WebSettings {
            // A policy built from a validated origin is a valid header; fall back to the
            // strictest policy rather than fail if it ever were not.
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
            map,
        }
    }
}

/// The policy: nothing inline (no `'unsafe-inline'` for scripts or styles), no `eval`, no
/// framing; WebSockets to this origin are covered by `connect-src 'self'`.
pub fn content_security_policy(tile_origin: Option<&str>) -> String {
    let tiles = match tile_origin {
        Some(origin) if origin != "'self'" => format!(" {origin}"),
        _ => String::new(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{tiles}; \
         connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

/// The app's routes: `/`, `/assets/…`, `/vendor/…` and `GET /api/v1/map`.
pub fn routes(
    settings: Arc<WebSettings>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone + Send + Sync + 'static
{
    let with_settings = {
        let settings = settings.clone();
        warp::any().map(move || settings.clone())
    };
    let if_none_match = warp::header::optional::<String>("if-none-match");

    let index = warp::path::end()
        .or(warp::path!("index.html"))
        .unify()
        .and(warp::get())
        .and(with_settings.clone())
        .and(if_none_match)
        .and_then(
            |settings: Arc<WebSettings>, etag: Option<String>| async move {
                let file = App::get("index.html").ok_or_else(warp::reject::not_found)?;
                Ok::<_, Rejection>(serve(&settings, file, "text/html; charset=utf-8", etag))
            },
        );

    let assets = folder::<App>("assets", settings.clone());
    let vendor = folder::<Vendor>("vendor", settings.clone());

    let map = warp::path!("api" / "v1" / "map")
        .and(warp::get())
        .and(with_settings)
        .map(|settings: Arc<WebSettings>| {
            let map = &settings.map;
            let url = map.tile_url.trim();
            warp::Reply::into_response(warp::reply::json(&serde_json::json!({
                "tile_url": if url.is_empty() { None } else { Some(url) },
                "tile_attribution": map.tile_attribution,
                "max_zoom": map.max_zoom,
            })))
        });

    index.or(assets).unify().or(vendor).unify().or(map).unify()
}

/// `GET /<prefix>/<path>`: the files of `E`.
fn folder<E: RustEmbed>(
    prefix: &'static str,
    settings: Arc<WebSettings>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone + Send + Sync + 'static
{
    warp::path(prefix)
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::any().map(move || settings.clone()))
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(
            |tail: warp::path::Tail, settings: Arc<WebSettings>, etag: Option<String>| async move {
                embedded::<E>(&settings, tail.as_str(), etag)
            },
        )
}

/// A file of `E` by its path under the folder; hidden files and `..` are never looked up.
fn embedded<E: RustEmbed>(
    settings: &WebSettings,
    path: &str,
    etag: Option<String>,
) -> Result<warp::reply::Response, Rejection> {
    let safe = !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty() && !segment.starts_with('.') && !segment.contains('\\')
        });
    if !safe {
        return Err(warp::reject::not_found());
    }
    let file = E::get(path).ok_or_else(warp::reject::not_found)?;
    let mime = file.metadata.mimetype().to_owned();
    let mime = match mime.as_str() {
        // Module scripts need a JavaScript type; text files are UTF-8.
        "application/javascript" | "text/javascript" => "text/javascript; charset=utf-8".to_owned(),
        m if m.starts_with("text/") => format!("{m}; charset=utf-8"),
        _ if path.ends_with("LICENSE") => "text/plain; charset=utf-8".to_owned(),
        _ => mime,
    };
    Ok(serve(settings, file, &mime, etag))
}

/// The file with its security headers, or 304 when the client has this version.
fn serve(
    settings: &WebSettings,
    file: EmbeddedFile,
    content_type: &str,
    if_none_match: Option<String>,
) -> warp::reply::Response {
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex::encode(&hash[..16]));
    let unchanged = if_none_match
        .as_deref()
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let (status, body) = if unchanged {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from(file.data.into_owned()))
    };
    let mut response = warp::reply::Response::new(body.into());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, content_type);
    set(header::ETAG, &etag);
    // Revalidated on every load (a 304 costs one round trip): a new binary's files show at once.
    set(header::CACHE_CONTROL, "no-cache");
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "strict-origin-when-cross-origin");
    set(header::X_FRAME_OPTIONS, "DENY");
    headers.insert(header::CONTENT_SECURITY_POLICY, settings.csp.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_no_inline_script_and_images_from_the_tile_server_only() {
        let csp = content_security_policy(Some("https://*.tile.example.org"));
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(
            csp.contains("img-src 'self' data: blob: https://*.tile.example.org;"),
            "{csp}"
        );
        let csp = content_security_policy(None);
        assert!(csp.contains("img-src 'self' data: blob:;"), "{csp}");
        assert_eq!(content_security_policy(Some("'self'")), csp);
    }

    #[test]
    fn the_page_and_the_libraries_it_loads_are_embedded() {
        let index = App::get("index.html").expect("web/app/index.html");
        let html = String::from_utf8_lossy(&index.data);
        for src in html
            .split(['"', '\''])
            .filter(|s| s.starts_with("/assets/") || s.starts_with("/vendor/"))
        {
            let found = match src.split_once('/').map(|(_, p)| p) {
                Some(p) if p.starts_with("assets/") => App::get(&p["assets/".len()..]).is_some(),
                Some(p) => Vendor::get(&p["vendor/".len()..]).is_some(),
                None => false,
            };
            assert!(found, "index.html loads {src}, which is not embedded");
        }
        assert!(!html.contains("<script>"), "no inline script");
        assert!(Vendor::get("leaflet/LICENSE").is_some());
        assert!(
            Vendor::get("leaflet/package.json").is_none(),
            "only the listed files"
        );
    }

    #[test]
    fn every_npm_package_in_the_lockfile_is_listed_with_its_licence_in_the_ui_guide() {
        let lock: serde_json::Value =
            serde_json::from_str(include_str!("../../web/package-lock.json")).unwrap();
        let guide = include_str!("../../docs/ui.md");
        let packages = lock["packages"].as_object().unwrap();
        for (path, package) in packages.iter().filter(|(p, _)| !p.is_empty()) {
            let name = path
                .trim_start_matches("node_modules/")
                .replace("/node_modules/", "/");
            let version = package["version"].as_str().unwrap();
            let licence = package["license"].as_str().unwrap_or("(none)");
            let row = format!("| `{name}` | {version} | {licence}");
            assert!(guide.contains(&row), "docs/ui.md lacks the row {row}");
        }
    }
}
