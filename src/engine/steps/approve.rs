//! `awaiting_approval`: ask people, and wait for their decision. The request's expiry is
//! stored on first entry; the request goes out through every channel that has not
//! delivered it yet (a failing channel is retried with backoff and never counts as an
//! approval); `approval.mode = "auto"` records the config's own approval. The decisions
//! settle the cycle ([`crate::approval::settle`]): a rejection rejects it, `required`
//! approvals deploy it — after the deploy guards are asked again — and expiry rejects it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::StepResult;
use crate::approval::{
    self, ApprovalChannel, ApprovalDecision, ApprovalMode, ApprovalRequest, ApprovalRow,
    LogChannel, Recorded, Settlement,
};
use crate::cycle::{CycleState, Outcome};
use crate::engine::{StepContext, StepError, history, notices};
use crate::guards;
use crate::records::EventKind;
use crate::store::{CycleRow, CycleUpdate};

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let p = &ctx.pipeline;
    ctx.metrics()
        .approvals_pending
        .with_label_values(&[&ctx.cycle.pipeline])
        .set(1);
    let cycle = with_deadline(ctx).await?;
    if p.approval.mode == ApprovalMode::Auto {
        auto_approve(ctx).await?;
    }
    // Channels that failed are retried with backoff until the request expires.
    let mut retry = Duration::from_secs(5);
    let mut next_delivery = ctx.now();
    loop {
        if !ctx.shared.is_leader() {
            return Err(StepError::Interrupted);
        }
        if ctx.now() >= next_delivery {
            let pending = announce(ctx, &cycle).await?;
            next_delivery = ctx.now()
                + if pending > 0 {
                    let wait = retry;
                    retry = (retry * 2).min(Duration::from_secs(300));
                    chrono::Duration::from_std(wait).unwrap_or_default()
                } else {
                    chrono::Duration::days(365)
                };
        }
        let deadline = cycle.deadline_at.unwrap_or_else(|| ctx.now());
        let approvals = ctx.store().approvals(ctx.cycle.id).await?;
        let settled = approval::settle(
            &approvals,
            p.approval.required,
            Some(deadline),
            Some(ctx.now()),
        );
        if let Some(result) = settled_result(ctx, settled).await? {
            return Ok(result);
        }
        let until = (deadline.min(next_delivery) - ctx.now())
            .to_std()
            .unwrap_or_default()
            .min(ctx.shared.clock.slice(Duration::from_secs(5)));
        ctx.shared.wait(until).await?;
    }
}

/// The cycle with its request's expiry: stored on first entry, then kept.
async fn with_deadline(ctx: &StepContext) -> Result<CycleRow, StepError> {
    if ctx.cycle.deadline_at.is_some() {
        return Ok(ctx.cycle.clone());
    }
    let expires = chrono::Duration::from_std(ctx.pipeline.approval.expires).unwrap_or_default();
    ctx.store()
        .set_deadline(ctx.cycle.id, ctx.now() + expires)
        .await?;
    ctx.store()
        .cycle(ctx.cycle.id)
        .await?
        .ok_or_else(|| StepError::Invalid("cycle vanished".into()))
}

/// `approval.mode = "auto"`: the configuration approves, once, on the record.
async fn auto_approve(ctx: &StepContext) -> Result<(), StepError> {
    let row = ApprovalRow {
        approver: "auto".into(),
        channel: "config".into(),
        decision: ApprovalDecision::Approve,
        reason: "approval.mode = \"auto\" (explicit opt-in for this pipeline)".into(),
        at: ctx.now(),
    };
    let recorded = ctx
        .store()
        .record_approval(ctx.cycle.id, &row, None, |r| approval::admit(r, "auto", 1))
        .await?;
    if recorded == Recorded::New {
        ctx.metrics()
            .approval_decisions
            .with_label_values(&[ctx.cycle.pipeline.as_str(), "approve", "config"])
            .inc();
        warn!(
            pipeline = ctx.cycle.pipeline,
            cycle = ctx.cycle.id,
            "auto-approved: approval.mode = \"auto\" for this pipeline"
        );
    }
    Ok(())
}

/// The step's result once the decisions settle the cycle; `None` while they do not.
async fn settled_result(
    ctx: &StepContext,
    settled: Settlement<'_>,
) -> Result<Option<StepResult>, StepError> {
    let rejected = |reason: String| {
        ctx.to(
            CycleState::Rejected,
            reason,
            CycleUpdate::outcome(Outcome::Rejected),
        )
    };
    Ok(Some(match settled {
        Settlement::Pending { .. } => return Ok(None),
        Settlement::Rejected(r) => rejected(format!(
            "rejected by {} via {}: {}",
            r.approver, r.channel, r.reason
        )),
        Settlement::Expired => {
            rejected("approval request expired without a decision (expired = rejected)".to_string())
        }
        Settlement::Approved(approved) => {
            let who: Vec<String> = approved
                .iter()
                .map(|a| format!("{} via {}", a.approver, a.channel))
                .collect();
            // The guards are asked again: time passed, and a freeze may have come.
            let p = &ctx.pipeline;
            let h = history::read(&ctx.shared, &p.name, &p.guards).await?;
            if let Err(b) = guards::deploy_allowed(&h, ctx.now(), &p.guards) {
                notices::blocked(&ctx.shared, &p.name, Some(ctx.cycle.id), &b).await?;
                rejected(format!("approved by {}, but {b}", who.join(", ")))
            } else {
                ctx.to(
                    CycleState::Deploying,
                    format!("approved by {}", who.join(", ")),
                    CycleUpdate::default(),
                )
            }
        }
    }))
}

