//! The command line: `serve`, `migrate`, `demo`, `seed` and the admin verbs, each a thin call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, Loader, LogFormat};

/// pettracker: a backend for GPS pet trackers.
///
/// Collars publish fixes over MQTT to the embedded broker; pettracker stores them in PostgreSQL
/// (TimescaleDB when available) and serves history, live feeds and alerts over HTTP.
///
/// Without DATABASE_URL, pettracker runs its own private PostgreSQL under ./data/postgres
/// (it needs the PostgreSQL server binaries installed, e.g. `apt-get install postgresql`).
#[derive(Debug, Parser)]
#[command(name = "pettracker", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file. Environment variables (PETTRACKER_*, DATABASE_URL) override it, flags override both.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "PETTRACKER_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: MQTT broker, ingest and HTTP API, until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit (serve does this too at start).
    Migrate,
    /// Run a self-contained demo: private database, broker, API and simulated pets.
    #[command(hide = cfg!(not(feature = "demo")))]
    Demo(DemoArgs),
    /// Fill the database with realistic history from the simulator's movement model, for
    /// development, demos of history and summaries, and query benchmarks.
    #[command(hide = cfg!(not(feature = "demo")))]
    Seed(SeedArgs),
    /// Manage trackers (collars): provision credentials, list them, revoke them.
    #[command(subcommand)]
    Tracker(TrackerCommand),
    /// Manage user accounts of the HTTP API.
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account and print its id. The password is read from standard input
    /// (--password-stdin) or PETTRACKER_USER_PASSWORD, never from an argument, which other users
    /// of the machine could see in the process list.
    Create {
        /// The account's email address (it logs in with it).
        email: String,
        /// Make the account an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (one line; the trailing newline is dropped).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrackerCommand {
    /// Create a tracker and print its device secret and claim code. They are stored hashed and
    /// shown only this once: flash the secret into the collar, print the claim code on its box.
    Provision {
        /// Tracker id: 1-64 letters, digits, '-' or '_' (it is the MQTT client id and username).
        id: String,
        /// The pet's name, shown to owners.
        #[arg(long)]
        pet_name: Option<String>,
        /// Print one JSON object {"tracker_id","secret","claim_code"} instead of text (with
        /// --count, one object per line: the credentials file firmware-sim reads).
        #[arg(long)]
        json: bool,
        /// Provision a batch: ID is then a prefix and the trackers are ID-1 ... ID-N.
        #[arg(long, value_name = "N")]
        count: Option<u32>,
    },
    /// List every tracker with its owner, revocation and connection state.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a tracker: its credentials stop working and a connected collar is disconnected.
    Revoke {
        /// The tracker id.
        id: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// HTTP listen address for the API, live feeds, /metrics and health checks.
    #[arg(long, env = "PETTRACKER_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// MQTT/TCP listen address for collars.
    #[arg(long, env = "PETTRACKER_MQTT_ADDR", value_name = "ADDR")]
    pub mqtt_addr: Option<String>,
    /// Accept any MQTT client without credentials (development only; logged loudly).
    #[arg(long)]
    pub mqtt_open: bool,
    /// Which parts to run: all (one process, the default), ingest (broker side and pipeline;
    /// HTTP only for health and metrics) or api (HTTP, live feed, alerts, commands). Also
    /// PETTRACKER_ROLE or `role` in the file.
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// Take the collars' messages from this MQTT broker (mqtt://host:port or mqtts://host:port)
    /// instead of running the embedded one; the rest of its settings are under
    /// [external_broker]. Also PETTRACKER_EXTERNAL_BROKER_URL.
    #[arg(long, value_name = "URL")]
    pub external_broker: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Delete the demo's data and start over.
    #[arg(long)]
    pub reset: bool,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
    pub http_addr: String,
    /// MQTT listen address.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "ADDR")]
    pub mqtt_addr: String,
    /// How many simulated pets (collars) to run.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub pets: u32,
    /// Seconds between a simulated collar's fixes.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub interval: f64,
    /// City the pets live in: berlin or lyon.
    #[arg(long, default_value = "berlin")]
    pub city: String,
    /// Directory for the demo's credentials, pet homes and (without DATABASE_URL) its database.
    #[arg(long, default_value = "data/demo", value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// How many trackers; they are PREFIX-0001, PREFIX-0002, ... (existing ones are reused).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub trackers: u32,
    /// Days of history per tracker, ending now (at most 365, the retention window).
    #[arg(long, default_value_t = 7.0)]
    pub days: f64,
    /// Seconds between one tracker's fixes.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=86_400))]
    pub interval: u32,
    /// Give the trackers to this account (it must exist), claimed from the start of the history.
    #[arg(long, value_name = "EMAIL")]
    pub owner: Option<String>,
    /// Tracker id prefix.
    #[arg(long, default_value = "seed")]
    pub prefix: String,
    /// City the pets live in: berlin or lyon.
    #[arg(long, default_value = "berlin")]
    pub city: String,
    /// Database connections writing in parallel.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub connections: u32,
    /// Fixes per write statement.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_rows: u32,
}

/// Parses arguments, runs the command, and turns any error into one line on stderr and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// `a: b: c` from an error and its causes, skipping causes already quoted by their parent.
pub fn error_chain(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn load_config(cli: &Cli, flags: &[(&str, Option<String>, &str)]) -> Result<Config, ConfigError> {
    let mut loader = Loader::new(cli.config.as_deref())?.env(|k| std::env::var(k).ok())?;
    for (key, value, flag) in flags {
        loader = loader.flag(key, value.clone(), flag)?;
    }
    if let Some(format) = cli.log_format {
        let name = match format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        loader = loader.flag("log.format", Some(name.to_owned()), "--log-format")?;
    }
    loader.load()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            let config = load_config(
                &cli,
                &[
                    ("http.addr", args.http_addr.clone(), "--http-addr"),
                    ("mqtt.addr", args.mqtt_addr.clone(), "--mqtt-addr"),
                    (
                        "mqtt.open",
                        args.mqtt_open.then(|| "true".to_owned()),
                        "--mqtt-open",
                    ),
                    ("role", args.role.clone(), "--role"),
                    (
                        "external_broker.url",
                        args.external_broker.clone(),
                        "--external-broker",
                    ),
                ],
            )?;
            crate::logging::init(config.log.format, &config.log.level);
            let app = crate::app::spawn(config).await?;
            app.run_until(crate::app::termination_signal()).await
        }
        Command::Migrate => {
            let config = load_config(&cli, &[])?;
            crate::logging::init(config.log.format, &config.log.level);
            let database = crate::database::Database::open(&config).await?;
            let result = database.migrate(&config).await;
            database.close().await;
            let report = result?;
            if report.applied.is_empty() {
                println!(
                    "schema is current at version {} ({}); nothing to do",
                    report.current,
                    report.backend.as_str()
                );
            } else {
                println!(
                    "applied migrations {:?}; schema is at version {} ({})",
                    report.applied,
                    report.current,
                    report.backend.as_str()
                );
            }
            Ok(())
        }
        Command::Tracker(command) => {
            let config = load_config(&cli, &[])?;
            crate::logging::init(config.log.format, "warn");
            let database = crate::database::Database::open(&config).await?;
            let result = async {
                database.migrate(&config).await?;
                tracker_command(&database.pool, command).await
            }
            .await;
            database.close().await;
            result
        }
        Command::User(command) => {
            let config = load_config(&cli, &[])?;
            crate::logging::init(config.log.format, "warn");
            let database = crate::database::Database::open(&config).await?;
            let result = async {
                database.migrate(&config).await?;
                user_command(&database.pool, &config, command).await
            }
            .await;
            database.close().await;
            result
        }
        Command::Demo(args) => demo(&cli, args).await,
        Command::Seed(args) => seed(&cli, args).await,
    }
}

