//! `watching`: for `deploy.watch_for` after a deploy, every `watch_interval`, the new
//! champion's live metric (labelled rows of the current window, or the PromQL signal) is
//! held to the previous champion's baseline, more tightly than the daily check
//! (`deploy.watch_relative_threshold`). After `failure_limit` failed checks the pipeline is
//! frozen and rolled back (or a human is asked, [`crate::guards::watch_action`]). A window
//! that cannot be read or has too few labels is "unknown": neither a pass nor a failure.

use std::time::Duration;

use tracing::{error, info};

use super::StepResult;
use super::check::{live_performance, score_performance, stored_baseline};
use crate::approval::Notice;
use crate::artifacts;
use crate::cycle::{CycleState, Outcome};
use crate::data;
use crate::engine::actions::rollback::{self, RollbackCause};
use crate::engine::{EngineError, Shared, StepContext, StepError, notices};
use crate::guards::{self, Hold, WatchAction};
use crate::performance::{Assessment, Baseline, PerformanceSource};
use crate::records::EventKind;
use crate::source;
use crate::store::{CycleUpdate, HoldKind, ModelVersion};

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let deploy = &ctx.pipeline.deploy;
    let until = ctx.cycle.deadline_at.unwrap_or_else(|| ctx.now());
    let started = until - chrono::Duration::from_std(deploy.watch).unwrap_or_default();
    let interval = chrono::Duration::from_std(deploy.watch_interval)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    loop {
        if !ctx.shared.is_leader() {
            return Err(StepError::Interrupted);
        }
        let champion = ctx.champion().await?;
        let Some(champion) = champion.filter(|v| Some(v.id) == ctx.cycle.candidate_version) else {
            return Ok(ctx.to(
                CycleState::RolledBack,
                "the champion alias was moved away during the watch window",
                CycleUpdate::outcome(Outcome::RolledBack),
            ));
        };
        if until <= ctx.now() {
            return Ok(ctx.to(
                CycleState::Completed,
                format!(
                    "v{} deployed and survived its watch window",
                    champion.version
                ),
                CycleUpdate::outcome(Outcome::Deployed),
            ));
        }
        let done = ctx
            .store()
            .count_events(ctx.cycle.id, &EventKind::WatchCheck)
            .await?;
        let next = started + interval * (done as i32 + 1);
        if next <= ctx.now() && next < until {
            if let Some(result) = check(ctx, &champion).await? {
                return Ok(result);
            }
            continue;
        }
        let wait = (next.min(until) - ctx.now())
            .to_std()
            .unwrap_or_default()
            .min(ctx.shared.clock.slice(Duration::from_secs(30)));
        ctx.shared.wait(wait).await?;
    }
}

/// The baseline the new champion is held to: a fixed one, else the previous champion's,
/// else its own.
fn baseline(
    ctx: &StepContext,
    previous: Option<&ModelVersion>,
    champion: &ModelVersion,
) -> Option<Baseline> {
    let metric = ctx.pipeline.performance.rule.metric;
    ctx.pipeline
        .performance
        .baseline
        .map(|value| Baseline { value, n: None })
        .or_else(|| previous.and_then(|v| stored_baseline(v, metric)))
        .or_else(|| stored_baseline(champion, metric))
}

/// The live metric now: the PromQL signal, or the champion scored on the labelled rows of
/// today's window.
async fn assess(
    ctx: &StepContext,
    champion: &ModelVersion,
    baseline: Option<Baseline>,
) -> Assessment {
    let metric = ctx.pipeline.performance.rule.metric;
    // The watch holds the new champion to the previous one more tightly than the daily
    // check does: `deploy.watch_relative_threshold`.
    let mut perf = ctx.pipeline.performance.clone();
    perf.rule.relative_threshold = ctx.pipeline.deploy.watch_relative_threshold;
    if perf.source == PerformanceSource::Prometheus {
        return live_performance(ctx, &perf, baseline)
            .await
            .unwrap_or_else(|| Assessment::unknown(metric, 0, "no live metric configured"));
    }
    let roles = ctx.inputs().map(|i| i.roles.clone());
    let location = ctx
        .pipeline
        .data
        .current_location(&ctx.pipeline.schedule.local_date(ctx.now()));
    let cache = artifacts::inputs_dir(ctx.state_dir());
    let s3 = ctx.pipeline.data.s3.clone();
    let (champ, models) = (champion.clone(), ctx.parts.models.clone());
    let seed = ctx.cycle.id as u64 ^ ctx.now().timestamp() as u64;
    let read = Shared::blocking(move || {
        let roles = roles?;
        let input = source::resolve(&location?, &cache, &s3)?;
        let current = data::load(&input, &roles, false)?;
        score_performance(
            &perf,
            &*models,
            Some(&champ),
            current.labelled(),
            baseline,
            seed,
        )
    })
    .await;
    match read {
        Ok(Some(a)) => a,
        Ok(None) => Assessment::unknown(metric, 0, "no labelled rows in the current window yet"),
        Err(e) => Assessment::unknown(metric, 0, format!("cannot read the current window: {e}")),
    }
}

