//! The commands part of the API: send a command to a collar, follow it, change, cancel or
//! re-trigger it. Only a tracker's owner (with a writing credential) commands it; members see
//! its commands; an application (API key) sees the requests it created.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::{Caller, json_body, with_caller};
use super::error::ApiError;
use super::query::{limit_param, only_known, time_param, tracker_filter};
use super::trackers::{owner_may, role, tracker_id};
use super::{HttpState, json_with_status as json, respond};
use crate::commands::{
    self, ChangeError, CommandKind, CommandParams, CommandStatus, CommandView, ListQuery,
    Requester, Viewer,
};
use crate::trackers::{self, Role};

/// Longest lifetime a command may ask for: a week.
const MAX_TTL_SECS: i64 = 7 * 24 * 3600;
const DEFAULT_LIST: i64 = 100;
const MAX_LIST: i64 = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCommand {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    params: Map<String, Value>,
    ttl_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandPatch {
    params: Map<String, Value>,
}

pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let signed_in = with_caller(state);

    let create = warp::path!("api" / "v1" / "trackers" / String / "commands")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<NewCommand>())
        .then(|id: String, state, caller, body| async move {
            respond(create(state, caller, id, body).await)
        })
        .boxed();

    let list = warp::path!("api" / "v1" / "commands")
        .and(warp::get())
        .and(signed_in.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|state, caller, query| async move { respond(list(state, caller, query).await) })
        .boxed();

    let get_one = warp::path!("api" / "v1" / "commands" / String)
        .and(warp::get())
        .and(signed_in.clone())
        .then(|id: String, state, caller| async move {
            respond(
                visible(&state, &caller, &id)
                    .await
                    .map(|(c, _)| json(&c, StatusCode::OK)),
            )
        })
        .boxed();

    let patch = warp::path!("api" / "v1" / "commands" / String)
        .and(warp::patch())
        .and(signed_in.clone())
        .and(json_body::<CommandPatch>())
        .then(|id: String, state, caller, body| async move {
            respond(patch(state, caller, id, body).await)
        })
        .boxed();

    let cancel = warp::path!("api" / "v1" / "commands" / String)
        .and(warp::delete())
        .and(signed_in.clone())
        .then(|id: String, state: HttpState, caller| async move {
            respond(change(&state, &caller, &id, Change::Cancel).await)
        })
        .boxed();

    let retry = warp::path!("api" / "v1" / "commands" / String / "retry")
        .and(warp::post())
        .and(signed_in)
        .then(|id: String, state: HttpState, caller| async move {
            respond(change(&state, &caller, &id, Change::Retry).await)
        })
        .boxed();

    create
        .or(list)
        .unify()
        .or(retry)
        .unify()
        .or(get_one)
        .unify()
        .or(patch)
        .unify()
        .or(cancel)
        .unify()
}

/// 403 unless the caller owns the tracker with a writing credential.
fn require_owner(caller: &Caller, role: Role) -> Result<(), ApiError> {
    owner_may(caller, role, "command it")
}

fn param_error(e: commands::ParamError) -> ApiError {
    ApiError::BadRequest {
        message: format!("params.{}: {}", e.param, e.message),
        field: Some(format!("params.{}", e.param)),
    }
}

async fn create(
    state: HttpState,
    caller: Caller,
    id: String,
    body: NewCommand,
) -> Result<Response, ApiError> {
    let tracker = tracker_id(&id)?;
    require_owner(&caller, role(&state, &caller, &tracker).await?)?;
    let kind = CommandKind::parse(&body.kind).ok_or_else(|| {
        let known: Vec<&str> = CommandKind::ALL.iter().map(|k| k.as_str()).collect();
        ApiError::bad_request(
            format!("unknown command type; known: {}", known.join(", ")),
            Some("type"),
        )
    })?;
    let params = kind.validate(&body.params).map_err(param_error)?;
    let ttl = body
        .ttl_secs
        .unwrap_or(i64::from(state.commands.default_ttl_secs));
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::bad_request(
            format!("ttl_secs is from 1 to {MAX_TTL_SECS} (a week)"),
            Some("ttl_secs"),
        ));
    }
    let by = Requester {
        user_id: caller.user_id,
        api_key_id: caller.api_key_id,
    };
    let command = commands::create(
        &state.pool,
        &tracker,
        kind,
        params,
        i32::try_from(ttl).unwrap_or(i32::MAX),
        by,
    )
    .await?;
    state.commands.wake.created(tracker.as_str());
    Ok(json(&command, StatusCode::CREATED))
}

