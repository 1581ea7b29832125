//! Break-it findings, swept over every documented route rather than one example each: control
//! characters in bodies, oversize bodies, 405s without `Allow`, out-of-range dates, list
//! parameters left unchecked, and floods of sign-ins.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use common::api::{Api, PASSWORD, assert_error};
use common::{TestApp, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

const OPERATIONS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The secret the MQTT broker's routes (`security: brokerSecret`) take instead of a user's token.
const BROKER_SECRET: &str = "hardening-test-broker-secret-0123456789abcdef";

/// The app, with the broker's routes present (they exist only with their secret configured).
async fn spawn_app() -> TestApp {
    spawn_app_with(|c| {
        c.broker_auth.secret = Some(secrecy::SecretString::from(BROKER_SECRET));
    })
    .await
}

/// One documented operation.
struct Operation {
    method: Method,
    /// As documented, e.g. `/trackers/{id}/members`.
    template: String,
    /// With its path parameters filled in (`rex`, or `1` for integers).
    path: String,
    public: bool,
    /// Called by the MQTT broker, with [`BROKER_SECRET`].
    broker: bool,
    op: Value,
}

fn operations() -> Vec<Operation> {
    let doc = pettracker::http::openapi_json().unwrap();
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !OPERATIONS.contains(&method.as_str()) {
                continue;
            }
            let mut path = template.clone();
            let params = item["parameters"].as_array().into_iter().flatten();
            for param in params.chain(op["parameters"].as_array().into_iter().flatten()) {
                let name = param["name"].as_str().unwrap();
                let value = if param["schema"]["type"] == "integer" {
                    "1"
                } else {
                    // An enumerated parameter takes its first value.
                    param["schema"]["enum"][0].as_str().unwrap_or("rex")
                };
                path = path.replace(&format!("{{{name}}}"), value);
            }
            let public = op
                .get("security")
                .unwrap_or(&doc["security"])
                .as_array()
                .is_some_and(Vec::is_empty);
            let broker = op["security"][0].get("brokerSecret").is_some();
            out.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                template: template.clone(),
                path,
                public,
                broker,
                op: op.clone(),
            });
        }
    }
    assert!(out.len() >= 20, "only {} operations documented", out.len());
    out
}

/// Follows a `$ref` into the document.
fn resolve(schema: &Value) -> &Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let doc = pettracker::http::openapi_json().unwrap();
            let pointer = r.trim_start_matches('#');
            resolve(doc.pointer(pointer).unwrap_or_else(|| panic!("{r}")))
        }
        None => schema,
    }
}

/// A value of the schema that the route's body type accepts (strings are plain text).
fn example(schema: &Value) -> Value {
    let schema = resolve(schema);
    if let Some(first) = schema["oneOf"]
        .as_array()
        .or(schema["anyOf"].as_array())
        .and_then(|a| a.first())
    {
        return example(first);
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema["enum"].as_array().and_then(|a| a.first()) {
        return first.clone();
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds.iter().find(|k| *k != "null").cloned(),
        other => Some(other.clone()),
    };
    match kind.as_ref().and_then(Value::as_str) {
        Some("string") => match schema["format"].as_str() {
            Some("date-time") => json!("2026-11-24T12:00:00Z"),
            Some("email") => json!("someone@example.com"),
            _ => json!("text"),
        },
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([example(&schema["items"])]),
        _ => {
            let mut object = Map::new();
            for (name, property) in schema["properties"].as_object().into_iter().flatten() {
                object.insert(name.clone(), example(property));
            }
            Value::Object(object)
        }
    }
}

/// The paths of the string leaves of `value`, as the API names fields (`a.b`, `a[0]`).
fn string_leaves(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::String(_) => out.push(path.to_owned()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                string_leaves(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                string_leaves(item, &inner, out);
            }
        }
        _ => {}
    }
}

fn set_leaf(value: &mut Value, path: &str, to: Value) {
    let mut target = value;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        target = &mut target[key];
        if let Some(i) = index {
            target = &mut target[i];
        }
    }
    *target = to;
}

async fn signed_in(app: &TestApp) -> (Api, String) {
    let api = Api::new(app);
    api.register("ada@example.com").await;
    let token = api.login("ada@example.com").await.0;
    (api, token)
}

