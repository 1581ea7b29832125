//! Break-it check of the whole server (issue 15): idle MQTT sockets from several hosts, more of
//! them than the process may open files, against a `pettracker serve` whose open-file limit is
//! lowered for this test alone (a child process started under `ulimit -n`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::protocol::TrackerId;
use gateway::testing::{closed_by_server, fresh_database};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The child's open-file limit: the one a service manager often leaves, and the one the issue's
/// 1,100 idle sockets exhausted.
const OPEN_FILE_LIMIT: u32 = 1024;

/// Sockets one address may hold before their CONNECT is complete (set for the child).
const MAX_HANDSHAKES_PER_IP: usize = 60;

/// Kills the server if the test fails half-way.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pettracker serve` under `ulimit -n` and returns it with its HTTP and MQTT addresses.
fn serve(database_url: &str, spool: &std::path::Path) -> (Server, String, String) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {OPEN_FILE_LIMIT} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_pettracker"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--mqtt-addr",
            "127.0.0.1:0",
        ]);
    for (key, _) in std::env::vars() {
        if key.starts_with("PETTRACKER_") || key == "DATABASE_URL" {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("DATABASE_URL", database_url)
        .env("PETTRACKER_INGEST_SPOOL_DIR", spool)
        .env("PETTRACKER_DATABASE_POOL_SIZE", "4")
        .env("PETTRACKER_MQTT_HANDSHAKE_TIMEOUT_MS", "5000")
        .env(
            "PETTRACKER_MQTT_MAX_HANDSHAKES_PER_IP",
            MAX_HANDSHAKES_PER_IP.to_string(),
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = |line: &str, key: &str| {
        line.split(key)
            .nth(1)
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
    };
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("serve never said it was serving");
        if let (Some(http), Some(mqtt)) = (value(&line, "http_addr="), value(&line, "mqtt_addr=")) {
            let mqtt = mqtt.trim_start_matches("Some(").trim_end_matches(')');
            return (server, http, mqtt.to_owned());
        }
    }
}

async fn healthz(http: &str) -> u16 {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    match client.get(format!("http://{http}/healthz")).send().await {
        Ok(response) => response.status().as_u16(),
        Err(err) => panic!("/healthz did not answer: {err}"),
    }
}

/// Publishes at QoS 1 and waits for the PUBACK.
async fn publish(client: &AsyncClient, events: &mut EventLoop, tracker: &str) {
    client
        .publish(
            format!("trackers/{tracker}/online"),
            QoS::AtLeastOnce,
            false,
            "online",
        )
        .await
        .unwrap();
    let acked = async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return,
                Ok(_) => {}
                Err(err) => panic!("the collar lost its connection: {err}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .expect("no PUBACK within 10 s");
}

/// Opens `n` sockets from the loopback address `source` that never complete a CONNECT: the even
/// ones send nothing, the odd ones the first five bytes of one.
async fn idle_sockets(source: [u8; 4], to: &str, n: usize) -> Vec<TcpStream> {
    let to: std::net::SocketAddr = to.parse().unwrap();
    let mut sockets = Vec::new();
    for i in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from((source, 0)))
            .unwrap();
        let mut socket = socket.connect(to).await.unwrap();
        if i % 2 == 1 {
            socket
                .write_all(&[0x10, 0x0f, 0x00, 0x04, b'M'])
                .await
                .unwrap();
        }
        sockets.push(socket);
    }
    sockets
}

#[tokio::test]
async fn idle_sockets_past_the_open_file_limit_stop_neither_mqtt_nor_http_and_are_closed() {
    // This test opens more sockets than a default soft limit allows.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();

    let db = fresh_database().await;
    let tracker = TrackerId::parse("rex").unwrap();
    let secret = gateway::storage::trackers::provision(&db.pool, &tracker, None)
        .await
        .unwrap()
        .secret;
    let spool = std::env::temp_dir().join(format!("pettracker-front-door-{}", db.name));
    let (server, http, mqtt) = serve(db.url.expose_secret(), &spool);
    // At three descriptors per collar and 512 kept for the rest, the server takes 170 sockets.
    let cap = (OPEN_FILE_LIMIT as usize - 512) / 3;

    // Two hosts send idle sockets; each gets MAX_HANDSHAKES_PER_IP of them held, the rest of its
    // sockets are closed at once. Together they hold most of the cap.
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for host in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let mut sockets = idle_sockets(host, &mqtt, 400).await;
        refused.extend(sockets.split_off(MAX_HANDSHAKES_PER_IP));
        held.extend(sockets);
    }
    // A collar (from 127.0.0.1) still gets in, and HTTP answers.
    let port = mqtt.rsplit(':').next().unwrap().parse().unwrap();
    let mut options = MqttOptions::new("rex", "127.0.0.1", port);
    options.set_credentials("rex", secret);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    publish(&client, &mut events, "rex").await;
    assert_eq!(healthz(&http).await, 200);

    // A third host fills the cap; past it, sockets are closed at once too. The test now holds
    // 1,100 sockets to the server, more than it may open files, and it never runs out.
    let mut third = idle_sockets([127, 0, 0, 4], &mqtt, 300).await;
    let fits = cap - held.len() - 1;
    refused.extend(third.split_off(fits));
    held.extend(third);
    assert_eq!(held.len() + refused.len(), 1_100);
    for (i, socket) in refused.iter_mut().enumerate() {
        closed_by_server(socket)
            .await
            .unwrap_or_else(|e| panic!("socket {i} past a limit: {e}"));
    }
    assert_eq!(healthz(&http).await, 200);
    publish(&client, &mut events, "rex").await;

    // The held ones are closed after the handshake timeout.
    for (i, socket) in held.iter_mut().enumerate() {
        closed_by_server(socket)
            .await
            .unwrap_or_else(|e| panic!("idle socket {i}: {e}"));
    }
    publish(&client, &mut events, "rex").await;
    assert_eq!(healthz(&http).await, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(spool);
}
