//! `watching`: for `deploy.watch_for` after a deploy, every `watch_interval`, the new
//! champion's live metric (labelled rows of the current window, or the PromQL signal) is
//! held to the previous champion's baseline, more tightly than the daily check
//! (`deploy.watch_relative_threshold`). After `failure_limit` failed checks the pipeline is
//! frozen and rolled back (or a human is asked, [`crate::guards::watch_action`]). A window
//! that cannot be read or has too few labels is "unknown": neither a pass nor a failure —
//! unless the pipeline estimates (`performance.source = "estimated"` or
//! `estimate_when_unlabelled`): then the new champion's label-free estimate is judged.

mod compare;
pub(crate) use compare::Reader;

use std::time::Duration;

use tracing::{error, info};

use super::StepResult;
use super::check::{live_performance, score_performance, stored_baseline};
use crate::approval::Notice;
use crate::artifacts;
use crate::cycle::{CycleState, Outcome};
use crate::engine::actions::rollback::{self, RollbackCause};
use crate::engine::{EngineError, Shared, StepContext, StepError, estimation, notices};
use crate::guards::{self, Hold, WatchAction};
use crate::performance::{Assessment, Baseline, PerformanceSource};
use crate::records::EventKind;
use crate::store::{CycleUpdate, HoldKind, ModelVersion};

