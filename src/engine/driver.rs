//! The drive loop: read the cycle, run the step of its state, persist the step's result —
//! the only code that moves a cycle's state. It fails closed:
//!
//! - a step that meets a *transient* store error (the database unreachable or busy, see
//!   [`StoreError::is_transient`]) is run again after a capped exponential backoff, until
//!   `daemon.store_retry_for` has passed since the first such error; then the cycle fails
//!   "store unavailable for …";
//! - a step's result that cannot be *recorded* for a transient reason is recorded again —
//!   the step (a training, a deploy call, a Kubeflow run) is never run again for it;
//! - any permanent error (a data or constraint error, an illegal transition, an unreadable
//!   row) ends the cycle `failed` with the error as its reason, at once; a reason the store
//!   refuses is replaced by one it takes, and a failure that cannot be recorded at all stops
//!   driving the cycle instead of looping;
//! - a lost lease hands the cycle to the new leader; a cycle another worker moved is re-read.
//!
//! A run of failures trips the circuit breaker.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::steps::{self, StepResult, Transition};
use super::{Engine, Shared, StepContext, StepError, notices};
use crate::cycle::{CycleState, Outcome};
use crate::store::{CycleRow, CycleUpdate, StoreError};

/// The longest wait between two tries of an unavailable store.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Drive cycle `id` until it ends, the daemon shuts down, or another daemon leads.
pub(super) async fn drive(engine: &Engine, id: i64) {
    let shared = engine.shared();
    let mut outage = Outage::default();
    loop {
        if shared.shutdown.is_cancelled() || !shared.is_leader() {
            return;
        }
        let cycle = match shared.store.cycle(id).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) if e.is_transient() => {
                // Nothing runs while the cycle cannot be read: wait as long as it takes.
                warn!(cycle = id, error = %e, "cannot read cycle; retrying");
                if shared.pause(outage.next_backoff()).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                error!(cycle = id, error = %e, "cannot read cycle; it is left as it is");
                return;
            }
        };
        if cycle.state.is_terminal() {
            return;
        }
        let ran = run_step(engine, &cycle).await;
        let next = match ran {
            Ok(result) => record(engine, &cycle, result, &mut outage).await,
            Err(e) => after_step_error(engine, &cycle, e, &mut outage).await,
        };
        if next == Next::Stop {
            return;
        }
    }
}

/// What the drive loop does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Read the cycle again and run the step of its (new) state.
    Continue,
    /// Stop driving the cycle (shutdown, lost lease, or a failure that cannot be recorded).
    Stop,
}

/// The store's outage as the drive loop sees it: when it began and the next wait.
#[derive(Debug, Default)]
struct Outage {
    since: Option<DateTime<Utc>>,
    backoff: Option<Duration>,
}

impl Outage {
    /// Note a transient error at `now`; whether `retry_for` has passed since the first one.
    fn over(&mut self, now: DateTime<Utc>, retry_for: Duration) -> Option<Duration> {
        let since = *self.since.get_or_insert(now);
        let lasted = (now - since).to_std().unwrap_or_default();
        (lasted >= retry_for).then_some(lasted)
    }

    /// 1 s, 2 s, 4 s … up to [`MAX_BACKOFF`].
    fn next_backoff(&mut self) -> Duration {
        let next = self
            .backoff
            .map_or(Duration::from_secs(1), |b| (b * 2).min(MAX_BACKOFF));
        self.backoff = Some(next);
        next
    }

    fn clear(&mut self) {
        *self = Outage::default();
    }
}

/// Run the step of the cycle's state and persist its result, once (the test kit's single
/// step; errors are returned, not handled).
#[cfg(test)]
pub(super) async fn step(engine: &Engine, cycle: &CycleRow) -> Result<(), StepError> {
    let result = run_step(engine, cycle).await?;
    Ok(persist(engine, cycle, &result).await?)
}

/// Run the step of the cycle's state (nothing is persisted here).
async fn run_step(engine: &Engine, cycle: &CycleRow) -> Result<StepResult, StepError> {
    let ctx = StepContext::new(
        cycle.clone(),
        engine.runtime().await,
        engine.shared().clone(),
    )?;
    steps::run(&ctx).await
}