/// The command with its history and the caller's role for its tracker; 404 unless the caller
/// may see it (an API key: only the requests it created).
async fn visible(
    state: &HttpState,
    caller: &Caller,
    id: &str,
) -> Result<(CommandView, Role), ApiError> {
    // Anything but a command id (1-64 printable characters) names no command: no query for it.
    gateway::protocol::CommandId::parse(id).map_err(|_| ApiError::NotFound)?;
    let command = commands::get(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if caller.api_key_id.is_some() && command.api_key_id != caller.api_key_id {
        return Err(ApiError::NotFound);
    }
    let tracker = tracker_id(&command.tracker_id)?;
    let view = trackers::get(&state.pool, caller.user_id, &tracker)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Commands from before the caller's claim were someone else's.
    if view.claimed_at.is_none_or(|at| command.created_at < at) {
        return Err(ApiError::NotFound);
    }
    let role = view.role;
    Ok((command, role))
}

async fn list(
    state: HttpState,
    caller: Caller,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    only_known(&query, &["tracker", "status", "since", "limit"])?;
    let status = match query.get("status") {
        None => None,
        Some(raw) => Some(CommandStatus::parse(raw).ok_or_else(|| {
            let names: Vec<&str> = CommandStatus::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::bad_request(
                format!("status is one of {}", names.join(", ")),
                Some("status"),
            )
        })?),
    };
    let since = time_param(&query, "since")?;
    let limit = limit_param(&query, DEFAULT_LIST, MAX_LIST)?;
    // Last: a malformed tracker id answers an empty list only once the rest is known good.
    let Some(tracker) = tracker_filter(&query) else {
        // Names no tracker the caller sees: nothing to list.
        return Ok(json(&serde_json::json!({ "commands": [] }), StatusCode::OK));
    };
    let q = ListQuery {
        tracker,
        status,
        since,
        limit,
    };
    let viewer = match caller.api_key_id {
        Some(key_id) => Viewer::ApiKey {
            user_id: caller.user_id,
            key_id,
        },
        None => Viewer::User(caller.user_id),
    };
    let list = commands::list(&state.pool, viewer, &q).await?;
    Ok(json(
        &serde_json::json!({ "commands": list }),
        StatusCode::OK,
    ))
}

async fn patch(
    state: HttpState,
    caller: Caller,
    id: String,
    body: CommandPatch,
) -> Result<Response, ApiError> {
    let (command, role) = visible(&state, &caller, &id).await?;
    require_owner(&caller, role)?;
    let kind = CommandKind::parse(&command.kind)
        .ok_or_else(|| ApiError::Internal(format!("stored command type {}", command.kind)))?;
    let params = kind.validate(&body.params).map_err(param_error)?;
    match commands::set_params(&state.pool, &id, params).await {
        Ok(c) => Ok(json(&c, StatusCode::OK)),
        Err(e) => Err(change_error(
            e,
            "only a queued command's parameters can change",
        )),
    }
}

enum Change {
    Cancel,
    Retry,
}

async fn change(
    state: &HttpState,
    caller: &Caller,
    id: &str,
    change: Change,
) -> Result<Response, ApiError> {
    let (command, role) = visible(state, caller, id).await?;
    require_owner(caller, role)?;
    let result = match change {
        Change::Cancel => commands::cancel(&state.pool, id)
            .await
            .map_err(|e| change_error(e, "only an unfinished command can be cancelled")),
        Change::Retry => commands::retry(&state.pool, id).await.map_err(|e| {
            change_error(
                e,
                "only a failed, expired or cancelled command can be re-triggered",
            )
        }),
    }?;
    if matches!(change, Change::Retry) {
        state.commands.wake.created(&command.tracker_id);
    }
    Ok(json(&result, StatusCode::OK))
}

/// A change the command's state refuses is a 409 naming the state and the rule.
fn change_error(e: ChangeError, rule: &str) -> ApiError {
    if let Some(status) = e.state() {
        return ApiError::Conflict(format!("the command is {status}; {rule}"));
    }
    match e {
        ChangeError::Storage(e) => e.into(),
        other => ApiError::Conflict(format!("{other}; {rule}")),
    }
}