async fn send(
    api: &Api,
    op: &Operation,
    token: &str,
    query: &str,
    body: Option<Vec<u8>>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = api
        .http
        .request(op.method.clone(), format!("{}{}{query}", api.base, op.path));
    if op.broker {
        request = request.bearer_auth(BROKER_SECRET);
    } else if !op.public {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn a_control_character_in_any_text_field_of_any_body_is_a_400_naming_that_field() {
    let app = spawn_app().await;
    let (api, token) = signed_in(&app).await;
    let mut swept = 0;
    for op in operations() {
        let Some(schema) = op.op["requestBody"]["content"]["application/json"].get("schema") else {
            continue;
        };
        let body = example(schema);
        let mut leaves = Vec::new();
        string_leaves(&body, "", &mut leaves);
        for leaf in leaves {
            for bad in ["a\u{0}b", "\u{1b}[2J", "\u{0}"] {
                let mut sent = body.clone();
                set_leaf(&mut sent, &leaf, json!(bad));
                let raw = serde_json::to_vec(&sent).unwrap();
                let (status, _, answer) = send(&api, &op, &token, "", Some(raw)).await;
                let what = format!("{} {} with {leaf}={bad:?}", op.method, op.template);
                assert_error(status, &answer, 400, "bad_request");
                assert_eq!(answer["field"], leaf.as_str(), "{what}: {answer}");
                swept += 1;
            }
        }
        // Keys of free-form objects are stored as well (jsonb): a NUL there too.
        if let Some(Value::Object(_)) = body.get("params") {
            let mut sent = body.clone();
            sent["params"] = json!({"k\u{0}": 1});
            let raw = serde_json::to_vec(&sent).unwrap();
            let (status, _, answer) = send(&api, &op, &token, "", Some(raw)).await;
            assert_error(status, &answer, 400, "bad_request");
            assert_eq!(answer["field"], "params.k\u{0}", "{}", op.template);
        }
    }
    // Every route the break-it run named is among those swept.
    assert!(swept >= 3 * 15, "only {swept} fields swept");
    // Nothing of it was stored, and the server is still well.
    assert_eq!(app.count("SELECT count(*) FROM geofences").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM api_keys").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_control_character_in_any_path_parameter_is_a_404_like_any_other_unknown_id() {
    let app = spawn_app().await;
    let (api, token) = signed_in(&app).await;
    let mut swept = 0;
    for op in operations() {
        if !op.template.contains('{') {
            continue;
        }
        let body = op.op["requestBody"]["content"]["application/json"]
            .get("schema")
            .map(|schema| serde_json::to_vec(&example(schema)).unwrap());
        for bad in ["%00", "x%00y", "%1B", "%7F"] {
            // Every parameter at once: whichever the route reads first must refuse it.
            let mut path = op.template.clone();
            while let (Some(open), Some(close)) = (path.find('{'), path.find('}')) {
                path.replace_range(open..=close, bad);
            }
            let op = Operation {
                path,
                method: op.method.clone(),
                template: op.template.clone(),
                public: op.public,
                broker: op.broker,
                op: op.op.clone(),
            };
            let (status, _, answer) = send(&api, &op, &token, "", body.clone()).await;
            let what = format!("{} {}: {status} {answer}", op.method, op.path);
            assert!(
                [StatusCode::NOT_FOUND, StatusCode::FORBIDDEN].contains(&status),
                "{what}"
            );
            swept += 1;
        }
    }
    assert!(swept >= 4 * 20, "only {swept} swept");
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_16_kib_is_a_413_on_every_route_that_takes_one() {
    let app = spawn_app().await;
    let (api, token) = signed_in(&app).await;
    let big = serde_json::to_vec(&json!({"name": "x".repeat(17 * 1024)})).unwrap();
    let mut swept = 0;
    for op in operations() {
        if op.op.get("requestBody").is_none() {
            continue;
        }
        let (status, _, body) = send(&api, &op, &token, "", Some(big.clone())).await;
        let what = format!("{} {}: {body}", op.method, op.template);
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{what}");
        assert_eq!(body["error"], "payload_too_large", "{what}");
        swept += 1;
    }
    assert!(swept >= 12, "only {swept} routes take a body");
    app.stop().await;
}

#[tokio::test]
async fn every_405_carries_an_allow_header_listing_the_documented_methods() {
    let app = spawn_app().await;
    let (api, token) = signed_in(&app).await;
    let doc = pettracker::http::openapi_json().unwrap();
    let mut seen = BTreeSet::new();
    for op in operations() {
        if !seen.insert(op.path.clone()) {
            continue;
        }
        let trace = Operation {
            method: Method::TRACE,
            ..op
        };
        let (status, headers, body) = send(&api, &trace, &token, "", None).await;
        let what = format!("TRACE {}: {body}", trace.template);
        assert_error(status, &body, 405, "method_not_allowed");
        let allow: BTreeSet<String> = headers["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|m| m.trim().to_lowercase())
            .collect();
        for method in OPERATIONS {
            if doc["paths"][&trace.template].get(method).is_some() {
                assert!(allow.contains(method), "{what}: Allow {allow:?}");
            }
        }
        assert!(!allow.contains("trace"), "{what}");
    }
    // Outside the API: the health check answers GET only.
    let response = api
        .http
        .request(
            Method::TRACE,
            format!("http://{}/healthz", app.app.http_addr),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "GET");
    app.stop().await;
}

#[tokio::test]
async fn every_date_parameter_refuses_values_outside_its_documented_range_with_a_400() {
    let app = spawn_app().await;
    let (api, token) = signed_in(&app).await;
    let mut swept = 0;
    for op in operations() {
        let params = op.op["parameters"].as_array().cloned().unwrap_or_default();
        for param in params {
            let name = param["name"].as_str().unwrap();
            if param["in"] != "query"
                || !["from", "to", "since"].contains(&name)
                || param["schema"]["type"] != "string"
            {
                continue;
            }
            for bad in [
                "-262143-01-01",
                "-262143-01-01T00:00:00Z",
                "%2B262142-12-31T23:59:59Z",
                "%2B10000-01-01",
                "1969-12-31T23:59:59Z",
                "0000-01-01",
            ] {
                let query = format!("?{name}={bad}");
                let (status, _, body) = send(&api, &op, &token, &query, None).await;
                let what = format!("{} {}{query}: {body}", op.method, op.template);
                assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
                assert_eq!(body["field"], name, "{what}");
                swept += 1;
            }
        }
    }
    assert!(swept >= 6 * 6, "only {swept} date parameters swept");
    // The same range holds for a time in a body.
    let (status, body) = api
        .post(
            "/dead-letters/retry",
            Some(&token),
            json!({"since": "-262143-01-01T00:00:00Z"}),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "since");
    app.stop().await;
}

#[tokio::test]
async fn lists_filtered_by_a_malformed_tracker_still_check_every_other_parameter() {
    let app = spawn_app().await;
    let (api, token) = signed_in(&app).await;
    for path in ["/commands", "/dead-letters"] {
        for (query, field) in [
            ("tracker=no%20such!&limit=0", "limit"),
            ("tracker=no%20such!&since=yesterday", "since"),
            ("tracker=no%20such!&bogus=1", "bogus"),
        ] {
            let (status, body) = api.get(&format!("{path}?{query}"), &token).await;
            assert_error(status, &body, 400, "bad_request");
            assert_eq!(body["field"], field, "{path}?{query}: {body}");
        }
        // With good parameters, a malformed tracker still just matches nothing.
        let (status, body) = api.get(&format!("{path}?tracker=no%20such!"), &token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    app.stop().await;
}

/// A client whose requests come from `ip` (any 127.0.0.0/8 address reaches the server).
fn client_from(ip: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(ip))
        .build()
        .unwrap()
}

async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    email: &str,
) -> (StatusCode, reqwest::header::HeaderMap) {
    let response = http
        .post(format!("{base}/auth/{what}"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn a_flood_of_registrations_and_logins_from_one_address_is_throttled_while_others_sign_in() {
    let app = spawn_app_with(|c| {
        c.auth.address_attempts_per_minute = 1;
        c.auth.address_attempts_burst = 10;
    })
    .await;
    let base = format!("http://{}/api/v1", app.app.http_addr);
    // Someone registered before the flood.
    let calm = client_from(Ipv4Addr::new(127, 0, 0, 3));
    assert_eq!(
        sign_in(&calm, &base, "register", "bob@example.com").await.0,
        StatusCode::CREATED
    );

    // The flood rotates emails, so the per-email login throttle never sees a repeat.
    let flood = client_from(Ipv4Addr::new(127, 0, 0, 2));
    let mut refused = 0;
    for i in 0..15 {
        let what = if i % 2 == 0 { "register" } else { "login" };
        let (status, headers) = sign_in(&flood, &base, what, &format!("f{i}@example.com")).await;
        match status {
            StatusCode::CREATED | StatusCode::UNAUTHORIZED => {
                assert!(i < 10, "attempt {i} of the flood got through: {status}")
            }
            StatusCode::TOO_MANY_REQUESTS => {
                let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(wait >= 1, "Retry-After {wait}");
                refused += 1;
            }
            other => panic!("attempt {i}: {other}"),
        }
    }
    assert_eq!(refused, 5, "the burst is 10 attempts");
    assert_eq!(
        app.count("SELECT count(*) FROM users WHERE email LIKE 'f%'")
            .await,
        5
    );

    // Other addresses are unaffected: bob logs in, carol registers.
    assert_eq!(
        sign_in(&calm, &base, "login", "bob@example.com").await.0,
        StatusCode::OK
    );
    let other = client_from(Ipv4Addr::new(127, 0, 0, 4));
    assert_eq!(
        sign_in(&other, &base, "register", "carol@example.com")
            .await
            .0,
        StatusCode::CREATED
    );
    app.stop().await;
}

async fn sign_in_forwarded(
    http: &reqwest::Client,
    base: &str,
    what: &str,
    email: &str,
    forwarded_for: &str,
) -> StatusCode {
    http.post(format!("{base}/auth/{what}"))
        .header("x-forwarded-for", forwarded_for)
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn behind_a_trusted_proxy_a_flood_counts_against_its_forwarded_client_and_the_header_is_believed_from_no_one_else()
 {
    let app = spawn_app_with(|c| {
        c.auth.address_attempts_per_minute = 1;
        c.auth.address_attempts_burst = 3;
        c.http.trusted_proxies = vec!["127.0.0.2".to_owned()];
    })
    .await;
    let base = format!("http://{}/api/v1", app.app.http_addr);
    let proxy = client_from(Ipv4Addr::new(127, 0, 0, 2));
    // One client floods through the proxy (the proxy appends what it saw after the client's
    // own claim): its fourth attempt is refused...
    let flood = "198.51.100.1, 203.0.113.1";
    for i in 0..3 {
        let status = sign_in_forwarded(
            &proxy,
            &base,
            "register",
            &format!("f{i}@example.com"),
            flood,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "attempt {i}");
    }
    let status = sign_in_forwarded(&proxy, &base, "register", "f3@example.com", flood).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // ...changing its own claim does not help, and everyone else behind the same proxy still
    // signs in.
    let status = sign_in_forwarded(
        &proxy,
        &base,
        "register",
        "f4@example.com",
        "198.51.100.99, 203.0.113.1",
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let status = sign_in_forwarded(
        &proxy,
        &base,
        "register",
        "carol@example.com",
        "203.0.113.2",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // A peer that is not a trusted proxy writes the header in vain: it is its own address.
    let direct = client_from(Ipv4Addr::new(127, 0, 0, 3));
    let mut statuses = Vec::new();
    for i in 0..4 {
        let claimed = format!("203.0.113.{}", 100 + i);
        statuses.push(
            sign_in_forwarded(
                &direct,
                &base,
                "register",
                &format!("d{i}@example.com"),
                &claimed,
            )
            .await,
        );
    }
    assert_eq!(
        statuses,
        [
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::CREATED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn when_every_hashing_slot_stays_busy_a_sign_in_is_answered_503_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.auth.hash_concurrency = 1;
        c.auth.hash_wait_ms = 1;
    })
    .await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let base = api.base.clone();
    // Logins on their own connections at once: one hash runs, those arriving meanwhile are
    // turned away instead of queueing on the blocking pool.
    let attempts = (0..20).map(|_| {
        let base = base.clone();
        async move {
            let http = reqwest::Client::new();
            sign_in(&http, &base, "login", "ada@example.com").await
        }
    });
    let outcomes = futures::future::join_all(attempts).await;
    let busy: Vec<_> = outcomes
        .iter()
        .filter(|(s, _)| *s == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(!busy.is_empty(), "{outcomes:?}");
    for (_, headers) in &busy {
        assert_eq!(headers["retry-after"], "1");
    }
    assert!(
        outcomes.iter().any(|(s, _)| *s == StatusCode::OK),
        "{outcomes:?}"
    );
    app.stop().await;
}
