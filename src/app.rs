//! Wires the parts of a running server together: database, broker, ingest and HTTP, with one shutdown signal.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use anyhow::Context;
use gateway::broker::{self, BrokerHandle};
use gateway::ingest::{self, AckDue};
use gateway::protocol::{self, Seq, TrackerId};
use gateway::shutdown::{self, Shutdown, ShutdownTrigger};
use gateway::storage::notify;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::database::Database;
use crate::http::{self, HttpState};

/// A server started by [`spawn`]: its bound addresses and the means to stop it.
pub struct RunningApp {
    pub http_addr: SocketAddr,
    pub mqtt_addr: Option<SocketAddr>,
    pub mqtt_tls_addr: Option<SocketAddr>,
    pub mqtt_ws_addr: Option<SocketAddr>,
    pub pool: deadpool_postgres::Pool,
    /// Tell it when geofences are changed outside the API (the demo creates safe zones).
    pub alerts: Arc<crate::alerts::AlertsHandle>,
    trigger: ShutdownTrigger,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningApp {
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
pub async fn spawn(config: Config) -> anyhow::Result<RunningApp> {
    let http_listener = TcpListener::bind(config.http.addr).await.with_context(|| {
        format!(
            "cannot listen on {} for HTTP (change http.addr / PETTRACKER_HTTP_ADDR / --http-addr)",
            config.http.addr
        )
    })?;
    let http_addr = http_listener.local_addr()?;

    let database = Database::open(&config).await?;
    let report = database.migrate(&config).await?;
    tracing::info!(backend = report.backend.as_str(), version = report.current, applied = ?report.applied, "database schema ready");
    if let Err(err) =
        gateway::storage::apply_retention(&database.pool, config.storage.retention_days).await
    {
        tracing::warn!(%err, "could not apply the retention window");
    }

    let (trigger, shutdown) = shutdown::channel();
    // The pipeline stops only after the broker has stopped feeding it.
    let (ingest_trigger, ingest_shutdown) = shutdown::channel();
    // Validated fixes reach the live feeds through this bus, before they are stored.
    let live_bus = Arc::new(gateway::live::InProcessBus::new(config.live.bus_capacity));
    let live_hub =
        crate::live::Hub::start(live_bus.as_ref(), config.live_options(), shutdown.clone());
    let alerts = crate::alerts::start(
        database.pool.clone(),
        live_bus.clone(),
        config.alerts,
        shutdown.clone(),
    );
    crate::alerts::webhooks::start(
        database.pool.clone(),
        config.alerts.webhook_delivery(),
        shutdown.clone(),
    );
    let mut ingest_config = config.ingest_config();
    ingest_config.live = gateway::live::LivePublisher::new(live_bus.clone());
    let pipeline = ingest::start(database.pool.clone(), ingest_config, ingest_shutdown)
        .context("cannot open the ingest spool (setting ingest.spool_dir)")?;

    if config.mqtt.open {
        tracing::warn!(
            "MQTT OPEN MODE: any client may connect without credentials and publish for any tracker. \
             Never use this outside development (setting mqtt.open / --mqtt-open)."
        );
    }
    let (command_wake, command_woken) = crate::commands::dispatch::channel();
    let hooks = Arc::new(crate::commands::dispatch::WakeOnConnect {
        inner: pipeline.hooks.clone(),
        wake: command_wake.clone(),
    });
    let mut broker_config = config.broker_config();
    broker_config.max_connections =
        broker::fit_connections_to_open_file_limit(broker_config.max_connections);
    let broker = broker::start(broker_config, hooks).await?;
    let (mqtt_addr, mqtt_tls_addr, mqtt_ws_addr) =
        (broker.tcp_addr(), broker.tls_addr(), broker.ws_addr());
    let broker = Arc::new(broker);

    let ack_task = tokio::spawn(forward_acks(pipeline.acks, broker.clone()));
    let revoked = notify::listen(
        database.url.clone(),
        notify::TRACKER_REVOKED,
        shutdown.clone(),
    );
    let revoke_task = tokio::spawn(kick_revoked(revoked, broker.clone()));
    // Command transitions come from the dispatcher, the API and the ingest path, in this and
    // other processes; the database announces each, and the live feed passes them on.
    let command_events = notify::listen(
        database.url.clone(),
        notify::COMMAND_EVENT,
        shutdown.clone(),
    );
    tokio::spawn(crate::commands::announce(command_events, live_bus.clone()));
    let command_task = tokio::spawn(crate::commands::dispatch::run(
        database.pool.clone(),
        broker.clone(),
        crate::commands::dispatch::DispatchConfig::from_config(&config.commands),
        command_woken,
        shutdown.clone(),
    ));

    let ready_broker = broker.clone();
    let state = HttpState {
        pool: database.pool.clone(),
        metrics: http::metrics_handle(),
        broker_ready: Arc::new(move || ready_broker.is_listening()),
        auth: Arc::new(crate::auth::AuthKeys::from_config(&config.auth)),
        commands: http::CommandSettings {
            wake: command_wake,
            default_ttl_secs: config.commands.default_ttl_secs,
        },
        limits: config.ingest_config().limits,
        rate_limit: Arc::new(http::limit::RateLimit::new(
            NonZeroU32::new(config.http.rate_limit_per_second).unwrap_or(NonZeroU32::MIN),
            NonZeroU32::new(config.http.rate_limit_burst).unwrap_or(NonZeroU32::MIN),
        )),
        live: live_hub,
        alerts: alerts.clone(),
        webhook_egress: config.alerts.webhook_egress(),
    };
    crate::auth::warm_up();
    let pool = database.pool.clone();
    let parts = Parts {
        http_listener,
        state,
        database,
        broker,
        ack_task,
        revoke_task,
        command_task,
        ingest_trigger,
        ingest_task: pipeline.task,
    };
    let task = tokio::spawn(run(parts, shutdown));
    tracing::info!(%http_addr, mqtt_addr = ?mqtt_addr, "pettracker is serving");
    Ok(RunningApp {
        http_addr,
        mqtt_addr,
        mqtt_tls_addr,
        mqtt_ws_addr,
        pool,
        alerts,
        trigger,
        task,
    })
}

struct Parts {
    http_listener: TcpListener,
    state: HttpState,
    database: Database,
    broker: Arc<BrokerHandle>,
    ack_task: JoinHandle<()>,
    revoke_task: JoinHandle<()>,
    command_task: JoinHandle<()>,
    ingest_trigger: ShutdownTrigger,
    ingest_task: JoinHandle<()>,
}

async fn run(parts: Parts, shutdown: Shutdown) -> anyhow::Result<()> {
    let Parts {
        http_listener,
        state,
        database,
        broker,
        ack_task,
        revoke_task,
        command_task,
        ingest_trigger,
        ingest_task,
    } = parts;
    let mut http_shutdown = shutdown.clone();
    warp::serve(http::routes(state))
        .incoming(http_listener)
        .graceful(async move { http_shutdown.recv().await })
        .run()
        .await;

    // Collars are disconnected at shutdown, so acks still owed could not reach them anyway;
    // they are cumulative, and the collars re-send unacknowledged fixes, which are deduplicated.
    revoke_task.abort();
    ack_task.abort();
    // The dispatcher stopped on the shutdown signal; it holds a broker handle until it has.
    let _ = command_task.await;
    let _ = revoke_task.await;
    let _ = ack_task.await;
    match Arc::try_unwrap(broker) {
        Ok(broker) => broker.shutdown().await,
        Err(_) => tracing::warn!(
            "broker still referenced at shutdown; its listeners close with the process"
        ),
    }
    ingest_trigger.trigger();
    let _ = ingest_task.await;
    database.close().await;
    tracing::info!("pettracker stopped");
    Ok(())
}

/// Publishes `{"seq": N}` on `trackers/{id}/ack` for each committed batch.
async fn forward_acks(mut acks: mpsc::Receiver<AckDue>, broker: Arc<BrokerHandle>) {
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
