//! The cycle engine: starts cycles, drives each one through its states, and resumes every
//! in-flight cycle after a restart.
//!
//! Each state's step is idempotent and its result is persisted together with the transition
//! out of the state (compare-and-set in the store), so a crash at any point re-runs at most
//! the step that was interrupted: a model is registered in the same transaction that moves the
//! cycle to `trained`, the champion alias moves idempotently, an approval is a row keyed by
//! (cycle, approver). Blocking work (reading data, statistics, training, scoring) runs on the
//! blocking pool. Shutdown stops the drive loop at the next checkpoint without changing the
//! stored state, so the next start resumes it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::{Notify, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::approval::{ApprovalChannel, ApprovalDecision, ApprovalRequest, LogChannel};
use crate::artifacts::{self, ArtifactError};
use crate::config::{ApprovalMode, Config, PerformanceSource, Pipeline, ReferenceSource};
use crate::cycle::{CycleState, Outcome, TriggerKind};
use crate::data::{self, Roles, Table};
use crate::decision::{self, Decision, Verdict};
use crate::deploy::{CurrentSymlink, DeployError, DeployTarget};
use crate::drift::{Detector, DriftReport, StatisticalDetector};
use crate::gate::{self, GateResult};
use crate::metrics::Metrics;
use crate::performance::{self, Assessment, Baseline};
use crate::quality;
use crate::source;
use crate::store::{
    ApprovalRow, CreateOutcome, CycleRow, CycleUpdate, NewVersion, Recorded, Store, StoreError,
};
use crate::train::burn::BurnTrainer;
use crate::train::{self, CancelFlag, TrainError, TrainRequest, Trainer};

/// Why a step failed. Stored as the cycle's reason.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(
        "pipeline `{0}` is no longer in the configuration; add it back or the cycle stays failed"
    )]
    UnknownPipeline(String),
    #[error(
        "input {path} changed since it was loaded (blake3 {was} -> {now}); the cycle stops so its report and model describe one data set"
    )]
    InputChanged {
        path: String,
        was: String,
        now: String,
    },
    #[error("training timed out after {0:?} (train.timeout)")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
    #[error("step interrupted by shutdown")]
    Interrupted,
}

/// Errors from the engine's public calls.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no pipeline named `{0}` in the configuration")]
    UnknownPipeline(String),
    #[error("no cycle {0}")]
    UnknownCycle(i64),
    #[error("cycle {id} is {state}, not awaiting approval")]
    NotAwaitingApproval { id: i64, state: CycleState },
    #[error(
        "the approval request of cycle {0} expired; the cycle is rejected and cannot be approved"
    )]
    Expired(i64),
    #[error("`{approver}` is not in approval.approvers of pipeline `{pipeline}`")]
    NotAnApprover { approver: String, pipeline: String },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The pluggable parts of a cycle: how to check, train, ask for approval and deploy.
#[derive(Clone)]
pub struct Steps {
    pub detector: Arc<dyn Detector>,
    pub trainer: Arc<dyn Trainer>,
    pub channels: Vec<Arc<dyn ApprovalChannel>>,
    pub targets: Vec<Arc<dyn DeployTarget>>,
}

impl Steps {
    /// This build's parts: statistical drift tests, the burn trainer, the log approval
    /// channel and the `current` symlink deploy target.
    pub fn local() -> Steps {
        Steps {
            detector: Arc::new(StatisticalDetector),
            trainer: Arc::new(BurnTrainer),
            channels: vec![Arc::new(LogChannel)],
            targets: vec![Arc::new(CurrentSymlink)],
        }
    }
}

/// The engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: RwLock<Arc<Config>>,
    steps: Steps,
    metrics: Metrics,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    wake: Notify,
    driving: Mutex<HashSet<i64>>,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

