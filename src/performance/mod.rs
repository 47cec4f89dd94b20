//! Model performance and the degradation verdict: metrics computed from labelled rows
//! (accuracy, weighted F1, precision, recall, ROC AUC, RMSE, MAE, R², each matching
//! scikit-learn) for the two kinds of model a pipeline can have ([`Task`]),
//! and the rule that turns a current value and the champion's baseline into `degraded`.
//!
//! Degraded means two things at once, so a small label sample cannot cry wolf:
//! 1. the value is past the threshold: below `relative_threshold × baseline` for metrics where
//!    higher is better, above `baseline / relative_threshold` for errors (RMSE, MAE);
//! 2. the drop is significant at `alpha` given the number of labels: a one-sided pooled
//!    two-proportion z-test for proportions (accuracy; precision and recall of a binary
//!    positive class), against the baseline's own count when it is known, else a one-sample
//!    z-test; a seeded bootstrap of the current value for the others (weighted F1, ROC AUC,
//!    RMSE, MAE): p = (1 + #{replicates at least as good as the baseline}) / (B + 1).
//!
//! Fewer than `min_labels` labelled rows is `insufficient_labels`; a missing baseline or an
//! unreachable live metric is `unknown`. Neither is ever reported as healthy. Pure.

mod estimated;
pub mod paired;
pub use estimated::{Band, Estimated, assess_estimate};
use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

mod config;
pub use config::{
    PerformanceConfig, PerformanceSource, PrometheusQuery, RawPerformance, metric_for,
};

/// A performance metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    F1Weighted,
    Precision,
    Recall,
    RocAuc,
    Rmse,
    Mae,
    R2,
}

/// What a pipeline's model predicts: a class, or a number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    #[default]
    Classification,
    Regression,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::Classification => "classification",
            Task::Regression => "regression",
        }
    }

    /// The metric the gate and the daily check use unless configured: accuracy, or RMSE.
    pub fn default_metric(self) -> Metric {
        match self {
            Task::Classification => Metric::Accuracy,
            Task::Regression => Metric::Rmse,
        }
    }

    /// Whether `metric` applies to this task's models.
    pub fn fits(self, metric: Metric) -> bool {
        metric.is_regression() == (self == Task::Regression)
    }

    /// Every metric of this task that `s` allows, keyed by name, with `<name>_n` for the
    /// counts of proportions: what an evaluation stores as a model's baselines.
    pub fn metrics(self, s: &Scored) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for m in Metric::ALL.into_iter().filter(|m| self.fits(*m)) {
            if let Ok(v) = compute(m, s, None)
                && v.value.is_finite()
            {
                out.insert(m.name().to_string(), v.value);
                if let Some(n) = v.n {
                    out.insert(format!("{}_n", m.name()), n as f64);
                }
            }
        }
        out
    }
}

impl std::str::FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> Result<Task, String> {
        match s {
            "classification" => Ok(Task::Classification),
            "regression" => Ok(Task::Regression),
            _ => Err(format!(
                "`{s}` is not a task; use \"classification\" or \"regression\""
            )),
        }
    }
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::Accuracy,
        Metric::F1Weighted,
        Metric::Precision,
        Metric::Recall,
        Metric::RocAuc,
        Metric::Rmse,
        Metric::Mae,
        Metric::R2,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1Weighted => "f1_weighted",
            Metric::Precision => "precision",
            Metric::Recall => "recall",
            Metric::RocAuc => "roc_auc",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
        }
    }

    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::Rmse | Metric::Mae)
    }

    /// Regression metrics need numeric labels and predictions.
    pub fn is_regression(self) -> bool {
        matches!(self, Metric::Rmse | Metric::Mae | Metric::R2)
    }

    /// How much worse `value` is than `reference` in this metric's direction (negative when
    /// better): `reference − value` where higher is better, `value − reference` for errors.
    pub fn worse_by(self, value: f64, reference: f64) -> f64 {
        if self.higher_is_better() {
            reference - value
        } else {
            value - reference
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Metric, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a metric; use one of {}",
                    Metric::ALL.map(Metric::name).join(", ")
                )
            })
    }
}