/// A step ended with an error: retry it (a transient store error, within the deadline), hand
/// the cycle over (a lost lease), re-read it (another worker moved it) or fail it.
async fn after_step_error(
    engine: &Engine,
    cycle: &CycleRow,
    e: StepError,
    outage: &mut Outage,
) -> Next {
    let shared = engine.shared();
    let e = match e {
        StepError::Interrupted => return Next::Stop,
        StepError::Store(e) => e,
        other => return fail(engine, cycle, other.to_string()).await,
    };
    match e {
        StoreError::Fenced { .. } => lost_lease(shared, cycle, &e),
        StoreError::Conflict { .. } => Next::Continue,
        e if e.is_transient() => wait_out(engine, cycle, &e, outage, "the step")
            .await
            .unwrap_or(Next::Continue),
        e => fail(engine, cycle, e.to_string()).await,
    }
}

/// Persist a step's result. A transient error retries the recording (never the step) until
/// `daemon.store_retry_for`; a permanent one fails the cycle.
async fn record(
    engine: &Engine,
    cycle: &CycleRow,
    result: StepResult,
    outage: &mut Outage,
) -> Next {
    let shared = engine.shared();
    loop {
        let e = match persist(engine, cycle, &result).await {
            Ok(()) => {
                outage.clear();
                return Next::Continue;
            }
            Err(e) => e,
        };
        match e {
            StoreError::Fenced { .. } => return lost_lease(shared, cycle, &e),
            // The result was recorded by an earlier try whose answer was lost, or another
            // worker moved the cycle: read it again.
            StoreError::Conflict { .. } => return Next::Continue,
            e if e.is_transient() => {
                // A daemon that stepped down records nothing: the leader takes the cycle up
                // (a finished training is registered from its directory, a deploy's open
                // move is taken up under its delivery id).
                let what = "recording the step's result";
                if let Some(next) = wait_out(engine, cycle, &e, outage, what).await {
                    return next;
                }
            }
            e => {
                let reason = format!("cannot record the result of the {} step: {e}", cycle.state);
                return fail(engine, cycle, reason).await;
            }
        }
    }
}

/// After a transient store error: fail the cycle once `daemon.store_retry_for` has passed
/// since the outage began, else wait a backoff. `None`: try `what` again; `Some`: what the
/// drive loop does now (stopped by shutdown or a lost lead, or the cycle failed).
async fn wait_out(
    engine: &Engine,
    cycle: &CycleRow,
    e: &StoreError,
    outage: &mut Outage,
    what: &str,
) -> Option<Next> {
    let shared = engine.shared();
    let retry_for = engine.config().await.daemon.store_retry_for;
    if let Some(lasted) = outage.over(shared.now(), retry_for) {
        return Some(fail(engine, cycle, unavailable(lasted, e, what)).await);
    }
    warn!(pipeline = cycle.pipeline, cycle = cycle.id, state = %cycle.state, error = %e, "store unavailable; retrying {what}");
    if shared.pause(outage.next_backoff()).await || !shared.is_leader() {
        return Some(Next::Stop);
    }
    None
}

fn unavailable(lasted: Duration, e: &StoreError, what: &str) -> String {
    format!(
        "store unavailable for {} while retrying {what} (daemon.store_retry_for): {e}",
        humantime::format_duration(Duration::from_secs(lasted.as_secs()))
    )
}

fn lost_lease(shared: &Shared, cycle: &CycleRow, e: &StoreError) -> Next {
    // Another daemon leads now: it resumes this cycle; nothing more here.
    warn!(pipeline = cycle.pipeline, cycle = cycle.id, error = %e, "lost the leader lease; leaving the cycle to the new leader");
    shared.set_leader(false);
    Next::Stop
}

/// Persist what a step returned.
async fn persist(engine: &Engine, cycle: &CycleRow, result: &StepResult) -> Result<(), StoreError> {
    match result {
        StepResult::Advance(t) => advance(engine, cycle, t).await,
        StepResult::Register(new, reason) => {
            let shared = engine.shared();
            let version = shared
                .store
                .register_trained((**new).clone(), reason, shared.now())
                .await?;
            info!(
                pipeline = cycle.pipeline,
                cycle = cycle.id,
                version = version.version,
                reason,
                "candidate registered"
            );
            shared
                .metrics
                .set_state(&cycle.pipeline, CycleState::Trained);
            Ok(())
        }
        StepResult::Unchanged => Ok(()),
    }
}

