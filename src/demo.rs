//! The demo: a self-contained server with a fleet of simulated pets around a real city, owned by a demo account; credentials and homes are kept in the demo directory so a second run reuses them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use firmware_sim::{Broker, City, CollarConfig, Credential, Fleet, Home};
use futures::StreamExt;
use gateway::protocol::TrackerId;
use gateway::storage::trackers::{self, ProvisionError, Provisioned};
use serde::Serialize;

use crate::app::RunningApp;
use crate::config::Config;

/// Pet names, in the order pets are created; the first three were the demo's original collars.
const NAMES: &[&str] = &[
    "Rex", "Luna", "Milo", "Bella", "Max", "Nala", "Oskar", "Kira", "Balu", "Lilly", "Charlie",
    "Emma", "Sammy", "Mia", "Rocky", "Frieda", "Paul", "Coco", "Leo", "Maja", "Benji", "Lotte",
    "Felix", "Ronja", "Bruno", "Socke", "Amy", "Filou", "Ella", "Jack", "Tinka", "Lucky", "Gizmo",
    "Mogli", "Pepper", "Sunny", "Finn", "Kalle", "Zora", "Merlin",
];

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where credentials, pet homes (and the private database, unless DATABASE_URL is set) live.
    pub dir: PathBuf,
    pub pets: usize,
    /// Seconds between a collar's fixes.
    pub interval: Duration,
    pub city: City,
    /// Same seed, same homes: a second run finds the pets where they live.
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            dir: PathBuf::from("data/demo"),
            pets: 30,
            interval: Duration::from_secs(5),
            city: firmware_sim::BERLIN,
            seed: 1,
        }
    }
}

/// A demo pet: its collar and where it lives. The safe zone (`home` + `safe_radius_m`) is what
/// the simulator treats as "escaped" beyond; geofences can be created from it.
#[derive(Debug, Clone, Serialize)]
pub struct DemoPet {
    pub tracker_id: String,
    pub pet_name: String,
    pub home: Home,
}

/// A running demo: the server, the collars' credentials, the pets and their simulated fleet.
pub struct Demo {
    pub app: RunningApp,
    pub trackers: Vec<Provisioned>,
    pub pets: Vec<DemoPet>,
    fleet: Fleet,
}

impl Demo {
    /// Stops the collars (each says `offline`), then the server.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.fleet.stop().await;
        self.app.shutdown().await
    }

    /// Runs until the server fails or `signal` completes, then stops cleanly.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Demo { app, fleet, .. } = self;
        app.run_until(async move {
            signal.await;
            fleet.stop().await;
        })
        .await
    }
}

