//! The endpoints an external broker (EMQX, rmqtt) calls to authenticate collars and authorize
//! their topics: the tracker credentials and topic rules of the embedded broker, behind the
//! broker's shared secret.

mod common;

use common::{TestApp, spawn_app_with};
use gateway::protocol::TrackerId;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

const SHARED: &str = "a-shared-secret-of-at-least-32-bytes-0123456789";
const SERVICE_PASSWORD: &str = "the-service-password";

async fn spawn() -> TestApp {
    spawn_app_with(|c| {
        c.broker_auth.secret = Some(SecretString::from(SHARED));
        c.broker_auth.service_password = Some(SecretString::from(SERVICE_PASSWORD));
    })
    .await
}

async fn provision(app: &TestApp, id: &str) -> String {
    let tracker = TrackerId::parse(id).unwrap();
    gateway::storage::trackers::provision(&app.app.pool, &tracker, None)
        .await
        .unwrap()
        .secret
}

/// POSTs `body` to `/api/v1/broker/{path}` with `secret` as the Bearer token; the status, the
/// content type and the body (JSON, or the bare text as a JSON string).
async fn call(
    app: &TestApp,
    path: &str,
    secret: Option<&str>,
    body: Value,
) -> (StatusCode, String, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/api/v1/broker/{path}", app.app.http_addr))
        .json(&body);
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, content_type, body)
}

