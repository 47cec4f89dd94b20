//! Confidence-based performance estimation (CBPE): a classifier's accuracy, precision,
//! recall, F1, specificity, ROC AUC and confusion matrix estimated from its calibrated
//! probabilities alone, before any label arrives. If the probabilities are right, the
//! expected confusion matrix of a chunk is the sum of them; calibration on the reference
//! (see [`super::calibration`]) makes them right where the model's own are not. The
//! assumption is CBPE's: the relation P(y | x) is the same as in the reference (covariate
//! shift only); under concept drift the estimate is wrong, which is why realised values are
//! recorded beside it once labels come.
//!
//! Every number equals NannyML 0.13.1's `CBPE` (`normalize_confusion_matrix=None`) for the
//! same data and chunks, including the sampling-error band (±3 standard errors, components
//! from the reference) and the thresholds (mean ± 3σ of the realised metric over the
//! reference chunks). `tests/integration/nannyml.rs` holds it to NannyML's own numbers.
//!
//! Pure: must not do I/O, read files or configuration, or know column names.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::calibration::{Decision, Isotonic, needs_calibration};
use super::chunks;
use super::numpy::argsort;

/// How many standard errors wide the band is on each side (NannyML's `SAMPLING_ERROR_RANGE`).
pub const BAND_WIDTH: f64 = 3.0;

/// What a classifier said about some rows, and the truth where it is known.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Class names in ascending order; two for a binary model, the second the positive one.
    pub classes: Vec<String>,
    /// The model's raw scores: for a binary model one column (the positive class's
    /// probability); for more classes one column per class, in `classes` order.
    pub scores: Vec<Vec<f64>>,
    /// The index in `classes` of each row's predicted class.
    pub predicted: Vec<usize>,
    /// The index of each row's true class, where its label has arrived.
    pub actual: Vec<Option<usize>>,
}

impl Predictions {
    pub fn rows(&self) -> usize {
        self.predicted.len()
    }

    fn binary(&self) -> bool {
        self.classes.len() == 2
    }

    fn slice(&self, r: &Range<usize>) -> Predictions {
        Predictions {
            classes: self.classes.clone(),
            scores: self.scores.iter().map(|c| c[r.clone()].to_vec()).collect(),
            predicted: self.predicted[r.clone()].to_vec(),
            actual: self.actual[r.clone()].to_vec(),
        }
    }

    /// Whether the columns agree in length, the classes in number and every score is a
    /// probability; the first problem found, in words.
    fn problem(&self) -> Option<String> {
        let k = self.classes.len();
        if k < 2 {
            return Some(format!("{k} class(es): estimation needs at least two"));
        }
        let columns = if k == 2 { 1 } else { k };
        if self.scores.len() != columns {
            return Some(format!(
                "{} score column(s) for {k} classes (expected {columns})",
                self.scores.len()
            ));
        }
        let n = self.rows();
        if self.actual.len() != n || self.scores.iter().any(|c| c.len() != n) {
            return Some("the score, prediction and label columns differ in length".into());
        }
        if let Some((c, i)) = self.scores.iter().enumerate().find_map(|(c, col)| {
            col.iter()
                .position(|p| !(0.0..=1.0).contains(p))
                .map(|i| (c, i))
        }) {
            return Some(format!(
                "row {i}: score {} of class `{}` is not a probability in [0, 1]",
                self.scores[c][i],
                self.classes[if k == 2 { 1 } else { c }]
            ));
        }
        if let Some(i) = self
            .predicted
            .iter()
            .chain(self.actual.iter().flatten())
            .position(|&p| p >= k)
        {
            return Some(format!("row {i}: a class index beyond the {k} classes"));
        }
        None
    }
}

/// The metrics CBPE estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CbpeMetric {
    RocAuc,
    F1,
    Precision,
    Recall,
    Specificity,
    Accuracy,
    /// Confusion-matrix cells (binary models; counts of rows).
    TruePositive,
    TrueNegative,
    FalsePositive,
    FalseNegative,
}

