//! Wires the parts of a running server together: database, broker, ingest and HTTP, with one shutdown signal.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use anyhow::Context;
use gateway::broker::{self, BrokerHandle, Downlink};
use gateway::ingest::{self, AckDue};
use gateway::protocol::{self, Seq, TrackerId};
use gateway::shutdown::{self, Shutdown, ShutdownTrigger};
use gateway::storage::{self, notify};
use std::time::Duration;
use tokio::net::TcpListener;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use std::collections::HashMap;
use tokio::sync::watch;

use crate::config::Config;
use crate::database::Database;
use crate::http::{self, HttpState};
use crate::leadership::{self, Job, Leadership, Standing};

/// A server started by [`spawn`]: its bound addresses and the means to stop it.
pub struct RunningApp {
    pub http_addr: SocketAddr,
    pub mqtt_addr: Option<SocketAddr>,
    pub mqtt_tls_addr: Option<SocketAddr>,
    pub mqtt_ws_addr: Option<SocketAddr>,
    pub pool: deadpool_postgres::Pool,
    /// Tell it when geofences are changed outside the API (the demo creates safe zones).
    /// `None` in an `ingest` instance, which runs no alert engine.
    pub alerts: Option<Arc<crate::alerts::AlertsHandle>>,
    /// The live feed's hub: who is subscribed to what (tests wait on a session's end with it).
    /// `None` in an `ingest` instance.
    pub live: Option<Arc<crate::live::Hub>>,
    /// Whether this process leads each fleet-wide job ([`RunningApp::standing`]).
    standings: HashMap<Job, watch::Receiver<Standing>>,
    /// Shared (weakly) with the task waiting for a database that was away at start, which
    /// stops the server if the database it finds cannot be used.
    trigger: Arc<ShutdownTrigger>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
    /// Where this process stands for a fleet-wide job: leading it or not, and how often it has.
    pub fn standing(&self, job: Job) -> Standing {
        self.standings
            .get(&job)
            .map(|s| *s.borrow())
            .unwrap_or_default()
    }

    /// Asks every part to finish its work in flight and waits until they have.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.trigger.trigger();
        self.task.await.context("server task panicked")?
    }

    /// Waits until the server stops by itself (a fatal error) or `signal` completes.
    pub async fn run_until(
        self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let RunningApp {
            trigger, mut task, ..
        } = self;
        tokio::select! {
            result = &mut task => return result.context("server task panicked")?,
            () = signal => {}
        }
        tracing::info!("shutting down: draining work in flight");
        trigger.trigger();
        task.await.context("server task panicked")?
    }
}

/// Binds every listener, opens and migrates the database, and starts serving in the background.
/// Listen addresses with port 0 get a free port; the bound ones are in the result.
///
/// A configured database that cannot be reached does not stop the start: the server serves
/// `/healthz`, `/readyz` says what is missing, collars are told "server unavailable", and the
/// migrations run when the database comes; then the parts that need it start.
pub async fn spawn(config: Config) -> anyhow::Result<RunningApp> {
    spawn_with_clock(config, ingest::Clock::System).await
}