/// EMQX's decision for a CONNECT.
async fn emqx_connect(app: &TestApp, client: &str, username: &str, password: &str) -> Value {
    let (status, _, body) = call(
        app,
        "emqx/authenticate",
        Some(SHARED),
        json!({"clientid": client, "username": username, "password": password}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["is_superuser"], false, "{body}");
    body["result"].clone()
}

async fn emqx_may(app: &TestApp, client: &str, action: &str, topic: &str) -> Value {
    let (status, _, body) = call(
        app,
        "emqx/authorize",
        Some(SHARED),
        json!({"clientid": client, "username": client, "topic": topic, "action": action}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["result"].clone()
}

#[tokio::test]
async fn a_collar_with_its_own_secret_is_allowed_and_with_another_denied() {
    let app = spawn().await;
    let rex = provision(&app, "rex").await;
    let fido = provision(&app, "fido").await;

    assert_eq!(emqx_connect(&app, "rex", "rex", &rex).await, "allow");
    assert_eq!(emqx_connect(&app, "rex", "rex", &fido).await, "deny");
    assert_eq!(emqx_connect(&app, "rex", "rex", "").await, "deny");
    assert_eq!(emqx_connect(&app, "nobody", "nobody", &rex).await, "deny");
    // The device contract: client id = username = tracker id.
    assert_eq!(emqx_connect(&app, "rex", "fido", &rex).await, "deny");
    assert_eq!(emqx_connect(&app, "rex", "", &rex).await, "deny");
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_revoked_collar_is_denied_its_connect_and_its_next_publish() {
    let app = spawn().await;
    let rex = provision(&app, "rex").await;
    assert_eq!(
        emqx_may(&app, "rex", "publish", "trackers/rex/telemetry").await,
        "allow"
    );
    gateway::storage::trackers::revoke(&app.app.pool, &TrackerId::parse("rex").unwrap())
        .await
        .unwrap();
    assert_eq!(emqx_connect(&app, "rex", "rex", &rex).await, "deny");
    // Still connected to the broker: its next publish is refused too (EMQX then disconnects it).
    assert_eq!(
        emqx_may(&app, "rex", "publish", "trackers/rex/telemetry").await,
        "deny"
    );
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_or_missing_shared_secret_is_refused_before_anything_is_checked() {
    let app = spawn().await;
    let rex = provision(&app, "rex").await;
    let body = json!({"clientid": "rex", "username": "rex", "password": rex});
    for secret in [None, Some("wrong"), Some(&SHARED[1..])] {
        for path in ["emqx/authenticate", "rmqtt/authenticate"] {
            let (status, _, answer) = call(&app, path, secret, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} {secret:?}: {answer}"
            );
            assert_eq!(answer["error"], "unauthorized", "{answer}");
        }
        let (status, _, _) = call(
            &app,
            "emqx/authorize",
            secret,
            json!({"clientid": "rex", "username": "rex", "topic": "trackers/rex/telemetry", "action": "publish"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_collar_may_publish_and_subscribe_on_its_own_topics_only() {
    let app = spawn().await;
    provision(&app, "rex").await;
    for topic in [
        "trackers/rex/telemetry",
        "trackers/rex/status",
        "trackers/rex/online",
        "trackers/rex/command-results",
    ] {
        assert_eq!(emqx_may(&app, "rex", "publish", topic).await, "allow");
        let other = topic.replace("rex", "fido");
        assert_eq!(emqx_may(&app, "rex", "publish", &other).await, "deny");
    }
    for topic in ["trackers/rex/ack", "trackers/rex/commands"] {
        assert_eq!(emqx_may(&app, "rex", "subscribe", topic).await, "allow");
        assert_eq!(emqx_may(&app, "rex", "publish", topic).await, "deny");
        let other = topic.replace("rex", "fido");
        assert_eq!(emqx_may(&app, "rex", "subscribe", &other).await, "deny");
    }
    for filter in ["#", "trackers/+/commands", "trackers/rex/#"] {
        assert_eq!(emqx_may(&app, "rex", "subscribe", filter).await, "deny");
    }
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn rmqtt_gets_the_bare_word_and_its_numeric_actions() {
    let app = spawn().await;
    let rex = provision(&app, "rex").await;
    let (status, content_type, body) = call(
        &app,
        "rmqtt/authenticate",
        Some(SHARED),
        json!({"clientid": "rex", "username": "rex", "password": rex}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(body, "allow");
    let (_, _, body) = call(
        &app,
        "rmqtt/authenticate",
        Some(SHARED),
        json!({"clientid": "rex", "username": "rex", "password": "nope"}),
    )
    .await;
    assert_eq!(body, "deny");
    // rmqtt's %A: 1 subscribe, 2 publish.
    for (action, topic, want) in [
        ("2", "trackers/rex/telemetry", "allow"),
        ("2", "trackers/fido/telemetry", "deny"),
        ("1", "trackers/rex/commands", "allow"),
        ("1", "trackers/fido/commands", "deny"),
    ] {
        let (status, _, body) = call(
            &app,
            "rmqtt/authorize",
            Some(SHARED),
            json!({"clientid": "rex", "username": "rex", "topic": topic, "action": action}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, want, "{action} {topic}");
    }
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_service_signs_in_with_its_password_and_reads_every_collars_uplink() {
    let app = spawn().await;
    let service = "pettracker.server";
    assert_eq!(
        emqx_connect(&app, "pettracker-ingest-0", service, SERVICE_PASSWORD).await,
        "allow"
    );
    assert_eq!(
        emqx_connect(&app, "pettracker-ingest-0", service, "guess").await,
        "deny"
    );
    let may = |action: &'static str, topic: &'static str| {
        let app = &app;
        async move {
            let (_, _, body) = call(
                app,
                "emqx/authorize",
                Some(SHARED),
                json!({"clientid": "pettracker-ingest-0", "username": service, "topic": topic, "action": action}),
            )
            .await;
            body["result"].clone()
        }
    };
    assert_eq!(
        may("subscribe", "$share/pettracker/trackers/+/telemetry").await,
        "allow"
    );
    assert_eq!(may("publish", "trackers/rex/commands").await, "allow");
    // It never speaks for a collar.
    assert_eq!(may("publish", "trackers/rex/telemetry").await, "deny");
    assert_eq!(may("subscribe", "#").await, "deny");
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_service_password_nobody_signs_in_as_the_service() {
    let app = spawn_app_with(|c| c.broker_auth.secret = Some(SecretString::from(SHARED))).await;
    assert_eq!(
        emqx_connect(&app, "x", "pettracker.server", "").await,
        "deny"
    );
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_malformed_request_is_a_400_naming_the_field() {
    let app = spawn().await;
    let (status, _, body) = call(
        &app,
        "emqx/authorize",
        Some(SHARED),
        json!({"clientid": "rex", "username": "rex", "topic": "t", "action": "delete"}),
    )
    .await;
    common::api::assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "action", "{body}");
    let (status, _, body) = call(
        &app,
        "emqx/authenticate",
        Some(SHARED),
        json!({"clientid": "rex", "username": "rex"}),
    )
    .await;
    common::api::assert_error(status, &body, 400, "bad_request");
    app.app.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_shared_secret_configured_the_endpoints_do_not_exist() {
    let app = common::spawn_app().await;
    for path in ["emqx/authenticate", "rmqtt/authorize"] {
        let (status, _, body) = call(&app, path, Some(SHARED), json!({})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let app2 = spawn().await;
    let (status, _, _) = call(&app2, "mosquitto/authenticate", Some(SHARED), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.app.shutdown().await.unwrap();
    app2.app.shutdown().await.unwrap();
}
