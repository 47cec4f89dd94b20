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

/// One slice's accuracy for both models on the holdout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceScore {
    pub column: String,
    pub value: String,
    pub rows: usize,
    pub challenger: f64,
    pub champion: f64,
}

/// What the gate judges: the challenger's numbers, and the champion's on the same holdout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GateInput {
    pub challenger: f64,
    pub champion: Option<f64>,
    pub holdout_rows: usize,
    pub slices: Vec<SliceScore>,
    pub model_size_mb: Option<f64>,
    pub latency_ms_per_1k: Option<f64>,
}

/// Per-slice accuracy of both models: for each `columns` value with at least `min_rows`
/// holdout rows. `column_values[i]` holds the column's value per holdout row.
pub fn slice_scores(
    columns: &[(String, Vec<String>)],
    labels: &[String],
    challenger: &[String],
    champion: &[String],
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
            let acc = |pred: &[String]| {
                rows.iter()
                    .filter(|&&i| pred.get(i).is_some_and(|p| Some(p) == labels.get(i)))
                    .count() as f64
                    / rows.len() as f64
            };
            out.push(SliceScore {
                column: column.clone(),
                value: value.to_string(),
                rows: rows.len(),
                challenger: acc(challenger),
                champion: acc(champion),
            });
        }
    }
    out
}

impl GateResult {
    /// Add a check decided elsewhere (a guard) and update the verdict.
    pub fn add(&mut self, check: Check) {
        self.blessed &= check.passed;
        self.checks.push(check);
    }
}

/// Apply the gate.
pub fn evaluate(input: &GateInput, config: &GateConfig) -> GateResult {
    let challenger = input.challenger;
    let mut checks = vec![Check {
        name: "min_accuracy".into(),
        passed: challenger >= config.min_accuracy,
        detail: format!(
            "accuracy {challenger:.4} vs floor {:.4}",
            config.min_accuracy
        ),
    }];
    if let Some(champ) = input.champion {
        let floor = champ - config.max_drop;
        checks.push(Check {
            name: "not_worse_than_champion".into(),
            passed: challenger >= floor,
            detail: format!(
                "accuracy {challenger:.4} vs champion {champ:.4} (allowed drop {:.4})",
                config.max_drop
            ),
        });
        if let Some(rel) = config.max_drop_relative {
            checks.push(Check {
                name: "not_worse_than_champion_relative".into(),
                passed: challenger >= champ * (1.0 - rel),
                detail: format!(
                    "accuracy {challenger:.4} vs champion {champ:.4} (allowed relative drop {:.2}%)",
                    rel * 100.0
                ),
            });
        }
    }
    for s in &input.slices {
        let passed = s.challenger >= s.champion - config.slice_max_drop;
        checks.push(Check {
            name: "slice".into(),
            passed,
            detail: format!(
                "slice {}={} ({} rows): accuracy {:.4} vs champion {:.4} (allowed drop {:.4})",
                s.column, s.value, s.rows, s.challenger, s.champion, config.slice_max_drop
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
        challenger_accuracy: challenger,
        champion_accuracy: input.champion,
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
            max_drop: 0.01,
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
        let champ = labels.clone();
        let mut chall = labels.clone();
        chall[3] = "a".into(); // one miss in segment y
        let slices = slice_scores(&[("segment".into(), seg)], &labels, &chall, &champ, 3);
        assert_eq!(slices.len(), 2);
        assert_eq!((slices[1].value.as_str(), slices[1].rows), ("y", 3));
        assert!((slices[1].challenger - 2.0 / 3.0).abs() < 1e-12);
        let config = GateConfig {
            max_drop_relative: Some(0.01),
            slice_max_drop: 0.05,
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
        };
        let r = evaluate(&input, &config);
        let failed: Vec<&str> = r
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.name.as_str())
            .collect();
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
}