impl CbpeMetric {
    pub const CLASSIFICATION: [CbpeMetric; 6] = [
        CbpeMetric::RocAuc,
        CbpeMetric::F1,
        CbpeMetric::Precision,
        CbpeMetric::Recall,
        CbpeMetric::Specificity,
        CbpeMetric::Accuracy,
    ];
    pub const CONFUSION: [CbpeMetric; 4] = [
        CbpeMetric::TruePositive,
        CbpeMetric::TrueNegative,
        CbpeMetric::FalsePositive,
        CbpeMetric::FalseNegative,
    ];

    /// The CBPE estimate of a pipeline's performance metric, if there is one.
    pub fn of(metric: crate::performance::Metric) -> Option<CbpeMetric> {
        use crate::performance::Metric;
        match metric {
            Metric::Accuracy => Some(CbpeMetric::Accuracy),
            Metric::Precision => Some(CbpeMetric::Precision),
            Metric::Recall => Some(CbpeMetric::Recall),
            Metric::RocAuc => Some(CbpeMetric::RocAuc),
            Metric::F1Weighted | Metric::Rmse | Metric::Mae | Metric::R2 => None,
        }
    }

    /// NannyML's name for it.
    pub fn name(self) -> &'static str {
        match self {
            CbpeMetric::RocAuc => "roc_auc",
            CbpeMetric::F1 => "f1",
            CbpeMetric::Precision => "precision",
            CbpeMetric::Recall => "recall",
            CbpeMetric::Specificity => "specificity",
            CbpeMetric::Accuracy => "accuracy",
            CbpeMetric::TruePositive => "true_positive",
            CbpeMetric::TrueNegative => "true_negative",
            CbpeMetric::FalsePositive => "false_positive",
            CbpeMetric::FalseNegative => "false_negative",
        }
    }

    /// The metric named `name` (NannyML's names; `confusion_matrix` is the four cells).
    pub fn parse(name: &str) -> Result<Vec<CbpeMetric>, String> {
        if name == "confusion_matrix" {
            return Ok(CbpeMetric::CONFUSION.to_vec());
        }
        CbpeMetric::CLASSIFICATION
            .into_iter()
            .chain(CbpeMetric::CONFUSION)
            .find(|m| m.name() == name)
            .map(|m| vec![m])
            .ok_or_else(|| {
                format!(
                    "unknown metric `{name}`; use roc_auc, f1, precision, recall, specificity, accuracy or confusion_matrix"
                )
            })
    }

    fn cell(self) -> bool {
        CbpeMetric::CONFUSION.contains(&self)
    }

    /// The range the metric lives in (cells: at least 0).
    fn limits(self) -> (Option<f64>, Option<f64>) {
        if self.cell() {
            (Some(0.0), None)
        } else {
            (Some(0.0), Some(1.0))
        }
    }
}

/// Why an estimator could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CbpeError {
    #[error("reference predictions: {0}")]
    Invalid(String),
    #[error(
        "reference predictions: row {row} has no label; CBPE calibrates on labelled reference rows only (drop unlabelled rows from the reference)"
    )]
    Unlabelled { row: usize },
    #[error("the confusion-matrix cells are estimated for binary models only, not for {0} classes")]
    CellsNeedBinary(usize),
    #[error("data to estimate: {0}")]
    Data(String),
}

/// A standard error's ingredients, measured once on the reference.
#[derive(Debug, Clone, PartialEq)]
enum Components {
    /// `s / √(n·f)`.
    Ratio { s: f64, f: f64 },
    /// `s / √n`.
    Plain { s: f64 },
    /// `s / √n · n` (a count).
    Count { s: f64 },
    /// `√(Σ v_k / (n·f_k)) / K · factor`: a macro average over classes.
    Classes { parts: Vec<(f64, f64)>, factor: f64 },
}

