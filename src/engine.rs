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

use crate::approval::ApprovalMode;
use crate::approval::{
    ApprovalChannel, ApprovalDecision, ApprovalRequest, LogChannel, MetricRow, Notice,
};
use crate::artifacts::{self, ArtifactError};
use crate::config::{Config, Pipeline};
use crate::cycle::{CycleState, Outcome, TriggerKind};
use crate::data::ReferenceSource;
use crate::data::{self, Roles, Table};
use crate::decision::{self, Decision, Verdict};
use crate::deploy::{CurrentSymlink, DeployError, DeployTarget, HttpHook};
use crate::drift::{Detector, DriftReport, StatisticalDetector};
use crate::gate::{self, GateInput, GateResult};
use crate::guards::{self, Block, Hold};
use crate::metrics::Metrics;
use crate::performance::PerformanceSource;
use crate::performance::{self, Assessment, Baseline};
use crate::quality;
use crate::source;
use crate::store::{
    ApprovalRow, ChampionMove, CreateOutcome, CycleRow, CycleUpdate, DeployKind, GLOBAL, HoldKind,
    ModelVersion, NewVersion, Recorded, Store, StoreError,
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
    #[error("pipeline `{0}` has no champion yet; there is nothing to roll back")]
    NoChampion(String),
    #[error(
        "pipeline `{0}` has no `previous` version; name one with --to <version> (see `retraind models {0}`)"
    )]
    NoPrevious(String),
    #[error("pipeline `{pipeline}` has no version {version} (see `retraind models {pipeline}`)")]
    UnknownVersion { pipeline: String, version: i64 },
    #[error("v{version} of `{pipeline}` is already the champion")]
    AlreadyChampion { pipeline: String, version: i64 },
    #[error("rollback failed, the champion is unchanged: {0}")]
    Deploy(String),
    #[error("this daemon is a standby; send this to the leader ({0})")]
    NotLeader(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The pluggable parts of a cycle: how to check, train, ask for approval and deploy.
#[derive(Clone)]
pub struct Steps {
    pub detector: Arc<dyn Detector>,
    pub channels: Vec<Arc<dyn ApprovalChannel>>,
    pub targets: Vec<Arc<dyn DeployTarget>>,
}

impl Steps {
    /// This build's parts: statistical drift tests, the burn trainer, the log approval
    /// channel and the `current` symlink deploy target.
    pub fn local() -> Steps {
        Steps {
            detector: Arc::new(StatisticalDetector),
            channels: vec![Arc::new(LogChannel)],
            targets: vec![Arc::new(CurrentSymlink)],
        }
    }

    /// [`Steps::local`] plus the approval channels the configuration turns on (Slack, the
    /// signed webhook), with their secrets read now.
    pub fn from_config(config: &Config) -> Result<Steps, crate::secret::SecretError> {
        use crate::secret::Secret;
        let mut steps = Steps::local();
        if let Some(s) = &config.slack {
            let load = |src: &Option<crate::secret::SecretSource>| {
                src.as_ref().map(Secret::load).transpose()
            };
            steps
                .channels
                .push(Arc::new(crate::approval::slack::Slack::new(
                    s.api_url.clone(),
                    s.channel.clone(),
                    load(&s.bot_token)?,
                    load(&s.incoming_webhook)?,
                )));
        }
        if let Some(w) = &config.webhook
            && let Some(url) = &w.url
        {
            steps
                .channels
                .push(Arc::new(crate::approval::webhook::Webhook::new(
                    url.clone(),
                    Secret::load(&w.secret)?,
                    w.timeout,
                )));
        }
        Ok(steps)
    }
}

/// Why a rollback happened (the `reason` label of `retraind_rollbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackCause {
    /// `retraind rollback` / the API.
    Manual,
    /// The post-deploy watch saw the live metric fail `failure_limit` times.
    Watch,
}

impl RollbackCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackCause::Manual => "manual",
            RollbackCause::Watch => "watch",
        }
    }
}

