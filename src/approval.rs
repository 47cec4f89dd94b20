//! Approval: the decisions a human can make on a blessed candidate, and the channels that
//! carry an approval request to people. The engine records decisions in the store (one per
//! approver, idempotent) and announces a request through every configured channel; a channel
//! that fails is logged and retried on the next resume, and never counts as an approval.
//!
//! This build has the log channel (the request, with the exact CLI and API calls to answer it,
//! in the daemon's log and the cycle's event log). Slack and signed webhooks plug in here.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::cycle::UnknownState;

/// A human's decision on a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

impl ApprovalDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalDecision::Approve => "approve",
            ApprovalDecision::Reject => "reject",
        }
    }
}

impl fmt::Display for ApprovalDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalDecision {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approve" => Ok(ApprovalDecision::Approve),
            "reject" => Ok(ApprovalDecision::Reject),
            other => Err(UnknownState(other.to_string())),
        }
    }
}

/// What a channel tells people about a candidate waiting for them.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequest {
    pub pipeline: String,
    pub cycle: i64,
    pub version: i64,
    /// Why the retrain happened (the decision's reasons).
    pub trigger: String,
    /// The gate's summary (numbers included).
    pub gate: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a channel could not deliver a request.
#[derive(Debug, thiserror::Error)]
#[error("approval channel {channel}: {message}")]
pub struct ApprovalError {
    pub channel: &'static str,
    pub message: String,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way of asking people for a decision.
pub trait ApprovalChannel: Send + Sync {
    fn name(&self) -> &'static str;
    /// Deliver the request. Called once per request (and again after a restart if the
    /// daemon died before recording delivery).
    fn request<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), ApprovalError>>;
}

/// The request in the daemon's log, with the commands that answer it.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogChannel;

impl LogChannel {
    pub fn message(r: &ApprovalRequest) -> String {
        format!(
            "v{} of `{}` awaits approval until {} ({}; trigger: {}): run `retraind approve {} --approver NAME` or `retraind reject {} --approver NAME`, or POST /api/v1/cycles/{}/approve",
            r.version,
            r.pipeline,
            r.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.gate,
            r.trigger,
            r.cycle,
            r.cycle,
            r.cycle
        )
    }
}

impl ApprovalChannel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    fn request<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            info!(
                pipeline = request.pipeline,
                cycle = request.cycle,
                "{}",
                LogChannel::message(request)
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_and_the_log_message_says_how_to_answer() {
        for d in [ApprovalDecision::Approve, ApprovalDecision::Reject] {
            assert_eq!(d.as_str().parse::<ApprovalDecision>().unwrap(), d);
        }
        assert!("maybe".parse::<ApprovalDecision>().is_err());
        let r = ApprovalRequest {
            pipeline: "churn".into(),
            cycle: 7,
            version: 3,
            trigger: "data drift".into(),
            gate: "blessed".into(),
            expires_at: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let m = LogChannel::message(&r);
        assert!(m.contains("retraind approve 7 --approver NAME"), "{m}");
        assert!(m.contains("/api/v1/cycles/7/approve"), "{m}");
        assert!(m.contains("1970-01-01T00:00:00Z"), "{m}");
    }
}
