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
use crate::engine::{Engine, FromConfig};
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
    retention: tokio::task::JoinHandle<()>,
    lease: tokio::task::JoinHandle<()>,
}

/// Become the leader if the lease is free: fence the store's writes on the token, resume the
/// cycles in flight, catch up a missed schedule. False when another daemon leads.
async fn try_lead(
    engine: &Engine,
    config: &Config,
    schedule: bool,
) -> Result<bool, crate::store::StoreError> {
    let me = &config.daemon.instance;
    let store = engine.store();
    match store
        .acquire_lease(me, config.daemon.lease_ttl, engine.shared().now())
        .await?
    {
        Some(token) => {
            if !engine.is_leader() {
                store.set_fence(Some((me.clone(), token)));
                engine.set_leader(true);
                info!(
                    instance = me,
                    token, "holding the leader lease: running cycles"
                );
                // Not leading until the cycles in flight are resumed: a store that fails
                // here (it just came back) is tried again at the next renewal.
                let resumed = match engine.resume_all().await {
                    Ok(n) => n,
                    Err(e) => {
                        engine.set_leader(false);
                        return Err(e);
                    }
                };
                if resumed > 0 {
                    info!(resumed, "resumed in-flight cycles");
                }
                if schedule {
                    scheduler::catch_up(engine, engine.shared().now()).await;
                }
            }
            Ok(true)
        }
        None => {
            if engine.is_leader() {
                warn!(
                    instance = me,
                    "the leader lease is held by another daemon: standing by"
                );
            }
            engine.set_leader(false);
            Ok(false)
        }
    }
}

/// Renew the lease every third of its TTL; take over when the leader's lapses; step down when
/// it cannot be renewed in time. Releases the lease on shutdown after the drain.
async fn lease_loop(
    engine: Engine,
    config: Arc<Config>,
    schedule: bool,
    shutdown: CancellationToken,
) {
    let me = config.daemon.instance.clone();
    let ttl = config.daemon.lease_ttl;
    let mut renewed = tokio::time::Instant::now();
    loop {
        engine
            .metrics()
            .leader
            .with_label_values(&[&me])
            .set(i64::from(engine.is_leader()));
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = shutdown.cancelled() => return,
        }
        match try_lead(&engine, &config, schedule).await {
            Ok(_) => renewed = tokio::time::Instant::now(),
            Err(e) => {
                warn!(error = %e, "cannot reach the store to renew the leader lease");
                if engine.is_leader() && renewed.elapsed() >= ttl {
                    error!(instance = me, "the lease lapsed unrenewed: stepping down");
                    engine.set_leader(false);
                }
            }
        }
    }
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
        Arc::new(FromConfig),
        Metrics::new(),
        shutdown.clone(),
    )?;
    engine.register_pipelines().await?;
    engine.set_leader(false);
    try_lead(&engine, &config, schedule).await?;
    engine
        .metrics()
        .leader
        .with_label_values(&[&config.daemon.instance])
        .set(i64::from(engine.is_leader()));
    let lease = tokio::spawn(lease_loop(
        engine.clone(),
        config.clone(),
        schedule,
        shutdown.clone(),
    ));
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (server.listen): is another daemon running?",
                config.server.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let state = AppState {
        engine: engine.clone(),
    };
    let token = shutdown.clone();
    let server = tokio::spawn(server::run(listener, state, async move {
        token.cancelled().await
    }));
    let (scheduler, retention) = if schedule {
        (
            tokio::spawn(scheduler::run(engine.clone(), shutdown.clone())),
            tokio::spawn(retention_loop(engine.clone(), shutdown.clone())),
        )
    } else {
        (tokio::spawn(async {}), tokio::spawn(async {}))
    };
    info!(%addr, pipelines = config.pipelines.len(), "retraind serving (metrics at http://{addr}/metrics)");
    Ok(Running {
        engine,
        addr,
        server,
        scheduler,
        retention,
        lease,
    })
}

/// Retention once a day (the first run a minute after the start), on the leader: what
/// `retraind gc` does, and `retraind_disk_bytes{kind}` measured after each run.
async fn retention_loop(engine: Engine, shutdown: CancellationToken) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = Duration::from_secs(86_400);
        if !engine.is_leader() {
            continue;
        }
        let config = engine.config().await;
        let now = engine.shared().now();
        match crate::engine::gc::run(engine.store(), &config, now, false).await {
            Ok(report) => {
                for (kind, bytes) in &report.disk_bytes {
                    engine
                        .metrics()
                        .disk_bytes
                        .with_label_values(&[kind])
                        .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
                }
                info!(
                    versions = report.versions.len(),
                    files = report.files.len(),
                    freed_bytes = report.freed_bytes,
                    "retention: collected what [daemon.retention] no longer keeps"
                );
            }
            Err(e) => warn!(error = %e, "retention run failed; the next runs in a day"),
        }
    }
}

impl Running {
    /// Wait for the drain after the shutdown token was cancelled, at most `grace`.
    pub async fn drain(self, grace: Duration) -> bool {
        let engine = self.engine.clone();
        let drained = tokio::time::timeout(grace, async move {
            engine.wait_stopped().await;
            let _ = self.scheduler.await;
            let _ = self.retention.await;
            let _ = self.server.await;
            let _ = self.lease.await;
        })
        .await
        .is_ok();
        // Every step has reached its checkpoint: hand the lease over at once.
        if self.engine.is_leader() {
            let me = self.engine.config().await.daemon.instance.clone();
            if let Err(e) = self.engine.store().release_lease(&me).await {
                warn!(error = %e, "cannot release the leader lease; a standby takes over when it lapses");
            }
        }
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
            if let Err(e) = engine.set_config(Arc::new(new)).await {
                error!(error = %e, "configuration reload failed: a part cannot be built; keeping the old configuration");
                notify::reloading_done(false);
                return;
            }
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
