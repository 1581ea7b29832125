//! The accounts part of the API under `/api/v1`: register, login, token refresh and logout, `me`,
//! API keys, and the [`authenticated`] filter every other API route uses to know its caller.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::error::ApiError;
use super::fields;
use super::limit::Bucket;
use super::{HttpState, json_with_status, respond, with_state};
use crate::auth::{AccountError, Email, LoginThrottle, Password, Scope, store};

/// Largest JSON body the account routes accept: every one of them is a few short fields.
const MAX_JSON_BODY: u64 = 16 * 1024;

/// Who is calling, as proven by the `Authorization: Bearer` header.
///
/// Get one with [`authenticated`]; a route that changes anything must call
/// [`Caller::require_write`] first, so read-only API keys stay read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: i64,
    pub is_admin: bool,
    /// Access tokens are always [`Scope::Full`]; API keys have the scope they were created with.
    pub scope: Scope,
    /// The API key used, when the caller presented one rather than an access token.
    pub api_key_id: Option<i64>,
}

impl Caller {
    /// 403 unless the caller may change things (a read-only API key may not).
    pub fn require_write(&self) -> Result<(), ApiError> {
        match self.scope {
            Scope::Full => Ok(()),
            Scope::Read => Err(ApiError::Forbidden(
                "this API key is read-only; use a key with scope \"full\"".to_owned(),
            )),
        }
    }
}

/// The shared state and the [`Caller`] ([`authenticated`]): what most routes take.
pub fn with_caller(
    state: HttpState,
) -> impl Filter<Extract = (HttpState, Caller), Error = Rejection> + Clone {
    with_state(state.clone()).and(authenticated(state))
}

/// Extracts the [`Caller`] from `Authorization: Bearer <access token or API key>`.
///
/// A missing, malformed, expired or revoked credential rejects with 401 (JSON body,
/// `WWW-Authenticate: Bearer`); a caller over its rate limit ([`super::limit`]) with 429 and
/// `Retry-After`. Put it after the path and method filters of a route, so a request
/// for another route is never answered with 401.
pub fn authenticated(
    state: HttpState,
) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            let caller = authenticate(&state, header.as_deref())
                .await
                .map_err(warp::reject::custom)?;
            let bucket = match caller.api_key_id {
                Some(key) => Bucket::ApiKey(key),
                None => Bucket::User(caller.user_id),
            };
            state.rate_limit.check(bucket).map_err(|wait| {
                // Whole seconds, rounded up: `Retry-After: 0` would invite an immediate retry.
                let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                warp::reject::custom(ApiError::TooManyRequests { retry_after_secs })
            })?;
            Ok::<_, Rejection>(caller)
        }
    })
}

pub(crate) async fn authenticate(
    state: &HttpState,
    header: Option<&str>,
) -> Result<Caller, ApiError> {
    let header = header.ok_or_else(|| {
        ApiError::Unauthorized("an Authorization: Bearer header is required".to_owned())
    })?;
    let token = header
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".to_owned())
        })?;
    if token.starts_with(crate::auth::tokens::API_KEY_PREFIX) {
        let owner = store::authenticate_api_key(&state.pool, token)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked API key".to_owned()))?;
        return Ok(Caller {
            user_id: owner.user_id,
            is_admin: owner.is_admin,
            scope: owner.scope,
            api_key_id: Some(owner.key_id),
        });
    }
    let invalid = || ApiError::Unauthorized("invalid or expired access token".to_owned());
    let claims = state.auth.verify_access_token(token).ok_or_else(invalid)?;
    Ok(Caller {
        user_id: claims.sub.parse().map_err(|_| invalid())?,
        is_admin: claims.admin,
        scope: claims.scope,
        api_key_id: None,
    })
}

/// A JSON body of type `T`, at most [`MAX_JSON_BODY`] bytes. Anything else rejects with a 400
/// that says what is wrong and, when it can, which field (411/413 for a missing or oversize body).
pub fn json_body<T: DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(MAX_JSON_BODY)
        .and(warp::body::bytes())
        .and_then(|body: warp::hyper::body::Bytes| async move {
            parse_json::<T>(&body).map_err(warp::reject::custom)
        })
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        ApiError::BadRequest {
            message: format!("invalid JSON body: {}", e.inner()),
            field,
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"), None))?;
    // Read again as a tree, whatever `T` keeps of it: the body is small (MAX_JSON_BODY) and
    // already known to be valid JSON, and this way no route can forget the check.
    let tree: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}"), None))?;
    fields::no_control_characters(&tree)?;
    Ok(value)
}