impl Components {
    fn error(&self, n: usize) -> f64 {
        let n = n as f64;
        match self {
            Components::Ratio { s, f } => s / (n * f).sqrt(),
            Components::Plain { s } => s / n.sqrt(),
            Components::Count { s } => s / n.sqrt() * n,
            Components::Classes { parts, factor } => {
                let sum: f64 = parts.iter().map(|(v, f)| v / (n * f)).sum();
                sum.sqrt() / parts.len() as f64 * factor
            }
        }
    }
}

/// The alert thresholds of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Thresholds {
    pub lower: Option<f64>,
    pub upper: Option<f64>,
}

impl Thresholds {
    /// Whether an estimate is outside them (strictly; a missing one is no limit).
    pub fn outside(&self, value: Option<f64>) -> bool {
        value
            .is_some_and(|v| self.lower.is_some_and(|l| v < l) || self.upper.is_some_and(|u| v > u))
    }
}

/// One metric's estimate for one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate; `None` when it cannot be computed (e.g. one class only).
    pub value: Option<f64>,
    pub sampling_error: f64,
    /// The value measured on the chunk's labelled rows, when every row has its label.
    pub realized: Option<f64>,
    /// The band: the estimate ± [`BAND_WIDTH`] standard errors, inside the metric's range.
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub thresholds: Thresholds,
    /// The estimate outside the thresholds.
    pub alert: bool,
}

/// Every metric's estimate for one chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkEstimate {
    /// NannyML's key, `[first:last]`.
    pub key: String,
    pub rows: Range<usize>,
    pub metrics: BTreeMap<CbpeMetric, Estimate>,
}

/// A CBPE estimator fitted on a reference.
#[derive(Debug, Clone)]
pub struct Cbpe {
    classes: Vec<String>,
    /// Per class (binary: one, the positive class): whether it is calibrated and why.
    pub decisions: Vec<Decision>,
    calibrators: Vec<Option<Isotonic>>,
    components: BTreeMap<CbpeMetric, Components>,
    pub thresholds: BTreeMap<CbpeMetric, Thresholds>,
    chunk_size: usize,
    /// The estimates for the reference's own chunks (in-sample calibrated).
    pub reference: Vec<ChunkEstimate>,
}

impl Cbpe {
    /// Fit on labelled `reference` predictions, for `metrics`, estimating chunks of
    /// `chunk_size` rows.
    pub fn fit(
        reference: &Predictions,
        metrics: &[CbpeMetric],
        chunk_size: usize,
    ) -> Result<Cbpe, CbpeError> {
        if let Some(p) = reference.problem() {
            return Err(CbpeError::Invalid(p));
        }
        if let Some(row) = reference.actual.iter().position(Option::is_none) {
            return Err(CbpeError::Unlabelled { row });
        }
        if !reference.binary() && metrics.iter().any(|m| m.cell()) {
            return Err(CbpeError::CellsNeedBinary(reference.classes.len()));
        }
        let truth: Vec<usize> = reference.actual.iter().flatten().copied().collect();
        let (decisions, calibrators) = fit_calibrators(reference, &truth);
        let components = metrics
            .iter()
            .map(|&m| (m, components(m, reference, &truth)))
            .collect();
        let mut cbpe = Cbpe {
            classes: reference.classes.clone(),
            decisions,
            calibrators,
            components,
            thresholds: BTreeMap::new(),
            chunk_size,
            reference: Vec::new(),
        };
        // The reference's own chunks, estimated once: their realised values set the
        // thresholds, which they are then judged against too.
        let mut own = cbpe.estimate(reference)?;
        for &m in metrics {
            let realized: Vec<Option<f64>> = own
                .iter()
                .map(|c| c.metrics.get(&m).and_then(|e| e.realized))
                .collect();
            cbpe.thresholds.insert(m, thresholds(m, &realized));
        }
        for chunk in &mut own {
            for (m, e) in chunk.metrics.iter_mut() {
                e.thresholds = cbpe.thresholds.get(m).copied().unwrap_or_default();
                e.alert = e.thresholds.outside(e.value);
            }
        }
        cbpe.reference = own;
        Ok(cbpe)
    }