/// [`spawn`], with device times checked against `clock` (ingest and dead-letter retries): tests
/// of the time rules hold a manual clock and move it instead of sleeping.
pub async fn spawn_with_clock(config: Config, clock: ingest::Clock) -> anyhow::Result<RunningApp> {
    // The recorder before anything records: ingest and the live bus take the handles of their
    // per-message metrics once, on first use (gateway::ingest::events).
    let _ = http::metrics_handle();
    let http_listener = TcpListener::bind(config.http.addr).await.with_context(|| {
        format!(
            "cannot listen on {} for HTTP (change http.addr / PETTRACKER_HTTP_ADDR / --http-addr)",
            config.http.addr
        )
    })?;
    let http_addr = http_listener.local_addr()?;

    let database = Database::open(&config).await?;
    let (trigger, shutdown) = shutdown::channel();
    let trigger = Arc::new(trigger);
    let (set_ready, ready) = storage::readiness(false);
    let (fatal_tx, fatal) = oneshot::channel();
    match database.migrate(&config).await {
        Ok(report) => {
            schema_ready(&report);
            set_ready.ready();
        }
        Err(err) if err.is_retriable() => {
            tracing::warn!(
                %err,
                "the database is not available: serving /healthz, /readyz says not ready and \
                 collars are told \"server unavailable\" until it comes"
            );
            tokio::spawn(await_database(
                database.migrator(&config),
                set_ready,
                fatal_tx,
                Arc::downgrade(&trigger),
                shutdown.clone(),
            ));
        }
        Err(err) => return Err(err.into()),
    }
    let until_ready = |task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>| {
        let (ready, mut shutdown) = (ready.clone(), shutdown.clone());
        async move {
            tokio::select! {
                () = ready.wait() => task.await,
                () = shutdown.recv() => {}
            }
        }
    };
    let role = config.role;
    tracing::info!(?role, "starting");

    // Fleet-wide jobs run in one process of those sharing the database (src/leadership.rs),
    // whatever its role.
    let retention = {
        let (pool, settings, ready) = (
            database.pool.clone(),
            crate::retention::RetentionSettings::from_config(&config.storage),
            ready.clone(),
        );
        leadership::elect(
            database.url.clone(),
            Job::Retention,
            Box::new(move |mut stop: Shutdown| {
                let (pool, settings, ready) = (pool.clone(), settings.clone(), ready.clone());
                Box::pin(async move {
                    tokio::select! {
                        () = ready.wait() => crate::retention::run(pool, settings, stop).await,
                        () = stop.recv() => {}
                    }
                })
            }),
            shutdown.clone(),
        )
    };
    let days = {
        let (pool, ready) = (database.pool.clone(), ready.clone());
        let interval =
            std::time::Duration::from_secs(config.storage.days_settle_interval_secs.max(1));
        leadership::elect(
            database.url.clone(),
            Job::Days,
            Box::new(move |mut stop: Shutdown| {
                let (pool, ready) = (pool.clone(), ready.clone());
                Box::pin(async move {
                    tokio::select! {
                        () = ready.wait() => crate::days::run(pool, interval, stop).await,
                        () = stop.recv() => {}
                    }
                })
            }),
            shutdown.clone(),
        )
    };
    let mut leaderships = vec![retention, days];

    // Behind an external broker any instance may commit any tracker's fixes: the alert engine
    // judges in one instance, fed by all (src/alerts/mod.rs).
    let external = config.external_broker();
    let alert_mode = if external.is_some() {
        crate::alerts::Mode::Led
    } else {
        crate::alerts::Mode::Local
    };

    // The owners' side: live feeds, alerts, webhooks.
    let api = role.serves_api().then(|| {
        let alert_leadership = leadership::elect(
            database.url.clone(),
            Job::Alerts,
            leadership::hold(),
            shutdown.clone(),
        );
        // Validated fixes reach the live feeds through this bus, before they are stored.
        let live_bus = Arc::new(crate::live::LiveBus::new(config.live.bus_capacity));
        let live_hub = crate::live::Hub::start(
            live_bus.as_ref(),
            crate::live::LiveOptions::from_settings(&config.live),
            shutdown.clone(),
        );
        let alerts = crate::alerts::start(
            database.pool.clone(),
            config.alerts,
            alert_mode,
            ready.clone(),
            alert_leadership.watch(),
            shutdown.clone(),
        );
        leaderships.push(alert_leadership);
        // Alerts raised here or in another instance, as the database announces them.
        tokio::spawn(crate::live::announce::alerts(
            notify::listen(
                database.url.clone(),
                crate::alerts::store::ALERT_CHANNEL,
                shutdown.clone(),
            ),
            live_bus.clone(),
        ));
        let (pool, base, stop) = (
            database.pool.clone(),
            crate::alerts::webhooks::DeliverySettings::from_settings(&config.alerts),
            shutdown.clone(),
        );
        tokio::spawn(until_ready(Box::pin(async move {
            crate::alerts::webhooks::start(pool, base, stop);
        })));
        ApiSide {
            live_bus,
            live_hub,
            alerts,
        }
    });

    // Behind an external broker, what one instance ingests reaches the others' live feeds and
    // the alert engine's leader through the live relay.
    let (relay, relay_publisher) = match &external {
        Some(external) => {
            let consumer = api.as_ref().map(|api| {
                Arc::new(crate::live::relay::FromOtherInstances::new(
                    api.live_bus.clone(),
                    &api.alerts,
                )) as Arc<dyn gateway::external::relay::RelayConsumer>
            });
            let ends = gateway::external::RelayEnds {
                publish: role.ingests(),
                consumer,
            };
            let (relay, publisher) =
                gateway::external::start_relay(external, ends, shutdown.clone())?;
            (Some(relay), publisher)
        }
        None => (None, None),
    };

    // The pipeline stops only after the broker side has stopped feeding it.
    let (ingest_trigger, ingest_shutdown) = shutdown::channel();
    let pipeline = if role.ingests() {
        let mut ingest_config = config.ingest_config();
        ingest_config.clock = clock.clone();
        // The alert engine computes from every committed fix (the live bus may skip some).
        use gateway::external::relay::Tee;
        use gateway::live::LivePublisher;
        match (&api, &relay_publisher) {
            (Some(api), Some(relay)) => {
                ingest_config.live =
                    LivePublisher::new(Arc::new(Tee(api.live_bus.clone(), relay.clone())));
                ingest_config.committed =
                    Some(Arc::new(Tee(api.alerts.feed.clone(), relay.clone())));
            }
            (Some(api), None) => {
                ingest_config.live = LivePublisher::new(api.live_bus.clone());
                ingest_config.committed = Some(api.alerts.feed.clone());
            }
            (None, Some(relay)) => {
                ingest_config.live = LivePublisher::new(relay.clone());
                ingest_config.committed = Some(relay.clone());
            }
            (None, None) => {}
        }
        // Collars' command reports are applied to the server's commands in their batch.
        ingest_config.commands = Some(Arc::new(crate::commands::reports::Reports));
        ingest_config.database = ready.clone();
        Some(
            ingest::start(database.ingest_pool.clone(), ingest_config, ingest_shutdown)
                .context("cannot open the ingest spool (setting ingest.spool_dir)")?,
        )
    } else {
        None
    };

    let (command_wake, command_woken) = crate::commands::dispatch::channel();
    let broker = match (external, relay, &pipeline) {
        (Some(external), Some(relay), pipeline) => {
            let ingest = pipeline.as_ref().map(|p| {
                let revoked = gateway::external::revoked::start(
                    database.pool.clone(),
                    database.url.clone(),
                    shutdown.clone(),
                );
                (p.hooks.clone(), revoked)
            });
            BrokerSide::External(Arc::new(gateway::external::start(
                &external,
                ingest,
                relay,
                shutdown.clone(),
            )?))
        }
        (_, _, Some(pipeline)) => {
            if config.mqtt.open {
                tracing::warn!(
                    "MQTT OPEN MODE: any client may connect without credentials and publish for any tracker. \
                     Never use this outside development (setting mqtt.open / --mqtt-open)."
                );
            }
            let hooks = Arc::new(crate::commands::dispatch::WakeOnConnect {
                inner: pipeline.hooks.clone(),
                wake: command_wake.clone(),
            });
            let mut broker_config = config.broker_config();
            broker_config.max_connections =
                broker::fit_connections_to_open_file_limit(broker_config.max_connections);
            BrokerSide::Embedded(Arc::new(broker::start(broker_config, hooks).await?))
        }
        // Validation refuses an `api` instance without an external broker.
        (_, _, None) => anyhow::bail!(
            "role `api` needs an external broker (external_broker.url / --external-broker)"
        ),
    };
    let (mqtt_addr, mqtt_tls_addr, mqtt_ws_addr) = match &broker {
        BrokerSide::Embedded(b) => (b.tcp_addr(), b.tls_addr(), b.ws_addr()),
        BrokerSide::External(_) => (None, None, None),
    };

    let mut tasks = Vec::new();
    let mut ingest_task = None;
    if let Some(pipeline) = pipeline {
        tasks.push(tokio::spawn(forward_acks(pipeline.acks, broker.downlink())));
        ingest_task = Some(pipeline.task);
    }
    if let BrokerSide::Embedded(embedded) = &broker {
        let revoked = notify::listen(
            database.url.clone(),
            notify::TRACKER_REVOKED,
            shutdown.clone(),
        );
        tasks.push(tokio::spawn(kick_revoked(revoked, embedded.clone())));
    }
    // The dispatcher stops on the shutdown signal; it holds the downlink until it has.
    let mut command_task = None;
    if let Some(api) = &api {
        // Command transitions come from the dispatcher, the API and the ingest path, in this
        // and other processes; the database announces each, and the live feed passes them on.
        let command_events = notify::listen(
            database.url.clone(),
            crate::commands::NOTIFY_CHANNEL,
            shutdown.clone(),
        );
        tokio::spawn(crate::live::announce::commands(
            command_events,
            api.live_bus.clone(),
        ));
        command_task = Some(tokio::spawn(until_ready(Box::pin(
            crate::commands::dispatch::run(
                database.pool.clone(),
                broker.downlink(),
                crate::commands::dispatch::DispatchConfig::from_config(&config.commands),
                command_woken,
                shutdown.clone(),
            ),
        ))));
    }

    let broker_ready: Arc<dyn Fn() -> bool + Send + Sync> = match &broker {
        BrokerSide::Embedded(b) => {
            let b = b.clone();
            Arc::new(move || b.is_listening())
        }
        BrokerSide::External(b) => {
            let b = b.clone();
            Arc::new(move || b.is_connected())
        }
    };
    let http = match &api {
        Some(api) => Http::Api(Box::new(HttpState {
            pool: database.pool.clone(),
            metrics: http::metrics_handle(),
            broker_ready,
            database_ready: ready,
            auth: Arc::new(crate::auth::AuthKeys::from_config(&config.auth)),
            commands: http::CommandSettings {
                wake: command_wake,
                default_ttl_secs: config.commands.default_ttl_secs,
            },
            limits: config.ingest_config().limits,
            clock,
            rate_limit: Arc::new(http::limit::RateLimit::new(
                NonZeroU32::new(config.http.rate_limit_per_second).unwrap_or(NonZeroU32::MIN),
                NonZeroU32::new(config.http.rate_limit_burst).unwrap_or(NonZeroU32::MIN),
            )),
            live: api.live_hub.clone(),
            alerts: api.alerts.handle.clone(),
            web: Arc::new(http::web::WebSettings::new(config.map.clone())),
            webhook_egress: crate::alerts::egress::Egress::from_settings(&config.alerts),
            broker_auth: Arc::new(http::broker_auth::BrokerAuth::from_config(
                &config.broker_auth,
            )),
            // Validated with the configuration, so nothing is left to refuse here.
            trusted_proxies: Arc::new(
                http::client::TrustedProxies::parse(&config.http.trusted_proxies)
                    .unwrap_or_default(),
            ),
        })),
        None => Http::Health(http::Health {
            pool: database.pool.clone(),
            metrics: http::metrics_handle(),
            broker_ready,
            database_ready: ready,
        }),
    };
    if api.is_some() {
        crate::auth::warm_up();
    }
    let pool = database.pool.clone();
    let standings = leaderships.iter().map(|l| (l.job(), l.watch())).collect();
    let parts = Parts {
        leaderships,
        http_listener,
        http,
        database,
        broker,
        tasks,
        command_task,
        ingest_trigger,
        ingest_task,
        fatal,
    };
    let task = tokio::spawn(run(parts, shutdown));
    tracing::info!(%http_addr, mqtt_addr = ?mqtt_addr, ?role, "pettracker is serving");
    Ok(RunningApp {
        http_addr,
        mqtt_addr,
        mqtt_tls_addr,
        mqtt_ws_addr,
        pool,
        alerts: api.as_ref().map(|a| a.alerts.handle.clone()),
        live: api.as_ref().map(|a| a.live_hub.clone()),
        standings,
        trigger,
        task,
    })
}

