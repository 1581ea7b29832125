//! Operator routes under `/api/v1/admin` (provision, list and revoke trackers), and the dead
//! letters under `/api/v1/dead-letters` that owners and admins read and re-run.
//!
//! Admin routes answer 403 to everyone else: the routes themselves are documented, so hiding
//! them behind a 404 would protect nothing.

use std::collections::HashMap;

use gateway::protocol::TrackerId;
use gateway::storage::trackers::{self as device, ProvisionError};
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{Caller, json_body, with_caller};
use super::error::ApiError;
use super::fields;
use super::query::{check_time, limit_param, only_known, time_param, tracker_filter};
use super::{HttpState, json_with_status as json, respond};
use crate::dead_letters::{self, DeadLetterQuery, Reader};

/// Default and largest page of `GET /api/v1/admin/trackers`.
const DEFAULT_TRACKER_PAGE: i64 = 500;
const MAX_TRACKER_PAGE: i64 = 5000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTracker {
    tracker_id: String,
    #[serde(default)]
    pet_name: Option<String>,
}

impl Caller {
    /// 403 unless the caller is an admin with a credential that may change things.
    fn require_admin(&self) -> Result<(), ApiError> {
        if !self.is_admin {
            return Err(ApiError::Forbidden("this route is for admins".to_owned()));
        }
        Ok(())
    }
}

pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let signed_in = with_caller(state);

    let provision = warp::path!("api" / "v1" / "admin" / "trackers")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<NewTracker>())
        .then(|state, caller, body| async move { respond(provision(state, caller, body).await) })
        .boxed();

    let list = warp::path!("api" / "v1" / "admin" / "trackers")
        .and(warp::get())
        .and(signed_in.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|state, caller, query| async move { respond(list(state, caller, query).await) })
        .boxed();

    let revoke = warp::path!("api" / "v1" / "admin" / "trackers" / String / "revoke")
        .and(warp::post())
        .and(signed_in.clone())
        .then(|id: String, state, caller| async move { respond(revoke(state, caller, id).await) })
        .boxed();

    let retry_one = warp::path!("api" / "v1" / "dead-letters" / i64 / "retry")
        .and(warp::post())
        .and(signed_in.clone())
        .then(|id: i64, state, caller| async move { respond(retry_one(state, caller, id).await) })
        .boxed();

    let retry_many = warp::path!("api" / "v1" / "dead-letters" / "retry")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<RetryFilter>())
        .then(|state, caller, body| async move { respond(retry_many(state, caller, body).await) })
        .boxed();

    let dead = warp::path!("api" / "v1" / "dead-letters")
        .and(warp::get())
        .and(signed_in)
        .and(warp::query::<HashMap<String, String>>())
        .then(
            |state, caller, query| async move { respond(dead_letters(state, caller, query).await) },
        )
        .boxed();

    provision
        .or(list)
        .unify()
        .or(revoke)
        .unify()
        .or(dead)
        .unify()
        .or(retry_one)
        .unify()
        .or(retry_many)
        .unify()
}

/// Which dead letters a bulk retry re-runs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFilter {
    tracker: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<i64>,
}

fn reader(caller: &Caller) -> Reader {
    if caller.is_admin {
        Reader::Admin
    } else {
        Reader::Owner(caller.user_id)
    }
}

async fn retry_one(state: HttpState, caller: Caller, id: i64) -> Result<Response, ApiError> {
    caller.require_write()?;
    let q = DeadLetterQuery {
        tracker: None,
        since: None,
        after: None,
        limit: 1,
    };
    let outcome = dead_letters::retry(
        &state.pool,
        reader(&caller),
        &q,
        Some(id),
        &state.limits,
        &state.clock,
    )
    .await?
    .pop()
    .ok_or(ApiError::NotFound)?;
    Ok(json(&outcome, StatusCode::OK))
}