/// Errors computing a metric from the data at hand.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PerformanceError {
    #[error("{metric} needs the positive class's scores; use source = \"model\"")]
    NoScores { metric: &'static str },
    #[error(
        "{metric} is for two classes, the data has {classes}; set performance.positive_class or pick another metric"
    )]
    NotBinary {
        metric: &'static str,
        classes: usize,
    },
    #[error("{metric} needs numeric labels and predictions; `{value}` is not a number")]
    NotNumeric { metric: &'static str, value: String },
    #[error("{predicted} predictions for {labels} labelled rows; the model must answer every row")]
    Length { labels: usize, predicted: usize },
}

/// Labelled rows with what a model said about them.
#[derive(Debug, Clone, Default)]
pub struct Scored {
    pub labels: Vec<String>,
    pub predicted: Vec<String>,
    /// Score of the positive class per row, when the model gives scores.
    pub positive_scores: Option<Vec<f64>>,
    /// The class that precision, recall and ROC AUC are about.
    pub positive: Option<String>,
}

/// The positive class: the configured one, or, with exactly two classes among labels and
/// predictions, the greater in sort order ("1" of "0"/"1", "yes" of "no"/"yes").
pub fn positive_class(
    configured: Option<&str>,
    labels: &[String],
    predicted: &[String],
) -> Option<String> {
    if let Some(c) = configured {
        return Some(c.to_string());
    }
    let classes: BTreeSet<&String> = labels.iter().chain(predicted).collect();
    (classes.len() == 2).then(|| classes.last().map(|c| c.to_string()))?
}

/// Share of rows where the prediction equals the label.
pub fn accuracy(labels: &[String], predicted: &[String]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    let right = labels.iter().zip(predicted).filter(|(l, p)| l == p).count();
    right as f64 / labels.len() as f64
}

#[derive(Default, Clone, Copy)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

fn per_class<'a>(labels: &'a [String], predicted: &'a [String]) -> BTreeMap<&'a str, Counts> {
    let mut m: BTreeMap<&str, Counts> = BTreeMap::new();
    for (l, p) in labels.iter().zip(predicted) {
        if l == p {
            m.entry(l).or_default().tp += 1;
        } else {
            m.entry(p).or_default().fp += 1;
            m.entry(l).or_default().fn_ += 1;
        }
    }
    m
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Precision of one class (scikit-learn `precision_score(pos_label=…)`, 0 when nothing was
/// predicted positive) with its denominator.
pub fn precision(labels: &[String], predicted: &[String], positive: &str) -> (f64, usize) {
    let c = per_class(labels, predicted)
        .get(positive)
        .copied()
        .unwrap_or_default();
    (ratio(c.tp, c.tp + c.fp), c.tp + c.fp)
}

/// Recall of one class with its denominator (the class's support).
pub fn recall(labels: &[String], predicted: &[String], positive: &str) -> (f64, usize) {
    let c = per_class(labels, predicted)
        .get(positive)
        .copied()
        .unwrap_or_default();
    (ratio(c.tp, c.tp + c.fn_), c.tp + c.fn_)
}

/// Support-weighted average of a per-class score (scikit-learn `average="weighted"`).
fn weighted(labels: &[String], predicted: &[String], score: impl Fn(Counts) -> f64) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    per_class(labels, predicted)
        .values()
        .map(|c| score(*c) * (c.tp + c.fn_) as f64)
        .sum::<f64>()
        / labels.len() as f64
}

/// F1 averaged over classes weighted by support (scikit-learn `f1_score(average="weighted")`).
pub fn f1_weighted(labels: &[String], predicted: &[String]) -> f64 {
    weighted(labels, predicted, |c| {
        ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn_)
    })
}

/// Area under the ROC curve of `scores` for `is_positive` (ties count one half), equal to
/// scikit-learn's `roc_auc_score`. `None` when one class is absent.
pub fn roc_auc(is_positive: &[bool], scores: &[f64]) -> Option<f64> {
    let n_pos = is_positive.iter().filter(|p| **p).count();
    let n_neg = is_positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the positives' mid-ranks (1-based), ties sharing their average rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        let pos = order[i..=j].iter().filter(|&&k| is_positive[k]).count();
        rank_sum += mid * pos as f64;
        i = j + 1;
    }
    let (p, n) = (n_pos as f64, n_neg as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

fn numbers(metric: Metric, v: &[String]) -> Result<Vec<f64>, PerformanceError> {
    v.iter()
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| PerformanceError::NotNumeric {
                    metric: metric.name(),
                    value: s.clone(),
                })
        })
        .collect()
}

