//! The owner web app end to end: the real server (port 0, fresh database), collars over real
//! MQTT (simulated by firmware-sim, or scripted where a test needs exact positions), and a real
//! headless chromium driven over WebDriver. Every browser test also requires a clean console.
#![cfg(feature = "demo")]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::api::{Api, PASSWORD};
use common::browser::{Browser, Screen, WAIT};
use common::collar::ScriptedCollar;
use common::{TestApp, spawn_app_with};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use gateway::protocol::TrackerId;
use gateway::storage::trackers::{Provisioned, provision};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// The app with no basemap (no internet here): pets, tracks and zones still render.
async fn app_with(adjust: impl FnOnce(&mut pettracker::config::Config)) -> (TestApp, Api, String) {
    let app = spawn_app_with(|c| {
        c.map.tile_url = String::new();
        adjust(c);
    })
    .await;
    let api = Api::new(&app);
    let url = format!("http://{}/", app.app.http_addr);
    (app, api, url)
}

async fn collar(app: &TestApp, id: &str, pet: Option<&str>) -> Provisioned {
    provision(&app.app.pool, &TrackerId::parse(id).unwrap(), pet)
        .await
        .unwrap()
}

/// The app with Ada owning Rex's collar (a scripted collar or a simulated one drives it).
async fn with_rex(
    adjust: impl FnOnce(&mut pettracker::config::Config),
) -> (TestApp, Api, String, Provisioned) {
    let (app, api, url) = app_with(adjust).await;
    let rex = collar(&app, "rex", Some("Rex")).await;
    api.owner_of("ada@example.com", &[&rex]).await;
    (app, api, url, rex)
}

/// The end of every browser test: nothing went wrong in the page, then everything stops.
async fn finish(mut browser: Browser, app: TestApp) {
    browser.assert_console_clean(&[]).await;
    browser.close().await;
    app.stop().await;
}

/// Where a marker is drawn on screen (its centre), or null.
fn marker_position(tracker: &str) -> String {
    format!(
        "(() => {{ const m = document.querySelector('[data-testid=pet-marker][data-tracker-id=\"{tracker}\"]'); \
         if (!m) return null; const r = m.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
    )
}