/// What an instance serving owners runs beside HTTP.
struct ApiSide {
    live_bus: Arc<crate::live::LiveBus>,
    live_hub: Arc<crate::live::Hub>,
    alerts: crate::alerts::Alerts,
}

/// The broker collars talk to: the embedded one, or a connection to an external one.
enum BrokerSide {
    Embedded(Arc<BrokerHandle>),
    External(Arc<gateway::external::ExternalBroker>),
}

impl BrokerSide {
    /// Where acks and commands are published.
    fn downlink(&self) -> Arc<dyn Downlink> {
        match self {
            BrokerSide::Embedded(b) => b.clone(),
            BrokerSide::External(b) => b.clone(),
        }
    }

    /// Embedded: stops listening and disconnects the collars. External: stops taking messages,
    /// acknowledges those stored, disconnects. The pipeline must still run.
    async fn shutdown(self) {
        match self {
            BrokerSide::Embedded(broker) => match Arc::try_unwrap(broker) {
                Ok(broker) => broker.shutdown().await,
                Err(_) => tracing::warn!(
                    "broker still referenced at shutdown; its listeners close with the process"
                ),
            },
            BrokerSide::External(broker) => match Arc::try_unwrap(broker) {
                Ok(broker) => broker.shutdown().await,
                Err(_) => tracing::warn!(
                    "external broker connection still referenced at shutdown; it closes with the process"
                ),
            },
        }
    }
}

