//! The evaluation gate: a challenger is blessed only if its gate metric (accuracy for
//! classifiers, RMSE for regressors, or `gate.metric`) clears the absolute bound and is not
//! worse than the champion's on the same fresh holdout beyond the allowed margin, overall and
//! per slice. Direction-aware: "worse" is lower accuracy or higher error. Pure; the engine
//! scores the models and stores the result.

use serde::{Deserialize, Serialize};

use crate::performance::{self, Metric, Scored};

mod config;
pub use config::{GateConfig, RawGate};

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
    /// The metric judged (gate documents stored before it was configurable: accuracy).
    #[serde(default = "accuracy")]
    pub metric: Metric,
    #[serde(
        alias = "challenger_accuracy",
        deserialize_with = "crate::nan::or_null"
    )]
    pub challenger: f64,
    #[serde(alias = "champion_accuracy")]
    pub champion: Option<f64>,
    pub holdout_rows: usize,
    pub checks: Vec<Check>,
}

fn accuracy() -> Metric {
    Metric::Accuracy
}

impl GateResult {
    /// "blessed" or the failed checks, for logs and summaries.
    pub fn summary(&self) -> String {
        if self.blessed {
            return format!(
                "blessed ({} {:.3} on {} holdout rows)",
                self.metric.name(),
                self.challenger,
                self.holdout_rows
            );
        }
        let failed: Vec<&str> = self.failed().map(|c| c.detail.as_str()).collect();
        format!("rejected: {}", failed.join("; "))
    }

    /// The checks that did not pass.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Add a check decided elsewhere (a guard) and update the verdict.
    pub fn add(&mut self, check: Check) {
        self.blessed &= check.passed;
        self.checks.push(check);
    }
}

/// One metric of champion and challenger on the gate's holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub metric: String,
    pub champion: Option<f64>,
    #[serde(deserialize_with = "crate::nan::or_null")]
    pub challenger: f64,
}

/// One slice's gate metric for both models on the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceScore {
    pub column: String,
    pub value: String,
    pub rows: usize,
    pub challenger: f64,
    pub champion: f64,
}

/// What the gate judges: the challenger's gate metric, and the champion's on the same holdout.
#[derive(Debug, Clone, PartialEq)]
pub struct GateInput {
    pub metric: Metric,
    pub challenger: f64,
    pub champion: Option<f64>,
    /// A regressor's R² on the holdout (for `gate.min_r2`).
    pub r2: Option<f64>,
    pub holdout_rows: usize,
    pub slices: Vec<SliceScore>,
    pub model_size_mb: Option<f64>,
    pub latency_ms_per_1k: Option<f64>,
}

impl Default for GateInput {
    fn default() -> Self {
        GateInput {
            metric: Metric::Accuracy,
            challenger: 0.0,
            champion: None,
            r2: None,
            holdout_rows: 0,
            slices: Vec::new(),
            model_size_mb: None,
            latency_ms_per_1k: None,
        }
    }
}

/// `metric` of both models per slice: for each value of each `columns` entry with at least
/// `min_rows` holdout rows (`values[i]` is the column's value on holdout row i). Slices where
/// the metric is undefined (ROC AUC on one class) are left out.
pub fn slice_scores(
    metric: Metric,
    columns: &[(String, Vec<String>)],
    challenger: &Scored,
    champion: &Scored,
    min_rows: usize,
) -> Vec<SliceScore> {
    let mut out = Vec::new();
    for (column, values) in columns {
        let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, v) in values.iter().enumerate() {
            groups.entry(v.as_str()).or_default().push(i);
        }
        for (value, rows) in groups {
            if rows.len() < min_rows.max(1) {
                continue;
            }
            let of = |s: &Scored| {
                performance::compute(metric, s, Some(&rows))
                    .ok()
                    .map(|v| v.value)
                    .filter(|v| v.is_finite())
            };
            if let (Some(challenger), Some(champion)) = (of(challenger), of(champion)) {
                out.push(SliceScore {
                    column: column.clone(),
                    value: value.to_string(),
                    rows: rows.len(),
                    challenger,
                    champion,
                });
            }
        }
    }
    out
}

