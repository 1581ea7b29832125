//! firmware-sim: simulated collars that drive a pettracker broker like a fleet, and a load generator for benchmarks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use serde::Deserialize;

/// Simulated pet-tracker collars for pettracker.
///
/// Each collar is its own MQTT connection with its own credentials, taken from a JSON file: an
/// array of {"tracker_id": ..., "secret": ...} objects, or one such object per line (the output
/// of `pettracker tracker provision <id> --json`).
#[derive(Debug, Parser)]
#[command(name = "firmware-sim", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a fleet: each collar walks around its home, reports every --interval seconds, keeps
    /// its fixes until the server's ack covers them, and reconnects with backoff.
    Run(RunArgs),
    /// Publish as fast as possible (or at --rate) and report throughput: for benchmarks.
    Load(LoadArgs),
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Broker address.
    #[arg(long, env = "FIRMWARE_SIM_BROKER", default_value = "127.0.0.1:1883")]
    broker: String,
    /// Credentials file (see above).
    #[arg(long, env = "FIRMWARE_SIM_CREDENTIALS")]
    credentials: PathBuf,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Seconds between fixes.
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// Home of the first pet (lat,lon); the others are spread around it.
    #[arg(long, default_value = "52.5200,13.4050", value_parser = parse_point)]
    home: (f64, f64),
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Messages per collar.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Fixes per message (collars batch fixes when they upload a buffer).
    #[arg(long, default_value_t = 1)]
    fixes_per_message: u64,
    /// MQTT QoS, 0 or 1.
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// QoS 1 messages in flight per connection.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
}

fn parse_point(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s.split_once(',').ok_or("expected lat,lon")?;
    Ok((
        a.trim().parse().map_err(|_| "bad latitude")?,
        b.trim().parse().map_err(|_| "bad longitude")?,
    ))
}

#[derive(Debug, Clone, Deserialize)]
struct Credential {
    tracker_id: String,
    secret: String,
}

fn load_credentials(path: &PathBuf) -> anyhow::Result<Vec<Credential>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(list) = serde_json::from_str::<Vec<Credential>>(&text) {
        return Ok(list);
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad credentials line: {l}")))
        .collect()
}

