//! `[pipeline.approval]`: its raw shape, defaults (here and nowhere else) and validation.

use std::time::Duration;

use serde::Deserialize;

use crate::validate::Checker;

/// `[pipeline.approval]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawApproval {
    pub mode: Option<String>,
    pub expires: Option<String>,
    pub required: Option<i64>,
    pub approvers: Option<Vec<String>>,
    pub slack_channel: Option<String>,
}

/// Whether a person approves, or the config does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    Manual,
    /// An explicit, logged per-pipeline opt-in; still behind the gate and the guards.
    Auto,
}

/// Who must approve a blessed candidate, and until when.
#[derive(Debug, Clone)]
pub struct ApprovalConfig {
    pub mode: ApprovalMode,
    /// An unanswered request is rejected after this long.
    pub expires: Duration,
    /// Distinct approvers needed.
    pub required: usize,
    /// Who may decide (user names, `@name`, or Slack user ids); empty: anyone holding the
    /// API token (Slack decisions always need a listed approver).
    pub approvers: Vec<String>,
    /// Slack channel for this pipeline's requests (default: `[slack] channel`).
    pub slack_channel: Option<String>,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        ApprovalConfig {
            mode: ApprovalMode::Manual,
            expires: Duration::from_secs(72 * 3600),
            required: 1,
            approvers: Vec::new(),
            slack_channel: None,
        }
    }
}

impl ApprovalConfig {
    /// Validate `raw` (the checker is at `pipeline[i].approval`).
    pub fn from_raw(raw: RawApproval, c: &mut Checker) -> ApprovalConfig {
        let d = ApprovalConfig::default();
        ApprovalConfig {
            mode: c.choice(
                "mode",
                raw.mode.as_deref(),
                d.mode,
                |w| match w {
                    "manual" => Some(ApprovalMode::Manual),
                    "auto" => Some(ApprovalMode::Auto),
                    _ => None,
                },
                |w| format!("`{w}` is not a mode; use \"manual\" (default) or \"auto\" (explicit opt-in)"),
            ),
            expires: c.duration("expires", &raw.expires, d.expires),
            required: c.positive("required", raw.required, d.required, 10),
            approvers: raw.approvers.unwrap_or(d.approvers),
            slack_channel: raw.slack_channel,
        }
    }
}