/// What HTTP serves: everything, or (an `ingest` instance) health checks and metrics.
enum Http {
    Api(Box<HttpState>),
    Health(http::Health),
}

struct Parts {
    /// Each ends (its job stopped, its lock released) after the shutdown signal.
    leaderships: Vec<Leadership>,
    http_listener: TcpListener,
    http: Http,
    database: Database,
    broker: BrokerSide,
    /// Ack forwarding and revocation kicks: aborted at shutdown.
    tasks: Vec<JoinHandle<()>>,
    command_task: Option<JoinHandle<()>>,
    ingest_trigger: ShutdownTrigger,
    ingest_task: Option<JoinHandle<()>>,
    /// A database that came but cannot be used (a schema too new, a changed migration).
    fatal: oneshot::Receiver<anyhow::Error>,
}

async fn run(parts: Parts, shutdown: Shutdown) -> anyhow::Result<()> {
    let Parts {
        leaderships,
        http_listener,
        http,
        database,
        broker,
        tasks,
        command_task,
        ingest_trigger,
        ingest_task,
        mut fatal,
    } = parts;
    let mut http_shutdown = shutdown.clone();
    let stop = async move { http_shutdown.recv().await };
    match http {
        Http::Api(state) => {
            warp::serve(http::routes(*state))
                .incoming(http_listener)
                .graceful(stop)
                .run()
                .await
        }
        Http::Health(health) => {
            warp::serve(http::ingest_routes(health))
                .incoming(http_listener)
                .graceful(stop)
                .run()
                .await
        }
    }

    // Collars are disconnected at shutdown, so acks still owed could not reach them anyway;
    // they are cumulative, and the collars re-send unacknowledged fixes, which are deduplicated.
    for task in &tasks {
        task.abort();
    }
    if let Some(command_task) = command_task {
        let _ = command_task.await;
    }
    for task in tasks {
        let _ = task.await;
    }
    broker.shutdown().await;
    ingest_trigger.trigger();
    if let Some(ingest_task) = ingest_task {
        let _ = ingest_task.await;
    }
    for leadership in leaderships {
        leadership.stopped().await;
    }
    database.close().await;
    if let Ok(err) = fatal.try_recv() {
        return Err(err);
    }
    tracing::info!("pettracker stopped");
    Ok(())
}