    /// The class names, in order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The estimates for each chunk of `data`.
    pub fn estimate(&self, data: &Predictions) -> Result<Vec<ChunkEstimate>, CbpeError> {
        if let Some(p) = data.problem() {
            return Err(CbpeError::Data(p));
        }
        if data.classes != self.classes {
            return Err(CbpeError::Data(format!(
                "classes {:?} differ from the reference's {:?}",
                data.classes, self.classes
            )));
        }
        let calibrated = self.calibrate(&data.scores);
        Ok(chunks::by_size(data.rows(), self.chunk_size)
            .into_iter()
            .map(|r| {
                let chunk = data.slice(&r);
                let probs: Vec<Vec<f64>> =
                    calibrated.iter().map(|c| c[r.clone()].to_vec()).collect();
                let metrics = self
                    .components
                    .iter()
                    .map(|(&m, comp)| (m, self.record(m, comp, &chunk, &probs)))
                    .collect();
                ChunkEstimate {
                    key: chunks::key(&r),
                    rows: r,
                    metrics,
                }
            })
            .collect())
    }

    /// Calibrated probabilities: binary, the positive class's (calibrated only when that
    /// lowered the error); more classes, each calibrated or not, then renormalised to sum 1.
    fn calibrate(&self, scores: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let one = |col: &[f64], cal: &Option<Isotonic>| -> Vec<f64> {
            match cal {
                Some(iso) => col.iter().map(|&p| iso.apply(p)).collect(),
                None => col.to_vec(),
            }
        };
        let q: Vec<Vec<f64>> = scores
            .iter()
            .zip(&self.calibrators)
            .map(|(c, cal)| one(c, cal))
            .collect();
        if q.len() == 1 {
            return q;
        }
        let k = q.len();
        let n = q.first().map_or(0, Vec::len);
        let sums: Vec<f64> = (0..n).map(|i| q.iter().map(|c| c[i]).sum()).collect();
        q.iter()
            .map(|c| {
                c.iter()
                    .zip(&sums)
                    .map(|(v, s)| if *s != 0.0 { v / s } else { 1.0 / k as f64 })
                    .collect()
            })
            .collect()
    }

    fn record(
        &self,
        m: CbpeMetric,
        comp: &Components,
        chunk: &Predictions,
        probs: &[Vec<f64>],
    ) -> Estimate {
        let value = estimate(m, chunk, probs).filter(|v| v.is_finite());
        let thresholds = self.thresholds.get(&m).copied().unwrap_or_default();
        Estimate::new(
            value,
            comp.error(chunk.rows()),
            realized(m, chunk),
            m.limits(),
            thresholds,
        )
    }
}

impl Estimate {
    /// An estimate with its band (± [`BAND_WIDTH`] standard errors, inside the metric's
    /// `limits`) and its alert against `thresholds`.
    pub(super) fn new(
        value: Option<f64>,
        sampling_error: f64,
        realized: Option<f64>,
        limits: (Option<f64>, Option<f64>),
        thresholds: Thresholds,
    ) -> Estimate {
        let (lo_limit, hi_limit) = limits;
        let lower = value.map(|v| {
            let b = v - BAND_WIDTH * sampling_error;
            lo_limit.map_or(b, |l| b.max(l))
        });
        let upper = value.map(|v| {
            let b = v + BAND_WIDTH * sampling_error;
            hi_limit.map_or(b, |h| b.min(h))
        });
        Estimate {
            value,
            sampling_error,
            realized,
            lower,
            upper,
            thresholds,
            alert: thresholds.outside(value),
        }
    }
}

/// Per class: the calibration decision and the calibrator (fitted on every reference row).
fn fit_calibrators(
    reference: &Predictions,
    truth: &[usize],
) -> (Vec<Decision>, Vec<Option<Isotonic>>) {
    let positive_of = |c: usize| if reference.binary() { 1 } else { c };
    reference
        .scores
        .iter()
        .enumerate()
        .map(|(c, scores)| {
            let labels: Vec<f64> = truth
                .iter()
                .map(|&t| f64::from(u8::from(t == positive_of(c))))
                .collect();
            let decision = needs_calibration(&labels, scores);
            let calibrator = decision.calibrate.then(|| Isotonic::fit(scores, &labels));
            (decision, calibrator)
        })
        .unzip()
}

