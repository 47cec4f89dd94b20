//! The evaluation gate: a challenger is blessed only if it clears the absolute accuracy floor
//! and is not worse than the champion (scored on the same fresh holdout) beyond the allowed
//! drop. Pure; the engine scores the models and stores the result.

use serde::{Deserialize, Serialize};

use crate::config::GateConfig;

/// One gate check with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The gate's verdict on a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub blessed: bool,
    pub challenger_accuracy: f64,
    pub champion_accuracy: Option<f64>,
    pub holdout_rows: usize,
    pub checks: Vec<Check>,
}

impl GateResult {
    /// "blessed" or the failed checks, for logs and summaries.
    pub fn summary(&self) -> String {
        if self.blessed {
            return format!(
                "blessed (accuracy {:.3} on {} holdout rows)",
                self.challenger_accuracy, self.holdout_rows
            );
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.detail.as_str())
            .collect();
        format!("rejected: {}", failed.join("; "))
    }
}

/// Apply the gate.
pub fn evaluate(
    challenger: f64,
    champion: Option<f64>,
    holdout_rows: usize,
    config: &GateConfig,
) -> GateResult {
    let mut checks = vec![Check {
        name: "min_accuracy".into(),
        passed: challenger >= config.min_accuracy,
        detail: format!(
            "accuracy {challenger:.4} vs floor {:.4}",
            config.min_accuracy
        ),
    }];
    if let Some(champ) = champion {
        let floor = champ - config.max_drop;
        checks.push(Check {
            name: "not_worse_than_champion".into(),
            passed: challenger >= floor,
            detail: format!(
                "accuracy {challenger:.4} vs champion {champ:.4} (allowed drop {:.4})",
                config.max_drop
            ),
        });
    }
    if holdout_rows == 0 {
        checks.push(Check {
            name: "holdout".into(),
            passed: false,
            detail: "empty holdout: the current window has no labelled rows to evaluate on".into(),
        });
    }
    GateResult {
        blessed: checks.iter().all(|c| c.passed),
        challenger_accuracy: challenger,
        champion_accuracy: champion,
        holdout_rows,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GateConfig {
        GateConfig {
            min_accuracy: 0.9,
            max_drop: 0.01,
            holdout_share: 0.3,
        }
    }

    #[test]
    fn floor_and_champion_comparison() {
        assert!(evaluate(0.95, None, 100, &cfg()).blessed);
        let r = evaluate(0.85, None, 100, &cfg());
        assert!(!r.blessed);
        assert!(r.summary().contains("floor 0.9000"), "{}", r.summary());
        assert!(evaluate(0.945, Some(0.95), 100, &cfg()).blessed);
        let r = evaluate(0.93, Some(0.95), 100, &cfg());
        assert!(
            !r.blessed && r.summary().contains("champion 0.9500"),
            "{}",
            r.summary()
        );
        assert!(!evaluate(0.95, None, 0, &cfg()).blessed);
    }
}
