//! The HTTP side: health checks, metrics, the REST API under `/api/v1` (see docs/api/openapi.yaml), and the owner web app at `/`.

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod broker_auth;
pub mod client;
pub mod commands;
pub mod error;
pub mod fields;
#[doc(hidden)]
pub mod fuzzing;
pub mod geofences;
pub mod limit;
pub mod live;
pub mod query;
pub mod session;
pub mod trackers;
pub mod web;
pub mod webhooks;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use warp::Filter;
use warp::http::StatusCode;

use crate::auth::AuthKeys;
use error::{ApiError, error_response};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub pool: Pool,
    pub metrics: PrometheusHandle,
    /// Reports whether the broker accepts connections, for `/readyz`.
    pub broker_ready: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Whether the database has been reached and migrated since start; until then `/readyz`
    /// says so and the API answers 503.
    pub database_ready: gateway::storage::Ready,
    /// Token keys and lifetimes, and the login throttle.
    pub auth: Arc<AuthKeys>,
    /// Wakes the command dispatcher and gives new commands their default lifetime.
    pub commands: CommandSettings,
    /// The validation rules of ingest, for re-running dead letters...
    pub limits: gateway::protocol::ValidationLimits,
    /// ...and the clock ingest checks device times against (a test's own, to move time on).
    pub clock: gateway::ingest::Clock,
    /// Requests per credential; checked once the caller is known.
    pub rate_limit: Arc<limit::RateLimit>,
    /// The live feed's hub (`GET /api/v1/live`).
    pub live: Arc<crate::live::Hub>,
    /// Told when geofences change, so the alert engine re-reads them.
    pub alerts: Arc<crate::alerts::AlertsHandle>,
    /// The web app's map settings and page policy.
    pub web: Arc<web::WebSettings>,
    /// Where webhook URLs may point (`alerts.webhook_allow_loopback`).
    pub webhook_egress: crate::alerts::egress::Egress,
    /// The external broker's shared secret and pettracker's own identity on it.
    pub broker_auth: Arc<broker_auth::BrokerAuth>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`http.trusted_proxies`).
    pub trusted_proxies: Arc<client::TrustedProxies>,
}

/// What the command routes need beyond the database.
#[derive(Clone)]
pub struct CommandSettings {
    pub wake: crate::commands::dispatch::Wake,
    pub default_ttl_secs: u32,
}

/// The process-wide Prometheus recorder. `metrics` has one global recorder, so every app in a
/// process (tests start several) shares it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; ours then just stays empty.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// All routes.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    let health = health_routes(Health {
        pool: state.pool.clone(),
        metrics: state.metrics.clone(),
        broker_ready: state.broker_ready.clone(),
        database_ready: state.database_ready.clone(),
    });

    // Before the database was first reached and migrated, its tables may not even exist: the
    // API says "unavailable" rather than failing in each handler.
    let database = state.database_ready.clone();
    let api_unavailable = warp::path("api")
        .and(warp::any().map(move || database.is_ready()))
        .and_then(|ready: bool| async move {
            if ready {
                Err(warp::reject::not_found())
            } else {
                Ok(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is not available yet; retry later",
                    None,
                ))
            }
        });

    let openapi = warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| match openapi_json() {
            Ok(doc) => warp::Reply::into_response(warp::reply::json(doc)),
            Err(err) => error::ApiError::Internal(err.clone()).to_response(),
        });

    let routes = health
        .or(api_unavailable)
        .or(openapi)
        .or(auth::routes(state.clone()))
        .or(broker_auth::routes(state.clone()))
        .or(session::routes(state.clone()))
        .or(trackers::routes(state.clone()))
        .or(admin::routes(state.clone()))
        .or(commands::routes(state.clone()))
        .or(live::routes(state.clone()))
        .or(geofences::routes(state.clone()))
        .or(alerts::routes(state.clone()))
        .or(web::routes(state.web.clone()))
        .or(webhooks::routes(state))
        .recover(handle_rejection);
    warp::path::full()
        .and(routes)
        .map(|path: warp::path::FullPath, reply| with_allow(path.as_str(), reply))
}

/// What the health checks and metrics look at: all an `ingest` instance serves over HTTP.
#[derive(Clone)]
pub struct Health {
    pub pool: Pool,
    pub metrics: PrometheusHandle,
    /// Whether the broker side is up: the embedded broker listening, the external one connected.
    pub broker_ready: Arc<dyn Fn() -> bool + Send + Sync>,
    pub database_ready: gateway::storage::Ready,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn health_routes(
    health: Health,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone + Send + Sync + 'static
{
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));

