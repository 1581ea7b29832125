//! The trackers part of the API under `/api/v1`: claim, list, rename, release, share, and read
//! latest and historical positions — each route checks what the caller may see or change.
//!
//! Another user's tracker answers 404, exactly like one that does not exist; a member (viewer)
//! trying to change something gets 403, since they already know the tracker exists.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};
use gateway::protocol::TrackerId;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{Caller, json_body, with_caller};
use super::error::ApiError;
use super::fields;
use super::query::{
    Span, check_time, day_or_time_param, earliest, latest, limit_param, only_known, span,
    time_param,
};
use super::{HttpState, json_with_status as json, respond};
use crate::trackers::{self, ClaimError, Cursor, MemberError, Role};

/// A tracker id from the path; a malformed one cannot name any tracker, so it is a 404 too.
pub(super) fn tracker_id(raw: &str) -> Result<TrackerId, ApiError> {
    TrackerId::parse(raw).map_err(|_| ApiError::NotFound)
}

/// The caller's role for `tracker`, or 404 when they may not see it.
pub(super) async fn role(
    state: &HttpState,
    caller: &Caller,
    tracker: &TrackerId,
) -> Result<Role, ApiError> {
    trackers::role(&state.pool, caller.user_id, tracker)
        .await?
        .ok_or(ApiError::NotFound)
}

/// 404 unless the caller may see the tracker, 403 unless they own it with a write credential.
async fn require_owner(
    state: &HttpState,
    caller: &Caller,
    tracker: &TrackerId,
) -> Result<(), ApiError> {
    owner_may(caller, role(state, caller, tracker).await?, "change it")
}