/// Root mean squared error.
pub fn rmse(y: &[f64], pred: &[f64]) -> f64 {
    if y.is_empty() {
        return 0.0;
    }
    (y.iter()
        .zip(pred)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / y.len() as f64)
        .sqrt()
}

/// Coefficient of determination (scikit-learn `r2_score`): 1 − SS_res / SS_tot; with a
/// constant truth, 1 for a perfect prediction and 0 otherwise.
pub fn r2(y: &[f64], pred: &[f64]) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let ss_tot: f64 = y.iter().map(|a| (a - mean).powi(2)).sum();
    let ss_res: f64 = y.iter().zip(pred).map(|(a, b)| (a - b).powi(2)).sum();
    if ss_tot == 0.0 {
        return if ss_res == 0.0 { 1.0 } else { 0.0 };
    }
    1.0 - ss_res / ss_tot
}

/// Mean absolute error.
pub fn mae(y: &[f64], pred: &[f64]) -> f64 {
    if y.is_empty() {
        return 0.0;
    }
    y.iter().zip(pred).map(|(a, b)| (a - b).abs()).sum::<f64>() / y.len() as f64
}

/// A metric's value with the count a proportion is over (`None` for non-proportions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Value {
    pub value: f64,
    pub n: Option<usize>,
}

/// Compute one metric on `s` (restricted to rows `idx`, all when `None`).
pub fn compute(
    metric: Metric,
    s: &Scored,
    idx: Option<&[usize]>,
) -> Result<Value, PerformanceError> {
    let pick = |v: &[String]| -> Vec<String> {
        match idx {
            Some(i) => i.iter().map(|&k| v[k].clone()).collect(),
            None => v.to_vec(),
        }
    };
    if s.predicted.len() != s.labels.len() {
        return Err(PerformanceError::Length {
            labels: s.labels.len(),
            predicted: s.predicted.len(),
        });
    }
    let (labels, predicted) = (pick(&s.labels), pick(&s.predicted));
    let positive = || -> Result<&str, PerformanceError> {
        s.positive
            .as_deref()
            .ok_or_else(|| PerformanceError::NotBinary {
                metric: metric.name(),
                classes: labels
                    .iter()
                    .chain(&predicted)
                    .collect::<BTreeSet<_>>()
                    .len(),
            })
    };
    Ok(match metric {
        Metric::Accuracy => Value {
            value: accuracy(&labels, &predicted),
            n: Some(labels.len()),
        },
        Metric::F1Weighted => Value {
            value: f1_weighted(&labels, &predicted),
            n: None,
        },
        Metric::Precision => {
            let (value, n) = precision(&labels, &predicted, positive()?);
            Value { value, n: Some(n) }
        }
        Metric::Recall => {
            let (value, n) = recall(&labels, &predicted, positive()?);
            Value { value, n: Some(n) }
        }
        Metric::RocAuc => {
            let p = positive()?;
            let scores = s
                .positive_scores
                .as_ref()
                .ok_or(PerformanceError::NoScores {
                    metric: metric.name(),
                })?;
            let scores: Vec<f64> = match idx {
                Some(i) => i.iter().map(|&k| scores[k]).collect(),
                None => scores.clone(),
            };
            let is_pos: Vec<bool> = labels.iter().map(|l| l == p).collect();
            Value {
                value: roc_auc(&is_pos, &scores).unwrap_or(f64::NAN),
                n: None,
            }
        }
        Metric::Rmse | Metric::Mae | Metric::R2 => {
            let (y, p) = (numbers(metric, &labels)?, numbers(metric, &predicted)?);
            let value = match metric {
                Metric::Rmse => rmse(&y, &p),
                Metric::Mae => mae(&y, &p),
                _ => r2(&y, &p),
            };
            Value { value, n: None }
        }
    })
}

