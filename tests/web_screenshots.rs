//! Every screen of the web app on a desktop and on a phone, over the demo (simulated pets over
//! real MQTT) with stubbed map tiles served from 127.0.0.1. The pictures go to
//! target/ui-screenshots/, and to docs/ui/ with `PETTRACKER_SCREENSHOTS=docs/ui` (docs/ui.md
//! shows them). Each screen is also checked for what it must show, and the console for errors.
#![cfg(feature = "demo")]

mod common;

use std::time::Duration;

use common::api::{Api, PASSWORD};
use common::browser::{Browser, Screen};
use common::collar::ScriptedCollar;
use gateway::protocol::TrackerId;
use gateway::testing::fresh_database;
use pettracker::demo::{self, DEMO_EMAIL, DEMO_PASSWORD, DemoOptions};
use serde_json::json;
use warp::Filter;

/// A tile server that draws a plain street grid (no internet here): blocks, streets and a few
/// parks, continuous across tiles, so the screenshots look like a map without pretending to be one.
async fn stub_tiles() -> std::net::SocketAddr {
    let tiles = warp::path!(u32 / u32 / String).map(|z: u32, x: u32, y: String| {
        let y: u32 = y.trim_end_matches(".svg").parse().unwrap_or(0);
        let mut svg = String::from(
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256"><rect width="256" height="256" fill="#f2efe9"/>"##,
        );
        // Blocks of 64 px at every zoom; parks where a hash of the block says so.
        for by in 0..4u32 {
            for bx in 0..4u32 {
                let (gx, gy) = (x * 4 + bx, y * 4 + by);
                let h = gx.wrapping_mul(73_856_093) ^ gy.wrapping_mul(19_349_663) ^ z;
                if h.is_multiple_of(9) {
                    svg += &format!(
                        r##"<rect x="{}" y="{}" width="64" height="64" fill="#cde8c4"/>"##,
                        bx * 64,
                        by * 64
                    );
                }
            }
        }
        for i in 0..4u32 {
            let p = i * 64;
            // A wider avenue every 8 blocks.
            let w = if (x * 4 + i).is_multiple_of(8) { 9 } else { 5 };
            svg += &format!(r##"<rect x="{}" y="0" width="{w}" height="256" fill="#ffffff"/>"##, p);
            let w = if (y * 4 + i).is_multiple_of(8) { 9 } else { 5 };
            svg += &format!(r##"<rect x="0" y="{}" width="256" height="{w}" fill="#ffffff"/>"##, p);
        }
        svg += "</svg>";
        warp::reply::with_header(svg, "content-type", "image/svg+xml")
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(tiles).incoming(listener).run());
    addr
}

#[tokio::test]
async fn every_screen_on_a_desktop_and_a_phone() {
    let tiles = stub_tiles().await;
    let db = fresh_database().await;
    let dir = std::env::temp_dir().join(format!("pettracker-ui-{}", db.name));
    let mut config = common::test_config(&db, &dir.join("spool"));
    config.alerts.geofence_dwell_secs = 0;
    config.alerts.geofence_dwell_fixes = 1;
    config.auth.admin_emails = vec!["ops@example.com".to_owned()];
    config.map.tile_url = format!("http://{tiles}/{{z}}/{{x}}/{{y}}.svg");
    config.map.tile_attribution = "Stub tiles (tests/web_screenshots.rs)".to_owned();
    config.map.max_zoom = 19;
    let options = DemoOptions {
        dir: dir.clone(),
        pets: 12,
        interval: Duration::from_secs(1),
        ..DemoOptions::default()
    };
    let demo = demo::spawn(config, options).await.unwrap();
    let pool = demo.app.pool.clone();
    let url = format!("http://{}/", demo.app.http_addr);
    let api = Api {
        base: format!("http://{}/api/v1", demo.app.http_addr),
        http: reqwest::Client::new(),
    };

    // A day of walks for one more pet, through the ingest write path.
    let mut seed = pettracker::seed::SeedOptions::new(1, 1.0, 20);
    seed.prefix = "walk".to_owned();
    seed.owner = Some(DEMO_EMAIL.to_owned());
    pettracker::seed::run(&pool, &seed, |_, _| {})
        .await
        .unwrap();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "UPDATE trackers SET pet_name = 'Bruno' WHERE tracker_id = 'walk-0001'",
            &[],
        )
        .await
        .unwrap();
    // A collar that runs off from its zone with a low battery: two alerts.
    let scout = gateway::storage::trackers::provision(
        &pool,
        &TrackerId::parse("scout").unwrap(),
        Some("Scout"),
    )
    .await
    .unwrap();
    let (status, body) = api
        .post(
            "/auth/login",
            None,
            json!({"email": DEMO_EMAIL, "password": DEMO_PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    let (status, body) = api
        .post(
            "/trackers/claim",
            Some(&token),
            json!({"tracker_id": "scout", "claim_code": scout.claim_code}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let home = demo.pets[0].home;
    let (status, body) = api
        .post("/geofences", Some(&token), json!({"name": "Scout's garden", "shape": {"type": "circle", "center": [home.lon + 0.004, home.lat], "radius_m": 120}, "trackers": ["scout"]}))
        .await;
    assert_eq!(status, 201, "{body}");
    let zone = body["id"].as_i64().unwrap();
    let mqtt = demo.app.mqtt_addr.unwrap().port();
    let mut device = ScriptedCollar::connect_to(mqtt, "scout", &scout.secret).await;
    let known =
        format!("SELECT count(*) FROM alert_state WHERE tracker_id = 'scout' AND zones ? '{zone}'");
    while count(&pool, &known).await == 0 {
        device.fix(home.lat, home.lon + 0.004).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    device.raw(&json!({"ts": chrono::Utc::now().to_rfc3339(), "lat": home.lat + 0.006, "lon": home.lon + 0.004, "acc": 6.0, "bat": 14, "seq": 1000}).to_string()).await;
    wait_for_count(
        &pool,
        "SELECT count(*) FROM alerts WHERE tracker_id = 'scout'",
        2,
    )
    .await;
    // Something unusable from it, for the operators' dead letters.
    device
        .raw(r#"{"lat": 95.0, "lon": 13.4, "ts": "2026-01-01T00:00:00Z"}"#)
        .await;
    wait_for_count(
        &pool,
        "SELECT count(*) FROM dead_letters WHERE tracker_id = 'scout'",
        1,
    )
    .await;
    api.register("ops@example.com").await;

    let rex = demo.trackers[0].tracker_id.clone();
    for screen in [Screen::Desktop, Screen::Phone] {
        let mut b = Browser::start(screen).await;
        b.goto(&url).await;
        b.find("[data-testid=sign-in]").await;
        b.screenshot("sign-in").await;
        b.sign_in(&url, DEMO_EMAIL, DEMO_PASSWORD).await;
        b.wait_until(
            "every pet on the map",
            "document.querySelectorAll('[data-testid=pet-marker]').length >= 13",
        )
        .await;
        b.screenshot("pets").await;

        b.open(&format!("#/pets/{rex}")).await;
        b.click("[data-testid=cmd-buzzer]").await;
        b.click("[data-testid=cmd-locate]").await;
        b.wait_until("both done", "document.querySelectorAll('[data-testid=command]').length >= 2 && [...document.querySelectorAll('[data-testid=command]')].every(c => c.dataset.status === 'succeeded')").await;
        b.js("if (innerWidth < 600) document.querySelector('[data-testid=command-list]').scrollIntoView({block: 'end'});", vec![]).await;
        b.screenshot("pet").await;

        b.open("#/history/walk-0001").await;
        b.js("const y = new Date(Date.now() - 86400e3); const d = (t) => `${t.getFullYear()}-${String(t.getMonth() + 1).padStart(2, '0')}-${String(t.getDate()).padStart(2, '0')}`; document.querySelector('[data-testid=history-from]').value = d(y); document.querySelector('[data-testid=history-to]').value = d(new Date());", vec![]).await;
        b.click("[data-testid=history-show]").await;
        // A whole day and a bit at one fix every 20 s.
        b.wait_until(
            "the track",
            "document.querySelector('[data-testid=history-status]').dataset.points === '4320'",
        )
        .await;
        b.wait_until(
            "the summary",
            "document.querySelector('[data-testid=summary-day]')",
        )
        .await;
        b.js("const s = document.querySelector('[data-testid=time-slider]'); s.value = '620'; s.dispatchEvent(new Event('input')); if (innerWidth < 600) document.querySelector('.player').scrollIntoView();", vec![]).await;
        b.screenshot("history").await;

        b.open("#/zones").await;
        b.wait_until(
            "zones listed",
            "document.querySelectorAll('[data-testid=zone]').length >= 13",
        )
        .await;
        b.wait_until(
            "zones drawn",
            "document.querySelectorAll('[data-testid=zone-shape]').length >= 13",
        )
        .await;
        // One zone up close, being edited: its handles on the map, its form in the panel.
        b.click("[data-testid=zone] [data-testid=zone-edit]").await;
        b.wait_until("the zone up close", "[...document.querySelectorAll('[data-testid=zone-shape]')].some(e => e.getBoundingClientRect().width > 150)").await;
        b.wait_until("the edit handles", "document.querySelector('.marker-icon')")
            .await;
        b.screenshot("zones").await;
        b.click("[data-testid=draw-polygon]").await;
        b.find("[data-testid=drawing-hint]").await;
        b.screenshot("zones-drawing").await;
        b.open("#/alerts").await;

        b.wait_until(
            "the alerts",
            "document.querySelectorAll('[data-testid=alert][data-tracker-id=scout]').length >= 2",
        )
        .await;
        b.click("[data-testid=alert][data-kind=geofence_exit] [data-testid=alert-where]")
            .await;
        b.screenshot("alerts").await;

        b.open("#/apps").await;
        b.fill("[data-testid=key-name]", "home dashboard").await;
        b.click("[data-testid=key-create]").await;
        b.find("[data-testid=new-key]").await;
        b.screenshot("apps").await;

        b.open("#/account").await;
        b.screenshot("account").await;
        b.click("[data-testid=sign-out]").await;
        b.find("[data-testid=sign-in]").await;

        b.sign_in(&url, "ops@example.com", PASSWORD).await;
        b.open("#/admin").await;
        b.fill(
            "[data-testid=provision-id]",
            &format!("collar-{}", screen.name()),
        )
        .await;
        b.fill("[data-testid=provision-name]", "Pixel").await;
        b.click("[data-testid=provision]").await;
        b.find("[data-testid=device-secret]").await;
        b.wait_until(
            "dead letters",
            "document.querySelector('[data-testid=dead-letter]')",
        )
        .await;
        b.screenshot("operators").await;
        b.assert_console_clean(&[]).await;
        b.close().await;
    }
    demo.shutdown().await.unwrap();
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn count(pool: &deadpool_postgres::Pool, sql: &str) -> i64 {
    pool.get()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

/// Polls `sql` until it returns at least `want`; fails the test after 20 s.
async fn wait_for_count(pool: &deadpool_postgres::Pool, sql: &str, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while count(pool, sql).await < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: not {want} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