/// The account routes, all under `/api/v1`.
pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let state_only = with_state(state.clone());
    let client = super::client::client_ip(state.trusted_proxies.clone());
    let signed_in = with_caller(state);

    let register = warp::path!("api" / "v1" / "auth" / "register")
        .and(warp::post())
        .and(state_only.clone())
        .and(client.clone())
        .and(json_body::<Credentials>())
        .then(|state, client, body| async move { respond(register(state, client, body).await) })
        .boxed();

    let login = warp::path!("api" / "v1" / "auth" / "login")
        .and(warp::post())
        .and(state_only.clone())
        .and(client)
        .and(json_body::<Credentials>())
        .then(|state, client, body| async move { respond(login(state, client, body).await) })
        .boxed();

    let refresh = warp::path!("api" / "v1" / "auth" / "refresh")
        .and(warp::post())
        .and(state_only.clone())
        .and(json_body::<RefreshRequest>())
        .then(|state, body| async move { respond(refresh(state, body).await) })
        .boxed();

    let logout = warp::path!("api" / "v1" / "auth" / "logout")
        .and(warp::post())
        .and(state_only.clone())
        .and(json_body::<RefreshRequest>())
        .then(|state, body| async move { respond(logout(state, body).await) })
        .boxed();

    let me = warp::path!("api" / "v1" / "me")
        .and(warp::get())
        .and(signed_in.clone())
        .then(|state, caller| async move { respond(me(state, caller).await) })
        .boxed();

    let create_key = warp::path!("api" / "v1" / "api-keys")
        .and(warp::post())
        .and(signed_in.clone())
        .and(json_body::<NewApiKey>())
        .then(
            |state, caller, body| async move { respond(create_api_key(state, caller, body).await) },
        )
        .boxed();

    let list_keys = warp::path!("api" / "v1" / "api-keys")
        .and(warp::get())
        .and(signed_in.clone())
        .then(|state, caller| async move { respond(list_api_keys(state, caller).await) })
        .boxed();

    let delete_key = warp::path!("api" / "v1" / "api-keys" / i64)
        .and(warp::delete())
        .and(signed_in)
        .then(|id, state, caller| async move { respond(delete_api_key(state, caller, id).await) })
        .boxed();

    register
        .or(login)
        .unify()
        .or(refresh)
        .unify()
        .or(logout)
        .unify()
        .or(me)
        .unify()
        .or(create_key)
        .unify()
        .or(list_keys)
        .unify()
        .or(delete_key)
        .unify()
        .boxed()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Credentials {
    email: String,
    password: SecretString,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshRequest {
    refresh_token: SecretString,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    name: String,
    scope: Scope,
}

async fn register(
    state: HttpState,
    client: Option<IpAddr>,
    body: Credentials,
) -> Result<Response, ApiError> {
    state.auth.passwords.admit(client)?;
    let email = Email::parse(&body.email)?;
    let password = Password::parse(&body.password, &email)?;
    let is_admin = state.auth.is_admin_email(&email.normalized());
    let user = {
        // Held while the password is hashed (inside create_user), so hashes never pile up.
        let _permit = state.auth.passwords.permit().await?;
        store::create_user(&state.pool, &email, &password, is_admin).await?
    };
    if is_admin {
        tracing::info!(
            user_id = user.id,
            "admin account registered (auth.admin_emails)"
        );
    }
    Ok(json_with_status(
        &serde_json::json!({"id": user.id, "email": user.email}),
        StatusCode::CREATED,
    ))
}

async fn login(
    state: HttpState,
    client: Option<IpAddr>,
    body: Credentials,
) -> Result<Response, ApiError> {
    let user = check_login(&state, client, &body).await?;
    let refresh_token =
        store::issue_refresh_token(&state.pool, user.id, state.auth.refresh_ttl).await?;
    token_response(&state, user.id, user.is_admin, refresh_token)
}

/// The account whose email and password these are, within the login throttle; the one check
/// of both ways to log in (this route, and the app's cookie session in [`super::session`]).
pub(super) async fn check_login(
    state: &HttpState,
    client: Option<IpAddr>,
    body: &Credentials,
) -> Result<store::User, ApiError> {
    // Every attempt counts against the address, whatever the email: rotating emails must not
    // get around the throttle below, which counts failures per (email, address).
    state.auth.passwords.admit(client)?;
    let email = Email::parse(&body.email)?;
    let throttle_key = LoginThrottle::key(&email.normalized(), client);
    // Checked before the password, so a throttled guesser costs us no hashing either.
    if let Err(wait) = state.auth.throttle.check(&throttle_key) {
        return Err(ApiError::TooManyRequests {
            retry_after_secs: wait.as_secs().max(1),
        });
    }
    let credentials = store::find_credentials(&state.pool, &email).await?;
    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let valid = {
        let _permit = state.auth.passwords.permit().await?;
        crate::auth::verify_password(stored, &body.password).await?
    };
    let user = match credentials {
        Some(c) if valid => c.user,
        // One answer for an unknown email and a wrong password: which one it was stays secret.
        _ => {
            state.auth.throttle.record_failure(&throttle_key);
            return Err(AccountError::BadCredentials.into());
        }
    };
    state.auth.throttle.record_success(&throttle_key);
    Ok(user)
}

fn token_response(
    state: &HttpState,
    user_id: i64,
    is_admin: bool,
    refresh_token: String,
) -> Result<Response, ApiError> {
    let access_token = state
        .auth
        .issue_access_token(user_id, is_admin)
        .map_err(|e| ApiError::Internal(format!("cannot sign an access token: {e}")))?;
    Ok(json_with_status(
        &serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": state.auth.access_ttl.as_secs(),
            "refresh_token": refresh_token,
        }),
        StatusCode::OK,
    ))
}

