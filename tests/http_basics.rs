//! The HTTP side of a whole app started in-process on port 0 with a fresh database.

use pettracker::config::Config;
use secrecy::SecretString;

async fn spawn_app() -> pettracker::app::RunningApp {
    let db = pettracker::testing::fresh_database().await;
    let mut config = Config::default();
    config.http.addr = "127.0.0.1:0".parse().unwrap();
    config.mqtt.addr = "127.0.0.1:0".parse().unwrap();
    config.database.url = Some(SecretString::from(
        secrecy::ExposeSecret::expose_secret(&db.url).to_owned(),
    ));
    config.database.api_pool_size = 4;
    config.database.ingest_pool_size = 4;
    pettracker::app::spawn(config).await.unwrap()
}

#[tokio::test]
async fn readyz_reports_the_database_as_reachable() {
    let app = spawn_app().await;
    let body: serde_json::Value = reqwest::get(format!("http://{}/readyz", app.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["database"], true);
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    let app = spawn_app().await;
    let response = reqwest::get(format!("http://{}/no/such/route", app.http_addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let app = spawn_app().await;
    let response = reqwest::get(format!("http://{}/metrics", app.http_addr))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    app.shutdown().await.unwrap();
}
