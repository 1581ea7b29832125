//! firmware-sim: the command line over the library: run a fleet of simulated collars, or a benchmark load.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use firmware_sim::latency::{self, LatencyConfig};
use firmware_sim::load::{self, LoadConfig};
use firmware_sim::{Broker, City, CollarConfig, Coverage, Faults, Fleet, load_credentials};
use rumqttc::QoS;

/// Simulated pet-tracker collars for pettracker.
///
/// Each collar is its own MQTT connection with its own credentials, taken from a JSON file: an
/// array of {"tracker_id": ..., "secret": ...} objects, or one such object per line (the output
/// of `pettracker tracker provision <prefix> --count N --json`).
#[derive(Debug, Parser)]
#[command(name = "firmware-sim", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a fleet: each pet lives around a home in a real city (rests, roams the garden, goes
    /// for walks along streets, sometimes escapes), and its collar reports every --interval
    /// seconds, keeps fixes until the server's ack covers them, uploads buffered fixes after
    /// losing coverage, obeys commands and reconnects with backoff.
    Run(RunArgs),
    /// Publish as fast as possible (or at --rate) and report throughput and latency: for benchmarks.
    Load(LoadArgs),
    /// One collar publishes fixes while a WebSocket client watches it on the live feed: report
    /// publish-to-delivery and publish-to-PUBACK latencies (JSON on stdout), for benchmarks.
    LiveLatency(LiveLatencyArgs),
}

#[derive(Debug, clap::Args)]
struct Connection {
    /// Broker address host:port. `load` takes several, comma-separated: collars are spread over
    /// them, so a server listening on 0.0.0.0 reached as 127.0.0.1, 127.0.0.2, ... gives each
    /// address its own range of source ports (one address runs out near 28,000 connections).
    #[arg(
        long,
        env = "FIRMWARE_SIM_BROKER",
        default_value = "127.0.0.1:1883",
        value_delimiter = ','
    )]
    broker: Vec<String>,
    /// Credentials file (see above).
    #[arg(
        long,
        env = "FIRMWARE_SIM_CREDENTIALS",
        required_unless_present = "admin_token"
    )]
    credentials: Option<PathBuf>,
    /// Instead of a credentials file: provision --provision new collars through the server's
    /// admin API with this admin access token or API key.
    #[arg(long, env = "FIRMWARE_SIM_ADMIN_TOKEN", requires = "provision")]
    admin_token: Option<String>,
    /// The server's API base URL, for --admin-token.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v1")]
    api: String,
    /// How many collars to provision with --admin-token.
    #[arg(long)]
    provision: Option<usize>,
    /// Tracker id prefix of provisioned collars (`<prefix>-00001`, ...).
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Write the provisioned credentials here (JSON lines), to run the same collars again with
    /// --credentials.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Speak MQTT over TLS, verifying the broker with this PEM CA certificate.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
}

