//! The endpoints an external MQTT broker calls to authenticate its clients and authorize their publishes and subscriptions, under `/api/v1/broker/{broker}/` (broker-config/ configures EMQX and rmqtt to call them).
//!
//! They answer with the same credentials (the trackers' hashed secrets) and the same topic
//! rules (`gateway::broker::access`) as the embedded broker, so a collar is treated alike
//! whichever broker it reached. The broker proves itself with a shared secret
//! (`broker_auth.secret`, sent as `Authorization: Bearer`); without one configured the
//! endpoints do not exist (404): a server running the embedded broker has nothing to expose.
//!
//! The answer is always `allow` or `deny`, never `ignore`: pettracker is the only authority on
//! collars, and an `ignore` would let the broker fall through to whatever comes next in its
//! chain. Problems with the request itself (wrong shared secret, malformed body) are 4xx,
//! which both brokers read as "ignore": configure them to deny when nothing allowed
//! (broker-config/README.md).

use gateway::broker::access::{self, Action};
use gateway::broker::{METRIC_ACL_DENIED, METRIC_AUTH_FAILED};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::json_body;
use super::error::ApiError;
use super::{HttpState, respond, with_state};
use crate::config::BrokerAuthConfig;

/// The shared secret and the service identity, ready to compare against.
pub struct BrokerAuth {
    /// SHA-256 of the shared secret: comparing digests of equal length keeps the comparison's
    /// time independent of the secret's length too. `None`: the endpoints are off.
    secret: Option<[u8; 32]>,
    service_username: String,
    service_password: Option<[u8; 32]>,
}

impl BrokerAuth {
    pub fn from_config(config: &BrokerAuthConfig) -> BrokerAuth {
        BrokerAuth {
            secret: config.secret.as_ref().map(digest),
            service_username: config.service_username.clone(),
            service_password: config.service_password.as_ref().map(digest),
        }
    }

    fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether `authorization` is `Bearer <the shared secret>`.
    fn is_broker(&self, authorization: Option<&str>) -> bool {
        let (Some(expected), Some(given)) = (
            &self.secret,
            authorization.and_then(|h| h.strip_prefix("Bearer ")),
        ) else {
            return false;
        };
        bool::from(expected.ct_eq(&digest_bytes(given.as_bytes())))
    }

    fn is_service(&self, username: &str) -> bool {
        username == self.service_username
    }

    fn service_password_matches(&self, password: &str) -> bool {
        self.service_password
            .is_some_and(|expected| bool::from(expected.ct_eq(&digest_bytes(password.as_bytes()))))
    }
}

fn digest(secret: &SecretString) -> [u8; 32] {
    digest_bytes(secret.expose_secret().as_bytes())
}

fn digest_bytes(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Which broker is asking: each wants its answer in its own shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    /// EMQX 5: `application/json`, `{"result": "allow" | "deny", "is_superuser": false}`.
    Emqx,
    /// rmqtt's auth-http plugin: `text/plain`, the bare word. Its JSON form exists only since
    /// 0.8 and older releases read any body they do not know as "allow"; the word means the
    /// same to every release.
    Rmqtt,
}

impl Broker {
    fn parse(segment: &str) -> Option<Broker> {
        match segment {
            "emqx" => Some(Broker::Emqx),
            "rmqtt" => Some(Broker::Rmqtt),
            _ => None,
        }
    }

    fn answer(self, allowed: bool) -> Response {
        let result = if allowed { "allow" } else { "deny" };
        match self {
            Broker::Emqx => warp::reply::json(&serde_json::json!({
                "result": result,
                // Superusers skip authorization; no client of ours needs to.
                "is_superuser": false,
            }))
            .into_response(),
            Broker::Rmqtt => {
                warp::reply::with_header(result, "content-type", "text/plain; charset=utf-8")
                    .into_response()
            }
        }
    }
}

/// A CONNECT to check (EMQX: `${clientid}`, `${username}`, `${password}`; rmqtt: `%c`, `%u`,
/// `%P`). A client without username or password is sent as "".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthenticateRequest {
    clientid: String,
    username: String,
    password: String,
}

/// A publish or subscription to check, by a client the broker has authenticated.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeRequest {
    clientid: String,
    username: String,
    /// The topic of a publish or the filter of a subscription.
    topic: String,
    action: ActionParam,
}

/// EMQX's `${action}` is `publish` or `subscribe`; rmqtt's `%A` is `2` or `1`.
#[derive(Debug, Clone, Copy, Deserialize)]
enum ActionParam {
    #[serde(rename = "publish", alias = "2")]
    Publish,
    #[serde(rename = "subscribe", alias = "1")]
    Subscribe,
}