/// End the cycle `failed` with `reason`. A reason the store refuses is replaced by a plain
/// one; a transient error is retried for as long as it takes (nothing else runs meanwhile);
/// a failure that cannot be recorded at all stops driving the cycle.
async fn fail(engine: &Engine, cycle: &CycleRow, reason: String) -> Next {
    let shared = engine.shared();
    error!(pipeline = cycle.pipeline, cycle = cycle.id, state = %cycle.state, reason, "cycle step failed");
    let mut reason = reason;
    let mut plain = false;
    let mut outage = Outage::default();
    loop {
        let failed = Transition {
            to: CycleState::Failed,
            reason: reason.clone(),
            update: CycleUpdate::outcome(Outcome::Failed),
        };
        match finish(engine, cycle, &failed).await {
            Ok(()) => return Next::Continue,
            Err(e @ StoreError::Fenced { .. }) => return lost_lease(shared, cycle, &e),
            Err(StoreError::Conflict { .. }) => return Next::Continue,
            Err(e) if e.is_transient() => {
                warn!(cycle = cycle.id, error = %e, "cannot record the failure yet; retrying");
                if shared.pause(outage.next_backoff()).await || !shared.is_leader() {
                    return Next::Stop;
                }
            }
            Err(e) if !plain => {
                warn!(cycle = cycle.id, error = %e, "the store refused the failure's reason; recording a plain one");
                reason = format!(
                    "the {} step failed and its reason could not be stored ({}); see the daemon's log",
                    cycle.state,
                    e.code()
                        .map_or_else(|| "refused".to_string(), |c| format!("code {c}"))
                );
                plain = true;
            }
            Err(e) => {
                error!(pipeline = cycle.pipeline, cycle = cycle.id, error = %e, "cannot record the cycle's failure; it is no longer driven until the daemon restarts");
                return Next::Stop;
            }
        }
    }
}

/// Persist `from → to` and update metrics and the log.
async fn advance(engine: &Engine, c: &CycleRow, t: &Transition) -> Result<(), StoreError> {
    if t.to.is_terminal() {
        return finish(engine, c, t).await;
    }
    let shared: &Shared = engine.shared();
    shared
        .store
        .transition(
            c.id,
            c.state,
            t.to,
            &t.reason,
            t.update.clone(),
            shared.now(),
        )
        .await?;
    info!(pipeline = c.pipeline, cycle = c.id, from = %c.state, to = %t.to, reason = t.reason, "cycle transition");
    shared.metrics.set_state(&c.pipeline, t.to);
    Ok(())
}

/// Persist a terminal transition with its outcome, count it, and after a failure let the
/// circuit breaker look at the pipeline's run of failures.
async fn finish(engine: &Engine, c: &CycleRow, t: &Transition) -> Result<(), StoreError> {
    let shared = engine.shared();
    let (to, reason) = (t.to, &t.reason);
    let mut update = t.update.clone();
    let deployed = update.outcome == Some(Outcome::Deployed);
    let outcome = update
        .outcome
        .or_else(|| Outcome::of_terminal(to, deployed))
        .unwrap_or(Outcome::Failed);
    update.outcome = Some(outcome);
    shared
        .store
        .transition(c.id, c.state, to, reason, update, shared.now())
        .await?;
    let seconds = (shared.now() - c.created_at).num_milliseconds() as f64 / 1000.0;
    let metrics = &shared.metrics;
    metrics.finished(&c.pipeline, outcome, seconds);
    metrics.set_state(&c.pipeline, to);
    metrics
        .approvals_pending
        .with_label_values(&[&c.pipeline])
        .set(0);
    if to == CycleState::Failed && c.state == CycleState::Training {
        metrics
            .training_failures
            .with_label_values(&[&c.pipeline])
            .inc();
    }
    info!(pipeline = c.pipeline, cycle = c.id, from = %c.state, to = %to, outcome = outcome.as_str(), reason, "cycle finished");
    if outcome == Outcome::Failed {
        let runtime = engine.runtime().await;
        if let (Some(p), Some(parts)) = (
            runtime.config.pipeline(&c.pipeline),
            runtime.parts(&c.pipeline),
        ) {
            // The failure is recorded: the breaker's own trouble must not undo that.
            if let Err(e) =
                notices::trip_breaker(shared, &runtime.config, p, &parts.channels, c.id).await
            {
                warn!(pipeline = c.pipeline, cycle = c.id, error = %e, "cannot evaluate the circuit breaker after this failure");
            }
        }
    }
    Ok(())
}
