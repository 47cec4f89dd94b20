//! Approval: the decisions a human can make on a blessed candidate, and the channels that
//! carry an approval request to people. The engine records decisions in the store (one per
//! approver, idempotent) and announces a request through every configured channel; a channel
//! that fails is logged and retried on the next resume, and never counts as an approval.
//!
//! Channels: the log (the request, with the exact CLI and API calls to answer it, in the
//! daemon's log and the cycle's event log), [`slack`] (Block Kit message with Approve/Reject
//! buttons, or an incoming webhook) and [`webhook`] (Standard Webhooks-signed JSON). Channels
//! also carry notices (rollbacks, freezes) to the same people.

mod config;
mod settle;
pub mod slack;
pub mod webhook;

pub use config::{ApprovalConfig, ApprovalMode, RawApproval};
pub use settle::{ApprovalRow, Approver, Recorded, Settlement, admit, allowed, settle};

use std::fmt;
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

pub use crate::gate::MetricRow;

/// What a channel tells people about a candidate waiting for them.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRequest {
    pub pipeline: String,
    pub cycle: i64,
    pub version: i64,
    /// Version number of the champion it would replace.
    pub champion_version: Option<i64>,
    /// Why the retrain happened (the decision's reasons: which features drifted, by how much).
    pub trigger: String,
    /// The gate's summary (numbers included).
    pub gate: String,
    /// Every gate check with its numbers.
    pub checks: Vec<crate::gate::Check>,
    /// Champion vs challenger on the same holdout.
    pub metrics: Vec<MetricRow>,
    /// The drift report, when `server.public_url` is set.
    pub report_url: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// `approval.slack_channel` of the pipeline.
    #[serde(skip)]
    pub slack_channel: Option<String>,
}

/// Something people must know that asks for no decision: a rollback, a freeze.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    pub pipeline: String,
    pub cycle: Option<i64>,
    /// `rollback`, `frozen`, `watch_failed`, ...
    pub kind: &'static str,
    pub text: String,
    pub at: DateTime<Utc>,
    #[serde(skip)]
    pub slack_channel: Option<String>,
}

/// Why a channel could not deliver a request.
#[derive(Debug, thiserror::Error)]
#[error("approval channel {channel}: {message}")]
pub struct ApprovalError {
    pub channel: &'static str,
    pub message: String,
}

/// A boxed future (the trait objects' return type), the same as the clock's.
pub use crate::clock::BoxFuture;

/// A way of asking people for a decision.
pub trait ApprovalChannel: Send + Sync {
    fn name(&self) -> &'static str;
    /// Deliver the request. Called once per request (and again after a restart if the
    /// daemon died before recording delivery).
    fn request<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), ApprovalError>>;

    /// Deliver a notice (best effort: failures are logged by the caller).
    fn notify<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, Result<(), ApprovalError>>;
}

/// The request in the daemon's log, with the commands that answer it.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogChannel;

impl LogChannel {
    pub fn message(r: &ApprovalRequest) -> String {
        format!(
            "v{} of `{}` awaits approval until {} ({}; trigger: {}): run `retraind approve {} --approver \"$(whoami)\"` or `retraind reject {} --approver \"$(whoami)\"`, or POST /api/v1/cycles/{}/approve",
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

    fn notify<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            tracing::warn!(
                pipeline = notice.pipeline,
                cycle = notice.cycle,
                kind = notice.kind,
                "{}",
                notice.text
            );
            Ok(())
        })
    }
}

/// One HTTP client for the channels: bounded time, no redirects to elsewhere.
pub(crate) fn http_client(timeout: std::time::Duration) -> reqwest::Client {
    crate::http::sender(timeout)
}

/// POST a JSON body with extra headers; any non-2xx is an error naming the status and the
/// start of the body (never the URL, which may hold a token).
pub(crate) async fn post_json(
    client: &reqwest::Client,
    channel: &'static str,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<serde_json::Value, ApprovalError> {
    crate::http::post_json(client, url, bearer, headers, body)
        .await
        .map_err(|e| ApprovalError {
            channel,
            message: match e {
                crate::http::HttpError::Transport(m) => format!("request failed: {m}"),
                crate::http::HttpError::Status { status, body } => {
                    let head: String = body.chars().take(200).collect();
                    format!("HTTP {} {}: {head}", status, reason(status))
                }
            },
        })
}

/// The reason phrase of an HTTP status ("500" → "Internal Server Error").
fn reason(status: u16) -> &'static str {
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// A request for tests of the channels.
#[cfg(test)]
pub(crate) fn sample_request() -> ApprovalRequest {
    ApprovalRequest {
        pipeline: "churn".into(),
        cycle: 7,
        version: 3,
        champion_version: Some(2),
        trigger: "data drift in 1 of 3 features: feature_a (ks p=1.2e-9)".into(),
        gate: "blessed".into(),
        checks: vec![crate::gate::Check {
            name: "min_accuracy".into(),
            passed: true,
            detail: "accuracy 0.9690 vs floor 0.9000".into(),
        }],
        metrics: vec![MetricRow {
            metric: "accuracy".into(),
            champion: Some(0.796),
            challenger: 0.969,
        }],
        report_url: Some("https://retraind.example.com/reports/7".into()),
        expires_at: DateTime::from_timestamp(0, 0).unwrap(),
        slack_channel: None,
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
        let r = sample_request();
        let m = LogChannel::message(&r);
        assert!(
            m.contains("retraind approve 7 --approver \"$(whoami)\""),
            "{m}"
        );
        assert!(m.contains("/api/v1/cycles/7/approve"), "{m}");
        assert!(m.contains("1970-01-01T00:00:00Z"), "{m}");
    }
}