impl From<ActionParam> for Action {
    fn from(a: ActionParam) -> Action {
        match a {
            ActionParam::Publish => Action::Publish,
            ActionParam::Subscribe => Action::Subscribe,
        }
    }
}

pub fn routes(
    state: HttpState,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let auth = state.broker_auth.clone();
    // Checked before the method and the body, so that with no secret configured nothing
    // here answers anything but 404, and a caller without the secret learns nothing else.
    let from_broker = warp::path!("api" / "v1" / "broker" / String / ..)
        .and_then(move |segment: String| {
            let auth = auth.clone();
            async move {
                match Broker::parse(&segment) {
                    Some(broker) if auth.enabled() => Ok((broker, auth)),
                    _ => Err(warp::reject::not_found()),
                }
            }
        })
        .untuple_one()
        .and(warp::header::optional::<String>("authorization"))
        .and_then(
            |broker: Broker, auth: std::sync::Arc<BrokerAuth>, header: Option<String>| async move {
                if auth.is_broker(header.as_deref()) {
                    Ok(broker)
                } else {
                    Err(warp::reject::custom(ApiError::Unauthorized(
                        "these endpoints are for the MQTT broker: send its shared secret \
                         (broker_auth.secret) as a Bearer token"
                            .to_owned(),
                    )))
                }
            },
        );

    let authenticate = from_broker
        .clone()
        .and(warp::path!("authenticate"))
        .and(warp::post())
        .and(with_state(state.clone()))
        .and(json_body::<AuthenticateRequest>())
        .then(|broker: Broker, state: HttpState, body| async move {
            respond(authenticate(&state, body).await.map(|ok| broker.answer(ok)))
        })
        .boxed();

    let authorize = from_broker
        .and(warp::path!("authorize"))
        .and(warp::post())
        .and(with_state(state))
        .and(json_body::<AuthorizeRequest>())
        .then(|broker: Broker, state: HttpState, body| async move {
            respond(authorize(&state, &body).await.map(|ok| broker.answer(ok)))
        })
        .boxed();

    authenticate.or(authorize).unify()
}

/// Whether the CONNECT carries the service's credentials or a live tracker's.
async fn authenticate(state: &HttpState, req: AuthenticateRequest) -> Result<bool, ApiError> {
    let auth = &state.broker_auth;
    let allowed = if auth.is_service(&req.username) {
        auth.service_password_matches(&req.password)
    } else {
        let username = Some(req.username.as_str()).filter(|u| !u.is_empty());
        match access::device_identity(&req.clientid, username) {
            Ok(tracker) => gateway::storage::trackers::authenticate(
                &state.pool,
                &tracker,
                req.password.as_bytes(),
            )
            .await
            .map_err(|err| {
                tracing::warn!(%err, %tracker, "cannot check device credentials for the broker");
                // 5xx: the broker takes it as "ignore", refuses the CONNECT with nothing else
                // allowing it, and the collar retries later.
                ApiError::Unavailable {
                    retry_after_secs: 1,
                }
            })?,
            Err(why) => {
                tracing::info!(client_id = %preview(&req.clientid), %why, "broker client refused");
                false
            }
        }
    };
    if !allowed {
        metrics::counter!(METRIC_AUTH_FAILED).increment(1);
    }
    Ok(allowed)
}

/// Whether the client may do what it asks. The broker only asks about clients it has
/// authenticated (through [`authenticate`]), so their username is the one checked there. A
/// collar revoked since it connected is refused (and, with EMQX's `deny_action = disconnect`,
/// disconnected).
async fn authorize(state: &HttpState, req: &AuthorizeRequest) -> Result<bool, ApiError> {
    let auth = &state.broker_auth;
    let action = Action::from(req.action);
    let allowed = if auth.is_service(&req.username) {
        access::service_may(action, &req.topic)
    } else {
        let username = Some(req.username.as_str()).filter(|u| !u.is_empty());
        match access::device_identity(&req.clientid, username) {
            Ok(tracker) if access::device_may(&tracker, action, &req.topic) => {
                gateway::storage::trackers::is_live(&state.pool, &tracker)
                    .await
                    .map_err(|err| {
                        tracing::warn!(%err, %tracker, "cannot check a tracker for the broker");
                        ApiError::Unavailable {
                            retry_after_secs: 1,
                        }
                    })?
            }
            _ => false,
        }
    };
    if !allowed {
        let action = match action {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        };
        metrics::counter!(METRIC_ACL_DENIED, "action" => action).increment(1);
        tracing::info!(client_id = %preview(&req.clientid), topic = %preview(&req.topic), action, "broker client's request refused: not its topic, or revoked");
    }
    Ok(allowed)
}

/// The start of a value a client chose, for logs.
fn preview(s: &str) -> String {
    s.chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .to_string()
}