/// One post-deploy check. `Some` when the cycle moves on (rolled back).
async fn check(
    ctx: &StepContext,
    champion: &ModelVersion,
) -> Result<Option<StepResult>, StepError> {
    let previous = ctx.store().alias(&ctx.cycle.pipeline, "previous").await?;
    let baseline = baseline(ctx, previous.as_ref(), champion);
    let a = assess(ctx, champion, baseline).await;
    ctx.metrics().record_performance(&ctx.cycle.pipeline, &a);
    let line = format!("v{}: {}", champion.version, a.detail);
    info!(
        pipeline = ctx.cycle.pipeline,
        cycle = ctx.cycle.id,
        "watch check: {line}"
    );
    ctx.event(EventKind::WatchCheck, &line).await?;
    if !a.degraded() {
        return Ok(None);
    }
    ctx.event(EventKind::WatchFailed, &line).await?;
    let failures = ctx
        .store()
        .count_events(ctx.cycle.id, &EventKind::WatchFailed)
        .await? as usize;
    let deploy = &ctx.pipeline.deploy;
    let can_roll_back = previous.is_some();
    match guards::watch_action(
        failures,
        deploy.failure_limit,
        deploy.on_failure,
        can_roll_back,
    ) {
        WatchAction::Continue => Ok(None),
        action => {
            let why = format!(
                "v{} failed {failures} post-deploy checks (failure_limit {}); last: {line}",
                champion.version, deploy.failure_limit
            );
            failed(ctx, &why, action, can_roll_back).await
        }
    }
}

/// `failure_limit` watch checks failed: freeze the pipeline first (so nothing retrains on
/// top of the bad model), then roll back (or ask a human to). `Some` when the cycle has
/// moved on.
async fn failed(
    ctx: &StepContext,
    why: &str,
    action: WatchAction,
    can_roll_back: bool,
) -> Result<Option<StepResult>, StepError> {
    let pipeline = ctx.cycle.pipeline.as_str();
    let hold = Hold {
        by: "watch".into(),
        reason: why.to_string(),
        at: ctx.now(),
    };
    ctx.store()
        .set_hold(pipeline, HoldKind::Frozen, &hold)
        .await?;
    notices::refresh_holds(&ctx.shared, ctx.config()).await?;
    if action == WatchAction::RollBack {
        // Only the leader moves a champion (a standby asks a human instead).
        let back = if ctx.shared.is_leader() {
            rollback::roll_back(
                &ctx.shared,
                &ctx.runtime,
                pipeline,
                None,
                "watch",
                why,
                RollbackCause::Watch,
            )
            .await
        } else {
            Err(EngineError::NotLeader("another daemon".into()))
        };
        match back {
            Ok(v) => {
                return Ok(Some(ctx.to(
                    CycleState::RolledBack,
                    format!(
                        "{why}; rolled back to v{} and froze the pipeline (run `retraind resume {pipeline}` after a look)",
                        v.version
                    ),
                    CycleUpdate::outcome(Outcome::RolledBack),
                )));
            }
            Err(EngineError::Store(e)) => return Err(e.into()),
            Err(e) => {
                error!(pipeline, cycle = ctx.cycle.id, error = %e, "automatic rollback failed; asking a human");
            }
        }
    }
    escalate(ctx, why, can_roll_back).await?;
    Ok(None)
}

/// Ask a human, once per cycle, with the command that rolls back.
async fn escalate(ctx: &StepContext, why: &str, can_roll_back: bool) -> Result<(), StepError> {
    let pipeline = ctx.cycle.pipeline.as_str();
    if ctx
        .store()
        .count_events(ctx.cycle.id, &EventKind::WatchEscalated)
        .await?
        > 0
    {
        return Ok(());
    }
    let action = if can_roll_back {
        format!("run `retraind rollback {pipeline}` to restore the previous version")
    } else {
        "there is no previous version: investigate and deploy a fixed one".to_string()
    };
    let text = format!("retraind: `{pipeline}` {why}. The pipeline is frozen; {action}.");
    ctx.event(EventKind::WatchEscalated, &text).await?;
    let notice = Notice {
        pipeline: pipeline.to_string(),
        cycle: Some(ctx.cycle.id),
        kind: "watch_failed",
        text,
        at: ctx.now(),
        slack_channel: ctx.pipeline.approval.slack_channel.clone(),
    };
    notices::notify_all(&ctx.shared, &ctx.parts.channels, notice).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cycle::{CycleState, Outcome};
    use crate::engine::testkit::Kit;

    /// A champion whose labels turn out inverted fails its watch checks: after
    /// `failure_limit` of them the pipeline is frozen and rolled back to `previous`.
    #[tokio::test]
    async fn a_failing_watch_rolls_back_and_freezes() {
        let kit = Kit::with(
            "[pipeline.deploy]\nwatch_for = \"6s\"\nwatch_interval = \"1s\"\nfailure_limit = 2\n[pipeline.guards]\ncooldown = \"0s\"\nmax_deploys = [\"5/1h\"]\nmax_retrains = [\"5/1h\"]\n",
        )
        .await;
        kit.write_today(Kit::NORMAL, 1000);
        kit.deploy_first_model().await;
        kit.write_today(Kit::DRIFTED, 1000);
        let ctx = kit.run_until(CycleState::Watching).await;
        kit.write_today(Kit::INVERTED, 1000);
        let (to, reason, update) = kit.advanced(super::run(&ctx).await.unwrap());
        assert_eq!(
            (to, update.outcome),
            (CycleState::RolledBack, Some(Outcome::RolledBack))
        );
        assert!(
            reason.contains("failed 2 post-deploy checks (failure_limit 2)"),
            "{reason}"
        );
        assert!(reason.contains("rolled back to v1"), "{reason}");
        let champion = kit.store().alias("p", "champion").await.unwrap().unwrap();
        assert_eq!(champion.version, 1);
        assert!(kit.store().holds("p").await.unwrap().frozen.is_some());
        assert_eq!(kit.events(ctx.cycle.id, "watch_failed").await.len(), 2);
    }
}
