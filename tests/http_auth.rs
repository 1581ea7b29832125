//! Accounts and authentication over real HTTP: a whole app on port 0 with a fresh database.

mod common;

use common::api::{Api, PASSWORD, assert_error};
use common::{spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn a_user_registers_logs_in_and_sees_their_account() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (status, body) = api
        .post(
            "/auth/register",
            None,
            json!({"email": "Ada@Example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["email"], "Ada@Example.com");
    let id = body["id"].as_i64().unwrap();

    // Emails are case-insensitive at login too.
    let (status, body) = api
        .post(
            "/auth/login",
            None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(body["refresh_token"].is_string());
    let access = body["access_token"].as_str().unwrap();

    let (status, me) = api.get("/me", access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        me,
        json!({"id": id, "email": "Ada@Example.com", "is_admin": false})
    );
    app.stop().await;
}

#[tokio::test]
async fn an_email_listed_in_admin_emails_registers_as_an_admin() {
    let app = spawn_app_with(|c| c.auth.admin_emails = vec!["Boss@Example.com".into()]).await;
    let api = Api::new(&app);
    api.register("boss@example.com").await;
    let (access, _) = api.login("boss@example.com").await;
    let (_, me) = api.get("/me", &access).await;
    assert_eq!(me["is_admin"], true);
    app.stop().await;
}

#[tokio::test]
async fn a_weak_password_is_refused_with_a_400_naming_the_rules() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    for weak in ["short", "aaaaaaaaaaaa", "ada@example.com"] {
        let (status, body) = api
            .post(
                "/auth/register",
                None,
                json!({"email": "ada@example.com", "password": weak}),
            )
            .await;
        assert_error(status, &body, 400, "bad_request");
        assert_eq!(body["field"], "password");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("10") && message.contains("repeated"),
            "{message}"
        );
    }
    let (status, body) = api
        .post(
            "/auth/register",
            None,
            json!({"email": "not-an-email", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "email");
    app.stop().await;
}

#[tokio::test]
async fn registering_an_email_twice_in_any_letter_case_is_a_409() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let (status, body) = api
        .post(
            "/auth/register",
            None,
            json!({"email": "ADA@example.com", "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, 409, "conflict");
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_identical_401_answers() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let (status_wrong, headers_wrong, wrong) = api
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "ada@example.com", "password": "not the password"})),
        )
        .await;
    let (status_unknown, _, unknown) = api
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": PASSWORD})),
        )
        .await;
    assert_error(status_wrong, &wrong, 401, "unauthorized");
    assert_eq!(status_wrong, status_unknown);
    assert_eq!(wrong, unknown);
    assert_eq!(headers_wrong["www-authenticate"], "Bearer");
    app.stop().await;
}

#[tokio::test]
async fn repeated_login_failures_are_answered_with_429_and_retry_after() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let wrong = json!({"email": "ada@example.com", "password": "not the password"});
    for _ in 0..5 {
        let (status, body) = api.post("/auth/login", None, wrong.clone()).await;
        assert_error(status, &body, 401, "unauthorized");
    }
    // Even the right password must wait now.
    let (status, headers, body) = api
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "ada@example.com", "password": PASSWORD})),
        )
        .await;
    assert_error(status, &body, 429, "too_many_requests");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    // Another account is not affected.
    api.register("bob@example.com").await;
    api.login("bob@example.com").await;
    app.stop().await;
}