/// Starts the server with `config`, makes sure the demo collars and account exist, and starts
/// a simulated collar per pet over real MQTT to the embedded broker.
pub async fn spawn(config: Config, options: DemoOptions) -> anyhow::Result<Demo> {
    let app = crate::app::spawn(config).await?;
    let mqtt = app
        .mqtt_addr
        .context("the demo needs the MQTT/TCP listener (mqtt.addr)")?;
    let trackers = ensure_trackers(&app.pool, &options.dir, options.pets).await?;
    ensure_owner(&app.pool, &trackers).await?;
    let homes = options.city.homes(trackers.len(), options.seed);
    let pets: Vec<DemoPet> = trackers
        .iter()
        .zip(&homes)
        .enumerate()
        .map(|(i, (t, home))| DemoPet {
            tracker_id: t.tracker_id.clone(),
            pet_name: pet_name(i),
            home: *home,
        })
        .collect();
    ensure_safe_zones(&app.pool, &pets).await?;
    if let Some(alerts) = &app.alerts {
        alerts.fences_changed();
    }
    let file = options.dir.join("pets.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&pets)?)
        .with_context(|| format!("cannot write {}", file.display()))?;
    let configs = trackers
        .iter()
        .zip(&homes)
        .enumerate()
        .map(|(i, (t, home))| {
            let credential = Credential {
                tracker_id: TrackerId::parse(&t.tracker_id)
                    .with_context(|| format!("demo tracker id {:?}", t.tracker_id))?,
                secret: t.secret.clone(),
            };
            let broker = Broker::plain(mqtt.ip().to_string(), mqtt.port());
            let mut c =
                CollarConfig::new(credential, broker, *home, options.seed * 1_000 + i as u64);
            c.interval = options.interval;
            Ok(c)
        })
        .collect::<anyhow::Result<_>>()?;
    let fleet = Fleet::start(configs);
    Ok(Demo {
        app,
        trackers,
        pets,
        fleet,
    })
}

fn pet_name(i: usize) -> String {
    let name = NAMES[i % NAMES.len()];
    match i / NAMES.len() {
        0 => name.to_owned(),
        round => format!("{name} {}", round + 1),
    }
}

fn tracker_id(i: usize) -> String {
    let name = NAMES[i % NAMES.len()].to_lowercase();
    match i / NAMES.len() {
        0 => format!("demo-{name}"),
        round => format!("demo-{name}-{}", round + 1),
    }
}

/// Provisions the demo collars not provisioned yet and remembers their secrets in
/// `dir/trackers.json` (demo only: real secrets are shown once and never stored in plain text).
/// Returns the first `count`.
pub async fn ensure_trackers(
    pool: &deadpool_postgres::Pool,
    dir: &Path,
    count: usize,
) -> anyhow::Result<Vec<Provisioned>> {
    let file = dir.join("trackers.json");
    let mut list: Vec<Provisioned> = std::fs::read_to_string(&file)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let missing: Vec<usize> = (0..count)
        .filter(|i| !list.iter().any(|t| t.tracker_id == tracker_id(*i)))
        .collect();
    let mut new = futures::stream::iter(missing)
        .map(|i| async move {
            let id = tracker_id(i);
            let tracker = TrackerId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?;
            match trackers::provision(pool, &tracker, Some(&pet_name(i))).await {
                Ok(p) => Ok(p),
                Err(ProvisionError::Exists(_)) => anyhow::bail!(
                    "demo tracker {id} exists but its secret was lost; run `pettracker demo --reset`"
                ),
                Err(e) => Err(e.into()),
            }
        })
        .buffered(8);
    let mut added = false;
    while let Some(p) = new.next().await {
        list.push(p?);
        added = true;
    }
    if added {
        std::fs::create_dir_all(dir)?;
        std::fs::write(&file, serde_json::to_vec_pretty(&list)?)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let mut chosen: Vec<Provisioned> = (0..count)
        .filter_map(|i| list.iter().find(|t| t.tracker_id == tracker_id(i)).cloned())
        .collect();
    chosen.truncate(count);
    Ok(chosen)
}

/// Names each demo pet and gives it a safe zone around its home (a circle of the radius the
/// simulator's escapes go beyond), once: a second run keeps what the owner may have changed.
pub async fn ensure_safe_zones(
    pool: &deadpool_postgres::Pool,
    pets: &[DemoPet],
) -> anyhow::Result<()> {
    let client = pool.get().await?;
    let owner: i64 = client
        .query_one(
            "SELECT id FROM users WHERE lower(email) = lower($1)",
            &[&DEMO_EMAIL],
        )
        .await
        .context("the demo account is missing")?
        .get(0);
    for pet in pets {
        client
            .execute(
                "UPDATE trackers SET pet_name = $2 WHERE tracker_id = $1 AND pet_name IS NULL",
                &[&pet.tracker_id, &pet.pet_name],
            )
            .await
            .context("cannot name a demo pet")?;
        let zoned = client
            .query_opt(
                "SELECT 1 FROM geofence_trackers WHERE tracker_id = $1 LIMIT 1",
                &[&pet.tracker_id],
            )
            .await
            .context("cannot read the demo safe zones")?
            .is_some();
        if zoned {
            continue;
        }
        let shape = crate::alerts::zone::Shape::Circle {
            center: geo::Point::new(pet.home.lon, pet.home.lat),
            radius_m: pet.home.safe_radius_m,
        };
        crate::alerts::store::create_geofence(
            pool,
            owner,
            &format!("{}'s home", pet.pet_name),
            &shape,
            std::slice::from_ref(&pet.tracker_id),
        )
        .await
        .context("cannot create a demo safe zone")?;
    }
    Ok(())
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

pub fn print_welcome(demo: &Demo, options: &DemoOptions) {
    let app = &demo.app;
    let http = app.http_addr;
    println!("pettracker demo: open http://{http}/ and sign in as {DEMO_EMAIL} / {DEMO_PASSWORD}");
    println!(
        "  {} simulated pets around {}, a fix every {:?}, all owned by that account",
        demo.pets.len(),
        options.city.name,
        options.interval
    );
    println!();
    println!("  health:  http://{http}/readyz");
    println!("  metrics: http://{http}/metrics");
    println!("  API:     http://{http}/api/v1  (docs/api.md; contract at /api/v1/openapi.json)");
    println!(
        "  pets:    {} (homes and safe-zone radii)",
        options.dir.join("pets.json").display()
    );
    println!();
    println!("See the pets move, as the demo owner:");
    println!(
        r#"  TOKEN=$(curl -s http://{http}/api/v1/auth/login -H 'content-type: application/json' -d '{{"email":"{DEMO_EMAIL}","password":"{DEMO_PASSWORD}"}}' | sed 's/.*"access_token":"\([^"]*\)".*/\1/')"#
    );
    println!(r#"  curl -s http://{http}/api/v1/trackers -H "authorization: Bearer $TOKEN""#);
    println!(
        r#"  curl -s http://{http}/api/v1/geofences -H "authorization: Bearer $TOKEN"   # each pet's safe zone"#
    );
    println!(
        r#"  curl -s http://{http}/api/v1/alerts -H "authorization: Bearer $TOKEN"      # escapes, low batteries"#
    );
    println!(
        "  live positions: a WebSocket to ws://{http}/api/v1/live?token=$TOKEN, then send {{\"type\":\"subscribe\"}} (docs/live.md)"
    );
    if let Some(first) = demo.trackers.first() {
        println!(
            r#"  curl -s http://{http}/api/v1/trackers/{}/latest -H "authorization: Bearer $TOKEN""#,
            first.tracker_id
        );
        println!(
            r#"  curl -s "http://{http}/api/v1/trackers/{}/positions?limit=20" -H "authorization: Bearer $TOKEN""#,
            first.tracker_id
        );
    }
    if let (Some(mqtt), Some(first), Some(pet)) =
        (app.mqtt_addr, demo.trackers.first(), demo.pets.first())
    {
        println!();
        println!(
            "Publish your own fix as {} (MQTT {mqtt}; for a moment it takes over the simulated collar's connection):",
            first.tracker_id
        );
        println!(
            r#"  mosquitto_pub -h {} -p {} -i {id} -u {id} -P '{}' -q 1 -t trackers/{id}/telemetry -m "{{\"ts\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"lat\":{:.5},\"lon\":{:.5},\"bat\":87}}""#,
            mqtt.ip(),
            mqtt.port(),
            first.secret,
            pet.home.lat,
            pet.home.lon,
            id = first.tracker_id,
        );
    }
    println!("Press Ctrl-C to stop (the data stays for the next run; --reset starts over).");
}