impl Engine {
    pub fn new(
        store: Store,
        config: Arc<Config>,
        steps: Steps,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                store,
                config: RwLock::new(config),
                steps,
                metrics,
                shutdown,
                tasks: TaskTracker::new(),
                wake: Notify::new(),
                driving: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub async fn config(&self) -> Arc<Config> {
        self.inner.config.read().await.clone()
    }

    /// Replace the configuration (SIGHUP reload). Cycles in flight pick it up at their next
    /// step.
    pub async fn set_config(&self, config: Arc<Config>) {
        *self.inner.config.write().await = config;
    }

    /// Register every configured pipeline in the store and the metrics.
    pub async fn register_pipelines(&self) -> Result<(), StoreError> {
        let config = self.config().await;
        for p in &config.pipelines {
            self.inner.store.ensure_pipeline(&p.name, now()).await?;
            self.inner.metrics.init_pipeline(&p.name);
            if let Some(at) = self.inner.store.last_check_at(&p.name).await? {
                self.inner
                    .metrics
                    .last_successful_check
                    .with_label_values(&[&p.name])
                    .set(at.timestamp() as f64);
            }
        }
        Ok(())
    }

    /// Start a cycle of `pipeline` now, unless one is in flight. `date` is the cycle's day
    /// (`{date}` in data paths); it defaults to today in the pipeline's timezone.
    pub async fn trigger(
        &self,
        pipeline: &str,
        kind: TriggerKind,
        date: Option<String>,
        fired_at: Option<DateTime<Utc>>,
    ) -> Result<CreateOutcome, EngineError> {
        if self.inner.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        let config = self.config().await;
        let p = config
            .pipeline(pipeline)
            .ok_or_else(|| EngineError::UnknownPipeline(pipeline.to_string()))?;
        let date = date.unwrap_or_else(|| p.schedule.local_date(fired_at.unwrap_or_else(now)));
        self.inner.store.ensure_pipeline(pipeline, now()).await?;
        let outcome = self
            .inner
            .store
            .create_cycle(pipeline, kind, &date, fired_at, now())
            .await?;
        match outcome {
            CreateOutcome::Created(id) => {
                info!(
                    pipeline,
                    cycle = id,
                    trigger = kind.as_str(),
                    date,
                    "cycle started"
                );
                self.inner
                    .metrics
                    .set_state(pipeline, CycleState::Scheduled);
                self.spawn_drive(id);
            }
            CreateOutcome::AlreadyRunning(id) => {
                info!(
                    pipeline,
                    cycle = id,
                    trigger = kind.as_str(),
                    "cycle already in flight; trigger ignored"
                );
            }
        }
        Ok(outcome)
    }

    /// Resume every cycle the store says is in flight (on start).
    pub async fn resume_all(&self) -> Result<usize, StoreError> {
        let active = self.inner.store.active_cycles().await?;
        for c in &active {
            self.inner.store.mark_resumed(c.id).await?;
            self.inner
                .store
                .event(
                    &c.pipeline,
                    Some(c.id),
                    "resumed",
                    &format!("resumed in state {} after a restart", c.state),
                    now(),
                )
                .await?;
            info!(pipeline = c.pipeline, cycle = c.id, state = %c.state, "resuming cycle");
            self.inner.metrics.set_state(&c.pipeline, c.state);
            self.spawn_drive(c.id);
        }
        Ok(active.len())
    }

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
        self.inner.tasks.spawn(async move {
            engine.drive(id).await;
            if let Ok(mut driving) = engine.inner.driving.lock() {
                driving.remove(&id);
            }
        });
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
                .inner
                .store
                .cycle(id)
                .await?
                .ok_or(EngineError::UnknownCycle(id))?;
            if c.state.is_terminal() {
                return Ok(c);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.inner.shutdown.cancelled() => return Err(EngineError::ShuttingDown),
            }
        }
    }

    /// Record a human decision on a cycle awaiting approval. Idempotent per approver.
    pub async fn decide(
        &self,
        id: i64,
        approver: &str,
        channel: &str,
        verdict: ApprovalDecision,
        reason: &str,
    ) -> Result<Recorded, EngineError> {
        let store = &self.inner.store;
        let c = store
            .cycle(id)
            .await?
            .ok_or(EngineError::UnknownCycle(id))?;
        if c.state != CycleState::AwaitingApproval {
            if c.state == CycleState::Rejected
                && c.reason.as_deref().is_some_and(|r| r.contains("expired"))
            {
                return Err(EngineError::Expired(id));
            }
            return Err(EngineError::NotAwaitingApproval { id, state: c.state });
        }
        if c.deadline_at.is_some_and(|d| d <= now()) {
            return Err(EngineError::Expired(id));
        }
        let config = self.config().await;
        if let Some(p) = config.pipeline(&c.pipeline)
            && !p.approval.approvers.is_empty()
            && !p.approval.approvers.iter().any(|a| a == approver)
        {
            return Err(EngineError::NotAnApprover {
                approver: approver.to_string(),
                pipeline: c.pipeline.clone(),
            });
        }
        let decision = verdict;
        let row = ApprovalRow {
            approver: approver.to_string(),
            channel: channel.to_string(),
            decision,
            reason: reason.to_string(),
            at: now(),
        };
        let recorded = store.record_approval(id, &row).await?;
        if recorded == Recorded::New {
            store
                .event(
                    &c.pipeline,
                    Some(id),
                    "approval",
                    &format!("{decision} by {approver} via {channel}: {reason}"),
                    now(),
                )
                .await?;
            info!(
                pipeline = c.pipeline,
                cycle = id,
                approver,
                channel,
                decision = decision.as_str(),
                "approval decision recorded"
            );
        }
        self.inner.wake.notify_waiters();
        Ok(recorded)
    }

    async fn drive(&self, id: i64) {
        let mut backoff = Duration::from_secs(1);
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let cycle = match self.inner.store.cycle(id).await {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    warn!(cycle = id, error = %e, "cannot read cycle; retrying");
                    if self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            };
            if cycle.state.is_terminal() {
                return;
            }
            match self.step(&cycle).await {
                Ok(()) => backoff = Duration::from_secs(1),
                Err(StepError::Interrupted) => return,
                Err(StepError::Store(e)) => {
                    // The store is unreachable or busy: the step is idempotent, retry it.
                    warn!(pipeline = cycle.pipeline, cycle = id, state = %cycle.state, error = %e, "store error; retrying step");
                    if self.pause(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
                Err(e) => {
                    let reason = e.to_string();
                    error!(pipeline = cycle.pipeline, cycle = id, state = %cycle.state, reason, "cycle step failed");
                    let update = CycleUpdate::outcome(Outcome::Failed);
                    if let Err(e) = self
                        .finish(&cycle, CycleState::Failed, &reason, update)
                        .await
                    {
                        warn!(cycle = id, error = %e, "cannot record the failure; retrying");
                        if self.pause(backoff).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Sleep unless shutdown comes first; true if shutting down.
    async fn pause(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.inner.shutdown.cancelled() => true,
        }
    }

    async fn pipeline(&self, name: &str) -> Result<(Arc<Config>, Pipeline), StepError> {
        let config = self.config().await;
        let p = config
            .pipeline(name)
            .cloned()
            .ok_or_else(|| StepError::UnknownPipeline(name.to_string()))?;
        Ok((config, p))
    }

    /// Persist `from → to` and update metrics and the event log.
    async fn advance(
        &self,
        c: &CycleRow,
        to: CycleState,
        reason: &str,
        update: CycleUpdate,
    ) -> Result<(), StepError> {
        if to.is_terminal() {
            return self
                .finish(c, to, reason, update)
                .await
                .map_err(StepError::from);
        }
        self.inner
            .store
            .transition(c.id, c.state, to, reason, update, now())
            .await?;
        info!(pipeline = c.pipeline, cycle = c.id, from = %c.state, to = %to, reason, "cycle transition");
        self.inner.metrics.set_state(&c.pipeline, to);
        Ok(())
    }

    async fn finish(
        &self,
        c: &CycleRow,
        to: CycleState,
        reason: &str,
        mut update: CycleUpdate,
    ) -> Result<(), StoreError> {
        let deployed = update.outcome == Some(Outcome::Deployed);
        let outcome = update
            .outcome
            .or_else(|| Outcome::of_terminal(to, deployed))
            .unwrap_or(Outcome::Failed);
        update.outcome = Some(outcome);
        self.inner
            .store
            .transition(c.id, c.state, to, reason, update, now())
            .await?;
        let seconds = (now() - c.created_at).num_milliseconds() as f64 / 1000.0;
        self.inner.metrics.finished(&c.pipeline, outcome, seconds);
        self.inner.metrics.set_state(&c.pipeline, to);
        info!(pipeline = c.pipeline, cycle = c.id, from = %c.state, to = %to, outcome = outcome.as_str(), reason, "cycle finished");
        Ok(())
    }

    async fn step(&self, c: &CycleRow) -> Result<(), StepError> {
        let (config, p) = self.pipeline(&c.pipeline).await?;
        match c.state {
            CycleState::Scheduled => {
                self.advance(
                    c,
                    CycleState::Loading,
                    "loading inputs",
                    CycleUpdate::default(),
                )
                .await
            }
            CycleState::Loading => self.load(c, &p, &config).await,
            CycleState::Checking => self.check(c, &p, &config).await,
            CycleState::Decided => self.after_decision(c).await,
            CycleState::Training => self.train(c, &p, &config).await,
            CycleState::Trained => {
                self.advance(
                    c,
                    CycleState::Evaluating,
                    "evaluating the candidate",
                    CycleUpdate::default(),
                )
                .await
            }
            CycleState::Evaluating => self.evaluate(c, &p).await,
            CycleState::AwaitingApproval => self.await_approval(c, &p).await,
            CycleState::Deploying => self.deploy(c, &p, &config).await,
            CycleState::Watching => self.watch(c).await,
            terminal => Err(StepError::Invalid(format!("cycle is already {terminal}"))),
        }
    }

    /// Run blocking work off the async runtime.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> Result<T, StepError> + Send + 'static,
    ) -> Result<T, StepError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| StepError::Invalid(format!("worker thread failed: {e}")))?
    }

    // ---- loading -------------------------------------------------------------------------

    async fn load(&self, c: &CycleRow, p: &Pipeline, config: &Config) -> Result<(), StepError> {
        let data_cfg = p.data.clone();
        let cache = artifacts::inputs_dir(&config.daemon.state_dir);
        let current_loc = data_cfg.current_location(&c.cycle_date)?;
        // The reference: the rows the champion was trained on, unless the pipeline fixes it
        // (or no champion has its training rows yet).
        let champion = self.inner.store.alias(&c.pipeline, "champion").await?;
        let champion_rows = match data_cfg.reference_source {
            ReferenceSource::Champion => champion.as_ref().and_then(|v| {
                let path = Path::new(&v.path).join(artifacts::TRAINING_DATA);
                path.is_file().then_some((v.version, path))
            }),
            ReferenceSource::Fixed => None,
        };
        let window = match champion_rows {
            Some(_) => None,
            None => data_cfg.reference_window,
        };
        let champion_used = champion_rows.is_some();
        let reference_from = match &champion_rows {
            Some((v, _)) => format!("champion v{v}'s training rows"),
            None => data_cfg.reference.describe(),
        };
        let (roles, ref_fp, cur_fp, ref_rows, cur_rows, labelled) = Self::blocking(move || {
            let ref_input = match &champion_rows {
                Some((_, path)) => data::Input::file(path),
                None => source::resolve(&data_cfg.reference, &cache, &data_cfg.s3)?,
            };
            let (roles, reference) = data::load_inferred(&ref_input, &data_cfg.role_spec(), true)?;
            let reference = match window {
                Some((from, to)) => reference.window(from, to),
                None => reference,
            };
            let cur_input = source::resolve(&current_loc, &cache, &data_cfg.s3)?;
            let current = data::load(&cur_input, &roles, false)?;
            let labelled = current.labelled_rows().len();
            Ok((
                roles,
                reference.fingerprint,
                current.fingerprint,
                reference.rows,
                current.rows,
                labelled,
            ))
        })
        .await?;
        let inputs = json!({
            "roles": roles,
            "reference": ref_fp,
            "reference_from": reference_from,
            "reference_source": if champion_used { ReferenceSource::Champion } else { ReferenceSource::Fixed },
            "reference_window": window,
            "current": cur_fp,
            "labelled": labelled > 0,
            "labelled_rows": labelled,
        });
        let reason = format!(
            "loaded reference ({reference_from}, {ref_rows} rows) and current window {} ({cur_rows} rows, {labelled} labelled)",
            c.cycle_date,
        );
        let update = CycleUpdate {
            inputs: Some(inputs),
            ..CycleUpdate::default()
        };
        self.advance(c, CycleState::Checking, &reason, update).await
    }

    /// Re-read the cycle's inputs and verify they are the bytes the load step fingerprinted.
    async fn inputs(c: &CycleRow) -> Result<(Roles, Table, Table), StepError> {
        let inputs = c
            .inputs
            .clone()
            .ok_or_else(|| StepError::Invalid("cycle has no recorded inputs".into()))?;
        Self::blocking(move || {
            let roles: Roles = serde_json::from_value(inputs["roles"].clone())
                .map_err(|e| StepError::Invalid(format!("stored roles unreadable: {e}")))?;
            let window: Option<(i64, i64)> =
                serde_json::from_value(inputs["reference_window"].clone()).unwrap_or(None);
            let reload = |key: &str| -> Result<Table, StepError> {
                let fp: data::Fingerprint =
                    serde_json::from_value(inputs[key].clone()).map_err(|e| {
                        StepError::Invalid(format!("stored fingerprint unreadable: {e}"))
                    })?;
                let t = data::load(&fp.input(), &roles, key == "reference")?;
                if t.fingerprint.blake3 != fp.blake3 {
                    return Err(StepError::InputChanged {
                        path: fp.path,
                        was: fp.blake3,
                        now: t.fingerprint.blake3,
                    });
                }
                Ok(match (key, window) {
                    ("reference", Some((from, to))) => t.window(from, to),
                    _ => t,
                })
            };
            // One after the other (each read is parallel inside): see `data::load_pair`.
            let reference = reload("reference")?;
            let current = reload("current")?;
            Ok((roles, reference, current))
        })
        .await
    }

    // ---- checking ------------------------------------------------------------------------

    async fn check(&self, c: &CycleRow, p: &Pipeline, config: &Config) -> Result<(), StepError> {
        let (_, reference, current) = Self::inputs(c).await?;
        let champion = self.inner.store.alias(&c.pipeline, "champion").await?;
        let drift_cfg = p.drift.clone();
        let min_rows = p.data.min_rows;
        let perf = p.performance.clone();
        let baseline = perf
            .baseline
            .map(|value| Baseline { value, n: None })
            .or_else(|| {
                champion
                    .as_ref()
                    .and_then(|v| stored_baseline(&v.metrics, perf.rule.metric))
            });
        let champ = champion.clone();
        let detector = self.inner.steps.detector.clone();
        let mut ignore = p.data.ignore.clone();
        ignore.extend(p.data.prediction.iter().chain(&p.data.timestamp).cloned());
        let reference_source = c
            .inputs
            .as_ref()
            .and_then(|i| serde_json::from_value(i["reference_source"].clone()).ok());
        if reference_source == Some(ReferenceSource::Champion) {
            // The champion's training rows hold only the role columns: other columns of the
            // current window are not "added".
            let kept = &reference.fingerprint.schema;
            ignore.extend(
                current
                    .fingerprint
                    .schema
                    .iter()
                    .map(|(n, _)| n)
                    .filter(|n| !kept.iter().any(|(m, _)| m == *n))
                    .cloned(),
            );
        }
        let quality_cfg = p.quality.clone();
        let seed = c.id as u64;
        let (quality, report, performance) = Self::blocking(move || {
            let quality = quality::check(
                (&reference.fingerprint, &reference),
                (&current.fingerprint, &current),
                &ignore,
                &quality_cfg,
            );
            let report = detector.detect(&reference, &current, &drift_cfg, min_rows);
            let labelled = current.labelled().filter(|_| quality.passed);
            let performance = match (perf.source, &champ, labelled) {
                (_, _, None) | (PerformanceSource::Prometheus, _, _) => None,
                (PerformanceSource::Model, None, _) => None,
                (PerformanceSource::Model, Some(v), Some(l)) => {
                    let model = train::load_predictor(Path::new(&v.path))?;
                    let scored = train::score(&*model, &l, perf.positive_class.as_deref())?;
                    Some(performance::assess(&perf.rule, &scored, baseline, seed))
                }
                (PerformanceSource::PredictionColumn, _, Some(l)) => {
                    let predicted = l.prediction.clone().unwrap_or_default();
                    let rows: Vec<usize> = (0..l.rows)
                        .filter(|&i| predicted.get(i).is_some_and(|p| !p.is_empty()))
                        .collect();
                    let l = l.take(&rows);
                    let labels = l.target.clone().unwrap_or_default();
                    let predicted = l.prediction.clone().unwrap_or_default();
                    let positive = performance::positive_class(
                        perf.positive_class.as_deref(),
                        &labels,
                        &predicted,
                    );
                    let scored = performance::Scored {
                        labels,
                        predicted,
                        positive_scores: None,
                        positive,
                    };
                    Some(performance::assess(&perf.rule, &scored, baseline, seed))
                }
            };
            Ok((quality, report, performance))
        })
        .await?;
        let performance = match (&p.performance.prometheus, performance) {
            (Some(q), None) if p.performance.source == PerformanceSource::Prometheus => Some(
                match crate::promql::query(&q.url, &q.query, q.timeout).await {
                    Ok(v) => performance::assess_live(&p.performance.rule, v, baseline),
                    Err(e) => {
                        warn!(pipeline = c.pipeline, cycle = c.id, error = %e, "live metric unavailable; performance unknown");
                        Assessment::unknown(
                            p.performance.rule.metric,
                            0,
                            format!("live metric unavailable: {e}"),
                        )
                    }
                },
            ),
            (_, p) => p,
        };
        if let Some(a) = &performance {
            self.inner.metrics.record_performance(&c.pipeline, a);
        }
        let streak = p.drift.consecutive.saturating_sub(1) as i64;
        let previous_drift = self
            .inner
            .store
            .previous_drift(&c.pipeline, c.id, streak)
            .await?;
        let decision = decision::decide(
            &quality,
            &report,
            performance.as_ref(),
            champion.is_some(),
            &previous_drift,
            p.drift.consecutive,
        );
        for f in quality.failures() {
            self.inner
                .metrics
                .data_quality_failures
                .with_label_values(&[c.pipeline.as_str(), f.check.as_str()])
                .inc();
        }
        let body = json!({
            "cycle": c.id,
            "pipeline": c.pipeline,
            "date": c.cycle_date,
            "inputs": c.inputs,
            "quality": quality,
            "drift": report,
            "performance": performance,
            "decision": decision,
        });
        self.write_report(c, config, &report, &body).await?;
        let now_s = now().timestamp() as f64;
        self.inner
            .metrics
            .last_successful_check
            .with_label_values(&[&c.pipeline])
            .set(now_s);
        self.inner
            .metrics
            .drifted_features
            .with_label_values(&[&c.pipeline])
            .set(report.dataset.drifted_features as i64);
        self.inner.metrics.record_drift(&c.pipeline, &report);
        let reason = decision.reasons.join("; ");
        let update = CycleUpdate {
            decision: serde_json::to_value(&decision).ok(),
            ..CycleUpdate::default()
        };
        self.advance(c, CycleState::Decided, &reason, update).await
    }

    async fn write_report(
        &self,
        c: &CycleRow,
        config: &Config,
        report: &DriftReport,
        body: &serde_json::Value,
    ) -> Result<(), StepError> {
        self.inner
            .store
            .save_report(c.id, &c.pipeline, report.dataset.drifted, body, now())
            .await?;
        let path = artifacts::report_path(&config.daemon.state_dir, &c.pipeline, c.id);
        let html_path = artifacts::report_html_path(&config.daemon.state_dir, &c.pipeline, c.id);
        let text = serde_json::to_vec_pretty(body).unwrap_or_default();
        let html = crate::report::render(body);
        Self::blocking(move || {
            artifacts::write_atomic(&path, &text)?;
            Ok(artifacts::write_atomic(&html_path, html.as_bytes())?)
        })
        .await
    }

    // ---- deciding ------------------------------------------------------------------------

    async fn after_decision(&self, c: &CycleRow) -> Result<(), StepError> {
        let decision: Decision = c
            .decision
            .clone()
            .and_then(|d| serde_json::from_value(d).ok())
            .ok_or_else(|| StepError::Invalid("cycle has no recorded decision".into()))?;
        let reason = decision.reasons.join("; ");
        match decision.verdict {
            Verdict::Retrain => {
                self.advance(
                    c,
                    CycleState::Training,
                    "retraining on the newest labelled data",
                    CycleUpdate::default(),
                )
                .await
            }
            Verdict::NoRetrain => {
                let update = CycleUpdate::outcome(Outcome::NoRetrain);
                self.advance(c, CycleState::Completed, &reason, update)
                    .await
            }
            Verdict::QualityFailed => {
                let update = CycleUpdate::outcome(Outcome::QualityFailed);
                self.advance(c, CycleState::Skipped, &reason, update).await
            }
            Verdict::InsufficientData => {
                self.advance(c, CycleState::Skipped, &reason, CycleUpdate::default())
                    .await
            }
        }
    }

    // ---- training ------------------------------------------------------------------------

    async fn train(&self, c: &CycleRow, p: &Pipeline, config: &Config) -> Result<(), StepError> {
        let store = &self.inner.store;
        // Registered already (crash after the commit, before the drive loop noticed): done.
        if store.version_for_cycle(c.id).await?.is_some() {
            return Ok(());
        }
        let (roles, reference, current) = Self::inputs(c).await?;
        // Train on the newest labelled data: the current window's labelled rows minus the
        // gate's holdout. A window without labels falls back to the reference set.
        let current_labelled = current.target.is_some() && !current.labelled_rows().is_empty();
        let data = match current.labelled() {
            Some(labelled) => {
                let (_, train_part) = holdout_split(&labelled, p.gate.holdout_share, c.id);
                labelled.take(&train_part)
            }
            None => reference
                .labelled()
                .ok_or_else(|| StepError::Train(TrainError::NoLabels(roles.target.clone())))?,
        };
        let state_dir = config.daemon.state_dir.clone();
        let final_dir = artifacts::model_dir(&state_dir, &c.pipeline, c.id);
        let staging = artifacts::staging_dir(&state_dir, &c.pipeline, c.id);
        // A leftover from an interrupted attempt is never registered: start clean.
        for d in [&staging, &final_dir] {
            artifacts::remove_dir_if_exists(d)?;
        }
        let request_data = data.clone();
        let training_rows_count = data.rows;
        // A remote run this cycle started before a restart: resume it, never start another.
        let remote_run = store
            .events(c.id)
            .await?
            .into_iter()
            .rev()
            .find(|(_, kind, _)| kind == REMOTE_RUN_EVENT)
            .map(|(_, _, id)| id);
        let recorder = {
            let (store, pipeline, cycle) = (store.clone(), c.pipeline.clone(), c.id);
            let handle = tokio::runtime::Handle::current();
            // Called from the trainer's thread, which may itself be inside `block_on`: the
            // write runs as a task on the runtime and the trainer waits for its answer.
            train::RemoteRunRecorder(Some(Arc::new(move |id: &str| {
                let (tx, rx) = std::sync::mpsc::channel();
                let (store, pipeline, id) = (store.clone(), pipeline.clone(), id.to_string());
                handle.spawn(async move {
                    let r = store
                        .event(&pipeline, Some(cycle), REMOTE_RUN_EVENT, &id, now())
                        .await;
                    let _ = tx.send(r);
                });
                rx.recv()
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            })))
        };
        let request = TrainRequest {
            pipeline: c.pipeline.clone(),
            cycle_id: c.id,
            data,
            config: p.train.burn.clone(),
            out_dir: staging.clone(),
            inputs: c.inputs.clone().unwrap_or_default(),
            remote_run,
            record_remote_run: recorder,
            timeout: p.train.timeout,
        };
        let cancel = CancelFlag::default();
        let trainer: Arc<dyn Trainer> = match (&p.train.backend, &p.train.command, &p.train.kfp) {
            (crate::config::Backend::Command, Some(cmd), _) => {
                Arc::new(crate::train::command::CommandTrainer {
                    config: cmd.clone(),
                    roles: roles.clone(),
                })
            }
            (crate::config::Backend::Kfp, _, Some(kfp)) => {
                Arc::new(crate::train::kfp::KfpTrainer {
                    config: kfp.clone(),
                    roles: roles.clone(),
                    s3: p.data.s3.clone(),
                })
            }
            _ => self.inner.steps.trainer.clone(),
        };
        let backend = trainer.name();
        let metrics = self.inner.metrics.clone();
        let pipeline = c.pipeline.clone();
        let cycle_id = c.id;
        let cancel_t = cancel.clone();
        info!(
            pipeline,
            cycle = cycle_id,
            backend = trainer.name(),
            rows = request.data.rows,
            "training started"
        );
        let mut handle = tokio::task::spawn_blocking(move || {
            let progress = |e: &train::EpochReport| {
                metrics
                    .training_epoch
                    .with_label_values(&[&pipeline])
                    .set(e.epoch as i64);
                metrics
                    .training_loss
                    .with_label_values(&[&pipeline, "train"])
                    .set(e.train_loss);
                metrics
                    .training_loss
                    .with_label_values(&[&pipeline, "valid"])
                    .set(e.valid_loss);
                info!(
                    pipeline,
                    cycle = cycle_id,
                    epoch = e.epoch,
                    train_loss = e.train_loss,
                    valid_loss = e.valid_loss,
                    valid_accuracy = e.valid_accuracy,
                    valid_f1 = e.valid_f1,
                    "epoch finished"
                );
            };
            trainer.train(&request, &cancel_t, &progress)
        });
        let timeout = p.train.timeout;
        let result = tokio::select! {
            r = &mut handle => r,
            _ = tokio::time::sleep(timeout) => {
                cancel.time_out();
                let outcome = handle.await;
                let staging = staging.clone();
                let _ = tokio::task::spawn_blocking(move || artifacts::remove_dir_if_exists(&staging)).await;
                // A trainer with more to say (a terminated remote run) says it; else the
                // timeout is the reason.
                return Err(match outcome {
                    Ok(Err(e)) if !matches!(e, TrainError::Cancelled) => StepError::Train(e),
                    _ => StepError::Timeout(timeout),
                });
            }
            _ = self.inner.shutdown.cancelled() => {
                cancel.cancel();
                let _ = handle.await;
                info!(pipeline = c.pipeline, cycle = c.id, "training interrupted by shutdown; will resume on next start");
                return Err(StepError::Interrupted);
            }
        };
        let result = match result {
            Ok(r) => r.map_err(StepError::Train),
            Err(e) => Err(StepError::Invalid(format!("training thread failed: {e}"))),
        };
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                // A failed attempt leaves nothing behind (its copy of the training rows
                // included); a retry starts clean anyway.
                let staging = staging.clone();
                let _ =
                    tokio::task::spawn_blocking(move || artifacts::remove_dir_if_exists(&staging))
                        .await;
                return Err(e);
            }
        };
        let training_rows = request_data;
        let data_path = staging.join(artifacts::TRAINING_DATA);
        let (training_hash, size_bytes) = Self::blocking({
            let staging = staging.clone();
            move || {
                // The rows this model learned from: the next checks' reference.
                data::write_parquet(&training_rows, &roles, &data_path)?;
                let hash = std::fs::read(&data_path)
                    .map(|b| blake3::hash(&b).to_hex().to_string())
                    .unwrap_or_default();
                Ok((hash, artifacts::dir_size(&staging)))
            }
        })
        .await?;
        let champion = store.alias(&c.pipeline, "champion").await?;
        let inputs = c.inputs.clone().unwrap_or_default();
        let training_data = json!({
            "path": final_dir.join(artifacts::TRAINING_DATA).display().to_string(),
            "rows": training_rows_count,
            "blake3": training_hash,
            "source": if current_labelled { "current" } else { "reference" },
            "holdout_share": p.gate.holdout_share,
        });
        let lineage = json!({
            "backend": backend,
            "training_data": training_data,
            "inputs": inputs,
            "dvc": {
                "reference": source::dvc_md5(&inputs["reference"]["path"]),
                "current": source::dvc_md5(&inputs["current"]["path"]),
            },
            "remote_run_id": output.remote_run,
            "parent_version": champion.as_ref().map(|v| v.version),
            "trigger_cycle": c.id,
            "trigger_report": format!("cycle-{}", c.id),
            "config_hash": config_hash(&config.source),
        });
        let mut metrics = json!({
            "valid_accuracy": output.valid_accuracy,
            "valid_loss": output.valid_loss,
            "epochs_run": output.epochs_run,
            "best_epoch": output.best_epoch,
            "train_rows": output.train_rows,
            "duration_seconds": output.duration_seconds,
            "model_size_mb": size_bytes as f64 / 1e6,
        });
        for (k, v) in &output.extra_metrics {
            metrics[k.as_str()] = json!(v);
        }
        // The model card: everything needed to load, judge and trace the model without the
        // store. Holdout metrics are added by the evaluate step (in the store).
        let card = json!({
            "format": output.format,
            "backend": backend,
            "pipeline": c.pipeline,
            "cycle": c.id,
            "metrics": metrics,
            "lineage": lineage,
            "training": output,
            "config": mask_env(match p.train.backend {
                crate::config::Backend::Burn => serde_json::to_value(&p.train.burn).unwrap_or_default(),
                crate::config::Backend::Command => serde_json::to_value(&p.train.command).unwrap_or_default(),
                crate::config::Backend::Kfp => serde_json::to_value(&p.train.kfp).unwrap_or_default(),
            }),
        });
        let card_path = staging.join("card.json");
        let text = serde_json::to_vec_pretty(&card).unwrap_or_default();
        let (s, f) = (staging.clone(), final_dir.clone());
        Self::blocking(move || {
            artifacts::write_atomic(&card_path, &text)?;
            artifacts::move_into_place(&s, &f)?;
            Ok(())
        })
        .await?;
        let new = NewVersion {
            pipeline: c.pipeline.clone(),
            cycle_id: c.id,
            path: final_dir.display().to_string(),
            metrics,
            lineage,
        };
        let reason = format!(
            "trained in {:.1}s, {} epochs, validation accuracy {:.3}",
            output.duration_seconds, output.epochs_run, output.valid_accuracy
        );
        let version = store.register_trained(new, &reason, now()).await?;
        info!(
            pipeline = c.pipeline,
            cycle = c.id,
            version = version.version,
            reason,
            "candidate registered"
        );
        self.inner
            .metrics
            .set_state(&c.pipeline, CycleState::Trained);
        Ok(())
    }

    // ---- evaluating ----------------------------------------------------------------------

    async fn evaluate(&self, c: &CycleRow, p: &Pipeline) -> Result<(), StepError> {
        let store = &self.inner.store;
        let candidate = match c.candidate_version {
            Some(id) => store.version(id).await?,
            None => None,
        }
        .ok_or_else(|| StepError::Invalid("cycle has no candidate version".into()))?;
        if let Some(m) = &p.mlflow {
            self.mirror_to_mlflow(c, m, &candidate).await;
        }
        let champion = store.alias(&c.pipeline, "champion").await?;
        let (_, _, current) = Self::inputs(c).await?;
        let share = p.gate.holdout_share;
        let cycle_id = c.id;
        let cand_path = candidate.path.clone();
        let champ_path = champion.as_ref().map(|v| v.path.clone());
        let positive = p.performance.positive_class.clone();
        let (cand_metrics, champ_metrics, rows) = Self::blocking(move || {
            let Some(labelled) = current.labelled() else {
                return Ok((Default::default(), None, 0));
            };
            let (holdout_idx, _) = holdout_split(&labelled, share, cycle_id);
            let holdout = labelled.take(&holdout_idx);
            let score = |path: &str| -> Result<std::collections::BTreeMap<String, f64>, StepError> {
                let m = train::load_predictor(Path::new(path))?;
                let scored = train::score(&*m, &holdout, positive.as_deref())?;
                Ok(performance::classification_metrics(&scored))
            };
            let challenger = score(&cand_path)?;
            let champ = champ_path.as_deref().map(score).transpose()?;
            Ok((challenger, champ, holdout.rows))
        })
        .await?;
        let accuracy =
            |m: &std::collections::BTreeMap<String, f64>| m.get("accuracy").copied().unwrap_or(0.0);
        let result: GateResult = gate::evaluate(
            accuracy(&cand_metrics),
            champ_metrics.as_ref().map(accuracy),
            rows,
            &p.gate,
        );
        for (name, value) in &cand_metrics {
            store
                .set_version_metric(candidate.id, &format!("holdout_{name}"), *value)
                .await?;
            if !name.ends_with("_n") {
                self.inner
                    .metrics
                    .model_metric
                    .with_label_values(&[c.pipeline.as_str(), "candidate", name.as_str()])
                    .set(*value);
            }
        }
        let update = CycleUpdate {
            gate: serde_json::to_value(&result).ok(),
            ..CycleUpdate::default()
        };
        if result.blessed {
            self.advance(
                c,
                CycleState::AwaitingApproval,
                &format!("v{} {}", candidate.version, result.summary()),
                update,
            )
            .await
        } else {
            let update = CycleUpdate {
                outcome: Some(Outcome::Rejected),
                ..update
            };
            self.advance(
                c,
                CycleState::Rejected,
                &format!("v{} {}", candidate.version, result.summary()),
                update,
            )
            .await
        }
    }

    // ---- approval ------------------------------------------------------------------------

    async fn await_approval(&self, c: &CycleRow, p: &Pipeline) -> Result<(), StepError> {
        let store = &self.inner.store;
        let c = if c.deadline_at.is_none() {
            // First entry: persist the expiry, then announce the request.
            let deadline =
                now() + chrono::Duration::from_std(p.approval.expires).unwrap_or_default();
            store.set_deadline(c.id, deadline).await?;
            let c = store
                .cycle(c.id)
                .await?
                .ok_or_else(|| StepError::Invalid("cycle vanished".into()))?;
            self.announce(&c, p, deadline).await?;
            c
        } else {
            c.clone()
        };
        if p.approval.mode == ApprovalMode::Auto {
            let row = ApprovalRow {
                approver: "auto".into(),
                channel: "config".into(),
                decision: ApprovalDecision::Approve,
                reason: "approval.mode = \"auto\" (explicit opt-in for this pipeline)".into(),
                at: now(),
            };
            if store.record_approval(c.id, &row).await? == Recorded::New {
                warn!(
                    pipeline = c.pipeline,
                    cycle = c.id,
                    "auto-approved: approval.mode = \"auto\" for this pipeline"
                );
            }
        }
        loop {
            let approvals = store.approvals(c.id).await?;
            if let Some(r) = approvals
                .iter()
                .find(|a| a.decision == ApprovalDecision::Reject)
            {
                let update = CycleUpdate::outcome(Outcome::Rejected);
                let reason = format!("rejected by {} via {}: {}", r.approver, r.channel, r.reason);
                return self
                    .advance(&c, CycleState::Rejected, &reason, update)
                    .await;
            }
            let approved: Vec<&ApprovalRow> = approvals
                .iter()
                .filter(|a| a.decision == ApprovalDecision::Approve)
                .collect();
            if approved.len() >= p.approval.required {
                let who: Vec<String> = approved
                    .iter()
                    .map(|a| format!("{} via {}", a.approver, a.channel))
                    .collect();
                let reason = format!("approved by {}", who.join(", "));
                return self
                    .advance(&c, CycleState::Deploying, &reason, CycleUpdate::default())
                    .await;
            }
            let deadline = c.deadline_at.unwrap_or_else(now);
            if deadline <= now() {
                let update = CycleUpdate::outcome(Outcome::Rejected);
                let reason = "approval request expired without a decision (expired = rejected)";
                return self.advance(&c, CycleState::Rejected, reason, update).await;
            }
            let until = (deadline - now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(5));
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(until) => {}
                _ = self.inner.shutdown.cancelled() => return Err(StepError::Interrupted),
            }
        }
    }

    /// Send the approval request through every channel. A failing channel is logged and
    /// recorded; it never approves anything.
    async fn announce(
        &self,
        c: &CycleRow,
        p: &Pipeline,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        let version = match c.candidate_version {
            Some(id) => store
                .version(id)
                .await?
                .map(|v| v.version)
                .unwrap_or_default(),
            None => 0,
        };
        let gate: Option<GateResult> = c.gate.clone().and_then(|g| serde_json::from_value(g).ok());
        let decision: Option<Decision> = c
            .decision
            .clone()
            .and_then(|d| serde_json::from_value(d).ok());
        let request = ApprovalRequest {
            pipeline: c.pipeline.clone(),
            cycle: c.id,
            version,
            trigger: decision.map(|d| d.reasons.join("; ")).unwrap_or_default(),
            gate: gate.map(|g| g.summary()).unwrap_or_default(),
            expires_at,
        };
        let mode = match p.approval.mode {
            ApprovalMode::Auto => "auto (explicit opt-in)",
            ApprovalMode::Manual => "manual",
        };
        store
            .event(
                &c.pipeline,
                Some(c.id),
                "approval_requested",
                &format!("mode {mode}: {}", LogChannel::message(&request)),
                now(),
            )
            .await?;
        for channel in &self.inner.steps.channels {
            if let Err(e) = channel.request(&request).await {
                warn!(pipeline = c.pipeline, cycle = c.id, channel = channel.name(), error = %e, "approval request not delivered");
                store
                    .event(
                        &c.pipeline,
                        Some(c.id),
                        "approval_channel_failed",
                        &e.to_string(),
                        now(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    // ---- deploying and watching ----------------------------------------------------------

    async fn deploy(&self, c: &CycleRow, p: &Pipeline, config: &Config) -> Result<(), StepError> {
        let store = &self.inner.store;
        let version_id = c
            .candidate_version
            .ok_or_else(|| StepError::Invalid("cycle has no candidate version".into()))?;
        let version = store.version(version_id).await?.ok_or_else(|| {
            StepError::Invalid(format!("model version id {version_id} is missing"))
        })?;
        // Targets first (idempotent), then the aliases: the store never names a champion that
        // was not put in place.
        let targets = self.inner.steps.targets.clone();
        let state_dir = config.daemon.state_dir.clone();
        let v = version.clone();
        Self::blocking(move || {
            for t in &targets {
                t.deploy(&state_dir, &v)?;
            }
            Ok(())
        })
        .await?;
        let moved = store.promote(&c.pipeline, version_id, now()).await?;
        if let Some(m) = &p.mlflow {
            self.mlflow_aliases(c, m).await;
        }
        let watch_until = now() + chrono::Duration::from_std(p.deploy.watch).unwrap_or_default();
        let update = CycleUpdate {
            deadline_at: Some(Some(watch_until)),
            ..CycleUpdate::default()
        };
        let reason = format!(
            "champion -> v{}{}; watching until {}",
            version.version,
            if moved { "" } else { " (already promoted)" },
            watch_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        self.advance(c, CycleState::Watching, &reason, update).await
    }

    // ---- MLflow mirror -------------------------------------------------------------------

    /// Mirror a trained version to MLflow once: a run (found again by its tags after a
    /// crash, never created twice once it exists), params, per-epoch metrics, the model card,
    /// a registered model version. Best effort: a failure is logged and recorded as an event,
    /// and the next evaluation of the cycle tries again.
    async fn mirror_to_mlflow(
        &self,
        c: &CycleRow,
        m: &crate::mlflow::MlflowConfig,
        v: &crate::store::ModelVersion,
    ) {
        if v.lineage["mlflow"]["version"].is_string() {
            return;
        }
        let result: Result<serde_json::Value, crate::mlflow::MlflowError> = async {
            let client = crate::mlflow::Client::new(m)?;
            let exp = client.experiment(&m.experiment).await?;
            let start = v.created_at.timestamp_millis();
            let (run, artifacts) = match client.find_run(&exp, &c.pipeline, c.id).await? {
                Some((run, artifacts, _)) => (run, artifacts),
                None => {
                    let tags = [
                        ("retraind.pipeline", c.pipeline.clone()),
                        ("retraind.cycle", c.id.to_string()),
                        ("retraind.version", v.version.to_string()),
                        ("mlflow.source.name", "retraind".to_string()),
                    ];
                    let name = format!("{}-v{}", c.pipeline, v.version);
                    client.create_run(&exp, &name, &tags, start).await?
                }
            };
            let card_path = Path::new(&v.path).join("card.json");
            let card_bytes = std::fs::read(&card_path).unwrap_or_default();
            let card: serde_json::Value =
                serde_json::from_slice(&card_bytes).unwrap_or_default();
            let mut params = vec![
                ("backend".to_string(), v.lineage["backend"].as_str().unwrap_or("burn").to_string()),
                ("retraind_version".to_string(), v.version.to_string()),
                ("config_hash".to_string(), v.lineage["config_hash"].as_str().unwrap_or("").to_string()),
            ];
            if let Some(cfg) = card["config"].as_object() {
                for (k, val) in cfg {
                    params.push((k.clone(), match val {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }));
                }
            }
            let mut points = Vec::new();
            for e in card["training"]["history"].as_array().into_iter().flatten() {
                let step = e["epoch"].as_i64().unwrap_or(0);
                for key in ["train_loss", "valid_loss", "valid_accuracy"] {
                    if let Some(value) = e[key].as_f64() {
                        points.push(crate::mlflow::Point { key: key.into(), value, step });
                    }
                }
            }
            // Summary metrics at step 0; the per-epoch series keep their own keys.
            let per_epoch = ["train_loss", "valid_loss", "valid_accuracy"];
            if let Some(metrics) = v.metrics.as_object() {
                for (key, value) in metrics.iter().filter(|(k, _)| !per_epoch.contains(&k.as_str())) {
                    if let Some(value) = value.as_f64() {
                        points.push(crate::mlflow::Point { key: key.clone(), value, step: 0 });
                    }
                }
            }
            client.log(&run, &params, &points, start).await?;
            client.upload(&artifacts, "model/card.json", card_bytes).await?;
            client.finish(&run, true, now().timestamp_millis()).await?;
            let version = client
                .register(&m.registered_model, &format!("{artifacts}/model"), &run)
                .await?;
            Ok(json!({ "experiment_id": exp, "run_id": run, "registered_model": m.registered_model, "version": version }))
        }
        .await;
        match result {
            Ok(doc) => {
                info!(pipeline = c.pipeline, cycle = c.id, version = v.version, mlflow = %doc, "mirrored to MLflow");
                if let Err(e) = self
                    .inner
                    .store
                    .set_version_field(v.id, crate::store::VersionJson::Lineage, "mlflow", doc)
                    .await
                {
                    warn!(pipeline = c.pipeline, cycle = c.id, error = %e, "cannot record the MLflow ids");
                }
            }
            Err(e) => self.mlflow_failed(c, "MLflow mirror", e.to_string()).await,
        }
    }

    /// After a deploy: MLflow's `champion` and `previous` aliases follow ours. Best effort.
    async fn mlflow_aliases(&self, c: &CycleRow, m: &crate::mlflow::MlflowConfig) {
        let result: Result<(), StepError> = async {
            let client =
                crate::mlflow::Client::new(m).map_err(|e| StepError::Invalid(e.to_string()))?;
            for alias in ["champion", "previous"] {
                let Some(v) = self.inner.store.alias(&c.pipeline, alias).await? else {
                    continue;
                };
                if let Some(version) = v.lineage["mlflow"]["version"].as_str() {
                    client
                        .set_alias(&m.registered_model, alias, version)
                        .await
                        .map_err(|e| StepError::Invalid(e.to_string()))?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.mlflow_failed(c, "MLflow alias update", e.to_string())
                .await;
        }
    }

    /// A failed MLflow call: logged and kept as an event of the cycle; the cycle goes on.
    async fn mlflow_failed(&self, c: &CycleRow, what: &str, e: String) {
        warn!(pipeline = c.pipeline, cycle = c.id, error = %e, "{what} failed; the cycle goes on");
        let _ = self
            .inner
            .store
            .event(
                &c.pipeline,
                Some(c.id),
                "mlflow",
                &format!("{what} failed: {e}"),
                now(),
            )
            .await;
    }

    async fn watch(&self, c: &CycleRow) -> Result<(), StepError> {
        let store = &self.inner.store;
        loop {
            let champion = store.alias(&c.pipeline, "champion").await?;
            if champion.as_ref().map(|v| v.id) != c.candidate_version {
                let update = CycleUpdate::outcome(Outcome::RolledBack);
                return self
                    .advance(
                        c,
                        CycleState::RolledBack,
                        "the champion alias was moved away during the watch window",
                        update,
                    )
                    .await;
            }
            let until = c.deadline_at.unwrap_or_else(now);
            if until <= now() {
                let update = CycleUpdate::outcome(Outcome::Deployed);
                let v = champion.map(|v| v.version).unwrap_or_default();
                return self
                    .advance(
                        c,
                        CycleState::Completed,
                        &format!("v{v} deployed and survived its watch window"),
                        update,
                    )
                    .await;
            }
            let wait = (until - now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(30));
            if self.pause(wait).await {
                return Err(StepError::Interrupted);
            }
        }
    }
}

/// SHA-256 of the config file's bytes, for lineage.
/// A trainer config for the model card (and so the MLflow params): `env` values may be
/// secrets, so only their names are kept.
fn mask_env(mut config: serde_json::Value) -> serde_json::Value {
    if let Some(env) = config.get_mut("env").and_then(|e| e.as_object_mut()) {
        for v in env.values_mut() {
            *v = json!("***");
        }
    }
    config
}

/// Event kind under which a remote training run's id is stored before it is polled.
const REMOTE_RUN_EVENT: &str = "remote_run";

/// The champion's stored evaluation of `metric` (`holdout_<metric>`, with `holdout_<metric>_n`).
fn stored_baseline(metrics: &serde_json::Value, metric: performance::Metric) -> Option<Baseline> {
    let value = metrics[format!("holdout_{}", metric.name())].as_f64()?;
    let n = metrics[format!("holdout_{}_n", metric.name())]
        .as_f64()
        .map(|n| n as usize);
    Some(Baseline { value, n })
}

pub fn config_hash(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    std::fs::read(path)
        .map(|b| hex::encode(Sha256::digest(b)))
        .unwrap_or_default()
}

/// Split the current window into (holdout, rest), seeded by the cycle id so every step of a
/// cycle (and every retry) sees the same split.
pub fn holdout_split(table: &Table, share: f64, cycle: i64) -> (Vec<usize>, Vec<usize>) {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut idx: Vec<usize> = (0..table.rows).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(cycle as u64 ^ 0x5eed_5eed);
    idx.shuffle(&mut rng);
    let n = ((table.rows as f64) * share).round() as usize;
    let rest = idx.split_off(n.min(table.rows));
    (idx, rest)
}