impl Connection {
    /// From the file, or provisioned through the admin API (and saved, if asked).
    async fn credentials(&self) -> anyhow::Result<Vec<firmware_sim::Credential>> {
        if let Some(path) = &self.credentials {
            return load_credentials(path);
        }
        let (Some(token), Some(count)) = (&self.admin_token, self.provision) else {
            anyhow::bail!("give --credentials, or --admin-token with --provision N");
        };
        let creds = firmware_sim::provision_via_api(&self.api, token, &self.prefix, count).await?;
        if let Some(path) = &self.save {
            let lines: Vec<String> = creds
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<_, _>>()?;
            std::fs::write(path, lines.join("\n") + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(creds)
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    connection: Connection,
    /// Seconds between fixes (a `live` command shortens it for a while).
    #[arg(long, default_value_t = 10.0)]
    interval: f64,
    /// City the pets live in: berlin or lyon. Homes are spread over its districts.
    #[arg(long, default_value = "berlin")]
    city: String,
    /// Seed for homes and movement: the same seed gives the same pets.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds without an ack after which a collar sends its unacknowledged fixes again.
    #[arg(long, default_value_t = 30.0)]
    ack_timeout: f64,
    /// Mean seconds between out-of-coverage spells (0: never). During a spell the collar is
    /// disconnected, keeps recording, and uploads the buffer as batches afterwards.
    #[arg(long, default_value_t = 0.0)]
    outage_every: f64,
    /// Mean length of an out-of-coverage spell, seconds.
    #[arg(long, default_value_t = 60.0)]
    outage_length: f64,
    /// Fault: chance per message of also sending a malformed payload (0..1).
    #[arg(long, default_value_t = 0.0)]
    malformed_rate: f64,
    /// Fault: chance per message of sending it twice (0..1).
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    /// Fault: seconds added to every fix time (negative: a clock behind).
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    clock_skew: f64,
    /// Fault: drop the connection abruptly about every this many seconds (0: never).
    #[arg(long, default_value_t = 0.0)]
    flap_every: f64,
    /// Fault: chance of ignoring an ack as if lost (0..1); the collar re-sends on its timeout.
    #[arg(long, default_value_t = 0.0)]
    lose_ack_rate: f64,
    /// Stop after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    duration: u64,
}

#[derive(Debug, clap::Args)]
struct LoadArgs {
    #[command(flatten)]
    connection: Connection,
    /// Messages per collar.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Fixes per message, 1-1000 (collars batch fixes when they upload a buffer).
    #[arg(long, default_value_t = 1)]
    fixes_per_message: u64,
    /// MQTT QoS, 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// QoS 1 messages in flight per connection.
    #[arg(long, default_value_t = 100)]
    inflight: u16,
    /// Target messages per second over all collars (0: as fast as the server acknowledges).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Tokio tasks the connections are multiplexed over.
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Stop sending after this many seconds (then wait for in-flight acks), whatever --messages
    /// says: for sustained-rate runs.
    #[arg(long)]
    duration: Option<f64>,
    /// Open the connections evenly over this many seconds instead of all at once.
    #[arg(long)]
    ramp: Option<f64>,
    /// Seconds between progress lines on stderr.
    #[arg(long, default_value_t = 5)]
    progress_every: u64,
    /// Count a message done when the server's app-level ack (`{"seq":N}` on
    /// `trackers/{id}/ack`, sent after commit) covers it, instead of at its PUBACK: behind an
    /// external broker the broker itself sends the PUBACK, before anything is stored.
    /// --inflight then bounds the messages not yet app-acked.
    #[arg(long)]
    await_app_ack: bool,
    /// Date the fixes from an hour back, 1 ms apart, instead of by the clock: every fix is
    /// then late for the server's daily summaries (each batch leaves notes for the settle
    /// pass), the cost of a fleet replaying what it buffered offline.
    #[arg(long)]
    backdate: bool,
}

#[derive(Debug, clap::Args)]
struct LiveLatencyArgs {
    /// Broker address host:port.
    #[arg(long, env = "FIRMWARE_SIM_BROKER", default_value = "127.0.0.1:1883")]
    broker: String,
    /// Speak MQTT over TLS, verifying the broker with this PEM CA certificate.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// The server's API base URL; the live feed is `<api>/live`.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/v1")]
    api: String,
    /// Access token (or API key) of a user who may see the tracker.
    #[arg(long, env = "FIRMWARE_SIM_TOKEN")]
    token: String,
    /// The watched collar's tracker id.
    #[arg(long)]
    tracker_id: gateway::protocol::TrackerId,
    /// The watched collar's device secret.
    #[arg(long, env = "FIRMWARE_SIM_SECRET")]
    secret: String,
    /// Fixes to publish, one per message.
    #[arg(long, default_value_t = 200)]
    samples: u64,
    /// Milliseconds between publishes.
    #[arg(long, default_value_t = 100.0)]
    interval_ms: f64,
    /// Seconds after which a fix not on the feed counts as lost.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
}

impl Connection {
    fn brokers(&self) -> anyhow::Result<Vec<Broker>> {
        let ca = match &self.tls_ca {
            Some(path) => Some(
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
            ),
            None => None,
        };
        self.broker
            .iter()
            .map(|b| {
                let mut broker = Broker::parse(b)?;
                broker.tls_ca = ca.clone();
                Ok(broker)
            })
            .collect()
    }
}

fn secs(s: f64) -> Option<Duration> {
    (s > 0.0 && s.is_finite()).then(|| Duration::from_secs_f64(s))
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
        Command::LiveLatency(args) => run_live_latency(args).await,
    }
}

async fn run_fleet(args: RunArgs) -> anyhow::Result<()> {
    let creds = args.connection.credentials().await?;
    let brokers = args.connection.brokers()?;
    let city = City::by_name(&args.city)
        .with_context(|| format!("unknown city {:?} (berlin, lyon)", args.city))?;
    let homes = city.homes(creds.len(), args.seed);
    let faults = Faults {
        malformed_rate: args.malformed_rate,
        duplicate_rate: args.duplicate_rate,
        clock_skew_ms: (args.clock_skew * 1000.0) as i64,
        flap_every: secs(args.flap_every),
        lose_ack_rate: args.lose_ack_rate,
    };
    let configs = creds
        .into_iter()
        .zip(homes)
        .enumerate()
        .map(|(i, (cred, home))| {
            let mut c = CollarConfig::new(
                cred,
                brokers[i % brokers.len()].clone(),
                home,
                args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            );
            c.interval = secs(args.interval).unwrap_or(Duration::from_secs(10));
            c.ack_timeout = secs(args.ack_timeout).unwrap_or(Duration::from_secs(30));
            c.coverage = Coverage {
                mean_between: secs(args.outage_every),
                mean_length: secs(args.outage_length).unwrap_or(Duration::from_secs(60)),
            };
            c.faults = faults.clone();
            c
        })
        .collect::<Vec<_>>();
    tracing::info!(collars = configs.len(), city = city.name, "starting fleet");
    let fleet = Fleet::start(configs);
    let stop = async {
        if args.duration > 0 {
            tokio::time::sleep(Duration::from_secs(args.duration)).await;
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    tokio::pin!(stop);
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = progress.tick() => {
                let sum = |f: fn(&firmware_sim::CollarStats) -> u64| fleet.stats.iter().map(|s| f(s)).sum::<u64>();
                eprintln!(
                    "progress: {} fixes recorded, {} sent, {} buffered, {} offline, {} reconnects",
                    sum(|s| s.fixes_recorded.load(Ordering::Relaxed)),
                    sum(|s| s.fixes_sent.load(Ordering::Relaxed)),
                    sum(|s| s.buffered.load(Ordering::Relaxed)),
                    sum(|s| s.offline.load(Ordering::Relaxed) as u64),
                    sum(|s| s.connects.load(Ordering::Relaxed).saturating_sub(1)),
                );
            }
        }
    }
    fleet.stop().await;
    Ok(())
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let credentials = args.connection.credentials().await?;
    check_open_file_limit(credentials.len())?;
    let cfg = LoadConfig {
        credentials,
        brokers: args.connection.brokers()?,
        messages_per_collar: args.messages,
        fixes_per_message: args.fixes_per_message,
        qos: if args.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        },
        inflight: args.inflight,
        rate: (args.rate > 0.0).then_some(args.rate),
        tasks: args.tasks,
        duration: args.duration.map(Duration::from_secs_f64),
        ramp: args.ramp.map(Duration::from_secs_f64),
        await_app_ack: args.await_app_ack,
        backdate: args.backdate,
    };
    let total = cfg.credentials.len() as u64 * args.messages * args.fixes_per_message;
    let every = Duration::from_secs(args.progress_every.max(1));
    let report = load::run(cfg, every, |p, elapsed| {
        let n = p.fixes_done.load(Ordering::Relaxed);
        eprintln!(
            "progress: {n}/{total} fixes, {} collars connected, {:.0} fixes/s",
            p.connected.load(Ordering::Relaxed),
            n as f64 / elapsed.as_secs_f64()
        );
    })
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Every collar is a socket: raises the soft open-file limit to the hard one, and refuses to start
/// a run that cannot fit under it (its collars would fail one by one with EMFILE instead).
fn check_open_file_limit(collars: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    // The runtime, stdio and the credentials file need a few descriptors of their own.
    let fits = hard.saturating_sub(64);
    anyhow::ensure!(
        collars as u64 <= fits,
        "{collars} collars need {collars} sockets, but this process may open only {hard} files \
         (about {fits} collars): raise `ulimit -n` or split the credentials over several processes"
    );
    Ok(())
}

async fn run_live_latency(args: LiveLatencyArgs) -> anyhow::Result<()> {
    let mut broker = Broker::parse(&args.broker)?;
    if let Some(path) = &args.tls_ca {
        broker.tls_ca =
            Some(std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?);
    }
    let report = latency::run(LatencyConfig {
        broker,
        api: args.api,
        token: args.token,
        credential: firmware_sim::Credential {
            tracker_id: args.tracker_id,
            secret: args.secret,
        },
        samples: args.samples,
        interval: secs(args.interval_ms / 1_000.0).unwrap_or(Duration::from_millis(100)),
        timeout: secs(args.timeout).unwrap_or(Duration::from_secs(5)),
    })
    .await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
