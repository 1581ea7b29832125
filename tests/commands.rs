//! Commands to collars over real HTTP and real MQTT: a simulated collar (rumqttc) that accepts,
//! completes, fails or ignores them, and every step of the lifecycle as the API reports it.

mod common;

use common::api::{Api, assert_error};
use common::{
    TestApp, connect, eventually, live, options, spawn_app_with, spawn_app_with_clock, wait_for,
};
use gateway::ingest::Clock;
use pettracker::config::Config;
use reqwest::{Method, StatusCode};
use rumqttc::{AsyncClient, EventLoop, Packet, QoS};
use serde_json::{Value, json};

/// A server whose unanswered commands are re-sent after 300 ms, at most twice.
async fn app() -> TestApp {
    spawn_app_with(settings).await
}

fn settings(c: &mut Config) {
    c.commands.resend_after_ms = 300;
    c.commands.max_sends = 2;
    c.ingest.max_future_skew_secs = 1;
}

/// Ada, who owns collar `id`; returns (api, her token, the collar's secret).
async fn owner_with_collar(app: &TestApp, id: &str) -> (Api, String, String) {
    let api = Api::new(app);
    api.register("ada@example.com").await;
    let (token, _) = api.login("ada@example.com").await;
    let secret = claimed_collar(app, &api, &token, id).await;
    (api, token, secret)
}

/// A new collar `id`, claimed by the holder of `token`; returns its secret.
async fn claimed_collar(app: &TestApp, api: &Api, token: &str, id: &str) -> String {
    let collar = gateway::storage::trackers::provision(
        &app.app.pool,
        &gateway::protocol::TrackerId::parse(id).unwrap(),
        None,
    )
    .await
    .unwrap();
    let (status, body) = api
        .post(
            "/trackers/claim",
            Some(token),
            json!({"tracker_id": id, "claim_code": collar.claim_code}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    collar.secret
}

/// A collar connected and subscribed to its commands, as docs/protocol.md says.
async fn collar(app: &TestApp, id: &str, secret: &str) -> (AsyncClient, EventLoop) {
    let (client, mut events) = connect(options(app.mqtt_port(), id, id, secret))
        .await
        .unwrap();
    client
        .subscribe(format!("trackers/{id}/commands"), QoS::AtLeastOnce)
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::SubAck(_)).then_some(())
    })
    .await;
    (client, events)
}

/// The next command the collar receives, as JSON.
async fn next_command(events: &mut EventLoop) -> Value {
    wait_for(events, |p| match p {
        Packet::Publish(p) if p.topic.ends_with("/commands") => {
            Some(serde_json::from_slice::<Value>(&p.payload).unwrap())
        }
        _ => None,
    })
    .await
}

/// Publishes a command result and waits for its PUBACK (it is then stored).
async fn report(client: &AsyncClient, events: &mut EventLoop, id: &str, result: Value) {
    client
        .publish(
            format!("trackers/{id}/command-results"),
            QoS::AtLeastOnce,
            false,
            result.to_string(),
        )
        .await
        .unwrap();
    wait_for(events, |p| matches!(p, Packet::PubAck(_)).then_some(())).await;
}

