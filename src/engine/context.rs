//! What a step works with. [`Shared`] is what every step and operator action shares (the
//! store, the metrics, the shutdown signal, the wake-up of waiting steps); a
//! [`StepContext`] is built once per step: the cycle as stored, its pipeline's
//! configuration and parts, and the shared handles.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::StepError;
use super::parts::{Parts, Runtime};
use super::steps::{StepResult, Transition};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, Pipeline};
use crate::cycle::CycleState;
use crate::data::stream::StoredProfile;
use crate::data::{self, Roles, Table};
use crate::metrics::Metrics;
use crate::records::{CycleInputs, EventKind};
use crate::store::{CycleRow, CycleUpdate, ModelVersion, Store, StoreError};

/// The handles every step and action shares; cheap to clone.
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub metrics: Metrics,
    pub shutdown: CancellationToken,
    /// The time and the waiting of every step (the wall clock, or a simulated one).
    pub clock: Arc<dyn Clock>,
    /// Whether this daemon holds the leader lease: only the leader drives cycles.
    leader: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(store: Store, metrics: Metrics, shutdown: CancellationToken) -> Shared {
        Shared::with_clock(store, metrics, shutdown, Arc::new(SystemClock::default()))
    }

    /// Shared handles on `clock` (the simulator's).
    pub fn with_clock(
        store: Store,
        metrics: Metrics,
        shutdown: CancellationToken,
        clock: Arc<dyn Clock>,
    ) -> Shared {
        Shared {
            store,
            metrics,
            shutdown,
            clock,
            leader: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The time every decision and record uses.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::SeqCst);
        self.wake();
    }

    /// Wake every waiting step (a decision arrived, the champion moved, the lead changed).
    pub fn wake(&self) {
        self.clock.wake();
    }

    /// Sleep for `d` unless shutdown comes first; true if shutting down.
    pub async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.clock.sleep(d, false) => false,
            _ = self.shutdown.cancelled() => true,
        }
    }

    /// Wait up to `d`, or until something wakes the waiting steps; a shutdown interrupts.
    pub async fn wait(&self, d: Duration) -> Result<(), StepError> {
        tokio::select! {
            _ = self.clock.sleep(d, true) => Ok(()),
            _ = self.shutdown.cancelled() => Err(StepError::Interrupted),
        }
    }

    /// Run blocking work (files, statistics, training, scoring) off the async runtime.
    pub async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
    ) -> Result<T, StepError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StepError::Invalid(format!("worker thread failed: {e}")))?
    }

    /// Append to the event log now.
    pub async fn event(
        &self,
        pipeline: &str,
        cycle: Option<i64>,
        kind: EventKind,
        message: &str,
    ) -> Result<(), StoreError> {
        self.store
            .event(pipeline, cycle, kind, message, self.now())
            .await
    }
}

/// One step's view of its cycle.
pub struct StepContext {
    /// The cycle as stored when the step began.
    pub cycle: CycleRow,
    /// Its pipeline's configuration.
    pub pipeline: Pipeline,
    /// The whole configuration and every part, as in force when the step began.
    pub runtime: Arc<Runtime>,
    /// The parts of this pipeline.
    pub parts: Arc<Parts>,
    pub shared: Shared,
}

impl StepContext {
    /// The context for the next step of `cycle`; its pipeline must still be configured.
    pub fn new(
        cycle: CycleRow,
        runtime: Arc<Runtime>,
        shared: Shared,
    ) -> Result<StepContext, StepError> {
        let pipeline = runtime
            .config
            .pipeline(&cycle.pipeline)
            .cloned()
            .ok_or_else(|| StepError::UnknownPipeline(cycle.pipeline.clone()))?;
        let parts = runtime
            .parts(&cycle.pipeline)
            .ok_or_else(|| StepError::UnknownPipeline(cycle.pipeline.clone()))?;
        Ok(StepContext {
            cycle,
            pipeline,
            runtime,
            parts,
            shared,
        })
    }

