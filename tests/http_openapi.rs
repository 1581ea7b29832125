//! The OpenAPI document and the routes stay in step: it is served, and every operation it
//! documents is routed and, unless documented as public, refuses a caller without credentials.

mod common;

use common::spawn_app;
use reqwest::{Method, StatusCode};
use serde_json::Value;

#[tokio::test]
async fn the_openapi_document_is_served_as_json() {
    let app = spawn_app().await;
    let url = format!("http://{}/api/v1/openapi.json", app.app.http_addr);
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/trackers/{id}/positions"]["get"].is_object());
    app.stop().await;
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_guarded_as_documented() {
    // The broker's endpoints exist only with their shared secret configured.
    let app = common::spawn_app_with(|c| {
        c.broker_auth.secret = Some(secrecy::SecretString::from(
            "openapi-test-broker-secret-0123456789abcdef",
        ));
    })
    .await;
    let doc = pettracker::http::openapi_json().unwrap().clone();
    let base = format!("http://{}/api/v1", app.app.http_addr);
    let http = reqwest::Client::new();
    let global_security = doc["security"].clone();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            const OPERATIONS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
            if !OPERATIONS.contains(&method.as_str()) {
                continue; // "parameters" and other keys that are not operations
            }
            // Path parameters (of the path or the operation) get values of the documented type;
            // no resource needs to exist.
            let mut concrete = path.clone();
            let params = item["parameters"].as_array().into_iter().flatten();
            for param in params.chain(op["parameters"].as_array().into_iter().flatten()) {
                let name = param["name"].as_str().unwrap();
                let value = if param["schema"]["type"] == "integer" {
                    "1"
                } else {
                    // An enumerated parameter takes its first value.
                    param["schema"]["enum"][0].as_str().unwrap_or("rex")
                };
                concrete = concrete.replace(&format!("{{{name}}}"), value);
            }
            assert!(
                !concrete.contains('{'),
                "{path}: document its path parameters"
            );
            let method: Method = method.to_uppercase().parse().unwrap();
            let response = http
                .request(method.clone(), format!("{base}{concrete}"))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let what = format!("{method} {path}: {status} {body}");
            assert_ne!(body["message"], "no such route", "{what}");
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
            let public = op
                .get("security")
                .unwrap_or(&global_security)
                .as_array()
                .is_some_and(Vec::is_empty);
            if public {
                assert_ne!(status, StatusCode::UNAUTHORIZED, "{what}");
            } else {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(body["error"], "unauthorized", "{what}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations documented");
    app.stop().await;
}
