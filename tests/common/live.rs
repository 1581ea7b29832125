//! A real WebSocket on the live feed (`/api/v1/live`), as an owner's client opens it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::TestApp;

pub type LiveSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A feed on `app` signed in with `token`, subscribed to `trackers` (`None`: every tracker the
/// token's owner may see); returns once the server has answered the subscription.
pub async fn open(app: &TestApp, token: &str, trackers: Option<&[&str]>) -> LiveSocket {
    let mut request = format!("ws://{}/api/v1/live", app.app.http_addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut subscribe = json!({"type": "subscribe"});
    if let Some(trackers) = trackers {
        subscribe["trackers"] = json!(trackers);
    }
    ws.send(Message::text(subscribe.to_string())).await.unwrap();
    next(&mut ws, |m| m["type"] == "subscribed").await;
    ws
}

/// The next message `want` accepts, passing over the others.
pub async fn next(ws: &mut LiveSocket, want: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(gateway::testing::EVENTUALLY, async {
        loop {
            let message = ws.next().await.expect("the feed ended").unwrap();
            let Ok(value) = serde_json::from_str::<Value>(message.to_text().unwrap_or("")) else {
                continue;
            };
            if want(&value) {
                return value;
            }
        }
    })
    .await
    .expect("the feed message came")
}

/// Every message until none has come for `quiet`.
pub async fn drain(ws: &mut LiveSocket, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, ws.next()).await {
        if let Ok(value) = serde_json::from_str::<Value>(message.to_text().unwrap_or("")) {
            out.push(value);
        }
    }
    out
}
