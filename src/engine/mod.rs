//! The cycle engine: starts cycles, drives each one through its states, and resumes every
//! in-flight cycle after a restart.
//!
//! The shape, as in mini-redis: a thin [`driver`] (the only code that persists a cycle's
//! state) and one file per step under [`steps`] (load, check, decide, train, evaluate,
//! approve, deploy, watch), each taking a [`StepContext`] built once per step and returning
//! a typed [`StepResult`] that the driver persists in one compare-and-set transaction.
//! Operator actions (trigger, decide, freeze, resume, rollback) are in [`actions`]; what
//! the runaway guards are told about a pipeline is read in [`history`]. The pluggable
//! [`Parts`] (trainer, model loader, approval channels, deploy targets) are built from the
//! configuration by one [`PartsFactory`] and rebuilt with it on every reload.
//!
//! Each step is idempotent and its result is persisted together with the transition out of
//! the state, so a crash at any point re-runs at most the step that was interrupted.
//! Blocking work (reading data, statistics, training, scoring, file writes) runs on the
//! blocking pool. Shutdown stops the drive loop at the next checkpoint without changing the
//! stored state, so the next start resumes it.
//!
//! The engine must not hold state that is not in the store (memory only caches it), and must
//! not run blocking work on the async runtime.

pub mod actions;
mod context;
mod driver;
mod errors;
pub mod estimation;
pub mod gc;
pub mod history;
mod mirror;
mod notices;
mod parts;
pub mod steps;
mod targets;
#[cfg(test)]
mod testkit;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use actions::rollback::RollbackCause;
pub use context::{Shared, StepContext};
pub use errors::{EngineError, StepError};
pub use parts::{
    FromConfig, ModelLoader, Parts, PartsError, PartsFactory, Runtime, ServerSecrets, StoredModels,
};
pub use steps::{StepResult, Transition};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{CycleRow, Store, StoreError};

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Shared,
    /// The configuration and the parts built from it, replaced together on reload.
    runtime: RwLock<Arc<Runtime>>,
    factory: Arc<dyn PartsFactory>,
    tasks: TaskTracker,
    driving: Mutex<HashSet<i64>>,
    /// The drive tasks, for [`Engine::crash`].
    aborts: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Engine {
    /// An engine over `store` with the parts `factory` builds for `config`.
    pub fn new(
        store: Store,
        config: Arc<Config>,
        factory: Arc<dyn PartsFactory>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Result<Engine, PartsError> {
        Engine::with_shared(Shared::new(store, metrics, shutdown), config, factory)
    }

    /// An engine over the handles in `shared` (the simulator's clock).
    pub fn with_shared(
        shared: Shared,
        config: Arc<Config>,
        factory: Arc<dyn PartsFactory>,
    ) -> Result<Engine, PartsError> {
        let runtime = factory.build(&config)?;
        Ok(Engine {
            inner: Arc::new(Inner {
                shared,
                runtime: RwLock::new(Arc::new(runtime)),
                factory,
                tasks: TaskTracker::new(),
                driving: Mutex::new(HashSet::new()),
                aborts: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Stop every drive task at the point it has reached, without a checkpoint — what a
    /// killed process leaves behind (the simulator's crashes). The store keeps whatever was
    /// committed; a new engine on it resumes.
    pub fn crash(&self) {
        self.inner.shared.shutdown.cancel();
        if let Ok(mut aborts) = self.inner.aborts.lock() {
            for a in aborts.drain(..) {
                a.abort();
            }
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.shared.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.shared.metrics
    }

    /// What steps and actions share: the store, the metrics, the shutdown signal.
    pub fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Whether this daemon leads (drives cycles). True unless the lease loop says otherwise.
    pub fn is_leader(&self) -> bool {
        self.inner.shared.is_leader()
    }

    /// Set by the lease loop; losing the lead stops every drive loop at its next step.
    pub fn set_leader(&self, leader: bool) {
        self.inner.shared.set_leader(leader);
    }

    /// The configuration and parts in force.
    pub async fn runtime(&self) -> Arc<Runtime> {
        self.inner.runtime.read().await.clone()
    }

    pub async fn config(&self) -> Arc<Config> {
        self.runtime().await.config.clone()
    }

    /// Replace the configuration (SIGHUP reload) and rebuild every part from it: trainers,
    /// approval channels (a `[slack]` or `[webhook]` section added or removed takes effect),
    /// deploy targets and the server's secrets, read again. When a part cannot be built (a
    /// secret is unreadable) nothing changes. Cycles in flight pick the new parts up at
    /// their next step.
    pub async fn set_config(&self, config: Arc<Config>) -> Result<(), PartsError> {
        // Building reads secret files: off the async runtime.
        let factory = self.inner.factory.clone();
        let runtime = tokio::task::spawn_blocking(move || factory.build(&config))
            .await
            .map_err(|e| PartsError {
                key: "reload".into(),
                message: format!("building the parts failed: {e}"),
            })??;
        *self.inner.runtime.write().await = Arc::new(runtime);
        self.inner.shared.wake();
        Ok(())
    }

    /// Register every configured pipeline in the store and the metrics.
    pub async fn register_pipelines(&self) -> Result<(), StoreError> {
        let config = self.config().await;
        let shared = &self.inner.shared;
        for p in &config.pipelines {
            shared.store.ensure_pipeline(&p.name, shared.now()).await?;
            shared.metrics.init_pipeline(&p.name);
            if let Some(at) = shared.store.last_check_at(&p.name).await? {
                shared
                    .metrics
                    .last_successful_check
                    .with_label_values(&[&p.name])
                    .set(at.timestamp() as f64);
            }
            if let Some(v) = shared.store.alias(&p.name, "champion").await? {
                shared
                    .metrics
                    .champion_version
                    .with_label_values(&[&p.name])
                    .set(v.version);
            }
        }
        notices::refresh_holds(shared, &config).await
    }

    /// Drive cycle `id` in the background unless it is driven already.
    fn spawn_drive(&self, id: i64) {
        {
            let Ok(mut driving) = self.inner.driving.lock() else {
                return;
            };
            if !driving.insert(id) {
                return;
            }
        }
        let engine = self.clone();
        let task = self.inner.shared.clock.task();
        let handle = self.inner.tasks.spawn(async move {
            driver::drive(&engine, id).await;
            if let Ok(mut driving) = engine.inner.driving.lock() {
                driving.remove(&id);
            }
            drop(task);
        });
        if let Ok(mut aborts) = self.inner.aborts.lock() {
            aborts.retain(|a| !a.is_finished());
            aborts.push(handle.abort_handle());
        }
    }

    /// Resume every cycle the store says is in flight (on start).
    pub async fn resume_all(&self) -> Result<usize, StoreError> {
        let shared = &self.inner.shared;
        // A champion move a crash interrupted is settled before anything else moves.
        let runtime = self.runtime().await;
        if let Err(e) = targets::settle_open_moves(shared, &runtime).await {
            tracing::error!(error = %e, "cannot settle the champion moves a crash left open; they refuse other moves until settled on a later start");
        }
        let active = shared.store.active_cycles().await?;
        for c in &active {
            shared.store.mark_resumed(c.id).await?;
            shared
                .store
                .event(
                    &c.pipeline,
                    Some(c.id),
                    crate::records::EventKind::Resumed,
                    &format!("resumed in state {} after a restart", c.state),
                    shared.now(),
                )
                .await?;
            tracing::info!(pipeline = c.pipeline, cycle = c.id, state = %c.state, "resuming cycle");
            shared
                .metrics
                .set_state_since(&c.pipeline, c.state, c.updated_at);
            self.spawn_drive(c.id);
        }
        Ok(active.len())
    }

    /// Wait until every drive task has stopped (after shutdown was signalled).
    pub async fn wait_stopped(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// Wait until the cycle reaches a terminal state (demo, tests).
    pub async fn wait_terminal(&self, id: i64) -> Result<CycleRow, EngineError> {
        loop {
            let c = self
                .store()
                .cycle(id)
                .await?
                .ok_or(EngineError::UnknownCycle(id))?;
            if c.state.is_terminal() {
                return Ok(c);
            }
            if self.inner.shared.pause(Duration::from_millis(100)).await {
                return Err(EngineError::ShuttingDown);
            }
        }
    }
}
