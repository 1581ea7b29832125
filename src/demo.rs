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

/// The demo owner's login, printed at start. Demo only: a fixed, published password.
pub const DEMO_EMAIL: &str = "demo@pettracker.local";
pub const DEMO_PASSWORD: &str = "demo-password-1234";

/// Creates the demo account (once) and makes it the owner of every demo collar, claimed from
/// a day ago so the history it sees starts before the demo did.
pub async fn ensure_owner(
    pool: &deadpool_postgres::Pool,
    trackers: &[Provisioned],
) -> anyhow::Result<()> {
    use crate::auth::{AccountError, Email, Password, store};
    let email = Email::parse(DEMO_EMAIL).map_err(|e| anyhow::anyhow!("{e}"))?;
    let password = Password::parse(&DEMO_PASSWORD.to_owned().into(), &email)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match store::create_user(pool, &email, &password, false).await {
        Ok(_) | Err(AccountError::EmailTaken) => {}
        Err(e) => return Err(anyhow::anyhow!("cannot create the demo account: {e}")),
    }
    let ids: Vec<&str> = trackers.iter().map(|t| t.tracker_id.as_str()).collect();
    pool.get()
        .await?
        .execute(
            "UPDATE trackers SET owner_id = (SELECT id FROM users WHERE lower(email) = lower($1)),
                                 claimed_at = coalesce(claimed_at, now() - interval '1 day')
             WHERE tracker_id = ANY($2) AND owner_id IS NULL",
            &[&DEMO_EMAIL, &ids],
        )
        .await
        .context("cannot give the demo collars to the demo account")?;
    Ok(())
}

pub fn print_welcome(app: &RunningApp, trackers: &[Provisioned]) {
    println!("pettracker demo is running");
    println!("  health:  http://{}/readyz", app.http_addr);
    println!("  metrics: http://{}/metrics", app.http_addr);
    println!(
        "  API:     http://{}/api/v1  (docs/api.md; contract at /api/v1/openapi.json)",
        app.http_addr
    );
    println!("  login:   {DEMO_EMAIL} / {DEMO_PASSWORD}  (owns the demo collars)");
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
        println!("See it through the API, as the demo owner:");
        println!(
            r#"  TOKEN=$(curl -s http://{0}/api/v1/auth/login -H 'content-type: application/json' -d '{{"email":"{DEMO_EMAIL}","password":"{DEMO_PASSWORD}"}}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')"#,
            app.http_addr
        );
        println!(
            r#"  curl -s http://{}/api/v1/trackers/{}/latest -H "authorization: Bearer $TOKEN""#,
            app.http_addr, first.tracker_id
        );
    }
    println!("Press Ctrl-C to stop.");
}
