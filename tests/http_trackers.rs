//! Trackers over real HTTP: claiming, sharing, who may see and change what, latest fix and
//! paged history — a whole app on port 0 with a fresh database, fixes sent over real MQTT.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::api::{Api, assert_error};
use common::{TestApp, connect, options, spawn_app, spawn_app_with, wait_for};
use gateway::protocol::TrackerId;
use gateway::storage::ingest::{BatchRows, FixRow, write_batch};
use gateway::storage::trackers::{Provisioned, provision};
use pettracker::config::StorageConfig;
use pettracker::retention::{RetentionSettings, run_once};
use reqwest::{Method, StatusCode};
use rumqttc::{Packet, QoS};
use serde_json::{Value, json};

async fn collar(app: &TestApp, id: &str) -> Provisioned {
    provision(&app.app.pool, &TrackerId::parse(id).unwrap(), None)
        .await
        .unwrap()
}

/// Registers and logs in; returns (user id, access token).
async fn user(api: &Api, email: &str) -> (i64, String) {
    let id = api.register(email).await;
    (id, api.login(email).await.0)
}

async fn claim(api: &Api, token: &str, collar: &Provisioned) -> (StatusCode, Value) {
    api.post(
        "/trackers/claim",
        Some(token),
        json!({"tracker_id": collar.tracker_id, "claim_code": collar.claim_code}),
    )
    .await
}

/// The claim time of a successful claim: history before it is not the claimant's.
fn claimed_at((status, body): (StatusCode, Value)) -> DateTime<Utc> {
    assert_eq!(status, StatusCode::OK, "{body}");
    body["claimed_at"].as_str().unwrap().parse().unwrap()
}

/// Stores fixes `seconds` after `start` (each with that number as its `seq`) through the ingest
/// write path, in one batch.
async fn store_fixes(app: &TestApp, tracker: &str, start: DateTime<Utc>, seconds: &[i64]) {
    let fixes = seconds
        .iter()
        .map(|s| FixRow {
            tracker_id: tracker.to_owned(),
            device_time: start + TimeDelta::seconds(*s),
            received_at: Utc::now(),
            lat: 52.5,
            lon: 13.4,
            altitude: None,
            accuracy: None,
            speed: None,
            heading: None,
            satellites: None,
            battery: None,
            seq: Some(*s),
        })
        .collect();
    let mut client = app.app.pool.get().await.unwrap();
    let rows = BatchRows {
        fixes,
        ..BatchRows::default()
    };
    write_batch(&mut client, &rows, None).await.unwrap();
}

/// The `seq` of every fix of rex's history for `query`, following the cursor to the last page.
async fn seqs_of_all_pages(api: &Api, token: &str, query: &str) -> Vec<i64> {
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api
            .get(&format!("/trackers/rex/positions?{query}{cursor}"), token)
            .await;
        // Hundreds of pages in a row outrun the per-user rate limit: wait as a client would.
        if status == StatusCode::TOO_MANY_REQUESTS {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(
            page["positions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["seq"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return seen,
        }
    }
}

/// Of fixes stored `seconds` after `start` (sorted), the last of each epoch-aligned interval of
/// `width` seconds: what bucketed history must return, computed without the database.
fn last_of_each_interval(start: DateTime<Utc>, seconds: &[i64], width: i64) -> Vec<i64> {
    let slot = |s: i64| {
        (start + TimeDelta::seconds(s))
            .timestamp()
            .div_euclid(width)
    };
    let mut want: Vec<i64> = Vec::new();
    for s in seconds.iter().copied() {
        if want.last().is_some_and(|l| slot(*l) == slot(s)) {
            want.pop();
        }
        want.push(s);
    }
    want
}

#[tokio::test]
async fn an_owner_claims_a_tracker_with_its_code_and_sees_its_live_fix() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;

    // Wrong code and unknown tracker: the same answer, so ids cannot be probed.
    let (status, wrong) = api
        .post(
            "/trackers/claim",
            Some(&ada),
            json!({"tracker_id": "rex", "claim_code": "AAAAAAAAAAAA"}),
        )
        .await;
    assert_error(status, &wrong, 400, "bad_request");
    let (status, unknown) = api
        .post(
            "/trackers/claim",
            Some(&ada),
            json!({"tracker_id": "nobody", "claim_code": rex.claim_code}),
        )
        .await;
    assert_eq!((status, &unknown), (StatusCode::BAD_REQUEST, &wrong));

    let (status, body) = claim(&api, &ada, &rex).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "owner");
    // Claiming again (a retried request) is fine.
    assert_eq!(claim(&api, &ada, &rex).await.0, StatusCode::OK);

    // The collar reports over MQTT; the owner sees it as the latest fix.
    let (client, mut events) = connect(options(app.mqtt_port(), "rex", "rex", &rex.secret))
        .await
        .unwrap();
    // After the claim: fixes from before it belong to whoever had the collar then.
    let ts = Utc::now();
    let fix = format!(
        r#"{{"ts":"{}","lat":52.52,"lon":13.405,"acc":4.0,"bat":81,"seq":9}}"#,
        ts.to_rfc3339()
    );
    client
        .publish("trackers/rex/telemetry", QoS::AtLeastOnce, false, fix)
        .await
        .unwrap();
    wait_for(&mut events, |p| {
        matches!(p, Packet::PubAck(_)).then_some(())
    })
    .await;
    let (status, latest) = api.get("/trackers/rex/latest", &ada).await;
    assert_eq!(status, StatusCode::OK, "{latest}");
    assert_eq!(latest["status"]["online"], true, "{latest}");
    assert_eq!(latest["status"]["last_fix"]["lat"], 52.52, "{latest}");
    assert_eq!(latest["status"]["last_fix"]["seq"], 9, "{latest}");
    assert_eq!(latest["status"]["battery"], 81, "{latest}");

    let (status, list) = api.get("/trackers", &ada).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["trackers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["rex"]);
    app.stop().await;
}