#[tokio::test]
async fn refreshing_rotates_the_token_and_reusing_the_old_one_revokes_the_family() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let (_, first) = api.login("ada@example.com").await;

    let (status, body) = api
        .post("/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(api.get("/me", access).await.0, StatusCode::OK);

    // The first token was rotated: presenting it again means it was copied.
    let (status, body) = api
        .post("/auth/refresh", None, json!({"refresh_token": first}))
        .await;
    assert_error(status, &body, 401, "unauthorized");
    // ... so its successor, held by whoever else has the family, is dead too.
    let (status, body) = api
        .post("/auth/refresh", None, json!({"refresh_token": second}))
        .await;
    assert_error(status, &body, 401, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn logging_out_revokes_the_refresh_token() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let (_, refresh) = api.login("ada@example.com").await;
    let (status, _, body) = api
        .call(
            Method::POST,
            "/auth/logout",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null);
    let (status, body) = api
        .post("/auth/refresh", None, json!({"refresh_token": refresh}))
        .await;
    assert_error(status, &body, 401, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn an_expired_access_token_is_refused_with_401() {
    const SECRET: &str = "a token secret of the test's own, 32+ bytes long";
    let app = spawn_app_with(|c| {
        c.auth.token_secret = Some(SECRET.into());
        c.auth.access_token_ttl_secs = 60;
    })
    .await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let (access, _) = api.login("ada@example.com").await;
    assert_eq!(api.get("/me", &access).await.0, StatusCode::OK);
    // The token lives as long as configured...
    let mut auth = pettracker::config::Config::default().auth;
    auth.token_secret = Some(SECRET.into());
    let mut claims = pettracker::auth::AuthKeys::from_config(&auth)
        .verify_access_token(&access)
        .expect("the server signs with the configured secret");
    assert_eq!(claims.exp - claims.iat, 60);
    // ...and the same token, issued a second longer ago than that, is refused.
    claims.iat -= 61;
    claims.exp -= 61;
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (status, headers, body) = api.call(Method::GET, "/me", Some(&expired), None).await;
    assert_error(status, &body, 401, "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");
    app.stop().await;
}

#[tokio::test]
async fn a_missing_or_forged_bearer_token_is_refused_with_401() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (status, headers, body) = api.call(Method::GET, "/me", None, None).await;
    assert_error(status, &body, 401, "unauthorized");
    assert_eq!(headers["www-authenticate"], "Bearer");
    for forged in [
        "nonsense",
        "ptk_0000",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    ] {
        let (status, body) = api.get("/me", forged).await;
        assert_error(status, &body, 401, "unauthorized");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_full_api_key_works_as_a_bearer_token_and_a_read_only_key_cannot_write() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let id = api.register("ada@example.com").await;
    let (access, _) = api.login("ada@example.com").await;
    let (full_id, full) = api.new_key(&access, "full").await;
    let (read_id, read) = api.new_key(&access, "read").await;
    assert!(full.starts_with("ptk_") && read.starts_with("ptk_"));

    let (status, me) = api.get("/me", &full).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], id);
    // A read-only key may read ...
    let (status, keys) = api.get("/api-keys", &read).await;
    assert_eq!(status, StatusCode::OK, "{keys}");
    let listed: Vec<i64> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, [full_id, read_id]);
    assert!(
        keys.as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("key").is_none())
    );
    // ... but not change anything.
    let (status, body) = api.delete(&format!("/api-keys/{full_id}"), &read).await;
    assert_error(status, &body, 403, "forbidden");
    let (status, body) = api
        .post(
            "/api-keys",
            Some(&read),
            json!({"name": "x", "scope": "full"}),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");

    // A full key may revoke the read-only one, which then stops working.
    let (status, _) = api.delete(&format!("/api-keys/{read_id}"), &full).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get("/me", &read).await;
    assert_error(status, &body, 401, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn deleting_another_users_api_key_is_a_404() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    api.register("bob@example.com").await;
    let (ada, _) = api.login("ada@example.com").await;
    let (bob, _) = api.login("bob@example.com").await;
    let (ada_key, key) = api.new_key(&ada, "full").await;
    let (status, body) = api.delete(&format!("/api-keys/{ada_key}"), &bob).await;
    assert_error(status, &body, 404, "not_found");
    // Still Ada's and still working.
    assert_eq!(api.get("/me", &key).await.0, StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn malformed_or_missing_json_bodies_get_4xx_json_errors() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let url = format!("{}/auth/register", api.base);
    let response = api
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_error(StatusCode::BAD_REQUEST, &body, 400, "bad_request");

    let (status, body) = api
        .post("/auth/register", None, json!({"email": "ada@example.com"}))
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert!(
        body["message"].as_str().unwrap().contains("password"),
        "{body}"
    );

    let (status, body) = api
        .post(
            "/auth/login",
            None,
            json!({"email": 5, "password": PASSWORD}),
        )
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "email");

    let response = api
        .http
        .post(&url)
        .body("x".repeat(64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "payload_too_large");

    let response = api.http.post(&url).send().await.unwrap();
    let status = response.status();
    assert!(status.is_client_error(), "{status}");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn passwords_refresh_tokens_and_api_keys_are_stored_only_hashed() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    api.register("ada@example.com").await;
    let (access, refresh) = api.login("ada@example.com").await;
    let (_, key) = api.new_key(&access, "full").await;
    let client = app.app.pool.get().await.unwrap();

    let hash: String = client
        .query_one("SELECT password_hash FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains(PASSWORD));

    let stored: Vec<String> = client
        .query(
            "SELECT token_hash FROM refresh_tokens UNION ALL SELECT key_hash FROM api_keys",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored.len(), 2);
    for value in &stored {
        assert_eq!(value.len(), 64, "{value}");
        assert!(
            !value.contains(&refresh) && !value.contains(&key[4..]),
            "{value}"
        );
    }
    let plain: i64 = client
        .query_one(
            "SELECT count(*) FROM refresh_tokens r, api_keys k
             WHERE r.token_hash = $1 OR k.key_hash = $2 OR k.key_hash = $1 OR r.token_hash = $2",
            &[&refresh, &key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(plain, 0);
    app.stop().await;
}
