//! The demo: a handful of provisioned collars whose credentials are kept in the demo directory so a second run can reuse them.

use std::path::Path;

use anyhow::Context;
use gateway::protocol::TrackerId;
use gateway::storage::trackers::{self, ProvisionError, Provisioned};

use crate::app::RunningApp;

const PETS: &[(&str, &str)] = &[
    ("demo-rex", "Rex"),
    ("demo-luna", "Luna"),
    ("demo-milo", "Milo"),
];

/// Provisions the demo collars once and remembers their secrets in `dir/trackers.json`
/// (demo only: real secrets are shown once and never stored in plain text).
pub async fn ensure_trackers(
    pool: &deadpool_postgres::Pool,
    dir: &Path,
) -> anyhow::Result<Vec<Provisioned>> {
    let file = dir.join("trackers.json");
    if let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(list) = serde_json::from_str::<Vec<Provisioned>>(&text)
    {
        return Ok(list);
    }
    let mut list = Vec::new();
    for (id, pet) in PETS {
        let tracker = TrackerId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?;
        match trackers::provision(pool, &tracker, Some(pet)).await {
            Ok(p) => list.push(p),
            Err(ProvisionError::Exists(_)) => {
                anyhow::bail!(
                    "demo tracker {id} exists but its secret was lost; run `pettracker demo --reset`"
                )
            }
            Err(e) => return Err(e.into()),
        }
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(&file, serde_json::to_vec_pretty(&list)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(list)
}

pub fn print_welcome(app: &RunningApp, trackers: &[Provisioned]) {
    println!("pettracker demo is running");
    println!("  health:  http://{}/readyz", app.http_addr);
    println!("  metrics: http://{}/metrics", app.http_addr);
    if let (Some(mqtt), Some(first)) = (app.mqtt_addr, trackers.first()) {
        println!(
            "  MQTT:    {mqtt}  (collars: {})",
            trackers
                .iter()
                .map(|t| t.tracker_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!();
        println!("Publish a fix as {}:", first.tracker_id);
        println!(
            r#"  mosquitto_pub -h {} -p {} -i {id} -u {id} -P '{}' -q 1 -t trackers/{id}/telemetry -m "{{\"ts\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"lat\":52.52,\"lon\":13.405,\"bat\":87,\"seq\":1}}""#,
            mqtt.ip(),
            mqtt.port(),
            first.secret,
            id = first.tracker_id,
        );
        println!("See its status (from another terminal, in this directory):");
        println!("  PETTRACKER_DATABASE_DATA_DIR=data/demo/postgres pettracker tracker list");
    }
    println!("Press Ctrl-C to stop.");
}