#[tokio::test]
async fn another_users_tracker_is_a_404_on_every_route_and_cannot_be_claimed() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let (_, eve) = user(&api, "eve@example.com").await;
    let rex = collar(&app, "rex").await;
    assert_eq!(claim(&api, &ada, &rex).await.0, StatusCode::OK);

    // Even with the claim code, Eve cannot take a claimed tracker, and learns nothing.
    let (status, body) = claim(&api, &eve, &rex).await;
    assert_error(status, &body, 400, "bad_request");

    for (method, path, body) in [
        (Method::GET, "/trackers/rex", None),
        (Method::GET, "/trackers/rex/latest", None),
        (Method::GET, "/trackers/rex/positions", None),
        (Method::GET, "/trackers/rex/members", None),
        (
            Method::PATCH,
            "/trackers/rex",
            Some(json!({"pet_name": "Mine"})),
        ),
        (Method::DELETE, "/trackers/rex", None),
        (
            Method::POST,
            "/trackers/rex/members",
            Some(json!({"email": "eve@example.com"})),
        ),
    ] {
        let (status, _, answer) = api
            .call(method.clone(), path, Some(&eve), body.clone())
            .await;
        assert_error(status, &answer, 404, "not_found");
        // And a tracker that does not exist answers exactly the same.
        let ghost = path.replace("rex", "ghost");
        let (ghost_status, _, ghost_answer) = api.call(method, &ghost, Some(&eve), body).await;
        assert_eq!((ghost_status, &ghost_answer), (status, &answer), "{path}");
    }
    let (_, list) = api.get("/trackers", &eve).await;
    assert_eq!(list["trackers"], json!([]));
    // Without a token, nothing at all.
    let (status, _, body) = api.call(Method::GET, "/trackers", None, None).await;
    assert_error(status, &body, 401, "unauthorized");
    app.stop().await;
}