fn broker_addr(s: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = s.rsplit_once(':').context("--broker must be host:port")?;
    Ok((host.to_owned(), port.parse().context("--broker port")?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Run(args) => run_fleet(args).await,
        Command::Load(args) => run_load(args).await,
    }
}

fn options(host: &str, port: u16, cred: &Credential, keep_alive: u64) -> MqttOptions {
    let mut o = MqttOptions::new(&cred.tracker_id, host, port);
    o.set_credentials(&cred.tracker_id, &cred.secret);
    o.set_keep_alive(Duration::from_secs(keep_alive));
    o.set_last_will(LastWill::new(
        format!("trackers/{}/online", cred.tracker_id),
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    o
}

async fn run_fleet(args: RunArgs) -> anyhow::Result<()> {
    let creds = load_credentials(&args.common.credentials)?;
    let (host, port) = broker_addr(&args.common.broker)?;
    tracing::info!(collars = creds.len(), broker = %args.common.broker, "starting fleet");
    let mut tasks = Vec::new();
    for (i, cred) in creds.into_iter().enumerate() {
        let angle = i as f64 * 2.399_963; // golden angle: homes spread evenly
        let home = (
            args.home.0 + 0.01 * angle.sin() * (i as f64).sqrt(),
            args.home.1 + 0.015 * angle.cos() * (i as f64).sqrt(),
        );
        tasks.push(tokio::spawn(collar(
            host.clone(),
            port,
            cred,
            home,
            args.interval,
        )));
    }
    if args.duration > 0 {
        tokio::time::sleep(Duration::from_secs(args.duration)).await;
    } else {
        tokio::signal::ctrl_c().await?;
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// One collar: a random walk around home, a buffer of unacknowledged fixes, reconnects with backoff.
async fn collar(host: String, port: u16, cred: Credential, home: (f64, f64), interval: f64) {
    let id = cred.tracker_id.clone();
    let mut pos = home;
    let mut seq: u64 = 0;
    let mut battery: f64 = 100.0;
    let mut buffer: Vec<(u64, String)> = Vec::new();
    let mut backoff = Duration::from_millis(500);
    loop {
        let (client, mut events) = AsyncClient::new(options(&host, port, &cred, 30), 64);
        let _ = client
            .subscribe(format!("trackers/{id}/ack"), QoS::AtLeastOnce)
            .await;
        let _ = client
            .publish(
                format!("trackers/{id}/online"),
                QoS::AtLeastOnce,
                false,
                "online",
            )
            .await;
        let mut tick = tokio::time::interval(Duration::from_secs_f64(interval.max(0.05)));
        let error = loop {
            tokio::select! {
                _ = tick.tick() => {
                    seq += 1;
                    let step = 0.00015;
                    pos.0 += (rand::random::<f64>() - 0.5) * step + (home.0 - pos.0) * 0.05;
                    pos.1 += (rand::random::<f64>() - 0.5) * step * 1.5 + (home.1 - pos.1) * 0.05;
                    battery = (battery - 0.05).max(5.0);
                    let fix = format!(
                        r#"{{"ts":{},"lat":{:.6},"lon":{:.6},"acc":{:.1},"spd":{:.1},"bat":{},"seq":{seq}}}"#,
                        chrono_ms(),
                        pos.0,
                        pos.1,
                        3.0 + rand::random::<f64>() * 12.0,
                        rand::random::<f64>() * 2.0,
                        battery as u8,
                    );
                    buffer.push((seq, fix));
                    // Everything not yet acknowledged goes again, as one batch.
                    let payload = format!("[{}]", buffer.iter().map(|b| b.1.as_str()).collect::<Vec<_>>().join(","));
                    if client.try_publish(format!("trackers/{id}/telemetry"), QoS::AtLeastOnce, false, payload).is_err() {
                        tracing::debug!(%id, "request queue full");
                    }
                    buffer.truncate(1000);
                }
                event = events.poll() => match event {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/ack") => {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload)
                            && let Some(acked) = v["seq"].as_u64()
                        {
                            buffer.retain(|b| b.0 > acked);
                        }
                        backoff = Duration::from_millis(500);
                    }
                    Ok(_) => {}
                    Err(e) => break e,
                },
            }
        };
        tracing::warn!(%id, %error, ?backoff, "disconnected; reconnecting");
        tokio::time::sleep(backoff.mul_f64(0.5 + rand::random::<f64>())).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

fn chrono_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let creds = load_credentials(&args.common.credentials)?;
    let (host, port) = broker_addr(&args.common.broker)?;
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let acked = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // Device times must be unique per tracker: spread them one millisecond apart into the past.
    let base_ms = chrono_ms() as u64 - args.messages * args.fixes_per_message - 1000;
    let mut tasks = Vec::new();
    for cred in creds.iter().cloned() {
        let (host, acked) = (host.clone(), acked.clone());
        let (messages, per, inflight) = (args.messages, args.fixes_per_message, args.inflight);
        tasks.push(tokio::spawn(async move {
            let mut o = options(&host, port, &cred, 60);
            o.set_inflight(inflight);
            let (client, mut events) = AsyncClient::new(o, inflight as usize * 2);
            let topic = format!("trackers/{}/telemetry", cred.tracker_id);
            let publisher = tokio::spawn(async move {
                let mut n = 0u64;
                for m in 0..messages {
                    let fixes: Vec<String> = (0..per)
                        .map(|k| {
                            n += 1;
                            format!(
                                r#"{{"ts":{},"lat":52.5{:04},"lon":13.4,"seq":{n}}}"#,
                                base_ms + m * per + k,
                                n % 10_000
                            )
                        })
                        .collect();
                    let payload = if per == 1 {
                        fixes[0].clone()
                    } else {
                        format!("[{}]", fixes.join(","))
                    };
                    if client
                        .publish(topic.clone(), qos, false, payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                client
            });
            let want = messages;
            let mut done = 0u64;
            let result = drive(&mut events, qos, want, &mut done, &acked, per).await;
            let _ = publisher.await;
            result
        }));
    }
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    let total_fixes = creds.len() as u64 * args.messages * args.fixes_per_message;
    let all = futures::future::join_all(tasks);
    tokio::pin!(all);
    let results = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = progress.tick() => {
                let n = acked.load(Ordering::Relaxed);
                eprintln!("progress: {n}/{total_fixes} fixes acknowledged, {:.0} fixes/s", n as f64 / started.elapsed().as_secs_f64());
            }
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let n = acked.load(Ordering::Relaxed);
    let failures = results.iter().filter(|r| !matches!(r, Ok(Ok(())))).count();
    println!(
        "{{\"collars\":{},\"messages_per_collar\":{},\"fixes_per_message\":{},\"qos\":{},\"fixes\":{n},\"seconds\":{elapsed:.3},\"fixes_per_second\":{:.0},\"failed_collars\":{failures}}}",
        creds.len(),
        args.messages,
        args.fixes_per_message,
        args.qos,
        n as f64 / elapsed
    );
    Ok(())
}

/// Polls one connection until every message is acknowledged (QoS 1) or sent (QoS 0).
async fn drive(
    events: &mut EventLoop,
    qos: QoS,
    want: u64,
    done: &mut u64,
    acked: &AtomicU64,
    per: u64,
) -> anyhow::Result<()> {
    while *done < want {
        match events.poll().await? {
            Event::Incoming(Packet::PubAck(_)) if qos == QoS::AtLeastOnce => {
                *done += 1;
                acked.fetch_add(per, Ordering::Relaxed);
            }
            Event::Outgoing(rumqttc::Outgoing::Publish(_)) if qos == QoS::AtMostOnce => {
                *done += 1;
                acked.fetch_add(per, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    // Let the last QoS 0 packets leave the socket before disconnecting.
    for _ in 0..10 {
        if tokio::time::timeout(Duration::from_millis(50), events.poll())
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}