    pub fn config(&self) -> &Config {
        &self.runtime.config
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    pub fn state_dir(&self) -> &Path {
        &self.runtime.config.daemon.state_dir
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.shared.now()
    }

    /// The cycle's id and pipeline, for logs.
    pub fn id(&self) -> i64 {
        self.cycle.id
    }

    /// Append to this cycle's event log.
    pub async fn event(&self, kind: EventKind, message: &str) -> Result<(), StoreError> {
        self.shared
            .event(&self.cycle.pipeline, Some(self.cycle.id), kind, message)
            .await
    }

    /// The pipeline's champion now.
    pub async fn champion(&self) -> Result<Option<ModelVersion>, StoreError> {
        self.store().alias(&self.cycle.pipeline, "champion").await
    }

    /// The version this cycle trained.
    pub async fn candidate(&self) -> Result<ModelVersion, StepError> {
        let id = self
            .cycle
            .candidate_version
            .ok_or_else(|| StepError::Invalid("cycle has no candidate version".into()))?;
        self.store()
            .version(id)
            .await?
            .ok_or_else(|| StepError::Invalid(format!("model version id {id} is missing")))
    }

    /// What the load step recorded.
    pub fn inputs(&self) -> Result<&CycleInputs, StepError> {
        self.cycle
            .inputs
            .as_ref()
            .ok_or_else(|| StepError::Invalid("cycle has no recorded inputs".into()))
    }

    /// Re-read the cycle's inputs and verify they are the bytes the load step fingerprinted.
    pub async fn tables(&self) -> Result<(Roles, Table, Table), StepError> {
        let inputs = self.inputs()?.clone();
        rows_here(&inputs)?;
        Shared::blocking(move || {
            // One after the other (each read is parallel inside): see `data::load_pair`.
            let reference = reload(&inputs.reference, &inputs.roles, true)?;
            let reference = match inputs.reference_window {
                Some((from, to)) => reference.window(from, to),
                None => reference,
            };
            let current = reload(&inputs.current, &inputs.roles, false)?;
            Ok((inputs.roles, reference, current))
        })
        .await
    }

    /// The current window alone, verified as [`StepContext::tables`] does.
    pub async fn current_table(&self) -> Result<Table, StepError> {
        let inputs = self.inputs()?.clone();
        rows_here(&inputs)?;
        Shared::blocking(move || reload(&inputs.current, &inputs.roles, false)).await
    }

    /// The reference alone (cut to its window), verified as [`StepContext::tables`] does.
    pub async fn reference_table(&self) -> Result<Table, StepError> {
        let inputs = self.inputs()?.clone();
        Shared::blocking(move || {
            let reference = reload(&inputs.reference, &inputs.roles, true)?;
            Ok(match inputs.reference_window {
                Some((from, to)) => reference.window(from, to),
                None => reference,
            })
        })
        .await
    }

    /// The current window's profile when Spark computed it; it must be the summary the load
    /// step fingerprinted.
    pub async fn current_profile(&self) -> Result<Option<StoredProfile>, StepError> {
        let inputs = self.inputs()?.clone();
        let Some(path) = inputs.current_profile.clone() else {
            return Ok(None);
        };
        Shared::blocking(move || {
            let stored = StoredProfile::read(Path::new(&path))?;
            if stored.source.blake3 != inputs.current.blake3 {
                return Err(StepError::InputChanged {
                    path,
                    was: inputs.current.blake3.clone(),
                    now: stored.source.blake3,
                });
            }
            Ok(Some(stored))
        })
        .await
    }

    /// The champion's stored profile of its training rows, when the load step chose it as
    /// the reference; it must still describe the rows the load step fingerprinted.
    pub async fn reference_profile(&self) -> Result<Option<StoredProfile>, StepError> {
        let inputs = self.inputs()?.clone();
        let Some(path) = inputs.reference_profile.clone() else {
            return Ok(None);
        };
        Shared::blocking(move || {
            let stored = StoredProfile::read(Path::new(&path))?;
            if stored.source.blake3 != inputs.reference.blake3 {
                return Err(StepError::InputChanged {
                    path,
                    was: inputs.reference.blake3.clone(),
                    now: stored.source.blake3,
                });
            }
            Ok(Some(stored))
        })
        .await
    }

    /// The step's result: move to `to`.
    pub fn to(&self, to: CycleState, reason: impl Into<String>, update: CycleUpdate) -> StepResult {
        StepResult::Advance(Box::new(Transition {
            to,
            reason: reason.into(),
            update,
        }))
    }
}

/// Steps that need the current window's rows cannot run on a window Spark summarised.
fn rows_here(inputs: &CycleInputs) -> Result<(), StepError> {
    match inputs.current_profile {
        Some(_) => Err(StepError::Invalid(format!(
            "this step needs the current window's rows, but only its profile was kept ({}: a window in Spark, or one whose files take over half of check.memory_budget); raise [pipeline.check] memory_budget, or train with a trainer that reads the data itself",
            inputs.current.path
        ))),
        None => Ok(()),
    }
}

/// Read an input again and verify it is the bytes fingerprinted before.
fn reload(fp: &data::Fingerprint, roles: &Roles, reference: bool) -> Result<Table, StepError> {
    let t = data::load(&fp.input(), roles, reference)?;
    if t.fingerprint.blake3 != fp.blake3 {
        return Err(StepError::InputChanged {
            path: fp.path.clone(),
            was: fp.blake3.clone(),
            now: t.fingerprint.blake3,
        });
    }
    Ok(t)
}