#[tokio::test]
async fn a_viewer_sees_positions_but_cannot_change_share_or_release() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (ada_id, ada) = user(&api, "ada@example.com").await;
    let (bob_id, bob) = user(&api, "bob@example.com").await;
    let rex = collar(&app, "rex").await;
    assert_eq!(claim(&api, &ada, &rex).await.0, StatusCode::OK);

    let (status, member) = api
        .post(
            "/trackers/rex/members",
            Some(&ada),
            json!({"email": "BOB@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    assert_eq!(member["user_id"], bob_id);
    // The owner is not added as a member of their own tracker.
    let (status, body) = api
        .post(
            "/trackers/rex/members",
            Some(&ada),
            json!({"email": "ada@example.com"}),
        )
        .await;
    assert_error(status, &body, 409, "conflict");

    let (_, list) = api.get("/trackers", &bob).await;
    assert_eq!(list["trackers"][0]["role"], "viewer", "{list}");
    assert_eq!(
        api.get("/trackers/rex/positions", &bob).await.0,
        StatusCode::OK
    );
    assert_eq!(
        api.get("/trackers/rex/members", &bob).await.0,
        StatusCode::OK
    );

    for (method, path, body) in [
        (
            Method::PATCH,
            "/trackers/rex",
            Some(json!({"pet_name": "Bob's"})),
        ),
        (Method::DELETE, "/trackers/rex", None),
        (
            Method::POST,
            "/trackers/rex/members",
            Some(json!({"email": "ada@example.com"})),
        ),
    ] {
        let (status, _, body) = api.call(method, path, Some(&bob), body).await;
        assert_error(status, &body, 403, "forbidden");
    }
    let (status, body) = api
        .delete(&format!("/trackers/rex/members/{ada_id}"), &bob)
        .await;
    assert_error(status, &body, 403, "forbidden");

    // A viewer may leave; then the tracker is gone for them.
    let (status, _) = api
        .delete(&format!("/trackers/rex/members/{bob_id}"), &bob)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.get("/trackers/rex", &bob).await;
    assert_error(status, &body, 404, "not_found");
    app.stop().await;
}

#[tokio::test]
async fn positions_are_paged_in_device_time_order_with_a_cursor_that_survives_new_fixes() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    let claimed_at = claimed_at(claim(&api, &ada, &rex).await);
    let start = claimed_at + TimeDelta::seconds(1);
    // Stored out of order, and one from before the claim that Ada must not see.
    let mut seconds: Vec<i64> = (0..25).rev().collect();
    seconds.swap(3, 17);
    store_fixes(&app, "rex", start, &seconds).await;
    store_fixes(&app, "rex", claimed_at, &[-3600]).await;

    let from = (start - TimeDelta::hours(2)).to_rfc3339();
    let to = (start + TimeDelta::hours(1)).to_rfc3339();
    let url = |cursor: Option<&str>| {
        let mut u = format!(
            "/trackers/rex/positions?limit=10&from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        );
        if let Some(c) = cursor {
            u.push_str(&format!("&cursor={c}"));
        }
        u
    };
    let mut seen: Vec<i64> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let (status, page) = api.get(&url(cursor.as_deref()), &ada).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(
            page["positions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["seq"].as_i64().unwrap()),
        );
        if pages == 1 {
            // A fix arriving while the client pages: it shows up, later, exactly once.
            store_fixes(&app, "rex", start, &[100]).await;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let want: Vec<i64> = (0..25).chain([100]).collect();
    assert_eq!(
        seen, want,
        "in device-time order, none twice, none from before the claim"
    );
    assert_eq!(pages, 3);
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn bad_history_parameters_get_a_400_naming_the_parameter() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    assert_eq!(claim(&api, &ada, &rex).await.0, StatusCode::OK);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("limit=ten", "limit"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z", "from"),
        ("cursor=zzz", "cursor"),
        ("bucket=5m&colour=red", ""),
    ] {
        let (status, body) = api
            .get(&format!("/trackers/rex/positions?{query}"), &ada)
            .await;
        assert_error(status, &body, 400, "bad_request");
        if !field.is_empty() {
            assert_eq!(body["field"], field, "{query}: {body}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_read_only_api_key_reads_trackers_but_cannot_change_them() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    assert_eq!(claim(&api, &ada, &rex).await.0, StatusCode::OK);
    let (_, key) = api.new_key(&ada, "read").await;
    let (status, list) = api.get("/trackers", &key).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["trackers"][0]["id"], "rex");
    let (status, _, body) = api
        .call(
            Method::PATCH,
            "/trackers/rex",
            Some(&key),
            Some(json!({"pet_name": "Rex"})),
        )
        .await;
    assert_error(status, &body, 403, "forbidden");
    // The owner's own token may.
    let (status, _, body) = api
        .call(
            Method::PATCH,
            "/trackers/rex",
            Some(&ada),
            Some(json!({"pet_name": "  Rex  "})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["pet_name"], "Rex");
    app.stop().await;
}

#[tokio::test]
async fn a_released_tracker_can_be_claimed_by_someone_else_who_does_not_see_the_old_history() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let (_, bob) = user(&api, "bob@example.com").await;
    let rex = collar(&app, "rex").await;
    let claimed_at = claimed_at(claim(&api, &ada, &rex).await);
    // A fix taken while Ada owned the collar: she sees it.
    store_fixes(&app, "rex", claimed_at, &[0]).await;
    let from = urlencode(&(claimed_at - TimeDelta::hours(1)).to_rfc3339());
    let (_, page) = api
        .get(&format!("/trackers/rex/positions?from={from}"), &ada)
        .await;
    assert_eq!(
        page["positions"].as_array().map(Vec::len),
        Some(1),
        "{page}"
    );
    assert_eq!(
        api.delete("/trackers/rex", &ada).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        api.get("/trackers/rex", &ada).await.0,
        StatusCode::NOT_FOUND
    );

    let (status, body) = claim(&api, &bob, &rex).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, page) = api
        .get(&format!("/trackers/rex/positions?from={from}"), &bob)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["positions"], json!([]), "Ada's history leaked to Bob");
    assert!(body["status"]["last_fix"].is_null(), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn bucketed_history_returns_the_last_fix_of_each_interval_across_pages() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    let claimed_at = claimed_at(claim(&api, &ada, &rex).await);
    let start = claimed_at + TimeDelta::seconds(1);
    let seconds: Vec<i64> = (0..=600).step_by(10).collect();
    store_fixes(&app, "rex", start, &seconds).await;

    // The last fix of each epoch-aligned minute, in order.
    let want = last_of_each_interval(start, &seconds, 60);
    let from = urlencode(&claimed_at.to_rfc3339());
    let seen = seqs_of_all_pages(&api, &ada, &format!("bucket=1m&limit=3&from={from}")).await;
    assert_eq!(seen, want);
    let (status, body) = api.get("/trackers/rex/positions?bucket=5", &ada).await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "bucket");
    app.stop().await;
}

#[tokio::test]
async fn bucketed_history_jumps_over_empty_intervals_and_leaves_out_fixes_from_before_the_claim() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    let claimed_at = claimed_at(claim(&api, &ada, &rex).await);
    // A fix from before the claim shares the first interval with later ones; then long
    // silences. All three plans: 1-minute buckets read every fix, 7-minute ones probe the
    // index, multiples of 5 minutes read the intervals kept at ingest.
    let seconds = [-1, 1, 2, 30, 600, 610, 3_000, 7_200, 7_201, 20_000];
    store_fixes(&app, "rex", claimed_at, &seconds).await;
    let from = urlencode(&(claimed_at - TimeDelta::minutes(5)).to_rfc3339());
    let to = urlencode(&(claimed_at + TimeDelta::hours(8)).to_rfc3339());
    let after_claim: Vec<i64> = seconds.iter().copied().filter(|s| *s >= 0).collect();
    for (bucket, width) in [
        ("1m", 60),
        ("5m", 300),
        ("7m", 420),
        ("15m", 900),
        ("1h", 3_600),
    ] {
        let want = last_of_each_interval(claimed_at, &after_claim, width);
        // Two per page, so the cursor crosses empty intervals too.
        let query = format!("bucket={bucket}&limit=2&from={from}&to={to}");
        let seen = seqs_of_all_pages(&api, &ada, &query).await;
        assert_eq!(seen, want, "bucket={bucket}");
    }
    app.stop().await;
}

/// Rows of `positions_5m` the reader trusts (intervals before `pettracker_5m_exact_before`)
/// that are not the last fix of their interval, and intervals before it that have no row.
const KEPT_INTERVALS_DIFFERING_FROM_THE_FIXES: &str = "WITH computed AS (
    SELECT DISTINCT ON (p.tracker_id, b) p.tracker_id, b AS bucket, p.device_time, p.lat, p.lon, p.seq
    FROM positions p,
         LATERAL date_bin('5 minutes', p.device_time, TIMESTAMPTZ '1970-01-01 00:00:00+00') b
    ORDER BY p.tracker_id, b, p.device_time DESC
), kept AS (
    SELECT tracker_id, bucket, device_time, lat, lon, seq FROM positions_5m
)
SELECT count(*) FROM (
    (SELECT * FROM kept WHERE bucket < pettracker_5m_exact_before(tracker_id)
     EXCEPT SELECT * FROM computed)
    UNION ALL
    (SELECT * FROM computed WHERE bucket < pettracker_5m_exact_before(tracker_id)
     EXCEPT SELECT * FROM kept)) differing";

#[tokio::test]
async fn bucketed_history_is_the_same_from_kept_intervals_when_fixes_arrive_late_and_the_range_cuts_intervals()
 {
    // The background settle pass runs once at start and not again for an hour: only the test's
    // own passes keep intervals, so what each batch and each pass wrote can be told apart.
    let app = spawn_app_with(|c| c.storage.days_settle_interval_secs = 3_600).await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    claimed_at(claim(&api, &ada, &rex).await);
    // Dated before the settle pass's mark, so that the pass keeps their intervals and fixes
    // written after it are late.
    let start = Utc::now() - TimeDelta::hours(4);
    date_claim(&app, start - TimeDelta::days(1)).await;
    // Three hours at a fix every 20 s: the newer half stored first, then the older half, then
    // the older half again (re-sent duplicates), then late fixes into intervals long closed.
    let every: Vec<i64> = (0..10_800).step_by(20).collect();
    let (older, newer) = every.split_at(every.len() / 2);
    let late: Vec<i64> = every.iter().step_by(15).map(|s| s + 7).collect();
    let mut stored: Vec<i64> = Vec::new();
    // Both ends of the first range fall inside 5-minute intervals; the second runs past the
    // clock, so past the pass's mark.
    let ranges = [(1_234, 9_876), (1_234, 5 * 3_600)];
    for (step, batch) in [newer, older, older, &late[..]].into_iter().enumerate() {
        store_fixes(&app, "rex", start, batch).await;
        stored.extend(batch);
        stored.sort_unstable();
        stored.dedup();
        if step == 0 {
            // Plain PostgreSQL: the batch left the intervals to the settle pass.
            assert_eq!(app.count("SELECT count(*) FROM positions_5m").await, 0);
        }
        // Read as written (new intervals and late ones from the fixes), then once the pass
        // has kept them.
        for settled in [false, true] {
            if settled {
                let pass = pettracker::days::settle_now(&app.app.pool)
                    .await
                    .unwrap()
                    .unwrap();
                // Re-sent fixes add nothing; late ones change a row only where one of them is
                // its interval's last fix, which depends on the clock.
                assert!(step >= 2 || pass.intervals > 0, "step {step}: {pass:?}");
                assert_eq!(
                    app.count(KEPT_INTERVALS_DIFFERING_FROM_THE_FIXES).await,
                    0,
                    "step {step}"
                );
            }
            for (lo, hi) in ranges {
                let from = urlencode(&(start + TimeDelta::seconds(lo)).to_rfc3339());
                let to = urlencode(&(start + TimeDelta::seconds(hi)).to_rfc3339());
                let in_range: Vec<i64> = stored
                    .iter()
                    .copied()
                    .filter(|s| (lo..hi).contains(s))
                    .collect();
                for (bucket, width) in [
                    ("5m", 300),
                    ("10m", 600),
                    ("15m", 900),
                    ("1h", 3_600),
                    ("7m", 420),
                ] {
                    let want = last_of_each_interval(start, &in_range, width);
                    let query = format!("bucket={bucket}&limit=4&from={from}&to={to}");
                    let seen = seqs_of_all_pages(&api, &ada, &query).await;
                    assert_eq!(
                        seen, want,
                        "step {step}, settled: {settled}, {lo}..{hi}, bucket={bucket}"
                    );
                }
            }
        }
    }
    // The pass kept the intervals: bucketed history read them, not the fixes.
    assert!(app.count("SELECT count(*) FROM positions_5m").await >= 36);
    app.stop().await;
}

#[tokio::test]
async fn the_summary_gives_points_distance_and_time_moving_per_day_counting_only_fixes_after_the_claim()
 {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    claimed_at(claim(&api, &ada, &rex).await);
    // The claim is dated to yesterday noon, so that every fix below falls on the day the test
    // means, whatever the time of day the test runs at.
    let claimed_at = (Utc::now().date_naive() - TimeDelta::days(1))
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc();
    date_claim(&app, claimed_at).await;
    let client = app.app.pool.get().await.unwrap();
    let next_day = claimed_at + TimeDelta::days(1);
    for (t, lat) in [
        (claimed_at - TimeDelta::seconds(1), 40.0), // the previous owner's: not counted
        (claimed_at + TimeDelta::seconds(1), 52.50),
        (claimed_at + TimeDelta::seconds(2), 52.51),
        (claimed_at + TimeDelta::seconds(3), 52.51), // at rest: not moving
        (next_day, 52.60),
    ] {
        client
            .execute(
                "INSERT INTO positions (tracker_id, device_time, lat, lon) VALUES ('rex', $1, $2, 13.4)",
                &[&t, &lat],
            )
            .await
            .unwrap();
    }
    let from = claimed_at.date_naive().format("%Y-%m-%d");
    let (status, body) = api
        .get(&format!("/trackers/rex/summary?from={from}"), &ada)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let days = body["days"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{body}");
    assert_eq!(days[0]["points"], 3, "{body}");
    let metres = days[0]["distance_m"].as_f64().unwrap();
    assert!((metres - 1111.95).abs() < 1.0, "{body}");
    // 1,112 m in the first second is moving; the second second at rest is not.
    assert_eq!(days[0]["moving_s"].as_f64(), Some(1.0), "{body}");
    assert_eq!(
        (
            days[1]["points"].as_i64(),
            days[1]["distance_m"].as_f64(),
            days[1]["moving_s"].as_f64()
        ),
        (Some(1), Some(0.0), Some(0.0))
    );

    let (status, body) = api
        .get("/trackers/rex/summary?from=2020-01-01&to=2026-01-01", &ada)
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "from");
    app.stop().await;
}

/// Dates rex's claim to `at`, so that a test's fixes fall on the days it means whatever the time
/// of day it runs at.
async fn date_claim(app: &TestApp, at: DateTime<Utc>) {
    app.app
        .pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE trackers SET claimed_at = $1 WHERE tracker_id = 'rex'",
            &[&at],
        )
        .await
        .unwrap();
}

/// Fixes of `tracker` at `base` + each second offset, moving along a walk with pauses (so that
/// distances differ between neighbours and some segments count as moving, some not).
fn walk(tracker: &str, base: DateTime<Utc>, seconds: &[i64]) -> Vec<FixRow> {
    seconds
        .iter()
        .map(|&s| {
            // A pause every fourth hour; otherwise about 1 m/s with some wiggle.
            let hour = s.div_euclid(3_600);
            let moved = if hour % 4 == 3 { 0.0 } else { s as f64 };
            FixRow {
                tracker_id: tracker.to_owned(),
                device_time: base + TimeDelta::seconds(s),
                received_at: Utc::now(),
                lat: 52.5 + moved * 9e-6 + (s as f64 / 977.0).sin() * 2e-4,
                lon: 13.4 + (s as f64 / 1_301.0).cos() * 3e-4,
                altitude: None,
                accuracy: None,
                speed: None,
                heading: None,
                satellites: None,
                battery: None,
                seq: Some(s),
            }
        })
        .collect()
}

async fn write_fixes(app: &TestApp, fixes: Vec<FixRow>) {
    let mut client = app.app.pool.get().await.unwrap();
    let rows = BatchRows {
        fixes,
        ..BatchRows::default()
    };
    write_batch(&mut client, &rows, None).await.unwrap();
}

/// One day of a summary, comparable exactly (distances bit for bit).
type Day = (DateTime<Utc>, i64, f64, f64, DateTime<Utc>, DateTime<Utc>);

/// The summary of `from..to` computed from the stored fixes, the way it was before days were
/// kept (and the way the `daily_summaries` view does).
async fn summary_from_fixes(app: &TestApp, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Day> {
    let client = app.app.pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT day, count(*),
                    coalesce(sum(haversine_m(prev_lat, prev_lon, lat, lon))
                        FILTER (WHERE prev_lat IS NOT NULL), 0),
                    coalesce(sum(moving_segment_s(prev_time, prev_lat, prev_lon,
                                                  device_time, lat, lon)), 0),
                    min(device_time), max(device_time)
             FROM (SELECT device_time, lat, lon, date_trunc('day', device_time, 'UTC') AS day,
                          lag(lat) OVER w AS prev_lat, lag(lon) OVER w AS prev_lon,
                          lag(device_time) OVER w AS prev_time
                   FROM positions
                   WHERE tracker_id = 'rex' AND device_time >= $1 AND device_time < $2
                   WINDOW w AS (PARTITION BY date_trunc('day', device_time, 'UTC')
                                ORDER BY device_time)) fixes
             GROUP BY day ORDER BY day",
            &[&from, &to],
        )
        .await
        .unwrap();
    // As the API's JSON carries them: the same number prints the same digits, which the test's
    // JSON parser (not correctly rounded) reads back the same way. The kept rows are compared
    // bit for bit in SQL (KEPT_DAYS_DIFFERING_FROM_THE_VIEW).
    let via_json =
        |x: f64| -> f64 { serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap() };
    rows.iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                via_json(r.get(2)),
                via_json(r.get(3)),
                r.get(4),
                r.get(5),
            )
        })
        .collect()
}