/// `pettracker demo`: the server with simulated pets, until Ctrl-C or SIGTERM.
#[cfg(feature = "demo")]
async fn demo(cli: &Cli, args: &DemoArgs) -> anyhow::Result<()> {
    let mut config = load_config(
        cli,
        &[
            ("http.addr", Some(args.http_addr.clone()), "--http-addr"),
            ("mqtt.addr", Some(args.mqtt_addr.clone()), "--mqtt-addr"),
        ],
    )?;
    crate::logging::init(config.log.format, &config.log.level);
    let demo_dir = args.dir.clone();
    if args.reset && demo_dir.exists() {
        std::fs::remove_dir_all(&demo_dir)?;
    }
    if config.database.url.is_none() {
        config.database.data_dir = demo_dir.join("postgres");
    }
    config.ingest.spool_dir = demo_dir.join("spool");
    let options = crate::demo::DemoOptions {
        dir: demo_dir,
        pets: args.pets as usize,
        interval: std::time::Duration::try_from_secs_f64(args.interval)
            .ok()
            .filter(|d| *d >= std::time::Duration::from_millis(100))
            .ok_or_else(|| anyhow::anyhow!("--interval must be at least 0.1 seconds"))?,
        city: city(&args.city)?,
        seed: 1,
    };
    let demo = crate::demo::spawn(config, options.clone()).await?;
    crate::demo::print_welcome(&demo, &options);
    demo.run_until(crate::app::termination_signal()).await
}