/// How a check's performance turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Degraded,
    /// Fewer labelled rows than `min_labels`.
    InsufficientLabels,
    /// No baseline, no predictions, or the live metric could not be read.
    Unknown,
}

/// The significance test used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    TwoProportionZ,
    /// The watch: the new and the previous model on the same rows (exact McNemar).
    McNemar,
    OneProportionZ,
    Bootstrap,
    /// A live metric carries no sample size: the threshold alone decides.
    None,
    /// No labels: the band of a label-free estimate decides.
    Estimated,
}

/// Settings of the degradation rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub metric: Metric,
    pub relative_threshold: f64,
    pub alpha: f64,
    pub min_labels: usize,
    pub bootstrap_resamples: usize,
}

/// A baseline: the champion's stored evaluation value (with its count for proportions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub value: f64,
    pub n: Option<usize>,
}

/// One check's performance finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub metric: Metric,
    pub status: Status,
    pub current: Option<f64>,
    pub baseline: Option<f64>,
    /// The value past which the metric counts as degraded.
    pub threshold: Option<f64>,
    pub labels: usize,
    pub test: Test,
    pub p_value: Option<f64>,
    pub detail: String,
    /// The estimate behind `current` when it was estimated without labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated: Option<Estimated>,
}

impl Assessment {
    pub fn unknown(metric: Metric, labels: usize, detail: impl Into<String>) -> Assessment {
        Assessment {
            metric,
            status: Status::Unknown,
            current: None,
            baseline: None,
            threshold: None,
            labels,
            test: Test::None,
            p_value: None,
            detail: detail.into(),
            estimated: None,
        }
    }

    pub fn degraded(&self) -> bool {
        self.status == Status::Degraded
    }
}

pub(crate) fn threshold(rule: &Rule, baseline: f64) -> f64 {
    if rule.metric.higher_is_better() {
        // `relative_threshold × baseline` for a positive baseline; measured from |baseline|
        // so an R² at or below 0 still gets a limit below it.
        baseline - (1.0 - rule.relative_threshold) * baseline.abs()
    } else {
        baseline / rule.relative_threshold
    }
}

fn past(rule: &Rule, value: f64, limit: f64) -> bool {
    if rule.metric.higher_is_better() {
        value < limit
    } else {
        value > limit
    }
}

fn verdict(rule: &Rule, beyond: bool, p: Option<f64>) -> Status {
    if beyond && p.is_none_or(|p| p < rule.alpha) {
        Status::Degraded
    } else {
        Status::Healthy
    }
}

/// One-sided p-value that `current` (over `n_cur`) is below `baseline` (over `n_base`, or a
/// known constant when `None`).
pub fn proportion_test(
    baseline: f64,
    n_base: Option<usize>,
    current: f64,
    n_cur: usize,
) -> (Test, f64) {
    let normal = Normal::standard();
    let n_c = n_cur as f64;
    let (test, se) = match n_base {
        Some(n_b) if n_b > 0 => {
            let n_b = n_b as f64;
            let pooled = (baseline * n_b + current * n_c) / (n_b + n_c);
            (
                Test::TwoProportionZ,
                (pooled * (1.0 - pooled) * (1.0 / n_b + 1.0 / n_c)).sqrt(),
            )
        }
        _ => (
            Test::OneProportionZ,
            (baseline * (1.0 - baseline) / n_c).sqrt(),
        ),
    };
    if se <= 0.0 || !se.is_finite() {
        // Both at 0 or 1: any difference is certain, none is no evidence.
        return (test, if current < baseline { 0.0 } else { 1.0 });
    }
    let z = (baseline - current) / se;
    (test, 1.0 - normal.cdf(z))
}

/// Fewer than `min_labels` labelled rows: no verdict, and never "healthy".
pub fn insufficient_labels(rule: &Rule, labels: usize) -> Assessment {
    Assessment {
        status: Status::InsufficientLabels,
        ..Assessment::unknown(
            rule.metric,
            labels,
            format!(
                "{labels} labelled rows, fewer than performance.min_labels = {}",
                rule.min_labels
            ),
        )
    }
}

