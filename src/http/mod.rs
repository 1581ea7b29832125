//! The HTTP side: health checks and metrics now, the REST API and live feeds as they are built.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use warp::Filter;
use warp::http::StatusCode;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub pool: Pool,
    pub metrics: PrometheusHandle,
    /// Reports whether the broker accepts connections, for `/readyz`.
    pub broker_ready: Arc<dyn Fn() -> bool + Send + Sync>,
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
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));

    let ready_state = state.clone();
    let readyz = warp::path!("readyz").and(warp::get()).then(move || {
        let state = ready_state.clone();
        async move {
            let database = database_ready(&state.pool).await;
            let broker = (state.broker_ready)();
            let status = if database && broker {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({
                    "status": if status == StatusCode::OK { "ready" } else { "not ready" },
                    "database": database,
                    "broker": broker,
                })),
                status,
            )
        }
    });

    let metrics = state.metrics.clone();
    let metrics_route = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            metrics.render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
    });

    healthz
        .or(readyz)
        .or(metrics_route)
        .recover(handle_rejection)
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

/// Turns warp's rejections into JSON errors, so no client ever sees an HTML or empty error body.
async fn handle_rejection(rejection: warp::Rejection) -> Result<warp::reply::Response, Infallible> {
    use warp::Reply;
    let (status, code, message) = if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_owned(),
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route".to_owned(),
        )
    } else {
        (
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{rejection:?}"),
        )
    };
    Ok(warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"error": code, "message": message})),
        status,
    )
    .into_response())
}
