//! Wires the parts of a running server together: database, broker, ingest and HTTP, with one shutdown signal.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use gateway::shutdown::{self, Shutdown, ShutdownTrigger};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::database::Database;
use crate::http::{self, HttpState};

/// A server started by [`spawn`]: its bound addresses and the means to stop it.
pub struct RunningApp {
    pub http_addr: SocketAddr,
    pub pool: deadpool_postgres::Pool,
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
            "cannot listen on {} for HTTP (setting http.addr)",
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
    let state = HttpState {
        pool: database.pool.clone(),
        metrics: http::metrics_handle(),
        broker_ready: Arc::new(|| true),
    };
    let pool = database.pool.clone();
    let task = tokio::spawn(run(http_listener, state, database, shutdown));
    tracing::info!(%http_addr, "pettracker is serving");
    Ok(RunningApp {
        http_addr,
        pool,
        trigger,
        task,
    })
}

async fn run(
    http_listener: TcpListener,
    state: HttpState,
    database: Database,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut http_shutdown = shutdown.clone();
    let server = warp::serve(http::routes(state))
        .incoming(http_listener)
        .graceful(async move { http_shutdown.recv().await })
        .run();
    server.await;
    database.close().await;
    Ok(())
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