async fn summary_from_api(
    api: &Api,
    token: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Day> {
    let (from, to) = (urlencode(&from.to_rfc3339()), urlencode(&to.to_rfc3339()));
    let (status, body) = api
        .get(&format!("/trackers/rex/summary?from={from}&to={to}"), token)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let time = |v: &Value| -> DateTime<Utc> { v.as_str().unwrap().parse().unwrap() };
    body["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                time(&d["day"]),
                d["points"].as_i64().unwrap(),
                d["distance_m"].as_f64().unwrap(),
                d["moving_s"].as_f64().unwrap(),
                time(&d["first_fix"]),
                time(&d["last_fix"]),
            )
        })
        .collect()
}

/// The kept days that are not stale differ from the view over the fixes in no row and no bit.
const KEPT_DAYS_DIFFERING_FROM_THE_VIEW: &str = "SELECT count(*) FROM (
    (SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix, last_lat, last_lon
     FROM tracker_days WHERE NOT stale
     EXCEPT SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix, last_lat, last_lon
     FROM daily_summaries)
    UNION ALL
    (SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix, last_lat, last_lon
     FROM daily_summaries
     WHERE (tracker_id, day) NOT IN (SELECT tracker_id, day FROM tracker_days WHERE stale)
     EXCEPT SELECT tracker_id, day, points, distance_m, moving_s, first_fix, last_fix, last_lat, last_lon
     FROM tracker_days)) differing";

