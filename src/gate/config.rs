//! `[pipeline.gate]`: its raw shape, the defaults for each kind of gate metric (here and
//! nowhere else) and their validation.

use serde::Deserialize;

use crate::performance::{self, Metric, Task};
use crate::validate::Checker;

/// `[pipeline.gate]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawGate {
    pub metric: Option<String>,
    pub min_accuracy: Option<f64>,
    pub max_error: Option<f64>,
    pub min_r2: Option<f64>,
    pub max_drop: Option<f64>,
    pub max_drop_relative: Option<f64>,
    pub holdout_share: Option<f64>,
    pub slices: Option<Vec<String>>,
    pub slice_max_drop: Option<f64>,
    pub slice_max_drop_relative: Option<f64>,
    pub min_slice_rows: Option<i64>,
    pub max_model_size_mb: Option<f64>,
    pub max_latency_ms_per_1k: Option<f64>,
}

/// What the gate demands of a challenger.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// What the gate compares: accuracy for classifiers, RMSE for regressors by default.
    pub metric: Metric,
    /// Floor of the gate metric when higher is better (accuracy, F1, R² …).
    pub min_accuracy: f64,
    /// Ceiling of the gate metric when lower is better (RMSE, MAE), when set.
    pub max_error: Option<f64>,
    /// A regressor's floor on holdout R² (default 0: better than predicting the mean).
    pub min_r2: Option<f64>,
    /// Largest allowed worsening of the gate metric against the champion, in its units
    /// (unset when only a relative margin applies).
    pub max_drop: Option<f64>,
    /// Largest allowed relative worsening (0.01 = 1 %), when set.
    pub max_drop_relative: Option<f64>,
    pub holdout_share: f64,
    /// Categorical columns whose every value is a slice that must not regress.
    pub slices: Vec<String>,
    /// Largest allowed worsening per slice, in the metric's units / relative, when set.
    pub slice_max_drop: Option<f64>,
    pub slice_max_drop_relative: Option<f64>,
    pub min_slice_rows: usize,
    pub max_model_size_mb: Option<f64>,
    pub max_latency_ms_per_1k: Option<f64>,
}

impl Default for GateConfig {
    /// A classifier's gate on accuracy.
    fn default() -> Self {
        GateConfig::defaults(Metric::Accuracy, Task::Classification)
    }
}

impl GateConfig {
    /// The gate a pipeline of `task` gets on `metric` when it sets nothing else. Errors
    /// (RMSE, MAE) are in the target's units, so with no scale known their margins are
    /// relative (1 % overall, 10 % per slice); a regressor must beat the mean (R² ≥ 0).
    pub fn defaults(metric: Metric, task: Task) -> GateConfig {
        let error = !metric.higher_is_better();
        GateConfig {
            metric,
            min_accuracy: if error || metric == Metric::R2 {
                0.0
            } else {
                0.9
            },
            max_error: None,
            min_r2: (task == Task::Regression && metric != Metric::R2).then_some(0.0),
            max_drop: (!error).then_some(0.0),
            max_drop_relative: error.then_some(0.01),
            holdout_share: 0.3,
            slices: Vec::new(),
            slice_max_drop: (!error).then_some(0.05),
            slice_max_drop_relative: error.then_some(0.10),
            min_slice_rows: 30,
            max_model_size_mb: None,
            max_latency_ms_per_1k: None,
        }
    }