/// One class seen as a binary problem: truth, prediction, and (raw or calibrated) score.
struct OneVsRest<'a> {
    truth: Vec<bool>,
    predicted: Vec<bool>,
    scores: &'a [f64],
}

/// The class-`c` view of `p` with `scores` (binary: `c` is the positive class, 1).
fn one_vs_rest<'a>(p: &Predictions, c: usize, truth: &[usize], scores: &'a [f64]) -> OneVsRest<'a> {
    OneVsRest {
        truth: truth.iter().map(|&t| t == c).collect(),
        predicted: p.predicted.iter().map(|&t| t == c).collect(),
        scores,
    }
}

/// The classes a metric averages over (binary: the positive class only), with the score
/// column of each.
fn class_columns(p: &Predictions) -> Vec<(usize, usize)> {
    if p.binary() {
        vec![(1, 0)]
    } else {
        (0..p.classes.len()).map(|c| (c, c)).collect()
    }
}

/// Population standard deviation and variance of `xs`.
fn std_var(xs: impl Iterator<Item = f64>) -> (f64, f64) {
    let values: Vec<f64> = xs.collect();
    let (_, var) = crate::stats::mean_var(&values, 0.0);
    (var.sqrt(), var)
}

/// The reference's standard-error components of `m`.
fn components(m: CbpeMetric, p: &Predictions, truth: &[usize]) -> Components {
    let n = p.rows() as f64;
    if m == CbpeMetric::Accuracy {
        let right = truth
            .iter()
            .zip(&p.predicted)
            .map(|(t, y)| f64::from(u8::from(t == y)));
        return Components::Plain {
            s: std_var(right).0,
        };
    }
    let binary = p.binary();
    let parts: Vec<(f64, f64)> = class_columns(p)
        .into_iter()
        .map(|(c, col)| {
            let v = one_vs_rest(p, c, truth, &p.scores[col]);
            class_components(m, &v, n, binary)
        })
        .collect();
    match (binary, parts.first()) {
        (true, Some(&(s, _))) if m.cell() => Components::Count { s },
        (true, Some(&(s, f))) => Components::Ratio { s, f },
        _ => Components::Classes {
            parts,
            factor: if m == CbpeMetric::RocAuc { 1.2 } else { 1.0 },
        },
    }
}

/// (spread, fraction) of one class: the standard deviation for a binary model, the
/// variance for one class of many (and no F1 correction factor there), as NannyML has it.
fn class_components(m: CbpeMetric, v: &OneVsRest<'_>, n: f64, binary: bool) -> (f64, f64) {
    let pick = |s: (f64, f64)| if binary { s.0 } else { s.1 };
    let rows = v.truth.iter().zip(&v.predicted);
    let subset = |keep: fn(bool, bool) -> bool, one: fn(bool, bool) -> bool| {
        let xs: Vec<f64> = rows
            .clone()
            .filter(|(t, y)| keep(**t, **y))
            .map(|(t, y)| f64::from(u8::from(one(*t, *y))))
            .collect();
        (pick(std_var(xs.iter().copied())), xs.len() as f64 / n)
    };
    match m {
        CbpeMetric::Precision => subset(|_, y| y, |t, _| t),
        CbpeMetric::Recall => subset(|t, _| t, |_, y| y),
        CbpeMetric::Specificity => subset(|t, _| !t, |_, y| !y),
        CbpeMetric::F1 => {
            let (s, f) = subset(|t, y| t || y, |t, y| t && y);
            if !binary {
                return (s, f);
            }
            let count = |a: bool, b: bool| {
                rows.clone().filter(|(t, y)| **t == a && **y == b).count() as f64
            };
            let (tp, fp, fneg) = (count(true, true), count(false, true), count(true, false));
            let kappa = (tp + fneg + fp) / (0.5 * (fneg + fp) + tp);
            (s * kappa, f)
        }
        CbpeMetric::RocAuc => auroc_components(&v.truth, v.scores, binary),
        CbpeMetric::TruePositive => (cell_std(rows, |t, y| t && y), 1.0),
        CbpeMetric::TrueNegative => (cell_std(rows, |t, y| !t && !y), 1.0),
        CbpeMetric::FalsePositive => (cell_std(rows, |t, y| !t && y), 1.0),
        CbpeMetric::FalseNegative => (cell_std(rows, |t, y| t && !y), 1.0),
        CbpeMetric::Accuracy => (0.0, 1.0),
    }
}