/// `pettracker seed`: history from the movement model through the ingest write path.
#[cfg(feature = "demo")]
async fn seed(cli: &Cli, args: &SeedArgs) -> anyhow::Result<()> {
    let mut config = load_config(cli, &[])?;
    crate::logging::init(config.log.format, "warn");
    config.database.api_pool_size = config
        .database
        .api_pool_size
        .max(args.connections as usize + 1);
    let mut options = crate::seed::SeedOptions::new(args.trackers, args.days, args.interval);
    options.owner = args.owner.clone();
    options.prefix = args.prefix.clone();
    options.city = city(&args.city)?;
    options.connections = args.connections as usize;
    options.batch_rows = args.batch_rows as usize;
    let database = crate::database::Database::open(&config).await?;
    let result = async {
        database.migrate(&config).await?;
        crate::seed::run(&database.pool, &options, |done, total| {
            eprintln!("seed: {done}/{total} fixes written");
        })
        .await
    }
    .await;
    database.close().await;
    let report = result?;
    println!(
        "seeded {} trackers ({} new): {} fixes written, {} stored, in {:.1} s ({:.0} fixes/s)",
        report.trackers,
        report.trackers_created,
        report.rows_written,
        report.rows_stored,
        report.seconds,
        report.rows_per_second
    );
    Ok(())
}

#[cfg(feature = "demo")]
fn city(name: &str) -> anyhow::Result<firmware_sim::City> {
    firmware_sim::City::by_name(name)
        .ok_or_else(|| anyhow::anyhow!("unknown city {name:?}: choose berlin or lyon"))
}

#[cfg(not(feature = "demo"))]
async fn demo(_: &Cli, _: &DemoArgs) -> anyhow::Result<()> {
    Err(built_without_demo("demo"))
}

#[cfg(not(feature = "demo"))]
async fn seed(_: &Cli, _: &SeedArgs) -> anyhow::Result<()> {
    Err(built_without_demo("seed"))
}

/// `demo` and `seed` run the simulator, which a `--no-default-features` build leaves out.
#[cfg(not(feature = "demo"))]
fn built_without_demo(verb: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "`pettracker {verb}` needs the firmware simulator, but this binary was built without the \
         `demo` feature (it is on by default: build without --no-default-features, or with \
         --features demo)"
    )
}

/// The password for `user create`: standard input or the environment, never an argument.
fn read_new_password(from_stdin: bool) -> anyhow::Result<secrecy::SecretString> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| anyhow::anyhow!("cannot read the password from standard input: {e}"))?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        return Ok(secrecy::SecretString::from(password.to_owned()));
    }
    match std::env::var("PETTRACKER_USER_PASSWORD") {
        Ok(password) if !password.is_empty() => Ok(secrecy::SecretString::from(password)),
        _ => anyhow::bail!(
            "no password given: pass --password-stdin and write it to standard input, \
             or set PETTRACKER_USER_PASSWORD"
        ),
    }
}

