//! The web app's session under `/api/v1/auth/session`: the same login and refresh-token rotation
//! as `/auth/login` and `/auth/refresh`, with the refresh token kept in an `HttpOnly`,
//! `SameSite=Strict` cookie that only these routes receive, so no script on the page can read it.
//!
//! The page holds only the short-lived access token, in memory. `SameSite=Strict` keeps other
//! sites from making the browser send the cookie; the JSON routes stay as they were for other
//! clients.

use secrecy::SecretString;
use warp::http::StatusCode;
use warp::http::header::{HeaderValue, SET_COOKIE};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::{Credentials, check_login, json_body};
use super::error::ApiError;
use super::{HttpState, json_with_status, respond};
use crate::auth::store;

/// The cookie holding the refresh token.
pub const COOKIE: &str = "pettracker_refresh";
/// A cookie without a secret that scripts may read, set and cleared with [`COOKIE`]: the page
/// asks to resume a session only when there is one, instead of provoking a 401 on every visit.
pub const HINT_COOKIE: &str = "pettracker_session";
/// The only path the browser sends it to.
pub const COOKIE_PATH: &str = "/api/v1/auth/session";

/// The session routes.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let client = super::client::client_ip(state.trusted_proxies.clone());
    let with_state = warp::any().map(move || state.clone());
    let secure = warp::header::optional::<String>("x-forwarded-proto")
        .and(warp::header::optional::<String>("origin"))
        .map(|proto: Option<String>, origin: Option<String>| {
            // pettracker speaks plain HTTP; behind a TLS proxy (or seen from an https page)
            // the cookie is marked Secure so it never travels unencrypted.
            proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
                || origin.is_some_and(|o| o.starts_with("https://"))
        });

    let open = warp::path!("api" / "v1" / "auth" / "session")
        .and(warp::post())
        .and(with_state.clone())
        .and(client)
        .and(secure)
        .and(json_body::<Credentials>())
        .then(|state, client, secure, body| async move {
            respond(open(state, client, secure, body).await)
        })
        .boxed();

    let refresh = warp::path!("api" / "v1" / "auth" / "session" / "refresh")
        .and(warp::post())
        .and(with_state.clone())
        .and(secure)
        .and(warp::cookie::optional::<String>(COOKIE))
        .then(|state, secure, cookie| async move {
            match refresh(state, secure, cookie).await {
                Ok(response) => response,
                // A cookie that no longer works is removed, so the browser stops sending it.
                Err(e) => clear_cookies(e.to_response(), secure),
            }
        })
        .boxed();

    let close = warp::path!("api" / "v1" / "auth" / "session")
        .and(warp::delete())
        .and(with_state)
        .and(secure)
        .and(warp::cookie::optional::<String>(COOKIE))
        .then(|state, secure, cookie| async move { respond(close(state, secure, cookie).await) })
        .boxed();

    open.or(refresh).unify().or(close).unify().boxed()
}

async fn open(
    state: HttpState,
    client: Option<std::net::IpAddr>,
    secure: bool,
    body: Credentials,
) -> Result<Response, ApiError> {
    let user = check_login(&state, client, &body).await?;
    let refresh_token =
        store::issue_refresh_token(&state.pool, user.id, state.auth.refresh_ttl).await?;
    session_response(&state, &user, &refresh_token, secure)
}

async fn refresh(
    state: HttpState,
    secure: bool,
    cookie: Option<String>,
) -> Result<Response, ApiError> {
    let token = cookie.filter(|c| !c.is_empty()).ok_or_else(|| {
        ApiError::Unauthorized("no session: sign in (the session cookie is missing)".to_owned())
    })?;
    // Rotation and reuse detection as for `/auth/refresh`: a cookie replayed after its rotation
    // ends the whole session.
    let (user, fresh) =
        store::rotate_refresh_token(&state.pool, &token, state.auth.refresh_ttl).await?;
    session_response(&state, &user, &fresh, secure)
}

async fn close(
    state: HttpState,
    secure: bool,
    cookie: Option<String>,
) -> Result<Response, ApiError> {
    if let Some(token) = cookie.filter(|c| !c.is_empty()) {
        store::revoke_refresh_token(&state.pool, &token).await?;
    }
    Ok(clear_cookies(
        StatusCode::NO_CONTENT.into_response(),
        secure,
    ))
}

/// The access token and who it is for; the refresh token only in the cookie.
fn session_response(
    state: &HttpState,
    user: &store::User,
    refresh_token: &str,
    secure: bool,
) -> Result<Response, ApiError> {
    let access_token = state
        .auth
        .issue_access_token(user.id, user.is_admin)
        .map_err(|e| ApiError::Internal(format!("cannot sign an access token: {e}")))?;
    let response = json_with_status(
        &serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": state.auth.access_ttl.as_secs(),
            "user": user,
        }),
        StatusCode::OK,
    );
    let max_age = state.auth.refresh_ttl.as_secs();
    let cookie = session_cookie(
        &SecretString::from(refresh_token.to_owned()),
        max_age,
        secure,
    );
    let response = with_cookie(response, &cookie);
    Ok(with_cookie(response, &hint_cookie(max_age, secure)))
}

fn session_cookie(token: &SecretString, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={}; Path={COOKIE_PATH}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}",
        secrecy::ExposeSecret::expose_secret(token)
    )
}

fn hint_cookie(max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{HINT_COOKIE}=1; Path=/; Max-Age={max_age_secs}; SameSite=Strict{secure}")
}

fn clear_cookies(response: Response, secure: bool) -> Response {
    let secure = if secure { "; Secure" } else { "" };
    let response = with_cookie(
        response,
        &format!("{COOKIE}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; SameSite=Strict{secure}"),
    );
    with_cookie(
        response,
        &format!("{HINT_COOKIE}=; Path=/; Max-Age=0; SameSite=Strict{secure}"),
    )
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_out_of_script_reach_and_sent_to_the_session_routes_only() {
        let cookie = session_cookie(&SecretString::from("abc".to_owned()), 60, false);
        assert_eq!(
            cookie,
            "pettracker_refresh=abc; Path=/api/v1/auth/session; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        assert!(
            session_cookie(&SecretString::from("abc".to_owned()), 60, true).ends_with("; Secure")
        );
        let hint = hint_cookie(60, false);
        assert!(
            !hint.contains("HttpOnly") && hint.starts_with("pettracker_session=1;"),
            "{hint}"
        );
        let cleared = clear_cookies(StatusCode::NO_CONTENT.into_response(), false);
        let cookies: Vec<_> = cleared.headers().get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies.len(), 2);
        assert!(
            cookies
                .iter()
                .all(|c| c.to_str().unwrap().contains("Max-Age=0"))
        );
    }
}