/// Assess a labelled window against a baseline.
pub fn assess(rule: &Rule, scored: &Scored, baseline: Option<Baseline>, seed: u64) -> Assessment {
    let labels = scored.labels.len();
    let metric = rule.metric;
    if labels < rule.min_labels {
        return insufficient_labels(rule, labels);
    }
    let current = match compute(metric, scored, None) {
        Ok(v) if v.value.is_finite() => v,
        Ok(_) => {
            return Assessment::unknown(
                metric,
                labels,
                format!(
                    "{} is undefined on this window (one class only)",
                    metric.name()
                ),
            );
        }
        Err(e) => return Assessment::unknown(metric, labels, e.to_string()),
    };
    let Some(base) = baseline else {
        return Assessment {
            current: Some(current.value),
            ..Assessment::unknown(
                metric,
                labels,
                format!(
                    "no baseline {}: the champion has no stored evaluation of it",
                    metric.name()
                ),
            )
        };
    };
    let limit = threshold(rule, base.value);
    let beyond = past(rule, current.value, limit);
    let (test, p) = match current.n {
        Some(n) if n > 0 => {
            let (t, p) = proportion_test(base.value, base.n, current.value, n);
            (t, p)
        }
        Some(_) => {
            // Nothing to take a proportion of (no predicted positives for precision): the
            // model may have stopped predicting the class at all; that is not "healthy".
            return Assessment {
                current: Some(current.value),
                baseline: Some(base.value),
                ..Assessment::unknown(
                    metric,
                    labels,
                    format!(
                        "{} has no denominator on this window (no rows in the class it is about)",
                        metric.name()
                    ),
                )
            };
        }
        None => (Test::Bootstrap, bootstrap_p(rule, scored, base.value, seed)),
    };
    let status = verdict(rule, beyond, Some(p));
    let detail = format!(
        "{} {:.4} on {labels} labels vs baseline {:.4} (threshold {:.4}, {} p = {}): {}",
        metric.name(),
        current.value,
        base.value,
        limit,
        match test {
            Test::TwoProportionZ => "two-proportion z-test",
            Test::McNemar => "McNemar exact test",
            Test::OneProportionZ => "one-proportion z-test",
            Test::Bootstrap => "bootstrap",
            Test::None => "no test",
            Test::Estimated => "estimate's band",
        },
        crate::stats::p_value(p),
        match status {
            Status::Degraded => "degraded",
            _ if beyond => "below the threshold but not significant",
            _ => "healthy",
        }
    );
    Assessment {
        metric,
        status,
        current: Some(current.value),
        baseline: Some(base.value),
        threshold: Some(limit),
        labels,
        test,
        p_value: Some(p),
        detail,
        estimated: None,
    }
}

/// Assess a live value (e.g. from PromQL) that has no sample size: the threshold alone.
pub fn assess_live(rule: &Rule, current: f64, baseline: Option<Baseline>) -> Assessment {
    let metric = rule.metric;
    let Some(base) = baseline else {
        return Assessment {
            current: Some(current),
            ..Assessment::unknown(
                metric,
                0,
                format!("no baseline {} for the live value", metric.name()),
            )
        };
    };
    let limit = threshold(rule, base.value);
    let beyond = past(rule, current, limit);
    let status = verdict(rule, beyond, None);
    Assessment {
        metric,
        status,
        current: Some(current),
        baseline: Some(base.value),
        threshold: Some(limit),
        labels: 0,
        test: Test::None,
        p_value: None,
        detail: format!(
            "live {} {current:.4} vs baseline {:.4} (threshold {limit:.4}): {}",
            metric.name(),
            base.value,
            if beyond { "degraded" } else { "healthy" }
        ),
        estimated: None,
    }
}

