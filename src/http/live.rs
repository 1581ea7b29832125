//! `GET /api/v1/live`: authenticates the caller before the WebSocket upgrade, then hands the connection to a live session (src/live/session.rs).
//!
//! Browsers cannot set headers on a WebSocket, so besides `Authorization: Bearer` the token may
//! come as the `token` query parameter or as a subprotocol `bearer.<token>` offered next to
//! `pettracker.v1` (the server then answers with `pettracker.v1`).

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{Caller, authenticate};
use super::error::ApiError;
use super::{HttpState, with_state};
use crate::live::session::{self, SessionAuth};

/// The subprotocol the feed speaks; a client offering subprotocols must offer this one.
pub const SUBPROTOCOL: &str = "pettracker.v1";
/// Prefix of the subprotocol value that carries the token.
const TOKEN_SUBPROTOCOL_PREFIX: &str = "bearer.";

/// Who connects, and whether to answer with our subprotocol.
struct LiveCaller {
    auth: SessionAuth,
    subprotocol: bool,
}

/// The live feed route.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let shared = with_state(state);
    warp::path!("api" / "v1" / "live")
        .and(warp::get())
        .and(shared.clone())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        .and_then(
            |state: HttpState,
             header: Option<String>,
             query: HashMap<String, String>,
             protocols: Option<String>| async move {
                live_caller(&state, header, &query, protocols.as_deref())
                    .await
                    .map_err(warp::reject::custom)
            },
        )
        .and(shared)
        .and(warp::ws())
        .map(|caller: LiveCaller, state: HttpState, ws: warp::ws::Ws| {
            let hub = state.live.clone();
            let pool = state.pool.clone();
            let auth = caller.auth;
            let reply = ws
                .max_message_size(64 * 1024)
                .on_upgrade(move |socket| session::run(socket, hub, pool, auth));
            let mut response = reply.into_response();
            if caller.subprotocol
                && let Ok(value) = SUBPROTOCOL.parse()
            {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", value);
            }
            debug_assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
            response
        })
        .boxed()
}

async fn live_caller(
    state: &HttpState,
    header: Option<String>,
    query: &HashMap<String, String>,
    protocols: Option<&str>,
) -> Result<LiveCaller, ApiError> {
    if let Some(unknown) = query.keys().find(|k| k.as_str() != "token") {
        return Err(ApiError::bad_request(
            format!("unknown query parameter `{unknown}`"),
            Some(unknown),
        ));
    }
    let offered: Vec<&str> = protocols
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let from_protocol = offered
        .iter()
        .find_map(|p| p.strip_prefix(TOKEN_SUBPROTOCOL_PREFIX));
    if !offered.is_empty() && !offered.contains(&SUBPROTOCOL) {
        return Err(ApiError::bad_request(
            format!("offer the subprotocol `{SUBPROTOCOL}` (or none)"),
            None,
        ));
    }
    let token = match (header, query.get("token"), from_protocol) {
        (Some(header), _, _) => header,
        (None, Some(token), _) => format!("Bearer {token}"),
        (None, None, Some(token)) => format!("Bearer {token}"),
        (None, None, None) => {
            return Err(ApiError::Unauthorized(
                "a token is required: Authorization: Bearer header, `token` query parameter, or subprotocol `bearer.<token>`"
                    .to_owned(),
            ));
        }
    };
    let caller: Caller = authenticate(state, Some(&token)).await?;
    let expires_at = match caller.api_key_id {
        Some(_) => None,
        None => token
            .split_once(' ')
            .and_then(|(_, t)| state.auth.verify_access_token(t.trim()))
            .map(|claims| UNIX_EPOCH + Duration::from_secs(claims.exp)),
    };
    Ok(LiveCaller {
        auth: SessionAuth {
            user_id: caller.user_id,
            expires_at,
        },
        subprotocol: !offered.is_empty(),
    })
}