async fn create(api: &Api, token: &str, tracker: &str, body: Value) -> Value {
    let (status, body) = api
        .post(&format!("/trackers/{tracker}/commands"), Some(token), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Polls the command until its status is `want`.
async fn wait_status(api: &Api, token: &str, id: &str, want: &str) -> Value {
    eventually(&format!("command {id} {want}"), || async {
        let (status, body) = api.get(&format!("/commands/{id}"), token).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] == want {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await
}

fn history(command: &Value) -> Vec<(String, i64)> {
    command["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["status"].as_str().unwrap().to_owned(),
                e["attempt"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_command_is_sent_accepted_and_done_with_every_step_in_its_history() {
    let app = app().await;
    let (api, ada, secret) = owner_with_collar(&app, "rex").await;
    let (client, mut events) = collar(&app, "rex", &secret).await;

    let created = create(&api, &ada, "rex", json!({"type": "buzzer"})).await;
    assert_eq!(created["status"], "queued");
    assert_eq!(
        created["params"],
        json!({"seconds": 3}),
        "defaults filled in"
    );
    let id = created["id"].as_str().unwrap();

    let received = next_command(&mut events).await;
    assert_eq!(
        received,
        json!({"id": id, "type": "buzzer", "params": {"seconds": 3}})
    );
    wait_status(&api, &ada, id, "sent").await;
    report(
        &client,
        &mut events,
        "rex",
        json!({"id": id, "status": "accepted"}),
    )
    .await;
    wait_status(&api, &ada, id, "delivered").await;
    report(
        &client,
        &mut events,
        "rex",
        json!({"id": id, "status": "done"}),
    )
    .await;
    let done = wait_status(&api, &ada, id, "succeeded").await;
    println!("{}", serde_json::to_string_pretty(&done).unwrap());
    assert_eq!(
        history(&done),
        [
            ("queued".to_owned(), 1),
            ("sent".to_owned(), 1),
            ("delivered".to_owned(), 1),
            ("succeeded".to_owned(), 1)
        ]
    );
    // A repeated report (QoS 1 re-delivery) changes nothing and is not a dead letter.
    report(
        &client,
        &mut events,
        "rex",
        json!({"id": id, "status": "done"}),
    )
    .await;
    // A report for a command never sent is a dead letter with the reason.
    report(
        &client,
        &mut events,
        "rex",
        json!({"id": "cmd-nope", "status": "done"}),
    )
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM dead_letters WHERE reason LIKE 'no command with id cmd-nope%'",
        1,
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 1);
    let (_, again) = api.get(&format!("/commands/{id}"), &ada).await;
    assert_eq!(history(&again).len(), 4, "{again}");
    app.stop().await;
}

#[tokio::test]
async fn a_failure_is_recorded_with_the_collar_s_reason_and_can_be_re_triggered() {
    let app = app().await;
    let (api, ada, secret) = owner_with_collar(&app, "rex").await;
    let (client, mut events) = collar(&app, "rex", &secret).await;
    let created = create(
        &api,
        &ada,
        "rex",
        json!({"type": "light", "params": {"seconds": 10}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    next_command(&mut events).await;
    report(
        &client,
        &mut events,
        "rex",
        json!({"id": id, "status": "failed", "reason": "light broken"}),
    )
    .await;
    let failed = wait_status(&api, &ada, id, "failed").await;
    assert_eq!(failed["reason"], "light broken");

    let (status, body) = api
        .post(&format!("/commands/{id}/retry"), Some(&ada), json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["status"].as_str(), body["attempt"].as_i64()),
        (Some("queued"), Some(2))
    );
    let again = next_command(&mut events).await;
    assert_eq!(again["id"], id, "same request, new attempt");
    report(
        &client,
        &mut events,
        "rex",
        json!({"id": id, "status": "done"}),
    )
    .await;
    let done = wait_status(&api, &ada, id, "succeeded").await;
    let steps = history(&done);
    assert_eq!(steps.first(), Some(&("queued".to_owned(), 1)));
    assert_eq!(steps.last(), Some(&("succeeded".to_owned(), 2)));
    assert!(steps.contains(&("failed".to_owned(), 1)), "{done}");
    // A finished command cannot be re-triggered or cancelled.
    let (status, body) = api
        .post(&format!("/commands/{id}/retry"), Some(&ada), json!({}))
        .await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = api.delete(&format!("/commands/{id}"), &ada).await;
    assert_error(status, &body, 409, "conflict");
    app.stop().await;
}

#[tokio::test]
async fn a_command_for_an_offline_collar_waits_queued_and_is_delivered_when_it_connects() {
    let app = app().await;
    let (api, ada, secret) = owner_with_collar(&app, "rex").await;
    let created = create(&api, &ada, "rex", json!({"type": "locate_now"})).await;
    let id = created["id"].as_str().unwrap();
    // Meanwhile a connected collar's command, created later, is sent, re-sent and given up on:
    // the dispatcher has been through several resend intervals since rex's command was made...
    let luna = claimed_collar(&app, &api, &ada, "luna").await;
    let (_luna, mut luna_events) = collar(&app, "luna", &luna).await;
    let other = create(&api, &ada, "luna", json!({"type": "locate_now"})).await;
    next_command(&mut luna_events).await;
    next_command(&mut luna_events).await;
    let other = wait_status(&api, &ada, other["id"].as_str().unwrap(), "failed").await;
    assert_eq!(other["sends"], 2, "{other}");
    // ...and sent nothing to nobody.
    let (_, now) = api.get(&format!("/commands/{id}"), &ada).await;
    assert_eq!(
        (now["status"].as_str(), now["sends"].as_i64()),
        (Some("queued"), Some(0)),
        "{now}"
    );
    // Still queued, so its parameters may change; locate_now takes none.
    let (status, _, body) = api
        .call(
            Method::PATCH,
            &format!("/commands/{id}"),
            Some(&ada),
            Some(json!({"params": {"x": 1}})),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "params.x");

    let (_client, mut events) = collar(&app, "rex", &secret).await;
    let received = next_command(&mut events).await;
    assert_eq!(received["id"], id);
    wait_status(&api, &ada, id, "sent").await;
    app.stop().await;
}

#[tokio::test]
async fn an_ignored_command_is_re_sent_then_fails_with_no_answer() {
    let app = app().await;
    let (api, ada, secret) = owner_with_collar(&app, "rex").await;
    let (_client, mut events) = collar(&app, "rex", &secret).await;
    let created = create(
        &api,
        &ada,
        "rex",
        json!({"type": "buzzer", "params": {"seconds": 1}}),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let first = next_command(&mut events).await;
    let second = next_command(&mut events).await;
    assert_eq!(
        (first["id"].as_str(), second["id"].as_str()),
        (Some(id), Some(id))
    );
    let failed = wait_status(&api, &ada, id, "failed").await;
    assert_eq!(failed["sends"], 2, "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("no answer"),
        "{failed}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_command_expires_when_its_ttl_passes_and_a_cancelled_one_is_never_sent() {
    let app = app().await;
    let (api, ada, secret) = owner_with_collar(&app, "rex").await;
    let short = create(
        &api,
        &ada,
        "rex",
        json!({"type": "locate_now", "ttl_secs": 1}),
    )
    .await;
    let short_id = short["id"].as_str().unwrap();
    let expired = wait_status(&api, &ada, short_id, "expired").await;
    assert!(expired["reason"].is_string());

    let doomed = create(
        &api,
        &ada,
        "rex",
        json!({"type": "set_interval", "params": {"seconds": 60}}),
    )
    .await;
    let doomed_id = doomed["id"].as_str().unwrap();
    let (status, _, body) = api
        .call(
            Method::PATCH,
            &format!("/commands/{doomed_id}"),
            Some(&ada),
            Some(json!({"params": {"seconds": 120}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["params"], json!({"seconds": 120}));
    let (status, body) = api.delete(&format!("/commands/{doomed_id}"), &ada).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled");

    // The collar connects: it gets neither the expired nor the cancelled command, only the
    // expired one once it is re-triggered, and then a new one (which also proves that nothing
    // else was sent before it).
    let (_client, mut events) = collar(&app, "rex", &secret).await;
    let (status, body) = api
        .post(
            &format!("/commands/{short_id}/retry"),
            Some(&ada),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last = create(&api, &ada, "rex", json!({"type": "locate_now"})).await;
    let mut received = Vec::new();
    loop {
        let id = next_command(&mut events).await["id"].clone();
        // An unanswered command is re-sent with the same id: count each once.
        if !received.contains(&id) {
            received.push(id.clone());
        }
        if id == last["id"] {
            break;
        }
    }
    assert_eq!(received, [json!(short_id), last["id"].clone()]);
    app.stop().await;
}

#[tokio::test]
async fn command_parameters_are_validated_per_type_with_the_parameter_named() {
    let app = app().await;
    let (api, ada, _) = owner_with_collar(&app, "rex").await;
    for (body, field) in [
        (json!({"type": "self_destruct"}), "type"),
        (json!({"type": "live_mode"}), "params.minutes"),
        (
            json!({"type": "live_mode", "params": {"minutes": 1000}}),
            "params.minutes",
        ),
        (
            json!({"type": "buzzer", "params": {"volume": 11}}),
            "params.volume",
        ),
        (
            json!({"type": "firmware_update", "params": {"url": "ftp://x", "version": "2.0"}}),
            "params.url",
        ),
        (json!({"type": "buzzer", "ttl_secs": 0}), "ttl_secs"),
    ] {
        let (status, answer) = api
            .post("/trackers/rex/commands", Some(&ada), body.clone())
            .await;
        assert_error(status, &answer, 400, "bad_request");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let ok = create(
        &api,
        &ada,
        "rex",
        json!({"type": "firmware_update", "params": {"url": "https://fw.example/2.1.bin", "version": "2.1.0"}}),
    )
    .await;
    assert_eq!(ok["type"], "firmware_update");
    app.stop().await;
}

#[tokio::test]
async fn viewers_and_strangers_cannot_command_and_applications_see_only_their_own_requests() {
    let app = app().await;
    let (api, ada, _) = owner_with_collar(&app, "rex").await;
    api.register("bob@example.com").await;
    let (bob, _) = api.login("bob@example.com").await;
    api.register("eve@example.com").await;
    let (eve, _) = api.login("eve@example.com").await;
    let (status, body) = api
        .post(
            "/trackers/rex/members",
            Some(&ada),
            json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mine = create(&api, &ada, "rex", json!({"type": "buzzer"})).await;
    let id = mine["id"].as_str().unwrap();
    // Bob, a viewer, sees it but may not command or change.
    let (status, _) = api.get(&format!("/commands/{id}"), &bob).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api
        .post(
            "/trackers/rex/commands",
            Some(&bob),
            json!({"type": "buzzer"}),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = api.delete(&format!("/commands/{id}"), &bob).await;
    assert_error(status, &body, 403, "forbidden");
    // Eve, a stranger, cannot even tell it exists.
    let (status, body) = api
        .post(
            "/trackers/rex/commands",
            Some(&eve),
            json!({"type": "buzzer"}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    for (method, path) in [
        (Method::GET, format!("/commands/{id}")),
        (Method::DELETE, format!("/commands/{id}")),
        (Method::POST, format!("/commands/{id}/retry")),
    ] {
        let (status, _, body) = api.call(method, &path, Some(&eve), None).await;
        assert_error(status, &body, 404, "not_found");
    }
    let (_, body) = api.get("/commands", &eve).await;
    assert_eq!(body["commands"], json!([]));

    // Ada's application: a full key creates, a read key cannot; each key lists its own.
    let (_, full) = api.new_key(&ada, "full").await;
    let (_, read) = api.new_key(&ada, "read").await;
    let from_app = create(&api, &full, "rex", json!({"type": "locate_now"})).await;
    let (status, body) = api
        .post(
            "/trackers/rex/commands",
            Some(&read),
            json!({"type": "buzzer"}),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    let (_, body) = api.get("/commands", &full).await;
    let ids: Vec<&str> = body["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [from_app["id"].as_str().unwrap()]);
    let (status, _) = api.get(&format!("/commands/{id}"), &full).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not this key's request");
    let (_, body) = api.get("/commands?tracker=rex&status=queued", &ada).await;
    assert_eq!(body["commands"].as_array().unwrap().len(), 2, "{body}");
    let (status, body) = api.get("/commands?status=lost", &ada).await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "status");
    app.stop().await;
}

#[tokio::test]
async fn a_dead_letter_is_stored_when_retried_after_its_cause_is_gone_and_keeps_a_new_reason_otherwise()
 {
    let clock = Clock::manual(chrono::Utc::now());
    let app = spawn_app_with_clock(clock.clone(), settings).await;
    let (api, ada, secret) = owner_with_collar(&app, "rex").await;
    let (client, mut events) = collar(&app, "rex", &secret).await;
    // The collar's clock is 3 s ahead of the server's; this server allows 1 s.
    let ahead = clock.now() + chrono::TimeDelta::seconds(3);
    for payload in [
        json!({"ts": ahead.to_rfc3339(), "lat": 52.5, "lon": 13.4}).to_string(),
        "{\"lat\": oops".to_owned(),
    ] {
        client
            .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        wait_for(&mut events, |p| {
            matches!(p, Packet::PubAck(_)).then_some(())
        })
        .await;
    }
    let (_, body) = api.get("/dead-letters?tracker=rex", &ada).await;
    let letters = body["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{body}");
    let (future, broken) = (
        letters[0]["id"].as_i64().unwrap(),
        letters[1]["id"].as_i64().unwrap(),
    );

    // Once the server's clock has caught up, the fix is valid.
    clock.advance(chrono::TimeDelta::seconds(3));
    let (status, body) = api
        .post(
            &format!("/dead-letters/{future}/retry"),
            Some(&ada),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stored"], true, "{body}");
    assert_eq!(
        app.count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'")
            .await,
        1
    );

    // The broken one stays refused; bulk retry records the attempt.
    let (status, body) = api
        .post("/dead-letters/retry", Some(&ada), json!({"tracker": "rex"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["retried"].as_i64(), body["stored"].as_i64()),
        (Some(1), Some(0)),
        "{body}"
    );
    let (_, body) = api.get("/dead-letters?tracker=rex", &ada).await;
    let broken_now = body["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == broken)
        .unwrap()
        .clone();
    assert_eq!(broken_now["retries"], 1, "{broken_now}");
    assert!(broken_now["resolved_at"].is_null());
    // A stranger can retry nothing of Ada's.
    api.register("eve@example.com").await;
    let (eve, _) = api.login("eve@example.com").await;
    let (status, body) = api
        .post(
            &format!("/dead-letters/{broken}/retry"),
            Some(&eve),
            json!({}),
        )
        .await;
    assert_error(status, &body, 404, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn every_transition_of_a_command_reaches_the_owner_s_and_members_live_feeds() {
    let app = app().await;
    let (api, ada, secret) = owner_with_collar(&app, "rex").await;
    api.register("bob@example.com").await;
    let (bob, _) = api.login("bob@example.com").await;
    let (status, body) = api
        .post(
            "/trackers/rex/members",
            Some(&ada),
            json!({"email": "bob@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let mut feeds = Vec::new();
    for token in [&ada, &bob] {
        let mut ws = live::open(&app, token, Some(&["rex"])).await;
        // The subscription's snapshot has come before the command exists.
        live::next(&mut ws, |m| m["type"] == "snapshot").await;
        feeds.push(ws);
    }

    let (client, mut events) = collar(&app, "rex", &secret).await;
    let created = create(&api, &ada, "rex", json!({"type": "buzzer"})).await;
    let id = created["id"].as_str().unwrap().to_owned();
    next_command(&mut events).await;
    wait_status(&api, &ada, &id, "sent").await;
    report(
        &client,
        &mut events,
        "rex",
        json!({"id": id, "status": "done"}),
    )
    .await;
    wait_status(&api, &ada, &id, "succeeded").await;

    for ws in &mut feeds {
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let message = live::next(ws, |m| m["type"] == "command").await;
            assert_eq!(message["tracker"], "rex");
            assert_eq!(message["command"]["id"], id.as_str());
            seen.push(message["command"]["status"].as_str().unwrap().to_owned());
        }
        assert_eq!(seen, ["queued", "sent", "succeeded"]);
    }
    app.stop().await;
}