/// One-sided bootstrap p-value that the current value is worse than `baseline`.
fn bootstrap_p(rule: &Rule, s: &Scored, baseline: f64, seed: u64) -> f64 {
    let n = s.labels.len();
    let b = rule.bootstrap_resamples.max(1);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut idx = vec![0usize; n];
    let mut as_good = 0usize;
    for _ in 0..b {
        for k in idx.iter_mut() {
            *k = rng.random_range(0..n);
        }
        let Ok(v) = compute(rule.metric, s, Some(&idx)) else {
            continue;
        };
        let good = if rule.metric.higher_is_better() {
            v.value >= baseline
        } else {
            v.value <= baseline
        };
        // An undefined replicate (one class drawn) is no evidence of a drop.
        if good || !v.value.is_finite() {
            as_good += 1;
        }
    }
    (1 + as_good) as f64 / (b + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// scikit-learn 1.9.1 on seeded cases (tests/fixtures/make_classification_metrics.py).
    #[test]
    fn metrics_match_scikit_learn() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/classification_metrics.json"
        ))
        .unwrap();
        let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(cases.len() >= 10);
        let close = |a: f64, b: f64, what: &str| {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                "{what}: {a} vs {b}"
            );
        };
        for c in &cases {
            let labels: Vec<String> = serde_json::from_value(c["labels"].clone()).unwrap();
            let predicted: Vec<String> = serde_json::from_value(c["predicted"].clone()).unwrap();
            let name = c["name"].as_str().unwrap();
            close(
                accuracy(&labels, &predicted),
                c["accuracy"].as_f64().unwrap(),
                name,
            );
            close(
                f1_weighted(&labels, &predicted),
                c["f1_weighted"].as_f64().unwrap(),
                name,
            );
            if let Some(pos) = c["positive"].as_str() {
                close(
                    precision(&labels, &predicted, pos).0,
                    c["precision"].as_f64().unwrap(),
                    name,
                );
                close(
                    recall(&labels, &predicted, pos).0,
                    c["recall"].as_f64().unwrap(),
                    name,
                );
                let scores: Vec<f64> = serde_json::from_value(c["scores"].clone()).unwrap();
                let is_pos: Vec<bool> = labels.iter().map(|l| l == pos).collect();
                close(
                    roc_auc(&is_pos, &scores).unwrap(),
                    c["roc_auc"].as_f64().unwrap(),
                    name,
                );
            }
            if let Some(y) = c["y"].as_array() {
                let y: Vec<f64> = y.iter().map(|v| v.as_f64().unwrap()).collect();
                let p: Vec<f64> = serde_json::from_value(c["y_pred"].clone()).unwrap();
                close(rmse(&y, &p), c["rmse"].as_f64().unwrap(), name);
                close(mae(&y, &p), c["mae"].as_f64().unwrap(), name);
                close(r2(&y, &p), c["r2"].as_f64().unwrap(), name);
            }
        }
    }

    #[test]
    fn positive_class_defaults_to_the_greater_of_two() {
        let l = strings(&["0", "1", "1"]);
        assert_eq!(positive_class(None, &l, &l).as_deref(), Some("1"));
        assert_eq!(positive_class(Some("0"), &l, &l).as_deref(), Some("0"));
        let three = strings(&["a", "b", "c"]);
        assert_eq!(positive_class(None, &three, &three), None);
    }

    fn rule(metric: Metric, min_labels: usize) -> Rule {
        Rule {
            metric,
            relative_threshold: 0.95,
            alpha: 0.05,
            min_labels,
            bootstrap_resamples: 500,
        }
    }

    /// `n` labels of two classes, the first `right` predicted correctly.
    fn window(n: usize, right: usize) -> Scored {
        let labels: Vec<String> = (0..n).map(|i| (i % 2).to_string()).collect();
        let predicted = labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i < right {
                    l.clone()
                } else {
                    if l == "0" { "1" } else { "0" }.to_string()
                }
            })
            .collect();
        Scored {
            labels,
            predicted,
            positive_scores: None,
            positive: Some("1".into()),
        }
    }

    #[test]
    fn a_drop_needs_both_size_and_significance() {
        let base = Some(Baseline {
            value: 0.95,
            n: Some(1000),
        });
        // 0.80 on 1,000 labels: far below 0.9025, overwhelming evidence.
        let a = assess(&rule(Metric::Accuracy, 50), &window(1000, 800), base, 1);
        assert_eq!(a.status, Status::Degraded, "{}", a.detail);
        assert_eq!(a.test, Test::TwoProportionZ);
        // 0.90 on 50 labels: below the 0.9025 threshold, but 50 labels cannot show it
        // (z = 1.55, p = 0.061).
        let small = assess(&rule(Metric::Accuracy, 50), &window(50, 45), base, 1);
        assert!(small.current.unwrap() < small.threshold.unwrap());
        assert_eq!(small.status, Status::Healthy, "{}", small.detail);
        assert!(small.p_value.unwrap() > 0.05);
        // Within the threshold on many labels: healthy however significant the drop.
        let slight = assess(
            &rule(Metric::Accuracy, 50),
            &window(100_000, 92_000),
            base,
            1,
        );
        assert_eq!(slight.status, Status::Healthy, "{}", slight.detail);
        // Too few labels, or no baseline: never healthy.
        let few = assess(&rule(Metric::Accuracy, 100), &window(50, 10), base, 1);
        assert_eq!(few.status, Status::InsufficientLabels);
        let none = assess(&rule(Metric::Accuracy, 50), &window(1000, 800), None, 1);
        assert_eq!(none.status, Status::Unknown);
        // A model that never predicts the positive class has no precision: unknown.
        let mut never = window(1000, 1000);
        never.predicted = vec!["0".to_string(); 1000];
        let p = assess(&rule(Metric::Precision, 50), &never, base, 1);
        assert_eq!(p.status, Status::Unknown, "{}", p.detail);
    }

    #[test]
    fn two_proportion_test_matches_the_textbook_value() {
        // Pooled: p = 0.875, se = sqrt(p(1-p)(1/1000 + 1/1000)), z = 0.15 / se = 10.142.
        let (t, p) = proportion_test(0.95, Some(1000), 0.80, 1000);
        assert_eq!(t, Test::TwoProportionZ);
        let pooled: f64 = 0.875;
        let z = 0.15 / (pooled * (1.0 - pooled) * 0.002).sqrt();
        assert!((z - 10.1419).abs() < 1e-3, "{z}");
        assert!(p < 1e-20);
        let (_, p) = proportion_test(0.9, Some(1000), 0.9, 1000);
        assert!((p - 0.5).abs() < 1e-12);
    }

    #[test]
    fn bootstrap_decides_f1_and_error_metrics() {
        let base = Some(Baseline {
            value: 0.95,
            n: None,
        });
        let a = assess(&rule(Metric::F1Weighted, 50), &window(1000, 700), base, 7);
        assert_eq!(
            (a.status, a.test),
            (Status::Degraded, Test::Bootstrap),
            "{}",
            a.detail
        );
        let fine = assess(&rule(Metric::F1Weighted, 50), &window(1000, 960), base, 7);
        assert_eq!(fine.status, Status::Healthy, "{}", fine.detail);
        // Errors: degraded when the error grows past baseline / 0.95.
        let reg = |err: f64| Scored {
            labels: (0..400).map(|i| format!("{i}")).collect(),
            predicted: (0..400)
                .map(|i| format!("{}", i as f64 + if i % 2 == 0 { err } else { -err }))
                .collect(),
            ..Scored::default()
        };
        let base = Some(Baseline {
            value: 1.0,
            n: None,
        });
        assert_eq!(
            assess(&rule(Metric::Mae, 50), &reg(2.0), base, 3).status,
            Status::Degraded
        );
        assert_eq!(
            assess(&rule(Metric::Rmse, 50), &reg(1.0), base, 3).status,
            Status::Healthy
        );
        assert!(matches!(
            compute(
                Metric::Rmse,
                &Scored {
                    labels: strings(&["a"]),
                    predicted: strings(&["1"]),
                    ..Scored::default()
                },
                None
            ),
            Err(PerformanceError::NotNumeric { .. })
        ));
    }

    #[test]
    fn live_values_use_the_threshold_alone() {
        let r = rule(Metric::Accuracy, 0);
        let base = Some(Baseline {
            value: 0.9,
            n: None,
        });
        assert_eq!(assess_live(&r, 0.80, base).status, Status::Degraded);
        assert_eq!(assess_live(&r, 0.89, base).status, Status::Healthy);
        assert_eq!(assess_live(&r, 0.5, None).status, Status::Unknown);
    }
}
