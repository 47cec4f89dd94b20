//! The drive loop: read the cycle, run the step of its state, persist the step's result —
//! the only code that moves a cycle's state. A store that is unreachable or busy is
//! retried with backoff (every step is idempotent); a lost lease hands the cycle to the new
//! leader; any other step error ends the cycle `failed` with the error as its reason, and a
//! run of failures trips the circuit breaker.

use std::time::Duration;

use tracing::{error, info, warn};

use super::steps::{self, StepResult, Transition};
use super::{Engine, Shared, StepContext, StepError, notices};
use crate::cycle::{CycleState, Outcome};
use crate::store::{CycleRow, CycleUpdate, StoreError};

/// Drive cycle `id` until it ends, the daemon shuts down, or another daemon leads.
pub(super) async fn drive(engine: &Engine, id: i64) {
    let shared = engine.shared();
    let mut backoff = Duration::from_secs(1);
    loop {
        if shared.shutdown.is_cancelled() || !shared.is_leader() {
            return;
        }
        let cycle = match shared.store.cycle(id).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                warn!(cycle = id, error = %e, "cannot read cycle; retrying");
                if shared.pause(backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
                continue;
            }
        };
        if cycle.state.is_terminal() {
            return;
        }
        match step(engine, &cycle).await {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(StepError::Interrupted) => return,
            Err(StepError::Store(e @ StoreError::Fenced { .. })) => {
                // Another daemon leads now: it resumes this cycle; nothing more here.
                warn!(pipeline = cycle.pipeline, cycle = id, error = %e, "lost the leader lease; leaving the cycle to the new leader");
                shared.set_leader(false);
                return;
            }
            Err(StepError::Store(e)) if !matches!(e, StoreError::Unreadable { .. }) => {
                // The store is unreachable or busy: the step is idempotent, retry it.
                warn!(pipeline = cycle.pipeline, cycle = id, state = %cycle.state, error = %e, "store error; retrying step");
                if shared.pause(backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
            Err(e) => {
                let reason = e.to_string();
                error!(pipeline = cycle.pipeline, cycle = id, state = %cycle.state, reason, "cycle step failed");
                let failed = Transition {
                    to: CycleState::Failed,
                    reason,
                    update: CycleUpdate::outcome(Outcome::Failed),
                };
                if let Err(e) = finish(engine, &cycle, failed).await {
                    warn!(cycle = id, error = %e, "cannot record the failure; retrying");
                    if shared.pause(backoff).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Run the step of the cycle's state and persist its result.
pub(super) async fn step(engine: &Engine, cycle: &CycleRow) -> Result<(), StepError> {
    let ctx = StepContext::new(
        cycle.clone(),
        engine.runtime().await,
        engine.shared().clone(),
    )?;
    match steps::run(&ctx).await? {
        StepResult::Advance(t) => advance(engine, cycle, *t).await,
        StepResult::Register(new, reason) => {
            let version = ctx
                .store()
                .register_trained(*new, &reason, ctx.now())
                .await?;
            info!(
                pipeline = cycle.pipeline,
                cycle = cycle.id,
                version = version.version,
                reason,
                "candidate registered"
            );
            ctx.metrics()
                .set_state(&cycle.pipeline, CycleState::Trained);
            Ok(())
        }
        StepResult::Unchanged => Ok(()),
    }
}

/// Persist `from → to` and update metrics and the log.
async fn advance(engine: &Engine, c: &CycleRow, t: Transition) -> Result<(), StepError> {
    if t.to.is_terminal() {
        return finish(engine, c, t).await.map_err(StepError::from);
    }
    let shared: &Shared = engine.shared();
    shared
        .store
        .transition(c.id, c.state, t.to, &t.reason, t.update, shared.now())
        .await?;
    info!(pipeline = c.pipeline, cycle = c.id, from = %c.state, to = %t.to, reason = t.reason, "cycle transition");
    shared.metrics.set_state(&c.pipeline, t.to);
    Ok(())
}

/// Persist a terminal transition with its outcome, count it, and after a failure let the
/// circuit breaker look at the pipeline's run of failures.
async fn finish(engine: &Engine, c: &CycleRow, t: Transition) -> Result<(), StoreError> {
    let shared = engine.shared();
    let Transition {
        to,
        reason,
        mut update,
    } = t;
    let deployed = update.outcome == Some(Outcome::Deployed);
    let outcome = update
        .outcome
        .or_else(|| Outcome::of_terminal(to, deployed))
        .unwrap_or(Outcome::Failed);
    update.outcome = Some(outcome);
    shared
        .store
        .transition(c.id, c.state, to, &reason, update, shared.now())
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
            notices::trip_breaker(shared, &runtime.config, p, &parts.channels, c.id).await?;
        }
    }
    Ok(())
}
