//! The `pettracker` binary as an operator meets it: migrate, serve, shut down, and clear errors.

mod common;

use std::process::{Command, Stdio};

use common::serve::ServeProcess;

use pettracker::testing::{empty_database, fresh_database};
use secrecy::ExposeSecret;

fn pettracker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pettracker"));
    // Only what a test sets explicitly reaches the binary.
    for (key, _) in std::env::vars() {
        if key.starts_with("PETTRACKER_") || key == "DATABASE_URL" || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn migrate_twice_applies_everything_then_nothing() {
    let db = empty_database().await;
    let run = || {
        pettracker()
            .arg("migrate")
            .env("DATABASE_URL", db.url.expose_secret())
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Every migration the binary embeds, in order.
    let all: Vec<i32> = pettracker::schema::history()
        .migrations()
        .iter()
        .map(|m| m.version)
        .collect();
    assert!(all.len() >= 10, "{all:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains(&format!("applied migrations {all:?}")),
        "{stdout}"
    );
    let second = run();
    assert!(second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stdout).contains("nothing to do"),
        "{}",
        String::from_utf8_lossy(&second.stdout)
    );
}

#[test]
fn a_malformed_database_url_is_one_error_line_naming_the_key() {
    let out = pettracker()
        .arg("migrate")
        .env("DATABASE_URL", "postgres://u:hunter2@127.0.0.1:notaport/db")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("database.url") && errors[0].contains("DATABASE_URL"),
        "{errors:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("hunter2"));
}

#[test]
fn an_unreachable_database_is_one_error_line_naming_the_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = pettracker()
        .arg("migrate")
        .env(
            "DATABASE_URL",
            format!("postgres://u:pw@127.0.0.1:{port}/pets"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&format!("127.0.0.1:{port}/pets")),
        "{errors:?}"
    );
}

#[test]
fn without_postgresql_installed_the_error_says_what_to_install_and_creates_nothing() {
    let data_dir = std::env::temp_dir().join(format!("pettracker-nopg-{}", std::process::id()));
    let out = pettracker()
        .arg("migrate")
        .env("PETTRACKER_PG_BINDIR", "/nonexistent/postgresql/bin")
        .env("PETTRACKER_DATABASE_DATA_DIR", &data_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out.stderr);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("install PostgreSQL") && errors[0].contains("DATABASE_URL"),
        "{errors:?}"
    );
    assert!(!data_dir.exists());
}

#[test]
fn a_bad_setting_in_the_config_file_is_named() {
    let path = std::env::temp_dir().join(format!("pettracker-badcfg-{}.toml", std::process::id()));
    std::fs::write(&path, "[database]\napi_pool_size = 0\n").unwrap();
    let out = pettracker()
        .args(["--config"])
        .arg(&path)
        .arg("migrate")
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let errors = error_lines(&out.stderr);
    assert!(
        errors[0].contains("database.api_pool_size") && errors[0].contains("0 is outside"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn serve_answers_health_checks_and_stops_cleanly_on_sigterm() {
    let db = fresh_database().await;
    let server = ServeProcess::start(
        &["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"],
        &[("DATABASE_URL", db.url.expose_secret().as_ref())],
    );
    let addr = server.field("http_addr").to_owned();
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let status = server.wait().await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn tracker_provision_prints_credentials_once_that_authenticate_and_revoke_ends_them() {
    use gateway::protocol::TrackerId;
    use gateway::storage::trackers::{Provisioned, authenticate};
    let db = fresh_database().await;
    let run = |args: &[&str]| {
        let out = pettracker()
            .arg("tracker")
            .args(args)
            .env("DATABASE_URL", db.url.expose_secret())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let one: Provisioned = serde_json::from_str(&run(&["provision", "rex", "--json"])).unwrap();
    assert_eq!(one.tracker_id, "rex");
    let fleet: Vec<Provisioned> = run(&["provision", "sim", "--count", "3", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<_> = fleet.iter().map(|p| p.tracker_id.as_str()).collect();
    assert_eq!(ids, ["sim-1", "sim-2", "sim-3"]);
    for p in fleet.iter().chain([&one]) {
        let id = TrackerId::parse(&p.tracker_id).unwrap();
        assert!(
            authenticate(&db.pool, &id, p.secret.as_bytes())
                .await
                .unwrap()
        );
    }
    // Stored hashed: neither the secret nor the claim code is in the table.
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT secret_hash, claim_code_hash FROM trackers WHERE tracker_id = 'rex'",
            &[],
        )
        .await
        .unwrap();
    let (secret_hash, claim_hash): (String, String) = (row.get(0), row.get(1));
    assert!(!secret_hash.contains(&one.secret) && !claim_hash.contains(&one.claim_code));

    let list = run(&["list", "--json"]);
    assert!(list.contains("\"sim-2\""), "{list}");
    run(&["revoke", "rex"]);
    let rex = TrackerId::parse("rex").unwrap();
    assert!(
        !authenticate(&db.pool, &rex, one.secret.as_bytes())
            .await
            .unwrap()
    );

    // Provisioning an existing id is refused, and says so.
    let again = pettracker()
        .args(["tracker", "provision", "sim-2"])
        .env("DATABASE_URL", db.url.expose_secret())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("sim-2"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

#[tokio::test]
async fn user_create_reads_the_password_from_stdin_and_prints_the_id() {
    use std::io::Write;
    let db = fresh_database().await;
    let mut child = pettracker()
        .args([
            "user",
            "create",
            "Ada@Example.com",
            "--admin",
            "--password-stdin",
        ])
        .env("DATABASE_URL", db.url.expose_secret())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT email, is_admin, password_hash FROM users WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Ada@Example.com");
    assert!(row.get::<_, bool>(1));
    let hash: String = row.get(2);
    assert!(pettracker::auth::password::matches(
        &hash,
        "correct horse battery"
    ));

    // From the environment; a weak password is refused with the rules; a taken email is named.
    let run = |email: &str, password: &str| {
        pettracker()
            .args(["user", "create", email])
            .env("DATABASE_URL", db.url.expose_secret())
            .env("PETTRACKER_USER_PASSWORD", password)
            .output()
            .unwrap()
    };
    let bob = run("bob@example.com", "another long password");
    assert!(
        bob.status.success(),
        "{}",
        String::from_utf8_lossy(&bob.stderr)
    );
    let weak = run("carol@example.com", "short");
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("10"));
    let taken = run("ada@example.com", "yet another password");
    assert!(!taken.status.success());
    assert!(
        String::from_utf8_lossy(&taken.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    // Neither flag nor variable: refused, naming both ways to give one.
    let none = pettracker()
        .args(["user", "create", "dave@example.com"])
        .env("DATABASE_URL", db.url.expose_secret())
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("PETTRACKER_USER_PASSWORD"));
}