fn cell_std<'a>(
    rows: impl Iterator<Item = (&'a bool, &'a bool)> + Clone,
    is: fn(bool, bool) -> bool,
) -> f64 {
    std_var(rows.map(|(t, y)| f64::from(u8::from(is(*t, *y))))).0
}

/// NannyML's ROC AUC components: the spread of the negatives ranked below each positive
/// (Mann–Whitney form), the minority class taken as positive.
fn auroc_components(truth: &[bool], scores: &[f64], binary: bool) -> (f64, f64) {
    let n = truth.len();
    let flip = truth.iter().filter(|t| **t).count() * 2 > n;
    let y: Vec<bool> = truth.iter().map(|t| *t != flip).collect();
    let p: Vec<f64> = if flip {
        scores.iter().map(|s| 1.0 - s).collect()
    } else {
        scores.to_vec()
    };
    let order = argsort(&p);
    // np.unique(y_sorted * rank)[1:]: the ranks of the positives, minus the first value (0).
    let mut ranks: Vec<usize> = order
        .iter()
        .enumerate()
        .map(|(rank, &i)| if y[i] { rank } else { 0 })
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    let positives = y.iter().filter(|t| **t).count() as f64;
    let negatives = n as f64 - positives;
    let ser = ranks
        .iter()
        .skip(1)
        .enumerate()
        .map(|(j, r)| (*r - j) as f64 / negatives);
    let (s, v) = std_var(ser);
    (if binary { s } else { v }, positives / n as f64)
}

/// The expected confusion counts of one class from calibrated probabilities.
struct Expected {
    tp: f64,
    fp: f64,
    fneg: f64,
    tn: f64,
}

fn expected(predicted: &[bool], probs: &[f64]) -> Expected {
    let mut e = Expected {
        tp: 0.0,
        fp: 0.0,
        fneg: 0.0,
        tn: 0.0,
    };
    for (y, p) in predicted.iter().zip(probs) {
        if *y {
            e.tp += p;
            e.fp += 1.0 - p;
        } else {
            e.fneg += p;
            e.tn += 1.0 - p;
        }
    }
    e
}