fn schema_ready(report: &storage::MigrationReport) {
    tracing::info!(backend = report.backend.as_str(), version = report.current, applied = ?report.applied, "database schema ready");
}

/// Waits for a database that was away at start: tries to migrate it with backoff until it
/// works, then says it is ready. A database that comes but cannot be used (a schema newer than
/// this binary, a changed migration) stops the server with that error.
async fn await_database(
    migrator: crate::database::Migrator,
    ready: storage::SetReady,
    fatal: oneshot::Sender<anyhow::Error>,
    trigger: std::sync::Weak<ShutdownTrigger>,
    mut shutdown: Shutdown,
) {
    let mut backoff =
        gateway::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        tokio::select! {
            () = backoff.wait() => {}
            () = shutdown.recv() => return,
        }
        match migrator.migrate().await {
            Ok(report) => {
                tracing::info!("the database is here");
                schema_ready(&report);
                ready.ready();
                return;
            }
            Err(err) if err.is_retriable() => {
                tracing::debug!(%err, "the database is still not available");
            }
            Err(err) => {
                tracing::error!(%err, "the database cannot be used; stopping");
                let _ = fatal.send(err.into());
                if let Some(trigger) = trigger.upgrade() {
                    trigger.trigger();
                }
                return;
            }
        }
    }
}

/// Publishes `{"seq": N}` on `trackers/{id}/ack` for each committed batch, through whichever
/// broker the collars are on.
async fn forward_acks(mut acks: mpsc::Receiver<AckDue>, broker: Arc<dyn Downlink>) {
    while let Some(ack) = acks.recv().await {
        let (Ok(tracker), Ok(seq)) = (TrackerId::parse(&ack.tracker), Seq::try_from(ack.seq))
        else {
            continue;
        };
        let topic = protocol::topics::ack(&tracker);
        let payload = protocol::encode_ack(seq);
        if let Err(err) = broker.publish(&topic, payload.into(), 1).await {
            tracing::debug!(%err, %tracker, "ack not delivered; the collar will re-send and be acked then");
        }
    }
}

/// Disconnects collars whose tracker was revoked, by this or any other process.
async fn kick_revoked(mut revoked: mpsc::Receiver<String>, broker: Arc<BrokerHandle>) {
    while let Some(id) = revoked.recv().await {
        if let Ok(tracker) = TrackerId::parse(&id) {
            tracing::info!(%tracker, "tracker revoked: disconnecting it");
            broker.kick(&tracker).await;
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (what Kubernetes and docker send).
pub async fn termination_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