/// Event kinds the guards and the watch count.
const RETRAIN_EVENT: &str = "retrain_started";
const WATCH_CHECK_EVENT: &str = "watch_check";
const WATCH_FAILED_EVENT: &str = "watch_failed";
const WATCH_ESCALATED_EVENT: &str = "watch_escalated";
const DELIVERED_EVENT: &str = "approval_delivered";

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
    /// Whether this daemon holds the leader lease: only the leader starts and drives cycles.
    leader: std::sync::atomic::AtomicBool,
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
                leader: std::sync::atomic::AtomicBool::new(true),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether this daemon leads (drives cycles). True unless the lease loop says otherwise.
    pub fn is_leader(&self) -> bool {
        self.inner.leader.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Set by the lease loop; losing the lead stops every drive loop at its next step.
    pub fn set_leader(&self, leader: bool) {
        self.inner
            .leader
            .store(leader, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake.notify_waiters();
    }

    /// The leader's name, for a standby's refusals.
    async fn not_leader(&self) -> EngineError {
        let who = match self.inner.store.lease().await {
            Ok(Some(l)) => l.holder,
            _ => "unknown".to_string(),
        };
        EngineError::NotLeader(who)
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
            if let Some(v) = self.inner.store.alias(&p.name, "champion").await? {
                self.inner
                    .metrics
                    .champion_version
                    .with_label_values(&[&p.name])
                    .set(v.version);
            }
        }
        self.refresh_holds().await
    }

    /// Export `retraind_pipeline_frozen` from the holds on record.
    async fn refresh_holds(&self) -> Result<(), StoreError> {
        let config = self.config().await;
        for p in &config.pipelines {
            let h = self.inner.store.holds(&p.name).await?;
            let held = h.global.is_some() || h.frozen.is_some() || h.paused.is_some();
            self.inner
                .metrics
                .pipeline_frozen
                .with_label_values(&[&p.name])
                .set(i64::from(held));
        }
        Ok(())
    }

    /// What the guards need to know about a pipeline.
    async fn history(
        &self,
        pipeline: &str,
        cfg: &guards::GuardConfig,
    ) -> Result<guards::History, StoreError> {
        let store = &self.inner.store;
        let longest = cfg
            .max_retrains
            .iter()
            .chain(&cfg.max_deploys)
            .map(|b| b.window)
            .chain([cfg.cooldown])
            .max()
            .unwrap_or_default();
        let since = now() - chrono::Duration::from_std(longest).unwrap_or_default();
        let deploys = store
            .deployments(pipeline, 1000)
            .await?
            .into_iter()
            .filter(|d| d.kind == DeployKind::Deploy && d.at >= since)
            .map(|d| d.at)
            .collect();
        let holds = store.holds(pipeline).await?;
        Ok(guards::History {
            retrains: store.event_times(pipeline, RETRAIN_EVENT, since).await?,
            deploys,
            recent_outcomes: store
                .recent_outcomes(pipeline, cfg.breaker_failures.max(1) as i64)
                .await?,
            global_freeze: holds.global,
            freeze: holds.frozen,
            paused: holds.paused,
        })
    }

    /// Count and record a guard's block (event + metric).
    async fn blocked(
        &self,
        pipeline: &str,
        cycle: Option<i64>,
        b: &Block,
    ) -> Result<(), StoreError> {
        self.inner
            .metrics
            .guard_blocks
            .with_label_values(&[pipeline, b.guard.as_str()])
            .inc();
        warn!(
            pipeline,
            cycle,
            guard = b.guard.as_str(),
            reason = b.reason,
            "runaway guard blocked an action"
        );
        self.inner
            .store
            .event(pipeline, cycle, "guard_block", &b.to_string(), now())
            .await
    }

    /// Tell every channel (best effort; failures are logged and stored as events).
    async fn notify_all(&self, notice: Notice) {
        for channel in &self.inner.steps.channels {
            if let Err(e) = channel.notify(&notice).await {
                warn!(pipeline = notice.pipeline, channel = channel.name(), error = %e, "notice not delivered");
                let _ = self
                    .inner
                    .store
                    .event(
                        &notice.pipeline,
                        notice.cycle,
                        "notice_failed",
                        &e.to_string(),
                        now(),
                    )
                    .await;
            }
        }
    }

    /// `retraind freeze [pipeline]`: stop retrains and deploys until `resume`.
    pub async fn freeze(
        &self,
        pipeline: Option<&str>,
        actor: &str,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let config = self.config().await;
        let target = match pipeline {
            Some(name) => {
                let p = config
                    .pipeline(name)
                    .ok_or_else(|| EngineError::UnknownPipeline(name.to_string()))?;
                p.name.clone()
            }
            None => GLOBAL.to_string(),
        };
        let hold = Hold {
            by: actor.to_string(),
            reason: reason.to_string(),
            at: now(),
        };
        let new = self
            .inner
            .store
            .set_hold(&target, HoldKind::Frozen, &hold)
            .await?;
        if new {
            self.inner
                .store
                .event(
                    &target,
                    None,
                    "frozen",
                    &format!("frozen by {actor}: {reason}"),
                    now(),
                )
                .await?;
            warn!(pipeline = target, actor, reason, "automation frozen");
            self.notify_all(Notice {
                pipeline: target.clone(),
                cycle: None,
                kind: "frozen",
                text: format!("retraind: `{target}` frozen by {actor}: {reason}. Run `retraind resume{}` to lift.", pipeline.map(|p| format!(" {p}")).unwrap_or_default()),
                at: now(),
                slack_channel: config.pipeline(&target).and_then(|p| p.approval.slack_channel.clone()),
            })
            .await;
        }
        self.refresh_holds().await?;
        Ok(new)
    }

    /// `retraind resume [pipeline]`: lift a freeze and the circuit breaker's pause.
    pub async fn resume(&self, pipeline: Option<&str>, actor: &str) -> Result<u64, EngineError> {
        let config = self.config().await;
        let target = match pipeline {
            Some(name) => config
                .pipeline(name)
                .map(|p| p.name.clone())
                .ok_or_else(|| EngineError::UnknownPipeline(name.to_string()))?,
            None => GLOBAL.to_string(),
        };
        let lifted = self.inner.store.clear_holds(&target).await?;
        if lifted > 0 {
            self.inner
                .store
                .event(
                    &target,
                    None,
                    "resumed_automation",
                    &format!("resumed by {actor}"),
                    now(),
                )
                .await?;
            info!(pipeline = target, actor, "automation resumed");
        }
        self.refresh_holds().await?;
        Ok(lifted)
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
        if !self.is_leader() {
            return Err(self.not_leader().await);
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
            self.inner
                .metrics
                .set_state_since(&c.pipeline, c.state, c.updated_at);
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
        let required = config
            .pipeline(&c.pipeline)
            .map(|p| p.approval.required)
            .unwrap_or(1);
        let recorded = store.record_approval(id, &row, required).await?;
        if recorded == Recorded::New {
            self.inner
                .metrics
                .approval_decisions
                .with_label_values(&[
                    c.pipeline.as_str(),
                    decision.as_str(),
                    Metrics::channel_label(channel),
                ])
                .inc();
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
            if self.inner.shutdown.is_cancelled() || !self.is_leader() {
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
                Err(StepError::Store(e @ StoreError::Fenced { .. })) => {
                    // Another daemon leads now: it resumes this cycle; nothing more here.
                    warn!(pipeline = cycle.pipeline, cycle = id, error = %e, "lost the leader lease; leaving the cycle to the new leader");
                    self.set_leader(false);
                    return;
                }
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
        self.inner
            .metrics
            .approvals_pending
            .with_label_values(&[&c.pipeline])
            .set(0);
        if to == CycleState::Failed && c.state == CycleState::Training {
            self.inner
                .metrics
                .training_failures
                .with_label_values(&[&c.pipeline])
                .inc();
        }
        info!(pipeline = c.pipeline, cycle = c.id, from = %c.state, to = %to, outcome = outcome.as_str(), reason, "cycle finished");
        if outcome == Outcome::Failed {
            self.maybe_trip_breaker(&c.pipeline, c.id).await?;
        }
        Ok(())
    }

    /// After a failed cycle: pause the pipeline if the failures are consecutive enough.
    async fn maybe_trip_breaker(&self, pipeline: &str, cycle: i64) -> Result<(), StoreError> {
        let config = self.config().await;
        let Some(p) = config.pipeline(pipeline) else {
            return Ok(());
        };
        let h = self.history(pipeline, &p.guards).await?;
        if let Some(reason) = guards::breaker_trips(&h, &p.guards) {
            let hold = Hold {
                by: "circuit_breaker".into(),
                reason: reason.clone(),
                at: now(),
            };
            if self
                .inner
                .store
                .set_hold(pipeline, HoldKind::Paused, &hold)
                .await?
            {
                error!(
                    pipeline,
                    cycle, reason, "circuit breaker: pipeline paused until `retraind resume`"
                );
                self.inner
                    .store
                    .event(pipeline, Some(cycle), "paused", &reason, now())
                    .await?;
                self.notify_all(Notice {
                    pipeline: pipeline.to_string(),
                    cycle: Some(cycle),
                    kind: "paused",
                    text: format!("retraind: `{pipeline}` paused by the circuit breaker: {reason}. Fix the cause, then run `retraind resume {pipeline}`."),
                    at: now(),
                    slack_channel: p.approval.slack_channel.clone(),
                })
                .await;
                self.refresh_holds().await?;
            }
        }
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
            CycleState::Decided => self.after_decision(c, &p).await,
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
            CycleState::Evaluating => self.evaluate(c, &p, &config).await,
            CycleState::AwaitingApproval => self.await_approval(c, &p, &config).await,
            CycleState::Deploying => self.deploy(c, &p, &config).await,
            CycleState::Watching => self.watch(c, &p, &config).await,
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
            let performance = score_performance(&perf, champ.as_ref(), labelled, baseline, seed)?;
            Ok((quality, report, performance))
        })
        .await?;
        let performance = match performance {
            None => self.live_performance(c, &p.performance, baseline).await,
            some => some,
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

    /// The live metric from Prometheus, when that is the pipeline's source: never "healthy"
    /// when Prometheus cannot answer.
    async fn live_performance(
        &self,
        c: &CycleRow,
        perf: &crate::performance::PerformanceConfig,
        baseline: Option<Baseline>,
    ) -> Option<Assessment> {
        let q = perf.prometheus.as_ref()?;
        if perf.source != PerformanceSource::Prometheus {
            return None;
        }
        Some(
            match crate::promql::query(&q.url, &q.query, q.timeout).await {
                Ok(v) => performance::assess_live(&perf.rule, v, baseline),
                Err(e) => {
                    warn!(pipeline = c.pipeline, cycle = c.id, error = %e, "live metric unavailable; performance unknown");
                    Assessment::unknown(
                        perf.rule.metric,
                        0,
                        format!("live metric unavailable: {e}"),
                    )
                }
            },
        )
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

    async fn after_decision(&self, c: &CycleRow, p: &Pipeline) -> Result<(), StepError> {
        let decision: Decision = c
            .decision
            .clone()
            .and_then(|d| serde_json::from_value(d).ok())
            .ok_or_else(|| StepError::Invalid("cycle has no recorded decision".into()))?;
        let reason = decision.reasons.join("; ");
        match decision.verdict {
            Verdict::Retrain => {
                let has_champion = self
                    .inner
                    .store
                    .alias(&c.pipeline, "champion")
                    .await?
                    .is_some();
                let h = self.history(&c.pipeline, &p.guards).await?;
                if let Err(b) = guards::retrain_allowed(&h, has_champion, now(), &p.guards) {
                    self.blocked(&c.pipeline, Some(c.id), &b).await?;
                    let update = CycleUpdate::outcome(Outcome::Blocked);
                    let reason = format!("retrain called for ({reason}) but {b}");
                    return self
                        .advance(c, CycleState::Completed, &reason, update)
                        .await;
                }
                if has_champion {
                    // Counted before the transition: a crash in between over-counts (safe).
                    self.inner
                        .store
                        .event(&c.pipeline, Some(c.id), RETRAIN_EVENT, &reason, now())
                        .await?;
                }
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
                let (_, train_part) = holdout_split(&labelled, p.gate.holdout_share, c.id, p.task);
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
            roles: roles.clone(),
            out_dir: staging.clone(),
            inputs: c.inputs.clone().unwrap_or_default(),
            remote_run,
            record_remote_run: recorder,
            timeout: p.train.timeout,
        };
        let cancel = CancelFlag::default();
        let trainer: Arc<dyn Trainer> = match (&p.train.backend, &p.train.command, &p.train.kfp) {
            (crate::train::Backend::Command, Some(cmd), _) => {
                Arc::new(crate::train::command::CommandTrainer {
                    config: cmd.clone(),
                })
            }
            (crate::train::Backend::Kfp, _, Some(kfp)) => Arc::new(crate::train::kfp::KfpTrainer {
                config: kfp.clone(),
                s3: p.data.s3.clone(),
            }),
            _ => Arc::new(BurnTrainer {
                config: p.train.burn.clone(),
            }),
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
                    valid_rmse = e.valid_rmse,
                    valid_r2 = e.valid_r2,
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
            "valid_loss": output.valid_loss,
            "epochs_run": output.epochs_run,
            "best_epoch": output.best_epoch,
            "train_rows": output.train_rows,
            "duration_seconds": output.duration_seconds,
            "model_size_mb": size_bytes as f64 / 1e6,
        });
        if let Some(a) = output.valid_accuracy {
            metrics["valid_accuracy"] = json!(a);
        }
        for (k, v) in &output.extra_metrics {
            metrics[k.as_str()] = json!(v);
        }
        // The model card: everything needed to load, judge and trace the model without the
        // store. Holdout metrics are added by the evaluate step (in the store).
        let card = json!({
            "format": output.format,
            "task": p.task,
            "backend": backend,
            "pipeline": c.pipeline,
            "cycle": c.id,
            "metrics": metrics,
            "lineage": lineage,
            "training": output,
            "config": mask_env(match p.train.backend {
                crate::train::Backend::Burn => serde_json::to_value(&p.train.burn).unwrap_or_default(),
                crate::train::Backend::Command => serde_json::to_value(&p.train.command).unwrap_or_default(),
                crate::train::Backend::Kfp => serde_json::to_value(&p.train.kfp).unwrap_or_default(),
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
            "trained in {:.1}s, {} epochs, {}",
            output.duration_seconds,
            output.epochs_run,
            output.headline()
        );
        let version = store.register_trained(new, &reason, now()).await?;
        self.inner
            .metrics
            .training_duration
            .with_label_values(&[&c.pipeline])
            .set(output.duration_seconds);
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

    async fn evaluate(&self, c: &CycleRow, p: &Pipeline, config: &Config) -> Result<(), StepError> {
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
        let gate_cfg = p.gate.clone();
        let task = p.task;
        let scored = Self::blocking(move || {
            let Some(labelled) = current.labelled() else {
                return Ok(None);
            };
            let (holdout_idx, _) = holdout_split(&labelled, share, cycle_id, task);
            let holdout = labelled.take(&holdout_idx);
            let score = |path: &str| -> Result<(performance::Scored, f64), StepError> {
                let m = train::load_predictor(Path::new(path))?;
                let started = std::time::Instant::now();
                let scored = train::score(&*m, &holdout, positive.as_deref())?;
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                Ok((scored, ms * 1000.0 / holdout.rows.max(1) as f64))
            };
            let (challenger, latency) = score(&cand_path)?;
            let champ = champ_path
                .as_deref()
                .map(score)
                .transpose()?
                .map(|(s, _)| s);
            let columns: Vec<(String, Vec<String>)> = gate_cfg
                .slices
                .iter()
                .filter_map(|name| {
                    holdout
                        .categorical(name)
                        .map(|v| (name.clone(), v.to_vec()))
                })
                .collect();
            let slices = match &champ {
                Some(ch) => gate::slice_scores(
                    gate_cfg.metric,
                    &columns,
                    &challenger,
                    ch,
                    gate_cfg.min_slice_rows,
                ),
                None => Vec::new(),
            };
            Ok(Some((
                task.metrics(&challenger),
                champ.as_ref().map(|s| task.metrics(s)),
                holdout.rows,
                slices,
                latency,
            )))
        })
        .await?;
        let (cand_metrics, champ_metrics, rows, slices, latency) = match scored {
            Some((a, b, r, s, l)) => (a, b, r, s, Some(l)),
            None => (Default::default(), None, 0, Vec::new(), None),
        };
        let metric = p.gate.metric;
        // A metric the holdout cannot give (one class only for ROC AUC) is NaN: the gate
        // fails it, or, for the champion, compares with nothing.
        let value = |m: &std::collections::BTreeMap<String, f64>| {
            m.get(metric.name()).copied().unwrap_or(f64::NAN)
        };
        let input = GateInput {
            metric,
            r2: cand_metrics.get("r2").copied(),
            challenger: if rows == 0 { 0.0 } else { value(&cand_metrics) },
            champion: champ_metrics.as_ref().map(value).filter(|v| v.is_finite()),
            holdout_rows: rows,
            slices,
            model_size_mb: candidate.metrics["model_size_mb"].as_f64(),
            latency_ms_per_1k: latency,
        };
        let mut result: GateResult = gate::evaluate(&input, &p.gate);
        if let Some(ms) = latency {
            store
                .set_version_metric(candidate.id, "latency_ms_per_1k", ms)
                .await?;
        }
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
        // The monotonic-quality guard on the golden set, then the deploy guards: a candidate
        // that could not be deployed is not put in front of a human.
        if let Some(golden) = &p.guards.golden_set {
            match self.golden_scores(c, p, config, golden, &candidate).await {
                Ok((score, past)) => {
                    let check = guards::monotonic_quality(p.gate.metric, score, &past, &p.guards);
                    if let Err(b) = &check {
                        self.blocked(&c.pipeline, Some(c.id), b).await?;
                    }
                    result.add(gate::Check {
                        name: "monotonic_quality".into(),
                        passed: check.is_ok(),
                        detail: match check {
                            Ok(()) => format!(
                                "golden-set {} {score:.4} is not worse than the last {} champions",
                                p.gate.metric.name(),
                                p.guards.monotonic_last
                            ),
                            Err(b) => b.reason,
                        },
                    });
                }
                Err(e) => result.add(gate::Check {
                    name: "monotonic_quality".into(),
                    passed: false,
                    detail: format!("golden set could not be scored: {e}"),
                }),
            }
        }
        if result.blessed {
            let h = self.history(&c.pipeline, &p.guards).await?;
            if let Err(b) = guards::deploy_allowed(&h, now(), &p.guards) {
                self.blocked(&c.pipeline, Some(c.id), &b).await?;
                result.add(gate::Check {
                    name: b.guard.as_str().into(),
                    passed: false,
                    detail: b.to_string(),
                });
            }
        }
        let metrics: Vec<MetricRow> = cand_metrics
            .iter()
            .filter(|(k, _)| !k.ends_with("_n"))
            .map(|(k, v)| MetricRow {
                metric: k.clone(),
                champion: champ_metrics.as_ref().and_then(|m| m.get(k).copied()),
                challenger: *v,
            })
            .collect();
        // The gate document: the verdict with every check, and the metrics table.
        let mut doc = serde_json::to_value(&result).unwrap_or_default();
        doc["metrics"] = serde_json::to_value(&metrics).unwrap_or_default();
        let update = CycleUpdate {
            gate: Some(doc),
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

    /// The gate metric on the golden set of the candidate and of the last K champions (newest
    /// first), each stored on its version as `golden_<metric>_<blake3 prefix>` (keyed by the
    /// set's hash, so a changed golden set is scored afresh).
    async fn golden_scores(
        &self,
        c: &CycleRow,
        p: &Pipeline,
        config: &Config,
        golden: &source::Location,
        candidate: &ModelVersion,
    ) -> Result<(f64, Vec<(i64, f64)>), StepError> {
        let store = &self.inner.store;
        let mut past: Vec<ModelVersion> = Vec::new();
        for d in store.deployments(&c.pipeline, 100).await? {
            if d.kind == DeployKind::Deploy
                && !past.iter().any(|v| v.id == d.version_id)
                && let Some(v) = store.version(d.version_id).await?
            {
                past.push(v);
            }
            if past.len() >= p.guards.monotonic_last {
                break;
            }
        }
        let roles: Roles = c
            .inputs
            .as_ref()
            .and_then(|i| serde_json::from_value(i["roles"].clone()).ok())
            .ok_or_else(|| StepError::Invalid("cycle has no recorded roles".into()))?;
        let cache = artifacts::inputs_dir(&config.daemon.state_dir);
        let loc = golden.clone();
        let s3 = p.data.s3.clone();
        let positive = p.performance.positive_class.clone();
        let metric = p.gate.metric;
        let mut models: Vec<ModelVersion> = vec![candidate.clone()];
        models.extend(past.iter().cloned());
        let scores = Self::blocking(move || {
            let input = source::resolve(&loc, &cache, &s3)?;
            let table = data::load(&input, &roles, true)?;
            let labelled = table
                .labelled()
                .ok_or_else(|| StepError::Invalid("the golden set has no labelled rows".into()))?;
            let digest = &labelled.fingerprint.blake3;
            let key = format!(
                "golden_{}_{}",
                metric.name(),
                &digest[..12.min(digest.len())]
            );
            let mut out = Vec::new();
            for v in &models {
                // Stored scores are reused; only new ones are computed (and stored below).
                let score = match v.metrics[&key].as_f64() {
                    Some(s) => (s, false),
                    None => {
                        let m = train::load_predictor(Path::new(&v.path))?;
                        let scored = train::score(&*m, &labelled, positive.as_deref())?;
                        let value = performance::compute(metric, &scored, None)
                            .map_err(|e| StepError::Invalid(format!("golden set: {e}")))?;
                        (value.value, true)
                    }
                };
                out.push((v.id, v.version, score));
            }
            Ok((key, out))
        })
        .await?;
        let (key, scores) = scores;
        let mut candidate_score = 0.0;
        let mut past_scores = Vec::new();
        for (i, (id, version, (score, fresh))) in scores.into_iter().enumerate() {
            if fresh {
                store.set_version_metric(id, &key, score).await?;
            }
            if i == 0 {
                candidate_score = score;
            } else {
                past_scores.push((version, score));
            }
        }
        Ok((candidate_score, past_scores))
    }

    // ---- approval ------------------------------------------------------------------------

    async fn await_approval(
        &self,
        c: &CycleRow,
        p: &Pipeline,
        config: &Config,
    ) -> Result<(), StepError> {
        let store = &self.inner.store;
        self.inner
            .metrics
            .approvals_pending
            .with_label_values(&[&c.pipeline])
            .set(1);
        let c = if c.deadline_at.is_none() {
            // First entry: persist the expiry, then announce the request.
            let deadline =
                now() + chrono::Duration::from_std(p.approval.expires).unwrap_or_default();
            store.set_deadline(c.id, deadline).await?;
            store
                .cycle(c.id)
                .await?
                .ok_or_else(|| StepError::Invalid("cycle vanished".into()))?
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
            if store.record_approval(c.id, &row, 1).await? == Recorded::New {
                self.inner
                    .metrics
                    .approval_decisions
                    .with_label_values(&[c.pipeline.as_str(), "approve", "config"])
                    .inc();
                warn!(
                    pipeline = c.pipeline,
                    cycle = c.id,
                    "auto-approved: approval.mode = \"auto\" for this pipeline"
                );
            }
        }
        // Channels that failed are retried with backoff until the request expires; a
        // channel that cannot deliver never counts as an approval.
        let mut retry = Duration::from_secs(5);
        let mut next_delivery = tokio::time::Instant::now();
        loop {
            if !self.is_leader() {
                return Err(StepError::Interrupted);
            }
            if tokio::time::Instant::now() >= next_delivery {
                let pending = self.announce(&c, p, config).await?;
                if pending > 0 {
                    next_delivery = tokio::time::Instant::now() + retry;
                    retry = (retry * 2).min(Duration::from_secs(300));
                } else {
                    next_delivery = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
                }
            }
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
                // The guards are asked again: time passed, and a freeze may have come.
                let h = self.history(&c.pipeline, &p.guards).await?;
                if let Err(b) = guards::deploy_allowed(&h, now(), &p.guards) {
                    self.blocked(&c.pipeline, Some(c.id), &b).await?;
                    let update = CycleUpdate::outcome(Outcome::Rejected);
                    let reason = format!("approved by {}, but {b}", who.join(", "));
                    return self
                        .advance(&c, CycleState::Rejected, &reason, update)
                        .await;
                }
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
                .min(Duration::from_secs(5))
                .min(next_delivery.saturating_duration_since(tokio::time::Instant::now()));
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(until) => {}
                _ = self.inner.shutdown.cancelled() => return Err(StepError::Interrupted),
            }
        }
    }

    /// Send the approval request through every channel that has not delivered it yet
    /// (delivery is recorded per channel, so a restart does not post twice). A failing
    /// channel is logged and recorded; it never approves anything. Returns how many channels
    /// still have to deliver.
    async fn announce(
        &self,
        c: &CycleRow,
        p: &Pipeline,
        config: &Config,
    ) -> Result<usize, StepError> {
        let store = &self.inner.store;
        let events = store.events(c.id).await?;
        let delivered: HashSet<&str> = events
            .iter()
            .filter(|(_, kind, _)| kind == DELIVERED_EVENT)
            .map(|(_, _, channel)| channel.as_str())
            .collect();
        let todo: Vec<&Arc<dyn ApprovalChannel>> = self
            .inner
            .steps
            .channels
            .iter()
            .filter(|ch| !delivered.contains(ch.name()))
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let version = match c.candidate_version {
            Some(id) => store
                .version(id)
                .await?
                .map(|v| v.version)
                .unwrap_or_default(),
            None => 0,
        };
        let champion_version = store
            .alias(&c.pipeline, "champion")
            .await?
            .map(|v| v.version);
        let gate: Option<GateResult> = c.gate.clone().and_then(|g| serde_json::from_value(g).ok());
        let metrics: Vec<MetricRow> = c
            .gate
            .as_ref()
            .and_then(|g| g["metrics"].as_array())
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| {
                        Some(MetricRow {
                            metric: r["metric"].as_str()?.to_string(),
                            champion: r["champion"].as_f64(),
                            challenger: r["challenger"].as_f64()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let decision: Option<Decision> = c
            .decision
            .clone()
            .and_then(|d| serde_json::from_value(d).ok());
        let request = ApprovalRequest {
            pipeline: c.pipeline.clone(),
            cycle: c.id,
            version,
            champion_version,
            trigger: decision.map(|d| d.reasons.join("; ")).unwrap_or_default(),
            gate: gate.as_ref().map(|g| g.summary()).unwrap_or_default(),
            checks: gate.map(|g| g.checks).unwrap_or_default(),
            metrics,
            report_url: config
                .server
                .public_url
                .as_ref()
                .map(|u| format!("{u}/reports/{}", c.id)),
            expires_at: c.deadline_at.unwrap_or_else(now),
            slack_channel: p.approval.slack_channel.clone(),
        };
        if delivered.is_empty() {
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
        }
        let mut pending = 0;
        for channel in todo {
            match channel.request(&request).await {
                Ok(()) => {
                    store
                        .event(
                            &c.pipeline,
                            Some(c.id),
                            DELIVERED_EVENT,
                            channel.name(),
                            now(),
                        )
                        .await?;
                }
                Err(e) => {
                    pending += 1;
                    warn!(pipeline = c.pipeline, cycle = c.id, channel = channel.name(), error = %e, "approval request not delivered; will retry");
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
        }
        Ok(pending)
    }

    // ---- deploying and watching ----------------------------------------------------------

    /// The deploy targets of a pipeline: the engine's own (the `current` symlink) and the
    /// pipeline's signed hook.
    fn targets(&self, p: &Pipeline) -> Result<Vec<Arc<dyn DeployTarget>>, StepError> {
        let mut targets = self.inner.steps.targets.clone();
        if let Some(h) = &p.deploy.hook {
            let secret = h
                .secret
                .as_ref()
                .map(crate::secret::Secret::load)
                .transpose()
                .map_err(|e| StepError::Invalid(format!("deploy.hook_secret: {e}")))?;
            targets.push(Arc::new(HttpHook {
                url: h.url.clone(),
                secret,
                timeout: h.timeout,
            }));
        }
        Ok(targets)
    }

    /// Put `version` in place through every target. When one fails, the targets that already
    /// ran are pointed back at `fallback` (the champion in place), so nothing outside the
    /// store names a version the store does not.
    async fn put_in_place(
        &self,
        p: &Pipeline,
        config: &Config,
        version: &ModelVersion,
        fallback: Option<ModelVersion>,
    ) -> Result<(), StepError> {
        let targets = self.targets(p)?;
        let state_dir = config.daemon.state_dir.clone();
        let v = version.clone();
        Self::blocking(move || {
            for (i, t) in targets.iter().enumerate() {
                if let Err(e) = t.deploy(&state_dir, &v) {
                    let kept = match &fallback {
                        Some(f) => {
                            for done in &targets[..i] {
                                if let Err(r) = done.deploy(&state_dir, f) {
                                    error!(pipeline = f.pipeline, target = done.name(), error = %r, "cannot put the champion back in place");
                                }
                            }
                            format!("the champion stays v{}", f.version)
                        }
                        None => "there is no champion".to_string(),
                    };
                    return Err(StepError::Invalid(format!("{e}; {kept}")));
                }
            }
            Ok(())
        })
        .await
    }

    async fn deploy(&self, c: &CycleRow, p: &Pipeline, config: &Config) -> Result<(), StepError> {
        let store = &self.inner.store;
        let version_id = c
            .candidate_version
            .ok_or_else(|| StepError::Invalid("cycle has no candidate version".into()))?;
        let version = store.version(version_id).await?.ok_or_else(|| {
            StepError::Invalid(format!("model version id {version_id} is missing"))
        })?;
        let champion = store.alias(&c.pipeline, "champion").await?;
        // Targets first (idempotent), then the aliases: the store never names a champion that
        // was not put in place. After a crash past the alias move, nothing runs twice.
        let already = champion.as_ref().is_some_and(|v| v.id == version_id);
        if !already {
            self.put_in_place(p, config, &version, champion.clone())
                .await?;
        }
        let approvers: Vec<String> = store
            .approvals(c.id)
            .await?
            .into_iter()
            .filter(|a| a.decision == ApprovalDecision::Approve)
            .map(|a| a.approver)
            .collect();
        let moved = store
            .promote(
                &ChampionMove {
                    pipeline: &c.pipeline,
                    version_id,
                    kind: DeployKind::Deploy,
                    cycle: Some(c.id),
                    actor: &approvers.join(", "),
                    reason: &format!("cycle {} approved", c.id),
                },
                now(),
            )
            .await?;
        if moved {
            self.inner
                .metrics
                .deploys_total
                .with_label_values(&[&c.pipeline])
                .inc();
            store
                .event(
                    &c.pipeline,
                    Some(c.id),
                    "deployed",
                    &format!(
                        "v{} deployed (approved by {})",
                        version.version,
                        approvers.join(", ")
                    ),
                    now(),
                )
                .await?;
        }
        self.inner
            .metrics
            .champion_version
            .with_label_values(&[&c.pipeline])
            .set(version.version);
        if let Some(m) = &p.mlflow {
            self.mlflow_aliases(&c.pipeline, Some(c.id), m).await;
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

    /// Move the champion back: to version number `to`, or to `previous`. The targets are
    /// pointed at it first; the alias moves only once they all succeeded.
    pub async fn rollback(
        &self,
        pipeline: &str,
        to: Option<i64>,
        actor: &str,
        reason: &str,
        cause: RollbackCause,
    ) -> Result<ModelVersion, EngineError> {
        if !self.is_leader() {
            return Err(self.not_leader().await);
        }
        let config = self.config().await;
        let p = config
            .pipeline(pipeline)
            .cloned()
            .ok_or_else(|| EngineError::UnknownPipeline(pipeline.to_string()))?;
        let store = &self.inner.store;
        let champion = store
            .alias(pipeline, "champion")
            .await?
            .ok_or_else(|| EngineError::NoChampion(pipeline.to_string()))?;
        let target = match to {
            Some(n) => store
                .versions(pipeline)
                .await?
                .into_iter()
                .find(|v| v.version == n)
                .ok_or(EngineError::UnknownVersion {
                    pipeline: pipeline.to_string(),
                    version: n,
                })?,
            None => store
                .alias(pipeline, "previous")
                .await?
                .ok_or_else(|| EngineError::NoPrevious(pipeline.to_string()))?,
        };
        if target.id == champion.id {
            return Err(EngineError::AlreadyChampion {
                pipeline: pipeline.to_string(),
                version: target.version,
            });
        }
        self.put_in_place(&p, &config, &target, Some(champion.clone()))
            .await
            .map_err(|e| EngineError::Deploy(e.to_string()))?;
        let why = format!("v{} -> v{}: {reason}", champion.version, target.version);
        let moved = store
            .promote(
                &ChampionMove {
                    pipeline,
                    version_id: target.id,
                    kind: DeployKind::Rollback,
                    cycle: None,
                    actor,
                    reason: &why,
                },
                now(),
            )
            .await?;
        if moved {
            self.inner
                .metrics
                .rollbacks_total
                .with_label_values(&[pipeline, cause.as_str()])
                .inc();
            self.inner
                .metrics
                .champion_version
                .with_label_values(&[pipeline])
                .set(target.version);
            store
                .event(
                    pipeline,
                    None,
                    "rollback",
                    &format!("rolled back by {actor} ({}): {why}", cause.as_str()),
                    now(),
                )
                .await?;
            warn!(
                pipeline,
                actor,
                cause = cause.as_str(),
                from = champion.version,
                to = target.version,
                reason,
                "rolled back"
            );
            self.notify_all(Notice {
                pipeline: pipeline.to_string(),
                cycle: None,
                kind: "rollback",
                text: format!("retraind: `{pipeline}` rolled back by {actor}, {why}"),
                at: now(),
                slack_channel: p.approval.slack_channel.clone(),
            })
            .await;
        }
        if let Some(m) = &p.mlflow {
            self.mlflow_aliases(pipeline, None, m).await;
        }
        self.inner.wake.notify_waiters();
        Ok(target)
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
                for key in PER_EPOCH {
                    if let Some(value) = e[key].as_f64() {
                        points.push(crate::mlflow::Point { key: key.into(), value, step });
                    }
                }
            }
            // Summary metrics at step 0; a metric logged per epoch keeps its series (a trainer
            // without a history still gets its summary values logged).
            let series: std::collections::BTreeSet<String> =
                points.iter().map(|p| p.key.clone()).collect();
            if let Some(metrics) = v.metrics.as_object() {
                for (key, value) in metrics.iter().filter(|(k, _)| !series.contains(k.as_str())) {
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
            Err(e) => {
                self.mlflow_failed(&c.pipeline, Some(c.id), "MLflow mirror", e.to_string())
                    .await
            }
        }
    }

    /// After a deploy: MLflow's `champion` and `previous` aliases follow ours. Best effort.
    async fn mlflow_aliases(
        &self,
        pipeline: &str,
        cycle: Option<i64>,
        m: &crate::mlflow::MlflowConfig,
    ) {
        let result: Result<(), StepError> = async {
            let client =
                crate::mlflow::Client::new(m).map_err(|e| StepError::Invalid(e.to_string()))?;
            for alias in ["champion", "previous"] {
                let Some(v) = self.inner.store.alias(pipeline, alias).await? else {
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
            self.mlflow_failed(pipeline, cycle, "MLflow alias update", e.to_string())
                .await;
        }
    }

    /// A failed MLflow call: logged and kept as an event of the cycle; the cycle goes on.
    async fn mlflow_failed(&self, pipeline: &str, cycle: Option<i64>, what: &str, e: String) {
        warn!(pipeline, cycle, error = %e, "{what} failed; the cycle goes on");
        let _ = self
            .inner
            .store
            .event(
                pipeline,
                cycle,
                "mlflow",
                &format!("{what} failed: {e}"),
                now(),
            )
            .await;
    }

    async fn watch(&self, c: &CycleRow, p: &Pipeline, config: &Config) -> Result<(), StepError> {
        let store = &self.inner.store;
        let until = c.deadline_at.unwrap_or_else(now);
        let started = until - chrono::Duration::from_std(p.deploy.watch).unwrap_or_default();
        let interval = chrono::Duration::from_std(p.deploy.watch_interval)
            .unwrap_or_else(|_| chrono::Duration::hours(1));
        loop {
            if !self.is_leader() {
                return Err(StepError::Interrupted);
            }
            let champion = store.alias(&c.pipeline, "champion").await?;
            let Some(champion) = champion.filter(|v| Some(v.id) == c.candidate_version) else {
                let update = CycleUpdate::outcome(Outcome::RolledBack);
                return self
                    .advance(
                        c,
                        CycleState::RolledBack,
                        "the champion alias was moved away during the watch window",
                        update,
                    )
                    .await;
            };
            if until <= now() {
                let update = CycleUpdate::outcome(Outcome::Deployed);
                return self
                    .advance(
                        c,
                        CycleState::Completed,
                        &format!(
                            "v{} deployed and survived its watch window",
                            champion.version
                        ),
                        update,
                    )
                    .await;
            }
            let done = store.count_events(c.id, WATCH_CHECK_EVENT).await?;
            let next = started + interval * (done as i32 + 1);
            if next <= now() && next < until {
                if self.watch_check(c, p, config, &champion).await? {
                    return Ok(());
                }
                continue;
            }
            let wait = (next.min(until) - now())
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(30));
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.shutdown.cancelled() => return Err(StepError::Interrupted),
            }
        }
    }

    /// One post-deploy check: the new champion's live metric (labelled feedback in the
    /// pipeline's current window, or the PromQL signal) against the previous champion's
    /// baseline. A window that cannot be read or has too few labels is "unknown": neither a
    /// pass nor a failure. True when the cycle has moved on (rolled back).
    async fn watch_check(
        &self,
        c: &CycleRow,
        p: &Pipeline,
        config: &Config,
        champion: &ModelVersion,
    ) -> Result<bool, StepError> {
        let store = &self.inner.store;
        let previous = store.alias(&c.pipeline, "previous").await?;
        let metric = p.performance.rule.metric;
        let baseline = p
            .performance
            .baseline
            .map(|value| Baseline { value, n: None })
            .or_else(|| {
                previous
                    .as_ref()
                    .and_then(|v| stored_baseline(&v.metrics, metric))
            })
            .or_else(|| stored_baseline(&champion.metrics, metric));
        // The watch holds the new champion to the previous one more tightly than the daily
        // check does: `deploy.watch_relative_threshold`.
        let mut perf = p.performance.clone();
        perf.rule.relative_threshold = p.deploy.watch_relative_threshold;
        let assessment = if perf.source == PerformanceSource::Prometheus {
            self.live_performance(c, &perf, baseline).await
        } else {
            let roles: Option<Roles> = c
                .inputs
                .as_ref()
                .and_then(|i| serde_json::from_value(i["roles"].clone()).ok());
            let date = p.schedule.local_date(now());
            let location = p.data.current_location(&date);
            let cache = artifacts::inputs_dir(&config.daemon.state_dir);
            let s3 = p.data.s3.clone();
            let champ = champion.clone();
            let seed = c.id as u64 ^ now().timestamp() as u64;
            let read = Self::blocking(move || {
                let roles = roles
                    .ok_or_else(|| StepError::Invalid("cycle has no recorded roles".into()))?;
                let input = source::resolve(&location?, &cache, &s3)?;
                let current = data::load(&input, &roles, false)?;
                score_performance(&perf, Some(&champ), current.labelled(), baseline, seed)
            })
            .await;
            Some(match read {
                Ok(Some(a)) => a,
                Ok(None) => {
                    Assessment::unknown(metric, 0, "no labelled rows in the current window yet")
                }
                Err(e) => {
                    Assessment::unknown(metric, 0, format!("cannot read the current window: {e}"))
                }
            })
        };
        let a = assessment
            .unwrap_or_else(|| Assessment::unknown(metric, 0, "no live metric configured"));
        self.inner.metrics.record_performance(&c.pipeline, &a);
        let line = format!("v{}: {}", champion.version, a.detail);
        info!(pipeline = c.pipeline, cycle = c.id, "watch check: {line}");
        store
            .event(&c.pipeline, Some(c.id), WATCH_CHECK_EVENT, &line, now())
            .await?;
        if !a.degraded() {
            return Ok(false);
        }
        store
            .event(&c.pipeline, Some(c.id), WATCH_FAILED_EVENT, &line, now())
            .await?;
        let failures = store.count_events(c.id, WATCH_FAILED_EVENT).await? as usize;
        let can_roll_back = previous.is_some();
        match guards::watch_action(
            failures,
            p.deploy.failure_limit,
            p.deploy.on_failure,
            can_roll_back,
        ) {
            guards::WatchAction::Continue => Ok(false),
            action => {
                self.watch_failed(c, p, champion, failures, &line, action, can_roll_back)
                    .await
            }
        }
    }

    /// `failure_limit` watch checks failed: freeze the pipeline first (so nothing retrains
    /// on top of the bad model), then roll back (or ask a human to). True when the cycle has
    /// moved on.
    #[allow(clippy::too_many_arguments)]
    async fn watch_failed(
        &self,
        c: &CycleRow,
        p: &Pipeline,
        champion: &ModelVersion,
        failures: usize,
        last: &str,
        action: guards::WatchAction,
        can_roll_back: bool,
    ) -> Result<bool, StepError> {
        let store = &self.inner.store;
        let why = format!(
            "v{} failed {failures} post-deploy checks (failure_limit {}); last: {last}",
            champion.version, p.deploy.failure_limit
        );
        let hold = Hold {
            by: "watch".into(),
            reason: why.clone(),
            at: now(),
        };
        store.set_hold(&c.pipeline, HoldKind::Frozen, &hold).await?;
        self.refresh_holds().await?;
        if action == guards::WatchAction::RollBack {
            match self
                .rollback(&c.pipeline, None, "watch", &why, RollbackCause::Watch)
                .await
            {
                Ok(v) => {
                    let update = CycleUpdate::outcome(Outcome::RolledBack);
                    let reason = format!(
                        "{why}; rolled back to v{} and froze the pipeline (run `retraind resume {}` after a look)",
                        v.version, c.pipeline
                    );
                    self.advance(c, CycleState::RolledBack, &reason, update)
                        .await?;
                    return Ok(true);
                }
                Err(EngineError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    error!(pipeline = c.pipeline, cycle = c.id, error = %e, "automatic rollback failed; asking a human");
                }
            }
        }
        // Ask: once per cycle, with the command that rolls back.
        if store.count_events(c.id, WATCH_ESCALATED_EVENT).await? == 0 {
            let action = if can_roll_back {
                format!(
                    "run `retraind rollback {}` to restore the previous version",
                    c.pipeline
                )
            } else {
                "there is no previous version: investigate and deploy a fixed one".to_string()
            };
            let text = format!(
                "retraind: `{}` {why}. The pipeline is frozen; {action}.",
                c.pipeline
            );
            store
                .event(&c.pipeline, Some(c.id), WATCH_ESCALATED_EVENT, &text, now())
                .await?;
            self.notify_all(Notice {
                pipeline: c.pipeline.clone(),
                cycle: Some(c.id),
                kind: "watch_failed",
                text,
                at: now(),
                slack_channel: p.approval.slack_channel.clone(),
            })
            .await;
        }
        Ok(false)
    }
}

/// The champion's performance on labelled rows: scored by the champion itself (`model`) or
/// read from the prediction column. `None` when there is nothing to score (no labels, no
/// champion, or the source is Prometheus). Blocking.
fn score_performance(
    perf: &crate::performance::PerformanceConfig,
    champion: Option<&ModelVersion>,
    labelled: Option<Table>,
    baseline: Option<Baseline>,
    seed: u64,
) -> Result<Option<Assessment>, StepError> {
    Ok(match (perf.source, champion, labelled) {
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
            let positive =
                performance::positive_class(perf.positive_class.as_deref(), &labels, &predicted);
            let scored = performance::Scored {
                labels,
                predicted,
                positive_scores: None,
                positive,
            };
            Some(performance::assess(&perf.rule, &scored, baseline, seed))
        }
    })
}

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

/// The per-epoch series a model card's training history may carry, as MLflow metric keys.
const PER_EPOCH: [&str; 6] = [
    "train_loss",
    "valid_loss",
    "valid_accuracy",
    "valid_f1",
    "valid_rmse",
    "valid_r2",
];

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

/// SHA-256 of the config file's bytes, for lineage.
pub fn config_hash(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    std::fs::read(path)
        .map(|b| hex::encode(Sha256::digest(b)))
        .unwrap_or_default()
}

/// The gate's holdout of a labelled window (see [`crate::splits::holdout_split`]).
fn holdout_split(
    table: &Table,
    share: f64,
    cycle: i64,
    task: performance::Task,
) -> (Vec<usize>, Vec<usize>) {
    crate::splits::holdout_split(table.target.as_deref(), table.rows, share, cycle, task)
}