fn share(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

/// The estimate of `m` for `chunk` from its calibrated probabilities `probs`.
fn estimate(m: CbpeMetric, chunk: &Predictions, probs: &[Vec<f64>]) -> Option<f64> {
    let n = chunk.rows();
    if n == 0 {
        return None;
    }
    if m == CbpeMetric::Accuracy && !chunk.binary() {
        let sum: f64 = (0..n).map(|i| probs[chunk.predicted[i]][i]).sum();
        return Some(sum / n as f64);
    }
    let per_class: Vec<Option<f64>> = class_columns(chunk)
        .into_iter()
        .map(|(c, col)| {
            let predicted: Vec<bool> = chunk.predicted.iter().map(|&y| y == c).collect();
            let e = expected(&predicted, &probs[col]);
            match m {
                CbpeMetric::RocAuc => roc_auc_estimate(&probs[col], &chunk.scores[col]),
                CbpeMetric::Precision => Some(share(e.tp, e.tp + e.fp)),
                CbpeMetric::Recall => Some(share(e.tp, e.tp + e.fneg)),
                CbpeMetric::Specificity => Some(share(e.tn, e.tn + e.fp)),
                CbpeMetric::F1 => Some(share(e.tp, e.tp + 0.5 * (e.fp + e.fneg))),
                CbpeMetric::Accuracy => Some((e.tp + e.tn) / n as f64),
                CbpeMetric::TruePositive => Some(e.tp),
                CbpeMetric::TrueNegative => Some(e.tn),
                CbpeMetric::FalsePositive => Some(e.fp),
                CbpeMetric::FalseNegative => Some(e.fneg),
            }
        })
        .collect();
    let values: Option<Vec<f64>> = per_class.into_iter().collect();
    values.map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// NannyML's ROC AUC estimate: rows in descending raw score (numpy's tie order), expected
/// true and false positives accumulated from the calibrated probabilities, rounded to 5
/// decimals, then the trapezoid area under (fpr, tpr). Every row is a point of the curve.
fn roc_auc_estimate(calibrated: &[f64], raw: &[f64]) -> Option<f64> {
    let order = argsort(raw);
    let round5 = |v: f64| (v * 1e5).round_ties_even() / 1e5;
    let (mut tps, mut fps) = (vec![0.0], vec![0.0]);
    let mut acc = 0.0;
    for (k, &i) in order.iter().rev().enumerate() {
        acc += calibrated[i];
        tps.push(acc);
        fps.push((k + 1) as f64 - acc);
    }
    let tps: Vec<f64> = tps.into_iter().map(round5).collect();
    let fps: Vec<f64> = fps.into_iter().map(round5).collect();
    let (t_n, f_n) = (*tps.last()?, *fps.last()?);
    if t_n == 0.0 || f_n == 0.0 {
        return None;
    }
    let area = tps
        .windows(2)
        .zip(fps.windows(2))
        .map(|(t, f)| (f[1] / f_n - f[0] / f_n) * (t[1] / t_n + t[0] / t_n) / 2.0)
        .sum();
    Some(area)
}

/// The realised value of `m` on `chunk`, as NannyML computes it (scikit-learn on the raw
/// scores and predictions), when every row of the chunk is labelled.
fn realized(m: CbpeMetric, chunk: &Predictions) -> Option<f64> {
    let truth: Vec<usize> = chunk.actual.iter().copied().collect::<Option<Vec<_>>>()?;
    if truth.is_empty() {
        return None;
    }
    let n = truth.len() as f64;
    if m == CbpeMetric::Accuracy {
        let right = truth
            .iter()
            .zip(&chunk.predicted)
            .filter(|(t, y)| t == y)
            .count();
        return Some(right as f64 / n);
    }
    let distinct = |xs: &[usize]| {
        let mut v = xs.to_vec();
        v.sort_unstable();
        v.dedup();
        v.len()
    };
    let degenerate = distinct(&truth) <= 1 || distinct(&chunk.predicted) <= 1;
    let per_class: Option<Vec<f64>> = class_columns(chunk)
        .into_iter()
        .map(|(c, col)| {
            let v = one_vs_rest(chunk, c, &truth, &chunk.scores[col]);
            let count = |a: bool, b: bool| {
                v.truth
                    .iter()
                    .zip(&v.predicted)
                    .filter(|(t, y)| **t == a && **y == b)
                    .count() as f64
            };
            let (tp, fp, fneg, tn) = (
                count(true, true),
                count(false, true),
                count(true, false),
                count(false, false),
            );
            match m {
                CbpeMetric::RocAuc => crate::performance::roc_auc(&v.truth, v.scores),
                CbpeMetric::Precision if !degenerate => Some(share(tp, tp + fp)),
                CbpeMetric::Recall if !degenerate => Some(share(tp, tp + fneg)),
                CbpeMetric::F1 if !degenerate => Some(share(2.0 * tp, 2.0 * tp + fp + fneg)),
                CbpeMetric::Precision | CbpeMetric::Recall | CbpeMetric::F1 => None,
                CbpeMetric::Specificity => (tn + fp > 0.0).then(|| tn / (tn + fp)),
                CbpeMetric::TruePositive => Some(tp),
                CbpeMetric::TrueNegative => Some(tn),
                CbpeMetric::FalsePositive => Some(fp),
                CbpeMetric::FalseNegative => Some(fneg),
                CbpeMetric::Accuracy => None,
            }
        })
        .collect();
    per_class.map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// Mean ± 3σ of the realised reference chunks, held inside the metric's range. None from
/// fewer than two chunks with a value (NannyML would set both to the one value, so that any
/// difference alerts; the spread of one chunk says nothing).
fn thresholds(m: CbpeMetric, realized: &[Option<f64>]) -> Thresholds {
    Thresholds::from_reference(realized, m.limits())
}

impl Thresholds {
    /// Mean ± 3σ of the realised values of the reference's chunks, inside `limits` (none
    /// from fewer than two chunks).
    pub(super) fn from_reference(
        realized: &[Option<f64>],
        limits: (Option<f64>, Option<f64>),
    ) -> Thresholds {
        let values: Vec<f64> = realized
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        if values.len() < 2 {
            return Thresholds::default();
        }
        let (sd, _) = std_var(values.iter().copied());
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let (lo_limit, hi_limit) = limits;
        let mut lower = mean - 3.0 * sd;
        let mut upper = mean + 3.0 * sd;
        if let Some(l) = lo_limit.filter(|l| lower <= *l) {
            lower = l;
        }
        if let Some(h) = hi_limit.filter(|h| upper >= *h) {
            upper = h;
        }
        Thresholds {
            lower: Some(lower),
            upper: Some(upper),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(scores: Vec<f64>, actual: Vec<Option<usize>>) -> Predictions {
        Predictions {
            classes: vec!["0".into(), "1".into()],
            predicted: scores.iter().map(|&p| usize::from(p >= 0.5)).collect(),
            scores: vec![scores],
            actual,
        }
    }

    /// Perfectly calibrated scores: the expected accuracy is the mean confidence.
    #[test]
    fn the_estimate_is_the_expected_confusion_matrix() {
        let p = binary(vec![0.9, 0.8, 0.3, 0.1], vec![None; 4]);
        let probs = p.scores.clone();
        let acc = estimate(CbpeMetric::Accuracy, &p, &probs).unwrap();
        assert!((acc - (0.9 + 0.8 + 0.7 + 0.9) / 4.0).abs() < 1e-15);
        let tp = estimate(CbpeMetric::TruePositive, &p, &probs).unwrap();
        assert!((tp - 1.7).abs() < 1e-15);
        let precision = estimate(CbpeMetric::Precision, &p, &probs).unwrap();
        assert!((precision - 1.7 / 2.0).abs() < 1e-15);
    }

    #[test]
    fn unlabelled_reference_rows_and_non_probabilities_are_refused() {
        let p = binary(vec![0.9, 0.2], vec![Some(1), None]);
        let e = Cbpe::fit(&p, &CbpeMetric::CLASSIFICATION, 10).unwrap_err();
        assert_eq!(e, CbpeError::Unlabelled { row: 1 });
        let p = binary(vec![0.9, 1.2], vec![Some(1), Some(0)]);
        let e = Cbpe::fit(&p, &CbpeMetric::CLASSIFICATION, 10).unwrap_err();
        assert!(
            e.to_string().contains("row 1: score 1.2 of class `1`"),
            "{e}"
        );
    }

    #[test]
    fn thresholds_are_held_inside_the_metrics_range() {
        let t = thresholds(CbpeMetric::Accuracy, &[Some(0.99), Some(0.3), None]);
        assert_eq!(t.upper, Some(1.0));
        assert_eq!(t.lower, Some(0.0));
        let t = thresholds(CbpeMetric::Accuracy, &[Some(0.8), Some(0.9)]);
        assert!((t.lower.unwrap() - 0.7).abs() < 1e-12 && (t.upper.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(
            thresholds(CbpeMetric::Accuracy, &[Some(0.8), None]),
            Thresholds::default()
        );
    }
}
