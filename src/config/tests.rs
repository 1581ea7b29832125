//! Tests of the configuration as a whole: the layers, errors that name the key, and the derived key table against docs/operations.md.

use super::*;

fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!("pettracker-config-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pettracker.toml");
    std::fs::write(&path, file).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let result = Loader::new(Some(&path))
        .and_then(|l| l.env(|k| env.iter().find(|e| e.0 == k).map(|e| e.1.clone())))
        .and_then(Loader::load);
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

fn rand_suffix() -> String {
    format!("{:?}-{}", std::thread::current().id(), std::process::id()).replace(['(', ')'], "")
}

#[test]
fn an_empty_file_gives_the_defaults() {
    let config = load("", &[]).unwrap();
    assert_eq!(config.http.addr.port(), 8080);
    assert_eq!(config.storage.retention_days, 365);
    assert!(config.database.url.is_none());
}

#[test]
fn environment_overrides_the_file_and_flags_override_the_environment() {
    let config = load(
        "[http]\naddr = \"127.0.0.1:1\"\n",
        &[("PETTRACKER_HTTP_ADDR", "127.0.0.1:2")],
    )
    .unwrap();
    assert_eq!(config.http.addr.port(), 2);
    let config = Loader::new(None)
        .unwrap()
        .env(|k| (k == "PETTRACKER_HTTP_ADDR").then(|| "127.0.0.1:2".to_owned()))
        .unwrap()
        .flag("http.addr", Some("127.0.0.1:3".to_owned()), "--http-addr")
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(config.http.addr.port(), 3);
}

