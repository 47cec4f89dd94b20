//! The daemon's lifecycle: open the store, resume in-flight cycles, catch up a missed
//! schedule, serve HTTP, run the scheduler, and on SIGTERM/SIGINT drain within the grace
//! period; on SIGHUP re-read and validate the configuration (an invalid one is logged and
//! the old one kept).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::{Engine, Steps};
use crate::metrics::Metrics;
use crate::server::{self, AppState};
use crate::signal::{self, Request};
use crate::store::Store;
use crate::{notify, scheduler};

/// A started daemon: the engine and the address it serves on. Dropping the handle does not
/// stop it; cancel the token passed to [`start`].
pub struct Running {
    pub engine: Engine,
    pub addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    scheduler: tokio::task::JoinHandle<()>,
}

/// Open everything and start serving; returns once the daemon is ready.
pub async fn start(
    config: Arc<Config>,
    shutdown: CancellationToken,
    schedule: bool,
) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.daemon.state_dir).with_context(|| {
        format!(
            "cannot create the state directory {} (set daemon.state_dir to a writable folder)",
            config.daemon.state_dir.display()
        )
    })?;
    let store = Store::connect(&config.store.url, config.store.max_connections).await?;
    info!(store = config.store.redacted_url(), "store ready");
    if config.server.api_token.is_none() {
        warn!(
            "no API token configured (server.api_token_file): mutating API endpoints are disabled"
        );
    }
    let engine = Engine::new(
        store,
        config.clone(),
        Steps::from_config(&config)?,
        Metrics::new(),
        shutdown.clone(),
    );
    engine.register_pipelines().await?;
    let resumed = engine.resume_all().await?;
    if resumed > 0 {
        info!(resumed, "resumed in-flight cycles");
    }
    if schedule {
        scheduler::catch_up(&engine, chrono::Utc::now()).await;
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen): is another daemon running?",
                config.server.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let state = AppState::new(engine.clone(), &config)?;
    let token = shutdown.clone();
    let server = tokio::spawn(server::run(listener, state, async move {
        token.cancelled().await
    }));
    let scheduler = if schedule {
        tokio::spawn(scheduler::run(engine.clone(), shutdown.clone()))
    } else {
        tokio::spawn(async {})
    };
    info!(%addr, pipelines = config.pipelines.len(), "retraind serving (metrics at http://{addr}/metrics)");
    Ok(Running {
        engine,
        addr,
        server,
        scheduler,
    })
}

impl Running {
    /// Wait for the drain after the shutdown token was cancelled, at most `grace`.
    pub async fn drain(self, grace: Duration) -> bool {
        let engine = self.engine.clone();
        let drained = tokio::time::timeout(grace, async move {
            engine.wait_stopped().await;
            let _ = self.scheduler.await;
            let _ = self.server.await;
        })
        .await
        .is_ok();
        self.engine.store().close().await;
        drained
    }
}

/// `retraind run`: the daemon until SIGTERM/SIGINT.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = Arc::new(Config::load(&config_path)?);
    let shutdown = CancellationToken::new();
    let mut signals = signal::listen().context("cannot install signal handlers")?;
    let running = start(config.clone(), shutdown.clone(), true).await?;
    notify::ready();
    let engine = running.engine.clone();
    let mut watchdog =
        tokio::time::interval(notify::watchdog_interval().unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = watchdog.tick() => notify::watchdog(),
            req = signals.recv() => match req {
                Some(Request::Reload) => reload(&engine, &config_path).await,
                Some(Request::Shutdown) | None => break,
            },
        }
    }
    let grace = engine.config().await.daemon.shutdown_grace;
    info!(
        ?grace,
        "shutting down: no new cycles; running steps stop at their next checkpoint"
    );
    notify::stopping();
    shutdown.cancel();
    if running.drain(grace).await {
        info!("stopped cleanly; in-flight cycles resume on the next start");
    } else {
        warn!(
            ?grace,
            "grace period over; exiting with steps still running (they resume on the next start)"
        );
    }
    Ok(())
}

async fn reload(engine: &Engine, path: &Path) {
    match Config::load(path) {
        Ok(new) => {
            engine.set_config(Arc::new(new)).await;
            if let Err(e) = engine.register_pipelines().await {
                warn!(error = %e, "reloaded config, but cannot register its pipelines yet");
            }
            info!(config = %path.display(), "configuration reloaded");
            notify::reloading_done(true);
        }
        Err(e) => {
            error!(error = %e, "configuration reload failed; keeping the old configuration");
            notify::reloading_done(false);
        }
    }
}
