//! Retention on plain PostgreSQL while the server runs: every kind of history past its own window is deleted by the background job, in chunks, and everything else is kept.

mod common;

use common::spawn_app_with;
use gateway::storage::retention::ADVISORY_LOCK_KEY;
use pettracker::config::StorageConfig;
use pettracker::retention::{Pass, RetentionSettings, run_once};

/// Old and recent rows of every table the job looks after: old ones past their windows (below),
/// the others within them or never expiring (open commands, pending deliveries). The open command
/// expires tomorrow: one expiring now would get an `expired` event from the dispatcher meanwhile.
const ROWS: &str = "
INSERT INTO positions (tracker_id, device_time, lat, lon)
SELECT 'rex', now() - interval '40 days' + make_interval(secs => s), 52.5, 13.4
FROM generate_series(1, 12000) s;
INSERT INTO positions (tracker_id, device_time, lat, lon)
SELECT 'rex', now() - make_interval(mins => m), 52.5, 13.4 FROM generate_series(1, 10) m;

INSERT INTO positions_5m (tracker_id, bucket, device_time, received_at, lat, lon) VALUES
    ('rex', now() - interval '70 days', now() - interval '70 days', now(), 52.5, 13.4),
    ('rex', now() - interval '40 days', now() - interval '40 days', now(), 52.5, 13.4);

INSERT INTO dead_letters (tracker_id, topic, payload, reason, received_at) VALUES
    ('rex', 'trackers/rex/telemetry', '\\x00', 'old', now() - interval '10 days'),
    ('rex', 'trackers/rex/telemetry', '\\x00', 'recent', now() - interval '1 day');

INSERT INTO commands (id, tracker_id, type, params, status, ttl_secs, expires_at, created_at, updated_at) VALUES
    ('old-done', 'rex', 'buzzer', '{}', 'succeeded', 60, now(), now() - interval '21 days', now() - interval '20 days'),
    ('old-open', 'rex', 'buzzer', '{}', 'queued', 60, now() + interval '1 day', now() - interval '21 days', now() - interval '20 days'),
    ('new-done', 'rex', 'buzzer', '{}', 'failed', 60, now(), now() - interval '2 days', now() - interval '1 day');
INSERT INTO command_events (command_id, status, attempt, at) VALUES
    ('old-done', 'queued', 1, now() - interval '21 days'),
    ('old-done', 'succeeded', 1, now() - interval '20 days'),
    ('new-done', 'failed', 1, now() - interval '1 day');

INSERT INTO users (email, password_hash) VALUES ('ada@example.com', 'x');
INSERT INTO webhooks (user_id, url, secret) SELECT id, 'https://example.com/hook', 's' FROM users;
INSERT INTO alerts (tracker_id, kind, at, created_at) VALUES
    ('rex', 'offline', now() - interval '30 days', now() - interval '30 days'),
    ('rex', 'online', now(), now());
INSERT INTO webhook_deliveries (webhook_id, alert_id, status, created_at)
SELECT w.id, a.id, d.status, now() - d.age
FROM webhooks w, alerts a,
     (VALUES ('delivered', interval '10 days'), ('pending', interval '10 days'),
             ('failed', interval '1 day')) d(status, age)
WHERE a.kind = 'online';
";

/// What must be gone: each table's rows past its window.
const EXPIRED: &str = "SELECT
    (SELECT count(*) FROM positions WHERE device_time < now() - interval '35 days')
  + (SELECT count(*) FROM positions_5m WHERE bucket < now() - interval '65 days')
  + (SELECT count(*) FROM dead_letters WHERE reason = 'old')
  + (SELECT count(*) FROM commands WHERE id = 'old-done')
  + (SELECT count(*) FROM command_events WHERE command_id = 'old-done')
  + (SELECT count(*) FROM alerts WHERE kind = 'offline')
  + (SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered')";

fn windows() -> StorageConfig {
    StorageConfig {
        retention_days: 30,
        positions_5m_retention_days: 60,
        dead_letter_retention_days: 7,
        command_retention_days: 10,
        alert_retention_days: 20,
        webhook_delivery_retention_days: 5,
        retention_interval_secs: 1,
        ..StorageConfig::default()
    }
}

#[tokio::test]
async fn history_past_each_window_is_deleted_while_the_server_runs_and_everything_else_is_kept() {
    let app = spawn_app_with(|c| c.storage = windows()).await;
    app.provision("rex").await;
    // Written after the start, so only the job's later passes can delete them.
    app.app
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute(ROWS)
        .await
        .unwrap();
    assert_eq!(app.count(EXPIRED).await, 12_000 + 1 + 1 + 1 + 2 + 1 + 1);

    app.wait_for_count(EXPIRED, 0).await;

    let kept = [
        ("SELECT count(*) FROM positions", 10),
        // The row written above, in its window. Its bucket is not on a 5-minute boundary, so
        // it is not one the settle pass may have written from the fixes meanwhile.
        (
            "SELECT count(*) FROM positions_5m
             WHERE bucket <> date_bin('5 minutes', bucket, TIMESTAMPTZ '1970-01-01 00:00:00+00')",
            1,
        ),
        ("SELECT count(*) FROM dead_letters", 1),
        (
            "SELECT count(*) FROM commands WHERE id IN ('old-open', 'new-done')",
            2,
        ),
        ("SELECT count(*) FROM commands", 2),
        ("SELECT count(*) FROM command_events", 1),
        ("SELECT count(*) FROM alerts", 1),
        (
            "SELECT count(*) FROM webhook_deliveries WHERE status IN ('pending', 'failed')",
            2,
        ),
        ("SELECT count(*) FROM webhook_deliveries", 2),
    ];
    for (sql, want) in kept {
        assert_eq!(app.count(sql).await, want, "{sql}");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", app.app.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let positions_deleted: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("pettracker_retention_deleted_rows_total{table=\"positions\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no positions counter in:\n{metrics}"));
    assert!(positions_deleted >= 12_000.0, "{positions_deleted}");
    app.stop().await;
}

#[tokio::test]
async fn a_pass_is_skipped_while_another_process_holds_the_retention_lock() {
    let app = spawn_app_with(|c| c.storage = windows()).await;
    app.provision("rex").await;
    let other = app.db.pool.get().await.unwrap();
    other
        .execute("SELECT pg_advisory_lock($1)", &[&ADVISORY_LOCK_KEY])
        .await
        .unwrap();
    app.app
        .pool
        .get()
        .await
        .unwrap()
        .batch_execute(ROWS)
        .await
        .unwrap();
    let settings = RetentionSettings::from_config(&windows());
    let (_stop, shutdown) = gateway::shutdown::channel();
    assert_eq!(
        run_once(&app.app.pool, &settings, &shutdown).await.unwrap(),
        Pass::Skipped
    );
    // Nothing was deleted by anyone meanwhile; once released, a pass does the work.
    assert_eq!(app.count(EXPIRED).await, 12_007);
    other
        .execute("SELECT pg_advisory_unlock($1)", &[&ADVISORY_LOCK_KEY])
        .await
        .unwrap();
    app.wait_for_count(EXPIRED, 0).await;
    app.stop().await;
}