/// 403 unless `role` is the owner's and the caller's credential may write; `what` completes
/// "only the tracker's owner may ...".
pub(super) fn owner_may(caller: &Caller, role: Role, what: &str) -> Result<(), ApiError> {
    match role {
        Role::Owner => caller.require_write(),
        Role::Viewer => Err(ApiError::Forbidden(format!(
            "only the tracker's owner may {what}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    tracker_id: String,
    claim_code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrackerPatch {
    /// `null` clears the name; absent leaves it.
    #[serde(default, deserialize_with = "present")]
    pet_name: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`, via `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMember {
    email: String,
}

/// The tracker routes, all under `/api/v1`.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let signed_in = with_caller(state);

    let claim = warp::path!("api" / "v1" / "trackers" / "claim")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<ClaimRequest>())
        .then(|state, caller, body| async move { respond(claim(state, caller, body).await) })
        .boxed();

    let list = warp::path!("api" / "v1" / "trackers")
        .and(warp::get())
        .and(signed_in.clone())
        .then(|state: HttpState, caller: Caller| async move {
            respond(
                trackers::list(&state.pool, caller.user_id)
                    .await
                    .map(|list| json(&serde_json::json!({ "trackers": list }), StatusCode::OK))
                    .map_err(ApiError::from),
            )
        })
        .boxed();

    let get_route = warp::path!("api" / "v1" / "trackers" / String)
        .and(warp::get())
        .and(signed_in.clone())
        .then(|id: String, state, caller| async move { respond(get_one(state, caller, id).await) })
        .boxed();

    let patch = warp::path!("api" / "v1" / "trackers" / String)
        .and(warp::patch())
        .and(signed_in.clone())
        .and(json_body::<TrackerPatch>())
        .then(|id: String, state, caller, body| async move {
            respond(patch(state, caller, id, body).await)
        })
        .boxed();

    let release = warp::path!("api" / "v1" / "trackers" / String)
        .and(warp::delete())
        .and(signed_in.clone())
        .then(|id: String, state, caller| async move { respond(release(state, caller, id).await) })
        .boxed();

    let latest = warp::path!("api" / "v1" / "trackers" / String / "latest")
        .and(warp::get())
        .and(signed_in.clone())
        .then(|id: String, state, caller| async move { respond(get_one(state, caller, id).await) })
        .boxed();

    let positions = warp::path!("api" / "v1" / "trackers" / String / "positions")
        .and(warp::get())
        .and(signed_in.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|id: String, state, caller, query| async move {
            respond(positions(state, caller, id, query).await)
        })
        .boxed();

    let summary = warp::path!("api" / "v1" / "trackers" / String / "summary")
        .and(warp::get())
        .and(signed_in.clone())
        .and(warp::query::<HashMap<String, String>>())
        .then(|id: String, state, caller, query| async move {
            respond(summary(state, caller, id, query).await)
        })
        .boxed();

    let members = warp::path!("api" / "v1" / "trackers" / String / "members")
        .and(warp::get())
        .and(signed_in.clone())
        .then(|id: String, state, caller| async move { respond(members(state, caller, id).await) })
        .boxed();

    let add_member = warp::path!("api" / "v1" / "trackers" / String / "members")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<NewMember>())
        .then(|id: String, state, caller, body| async move {
            respond(add_member(state, caller, id, body).await)
        })
        .boxed();

    let remove_member = warp::path!("api" / "v1" / "trackers" / String / "members" / i64)
        .and(warp::delete())
        .and(signed_in)
        .then(|id: String, member: i64, state, caller| async move {
            respond(remove_member(state, caller, id, member).await)
        })
        .boxed();

    claim
        .or(list)
        .unify()
        .or(latest)
        .unify()
        .or(positions)
        .unify()
        .or(summary)
        .unify()
        .or(members)
        .unify()
        .or(add_member)
        .unify()
        .or(remove_member)
        .unify()
        .or(get_route)
        .unify()
        .or(patch)
        .unify()
        .or(release)
        .unify()
}

async fn claim(state: HttpState, caller: Caller, body: ClaimRequest) -> Result<Response, ApiError> {
    caller.require_write()?;
    let not_claimable = || {
        ApiError::bad_request(
            "no unclaimed tracker with that id and claim code; check both on the collar's card",
            Some("claim_code"),
        )
    };
    let tracker = TrackerId::parse(&body.tracker_id).map_err(|_| not_claimable())?;
    // Checking a claim code is an argon2 verification: it takes a hashing permit like a login.
    let permit = state.auth.passwords.permit().await?;
    let claimed = trackers::claim(&state.pool, caller.user_id, &tracker, &body.claim_code).await;
    drop(permit);
    match claimed {
        Ok(view) => Ok(json(&view, StatusCode::OK)),
        Err(ClaimError::NotClaimable) => Err(not_claimable()),
        Err(ClaimError::Storage(e)) => Err(e.into()),
    }
}

async fn get_one(state: HttpState, caller: Caller, id: String) -> Result<Response, ApiError> {
    let tracker = tracker_id(&id)?;
    let view = trackers::get(&state.pool, caller.user_id, &tracker)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(json(&view, StatusCode::OK))
}

async fn patch(
    state: HttpState,
    caller: Caller,
    id: String,
    body: TrackerPatch,
) -> Result<Response, ApiError> {
    let tracker = tracker_id(&id)?;
    require_owner(&state, &caller, &tracker).await?;
    if let Some(name) = body.pet_name {
        let name = fields::pet_name(name.as_deref())?;
        trackers::set_pet_name(&state.pool, caller.user_id, &tracker, name.as_deref()).await?;
    }
    get_one(state, caller, id).await
}

async fn release(state: HttpState, caller: Caller, id: String) -> Result<Response, ApiError> {
    let tracker = tracker_id(&id)?;
    require_owner(&state, &caller, &tracker).await?;
    trackers::release(&state.pool, caller.user_id, &tracker).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Tolerances `simplify=` accepts, in metres: below GPS noise simplifying is pointless, and
/// beyond a few kilometres nothing of a pet's track would be left.
const MIN_SIMPLIFY_M: f64 = 1.0;
const MAX_SIMPLIFY_M: f64 = 5_000.0;

/// The longest range one export may cover.
const MAX_EXPORT_DAYS: i64 = 366;

/// The longest range one summary request may cover.
const MAX_SUMMARY_DAYS: i64 = 366;

/// What `GET .../positions` asks for, checked before the database is touched.
#[derive(Debug, Clone, Copy)]
pub enum PositionsRequest {
    /// A page of fixes (optionally one per bucket).
    Page(trackers::HistoryQuery),
    /// The whole range, simplified with a tolerance in metres.
    Simplified {
        span: Span,
        bucket: Option<TimeDelta>,
        tolerance_m: f64,
    },
    /// The whole range as a file.
    Export {
        span: Span,
        format: crate::export::Format,
    },
}

/// Parses the query of `GET .../positions`; `now` gives the default range (the last 24 hours).
pub fn positions_request(
    query: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<PositionsRequest, ApiError> {
    only_known(
        query,
        &[
            "from", "to", "limit", "cursor", "bucket", "format", "simplify",
        ],
    )?;
    // Longer spans are allowed for pages (they are paged), not for exports.
    let unbounded = latest().signed_duration_since(earliest());
    let span = span(
        query,
        time_param,
        now + TimeDelta::hours(1),
        TimeDelta::hours(24),
        unbounded,
    )?;
    if let Some(raw) = query.get("format") {
        let format = crate::export::Format::parse(raw).ok_or_else(|| {
            ApiError::bad_request("format is one of csv, geojson, gpx", Some("format"))
        })?;
        if let Some(other) = ["limit", "cursor", "bucket", "simplify"]
            .iter()
            .find(|k| query.contains_key(**k))
        {
            return Err(ApiError::bad_request(
                format!("{other} does not apply to an export, which covers the whole range"),
                Some(other),
            ));
        }
        if span.to.signed_duration_since(span.from) > TimeDelta::days(MAX_EXPORT_DAYS) {
            return Err(ApiError::bad_request(
                format!("an export covers at most {MAX_EXPORT_DAYS} days"),
                Some("from"),
            ));
        }
        return Ok(PositionsRequest::Export { span, format });
    }
    let simplify = query
        .get("simplify")
        .map(|raw| {
            raw.parse::<f64>()
                .ok()
                .filter(|m| (MIN_SIMPLIFY_M..=MAX_SIMPLIFY_M).contains(m))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        format!(
                            "simplify is a tolerance in metres from {MIN_SIMPLIFY_M} to {MAX_SIMPLIFY_M}"
                        ),
                        Some("simplify"),
                    )
                })
        })
        .transpose()?;
    if let Some(other) = ["limit", "cursor"]
        .iter()
        .find(|k| simplify.is_some() && query.contains_key(**k))
    {
        return Err(ApiError::bad_request(
            format!("{other} does not apply with simplify, which returns the whole range at once"),
            Some(other),
        ));
    }
    let limit = limit_param(query, trackers::DEFAULT_PAGE, trackers::MAX_PAGE)?;
    let cursor = query
        .get("cursor")
        .map(|raw| {
            Cursor::parse(raw)
                .filter(|c| check_time(c.0, "cursor").is_ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "cursor is not one this server gave out; pass next_cursor unchanged",
                        Some("cursor"),
                    )
                })
        })
        .transpose()?;
    let bucket = query
        .get("bucket")
        .map(|raw| {
            trackers::parse_bucket(raw).ok_or_else(|| {
                ApiError::bad_request(
                    "bucket is a width from 10s to 7d, e.g. 30s, 5m, 1h or 1d",
                    Some("bucket"),
                )
            })
        })
        .transpose()?;
    if let Some(tolerance_m) = simplify {
        return Ok(PositionsRequest::Simplified {
            span,
            bucket,
            tolerance_m,
        });
    }
    Ok(PositionsRequest::Page(trackers::HistoryQuery {
        from: span.from,
        to: span.to,
        cursor,
        limit,
        bucket,
    }))
}

