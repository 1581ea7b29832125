//! The API fuzzed from its own OpenAPI document by schemathesis, with a valid admin token: no
//! answer may be a 5xx, and every answer must have a documented status, content type and
//! schema.
//!
//! Ignored by default because it needs schemathesis (PyPI) and takes minutes; `.ci/run`
//! installs it and runs this test. Bounded by `PETTRACKER_SCHEMATHESIS_MAX_EXAMPLES` (per
//! operation, default 25) and `PETTRACKER_SCHEMATHESIS_MAX_TIME` (seconds, default 300).

mod common;

use common::api::Api;
use common::spawn_app_with;
use reqwest::StatusCode;
use serde_json::json;

fn env_or(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs schemathesis (pip install schemathesis); .ci/run runs it"]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let app = spawn_app_with(|c| {
        c.auth.admin_emails = vec!["admin@example.com".to_owned()];
        // The token must outlive the run; the run must not be slowed into 429s.
        c.auth.access_token_ttl_secs = 86_400;
        c.http.rate_limit_per_second = 1_000_000;
        c.http.rate_limit_burst = 1_000_000;
        c.auth.address_attempts_per_minute = 1_000_000;
        c.auth.address_attempts_burst = 1_000_000;
        c.database.api_pool_size = 8;
        // The broker's endpoints exist only with a shared secret; the run's token is not it,
        // so they answer it 401 (tests/broker_auth.rs covers what lies behind).
        c.broker_auth.secret = Some(secrecy::SecretString::from(
            "schemathesis-broker-secret-0123456789abcdef",
        ));
    })
    .await;
    let api = Api::new(&app);
    api.register("admin@example.com").await;
    let token = api.login("admin@example.com").await.0;
    // Something to find: a tracker the caller owns, with a geofence.
    let (status, rex) = api
        .post(
            "/admin/trackers",
            Some(&token),
            json!({"tracker_id": "rex"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rex}");
    let (status, body) = api
        .post(
            "/trackers/claim",
            Some(&token),
            json!({"tracker_id": "rex", "claim_code": rex["claim_code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let max_examples = env_or("PETTRACKER_SCHEMATHESIS_MAX_EXAMPLES", 25);
    let max_time = env_or("PETTRACKER_SCHEMATHESIS_MAX_TIME", 300);
    let report = std::env::temp_dir().join(format!("schemathesis-{}", app.db.name));
    let base = format!("http://{}/api/v1", app.app.http_addr);
    let output = tokio::process::Command::new("schemathesis")
        .arg("run")
        .arg(format!("{base}/openapi.json"))
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--max-time", &max_time.to_string()])
        .args(["--seed", "15"])
        // Nothing left behind in the work tree.
        .args(["--generation-database", "none"])
        // One worker: with two, hypothesis describes its filters with `ast.parse` from two
        // threads at once, which Python 3.11.7's parser cannot do (it failed a CI run with
        // "AST constructor recursion depth mismatch", a crash of the tool, not a finding).
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .arg("--report-dir")
        .arg(&report)
        .args(["--report", "junit"])
        .arg("--no-color")
        // Its caches go there too, not into the work tree.
        .current_dir({
            std::fs::create_dir_all(&report).expect("report directory");
            &report
        })
        .kill_on_drop(true)
        .output()
        .await
        .expect("schemathesis runs (pip install schemathesis)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found problems (see above)"
    );
    // The closing summary names the test cases run; a run that generated none proves nothing.
    assert!(
        stdout.contains("Test cases:") || stdout.contains("test cases"),
        "no test cases were generated"
    );
    app.stop().await;
}
