//! Webhooks under `/api/v1/webhooks`: a user's integration endpoints, which receive every alert of the trackers the user may see, signed, with their delivery status.

use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::{Caller, json_body, with_caller};
use super::error::ApiError;
use super::fields::path_id;
use super::{HttpState, json_with_status as json, respond};
use crate::alerts::webhooks;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
}

/// An absolute http(s) URL of at most 2000 characters whose host the server may call
/// ([`crate::alerts::egress`]).
fn check_url(state: &HttpState, raw: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "url must be an absolute http:// or https:// URL of at most 2000 characters",
            Some("url"),
        )
    };
    let url = reqwest::Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || raw.len() > 2000 {
        return Err(bad());
    }
    state
        .webhook_egress
        .check(&url)
        .map_err(|why| ApiError::bad_request(why, Some("url")))?;
    Ok(url.to_string())
}

async fn create(state: HttpState, caller: Caller, body: NewWebhook) -> Result<Response, ApiError> {
    caller.require_write()?;
    let url = check_url(&state, &body.url)?;
    let view = webhooks::create(&state.pool, caller.user_id, &url).await?;
    Ok(json(&view, StatusCode::CREATED))
}

async fn list(state: HttpState, caller: Caller) -> Result<Response, ApiError> {
    let hooks = webhooks::list(&state.pool, caller.user_id).await?;
    Ok(json(
        &serde_json::json!({"webhooks": hooks}),
        StatusCode::OK,
    ))
}

async fn delete(state: HttpState, caller: Caller, raw: String) -> Result<Response, ApiError> {
    let id = path_id(&raw)?;
    caller.require_write()?;
    if !webhooks::delete(&state.pool, caller.user_id, id).await? {
        return Err(ApiError::NotFound);
    }
    Ok(warp::reply::Reply::into_response(StatusCode::NO_CONTENT))
}

async fn deliveries(state: HttpState, caller: Caller, raw: String) -> Result<Response, ApiError> {
    let id = path_id(&raw)?;
    let list = webhooks::deliveries(&state.pool, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(json(
        &serde_json::json!({"deliveries": list}),
        StatusCode::OK,
    ))
}

/// The webhook routes.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let signed_in = with_caller(state);
    let create = warp::path!("api" / "v1" / "webhooks")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<NewWebhook>())
        .then(|s, c, b| async move { respond(create(s, c, b).await) })
        .boxed();
    let list = warp::path!("api" / "v1" / "webhooks")
        .and(warp::get())
        .and(signed_in.clone())
        .then(|s, c| async move { respond(list(s, c).await) })
        .boxed();
    let delete = warp::path!("api" / "v1" / "webhooks" / String)
        .and(warp::delete())
        .and(signed_in.clone())
        .then(|id, s, c| async move { respond(delete(s, c, id).await) })
        .boxed();
    let deliveries = warp::path!("api" / "v1" / "webhooks" / String / "deliveries")
        .and(warp::get())
        .and(signed_in)
        .then(|id, s, c| async move { respond(deliveries(s, c, id).await) })
        .boxed();
    create
        .or(list)
        .unify()
        .or(delete)
        .unify()
        .or(deliveries)
        .unify()
        .boxed()
}