    /// Validate `raw` (the checker is at `pipeline[i].gate`). A margin set explicitly
    /// replaces the other kind's default (an absolute `max_drop` drops the relative 1 % of
    /// an error metric; a `max_drop_relative` drops a classifier's absolute 0).
    pub fn from_raw(raw: RawGate, task: Task, c: &mut Checker) -> GateConfig {
        let metric = performance::metric_for(c, "metric", &raw.metric, task, false);
        let d = GateConfig::defaults(metric, task);
        let error = !metric.higher_is_better();
        check_bound_kind(c, &raw, metric);
        // Margins are in the metric's units: a share of accuracy, any number >= 0 for errors.
        let tolerance = |c: &mut Checker, key: &str, raw: Option<f64>, default: f64| {
            if error {
                c.non_negative(key, raw, default)
            } else {
                c.fraction(key, raw, default, false)
            }
        };
        let relative = |c: &mut Checker, key: &str, v: Option<f64>| {
            v.map(|v| c.fraction(key, Some(v), 0.0, false))
        };
        GateConfig {
            metric,
            min_accuracy: min_accuracy(c, &raw, metric, d.min_accuracy),
            max_error: raw
                .max_error
                .map(|v| c.positive_number("max_error", Some(v), 1.0)),
            min_r2: min_r2(c, raw.min_r2, task, d.min_r2),
            max_drop: match (raw.max_drop, raw.max_drop_relative) {
                (Some(v), _) => Some(tolerance(c, "max_drop", Some(v), 0.0)),
                (None, None) => d.max_drop,
                (None, Some(_)) => None,
            },
            max_drop_relative: relative(
                c,
                "max_drop_relative",
                raw.max_drop_relative
                    .or(d.max_drop_relative.filter(|_| raw.max_drop.is_none())),
            ),
            holdout_share: c.fraction("holdout_share", raw.holdout_share, d.holdout_share, true),
            slices: raw.slices.unwrap_or_default(),
            slice_max_drop: match (raw.slice_max_drop, d.slice_max_drop) {
                (None, None) => None,
                (v, _) => Some(tolerance(c, "slice_max_drop", v, 0.05)),
            },
            slice_max_drop_relative: relative(
                c,
                "slice_max_drop_relative",
                raw.slice_max_drop_relative.or(d
                    .slice_max_drop_relative
                    .filter(|_| raw.slice_max_drop.is_none())),
            ),
            min_slice_rows: c.positive(
                "min_slice_rows",
                raw.min_slice_rows,
                d.min_slice_rows,
                1_000_000,
            ),
            max_model_size_mb: raw
                .max_model_size_mb
                .map(|v| c.positive_number("max_model_size_mb", Some(v), 100.0)),
            max_latency_ms_per_1k: raw
                .max_latency_ms_per_1k
                .map(|v| c.positive_number("max_latency_ms_per_1k", Some(v), 100.0)),
        }
    }
}

/// A floor for metrics where higher is better, a ceiling for errors: not the other way.
fn check_bound_kind(c: &mut Checker, raw: &RawGate, metric: Metric) {
    let error = !metric.higher_is_better();
    if !error && raw.max_error.is_some() {
        c.problem("max_error", format!("applies to error metrics (rmse, mae); the gate metric {} is bounded by gate.min_accuracy", metric.name()));
    }
    if error && raw.min_accuracy.is_some() {
        c.problem(
            "min_accuracy",
            format!(
                "applies to metrics where higher is better; bound {} with gate.max_error",
                metric.name()
            ),
        );
    }
}

/// The floor of the gate metric: a share for accuracy-like metrics, any number <= 1 for R².
fn min_accuracy(c: &mut Checker, raw: &RawGate, metric: Metric, default: f64) -> f64 {
    if metric != Metric::R2 {
        return c.fraction("min_accuracy", raw.min_accuracy, default, false);
    }
    let v = raw.min_accuracy.unwrap_or(default);
    if !(v.is_finite() && v <= 1.0) {
        c.problem(
            "min_accuracy",
            format!("{v} is out of range for r2; use a number <= 1 (default 0)"),
        );
    }
    v
}

/// `gate.min_r2`, which only a regressor has.
fn min_r2(c: &mut Checker, raw: Option<f64>, task: Task, default: Option<f64>) -> Option<f64> {
    match (raw, task) {
        (Some(v), Task::Regression) => {
            if !(v.is_finite() && v <= 1.0) {
                c.problem(
                    "min_r2",
                    format!("{v} is out of range; use a number <= 1 (default 0)"),
                );
            }
            Some(v)
        }
        (Some(_), Task::Classification) => {
            c.problem("min_r2", "applies to task = \"regression\"");
            None
        }
        (None, _) => default,
    }
}