#[tokio::test]
async fn the_kept_daily_summary_is_the_one_computed_from_the_fixes_through_late_fixes_and_retention()
 {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    collar(&app, "fido").await;
    claimed_at(claim(&api, &ada, &rex).await);
    // Its days are counted from today and retention's window from the clock: a run that
    // crosses midnight UTC would shift one against the other, so it starts after midnight.
    let to_midnight = (Utc::now().date_naive() + TimeDelta::days(1))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        - Utc::now();
    if to_midnight < TimeDelta::minutes(5) {
        tokio::time::sleep((to_midnight + TimeDelta::seconds(1)).to_std().unwrap()).await;
    }
    // Four whole days before today; the claim before them, so that every fix counts.
    let base = (Utc::now().date_naive() - TimeDelta::days(4))
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    date_claim(&app, base - TimeDelta::days(1)).await;
    // Whole days, days cut by the range at both ends, and a range inside one day.
    let ranges = [
        (base - TimeDelta::days(1), base + TimeDelta::days(5)),
        (
            base + TimeDelta::hours(27) + TimeDelta::seconds(17),
            base + TimeDelta::hours(77) + TimeDelta::minutes(3),
        ),
        (base + TimeDelta::hours(50), base + TimeDelta::hours(52)),
    ];
    // Read before the settle pass (kept rows extended by what they lack, notes of late fixes)
    // and after it (the rows alone).
    let same_as_from_fixes = |step: &'static str| {
        let (api, app, ada, ranges) = (&api, &app, &ada, &ranges);
        async move {
            for settled in [false, true] {
                if settled {
                    pettracker::days::settle_now(&app.app.pool).await.unwrap();
                }
                for (i, (from, to)) in ranges.iter().copied().enumerate() {
                    let want = summary_from_fixes(app, from, to).await;
                    // The whole range always holds day 3, which retention keeps.
                    assert!(i > 0 || want.len() >= 2, "{step}: {want:?}");
                    assert_eq!(
                        summary_from_api(api, ada, from, to).await,
                        want,
                        "{step}, settled: {settled}: {from}..{to}"
                    );
                }
            }
            assert_eq!(
                app.count(KEPT_DAYS_DIFFERING_FROM_THE_VIEW).await,
                0,
                "{step}"
            );
            assert_eq!(
                app.count("SELECT count(*) FROM tracker_days_pending").await,
                0,
                "{step}"
            );
        }
    };

    // A fix every 2 minutes for four days, in order, in batches that cross midnight, rex's and
    // fido's in the same batches.
    // Settled after every third batch, so that rows are extended by passes as well as read
    // extended.
    let every: Vec<i64> = (0..4 * 86_400).step_by(120).map(|s| s + 60).collect();
    for (i, chunk) in every.chunks(333).enumerate() {
        let mut fixes = walk("rex", base, chunk);
        fixes.extend(walk("fido", base, chunk));
        write_fixes(&app, fixes).await;
        if i % 3 == 2 {
            pettracker::days::settle_now(&app.app.pool).await.unwrap();
        }
    }
    same_as_from_fixes("in order").await;

    // Late, after the days were summarized: into the middle of day 1, before day 1's first fix,
    // and a batch that both appends to day 3 and goes between its fixes; re-sent ones too.
    let late = [
        vec![86_400 + 40_037, 86_400 + 40_099],
        vec![86_400 + 10],
        vec![3 * 86_400 + 7_777, 3 * 86_400 + 86_399],
        vec![86_400 + 40_037, 60, 180],
    ];
    for seconds in &late {
        write_fixes(&app, walk("rex", base, seconds)).await;
    }
    same_as_from_fixes("late fixes").await;

    // Retention keeping 2 days: days 0 and 1 go, day 2 is cut where the window starts.
    let storage = StorageConfig {
        retention_days: 2,
        ..StorageConfig::default()
    };
    let settings = RetentionSettings::from_config(&storage);
    let (_stop, shutdown) = gateway::shutdown::channel();
    run_once(&app.app.pool, &settings, &shutdown).await.unwrap();
    let cut = app
        .count("SELECT count(*) FROM positions WHERE tracker_id = 'rex' AND device_time < now() - interval '2 days'")
        .await;
    assert_eq!(cut, 0);
    same_as_from_fixes("after retention").await;
    // The emptied days are gone, the cut one stays (stale) until a fix settles it.
    let days_before_cut = app
        .count("SELECT count(*) FROM tracker_days WHERE day < now() - interval '3 days'")
        .await;
    assert_eq!(days_before_cut, 0);

    // A late fix into the cut day, at its end: the day is computed again from what is left.
    write_fixes(&app, walk("rex", base, &[3 * 86_400 - 1])).await;
    same_as_from_fixes("a fix into the cut day").await;
    assert_eq!(
        app.count("SELECT count(*) FROM tracker_days WHERE stale AND tracker_id = 'rex'")
            .await,
        0
    );

    // Fixes dated after the mark leave no note: the reader extends today's row by them, and the
    // next pass finds them by rex's newest fix.
    let mark = pettracker::days::settle_now(&app.app.pool)
        .await
        .unwrap()
        .unwrap()
        .mark;
    let today: Vec<FixRow> = [200, 400, 600]
        .iter()
        .map(|ms| {
            let mut fix = walk("rex", base, &[4 * 86_400 + 1])[0].clone();
            fix.device_time = mark + TimeDelta::milliseconds(*ms);
            fix
        })
        .collect();
    write_fixes(&app, today).await;
    assert_eq!(
        app.count("SELECT count(*) FROM tracker_days_pending").await,
        0
    );
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (from, to) = (base, Utc::now() + TimeDelta::days(1));
    let want = summary_from_fixes(&app, from, to).await;
    assert_eq!(
        summary_from_api(&api, &ada, from, to).await,
        want,
        "not yet settled"
    );
    let pass = pettracker::days::settle_now(&app.app.pool)
        .await
        .unwrap()
        .unwrap();
    assert!(pass.days >= 1, "{pass:?}");
    assert_eq!(
        summary_from_api(&api, &ada, from, to).await,
        want,
        "settled"
    );
    assert_eq!(app.count(KEPT_DAYS_DIFFERING_FROM_THE_VIEW).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_fix_committed_while_a_settle_pass_moves_the_mark_past_it_is_in_its_day() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    claimed_at(claim(&api, &ada, &rex).await);
    date_claim(&app, Utc::now() - TimeDelta::days(2)).await;
    let mark = pettracker::days::settle_now(&app.app.pool)
        .await
        .unwrap()
        .unwrap()
        .mark;
    let at = |ms: i64| {
        let mut fix = walk("rex", mark, &[ms / 1_000 + 1])[0].clone();
        fix.device_time = mark + TimeDelta::milliseconds(ms);
        fix
    };
    write_fixes(&app, vec![at(200), at(600)]).await;

    // A writer that read the mark before the pass moved it past its fix: it left no note, and
    // commits only while the pass runs.
    let mut writer = app.app.pool.get().await.unwrap();
    let tx = writer.transaction().await.unwrap();
    let middle = at(400);
    tx.execute(
        "INSERT INTO positions (tracker_id, device_time, lat, lon) VALUES ('rex', $1, $2, $3)",
        &[&middle.device_time, &middle.lat, &middle.lon],
    )
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let pass = {
        let pool = app.app.pool.clone();
        tokio::spawn(async move { pettracker::days::settle_now(&pool).await })
    };
    // Committed only once the pass has moved the mark past the fix (and so waits for it).
    app.wait_for_count(
        &format!(
            "SELECT count(*) FROM tracker_days_mark WHERE settled_through > '{}'",
            middle.device_time.to_rfc3339()
        ),
        1,
    )
    .await;
    tx.commit().await.unwrap();
    let pass = pass.await.unwrap().unwrap().unwrap();
    assert!(pass.mark > middle.device_time, "{pass:?}");

    // The pass waited for the writer: its fix is in the row, between the other two.
    assert_eq!(
        app.count("SELECT count(*) FROM tracker_days_pending").await,
        0
    );
    assert_eq!(
        app.count("SELECT sum(points)::bigint FROM tracker_days WHERE tracker_id = 'rex'")
            .await,
        3
    );
    assert_eq!(app.count(KEPT_DAYS_DIFFERING_FROM_THE_VIEW).await, 0);
    assert_eq!(app.count(KEPT_INTERVALS_DIFFERING_FROM_THE_FIXES).await, 0);
    let (from, to) = (mark - TimeDelta::days(1), Utc::now() + TimeDelta::days(1));
    assert_eq!(
        summary_from_api(&api, &ada, from, to).await,
        summary_from_fixes(&app, from, to).await
    );
    app.stop().await;
}

