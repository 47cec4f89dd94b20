//! `decided`: act on the decision. A retrain asks the runaway guards first (budget,
//! cooldown, freeze, breaker); a blocked retrain completes the cycle `blocked` with the
//! guard's reason. No retrain completes it; bad data or too little data skips it.

use super::StepResult;
use crate::cycle::{CycleState, Outcome};
use crate::decision::Verdict;
use crate::engine::{StepContext, StepError, history, notices};
use crate::guards;
use crate::records::EventKind;
use crate::store::CycleUpdate;

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let decision = ctx
        .cycle
        .decision
        .as_ref()
        .ok_or_else(|| StepError::Invalid("cycle has no recorded decision".into()))?;
    let reason = decision.reasons.join("; ");
    Ok(match decision.verdict {
        Verdict::Retrain => return retrain(ctx, &reason).await,
        Verdict::NoRetrain => ctx.to(
            CycleState::Completed,
            reason,
            CycleUpdate::outcome(Outcome::NoRetrain),
        ),
        Verdict::QualityFailed => ctx.to(
            CycleState::Skipped,
            reason,
            CycleUpdate::outcome(Outcome::QualityFailed),
        ),
        Verdict::InsufficientData => ctx.to(CycleState::Skipped, reason, CycleUpdate::default()),
    })
}

/// Train, unless a guard says no. Retrains of a live model count against the budget.
async fn retrain(ctx: &StepContext, reason: &str) -> Result<StepResult, StepError> {
    let p = &ctx.pipeline;
    let has_champion = ctx.champion().await?.is_some();
    let h = history::read(&ctx.shared, &p.name, &p.guards).await?;
    if let Err(b) = guards::retrain_allowed(&h, has_champion, ctx.now(), &p.guards) {
        notices::blocked(&ctx.shared, &p.name, Some(ctx.cycle.id), &b).await?;
        return Ok(ctx.to(
            CycleState::Completed,
            format!("retrain called for ({reason}) but {b}"),
            CycleUpdate::outcome(Outcome::Blocked),
        ));
    }
    if has_champion {
        // Counted before the transition: a crash in between over-counts (safe).
        ctx.event(EventKind::RetrainStarted, reason).await?;
    }
    Ok(ctx.to(
        CycleState::Training,
        "retraining on the newest labelled data",
        CycleUpdate::default(),
    ))
}

#[cfg(test)]
mod tests {
    use crate::cycle::{CycleState, Outcome};
    use crate::engine::testkit::Kit;

    /// A retrain of a live model beyond the budget completes the cycle `blocked` with the
    /// guard's reason and counts the block; within it, the retrain is counted and trains.
    #[tokio::test]
    async fn a_retrain_over_budget_is_blocked_and_counted() {
        let kit =
            Kit::with("[pipeline.guards]\nmax_retrains = [\"1/1h\"]\ncooldown = \"0s\"\n").await;
        kit.write_today(Kit::NORMAL, 400);
        kit.deploy_first_model().await;
        kit.write_today(Kit::DRIFTED, 400);
        let ctx = kit.run_until(CycleState::Decided).await;
        let (to, reason, _) = kit.advanced(super::run(&ctx).await.unwrap());
        assert_eq!(to, CycleState::Training, "{reason}");
        kit.finish(&ctx, CycleState::Failed).await;
        let ctx = kit.run_until(CycleState::Decided).await;
        let (to, reason, update) = kit.advanced(super::run(&ctx).await.unwrap());
        assert_eq!(
            (to, update.outcome),
            (CycleState::Completed, Some(Outcome::Blocked))
        );
        assert!(
            reason.contains("blocked by guard retrain_budget: 1 retrains in the last 1h"),
            "{reason}"
        );
        assert_eq!(
            kit.metric("retraind_guard_blocks_total{guard=\"retrain_budget\",pipeline=\"p\"}"),
            1.0
        );
    }
}
