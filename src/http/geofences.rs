//! Safe zones under `/api/v1/geofences`: a user's named circles and polygons, assigned to trackers the user owns.
//!
//! Another user's geofence is a 404. Assigning a tracker needs ownership of it: a tracker the
//! caller cannot see is a 404, one only shared with them a 403.

use serde::Deserialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection};

use super::auth::{Caller, json_body, with_caller};
use super::error::ApiError;
use super::fields::{self, path_id};
use super::trackers::{role, tracker_id};
use super::{HttpState, json_with_status as json, respond};
use crate::alerts::store;
use crate::alerts::zone::Shape;
use crate::trackers::Role;

/// Most trackers one geofence may be assigned to.
const MAX_TRACKERS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGeofence {
    name: String,
    shape: Value,
    #[serde(default)]
    trackers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GeofencePatch {
    name: Option<String>,
    shape: Option<Value>,
    trackers: Option<Vec<String>>,
}

fn check_shape(shape: &Value) -> Result<Shape, ApiError> {
    Shape::parse(shape).map_err(|m| ApiError::bad_request(m, Some("shape")))
}

/// The trackers, each owned by the caller (404 if not visible, 403 if only shared).
async fn check_trackers(
    state: &HttpState,
    caller: &Caller,
    raw: &[String],
) -> Result<Vec<String>, ApiError> {
    if raw.len() > MAX_TRACKERS {
        return Err(ApiError::bad_request(
            format!("at most {MAX_TRACKERS} trackers"),
            Some("trackers"),
        ));
    }
    let mut ids = Vec::new();
    for raw in raw {
        let id = tracker_id(raw)?;
        match role(state, caller, &id).await? {
            Role::Viewer => {
                return Err(ApiError::Forbidden(format!(
                    "only the owner of {id} may assign it a geofence"
                )));
            }
            Role::Owner => {}
        }
        if !ids.contains(&id.to_string()) {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

async fn create(state: HttpState, caller: Caller, body: NewGeofence) -> Result<Response, ApiError> {
    caller.require_write()?;
    let name = fields::name(&body.name)?;
    let shape = check_shape(&body.shape)?;
    let trackers = check_trackers(&state, &caller, &body.trackers).await?;
    let view =
        store::create_geofence(&state.pool, caller.user_id, &name, &shape, &trackers).await?;
    state.alerts.fences_changed();
    Ok(json(&view, StatusCode::CREATED))
}

async fn list(state: HttpState, caller: Caller) -> Result<Response, ApiError> {
    let fences = store::list_geofences(&state.pool, caller.user_id).await?;
    Ok(json(
        &serde_json::json!({"geofences": fences}),
        StatusCode::OK,
    ))
}

async fn get(state: HttpState, caller: Caller, id: &str) -> Result<Response, ApiError> {
    let view = store::get_geofence(&state.pool, caller.user_id, path_id(id)?)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(json(&view, StatusCode::OK))
}

async fn update(
    state: HttpState,
    caller: Caller,
    raw_id: String,
    patch: GeofencePatch,
) -> Result<Response, ApiError> {
    let id = path_id(&raw_id)?;
    store::get_geofence(&state.pool, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    caller.require_write()?;
    let name = patch.name.as_deref().map(fields::name).transpose()?;
    let shape = patch.shape.as_ref().map(check_shape).transpose()?;
    let trackers = match &patch.trackers {
        Some(raw) => Some(check_trackers(&state, &caller, raw).await?),
        None => None,
    };
    let found = store::update_geofence(
        &state.pool,
        caller.user_id,
        id,
        name.as_deref(),
        shape.as_ref(),
        trackers.as_deref(),
    )
    .await?;
    if !found {
        return Err(ApiError::NotFound);
    }
    state.alerts.fences_changed();
    get(state, caller, &raw_id).await
}

async fn delete(state: HttpState, caller: Caller, raw_id: String) -> Result<Response, ApiError> {
    let id = path_id(&raw_id)?;
    store::get_geofence(&state.pool, caller.user_id, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    caller.require_write()?;
    if !store::delete_geofence(&state.pool, caller.user_id, id).await? {
        return Err(ApiError::NotFound);
    }
    state.alerts.fences_changed();
    Ok(warp::reply::Reply::into_response(StatusCode::NO_CONTENT))
}

/// The geofence routes.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let signed_in = with_caller(state);
    let create = warp::path!("api" / "v1" / "geofences")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<NewGeofence>())
        .then(|s, c, b| async move { respond(create(s, c, b).await) })
        .boxed();
    let list = warp::path!("api" / "v1" / "geofences")
        .and(warp::get())
        .and(signed_in.clone())
        .then(|s, c| async move { respond(list(s, c).await) })
        .boxed();
    let get = warp::path!("api" / "v1" / "geofences" / String)
        .and(warp::get())
        .and(signed_in.clone())
        .then(|id: String, s, c| async move { respond(get(s, c, &id).await) })
        .boxed();
    let update = warp::path!("api" / "v1" / "geofences" / String)
        .and(warp::patch())
        .and(signed_in.clone())
        .and(json_body::<GeofencePatch>())
        .then(|id, s, c, b| async move { respond(update(s, c, id, b).await) })
        .boxed();
    let delete = warp::path!("api" / "v1" / "geofences" / String)
        .and(warp::delete())
        .and(signed_in)
        .then(|id, s, c| async move { respond(delete(s, c, id).await) })
        .boxed();
    create
        .or(list)
        .unify()
        .or(get)
        .unify()
        .or(update)
        .unify()
        .or(delete)
        .unify()
        .boxed()
}
