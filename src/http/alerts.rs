//! Stored alerts under `/api/v1/alerts`: listed for the trackers the caller may see, acknowledged by the tracker's owner.

use std::collections::HashMap;

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::{Caller, with_caller};
use super::error::ApiError;
use super::fields::path_id;
use super::query::{limit_param, only_known};
use super::trackers::{role, tracker_id};
use super::{HttpState, json_with_status as json, respond};
use crate::alerts::store;

const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;

async fn list(
    state: HttpState,
    caller: Caller,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    only_known(&query, &["tracker", "since", "limit"])?;
    let tracker = match query.get("tracker") {
        Some(raw) => {
            let id = tracker_id(raw)?;
            role(&state, &caller, &id).await?;
            Some(id.to_string())
        }
        None => None,
    };
    let since = match query.get("since") {
        Some(raw) => raw.parse::<i64>().ok().filter(|s| *s >= 0).ok_or_else(|| {
            ApiError::bad_request(
                "since must be an alert id (a whole number >= 0)",
                Some("since"),
            )
        })?,
        None => 0,
    };
    let limit = limit_param(&query, DEFAULT_LIMIT, MAX_LIMIT)?;
    let alerts = store::list_alerts(
        &state.pool,
        caller.user_id,
        tracker.as_deref(),
        since,
        limit,
    )
    .await?;
    let next_since = alerts.last().map_or(since, |a| a.id);
    Ok(json(
        &serde_json::json!({"alerts": alerts, "next_since": next_since}),
        StatusCode::OK,
    ))
}

async fn ack(state: HttpState, caller: Caller, raw_id: String) -> Result<Response, ApiError> {
    let id = path_id(&raw_id)?;
    let (_, owned) = store::alert_for(&state.pool, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !owned {
        return Err(ApiError::Forbidden(
            "only the tracker's owner may acknowledge its alerts".to_owned(),
        ));
    }
    caller.require_write()?;
    let view = store::ack_alert(&state.pool, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(json(&view, StatusCode::OK))
}

/// The alert routes.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let signed_in = with_caller(state);
    let list = warp::path!("api" / "v1" / "alerts")
        .and(warp::get())
        .and(signed_in.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|s, c, q| async move { respond(list(s, c, q).await) })
        .boxed();
    let ack = warp::path!("api" / "v1" / "alerts" / String / "ack")
        .and(warp::post())
        .and(signed_in)
        .then(|id, s, c| async move { respond(ack(s, c, id).await) })
        .boxed();
    list.or(ack).unify().boxed()
}