    let ready_state = health.clone();
    let readyz = warp::path!("readyz").and(warp::get()).then(move || {
        let state = ready_state.clone();
        async move {
            let migrated = state.database_ready.is_ready();
            let database = migrated && database_ready(&state.pool).await;
            let broker = (state.broker_ready)();
            let mut missing = Vec::new();
            if !database {
                missing.push(if migrated {
                    "database: not answering"
                } else {
                    "database: not reached since start (its schema is migrated when it comes)"
                });
            }
            if !broker {
                missing.push("broker: not listening (embedded) or not connected (external)");
            }
            let status = if missing.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({
                    "status": if status == StatusCode::OK { "ready" } else { "not ready" },
                    "database": database,
                    "broker": broker,
                    "missing": missing,
                })),
                status,
            )
        }
    });

    let metrics = health.metrics.clone();
    let metrics_route = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            metrics.render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
    });

    healthz.or(readyz).or(metrics_route)
}

/// What an `ingest` instance answers: the health checks and metrics, and 404 for the rest.
pub fn ingest_routes(
    health: Health,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone + Send + Sync + 'static
{
    warp::path::full()
        .and(health_routes(health).recover(handle_rejection))
        .map(|path: warp::path::FullPath, reply| with_allow(path.as_str(), reply))
}

/// Adds the `Allow` header every 405 must carry (RFC 9110, 15.5.6).
fn with_allow(path: &str, reply: impl warp::Reply) -> warp::reply::Response {
    let mut response = reply.into_response();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Ok(allow) = warp::http::HeaderValue::from_str(&allowed_methods(path))
    {
        response
            .headers_mut()
            .insert(warp::http::header::ALLOW, allow);
    }
    response
}

/// The methods `path` answers: for the API, those its document lists for every path template
/// that matches (`/trackers/claim` matches `/trackers/{id}` too, and warp tries both); the
/// health checks, metrics and pages answer GET only.
pub fn allowed_methods(path: &str) -> String {
    const OPERATIONS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
    let mut allowed: Vec<&str> = Vec::new();
    if let (Some(api_path), Ok(doc)) = (path.strip_prefix("/api/v1"), openapi_json())
        && let Some(paths) = doc["paths"].as_object()
    {
        let segments: Vec<&str> = api_path.split('/').collect();
        for (template, item) in paths {
            let matches = template.split('/').count() == segments.len()
                && template
                    .split('/')
                    .zip(&segments)
                    .all(|(t, s)| t == *s || (t.starts_with('{') && !s.is_empty()));
            if !matches {
                continue;
            }
            for method in OPERATIONS {
                if item.get(method).is_some() && !allowed.contains(&method) {
                    allowed.push(method);
                }
            }
        }
    }
    if allowed.is_empty() {
        allowed.push("get");
    }
    allowed.sort_by_key(|m| OPERATIONS.iter().position(|o| o == m));
    allowed
        .iter()
        .map(|m| m.to_uppercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hands each request a clone of the shared state.
fn with_state(state: HttpState) -> impl Filter<Extract = (HttpState,), Error = Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Turns a handler's outcome into the response. Handlers answer their own errors rather than
/// rejecting, so warp never tries the remaining routes after a handler failed.
fn respond(result: Result<warp::reply::Response, error::ApiError>) -> warp::reply::Response {
    result.unwrap_or_else(|e| e.to_response())
}

fn json_with_status(value: &impl serde::Serialize, status: StatusCode) -> warp::reply::Response {
    warp::Reply::into_response(warp::reply::with_status(warp::reply::json(value), status))
}

/// The API contract, docs/api/openapi.yaml, compiled in and served as JSON. Parsed once; a test
/// checks that it parses and that every route it documents is served.
pub fn openapi_json() -> Result<&'static serde_json::Value, &'static String> {
    static DOC: OnceLock<Result<serde_json::Value, String>> = OnceLock::new();
    DOC.get_or_init(|| {
        serde_norway::from_str(include_str!("../../docs/api/openapi.yaml"))
            .map_err(|e| format!("docs/api/openapi.yaml does not parse: {e}"))
    })
    .as_ref()
}

async fn database_ready(pool: &Pool) -> bool {
    let check = async {
        let client = pool.get().await.ok()?;
        client.simple_query("SELECT 1").await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), check).await,
        Ok(Some(_))
    )
}

/// Turns rejections into JSON errors, so no client ever sees an HTML or empty error body:
/// [`ApiError`]s from our filters, and warp's own (no route, bad method, body problems).
async fn handle_rejection(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    if let Some(err) = rejection.find::<ApiError>() {
        return Ok(err.to_response());
    }
    // Most specific first. A request is tried against every route, so its rejection combines
    // each route's: a body too large for POST /geofences also carries GET /geofences' "method
    // not allowed" and other paths' "not found", which must not win.
    let (status, code, message) = if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large".to_owned(),
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a request body with a Content-Length header is required".to_owned(),
        )
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON".to_owned(),
        )
    } else if let Some(err) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("invalid JSON body: {err}"),
        )
    } else if let Some(err) = rejection.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, "bad_request", err.to_string())
    } else if let Some(err) = rejection.find::<warp::reject::MissingHeader>() {
        (StatusCode::BAD_REQUEST, "bad_request", err.to_string())
    } else if let Some(err) = rejection.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, "bad_request", err.to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route".to_owned(),
        )
    } else if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_owned(),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{rejection:?}"),
        )
    };
    Ok(error_response(status, code, &message, None))
}