/// The request as channels show it.
async fn request(ctx: &StepContext, cycle: &CycleRow) -> Result<ApprovalRequest, StepError> {
    let version = match cycle.candidate_version {
        Some(id) => ctx
            .store()
            .version(id)
            .await?
            .map(|v| v.version)
            .unwrap_or_default(),
        None => 0,
    };
    let champion_version = ctx.champion().await?.map(|v| v.version);
    let gate = cycle.gate.as_ref();
    Ok(ApprovalRequest {
        pipeline: cycle.pipeline.clone(),
        cycle: cycle.id,
        version,
        champion_version,
        trigger: cycle
            .decision
            .as_ref()
            .map(|d| d.reasons.join("; "))
            .unwrap_or_default(),
        gate: gate.map(|g| g.result.summary()).unwrap_or_default(),
        checks: gate.map(|g| g.result.checks.clone()).unwrap_or_default(),
        metrics: gate.map(|g| g.metrics.clone()).unwrap_or_default(),
        report_url: ctx
            .config()
            .server
            .public_url
            .as_ref()
            .map(|u| format!("{u}/reports/{}", cycle.id)),
        expires_at: cycle.deadline_at.unwrap_or_else(|| ctx.now()),
        slack_channel: ctx.pipeline.approval.slack_channel.clone(),
    })
}

/// Send the request through every channel that has not delivered it yet (delivery is
/// recorded per channel, so a restart does not post twice). A failing channel is logged
/// and recorded; it never approves anything. Returns how many channels still have to
/// deliver.
async fn announce(ctx: &StepContext, cycle: &CycleRow) -> Result<usize, StepError> {
    let events = ctx.store().events(cycle.id).await?;
    let delivered: HashSet<&str> = events
        .iter()
        .filter(|e| e.kind == EventKind::ApprovalDelivered)
        .map(|e| e.message.as_str())
        .collect();
    let todo: Vec<&Arc<dyn ApprovalChannel>> = ctx
        .parts
        .channels
        .iter()
        .filter(|ch| !delivered.contains(ch.name()))
        .collect();
    if todo.is_empty() {
        return Ok(0);
    }
    let request = request(ctx, cycle).await?;
    if delivered.is_empty() {
        let mode = match ctx.pipeline.approval.mode {
            ApprovalMode::Auto => "auto (explicit opt-in)",
            ApprovalMode::Manual => "manual",
        };
        ctx.event(
            EventKind::ApprovalRequested,
            &format!("mode {mode}: {}", LogChannel::message(&request)),
        )
        .await?;
    }
    let mut pending = 0;
    for channel in todo {
        match channel.request(&request).await {
            Ok(()) => {
                ctx.event(EventKind::ApprovalDelivered, channel.name())
                    .await?
            }
            Err(e) => {
                pending += 1;
                warn!(pipeline = cycle.pipeline, cycle = cycle.id, channel = channel.name(), error = %e, "approval request not delivered; will retry");
                ctx.event(EventKind::ApprovalChannelFailed, &e.to_string())
                    .await?;
            }
        }
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use crate::approval::{ApprovalDecision, Approver};
    use crate::cycle::CycleState;
    use crate::engine::testkit::Kit;

    /// A request goes out through every channel once; a decision by a listed approver
    /// settles it (the step returns the move to `deploying` with who approved), and a second
    /// click by the same person records nothing.
    #[tokio::test]
    async fn an_approval_through_the_api_moves_the_cycle_to_deploying() {
        let kit =
            Kit::with("[pipeline.approval]\nmode = \"manual\"\napprovers = [\"ann\"]\n").await;
        kit.write_today(Kit::NORMAL, 1000);
        let ctx = kit.run_until(CycleState::AwaitingApproval).await;
        let waiting = tokio::spawn({
            let kit_ctx = kit.context_of(ctx.cycle.id).await;
            async move { super::run(&kit_ctx).await }
        });
        kit.wait_for_event(ctx.cycle.id, "approval_delivered").await;
        let engine = kit.engine();
        let who = Approver::named("ann");
        let first = engine
            .decide(
                ctx.cycle.id,
                &who,
                "api",
                ApprovalDecision::Approve,
                "ok",
                None,
            )
            .await;
        assert_eq!(first.unwrap(), crate::approval::Recorded::New);
        let again = engine
            .decide(
                ctx.cycle.id,
                &who,
                "api",
                ApprovalDecision::Approve,
                "ok",
                None,
            )
            .await;
        assert_eq!(again.unwrap(), crate::approval::Recorded::Duplicate);
        let (to, reason, _) = kit.advanced(waiting.await.unwrap().unwrap());
        assert_eq!(
            (to, reason.as_str()),
            (CycleState::Deploying, "approved by ann via api")
        );
        let delivered = kit.events(ctx.cycle.id, "approval_delivered").await;
        assert_eq!(delivered, ["log"]);
    }
}
