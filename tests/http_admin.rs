//! Operators over real HTTP: provisioning and revoking collars, dead letters for owners and
//! admins, and the per-credential rate limit — a whole app on port 0 with a fresh database.

mod common;

use std::time::Duration;

use common::api::{Api, assert_error};
use common::{TestApp, connect, fix_json, options, spawn_app_with, wait_for};
use reqwest::{Method, StatusCode};
use rumqttc::{Packet, QoS};
use serde_json::{Value, json};

const ROOT: &str = "root@example.com";

async fn app_with_admin() -> TestApp {
    spawn_app_with(|c| c.auth.admin_emails = vec![ROOT.to_owned()]).await
}

/// Registers and logs in; returns the access token.
async fn user(api: &Api, email: &str) -> String {
    api.register(email).await;
    api.login(email).await.0
}

async fn provision(api: &Api, admin: &str, id: &str) -> (StatusCode, Value) {
    api.post("/admin/trackers", Some(admin), json!({"tracker_id": id}))
        .await
}

#[tokio::test]
async fn an_admin_provisions_a_collar_over_http_that_connects_publishes_and_is_claimed() {
    let app = app_with_admin().await;
    let api = Api::new(&app);
    let root = user(&api, ROOT).await;
    let (status, body) = api
        .post(
            "/admin/trackers",
            Some(&root),
            json!({"tracker_id": "rex", "pet_name": "Rex"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["secret"].as_str().unwrap();
    let claim_code = body["claim_code"].as_str().unwrap();

    // The secret is the collar's MQTT password...
    let (client, mut events) = connect(options(app.mqtt_port(), "rex", "rex", secret))
        .await
        .unwrap();
    client
        .publish(
            "trackers/rex/telemetry",
            QoS::AtLeastOnce,
            false,
            fix_json(1, 52.5),
        )
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    // ...and the claim code makes an owner.
    let ada = user(&api, "ada@example.com").await;
    let (status, body) = api
        .post(
            "/trackers/claim",
            Some(&ada),
            json!({"tracker_id": "rex", "claim_code": claim_code}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pet_name"], "Rex", "{body}");

    // Shown once: provisioning it again is a conflict, not a new secret.
    let (status, body) = provision(&api, &root, "rex").await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = provision(&api, &root, "no spaces").await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "tracker_id");
    app.stop().await;
}

#[tokio::test]
async fn only_admins_with_a_writing_credential_provision_list_or_revoke() {
    let app = app_with_admin().await;
    let api = Api::new(&app);
    let root = user(&api, ROOT).await;
    let ada = user(&api, "ada@example.com").await;
    let (_, read_key) = api.new_key(&root, "read").await;

    let (status, body) = provision(&api, &ada, "rex").await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = api.get("/admin/trackers", &ada).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = api
        .post("/admin/trackers/rex/revoke", Some(&ada), json!({}))
        .await;
    assert_error(status, &body, 403, "forbidden");
    // An admin's read-only key lists but changes nothing.
    let (status, body) = provision(&api, &read_key, "rex").await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = api.get("/admin/trackers", &read_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api
        .post("/admin/trackers", None, json!({"tracker_id": "rex"}))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_list_pages_through_every_tracker_once_in_id_order() {
    let app = app_with_admin().await;
    let api = Api::new(&app);
    let root = user(&api, ROOT).await;
    for id in ["c", "a", "e", "b", "d"] {
        app.provision(id).await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/admin/trackers?limit=2&after={a}"),
            None => "/admin/trackers?limit=2".to_owned(),
        };
        let (status, body) = api.get(&path, &root).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["trackers"].as_array().unwrap();
        assert!(page.len() <= 2, "{body}");
        seen.extend(
            page.iter()
                .map(|t| t["tracker_id"].as_str().unwrap().to_owned()),
        );
        match body["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e"]);
    let (status, body) = api.get("/admin/trackers?limit=0", &root).await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "limit");
    app.stop().await;
}

#[tokio::test]
async fn a_collar_revoked_over_http_is_disconnected_and_unknown_ones_are_404() {
    let app = app_with_admin().await;
    let api = Api::new(&app);
    let root = user(&api, ROOT).await;
    let secret = app.provision("rex").await;
    let opts = options(app.mqtt_port(), "rex", "rex", &secret);
    let (_client, mut events) = connect(opts.clone()).await.unwrap();

    let (status, body) = api
        .post("/admin/trackers/rex/revoke", Some(&root), json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    assert!(ended.is_ok(), "revoked collar still connected after 10 s");
    assert!(connect(opts).await.is_err());
    let (status, body) = api.get("/admin/trackers", &root).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["trackers"][0]["revoked"], true, "{body}");

    let (status, body) = api
        .post("/admin/trackers/ghost/revoke", Some(&root), json!({}))
        .await;
    assert_error(status, &body, 404, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn owners_read_their_own_dead_letters_and_admins_read_everyone_s() {
    let app = app_with_admin().await;
    let api = Api::new(&app);
    let root = user(&api, ROOT).await;
    let ada = user(&api, "ada@example.com").await;
    let bob = user(&api, "bob@example.com").await;
    let (status, rex) = provision(&api, &root, "rex").await;
    assert_eq!(status, StatusCode::CREATED, "{rex}");
    let (status, body) = api
        .post(
            "/trackers/claim",
            Some(&ada),
            json!({"tracker_id": "rex", "claim_code": rex["claim_code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fido = app.provision("fido").await;

    // rex (Ada's) and fido (nobody's) each send something that cannot be decoded.
    for (id, secret, payload) in [
        (
            "rex",
            rex["secret"].as_str().unwrap(),
            b"{\"lat\": oops".to_vec(),
        ),
        ("fido", fido.as_str(), vec![0xff, 0x00]),
    ] {
        let (client, mut events) = connect(options(app.mqtt_port(), id, id, secret))
            .await
            .unwrap();
        client
            .publish(
                format!("trackers/{id}/telemetry"),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
        wait_for(&mut events, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }

    let (status, body) = api.get("/dead-letters", &ada).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "only rex's: {body}");
    assert_eq!(letters[0]["tracker_id"], "rex");
    assert_eq!(letters[0]["payload_text"], "{\"lat\": oops");
    assert!(letters[0]["reason"].is_string());

    let (status, body) = api.get("/dead-letters", &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["dead_letters"], json!([]), "Bob owns nothing");
    let (_, body) = api.get("/dead-letters?tracker=rex", &bob).await;
    assert_eq!(body["dead_letters"], json!([]), "not even by naming it");

    let (status, body) = api.get("/dead-letters", &root).await;
    assert_eq!(status, StatusCode::OK);
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{body}");
    let fido = letters.iter().find(|l| l["tracker_id"] == "fido").unwrap();
    assert_eq!(fido["payload_base64"], "/wA=", "bytes as sent: {body}");
    assert!(fido.get("payload_text").is_none(), "not UTF-8: {body}");
    let first_id = letters[0]["id"].as_i64().unwrap();
    let (_, body) = api
        .get(&format!("/dead-letters?after={first_id}"), &root)
        .await;
    assert_eq!(body["dead_letters"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = api
        .get("/dead-letters?since=2100-01-01T00:00:00Z", &root)
        .await;
    assert_eq!(body["dead_letters"], json!([]));
    let (status, body) = api.get("/dead-letters?since=yesterday", &root).await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "since");
    app.stop().await;
}

#[tokio::test]
async fn a_credential_past_its_rate_limit_gets_429_with_retry_after_and_others_are_unaffected() {
    let app = spawn_app_with(|c| {
        c.http.rate_limit_per_second = 1;
        c.http.rate_limit_burst = 3;
    })
    .await;
    let api = Api::new(&app);
    let ada = user(&api, "ada@example.com").await;
    let bob = user(&api, "bob@example.com").await;
    for _ in 0..3 {
        let (status, body) = api.get("/trackers", &ada).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, headers, body) = api.call(Method::GET, "/trackers", Some(&ada), None).await;
    assert_error(status, &body, 429, "too_many_requests");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Bob has his own bucket.
    let (status, _) = api.get("/trackers", &bob).await;
    assert_eq!(status, StatusCode::OK);
    // After the wait it says, Ada may go on.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, body) = api.get("/trackers", &ada).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.stop().await;
}