async fn refresh(state: HttpState, body: RefreshRequest) -> Result<Response, ApiError> {
    let (user, refresh_token) = store::rotate_refresh_token(
        &state.pool,
        body.refresh_token.expose_secret(),
        state.auth.refresh_ttl,
    )
    .await?;
    token_response(&state, user.id, user.is_admin, refresh_token)
}

async fn logout(state: HttpState, body: RefreshRequest) -> Result<Response, ApiError> {
    store::revoke_refresh_token(&state.pool, body.refresh_token.expose_secret()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn me(state: HttpState, caller: Caller) -> Result<Response, ApiError> {
    // A token outlives a deleted account by at most its lifetime; it then proves nobody.
    let user = store::get_user(&state.pool, caller.user_id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account no longer exists".to_owned()))?;
    Ok(json_with_status(&user, StatusCode::OK))
}

async fn create_api_key(
    state: HttpState,
    caller: Caller,
    body: NewApiKey,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    let name = fields::name(&body.name)?;
    let (info, key) = store::create_api_key(&state.pool, caller.user_id, &name, body.scope).await?;
    Ok(json_with_status(
        &serde_json::json!({
            "id": info.id,
            "name": info.name,
            "scope": info.scope,
            "created_at": info.created_at,
            "key": key,
        }),
        StatusCode::CREATED,
    ))
}

async fn list_api_keys(state: HttpState, caller: Caller) -> Result<Response, ApiError> {
    let keys = store::list_api_keys(&state.pool, caller.user_id).await?;
    Ok(json_with_status(&keys, StatusCode::OK))
}

async fn delete_api_key(state: HttpState, caller: Caller, id: i64) -> Result<Response, ApiError> {
    caller.require_write()?;
    store::revoke_api_key(&state.pool, caller.user_id, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_caller_may_not_write() {
        let caller = Caller {
            user_id: 1,
            is_admin: false,
            scope: Scope::Read,
            api_key_id: Some(3),
        };
        assert!(matches!(
            caller.require_write(),
            Err(ApiError::Forbidden(_))
        ));
        let caller = Caller {
            scope: Scope::Full,
            ..caller
        };
        assert!(caller.require_write().is_ok());
    }

    #[test]
    fn bad_json_names_the_field_at_fault() {
        let err = parse_json::<NewApiKey>(br#"{"name": "x", "scope": "admin"}"#).unwrap_err();
        match err {
            ApiError::BadRequest { field, message } => {
                assert_eq!(field.as_deref(), Some("scope"));
                assert!(message.contains("full"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(parse_json::<NewApiKey>(b"{").is_err());
        assert!(parse_json::<NewApiKey>(br#"{"name":"x","scope":"read"} trailing"#).is_err());
    }
}