#[tokio::test]
async fn exports_open_in_standard_parsers_and_hold_every_fix_of_the_range() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let (_, eve) = user(&api, "eve@example.com").await;
    let rex = collar(&app, "rex").await;
    let claimed_at = claimed_at(claim(&api, &ada, &rex).await);
    // More than one chunk of the stream (256 rows).
    let seconds: Vec<i64> = (1..=600).collect();
    store_fixes(&app, "rex", claimed_at, &seconds).await;
    let from = urlencode(&claimed_at.to_rfc3339());
    let http = reqwest::Client::new();
    let fetch = |format: &'static str, token: String| {
        let url = format!(
            "http://{}/api/v1/trackers/rex/positions?format={format}&from={from}",
            app.app.http_addr
        );
        let http = http.clone();
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = r.status();
            let content_type = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, content_type, r.text().await.unwrap())
        }
    };

    let (status, ct, csv) = fetch("csv", ada.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("text/csv; charset=utf-8"));
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("ts,lat,lon,alt,acc,spd,hdg,sat,bat,seq"));
    let seqs: Vec<i64> = lines
        .map(|l| l.split(',').nth(9).unwrap().parse().unwrap())
        .collect();
    assert_eq!(seqs, seconds);

    let (status, ct, geojson) = fetch("geojson", ada.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/geo+json"));
    let doc: Value = serde_json::from_str(&geojson).expect("GeoJSON is JSON");
    assert_eq!(doc["type"], "FeatureCollection");
    let features = doc["features"].as_array().unwrap();
    assert_eq!(features[0]["geometry"]["type"], "LineString");
    assert_eq!(
        features[0]["geometry"]["coordinates"]
            .as_array()
            .unwrap()
            .len(),
        600
    );
    assert_eq!(features.len(), 601);
    assert_eq!(features[1]["geometry"]["coordinates"], json!([13.4, 52.5]));
    assert_eq!(features[600]["properties"]["seq"], 600);

    let (status, ct, gpx) = fetch("gpx", ada.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/gpx+xml"));
    let xml = roxmltree::Document::parse(&gpx).expect("GPX is well-formed XML");
    let points: Vec<_> = xml
        .descendants()
        .filter(|n| n.has_tag_name("trkpt"))
        .collect();
    assert_eq!(points.len(), 600);
    assert_eq!(points[0].attribute("lat"), Some("52.5"));
    let first_time = points[0]
        .children()
        .find(|n| n.has_tag_name("time"))
        .and_then(|n| n.text())
        .unwrap();
    let first_time: DateTime<Utc> = first_time.parse().unwrap();
    assert_eq!(first_time, claimed_at + TimeDelta::seconds(1));

    // The same access rules as every other route.
    let (status, _, body) = fetch("gpx", eve).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = api.get("/trackers/rex/positions?format=kml", &ada).await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "format");
    let (status, body) = api
        .get("/trackers/rex/positions?format=csv&limit=5", &ada)
        .await;
    assert_error(status, &body, 400, "bad_request");
    assert_eq!(body["field"], "limit");
    app.stop().await;
}