async fn user_command(
    pool: &deadpool_postgres::Pool,
    config: &Config,
    command: &UserCommand,
) -> anyhow::Result<()> {
    use crate::auth::{Email, Password, store};
    match command {
        UserCommand::Create {
            email,
            admin,
            password_stdin,
        } => {
            let email = Email::parse(email).map_err(|e| anyhow::anyhow!("invalid email: {e}"))?;
            let password = Password::parse(&read_new_password(*password_stdin)?, &email)
                .map_err(|e| anyhow::anyhow!("password refused: {e}"))?;
            let listed = config
                .auth
                .admin_emails
                .iter()
                .any(|e| e.trim().to_lowercase() == email.normalized());
            let user = store::create_user(pool, &email, &password, *admin || listed)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create user {email}: {e}"))?;
            println!("{}", user.id);
        }
    }
    Ok(())
}

async fn tracker_command(
    pool: &deadpool_postgres::Pool,
    command: &TrackerCommand,
) -> anyhow::Result<()> {
    use gateway::protocol::TrackerId;
    use gateway::storage::trackers;
    let parse = |id: &str| {
        TrackerId::parse(id).map_err(|e| anyhow::anyhow!("invalid tracker id {id:?}: {e}"))
    };
    match command {
        TrackerCommand::Provision {
            id,
            pet_name,
            json,
            count: Some(count),
        } => {
            use futures::StreamExt;
            let ids = (1..=*count)
                .map(|i| parse(&format!("{id}-{i}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            // A few at a time: hashing the claim codes is the slow part, and it runs on the
            // blocking pool while the database takes the inserts.
            let mut results = futures::stream::iter(ids)
                .map(|tracker| async move {
                    trackers::provision(pool, &tracker, pet_name.as_deref()).await
                })
                .buffered(8);
            while let Some(provisioned) = results.next().await {
                let provisioned = provisioned?;
                if *json {
                    println!("{}", serde_json::to_string(&provisioned)?);
                } else {
                    println!(
                        "{} {} {}",
                        provisioned.tracker_id, provisioned.secret, provisioned.claim_code
                    );
                }
            }
        }
        TrackerCommand::Provision {
            id,
            pet_name,
            json,
            count: None,
        } => {
            let provisioned = trackers::provision(pool, &parse(id)?, pet_name.as_deref()).await?;
            if *json {
                println!("{}", serde_json::to_string(&provisioned)?);
            } else {
                println!("tracker:    {}", provisioned.tracker_id);
                println!("secret:     {}", provisioned.secret);
                println!("claim code: {}", provisioned.claim_code);
                println!("(shown once: both are stored hashed)");
            }
        }
        TrackerCommand::List { json } => {
            let list = crate::fleet::list(pool).await?;
            if *json {
                println!("{}", serde_json::to_string(&list)?);
            } else {
                println!(
                    "{:<24} {:<16} {:<8} {:<8} {:<7} LAST SEEN",
                    "TRACKER", "PET", "OWNER", "REVOKED", "ONLINE"
                );
                for t in list {
                    println!(
                        "{:<24} {:<16} {:<8} {:<8} {:<7} {}",
                        t.tracker_id,
                        t.pet_name.unwrap_or_default(),
                        t.owner_id
                            .map(|o| o.to_string())
                            .unwrap_or_else(|| "-".into()),
                        if t.revoked { "yes" } else { "no" },
                        if t.online.unwrap_or(false) {
                            "yes"
                        } else {
                            "no"
                        },
                        t.last_seen
                            .map(|s| s.to_rfc3339())
                            .unwrap_or_else(|| "never".into()),
                    );
                }
            }
        }
        TrackerCommand::Revoke { id } => {
            trackers::revoke(pool, &parse(id)?).await?;
            println!("tracker {id} revoked");
        }
    }
    Ok(())
}
