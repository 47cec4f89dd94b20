//! The decide step's policy: from a check's evidence to "retrain" or "no retrain", with the
//! reason a person reads. Pure; the engine persists the result.

use serde::{Deserialize, Serialize};

use crate::drift::DriftReport;
use crate::performance::Assessment;
use crate::quality::QualityReport;

/// What the decide step concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Retrain,
    NoRetrain,
    /// Not enough rows to conclude anything.
    InsufficientData,
    /// The current window failed the data quality gate.
    QualityFailed,
}

impl Verdict {
    /// The verdict as reports spell it (`no_retrain`).
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Retrain => "retrain",
            Verdict::NoRetrain => "no_retrain",
            Verdict::InsufficientData => "insufficient_data",
            Verdict::QualityFailed => "quality_failed",
        }
    }
}

/// The decision with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
}

/// Decide from the quality gate, the drift report, the champion's performance (when labels
/// and a champion exist), and whether a champion exists at all. Bad data never trains, not
/// even a first model. Drift retrains only when the previous checks (`previous_drift`,
/// newest first) make a streak of `required_streak` drifted checks with this one.
pub fn decide(
    quality: &QualityReport,
    drift: &DriftReport,
    performance: Option<&Assessment>,
    has_champion: bool,
    previous_drift: &[bool],
    required_streak: usize,
) -> Decision {
    let mut reasons = Vec::new();
    if !quality.passed {
        reasons.extend(quality.failures().map(|f| format!("data quality: {f}")));
        return Decision {
            verdict: Verdict::QualityFailed,
            reasons,
        };
    }
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
    // Drift on fewer consecutive checks than required is noted, not acted on.
    let drift_streak = 1 + previous_drift.iter().take_while(|d| **d).count();
    let drift_counts = drift.dataset.drifted && drift_streak >= required_streak.max(1);
    let degraded = performance.filter(|p| p.degraded());
    if drift_counts {
        let names: Vec<String> = drift
            .features
            .iter()
            .filter(|f| f.drifted)
            .map(|f| f.describe())
            .collect();
        if drift.dataset.drifted_features > 0 {
            reasons.push(format!(
                "data drift in {} of {} features: {}",
                drift.dataset.drifted_features,
                drift.features.len(),
                names.join(", ")
            ));
        }
        if let Some(m) = drift.multivariate.as_ref().and_then(|m| m.drifted()) {
            reasons.push(format!("multivariate drift: {}", m.describe()));
        }
    } else if drift.dataset.drifted {
        reasons.push(format!(
            "data drift on {drift_streak} of the {required_streak} consecutive checks drift.consecutive asks for; waiting"
        ));
    }
    if let Some(p) = degraded {
        reasons.push(format!("champion degraded: {}", p.detail));
    }
    if drift_counts || degraded.is_some() {
        return Decision {
            verdict: Verdict::Retrain,
            reasons,
        };
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "no drift ({} of {} features drifted) and no degradation",
            drift.dataset.drifted_features,
            drift.features.len()
        ));
    }
    Decision {
        verdict: Verdict::NoRetrain,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::DatasetDrift;
    use crate::stats::Correction;

    fn report(dataset_drift: bool, insufficient: bool) -> DriftReport {
        DriftReport {
            multivariate: None,
            features: vec![],
            dataset: DatasetDrift {
                drifted: dataset_drift,
                drifted_features: usize::from(dataset_drift),
                drifted_share: 0.0,
                correction: Correction::BenjaminiHochberg,
                critical_drifted: vec![],
            },
            insufficient_data: insufficient,
            alpha: 0.05,
        }
    }

    fn perf(degraded: bool) -> Assessment {
        use crate::performance::{Metric, Status, Test};
        Assessment {
            metric: Metric::Accuracy,
            status: if degraded {
                Status::Degraded
            } else {
                Status::Healthy
            },
            current: Some(if degraded { 0.8 } else { 0.94 }),
            baseline: Some(0.95),
            threshold: Some(0.9025),
            labels: 1000,
            test: Test::TwoProportionZ,
            p_value: Some(if degraded { 1e-9 } else { 0.2 }),
            detail: "accuracy ...".into(),
            estimated: None,
        }
    }

    #[test]
    fn verdicts() {
        let ok = QualityReport {
            passed: true,
            findings: vec![],
        };
        let verdict = |d: &DriftReport, p: Option<&Assessment>, champ: bool| {
            decide(&ok, d, p, champ, &[], 1).verdict
        };
        assert_eq!(
            verdict(&report(false, false), None, false),
            Verdict::Retrain
        );
        assert_eq!(
            verdict(&report(false, false), Some(&perf(false)), true),
            Verdict::NoRetrain
        );
        assert_eq!(verdict(&report(true, false), None, true), Verdict::Retrain);
        assert_eq!(
            verdict(&report(false, false), Some(&perf(true)), true),
            Verdict::Retrain
        );
        assert_eq!(
            verdict(&report(true, true), None, true),
            Verdict::InsufficientData
        );
        let d = decide(&ok, &report(true, false), Some(&perf(true)), true, &[], 1);
        assert_eq!(d.reasons.len(), 2, "{d:?}");
        let bad = QualityReport {
            passed: false,
            findings: vec![crate::quality::Finding {
                check: crate::quality::Check::NonFinite,
                column: Some("x".into()),
                severity: crate::quality::Severity::Fail,
                value: 1.0,
                threshold: 0.0,
                message: "`x` has 1 infinite value(s) in the current window".into(),
            }],
        };
        let d = decide(&bad, &report(true, false), None, false, &[], 1);
        assert_eq!(
            d.verdict,
            Verdict::QualityFailed,
            "bad data never trains, not even a first model"
        );
        assert_eq!(
            d.reasons,
            vec!["data quality: `x` has 1 infinite value(s) in the current window"]
        );
    }
}