/// How far past `deploy.watch_for` a watch whose checks could not judge (no labelled rows,
/// no live metric) is stretched, as a multiple of the window, before a human is asked.
const MAX_STRETCH: i32 = 3;

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let deploy = &ctx.pipeline.deploy;
    let window = chrono::Duration::from_std(deploy.watch).unwrap_or_default();
    let interval = chrono::Duration::from_std(deploy.watch_interval)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    let started = started_at(ctx, window).await?;
    let mut until = ctx.cycle.deadline_at.unwrap_or(started + window);
    let mut pool = compare::Pool::default();
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
            match window_end(ctx, &champion, started, window, interval).await? {
                WindowEnd::Done(result) => return Ok(result),
                WindowEnd::Extended(to) => {
                    until = to;
                    continue;
                }
            }
        }
        let done = ctx
            .store()
            .count_events(ctx.cycle.id, &EventKind::WatchCheck)
            .await?;
        let next = started + interval * (done as i32 + 1);
        if next <= ctx.now() && next < until {
            if let Some(result) = check(ctx, &champion, started, &mut pool).await? {
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

/// When the watch began: the cycle's move to `watching` (its deadline minus the window for
/// a row without one).
async fn started_at(
    ctx: &StepContext,
    window: chrono::Duration,
) -> Result<chrono::DateTime<chrono::Utc>, StepError> {
    let transitions = ctx.store().transitions(ctx.cycle.id).await?;
    Ok(transitions
        .iter()
        .rev()
        .find(|t| t.to == CycleState::Watching)
        .map(|t| t.at)
        .or_else(|| ctx.cycle.deadline_at.map(|d| d - window))
        .unwrap_or_else(|| ctx.now()))
}

/// How many distinct windows of data a watch must judge its champion on: one per day of
/// the window for a daily file, one per interval for a live metric.
fn windows_needed(
    ctx: &StepContext,
    window: chrono::Duration,
    interval: chrono::Duration,
) -> usize {
    let per = if ctx.pipeline.performance.source == PerformanceSource::Prometheus {
        interval
    } else {
        chrono::Duration::days(1)
    };
    let windows = if per.num_seconds() > 0 {
        (window.num_seconds() + per.num_seconds() - 1) / per.num_seconds()
    } else {
        1
    };
    windows.max(1) as usize
}

enum WindowEnd {
    Done(StepResult),
    Extended(chrono::DateTime<chrono::Utc>),
}

/// The window is over. The new champion survived it if `failure_limit` checks could judge
/// it (what it takes to roll back), on enough distinct windows of data ([`windows_needed`]:
/// four checks of one day's file are one window), and its last check passed; a watch blind for part of its window (the day's
/// data or the live metric missing) goes on one interval at a time, and past [`MAX_STRETCH`] windows the
/// pipeline is frozen and a human asked — a watch that could not have rolled back has not
/// watched.
async fn window_end(
    ctx: &StepContext,
    champion: &ModelVersion,
    started: chrono::DateTime<chrono::Utc>,
    window: chrono::Duration,
    interval: chrono::Duration,
) -> Result<WindowEnd, StepError> {
    let events = ctx.store().events(ctx.cycle.id).await?;
    let checks = events
        .iter()
        .filter(|e| e.kind == EventKind::WatchCheck)
        .count();
    let judged: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::WatchEvidence)
        .map(|e| e.message.as_str())
        .collect();
    let windows: std::collections::BTreeSet<&str> = judged.iter().copied().collect();
    let (evidence, needed) = (windows.len(), windows_needed(ctx, window, interval));
    // As many judged checks as it takes to roll back, and every day of the window judged.
    let limit = ctx.pipeline.deploy.failure_limit.max(1);
    let enough = judged.len() >= limit && evidence >= needed;
    // A failure not yet followed by a pass: the verdict is still out — unless a human has
    // been asked already (nothing to roll back to), who now decides.
    let asked = events.iter().any(|e| e.kind == EventKind::WatchEscalated);
    let failing = !asked
        && events
            .iter()
            .rev()
            .find(|e| matches!(e.kind, EventKind::WatchEvidence | EventKind::WatchFailed))
            .is_some_and(|e| e.kind == EventKind::WatchFailed);
    if (enough && !failing) || window.is_zero() {
        return Ok(WindowEnd::Done(ctx.to(
            CycleState::Completed,
            format!(
                "v{} deployed and survived its watch window",
                champion.version
            ),
            CycleUpdate::outcome(Outcome::Deployed),
        )));
    }
    let judged = if failing {
        format!("v{}'s last watch check failed", champion.version)
    } else {
        format!(
            "{} of v{}'s {checks} watch checks could judge it, on {evidence} distinct window(s) of data; it takes {limit} to roll back and a watch of this length needs {needed} windows (no labelled rows or live metric)",
            judged.len(),
            champion.version
        )
    };
    let cap = started + window * MAX_STRETCH;
    if ctx.now() >= cap {
        let previous = ctx.store().alias(&ctx.cycle.pipeline, "previous").await?;
        let why = format!("watched for {MAX_STRETCH} windows but {judged}");
        failed(ctx, &why, WatchAction::Ask, previous.is_some()).await?;
        return Ok(WindowEnd::Done(ctx.to(
            CycleState::Completed,
            format!(
                "v{} deployed; {why}: the pipeline is frozen until a human looks",
                champion.version
            ),
            CycleUpdate::outcome(Outcome::Deployed),
        )));
    }
    let to = (ctx.now() + interval).min(cap);
    ctx.store().set_deadline(ctx.cycle.id, to).await?;
    ctx.event(
        EventKind::WatchExtended,
        &format!(
            "{judged}; watching until {}",
            to.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .await?;
    Ok(WindowEnd::Extended(to))
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
/// today's window. There the previous champion is scored on the same rows and is the
/// baseline (unless `performance.baseline` fixes one): the new model is held to what the
/// old one does on today's data, not to a holdout score from the day it was trained; for
/// accuracy, on every distinct window since the watch `started` ([`compare`]).
async fn assess(
    ctx: &StepContext,
    champion: &ModelVersion,
    previous: Option<&ModelVersion>,
    baseline: Option<Baseline>,
    started: chrono::DateTime<chrono::Utc>,
    pool: &mut compare::Pool,
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
    let schedule = &ctx.pipeline.schedule;
    let today = schedule.local_date(ctx.now());
    let dates = pool.missing(schedule, started, ctx.now());
    let reader = ctx.inputs().map(|i| compare::Reader {
        data: ctx.pipeline.data.clone(),
        roles: i.roles.clone(),
        cache: artifacts::inputs_dir(ctx.state_dir()),
    });
    let (champ, models, p) = (champion.clone(), ctx.parts.models.clone(), perf.clone());
    let previous = previous
        .filter(|_| ctx.pipeline.performance.baseline.is_none())
        .cloned();
    let seed = ctx.cycle.id as u64 ^ ctx.now().timestamp() as u64;
    let trained_on = compare::trained_on(champion);
    let in_sample = trained_on.clone();
    let read = Shared::blocking(move || {
        let reader = reader?;
        let window = reader.window(&today)?;
        let labelled = window.labelled();
        if let Some(rows) = &labelled
            && Some(&rows.fingerprint.blake3) == in_sample.as_ref()
        {
            return Ok(Judged::InSample);
        }
        // Too few labels and the pipeline estimates: the new champion's estimate.
        let labels = labelled.as_ref().map_or(0, |t| t.rows);
        if labels < p.rule.min_labels && p.estimates(labels) {
            let (a, _) =
                estimation::estimate_window(&p, &*models, &champ, &window, baseline, None)?;
            return Ok(Judged::Alone(Some(a)));
        }
        match (p.source, &previous, labelled) {
            (PerformanceSource::Model | PerformanceSource::Estimated, Some(prev), Some(rows)) => {
                compare::compare(&p, &*models, &champ, prev, &rows, &reader, dates, seed)
                    .map(Judged::Compared)
            }
            (_, _, labelled) => {
                score_performance(&p, &*models, Some(&champ), labelled, baseline, seed)
                    .map(Judged::Alone)
            }
        }
    })
    .await;
    match read {
        Ok(Judged::Compared(c)) => pool.judge(&perf, c, trained_on.as_deref()),
        Ok(Judged::InSample) => Assessment::unknown(
            metric,
            0,
            format!(
                "today's window is the one v{} was trained and evaluated on: no evidence about it yet",
                champion.version
            ),
        ),
        Ok(Judged::Alone(Some(a))) => a,
        Ok(Judged::Alone(None)) => {
            Assessment::unknown(metric, 0, "no labelled rows in the current window yet")
        }
        Err(e) => Assessment::unknown(metric, 0, format!("cannot read the current window: {e}")),
    }
}

/// A check's finding before the pool: against the previous model, on its own, or none
/// (today's rows are the ones the model was trained on).
enum Judged {
    Compared(compare::Compared),
    Alone(Option<Assessment>),
    InSample,
}

/// One post-deploy check. `Some` when the cycle moves on (rolled back).
async fn check(
    ctx: &StepContext,
    champion: &ModelVersion,
    started: chrono::DateTime<chrono::Utc>,
    pool: &mut compare::Pool,
) -> Result<Option<StepResult>, StepError> {
    let previous = ctx.store().alias(&ctx.cycle.pipeline, "previous").await?;
    let baseline = baseline(ctx, previous.as_ref(), champion);
    let a = assess(ctx, champion, previous.as_ref(), baseline, started, pool).await;
    // What the check judged on: today's window, or the live metric at this instant.
    let evidence = (a.current.is_some() && a.baseline.is_some()).then(|| {
        if ctx.pipeline.performance.source == PerformanceSource::Prometheus {
            ctx.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        } else {
            ctx.pipeline.schedule.local_date(ctx.now())
        }
    });
    ctx.metrics().record_performance(&ctx.cycle.pipeline, &a);
    let line = format!("v{}: {}", champion.version, a.detail);
    info!(
        pipeline = ctx.cycle.pipeline,
        cycle = ctx.cycle.id,
        "watch check: {line}"
    );
    ctx.event(EventKind::WatchCheck, &line).await?;
    if let Some(window) = evidence {
        ctx.event(EventKind::WatchEvidence, &window).await?;
    }
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
                RollbackCause::Watch(ctx.cycle.id),
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
                        "{why}; rolled back to v{} and froze the pipeline (run `retraind resume {pipeline} --actor \"$(whoami)\"` after a look)",
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
        format!(
            "run `retraind rollback {pipeline} --actor \"$(whoami)\"` to restore the previous version"
        )
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

    /// A pipeline that estimates watches on the estimate when the day's window has no
    /// labels: v2 (trained on the drifted world) is estimated on drifted rows near its own
    /// decision boundary, unsure there, its band wholly below the watch's threshold; two
    /// such checks roll it back.
    #[tokio::test]
    async fn an_unlabelled_watch_judges_the_estimate() {
        let kit = Kit::with(
            "[pipeline.deploy]\nwatch_for = \"6s\"\nwatch_interval = \"1s\"\nfailure_limit = 2\n[pipeline.guards]\ncooldown = \"0s\"\nmax_deploys = [\"5/1h\"]\nmax_retrains = [\"5/1h\"]\n[pipeline.performance]\nsource = \"estimated\"\n",
        )
        .await;
        kit.write_today(Kit::NORMAL, 1000);
        kit.deploy_first_model().await;
        kit.write_today(Kit::DRIFTED, 1000);
        let ctx = kit.run_until(CycleState::Watching).await;
        let (unlabelled, _) = kit.unsure_window(Kit::DRIFTED, 400);
        kit.write_today_text(&unlabelled);
        let (to, reason, _) = kit.advanced(super::run(&ctx).await.unwrap());
        let checks = kit.events(ctx.cycle.id, "watch_check").await;
        assert_eq!(to, CycleState::RolledBack, "{reason}: {checks:?}");
        assert_eq!(checks.len(), 2, "{checks:?}");
        assert!(
            checks
                .iter()
                .all(|c| c.starts_with("v2: estimated accuracy")
                    && c.ends_with("degraded: the whole band is past the threshold")),
            "{checks:?}"
        );
    }

    /// The window a model was trained and evaluated on is no evidence about it: a watch that
    /// sees nothing else cannot judge, is stretched, and after three windows freezes the
    /// pipeline and asks a human instead of calling the model good.
    #[tokio::test]
    async fn the_training_window_is_not_evidence() {
        let kit = Kit::with(
            "[pipeline.deploy]\nwatch_for = \"1s\"\nwatch_interval = \"200ms\"\nfailure_limit = 2\n",
        )
        .await;
        kit.write_today(Kit::NORMAL, 600);
        let ctx = kit.run_until(CycleState::Watching).await;
        let (to, reason, update) = kit.advanced(super::run(&ctx).await.unwrap());
        assert_eq!(
            (to, update.outcome),
            (CycleState::Completed, Some(Outcome::Deployed))
        );
        assert!(
            reason.contains("watched for 3 windows but 0 of v1's"),
            "{reason}"
        );
        let checks = kit.events(ctx.cycle.id, "watch_check").await;
        assert!(
            checks
                .iter()
                .all(|c| c.contains("the one v1 was trained and evaluated on")),
            "{checks:?}"
        );
        assert!(kit.store().holds("p").await.unwrap().frozen.is_some());
    }
}