#[tokio::test]
async fn the_app_is_served_at_the_root_with_a_policy_that_forbids_inline_scripts() {
    let (app, _api, url) = app_with(|c| {
        c.map.tile_url = "https://{s}.tiles.example.org/{z}/{x}/{y}.png".to_owned();
        c.map.max_zoom = 18;
    })
    .await;
    let http = reqwest::Client::new();
    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(csp.contains("https://*.tiles.example.org"), "{csp}");
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    let etag = page.headers()["etag"].to_str().unwrap().to_owned();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/assets/main.js") && !html.contains("<script>"),
        "{html}"
    );

    // Revalidation, the libraries and their licences, the map settings.
    let again = http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let leaflet = http
        .get(format!("{url}vendor/leaflet/dist/leaflet.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(leaflet.status(), StatusCode::OK);
    assert!(
        leaflet.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let licence = http
        .get(format!("{url}vendor/leaflet/LICENSE"))
        .send()
        .await
        .unwrap();
    assert!(
        licence
            .text()
            .await
            .unwrap()
            .contains("Volodymyr Agafonkin")
    );
    let map: Value = http
        .get(format!("{url}api/v1/map"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        map["tile_url"],
        "https://{s}.tiles.example.org/{z}/{x}/{y}.png"
    );
    assert_eq!(map["max_zoom"], 18);
    assert!(
        map["tile_attribution"]
            .as_str()
            .unwrap()
            .contains("OpenStreetMap")
    );

    // Nothing else of node_modules, nothing outside the folders, and API misses stay JSON.
    for path in [
        "vendor/leaflet/package.json",
        "assets/../Cargo.toml",
        "assets/%2e%2e/Cargo.toml",
        "assets/.hidden",
        "vendor/lodash/lodash.js",
    ] {
        let response = http.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    let miss = http.get(format!("{url}api/v1/nope")).send().await.unwrap();
    assert_eq!(miss.status(), StatusCode::NOT_FOUND);
    let body: Value = miss.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    app.stop().await;
}

#[tokio::test]
async fn the_web_session_keeps_the_refresh_token_in_an_http_only_cookie_and_rotates_it() {
    let (app, api, _url) = app_with(|_| {}).await;
    api.register("ada@example.com").await;
    let http = reqwest::Client::new();
    let base = &api.base;
    let opened = http
        .post(format!("{base}/auth/session"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    let cookies: Vec<String> = opened
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let refresh = cookies
        .iter()
        .find(|c| c.starts_with("pettracker_refresh="))
        .expect("the refresh cookie");
    assert!(
        refresh.contains("HttpOnly") && refresh.contains("SameSite=Strict"),
        "{refresh}"
    );
    assert!(refresh.contains("Path=/api/v1/auth/session;"), "{refresh}");
    let token = refresh["pettracker_refresh=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: Value = opened.json().await.unwrap();
    assert!(
        body.get("refresh_token").is_none(),
        "no refresh token for scripts: {body}"
    );
    assert_eq!(body["user"]["email"], "ada@example.com");
    let (status, _) = api
        .get("/trackers", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(status, StatusCode::OK);

    // The cookie renews the access token, once: a replayed cookie ends the session.
    let cookie = format!("pettracker_refresh={token}");
    let renewed = http
        .post(format!("{base}/auth/session/refresh"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(renewed.status(), StatusCode::OK);
    let next = renewed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("pettracker_refresh="))
        .unwrap();
    let next = next["pettracker_refresh=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert_ne!(next, token);
    let replayed = http
        .post(format!("{base}/auth/session/refresh"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
    assert!(
        replayed
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().contains("Max-Age=0")),
        "a dead cookie is cleared"
    );
    let after_reuse = http
        .post(format!("{base}/auth/session/refresh"))
        .header("cookie", format!("pettracker_refresh={next}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        after_reuse.status(),
        StatusCode::UNAUTHORIZED,
        "the family is revoked"
    );

    // Closing a session revokes its cookie.
    let fresh = http
        .post(format!("{base}/auth/session"))
        .json(&json!({"email": "ada@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let c = fresh
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("pettracker_refresh="))
        .unwrap();
    let c = c.split(';').next().unwrap().to_owned();
    let closed = http
        .delete(format!("{base}/auth/session"))
        .header("cookie", &c)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.status(), StatusCode::NO_CONTENT);
    let dead = http
        .post(format!("{base}/auth/session/refresh"))
        .header("cookie", &c)
        .send()
        .await
        .unwrap();
    assert_eq!(dead.status(), StatusCode::UNAUTHORIZED);
    let body: Value = dead.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn an_owner_registers_claims_a_collar_and_sees_it_move_on_the_live_map() {
    let (app, _api, url) = app_with(|_| {}).await;
    let rex = collar(&app, "rex", Some("Rex")).await;
    let browser = Browser::start(Screen::Desktop).await;
    browser.goto(&url).await;
    browser.click("[data-testid=to-register]").await;
    browser.fill("[data-testid=email]", "ada@example.com").await;
    browser.fill("[data-testid=password]", PASSWORD).await;
    browser.click("[data-testid=register]").await;
    browser
        .wait_until(
            "signed in",
            "document.querySelector('[data-testid=no-pets]:not([hidden])')",
        )
        .await;

    browser.click("[data-testid=add-collar]").await;
    browser
        .fill("[data-testid=claim-tracker]", &rex.tracker_id)
        .await;
    browser
        .fill("[data-testid=claim-code]", &rex.claim_code)
        .await;
    browser.click("[data-testid=claim]").await;
    browser
        .wait_until(
            "Rex in the list",
            "document.querySelector('[data-testid=pet][data-tracker-id=rex]')",
        )
        .await;
    assert!(
        browser
            .text("[data-testid=pet][data-tracker-id=rex]")
            .await
            .contains("Rex")
    );

    // The collar reports; the marker appears, then moves with the next fix.
    let mut device = ScriptedCollar::connect(&app, &rex).await;
    device.fix(52.5200, 13.4050).await;
    let first = browser
        .wait_until("Rex's marker", &marker_position("rex"))
        .await;
    device.fix(52.5206, 13.4062).await;
    let moved = format!(
        "(() => {{ const p = {}; return p && Math.hypot(p[0] - {}, p[1] - {}) > 5 ? p : null; }})()",
        marker_position("rex"),
        first[0],
        first[1]
    );
    browser.wait_until("Rex's marker moved", &moved).await;
    let facts = browser
        .text("[data-testid=pet][data-tracker-id=rex] [data-testid=pet-facts]")
        .await;
    assert!(
        facts.contains("online") && facts.contains("± 4 m"),
        "{facts}"
    );
    browser
        .wait_until(
            "the list counts both fixes",
            "document.querySelector('[data-testid=pet][data-tracker-id=rex]').dataset.livePoints === '2'",
        )
        .await;

    // Selecting the pet opens its page and centres the map on it.
    browser
        .click("[data-testid=pet][data-tracker-id=rex] [data-testid=pet-select]")
        .await;
    browser
        .wait_until(
            "Rex's page",
            "document.querySelector('[data-testid=pet-title]')?.textContent === 'Rex'",
        )
        .await;
    browser
        .wait_until(
            "the selected marker",
            "document.querySelector('[data-testid=pet-marker][data-tracker-id=rex].selected')",
        )
        .await;

    // Follow mode keeps the selected pet in view when it runs a kilometre off.
    browser.open("#/pets").await;
    browser.click("[data-testid=follow]").await;
    device.fix(52.5300, 13.4200).await;
    browser
        .wait_until(
            "Rex followed into view",
            "(() => { const m = document.querySelector('[data-testid=pet-marker][data-tracker-id=rex]').getBoundingClientRect(); \
               const v = document.querySelector('[data-testid=map]').getBoundingClientRect(); \
               return document.querySelector('[data-testid=pet][data-tracker-id=rex]').dataset.livePoints === '3' \
                 && m.left >= v.left && m.right <= v.right && m.top >= v.top && m.bottom <= v.bottom; })()",
        )
        .await;
    finish(browser, app).await;
}

#[tokio::test]
async fn a_day_is_replayed_with_playback_a_daily_summary_and_exports_in_every_format() {
    let (app, api, url) = app_with(|_| {}).await;
    api.register("ada@example.com").await;
    // Two days of a collar reporting every 30 s, through the ingest write path; the playback
    // replays yesterday.
    let mut seed = pettracker::seed::SeedOptions::new(1, 2.0, 30);
    seed.prefix = "walk".to_owned();
    seed.owner = Some("ada@example.com".to_owned());
    pettracker::seed::run(&app.app.pool, &seed, |_, _| {})
        .await
        .unwrap();

    let mut browser = Browser::start(Screen::Desktop).await;
    let downloads = std::env::temp_dir().join(format!("pettracker-downloads-{}", app.db.name));
    std::fs::create_dir_all(&downloads).unwrap();
    browser
        .cdp(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": downloads.display().to_string()}),
        )
        .await;
    browser.sign_in(&url, "ada@example.com", PASSWORD).await;
    browser.open("#/history/walk-0001").await;
    browser.click("[data-testid=range-yesterday]").await;
    let points = browser
        .wait_until(
            "yesterday's track",
            "(() => { const s = document.querySelector('[data-testid=history-status]'); return s.dataset.points && s.textContent.includes('every fix') && document.querySelector('[data-testid=playback-marker]') ? Number(s.dataset.points) : null; })()",
        )
        .await;
    // A local day is 2,880 fixes at 30 s (more or fewer around a clock change).
    let points = points.as_f64().unwrap();
    assert!((2000.0..=3000.0).contains(&points), "{points}");

    // Play at 1800x: the clock and the slider move on; pause; the slider jumps.
    let start_time = browser.text("[data-testid=playback-time]").await;
    browser
        .js("const s = document.querySelector('[data-testid=speed]'); s.value = '1800'; s.dispatchEvent(new Event('change'));", vec![])
        .await;
    browser.click("[data-testid=play]").await;
    browser
        .wait_until(
            "playback running",
            &format!("document.querySelector('[data-testid=playback-time]').textContent !== {start_time:?} && Number(document.querySelector('[data-testid=time-slider]').value) > 0"),
        )
        .await;
    browser.click("[data-testid=play]").await;
    browser
        .wait_until(
            "paused",
            "document.querySelector('[data-testid=play]').getAttribute('aria-pressed') === 'false'",
        )
        .await;
    let before = browser
        .js("const r = document.querySelector('[data-testid=playback-marker]').getBoundingClientRect(); return [r.x, r.y];", vec![])
        .await;
    browser
        .js("const s = document.querySelector('[data-testid=time-slider]'); s.value = '900'; s.dispatchEvent(new Event('input'));", vec![])
        .await;
    let after = browser
        .js("const r = document.querySelector('[data-testid=playback-marker]').getBoundingClientRect(); return [r.x, r.y];", vec![])
        .await;
    assert_ne!(before, after, "the slider moves the playback marker");

    // The daily summary of that day.
    let distance = browser
        .wait_until(
            "the summary",
            "document.querySelector('[data-testid=summary-distance]')?.textContent",
        )
        .await;
    assert!(
        distance.as_str().unwrap().ends_with("km") || distance.as_str().unwrap().ends_with(" m"),
        "{distance}"
    );

    // Each export of the range: every fix of it, saved by the browser (the token goes in a
    // header, so the app fetches it and hands the browser the file).
    let saved = |extension: &'static str| {
        let downloads = downloads.clone();
        let browser = &browser;
        async move {
            browser
                .click(&format!("[data-testid=export-{extension}]"))
                .await;
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                // Chromium writes to a `.crdownload` file and renames it when complete.
                let done = std::fs::read_dir(&downloads)
                    .unwrap()
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|e| e == extension));
                if let Some(path) = done {
                    break std::fs::read_to_string(path).unwrap();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no {extension} downloaded"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let gpx = saved("gpx").await;
    let doc = roxmltree::Document::parse(&gpx).unwrap();
    let trkpts = doc
        .descendants()
        .filter(|n| n.has_tag_name("trkpt"))
        .count();
    assert_eq!(
        trkpts as f64, points,
        "the export holds the fixes the track showed"
    );
    let geojson: serde_json::Value = serde_json::from_str(&saved("geojson").await).unwrap();
    let features = geojson["features"].as_array().unwrap();
    let line = &features[0]["geometry"];
    assert_eq!(line["type"], "LineString");
    assert_eq!(line["coordinates"].as_array().unwrap().len() as f64, points);
    let fixes = features
        .iter()
        .filter(|f| f["geometry"]["type"] == "Point")
        .count();
    assert_eq!(fixes as f64, points, "one Point feature per fix");
    let csv = saved("csv").await;
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("ts,lat,lon"), "{csv:.200}");
    assert_eq!(rows.count() as f64, points, "one CSV row per fix");
    // No token ever travels in a URL the browser may log or keep in its history.
    let urls = browser
        .js(
            "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)];",
            vec![],
        )
        .await;
    for url in urls.as_array().unwrap() {
        let url = url.as_str().unwrap();
        assert!(
            !url.contains("token") && !url.contains("ptk_") && !url.contains("eyJ"),
            "{url}"
        );
    }

    // Thirty days come downsampled.
    browser.click("[data-testid=range-30-days]").await;
    browser
        .wait_until(
            "the bucketed track",
            "document.querySelector('[data-testid=history-status]').textContent.includes('simplified')",
        )
        .await;
    browser.assert_console_clean(&[]).await;
    browser.close().await;
    let _ = std::fs::remove_dir_all(&downloads);
    app.stop().await;
}

#[tokio::test]
async fn a_safe_zone_drawn_on_the_map_raises_an_escape_alert_in_the_owners_and_a_members_open_sessions()
 {
    let (app, api, url) = app_with(|c| {
        c.alerts.geofence_dwell_secs = 0;
        c.alerts.geofence_dwell_fixes = 1;
    })
    .await;
    let rex = collar(&app, "rex", Some("Rex")).await;
    api.owner_of("ada@example.com", &[&rex]).await;
    api.register("bob@example.com").await;
    api.register("carol@example.com").await;
    let mut device = ScriptedCollar::connect(&app, &rex).await;
    device.fix(52.5200, 13.4050).await;

    let mut ada = Browser::start(Screen::Desktop).await;
    ada.sign_in(&url, "ada@example.com", PASSWORD).await;
    ada.wait_until("Rex's marker", &marker_position("rex"))
        .await;

    // Sharing from the pet's page: Bob becomes a viewer.
    ada.open("#/pets/rex").await;
    ada.fill("[data-testid=invite-email]", "bob@example.com")
        .await;
    ada.click("[data-testid=invite]").await;
    ada.wait_until(
        "Bob listed as a member",
        "[...document.querySelectorAll('[data-testid=member]')].some(m => m.textContent.includes('bob@example.com'))",
    )
    .await;
    // Carol too, then removed again.
    ada.fill("[data-testid=invite-email]", "carol@example.com")
        .await;
    ada.click("[data-testid=invite]").await;
    let carol = "[...document.querySelectorAll('[data-testid=member]')].find(m => m.textContent.includes('carol@example.com'))";
    ada.wait_until("Carol listed", carol).await;
    ada.js(
        &format!("{carol}.querySelector('[data-testid=member-remove]').click();"),
        vec![],
    )
    .await;
    ada.wait_until("Carol removed", &format!("!{carol}")).await;
    let mut bob = Browser::start(Screen::Phone).await;
    bob.sign_in(&url, "bob@example.com", PASSWORD).await;
    bob.wait_until(
        "Rex shared with Bob",
        "document.querySelector('[data-testid=pet][data-tracker-id=rex]')",
    )
    .await;

    // Ada draws a circle around Rex: a click at the centre, another at the edge.
    ada.open("#/zones").await;
    ada.click("[data-testid=draw-circle]").await;
    ada.find("[data-testid=drawing-hint]").await;
    let centre = ada
        .wait_until("Rex's marker", &marker_position("rex"))
        .await;
    // Beside the marker (pets stay clickable markers, but not while drawing), Rex well inside.
    let (x, y) = (
        centre[0].as_f64().unwrap(),
        centre[1].as_f64().unwrap() + 30.0,
    );
    let mouse = MouseActions::new("mouse".to_owned())
        .then(PointerAction::MoveTo {
            duration: None,
            x,
            y,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::MoveTo {
            duration: Some(Duration::from_millis(200)),
            x: x + 90.0,
            y,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    ada.client.perform_actions(mouse).await.unwrap();
    ada.find("[data-testid=zone-new]").await;
    ada.wait_until(
        "Rex ticked for the new zone",
        "document.querySelector('[data-testid=zone-pet][data-tracker-id=rex]').checked",
    )
    .await;
    ada.fill("[data-testid=zone-name-input]", "Garden").await;
    ada.click("[data-testid=zone-save]").await;
    ada.wait_until(
        "the zone listed",
        "[...document.querySelectorAll('[data-testid=zone-name]')].some(z => z.textContent === 'Garden')",
    )
    .await;
    let token = api.login("ada@example.com").await.0;
    let (_, zones) = api.get("/geofences", &token).await;
    let zone = &zones["geofences"][0];
    assert_eq!(zone["shape"]["type"], "circle");
    assert_eq!(zone["trackers"], json!(["rex"]));
    let radius = zone["shape"]["radius_m"].as_f64().unwrap();
    assert!(radius > 20.0, "{zone}");

    // Rex is seen inside once the engine knows the zone, then runs off.
    let zone_id = zone["id"].as_i64().unwrap();
    let known = format!(
        "SELECT count(*) FROM alert_state WHERE tracker_id = 'rex' AND zones ? '{zone_id}'"
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.count(&known).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the engine never placed Rex in the zone"
        );
        device.fix(52.5200, 13.4050).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    device.fix(52.5300, 13.4050).await;
    for browser in [&ada, &bob] {
        browser
            .wait_until(
                "the escape notice",
                "[...document.querySelectorAll('[data-testid=alert-notice][data-tracker-id=rex]')].some(n => n.textContent.includes('Rex left Garden'))",
            )
            .await;
    }
    // Ada acknowledges it in her list; Bob, a viewer, has no button for it.
    ada.open("#/alerts").await;
    ada.click("[data-testid=alert][data-kind=geofence_exit] [data-testid=alert-ack]")
        .await;
    ada.wait_until(
        "acknowledged",
        "document.querySelector('[data-testid=alert][data-kind=geofence_exit].acked')",
    )
    .await;
    bob.open("#/alerts").await;
    bob.find("[data-testid=alert][data-kind=geofence_exit]")
        .await;
    let buttons = bob
        .js(
            "return document.querySelectorAll('[data-testid=alert-ack]').length;",
            vec![],
        )
        .await;
    assert_eq!(buttons, 0);
    // Bob leaves the shared pet: it is gone from his app and from Ada's member list.
    bob.open("#/pets/rex").await;
    bob.click("[data-testid=leave]").await;
    bob.find("[data-testid=no-pets]:not([hidden])").await;
    let (_, members) = api.get("/trackers/rex/members", &token).await;
    assert_eq!(members["members"], json!([]), "{members}");

    ada.assert_console_clean(&[]).await;
    bob.assert_console_clean(&[]).await;
    ada.close().await;
    bob.close().await;
    app.stop().await;
}

#[tokio::test]
async fn a_buzzer_command_is_seen_through_to_succeeded_a_cancelled_light_is_retried_and_the_reporting_interval_and_live_mode_reach_the_collar()
 {
    let (app, api, url, rex) = with_rex(|_| {}).await;
    // The simulated collar of firmware-sim: it answers commands as real firmware does.
    let home = firmware_sim::BERLIN.homes(1, 7)[0];
    let mut config = firmware_sim::CollarConfig::new(
        firmware_sim::Credential {
            tracker_id: gateway::protocol::TrackerId::parse(&rex.tracker_id).unwrap(),
            secret: rex.secret.clone(),
        },
        firmware_sim::Broker::plain("127.0.0.1", app.mqtt_port()),
        home,
        7,
    );
    config.interval = Duration::from_secs(1);
    let fleet = firmware_sim::Fleet::start(vec![config]);

    let mut browser = Browser::start(Screen::Phone).await;
    browser.sign_in(&url, "ada@example.com", PASSWORD).await;
    browser
        .wait_until("Rex's marker", &marker_position("rex"))
        .await;
    browser.open("#/pets/rex").await;
    browser.click("[data-testid=cmd-buzzer]").await;
    // Each state it passes through is shown as it happens.
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = browser
            .js("return document.querySelector('[data-testid=command][data-type=buzzer]')?.dataset.status || null;", vec![])
            .await;
        if let Some(s) = status.as_str()
            && seen.last().map(String::as_str) != Some(s)
        {
            seen.push(s.to_owned());
        }
        if seen.last().map(String::as_str) == Some("succeeded") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "buzzer states seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        seen.contains(&"delivered".to_owned()),
        "the buzzer sounds for 3 s after delivery: {seen:?}"
    );

    // A light for a minute: cancelled while it shines, then retried.
    browser.click("[data-testid=cmd-light]").await;
    browser
        .wait_until("the light delivered", "document.querySelector('[data-testid=command][data-type=light][data-status=delivered]')")
        .await;
    browser
        .click("[data-testid=command][data-type=light] [data-testid=command-cancel]")
        .await;
    browser
        .wait_until("the light cancelled", "document.querySelector('[data-testid=command][data-type=light][data-status=cancelled]')")
        .await;
    browser
        .click("[data-testid=command][data-type=light] [data-testid=command-retry]")
        .await;
    browser
        .wait_until(
            "the light retried and delivered",
            "(() => { const c = document.querySelector('[data-testid=command][data-type=light]'); return c && c.dataset.status === 'delivered' && c.textContent.includes('attempt 2'); })()",
        )
        .await;

    // The reporting interval, then live mode: each is done, and the collar reports as told.
    let collar = fleet.stats[0].clone();
    browser.fill("[data-testid=interval-seconds]", "20").await;
    browser.click("[data-testid=cmd-interval]").await;
    browser
        .wait_until("the interval set", "document.querySelector('[data-testid=command][data-type=set_interval][data-status=succeeded]')")
        .await;
    let reports_every = |ms: u64| {
        let collar = collar.clone();
        async move {
            tokio::time::timeout(
                WAIT,
                collar.wait_until(|s| s.interval_ms.load(Ordering::Relaxed) == ms),
            )
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the collar reports every {} ms, not {ms}",
                    collar.interval_ms.load(Ordering::Relaxed)
                )
            })
        }
    };
    reports_every(20_000).await;
    browser.fill("[data-testid=live-minutes]", "2").await;
    browser.click("[data-testid=cmd-live]").await;
    browser
        .wait_until("live mode on", "document.querySelector('[data-testid=command][data-type=live_mode][data-status=succeeded]')")
        .await;
    reports_every(5_000).await;
    let (token, _) = api.login("ada@example.com").await;
    let (status, body) = api
        .get(&format!("/commands?tracker={}", rex.tracker_id), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = body["commands"].as_array().unwrap().clone();
    let params = |kind: &str| {
        sent.iter()
            .find(|c| c["type"] == kind)
            .map(|c| c["params"].clone())
            .unwrap_or_else(|| panic!("no {kind} in {sent:?}"))
    };
    assert_eq!(params("set_interval"), json!({"seconds": 20}));
    assert_eq!(
        params("live_mode"),
        json!({"minutes": 2, "interval_secs": 5})
    );
    browser.assert_console_clean(&[]).await;
    browser.close().await;
    fleet.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn an_api_key_created_in_the_app_works_with_curl_until_it_is_revoked() {
    let (app, api, url, _) = with_rex(|_| {}).await;
    let browser = Browser::start(Screen::Desktop).await;
    browser.sign_in(&url, "ada@example.com", PASSWORD).await;
    browser.open("#/apps").await;
    browser
        .fill("[data-testid=key-name]", "home dashboard")
        .await;
    browser.click("[data-testid=key-create]").await;
    let key = browser.text("[data-testid=new-key]").await;
    assert!(key.starts_with("ptk_"), "{key}");
    browser
        .wait_until("the key listed", "[...document.querySelectorAll('[data-testid=key]')].some(k => k.textContent.includes('home dashboard') && k.textContent.includes('read only'))")
        .await;

    let curl = |key: String| {
        let url = format!("{}/trackers", api.base);
        async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-s",
                    "-w",
                    "\n%{http_code}",
                    "-H",
                    &format!("authorization: Bearer {key}"),
                    &url,
                ])
                .output()
                .await
                .expect("curl runs");
            let text = String::from_utf8(out.stdout).unwrap();
            let (body, code) = text.rsplit_once('\n').unwrap();
            (code.to_owned(), body.to_owned())
        }
    };
    let (code, body) = curl(key.clone()).await;
    assert_eq!(code, "200", "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["trackers"][0]["id"], "rex");

    browser.click("[data-testid=key-revoke]").await;
    browser.find("[data-testid=no-keys]").await;
    let (code, _) = curl(key).await;
    assert_eq!(code, "401");
    finish(browser, app).await;
}

#[tokio::test]
async fn a_second_user_sees_none_of_the_first_users_pets_anywhere_in_the_app() {
    let (app, api, url) = app_with(|c| {
        c.alerts.battery_low_percent = 90;
    })
    .await;
    let rex = collar(&app, "rex", Some("Rexy")).await;
    let own = collar(&app, "bobs-own", Some("Fido")).await;
    let ada = api.owner_of("ada@example.com", &[&rex]).await;
    api.owner_of("bob@example.com", &[&own]).await;
    // Ada's pet has a position, a zone, an alert (battery at 81% <= 90%) and a command.
    let mut device = ScriptedCollar::connect(&app, &rex).await;
    device.fix(52.52, 13.405).await;
    app.wait_for_count("SELECT count(*) FROM alerts WHERE tracker_id = 'rex'", 1)
        .await;
    let (status, body) = api
        .post("/geofences", Some(&ada), json!({"name": "Rexy's home", "shape": {"type": "circle", "center": [13.405, 52.52], "radius_m": 100}, "trackers": ["rex"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api
        .post(
            "/trackers/rex/commands",
            Some(&ada),
            json!({"type": "buzzer"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let browser = Browser::start(Screen::Desktop).await;
    browser.sign_in(&url, "bob@example.com", PASSWORD).await;
    // Rex moves while Bob watches; Bob's own pet reports after it on the same bus, so once
    // Bob's arrives, Rex's would have too.
    device.fix(52.521, 13.406).await;
    let mut fido = ScriptedCollar::connect(&app, &own).await;
    app.wait_for_count("SELECT count(*) FROM positions WHERE tracker_id = 'rex'", 2)
        .await;
    fido.fix(48.85, 2.35).await;
    browser
        .wait_until("Bob's own pet", &marker_position("bobs-own"))
        .await;
    for screen in [
        "#/pets",
        "#/pets/rex",
        "#/history",
        "#/history/rex",
        "#/zones",
        "#/alerts",
        "#/apps",
        "#/account",
    ] {
        browser.open(screen).await;
        // Let each screen load what it loads.
        browser
            .js_async("const done = arguments[arguments.length - 1]; setTimeout(done, 500);")
            .await;
        let leaked = browser
            .js("const t = document.documentElement.outerHTML; return ['rex', 'Rexy', 'ada@example.com'].filter(s => t.includes(s));", vec![])
            .await;
        assert_eq!(leaked, json!([]), "{screen}");
        let markers = browser
            .js("return [...document.querySelectorAll('[data-tracker-id]')].map(e => e.dataset.trackerId).filter(id => id !== 'bobs-own');", vec![])
            .await;
        assert_eq!(markers, json!([]), "{screen}");
    }
    browser.open("#/pets/rex").await;
    browser.find("[data-testid=pet-missing]").await;
    finish(browser, app).await;
}

#[tokio::test]
async fn a_pet_named_like_markup_is_shown_as_text_everywhere() {
    const NAME: &str = "<img src=x onerror=alert(1)>";
    let (app, api, url) = app_with(|c| {
        c.alerts.battery_low_percent = 90;
    })
    .await;
    let rex = collar(&app, "rex", Some(NAME)).await;
    let ada = api.owner_of("ada@example.com", &[&rex]).await;
    let mut device = ScriptedCollar::connect(&app, &rex).await;
    device.fix(52.52, 13.405).await;
    app.wait_for_count("SELECT count(*) FROM alerts WHERE tracker_id = 'rex'", 1)
        .await;
    let (status, _) = api
        .post("/geofences", Some(&ada), json!({"name": "<b onmouseover=alert(2)>zone</b>", "shape": {"type": "circle", "center": [13.405, 52.52], "radius_m": 100}, "trackers": ["rex"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let browser = Browser::start(Screen::Desktop).await;
    browser.sign_in(&url, "ada@example.com", PASSWORD).await;
    let shown = browser
        .wait_until("the pet listed", "document.querySelector('[data-testid=pet][data-tracker-id=rex] .pet-name')?.textContent")
        .await;
    assert_eq!(shown, NAME);
    let title = browser
        .js(
            "return document.querySelector('[data-testid=pet-marker][data-tracker-id=rex]').title;",
            vec![],
        )
        .await;
    assert_eq!(title, NAME);
    browser.open("#/pets/rex").await;
    assert_eq!(browser.text("[data-testid=pet-title]").await, NAME);
    browser.open("#/alerts").await;
    assert!(browser.text("[data-testid=alert]").await.contains(NAME));
    browser.open("#/zones").await;
    browser.find("[data-testid=zone-name]").await;
    assert_eq!(
        browser.text("[data-testid=zone-name]").await,
        "<b onmouseover=alert(2)>zone</b>"
    );
    assert!(browser.text("[data-testid=zone-pets]").await.contains(NAME));
    browser.open("#/history/rex").await;
    let option = browser
        .js(
            "return document.querySelector('[data-testid=history-pet] option').textContent;",
            vec![],
        )
        .await;
    assert_eq!(option, NAME);

    let injected = browser
        .js(
            "return document.querySelectorAll('img[src=x], b[onmouseover]').length;",
            vec![],
        )
        .await;
    assert_eq!(injected, 0, "no markup was made from a name");
    assert!(
        browser.client.get_alert_text().await.is_err(),
        "no alert() ran"
    );
    finish(browser, app).await;
}

#[tokio::test]
async fn the_session_is_renewed_before_it_expires_and_a_revoked_session_returns_to_sign_in() {
    // Access tokens of 3 s: the app renews every couple of seconds, and the live feed, which
    // the server closes when its token expires (4001), reconnects each time.
    let (app, _, url, rex) = with_rex(|c| c.auth.access_token_ttl_secs = 3).await;
    let mut browser = Browser::start(Screen::Desktop).await;
    browser.sign_in(&url, "ada@example.com", PASSWORD).await;
    let user = "(SELECT id FROM users WHERE email = 'ada@example.com')";
    let tokens = format!("SELECT count(*) FROM refresh_tokens WHERE user_id = {user}");
    let deadline = tokio::time::Instant::now() + WAIT;
    // A login and the app's session: then renewals.
    while app.count(&tokens).await < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the access token was not renewed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Long past the first token's life, the app still works and the feed is live.
    let mut device = ScriptedCollar::connect(&app, &rex).await;
    device.fix(52.52, 13.405).await;
    browser
        .wait_until("Rex's marker", &marker_position("rex"))
        .await;
    browser.open("#/apps").await;
    browser.find("[data-testid=no-keys]").await;
    browser
        .wait_until(
            "live again",
            "document.querySelector('[data-testid=connection-state][data-state=live]')",
        )
        .await;

    // Signed out elsewhere (every refresh token revoked): the app returns to sign-in.
    app.app
        .pool
        .get()
        .await
        .unwrap()
        .execute(
            &format!("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = {user}"),
            &[],
        )
        .await
        .unwrap();
    browser
        .wait_until(
            "back at sign-in",
            "document.querySelector('[data-testid=session-ended]')",
        )
        .await;
    browser.find("[data-testid=sign-in]").await;
    // The refused renewal is the browser's own 401 line, and nothing else.
    browser.assert_console_clean(&["/api/v1/auth/session/refresh - Failed to load resource: the server responded with a status of 401"]).await;
    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn the_live_map_resumes_after_each_drop_with_no_fix_missed_or_shown_twice() {
    // The feed drops whenever the 2 s access token expires; fixes keep coming meanwhile.
    let (app, _, url, rex) = with_rex(|c| c.auth.access_token_ttl_secs = 2).await;
    let browser = Browser::start(Screen::Desktop).await;
    browser.sign_in(&url, "ada@example.com", PASSWORD).await;
    let closed_before = token_expired_closes(&app).await;
    let mut device = ScriptedCollar::connect(&app, &rex).await;
    const FIXES: usize = 60;
    for i in 0..FIXES {
        device.fix(52.52 + i as f64 * 1e-4, 13.405).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    app.wait_for_count(
        "SELECT count(*) FROM positions WHERE tracker_id = 'rex'",
        FIXES as i64,
    )
    .await;
    let points =
        "document.querySelector('[data-testid=pet][data-tracker-id=rex]')?.dataset.livePoints";
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let shown = browser.js(&format!("return {points};"), vec![]).await;
        if shown == json!(FIXES.to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the page counted {shown} of {FIXES} fixes (state {})",
            browser
                .js(
                    "return document.querySelector('[data-testid=connection-state]').textContent;",
                    vec![]
                )
                .await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        token_expired_closes(&app).await >= closed_before + 2,
        "the feed should have dropped and resumed during the run"
    );
    // Nothing more arrives later either.
    device.fix(52.6, 13.405).await;
    browser
        .wait_until(
            "the next fix counted once",
            &format!("document.querySelector('[data-testid=pet][data-tracker-id=rex]')?.dataset.livePoints === '{}'", FIXES + 1),
        )
        .await;
    finish(browser, app).await;
}

/// Live sessions the server closed because their token expired, from /metrics (process-wide).
async fn token_expired_closes(app: &TestApp) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", app.app.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("pettracker_live_closed_total") && l.contains("token_expired"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test]
async fn an_operator_provisions_a_collar_sees_its_dead_letter_re_runs_it_and_revokes_it() {
    let (app, api, url) =
        app_with(|c| c.auth.admin_emails = vec!["ops@example.com".to_owned()]).await;
    api.register("ops@example.com").await;
    let browser = Browser::start(Screen::Desktop).await;
    browser.sign_in(&url, "ops@example.com", PASSWORD).await;
    browser.open("#/admin").await;
    browser.fill("[data-testid=provision-id]", "collar-9").await;
    browser.fill("[data-testid=provision-name]", "Nine").await;
    browser.click("[data-testid=provision]").await;
    let secret = browser.text("[data-testid=device-secret]").await;
    let claim = browser.text("[data-testid=claim-code-shown]").await;
    assert!(!secret.is_empty() && !claim.is_empty());
    browser
        .wait_until(
            "listed",
            "document.querySelector('[data-testid=admin-tracker][data-tracker-id=collar-9]')",
        )
        .await;

    // The collar connects with the secret shown once and sends something unusable.
    let device = ScriptedCollar::connect_with(&app, "collar-9", &secret).await;
    device.raw(r#"{"lat": 52.5, "lon": 13.4}"#).await;
    app.wait_for_count(
        "SELECT count(*) FROM dead_letters WHERE tracker_id = 'collar-9'",
        1,
    )
    .await;
    browser.open("#/pets").await;
    browser.open("#/admin").await;
    let reason = browser
        .text("[data-testid=dead-letter][data-letter-id] [data-testid=dead-letter-reason]")
        .await;
    assert!(!reason.is_empty());
    browser.click("[data-testid=dead-letter-retry]").await;
    browser
        .wait_until("re-run reported", "[...document.querySelectorAll('[data-testid=retried]')].some(n => n.textContent.includes('still refused'))")
        .await;

    // The claim code works for an owner; then the operator revokes the collar.
    let (status, body) = {
        api.register("ada@example.com").await;
        let token = api.login("ada@example.com").await.0;
        api.post(
            "/trackers/claim",
            Some(&token),
            json!({"tracker_id": "collar-9", "claim_code": claim}),
        )
        .await
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    browser
        .click("[data-testid=admin-tracker][data-tracker-id=collar-9] [data-testid=admin-revoke]")
        .await;
    browser
        .wait_until("revoked", "document.querySelector('[data-testid=admin-tracker][data-tracker-id=collar-9]')?.textContent.includes('revoked')")
        .await;
    finish(browser, app).await;
}

#[tokio::test]
async fn signing_in_and_moving_between_screens_works_from_the_keyboard() {
    let (app, api, url) = app_with(|_| {}).await;
    api.register("ada@example.com").await;
    let browser = Browser::start(Screen::Desktop).await;
    browser.goto(&url).await;
    browser.find("[data-testid=email]").await;
    // The email field has the focus; Tab to the password, Enter submits.
    browser
        .wait_until(
            "focus on the email field",
            "document.activeElement?.dataset.testid === 'email'",
        )
        .await;
    let active = browser.client.active_element().await.unwrap();
    active.send_keys("ada@example.com\u{E004}").await.unwrap();
    let active = browser.client.active_element().await.unwrap();
    assert_eq!(
        active.attr("data-testid").await.unwrap().as_deref(),
        Some("password")
    );
    active
        .send_keys(&format!("{PASSWORD}\u{E007}"))
        .await
        .unwrap();
    browser
        .wait_until(
            "signed in",
            "document.querySelector('[data-testid=connection-state][data-state=live]')",
        )
        .await;
    // Tab from the page's start reaches the screens' links; Enter opens one.
    let mut reached = false;
    for _ in 0..10 {
        browser
            .client
            .active_element()
            .await
            .unwrap()
            .send_keys("\u{E004}")
            .await
            .unwrap();
        let id = browser
            .js(
                "return document.activeElement?.dataset.testid || null;",
                vec![],
            )
            .await;
        if id == "tab-apps" {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab never reached the Apps link");
    browser
        .client
        .active_element()
        .await
        .unwrap()
        .send_keys("\u{E007}")
        .await
        .unwrap();
    browser
        .wait_until(
            "the Apps screen",
            "document.querySelector('[data-testid=key-create]')",
        )
        .await;
    finish(browser, app).await;
}

#[tokio::test]
async fn a_polygon_zone_is_drawn_renamed_reassigned_and_deleted() {
    let (app, api, url) = app_with(|_| {}).await;
    let rex = collar(&app, "rex", Some("Rex")).await;
    let luna = collar(&app, "luna", Some("Luna")).await;
    let token = api.owner_of("ada@example.com", &[&rex, &luna]).await;
    let mut device = ScriptedCollar::connect(&app, &rex).await;
    device.fix(52.5200, 13.4050).await;
    let browser = Browser::start(Screen::Desktop).await;
    browser.sign_in(&url, "ada@example.com", PASSWORD).await;
    browser
        .wait_until("Rex's marker", &marker_position("rex"))
        .await;
    browser.open("#/pets/rex").await;
    browser.open("#/zones").await;
    browser.click("[data-testid=draw-polygon]").await;
    browser.find("[data-testid=drawing-hint]").await;
    // Three corners around the middle of the map, then the first again to close it.
    let map = browser
        .js("const r = document.querySelector('[data-testid=map]').getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2];", vec![])
        .await;
    let (cx, cy) = (map[0].as_f64().unwrap(), map[1].as_f64().unwrap());
    let mut mouse = MouseActions::new("mouse".to_owned());
    for (dx, dy) in [(-80.0, -60.0), (90.0, -50.0), (20.0, 90.0), (-80.0, -60.0)] {
        mouse = mouse
            .then(PointerAction::MoveTo {
                duration: Some(Duration::from_millis(100)),
                x: cx + dx,
                y: cy + dy,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Pause {
                duration: Duration::from_millis(150),
            });
    }
    browser.client.perform_actions(mouse).await.unwrap();
    browser.find("[data-testid=zone-new]").await;
    browser.fill("[data-testid=zone-name-input]", "Park").await;
    browser
        .click("[data-testid=zone-pet][data-tracker-id=luna]")
        .await;
    browser.click("[data-testid=zone-save]").await;
    browser
        .wait_until(
            "listed",
            "[...document.querySelectorAll('[data-testid=zone-name]')].some(z => z.textContent === 'Park')",
        )
        .await;
    let (_, zones) = api.get("/geofences", &token).await;
    let zone = zones["geofences"][0].clone();
    assert_eq!(zone["shape"]["type"], "Polygon", "{zone}");
    assert_eq!(
        zone["shape"]["coordinates"][0].as_array().unwrap().len(),
        4,
        "three corners, closed: {zone}"
    );
    let mut assigned: Vec<String> = serde_json::from_value(zone["trackers"].clone()).unwrap();
    assigned.sort();
    assert_eq!(assigned, ["luna", "rex"], "Rex was selected, Luna ticked");

    // Edit: a new name, Rex no longer assigned; the shape is kept.
    browser
        .click("[data-testid=zone] [data-testid=zone-edit]")
        .await;
    browser
        .fill("[data-testid=zone-name-input]", "Big park")
        .await;
    browser
        .click("[data-testid=zone-pet][data-tracker-id=rex]")
        .await;
    browser.click("[data-testid=zone-save]").await;
    browser
        .wait_until(
            "renamed",
            "[...document.querySelectorAll('[data-testid=zone-name]')].some(z => z.textContent === 'Big park')",
        )
        .await;
    let (_, zones) = api.get("/geofences", &token).await;
    let edited = &zones["geofences"][0];
    assert_eq!(edited["trackers"], json!(["luna"]), "{edited}");
    assert_eq!(edited["shape"], zone["shape"], "{edited}");

    // Delete takes a second click.
    browser
        .click("[data-testid=zone] [data-testid=zone-delete]")
        .await;
    let still = browser
        .js(
            "return document.querySelectorAll('[data-testid=zone]').length;",
            vec![],
        )
        .await;
    assert_eq!(still, 1);
    browser
        .click("[data-testid=zone] [data-testid=zone-delete]")
        .await;
    browser.find("[data-testid=no-zones]").await;
    let (_, zones) = api.get("/geofences", &token).await;
    assert_eq!(zones["geofences"], json!([]));
    finish(browser, app).await;
}

/// `pettracker demo` as a user runs it: its first line says where the app is and how to sign in,
/// and following it shows the demo's pets moving.
#[tokio::test]
async fn the_demos_first_line_is_the_app_url_and_a_login_that_shows_its_pets_moving() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    use secrecy::ExposeSecret;
    let db = pettracker::testing::fresh_database().await;
    let dir = std::env::temp_dir().join(format!("pettracker-demo-web-{}", db.name));
    let mut child = common::serve::pettracker_command()
        .args([
            "demo",
            "--http-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "127.0.0.1:0",
        ])
        .args(["--pets", "3", "--interval", "1", "--dir"])
        .arg(&dir)
        .env("DATABASE_URL", db.url.expose_secret())
        // No internet here: no basemap.
        .env("PETTRACKER_MAP_TILE_URL", "")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the demo printed nothing");
    // "pettracker demo: open http://ADDR/ and sign in as EMAIL / PASSWORD"
    let words: Vec<&str> = first.split_whitespace().collect();
    let url = words
        .iter()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL first: {first}"));
    let (email, password) = first
        .split_once("sign in as ")
        .and_then(|(_, login)| login.split_once(" / "))
        .unwrap_or_else(|| panic!("no login first: {first}"));

    let mut browser = Browser::start(Screen::Phone).await;
    browser.sign_in(url, email.trim(), password.trim()).await;
    let ids = browser
        .wait_until(
            "three pets listed",
            "(() => { const ids = [...document.querySelectorAll('[data-testid=pet-marker]')].map(m => m.dataset.trackerId); return ids.length === 3 ? ids : null; })()",
        )
        .await;
    let first_id = ids[0].as_str().unwrap().to_owned();
    let at = browser
        .wait_until("its marker placed", &marker_position(&first_id))
        .await;
    // The demo's collars report every second; their pets walk.
    browser
        .wait_until(
            "the pet moved on the map",
            &format!(
                "(() => {{ const p = {}; return p && (p[0] !== {} || p[1] !== {}); }})()",
                marker_position(&first_id),
                at[0],
                at[1]
            ),
        )
        .await;
    browser.assert_console_clean(&[]).await;
    browser.close().await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success(), "the demo stops cleanly");
    let _ = std::fs::remove_dir_all(&dir);
}