async fn positions(
    state: HttpState,
    caller: Caller,
    id: String,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let request = positions_request(&query, Utc::now())?;
    let tracker = tracker_id(&id)?;
    role(&state, &caller, &tracker).await?;
    match request {
        PositionsRequest::Export { span, format } => Ok(export(state, tracker, span, format)),
        PositionsRequest::Simplified {
            span,
            bucket,
            tolerance_m,
        } => match trackers::simplified(
            &state.pool,
            &tracker,
            span.from,
            span.to,
            bucket,
            tolerance_m,
        )
        .await?
        {
            Some(track) => Ok(json(&track, StatusCode::OK)),
            None => Err(ApiError::Unprocessable {
                message: format!(
                    "the range holds more than {} fixes to simplify; narrow it or add bucket=",
                    trackers::MAX_SIMPLIFY_INPUT
                ),
                field: Some("from".to_owned()),
            }),
        },
        PositionsRequest::Page(q) => {
            let page = trackers::positions(&state.pool, &tracker, q).await?;
            Ok(json(&page, StatusCode::OK))
        }
    }
}

/// Parses the query of `GET .../summary`: days or times; by default the last 31 days.
pub fn summary_span(query: &HashMap<String, String>, now: DateTime<Utc>) -> Result<Span, ApiError> {
    only_known(query, &["from", "to"])?;
    span(
        query,
        day_or_time_param,
        now + TimeDelta::days(1),
        TimeDelta::days(31),
        TimeDelta::days(MAX_SUMMARY_DAYS),
    )
}