/// Whether `value` is within `absolute` and `relative` (each when set) of `reference`, in
/// `metric`'s direction.
fn within(
    metric: Metric,
    value: f64,
    reference: f64,
    absolute: Option<f64>,
    relative: Option<f64>,
) -> bool {
    let worse = metric.worse_by(value, reference);
    absolute.is_none_or(|a| worse <= a + 1e-12)
        && relative.is_none_or(|r| worse <= r * reference.abs() + 1e-12)
}

/// "allowed drop 0.0100" / "allowed increase 1.00%": a margin in the metric's direction.
fn margin(metric: Metric, absolute: Option<f64>, relative: Option<f64>) -> String {
    let word = if metric.higher_is_better() {
        "drop"
    } else {
        "increase"
    };
    let mut parts = Vec::new();
    if let Some(a) = absolute {
        parts.push(format!("allowed {word} {a:.4}"));
    }
    if let Some(r) = relative {
        parts.push(format!("allowed relative {word} {:.2}%", r * 100.0));
    }
    parts.join(", ")
}

/// Apply the gate.
pub fn evaluate(input: &GateInput, config: &GateConfig) -> GateResult {
    let metric = input.metric;
    let name = metric.name();
    let challenger = input.challenger;
    let mut checks = Vec::new();
    if metric.higher_is_better() {
        checks.push(Check {
            name: "min_accuracy".into(),
            passed: challenger >= config.min_accuracy,
            detail: format!("{name} {challenger:.4} vs floor {:.4}", config.min_accuracy),
        });
    } else if let Some(max) = config.max_error {
        checks.push(Check {
            name: "max_error".into(),
            passed: challenger <= max,
            detail: format!("{name} {challenger:.4} vs ceiling {max:.4}"),
        });
    }
    if !challenger.is_finite() && input.holdout_rows > 0 {
        checks.push(Check {
            name: "metric".into(),
            passed: false,
            detail: format!(
                "{name} could not be computed on the holdout (precision, recall and roc_auc need two classes or performance.positive_class)"
            ),
        });
    }
    if let (Some(min), Some(r2)) = (config.min_r2, input.r2)
        && input.holdout_rows > 0
    {
        checks.push(Check {
            name: "min_r2".into(),
            passed: r2 >= min,
            detail: format!("R² {r2:.4} vs floor {min:.4} (0 = no better than the mean)"),
        });
    }
    if let Some(champ) = input.champion {
        if let Some(abs) = config.max_drop {
            checks.push(Check {
                name: "not_worse_than_champion".into(),
                passed: within(metric, challenger, champ, Some(abs), None),
                detail: format!(
                    "{name} {challenger:.4} vs champion {champ:.4} ({})",
                    margin(metric, Some(abs), None)
                ),
            });
        }
        if let Some(rel) = config.max_drop_relative {
            checks.push(Check {
                name: "not_worse_than_champion_relative".into(),
                passed: within(metric, challenger, champ, None, Some(rel)),
                detail: format!(
                    "{name} {challenger:.4} vs champion {champ:.4} ({})",
                    margin(metric, None, Some(rel))
                ),
            });
        }
    }
    for s in &input.slices {
        let (abs, rel) = (config.slice_max_drop, config.slice_max_drop_relative);
        checks.push(Check {
            name: "slice".into(),
            passed: within(metric, s.challenger, s.champion, abs, rel),
            detail: format!(
                "slice {}={} ({} rows): {name} {:.4} vs champion {:.4} ({})",
                s.column,
                s.value,
                s.rows,
                s.challenger,
                s.champion,
                margin(metric, abs, rel)
            ),
        });
    }
    if let (Some(max), Some(size)) = (config.max_model_size_mb, input.model_size_mb) {
        checks.push(Check {
            name: "max_model_size".into(),
            passed: size <= max,
            detail: format!("model size {size:.3} MB vs limit {max:.3} MB"),
        });
    }
    if let Some(max) = config.max_latency_ms_per_1k {
        let (passed, detail) = match input.latency_ms_per_1k {
            Some(ms) => (
                ms <= max,
                format!("inference {ms:.2} ms per 1k rows vs limit {max:.2} ms"),
            ),
            None => (false, "inference latency could not be measured".to_string()),
        };
        checks.push(Check {
            name: "max_latency".into(),
            passed,
            detail,
        });
    }
    if input.holdout_rows == 0 {
        checks.push(Check {
            name: "holdout".into(),
            passed: false,
            detail: "empty holdout: the current window has no labelled rows to evaluate on".into(),
        });
    }
    GateResult {
        blessed: checks.iter().all(|c| c.passed),
        metric,
        challenger,
        champion: input.champion,
        holdout_rows: input.holdout_rows,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GateConfig {
        GateConfig {
            min_accuracy: 0.9,
            max_drop: Some(0.01),
            holdout_share: 0.3,
            ..GateConfig::default()
        }
    }

    fn run(challenger: f64, champion: Option<f64>, rows: usize) -> GateResult {
        let input = GateInput {
            challenger,
            champion,
            holdout_rows: rows,
            ..GateInput::default()
        };
        evaluate(&input, &cfg())
    }

    #[test]
    fn floor_and_champion_comparison() {
        assert!(run(0.95, None, 100).blessed);
        let r = run(0.85, None, 100);
        assert!(!r.blessed);
        assert!(r.summary().contains("floor 0.9000"), "{}", r.summary());
        assert!(run(0.945, Some(0.95), 100).blessed);
        let r = run(0.93, Some(0.95), 100);
        assert!(
            !r.blessed && r.summary().contains("champion 0.9500"),
            "{}",
            r.summary()
        );
        assert!(!run(0.95, None, 0).blessed);
    }

    #[test]
    fn relative_margin_slices_size_and_latency() {
        let labels: Vec<String> = ["a", "a", "b", "b", "b", "a"].map(String::from).to_vec();
        let seg: Vec<String> = ["x", "x", "x", "y", "y", "y"].map(String::from).to_vec();
        let scored = |predicted: Vec<String>| Scored {
            labels: labels.clone(),
            predicted,
            ..Scored::default()
        };
        let champ = scored(labels.clone());
        let mut miss = labels.clone();
        miss[3] = "a".into(); // one miss in segment y
        let chall = scored(miss);
        let slices = slice_scores(
            Metric::Accuracy,
            &[("segment".into(), seg)],
            &chall,
            &champ,
            3,
        );
        assert_eq!(slices.len(), 2);
        assert_eq!((slices[1].value.as_str(), slices[1].rows), ("y", 3));
        assert!((slices[1].challenger - 2.0 / 3.0).abs() < 1e-12);
        let config = GateConfig {
            max_drop_relative: Some(0.01),
            slice_max_drop: Some(0.05),
            max_model_size_mb: Some(1.0),
            max_latency_ms_per_1k: Some(10.0),
            ..cfg()
        };
        let input = GateInput {
            challenger: 0.95,
            champion: Some(0.955),
            holdout_rows: 6,
            slices,
            model_size_mb: Some(2.5),
            latency_ms_per_1k: Some(12.0),
            ..GateInput::default()
        };
        let r = evaluate(&input, &config);
        let failed: Vec<&str> = r.failed().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["slice", "max_model_size", "max_latency"]);
        assert!(
            r.summary()
                .contains("slice segment=y (3 rows): accuracy 0.6667 vs champion 1.0000"),
            "{}",
            r.summary()
        );
        assert!(
            r.summary()
                .contains("model size 2.500 MB vs limit 1.000 MB")
        );
        let mut ok = evaluate(
            &GateInput {
                challenger: 0.95,
                champion: Some(0.955),
                holdout_rows: 6,
                latency_ms_per_1k: Some(5.0),
                ..GateInput::default()
            },
            &config,
        );
        assert!(ok.blessed, "{}", ok.summary());
        ok.add(Check {
            name: "monotonic_quality".into(),
            passed: false,
            detail: "below v3".into(),
        });
        assert!(!ok.blessed && ok.summary().contains("below v3"));
        let strict = GateConfig {
            max_drop_relative: Some(0.001),
            ..config
        };
        assert!(
            !evaluate(
                &GateInput {
                    challenger: 0.95,
                    champion: Some(0.955),
                    holdout_rows: 6,
                    ..GateInput::default()
                },
                &strict
            )
            .blessed
        );
    }

    /// For an error metric "worse" is higher: the ceiling, the champion margin (absolute and
    /// relative, on RMSE) and per-slice RMSE from numeric predictions.
    #[test]
    fn error_metrics_are_judged_upwards() {
        let config = GateConfig {
            metric: Metric::Rmse,
            max_error: Some(2.0),
            min_r2: Some(0.0),
            max_drop: None,
            max_drop_relative: Some(0.01),
            slice_max_drop: None,
            slice_max_drop_relative: Some(0.10),
            ..cfg()
        };
        let run = |challenger: f64, champion: Option<f64>| {
            evaluate(
                &GateInput {
                    metric: Metric::Rmse,
                    challenger,
                    champion,
                    holdout_rows: 100,
                    ..GateInput::default()
                },
                &config,
            )
        };
        // Lower error than the champion: blessed, whatever min_accuracy says.
        assert!(run(1.0, Some(1.2)).blessed);
        // Above the ceiling.
        let r = run(2.5, None);
        assert!(!r.blessed && r.summary().contains("rmse 2.5000 vs ceiling 2.0000"));
        // By default the margin is relative (the target's scale is unknown): 0.5 % worse
        // passes the 1 %…
        let input = GateInput {
            metric: Metric::Rmse,
            challenger: 1.005,
            champion: Some(1.0),
            holdout_rows: 100,
            ..GateInput::default()
        };
        let r = evaluate(&input, &config);
        assert!(r.blessed, "{}", r.summary());
        assert_eq!(
            r.checks
                .iter()
                .filter(|c| c.name.starts_with("not_worse"))
                .count(),
            1
        );
        // …unless an absolute margin in the target's units is configured too.
        let strict = GateConfig {
            max_drop: Some(0.0),
            ..config.clone()
        };
        let r = evaluate(&input, &strict);
        let failed: Vec<&str> = r.failed().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, vec!["not_worse_than_champion"], "{}", r.summary());
        assert!(
            r.summary().contains("allowed increase 0.0000"),
            "{}",
            r.summary()
        );
        let loose = GateConfig {
            max_drop: Some(0.01),
            ..config.clone()
        };
        assert!(evaluate(&input, &loose).blessed);
        // A regressor no better than the mean (R² < 0) is refused even without a champion.
        let r = evaluate(
            &GateInput {
                r2: Some(-0.1),
                champion: None,
                ..input.clone()
            },
            &config,
        );
        assert!(
            !r.blessed && r.summary().contains("R² -0.1000 vs floor 0.0000"),
            "{}",
            r.summary()
        );
        // 2 % worse fails the relative margin.
        assert!(
            !evaluate(
                &GateInput {
                    challenger: 1.02,
                    ..input.clone()
                },
                &loose
            )
            .blessed
        );

        // Per-slice RMSE: segment y gets 50 % worse for the challenger.
        let labels: Vec<String> = ["1", "2", "3", "4", "5", "6"].map(String::from).to_vec();
        let seg: Vec<String> = ["x", "x", "x", "y", "y", "y"].map(String::from).to_vec();
        let scored = |p: [&str; 6]| Scored {
            labels: labels.clone(),
            predicted: p.map(String::from).to_vec(),
            ..Scored::default()
        };
        let champ = scored(["1.5", "2.5", "3.5", "4.5", "5.5", "6.5"]);
        let chall = scored(["1.5", "2.5", "3.5", "4.75", "5.75", "6.75"]);
        let slices = slice_scores(Metric::Rmse, &[("segment".into(), seg)], &chall, &champ, 3);
        assert_eq!(slices.len(), 2);
        assert!((slices[0].challenger - 0.5).abs() < 1e-12);
        assert!(
            (slices[1].challenger - 0.75).abs() < 1e-12 && (slices[1].champion - 0.5).abs() < 1e-12
        );
        let r = evaluate(&GateInput { slices, ..input }, &config);
        assert!(r.summary().contains("slice segment=y (3 rows): rmse 0.7500 vs champion 0.5000 (allowed relative increase 10.00%)"), "{}", r.summary());
        assert!(
            r.checks
                .iter()
                .filter(|c| c.name == "slice")
                .filter(|c| c.passed)
                .count()
                == 1
        );
    }

    /// Gate documents stored before the metric was configurable still load.
    #[test]
    fn old_gate_documents_load() {
        let old = serde_json::json!({"blessed": true, "challenger_accuracy": 0.95, "champion_accuracy": null, "holdout_rows": 10, "checks": []});
        let r: GateResult = serde_json::from_value(old).unwrap();
        assert_eq!((r.metric, r.challenger), (Metric::Accuracy, 0.95));
    }
}
