//! The cycle state machine: states, outcomes, triggers and which transitions are legal.
//! Pure logic; the [`crate::engine`] persists and drives it.
//!
//! A cycle is one pass of a pipeline's loop (DESIGN.md): scheduled → loading → checking →
//! decided → training → trained → evaluating → awaiting_approval → deploying → watching →
//! completed, with the terminal exits failed / rejected / rolled_back / skipped. Every state
//! is written to the store before its step's side effect starts and the next state after the
//! effect is confirmed, so a restart resumes the step of the stored state.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a cycle stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CycleState {
    Scheduled,
    Loading,
    Checking,
    Decided,
    Training,
    Trained,
    Evaluating,
    AwaitingApproval,
    Deploying,
    Watching,
    Completed,
    Failed,
    Rejected,
    RolledBack,
    Skipped,
}

impl CycleState {
    pub const ALL: [CycleState; 15] = [
        CycleState::Scheduled,
        CycleState::Loading,
        CycleState::Checking,
        CycleState::Decided,
        CycleState::Training,
        CycleState::Trained,
        CycleState::Evaluating,
        CycleState::AwaitingApproval,
        CycleState::Deploying,
        CycleState::Watching,
        CycleState::Completed,
        CycleState::Failed,
        CycleState::Rejected,
        CycleState::RolledBack,
        CycleState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CycleState::Scheduled => "scheduled",
            CycleState::Loading => "loading",
            CycleState::Checking => "checking",
            CycleState::Decided => "decided",
            CycleState::Training => "training",
            CycleState::Trained => "trained",
            CycleState::Evaluating => "evaluating",
            CycleState::AwaitingApproval => "awaiting_approval",
            CycleState::Deploying => "deploying",
            CycleState::Watching => "watching",
            CycleState::Completed => "completed",
            CycleState::Failed => "failed",
            CycleState::Rejected => "rejected",
            CycleState::RolledBack => "rolled_back",
            CycleState::Skipped => "skipped",
        }
    }

    /// Terminal states end the cycle; nothing resumes them.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CycleState::Completed
                | CycleState::Failed
                | CycleState::Rejected
                | CycleState::RolledBack
                | CycleState::Skipped
        )
    }

    /// Whether `self → to` is a legal transition. Any live state may fail (bad input, step
    /// error); the rest follows the loop.
    pub fn can_go_to(self, to: CycleState) -> bool {
        use CycleState::*;
        if self.is_terminal() {
            return false;
        }
        if to == Failed {
            return true;
        }
        matches!(
            (self, to),
            (Scheduled, Loading)
                | (Loading, Checking)
                | (Loading, Skipped)
                | (Checking, Decided)
                | (Decided, Training)
                | (Decided, Completed)
                | (Decided, Skipped)
                | (Training, Trained)
                | (Trained, Evaluating)
                | (Evaluating, AwaitingApproval)
                | (Evaluating, Rejected)
                | (AwaitingApproval, Deploying)
                | (AwaitingApproval, Rejected)
                | (Deploying, Watching)
                | (Watching, Completed)
                | (Watching, RolledBack)
        )
    }
}

impl fmt::Display for CycleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name read back from the store that no version of retraind wrote.
#[derive(Debug, thiserror::Error)]
#[error("unknown cycle state `{0}` in the store (written by a newer retraind?)")]
pub struct UnknownState(pub String);

impl FromStr for CycleState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CycleState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// How a finished cycle ended, for `retraind_cycles_total{outcome}` and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Checked; nothing called for a retrain.
    NoRetrain,
    /// A new model was deployed and survived its watch window.
    Deployed,
    /// The candidate failed the gate, or a human rejected it, or the approval expired.
    Rejected,
    /// The deployed model was rolled back during its watch window.
    RolledBack,
    /// Not enough data to decide.
    Skipped,
    /// The current window failed the data quality gate; nothing was trained on it.
    QualityFailed,
    /// A step failed; the reason is stored.
    Failed,
    /// A retrain was called for, but a runaway guard (budget, cooldown, freeze, breaker)
    /// blocked it; the guard's reason is stored.
    Blocked,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::NoRetrain,
        Outcome::Deployed,
        Outcome::Rejected,
        Outcome::RolledBack,
        Outcome::Skipped,
        Outcome::QualityFailed,
        Outcome::Failed,
        Outcome::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::NoRetrain => "no_retrain",
            Outcome::Deployed => "deployed",
            Outcome::Rejected => "rejected",
            Outcome::RolledBack => "rolled_back",
            Outcome::Skipped => "skipped",
            Outcome::QualityFailed => "quality_failed",
            Outcome::Failed => "failed",
            Outcome::Blocked => "blocked",
        }
    }

    /// The outcome a terminal state implies; `Completed` needs the decision to tell
    /// "deployed" from "no retrain".
    pub fn of_terminal(state: CycleState, deployed: bool) -> Option<Outcome> {
        Some(match state {
            CycleState::Completed if deployed => Outcome::Deployed,
            CycleState::Completed => Outcome::NoRetrain,
            CycleState::Failed => Outcome::Failed,
            CycleState::Rejected => Outcome::Rejected,
            CycleState::RolledBack => Outcome::RolledBack,
            CycleState::Skipped => Outcome::Skipped,
            _ => return None,
        })
    }
}

impl FromStr for Outcome {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Outcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// What started a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// The cron schedule fired.
    Scheduled,
    /// The daemon was down when the schedule fired; run once on start.
    CatchUp,
    /// `retraind trigger`, the API, or the demo.
    Manual,
}

impl TriggerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Scheduled => "scheduled",
            TriggerKind::CatchUp => "catch_up",
            TriggerKind::Manual => "manual",
        }
    }
}

impl FromStr for TriggerKind {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            TriggerKind::Scheduled,
            TriggerKind::CatchUp,
            TriggerKind::Manual,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in CycleState::ALL {
            assert_eq!(s.as_str().parse::<CycleState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
        }
        assert!("exploded".parse::<CycleState>().is_err());
    }

    #[test]
    fn the_happy_path_is_legal_and_terminal_states_are_final() {
        use CycleState::*;
        let path = [
            Scheduled,
            Loading,
            Checking,
            Decided,
            Training,
            Trained,
            Evaluating,
            AwaitingApproval,
            Deploying,
            Watching,
            Completed,
        ];
        for w in path.windows(2) {
            assert!(w[0].can_go_to(w[1]), "{} -> {}", w[0], w[1]);
        }
        for t in CycleState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in CycleState::ALL {
                assert!(!t.can_go_to(to), "{t} -> {to}");
            }
        }
        // No skipping the gate or the approval.
        assert!(!Trained.can_go_to(Deploying));
        assert!(!Evaluating.can_go_to(Deploying));
        assert!(!Decided.can_go_to(Deploying));
    }
}
