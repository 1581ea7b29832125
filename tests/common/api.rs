//! A small client for the HTTP API in tests: accounts, tokens and JSON answers.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::TestApp;

/// The password every test account gets.
pub const PASSWORD: &str = "correct horse battery";

/// A client for `/api/v1` of one test app.
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(app: &TestApp) -> Api {
        Api {
            base: format!("http://{}/api/v1", app.app.http_addr),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
        };
        (status, headers, body)
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.call(Method::POST, path, bearer, Some(body)).await;
        (status, body)
    }

    pub async fn get(&self, path: &str, bearer: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(Method::GET, path, Some(bearer), None).await;
        (status, body)
    }

    pub async fn delete(&self, path: &str, bearer: &str) -> (StatusCode, Value) {
        let (status, _, body) = self.call(Method::DELETE, path, Some(bearer), None).await;
        (status, body)
    }

    pub async fn register(&self, email: &str) -> i64 {
        let (status, body) = self
            .post(
                "/auth/register",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_i64().unwrap()
    }

    /// Logs in; returns (access token, refresh token).
    pub async fn login(&self, email: &str) -> (String, String) {
        let (status, body) = self
            .post(
                "/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Registers `email`, logs in and claims the collars; returns the access token.
    pub async fn owner_of(
        &self,
        email: &str,
        collars: &[&gateway::storage::trackers::Provisioned],
    ) -> String {
        self.register(email).await;
        let token = self.login(email).await.0;
        for c in collars {
            let (status, body) = self
                .post(
                    "/trackers/claim",
                    Some(&token),
                    json!({"tracker_id": c.tracker_id, "claim_code": c.claim_code}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
        token
    }

    pub async fn new_key(&self, bearer: &str, scope: &str) -> (i64, String) {
        let (status, body) = self
            .post(
                "/api-keys",
                Some(bearer),
                json!({"name": format!("{scope} key"), "scope": scope}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_i64().unwrap(),
            body["key"].as_str().unwrap().to_owned(),
        )
    }
}

/// Asserts an error answer: its status, its `error` code, and that it has a message.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}
