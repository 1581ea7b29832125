//! A scripted collar: its own MQTT connection with its own credentials, publishing the fixes a
//! test chooses (where a simulated pet's random walk would not be deterministic).

use chrono::{DateTime, TimeDelta, Utc};
use gateway::storage::trackers::Provisioned;
use rumqttc::{AsyncClient, QoS};
use serde_json::json;

use super::{TestApp, connect, options};

pub struct ScriptedCollar {
    pub client: AsyncClient,
    pub tracker: String,
    seq: u64,
    last: Option<DateTime<Utc>>,
}

impl ScriptedCollar {
    pub async fn connect(app: &TestApp, collar: &Provisioned) -> ScriptedCollar {
        ScriptedCollar::connect_with(app, &collar.tracker_id, &collar.secret).await
    }

    pub async fn connect_with(app: &TestApp, tracker: &str, secret: &str) -> ScriptedCollar {
        ScriptedCollar::connect_to(app.mqtt_port(), tracker, secret).await
    }

    /// To a broker on 127.0.0.1:`port`.
    pub async fn connect_to(port: u16, tracker: &str, secret: &str) -> ScriptedCollar {
        let opts = options(port, tracker, tracker, secret);
        let (client, mut events) = connect(opts).await.expect("the collar connects");
        tokio::spawn(async move { while events.poll().await.is_ok() {} });
        ScriptedCollar {
            client,
            tracker: tracker.to_owned(),
            seq: 0,
            last: None,
        }
    }

    /// Publishes a fix at `lat`, `lon` dated now (later than the previous one); returns its time.
    pub async fn fix(&mut self, lat: f64, lon: f64) -> DateTime<Utc> {
        let mut ts = Utc::now();
        if let Some(last) = self.last
            && ts <= last
        {
            ts = last + TimeDelta::milliseconds(1);
        }
        self.fix_at(ts, lat, lon).await;
        ts
    }

    pub async fn fix_at(&mut self, ts: DateTime<Utc>, lat: f64, lon: f64) {
        self.seq += 1;
        self.last = Some(ts);
        let body = json!({
            "ts": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lat": lat, "lon": lon, "acc": 4.0, "bat": 81, "seq": self.seq,
        });
        self.raw(&body.to_string()).await;
    }

    /// Publishes any payload on the collar's telemetry topic.
    pub async fn raw(&self, payload: &str) {
        self.client
            .publish(
                format!("trackers/{}/telemetry", self.tracker),
                QoS::AtLeastOnce,
                false,
                payload.to_owned(),
            )
            .await
            .expect("publish queued");
    }
}