async fn retry_many(
    state: HttpState,
    caller: Caller,
    body: RetryFilter,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    let limit = body.limit.unwrap_or(dead_letters::MAX_PAGE);
    if !(1..=dead_letters::MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            format!("limit is from 1 to {}", dead_letters::MAX_PAGE),
            Some("limit"),
        ));
    }
    let tracker = match body.tracker.as_deref().map(TrackerId::parse) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(_)) => return Err(ApiError::bad_request("no such tracker", Some("tracker"))),
    };
    let since = body.since.map(|t| check_time(t, "since")).transpose()?;
    let q = DeadLetterQuery {
        tracker,
        since,
        after: None,
        limit,
    };
    let results = dead_letters::retry(
        &state.pool,
        reader(&caller),
        &q,
        None,
        &state.limits,
        &state.clock,
    )
    .await?;
    let stored = results.iter().filter(|r| r.stored).count();
    Ok(json(
        &serde_json::json!({ "retried": results.len(), "stored": stored, "results": results }),
        StatusCode::OK,
    ))
}

async fn provision(
    state: HttpState,
    caller: Caller,
    body: NewTracker,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    caller.require_write()?;
    let tracker = TrackerId::parse(&body.tracker_id)
        .map_err(|e| ApiError::bad_request(format!("tracker_id: {e}"), Some("tracker_id")))?;
    let pet_name = fields::pet_name(body.pet_name.as_deref())?;
    match device::provision(&state.pool, &tracker, pet_name.as_deref()).await {
        Ok(provisioned) => {
            tracing::info!(%tracker, admin = caller.user_id, "tracker provisioned over HTTP");
            Ok(json(&provisioned, StatusCode::CREATED))
        }
        Err(ProvisionError::Exists(_)) => Err(ApiError::Conflict(format!(
            "tracker {tracker} already exists; its secret cannot be shown again"
        ))),
        Err(ProvisionError::NotFound(_)) => Err(ApiError::NotFound),
        Err(ProvisionError::Storage(e)) => Err(e.into()),
    }
}

async fn list(
    state: HttpState,
    caller: Caller,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    caller.require_admin()?;
    only_known(&query, &["after", "limit"])?;
    let limit = limit_param(&query, DEFAULT_TRACKER_PAGE, MAX_TRACKER_PAGE)?;
    // A page starts after a tracker id this server gave out; anything else cannot be one.
    let after = query
        .get("after")
        .map(|raw| {
            TrackerId::parse(raw).map_err(|_| {
                ApiError::bad_request(
                    "after is the next_after of the previous page (a tracker id)",
                    Some("after"),
                )
            })
        })
        .transpose()?;
    let after = after.as_ref().map(TrackerId::as_str);
    let mut trackers = crate::fleet::list_page(&state.pool, after, limit + 1).await?;
    let more = trackers.len() as i64 > limit;
    trackers.truncate(limit as usize);
    let next = more
        .then(|| trackers.last().map(|t| t.tracker_id.clone()))
        .flatten();
    Ok(json(
        &serde_json::json!({ "trackers": trackers, "next_after": next }),
        StatusCode::OK,
    ))
}

async fn revoke(state: HttpState, caller: Caller, id: String) -> Result<Response, ApiError> {
    caller.require_admin()?;
    caller.require_write()?;
    let tracker = TrackerId::parse(&id).map_err(|_| ApiError::NotFound)?;
    match device::revoke(&state.pool, &tracker).await {
        Ok(()) => {
            tracing::info!(%tracker, admin = caller.user_id, "tracker revoked over HTTP");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(ProvisionError::Storage(e)) => Err(e.into()),
        Err(ProvisionError::NotFound(_) | ProvisionError::Exists(_)) => Err(ApiError::NotFound),
    }
}

async fn dead_letters(
    state: HttpState,
    caller: Caller,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    only_known(&query, &["tracker", "since", "after", "limit"])?;
    let reader = reader(&caller);
    let since = time_param(&query, "since")?;
    let after = query
        .get("after")
        .map(|raw| {
            raw.parse::<i64>().map_err(|_| {
                ApiError::bad_request(
                    "after is the id of the last dead letter seen",
                    Some("after"),
                )
            })
        })
        .transpose()?;
    let limit = limit_param(&query, dead_letters::DEFAULT_PAGE, dead_letters::MAX_PAGE)?;
    // Last: a malformed tracker id answers an empty list only once the rest is known good.
    let Some(tracker) = tracker_filter(&query) else {
        return Ok(json(
            &serde_json::json!({ "dead_letters": [] }),
            StatusCode::OK,
        ));
    };
    let q = DeadLetterQuery {
        tracker,
        since,
        after,
        limit,
    };
    let list = dead_letters::list(&state.pool, reader, &q).await?;
    Ok(json(
        &serde_json::json!({ "dead_letters": list }),
        StatusCode::OK,
    ))
}
