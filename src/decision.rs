//! The decide step's policy: from a check's evidence to "retrain" or "no retrain", with the
//! reason a person reads. Pure; the engine persists the result.

use serde::{Deserialize, Serialize};

use crate::drift::DriftReport;

/// Performance of the champion on the labelled current window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    pub champion_version: i64,
    /// Accuracy the champion had on its own evaluation when it was blessed.
    pub baseline_accuracy: f64,
    /// Accuracy on the current window.
    pub current_accuracy: f64,
    pub drop: f64,
    pub degraded: bool,
}

/// What the decide step concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Retrain,
    NoRetrain,
    /// Not enough rows to conclude anything.
    InsufficientData,
}

/// The decision with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// Decide from the drift report, the champion's performance (when labels and a champion
/// exist), and whether a champion exists at all.
pub fn decide(
    drift: &DriftReport,
    performance: Option<&Performance>,
    has_champion: bool,
) -> Decision {
    let mut reasons = Vec::new();
    if !has_champion {
        reasons.push("no champion model yet: train the first one".to_string());
        return Decision {
            verdict: Verdict::Retrain,
            reasons,
        };
    }
    if drift.insufficient_data {
        reasons.push("too few rows in the reference or current window (data.min_rows)".to_string());
        return Decision {
            verdict: Verdict::InsufficientData,
            reasons,
        };
    }
    if drift.dataset_drift {
        let names: Vec<String> = drift
            .features
            .iter()
            .filter(|f| f.drifted)
            .map(|f| {
                format!(
                    "{} ({} {:.3}, p_adj {:.2e})",
                    f.feature, f.effect_method, f.effect, f.p_adjusted
                )
            })
            .collect();
        reasons.push(format!(
            "data drift in {} of {} features: {}",
            drift.drifted_features,
            drift.features.len(),
            names.join(", ")
        ));
    }
    if let Some(p) = performance.filter(|p| p.degraded) {
        reasons.push(format!(
            "accuracy of champion v{} fell from {:.3} to {:.3} (drop {:.3})",
            p.champion_version, p.baseline_accuracy, p.current_accuracy, p.drop
        ));
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "no drift ({} of {} features drifted) and no degradation",
            drift.drifted_features,
            drift.features.len()
        ));
        return Decision {
            verdict: Verdict::NoRetrain,
            reasons,
        };
    }
    Decision {
        verdict: Verdict::Retrain,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Correction;

    fn report(dataset_drift: bool, insufficient: bool) -> DriftReport {
        DriftReport {
            features: vec![],
            drifted_features: usize::from(dataset_drift),
            share_drifted: 0.0,
            dataset_drift,
            insufficient_data: insufficient,
            correction: Correction::BenjaminiHochberg,
            alpha: 0.05,
        }
    }

    fn perf(degraded: bool) -> Performance {
        Performance {
            champion_version: 1,
            baseline_accuracy: 0.95,
            current_accuracy: if degraded { 0.8 } else { 0.94 },
            drop: if degraded { 0.15 } else { 0.01 },
            degraded,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            decide(&report(false, false), None, false).verdict,
            Verdict::Retrain
        );
        assert_eq!(
            decide(&report(false, false), Some(&perf(false)), true).verdict,
            Verdict::NoRetrain
        );
        assert_eq!(
            decide(&report(true, false), None, true).verdict,
            Verdict::Retrain
        );
        assert_eq!(
            decide(&report(false, false), Some(&perf(true)), true).verdict,
            Verdict::Retrain
        );
        assert_eq!(
            decide(&report(true, true), None, true).verdict,
            Verdict::InsufficientData
        );
        let d = decide(&report(true, false), Some(&perf(true)), true);
        assert_eq!(d.reasons.len(), 2, "{d:?}");
    }
}