async fn summary(
    state: HttpState,
    caller: Caller,
    id: String,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let span = summary_span(&query, Utc::now())?;
    let tracker = tracker_id(&id)?;
    role(&state, &caller, &tracker).await?;
    let days = trackers::summary(&state.pool, &tracker, span.from, span.to).await?;
    Ok(json(
        &serde_json::json!({ "tracker_id": tracker.as_str(), "days": days }),
        StatusCode::OK,
    ))
}

/// The whole range as CSV, GeoJSON or GPX, streamed; paging and downsampling do not apply.
fn export(
    state: HttpState,
    tracker: TrackerId,
    span: Span,
    format: crate::export::Format,
) -> Response {
    let filename = format!(
        "{}-{}.{}",
        tracker.as_str(),
        span.from.format("%Y%m%dT%H%M%SZ"),
        format.extension()
    );
    let rx = crate::export::stream(state.pool.clone(), tracker, span.from, span.to, format);
    let body = warp::reply::stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let reply = warp::reply::with_header(body, "content-type", format.content_type());
    let reply = warp::reply::with_header(
        reply,
        "content-disposition",
        format!("attachment; filename=\"{filename}\""),
    );
    reply.into_response()
}

async fn members(state: HttpState, caller: Caller, id: String) -> Result<Response, ApiError> {
    let tracker = tracker_id(&id)?;
    role(&state, &caller, &tracker).await?;
    let members = trackers::members(&state.pool, &tracker).await?;
    Ok(json(
        &serde_json::json!({ "members": members }),
        StatusCode::OK,
    ))
}

async fn add_member(
    state: HttpState,
    caller: Caller,
    id: String,
    body: NewMember,
) -> Result<Response, ApiError> {
    let tracker = tracker_id(&id)?;
    require_owner(&state, &caller, &tracker).await?;
    match trackers::add_member(&state.pool, caller.user_id, &tracker, &body.email).await {
        Ok(member) => Ok(json(&member, StatusCode::CREATED)),
        Err(MemberError::NoSuchUser) => Err(ApiError::bad_request(
            "no account with that email; ask them to register first",
            Some("email"),
        )),
        Err(MemberError::IsOwner) => Err(ApiError::Conflict(
            "the owner already sees this tracker".to_owned(),
        )),
        Err(MemberError::Storage(e)) => Err(e.into()),
    }
}

/// The owner removes a member, or a member leaves.
async fn remove_member(
    state: HttpState,
    caller: Caller,
    id: String,
    member: i64,
) -> Result<Response, ApiError> {
    let tracker = tracker_id(&id)?;
    let leaving = member == caller.user_id;
    match role(&state, &caller, &tracker).await? {
        Role::Owner => caller.require_write()?,
        Role::Viewer if leaving => caller.require_write()?,
        Role::Viewer => {
            return Err(ApiError::Forbidden(
                "only the tracker's owner may remove other members".to_owned(),
            ));
        }
    }
    if trackers::remove_member(&state.pool, &tracker, member).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound)
    }
}