#[tokio::test]
async fn a_simplified_track_keeps_the_corners_and_drops_fixes_within_the_tolerance() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    let start = claimed_at(claim(&api, &ada, &rex).await) + TimeDelta::seconds(1);
    // 100 fixes north along 13.4 E with 3 m wiggles, then 100 east along 52.51 N: one corner.
    let client = app.app.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO positions (tracker_id, device_time, lat, lon)
             SELECT 'rex', $1::timestamptz + make_interval(secs => i),
                    CASE WHEN i <= 100 THEN 52.50 + i * 0.0001 ELSE 52.51 END,
                    CASE WHEN i <= 100 THEN 13.4 + (i % 2) * 0.00005
                         ELSE 13.4 + (i - 100) * 0.0001 END
             FROM generate_series(0, 200) i",
            &[&start],
        )
        .await
        .unwrap();
    let from = urlencode(&start.to_rfc3339());
    let (status, body) = api
        .get(
            &format!("/trackers/rex/positions?from={from}&simplify=10"),
            &ada,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kept: Vec<&str> = body["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ts"].as_str().unwrap())
        .collect();
    let at = |i: i64| {
        (start + TimeDelta::seconds(i)).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    };
    assert_eq!(kept.len(), 3, "first, corner, last: {body}");
    assert_eq!(body["simplified"]["input_points"], 201, "{body}");
    assert_eq!(body["simplified"]["output_points"], 3, "{body}");
    for (got, want) in kept.iter().zip([at(0), at(100), at(200)]) {
        let (got, want): (DateTime<Utc>, DateTime<Utc>) =
            (got.parse().unwrap(), want.parse().unwrap());
        assert_eq!(got, want, "{body}");
    }
    assert!(body.get("next_cursor").is_none(), "{body}");
    // A tolerance below the wiggles keeps them.
    let (_, body) = api
        .get(
            &format!("/trackers/rex/positions?from={from}&simplify=1"),
            &ada,
        )
        .await;
    assert!(body["positions"].as_array().unwrap().len() > 50, "{body}");

    for (query, field) in [
        ("simplify=0", "simplify"),
        ("simplify=ten", "simplify"),
        ("simplify=10&limit=5", "limit"),
        ("simplify=10&cursor=t0", "cursor"),
        ("simplify=10&format=gpx", "simplify"),
    ] {
        let (status, body) = api
            .get(&format!("/trackers/rex/positions?{query}"), &ada)
            .await;
        assert_error(status, &body, 400, "bad_request");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn simplifying_more_fixes_than_the_server_reads_at_once_is_a_422_naming_the_range() {
    let app = spawn_app().await;
    let api = Api::new(&app);
    let (_, ada) = user(&api, "ada@example.com").await;
    let rex = collar(&app, "rex").await;
    let start = claimed_at(claim(&api, &ada, &rex).await) + TimeDelta::seconds(1);
    let too_many = pettracker::trackers::MAX_SIMPLIFY_INPUT;
    app.app
        .pool
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO positions (tracker_id, device_time, lat, lon)
             SELECT 'rex', $1::timestamptz + make_interval(secs => i), 52.5, 13.4
             FROM generate_series(0, $2::int8) i",
            &[&start, &too_many],
        )
        .await
        .unwrap();
    let from = urlencode(&start.to_rfc3339());
    let to = urlencode(&(start + TimeDelta::days(30)).to_rfc3339());
    let (status, body) = api
        .get(
            &format!("/trackers/rex/positions?from={from}&to={to}&simplify=10"),
            &ada,
        )
        .await;
    assert_error(status, &body, 422, "unprocessable");
    assert_eq!(body["field"], "from", "{body}");
    // Bucketing first thins the range enough.
    let (status, body) = api
        .get(
            &format!("/trackers/rex/positions?from={from}&to={to}&bucket=1m&simplify=10"),
            &ada,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One fix per minute over 200,001 seconds (3,334 or 3,335 minutes by alignment), on one spot: the ends, and the join of the
    // simplifier's first window of 2,000 points.
    let buckets = body["simplified"]["input_points"].as_i64().unwrap();
    assert!((3334..=3335).contains(&buckets), "minutes spanned: {body}");
    assert_eq!(body["simplified"]["output_points"], 3, "{body}");
    app.stop().await;
}