#[test]
fn a_bad_address_names_the_key_and_the_variable() {
    let err = load("", &[("PETTRACKER_MQTT_ADDR", "not-an-address")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("mqtt.addr"), "{err}");
    assert!(err.contains("PETTRACKER_MQTT_ADDR"), "{err}");
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let err = load("[http]\nadress = \"x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("adress"), "{err}");
}

#[test]
fn a_non_numeric_pool_size_is_refused_with_its_value() {
    let err = load("", &[("PETTRACKER_DATABASE_API_POOL_SIZE", "many")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("database.api_pool_size") && err.contains("many"),
        "{err}"
    );
}

#[test]
fn a_bad_database_url_is_refused_without_echoing_it() {
    let err = load(
        "",
        &[("DATABASE_URL", "postgres://u:hunter2@host:notaport/db")],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn the_database_url_is_redacted_in_debug_output() {
    let config = load("", &[("DATABASE_URL", "postgres://u:hunter2@localhost/db")]).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn a_short_token_secret_is_refused_without_echoing_it() {
    let err = load("", &[("PETTRACKER_AUTH_TOKEN_SECRET", "hunter2-too-short")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.token_secret"), "{err}");
    assert!(err.contains("32"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_broker_secret_too_short_or_a_service_name_a_collar_could_take_is_refused() {
    let err = load("", &[("PETTRACKER_BROKER_AUTH_SECRET", "hunter2")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broker_auth.secret") && !err.contains("hunter2"),
        "{err}"
    );
    let err = load("[broker_auth]\nservice_username = \"rex\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("broker_auth.service_username"), "{err}");
}

#[test]
fn a_secret_of_the_wrong_type_in_the_file_is_refused_without_echoing_it() {
    let err = load("[auth]\ntoken_secret = 918273645\n", &[])
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth.token_secret"), "{err}");
    assert!(!err.contains("918273645"), "{err}");
}

#[test]
fn admin_emails_are_a_comma_separated_list_in_the_environment() {
    let config = load(
        "",
        &[(
            "PETTRACKER_AUTH_ADMIN_EMAILS",
            " ada@example.com,,bob@example.com ",
        )],
    )
    .unwrap();
    assert_eq!(
        config.auth.admin_emails,
        ["ada@example.com", "bob@example.com"]
    );
    let config = load("[auth]\nadmin_emails = [\"ada@example.com\"]\n", &[]).unwrap();
    assert_eq!(config.auth.admin_emails, ["ada@example.com"]);
}

#[test]
fn an_out_of_range_number_is_refused_saying_the_range_and_why() {
    for (name, value, says) in [
        (
            "PETTRACKER_INGEST_WRITERS",
            "0",
            "`ingest.writers` (from environment variable PETTRACKER_INGEST_WRITERS): must be at least 1",
        ),
        (
            "PETTRACKER_DATABASE_API_POOL_SIZE",
            "1001",
            "`database.api_pool_size` (from environment variable PETTRACKER_DATABASE_API_POOL_SIZE): 1001 is outside 1..=1000",
        ),
        (
            "PETTRACKER_INGEST_ACCEPT_TIMEOUT_MS",
            "30001",
            "30001 is outside 1..=30000: a publish hook blocks its connection",
        ),
        (
            "PETTRACKER_ALERTS_GEOFENCE_DWELL_SECS",
            "86401",
            "86401 is outside 0..=86400",
        ),
    ] {
        let err = load("", &[(name, value)]).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
}

#[test]
fn a_bad_live_or_alerts_setting_is_refused_naming_its_key() {
    for (name, value, key) in [
        ("PETTRACKER_LIVE_QUEUE_CAPACITY", "0", "live.queue_capacity"),
        (
            "PETTRACKER_ALERTS_BATTERY_LOW_PERCENT",
            "100",
            "alerts.battery_low_percent",
        ),
    ] {
        let err = Loader::new(None)
            .unwrap()
            .env(|k| (k == name).then(|| value.to_owned()))
            .unwrap()
            .load()
            .unwrap_err();
        assert!(err.to_string().contains(key), "{err}");
    }
}

/// The rows of the settings table in docs/operations.md: (key, environment variable).
fn documented() -> Vec<(String, String)> {
    include_str!("../../docs/operations.md")
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let var = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            var.starts_with("PETTRACKER_")
                .then(|| (key.to_owned(), var.to_owned()))
        })
        .collect()
}

#[test]
fn the_operations_guide_documents_exactly_the_settings_the_sections_have() {
    let documented = documented();
    assert_eq!(documented.len(), keys().len(), "{documented:?}");
    for key in keys() {
        let row = documented.iter().find(|(k, _)| *k == key.name);
        assert_eq!(
            row.map(|(_, var)| var.clone()),
            Some(key.env()),
            "docs/operations.md misses {} or names another variable for it",
            key.name
        );
    }
    for (key, _) in &documented {
        assert!(
            keys().iter().any(|k| k.name == *key),
            "docs/operations.md documents {key}, which no section has"
        );
    }
}

#[test]
fn the_kind_of_each_setting_follows_from_its_type() {
    let kind = |name: &str| keys().iter().find(|k| k.name == name).map(|k| k.kind);
    assert_eq!(kind("database.url"), Some(Kind::Secret));
    assert_eq!(kind("auth.token_secret"), Some(Kind::Secret));
    assert_eq!(kind("auth.admin_emails"), Some(Kind::List));
    assert_eq!(kind("mqtt.open"), Some(Kind::Bool));
    assert_eq!(kind("mqtt.max_packet_size"), Some(Kind::Int));
    assert_eq!(kind("mqtt.tls_addr"), Some(Kind::Str));
    assert_eq!(kind("database.timescaledb"), Some(Kind::Str));
    assert_eq!(kind("log.format"), Some(Kind::Str));
    assert_eq!(kind("http"), None);
}

/// A valid value for a setting as environment text, and as the loaded configuration serializes it.
fn sample(key: &Key) -> (&'static str, serde_json::Value) {
    let name = key.name.as_str();
    let text = match key.kind {
        Kind::Int => return ("3", serde_json::json!(3)),
        Kind::Float => return ("0.5", serde_json::json!(0.5)),
        Kind::Bool => return ("true", serde_json::json!(true)),
        Kind::List if name == "http.trusted_proxies" => {
            return (
                "10.0.0.0/8, 192.0.2.1",
                serde_json::json!(["10.0.0.0/8", "192.0.2.1"]),
            );
        }
        Kind::List => {
            return (
                "ada@example.com, bob@example.com",
                serde_json::json!(["ada@example.com", "bob@example.com"]),
            );
        }
        Kind::Secret if name.starts_with("auth.") || name.starts_with("broker_auth.") => {
            "0123456789abcdef0123456789abcdef"
        }
        Kind::Secret => "postgres://localhost/x",
        Kind::Str if name == "role" => "ingest",
        Kind::Str if name == "external_broker.url" => "mqtt://broker.example.org:1884",
        Kind::Str if name.ends_with("addr") => "127.0.0.1:9",
        Kind::Str if name.ends_with("tile_url") => "https://t.example.org/{z}/{x}/{y}.png",
        Kind::Str if name.ends_with("timescaledb") => "off",
        Kind::Str if name.ends_with("format") => "json",
        Kind::Str if name.contains("tls_") || name.ends_with("_dir") => "/tmp/x",
        // Not a tracker id, as broker_auth.service_username must be.
        Kind::Str if name.ends_with("username") => "svc.name",
        Kind::Str => "debug",
    };
    (text, serde_json::json!(text))
}

#[test]
fn every_documented_variable_sets_its_setting() {
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for (key, var) in documented() {
        let key = keys().iter().find(|k| k.name == key).unwrap();
        let (mut text, mut expected) = sample(key);
        // A switch on by default shows it is read when it turns off.
        let pointer = format!("/{}", key.name.replace('.', "/"));
        if defaults.pointer(&pointer) == Some(&expected) && key.kind == Kind::Bool {
            (text, expected) = ("false", serde_json::json!(false));
        }
        // The TLS listener's keys are only valid together.
        let tls = [
            ("PETTRACKER_MQTT_TLS_ADDR", "127.0.0.1:9"),
            ("PETTRACKER_MQTT_TLS_CERT", "/tmp/x"),
            ("PETTRACKER_MQTT_TLS_KEY", "/tmp/x"),
        ];
        let config = Loader::new(None)
            .unwrap()
            .env(|k| {
                if k == var {
                    return Some(text.to_owned());
                }
                // ...and a password needs its user name.
                if k == "PETTRACKER_EXTERNAL_BROKER_USERNAME"
                    && key.name == "external_broker.password"
                {
                    return Some("pettracker".to_owned());
                }
                let companion = tls.iter().find(|(env, _)| *env == k);
                companion
                    .filter(|_| key.name.starts_with("mqtt.tls_"))
                    .map(|(_, v)| v.to_string())
            })
            .unwrap()
            .load();
        let config = match config {
            Ok(config) => config,
            Err(e) => panic!("{var}={text}: {e}"),
        };
        if key.kind == Kind::Secret {
            // Secrets serialize as a marker; that the value is used shows in the tests above.
            continue;
        }
        let loaded = serde_json::to_value(&config).unwrap();
        assert_eq!(loaded.pointer(&pointer), Some(&expected), "{var}");
        assert_ne!(defaults.pointer(&pointer), Some(&expected), "{var}");
    }
}

#[test]
fn the_role_is_a_top_level_key_and_a_bad_one_is_refused_naming_it() {
    let config = load("role = \"ingest\"\n", &[]).unwrap();
    assert_eq!(config.role, Role::Ingest);
    let config = load("", &[("PETTRACKER_ROLE", "ingest")]).unwrap();
    assert_eq!(config.role, Role::Ingest);
    assert_eq!(load("", &[]).unwrap().role, Role::All);
    let err = load("", &[("PETTRACKER_ROLE", "worker")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("`role`"), "{err}");
    assert!(err.contains("PETTRACKER_ROLE"), "{err}");
    let err = Loader::new(None)
        .unwrap()
        .flag("role", Some("both".to_owned()), "--role")
        .unwrap()
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`role` (from flag --role)"), "{err}");
}

#[test]
fn an_api_instance_needs_an_external_broker_and_bad_broker_settings_name_their_key() {
    let err = load("role = \"api\"\n", &[]).unwrap_err().to_string();
    assert!(
        err.contains("`role`") && err.contains("external_broker.url"),
        "{err}"
    );
    let config = load(
        "role = \"api\"\n[external_broker]\nurl = \"mqtt://emqx:1883\"\n",
        &[],
    )
    .unwrap();
    let external = config.external_broker().unwrap();
    assert_eq!(
        (external.url.host.as_str(), external.url.port),
        ("emqx", 1883)
    );
    assert!(
        external.client_id.starts_with("pettracker-"),
        "{}",
        external.client_id
    );
    for (env, value, key) in [
        (
            "PETTRACKER_EXTERNAL_BROKER_URL",
            "tcp://emqx:1883",
            "external_broker.url",
        ),
        (
            "PETTRACKER_EXTERNAL_BROKER_URL",
            "mqtts://emqx",
            "external_broker.ca_file",
        ),
        (
            "PETTRACKER_EXTERNAL_BROKER_GROUP",
            "a/b",
            "external_broker.group",
        ),
        (
            "PETTRACKER_EXTERNAL_BROKER_PASSWORD",
            "x",
            "external_broker.password",
        ),
    ] {
        let mut vars = vec![(env, value)];
        if env != "PETTRACKER_EXTERNAL_BROKER_URL" {
            vars.push(("PETTRACKER_EXTERNAL_BROKER_URL", "mqtt://emqx:1883"));
        }
        let err = load("", &vars).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{env}={value}: {err}");
        if key == "external_broker.password" {
            assert!(!err.contains("\"x\""), "{err}");
        }
    }
}

#[test]
fn a_trusted_proxy_that_is_no_address_is_refused_naming_the_key() {
    let err = load(
        "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"ingress\"]\n",
        &[],
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("http.trusted_proxies") && text.contains("\"ingress\""),
        "{text}"
    );
}

#[test]
fn the_kubernetes_configuration_file_loads_with_every_key_it_sets() {
    let manifest = include_str!("../../deploy/configmap.yaml");
    // The block scalar under `pettracker.toml: |`, indented by four spaces.
    let toml: String = manifest
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("pettracker.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or_default()))
        .collect();
    assert!(toml.contains("[http]"), "{toml}");
    let config = load(&toml, &[]).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert_eq!(config.http.trusted_proxies, ["10.0.0.0/8"]);
    assert_eq!(config.ingest.batch_size, 4000);
}
