//! A person's decision on a cycle awaiting approval, from the CLI, the API, Slack or the
//! signed webhook: the approver must be on the pipeline's list, the request must not have
//! expired, and each approver decides once.

use tracing::info;

use crate::approval::{self, ApprovalDecision, ApprovalRow, Approver, Recorded, Settlement};
use crate::cycle::CycleState;
use crate::engine::{Engine, EngineError};
use crate::metrics::Metrics;
use crate::records::EventKind;

impl Engine {
    /// Record a decision on a cycle awaiting approval. Idempotent per approver. Only a
    /// Slack click (`channel` "slack") needs the pipeline's list to name its user; an empty
    /// list admits anyone the API admits. `signed` is the id of the signed request (Slack's
    /// signature, a webhook-id) that carries the decision: it is remembered in the decision's
    /// own transaction, so a retry after a failure that recorded nothing is taken and a
    /// replay of a decision that was recorded is refused.
    pub async fn decide(
        &self,
        id: i64,
        who: &Approver,
        channel: &str,
        verdict: ApprovalDecision,
        reason: &str,
        signed: Option<&str>,
    ) -> Result<Recorded, EngineError> {
        let shared = self.shared();
        // A replay is refused whatever became of the cycle since (checked again, race-free,
        // in the decision's transaction).
        if let Some(signed) = signed
            && shared.store.seen_request(channel, signed).await?
        {
            return Err(EngineError::Replayed(channel.to_string()));
        }
        let c = shared
            .store
            .cycle(id)
            .await?
            .ok_or(EngineError::UnknownCycle(id))?;
        let config = self.config().await;
        let p = config.pipeline(&c.pipeline);
        let required = p.map(|p| p.approval.required).unwrap_or(1);
        if c.state != CycleState::AwaitingApproval {
            let approvals = shared.store.approvals(id).await?;
            let ended = approval::settle(&approvals, required, c.deadline_at, c.finished_at);
            if c.state == CycleState::Rejected && ended == Settlement::Expired {
                return Err(EngineError::Expired(id));
            }
            return Err(EngineError::NotAwaitingApproval { id, state: c.state });
        }
        if c.deadline_at.is_some_and(|d| d <= shared.now()) {
            return Err(EngineError::Expired(id));
        }
        if let Some(p) = p
            && !approval::allowed(&p.approval.approvers, who, channel != "slack")
        {
            return Err(EngineError::NotAnApprover {
                approver: who.name.clone(),
                pipeline: c.pipeline.clone(),
            });
        }
        let row = ApprovalRow {
            approver: who.name.clone(),
            channel: channel.to_string(),
            decision: verdict,
            reason: reason.to_string(),
            at: shared.now(),
        };
        let recorded = shared
            .store
            .record_approval(id, &row, signed, |r| {
                approval::admit(r, &who.name, required)
            })
            .await?;
        if recorded == Recorded::Replayed {
            return Err(EngineError::Replayed(channel.to_string()));
        }
        if recorded == Recorded::New {
            shared
                .metrics
                .approval_decisions
                .with_label_values(&[
                    c.pipeline.as_str(),
                    verdict.as_str(),
                    Metrics::channel_label(channel),
                ])
                .inc();
            shared
                .event(
                    &c.pipeline,
                    Some(id),
                    EventKind::Approval,
                    &format!("{verdict} by {} via {channel}: {reason}", who.name),
                )
                .await?;
            info!(
                pipeline = c.pipeline,
                cycle = id,
                approver = who.name,
                channel,
                decision = verdict.as_str(),
                "approval decision recorded"
            );
        }
        shared.wake();
        Ok(recorded)
    }
}
