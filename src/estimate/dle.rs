//! Direct loss estimation (DLE): a regressor's MAE and RMSE estimated without labels, as
//! NannyML's `DLE` does it. On the labelled reference a "nanny" model learns to predict each
//! row's absolute error, and another its squared error, from the row's features and the
//! monitored model's prediction; a chunk's estimated MAE is the mean of the first nanny's
//! predictions (negative ones counted as 0), its RMSE the square root of the mean of the
//! second's. The band is ±3 standard errors from the reference (`σ(|e|)/√n` for MAE; for
//! RMSE, by the delta method, `σ(e²)/√n / (2·√mean(e²))`), the thresholds the mean ± 3σ of
//! the realised value over the reference's chunks, as for CBPE.
//!
//! The nanny is [`super::gbm`], a gradient-boosted tree ensemble with LightGBM's defaults
//! (NannyML uses LightGBM itself), so estimates are close to NannyML's, not equal; the test
//! on NannyML's car-price dataset holds them at least as close to the realised values.
//!
//! Pure: must not do I/O, read files or configuration, or know column names.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::cbpe::{Estimate, Thresholds};
use super::chunks;
use super::gbm::{Gbm, GbmParams};

/// The metrics DLE estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DleMetric {
    Mae,
    Rmse,
}

impl DleMetric {
    pub const ALL: [DleMetric; 2] = [DleMetric::Mae, DleMetric::Rmse];

    pub fn name(self) -> &'static str {
        match self {
            DleMetric::Mae => "mae",
            DleMetric::Rmse => "rmse",
        }
    }
}

/// A regressor's answers on some rows.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionRows {
    /// The nanny's inputs besides the prediction: one numeric column per feature
    /// (categorical ones encoded, e.g. by [`ordinal`]).
    pub features: Vec<Vec<f64>>,
    pub predicted: Vec<f64>,
    /// The truth, where it has arrived.
    pub actual: Vec<Option<f64>>,
}

impl RegressionRows {
    pub fn rows(&self) -> usize {
        self.predicted.len()
    }

    fn slice(&self, r: &Range<usize>) -> RegressionRows {
        RegressionRows {
            features: self
                .features
                .iter()
                .map(|c| c[r.clone()].to_vec())
                .collect(),
            predicted: self.predicted[r.clone()].to_vec(),
            actual: self.actual[r.clone()].to_vec(),
        }
    }

    /// The nanny's input columns: the features, then the prediction.
    fn inputs(&self) -> Vec<Vec<f64>> {
        let mut c = self.features.clone();
        c.push(self.predicted.clone());
        c
    }

    fn problem(&self) -> Option<String> {
        let n = self.rows();
        if self.actual.len() != n || self.features.iter().any(|c| c.len() != n) {
            return Some("the feature, prediction and label columns differ in length".into());
        }
        self.predicted.iter().position(|p| !p.is_finite()).map(|i| {
            format!(
                "row {i}: the prediction {} is not a number",
                self.predicted[i]
            )
        })
    }
}

/// NannyML's encoding of a categorical feature: each category's 1-based rank among the
/// reference's sorted categories; a category the reference lacks (or a missing value) is NaN.
pub fn ordinal(reference: &[String], data: &[String]) -> Vec<f64> {
    let mut known: Vec<&String> = reference.iter().filter(|v| !v.is_empty()).collect();
    known.sort();
    known.dedup();
    data.iter()
        .map(|v| known.binary_search(&v).map_or(f64::NAN, |i| (i + 1) as f64))
        .collect()
}

/// Why DLE could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DleError {
    #[error("reference: {0}")]
    Invalid(String),
    #[error(
        "reference: row {row} has no label; the nanny model learns from labelled reference rows only"
    )]
    Unlabelled { row: usize },
    #[error("data to estimate: {0}")]
    Data(String),
}

/// One chunk's estimates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DleChunk {
    pub key: String,
    pub rows: Range<usize>,
    pub metrics: BTreeMap<DleMetric, Estimate>,
}

/// DLE fitted on a reference.
#[derive(Debug, Clone)]
pub struct Dle {
    absolute: Gbm,
    squared: Gbm,
    /// σ(|e|), σ(e²) and mean(e²) on the reference.
    abs_sd: f64,
    sq_sd: f64,
    sq_mean: f64,
    chunk_size: usize,
    features: usize,
    pub thresholds: BTreeMap<DleMetric, Thresholds>,
    /// The reference's own chunks (in-sample), which set the thresholds.
    pub reference: Vec<DleChunk>,
}

/// MAE and RMSE are errors: never below 0.
const LIMITS: (Option<f64>, Option<f64>) = (Some(0.0), None);

impl Dle {
    /// Fit the nannies on the labelled `reference`, for chunks of `chunk_size` rows.
    pub fn fit(reference: &RegressionRows, chunk_size: usize) -> Result<Dle, DleError> {
        if let Some(p) = reference.problem() {
            return Err(DleError::Invalid(p));
        }
        let mut truth = Vec::with_capacity(reference.rows());
        for (row, a) in reference.actual.iter().enumerate() {
            match a {
                Some(v) if v.is_finite() => truth.push(*v),
                _ => return Err(DleError::Unlabelled { row }),
            }
        }
        let abs: Vec<f64> = truth
            .iter()
            .zip(&reference.predicted)
            .map(|(y, p)| (y - p).abs())
            .collect();
        let sq: Vec<f64> = abs.iter().map(|e| e * e).collect();
        let inputs = reference.inputs();
        let params = GbmParams::default();
        let (_, abs_var) = crate::stats::mean_var(&abs, 0.0);
        let (sq_mean, sq_var) = crate::stats::mean_var(&sq, 0.0);
        let mut dle = Dle {
            absolute: Gbm::fit(&inputs, &abs, &params),
            squared: Gbm::fit(&inputs, &sq, &params),
            abs_sd: abs_var.sqrt(),
            sq_sd: sq_var.sqrt(),
            sq_mean,
            chunk_size: chunk_size.max(1),
            features: reference.features.len(),
            thresholds: BTreeMap::new(),
            reference: Vec::new(),
        };
        let mut own = dle.estimate(reference)?;
        for m in DleMetric::ALL {
            let realized: Vec<Option<f64>> = own
                .iter()
                .map(|c| c.metrics.get(&m).and_then(|e| e.realized))
                .collect();
            dle.thresholds
                .insert(m, Thresholds::from_reference(&realized, LIMITS));
        }
        for chunk in &mut own {
            for (m, e) in chunk.metrics.iter_mut() {
                e.thresholds = dle.thresholds.get(m).copied().unwrap_or_default();
                e.alert = e.thresholds.outside(e.value);
            }
        }
        dle.reference = own;
        Ok(dle)
    }

    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// The estimates for each chunk of `data`.
    pub fn estimate(&self, data: &RegressionRows) -> Result<Vec<DleChunk>, DleError> {
        if let Some(p) = data.problem() {
            return Err(DleError::Data(p));
        }
        if data.features.len() != self.features {
            return Err(DleError::Data(format!(
                "{} feature columns, the reference has {}",
                data.features.len(),
                self.features
            )));
        }
        let inputs = data.inputs();
        let abs = self.absolute.predict_columns(&inputs);
        let sq = self.squared.predict_columns(&inputs);
        Ok(chunks::by_size(data.rows(), self.chunk_size)
            .into_iter()
            .map(|r| {
                let chunk = data.slice(&r);
                let n = chunk.rows();
                let mean = |v: &[f64]| v.iter().map(|x| x.max(0.0)).sum::<f64>() / n as f64;
                let (mae, mse) = (mean(&abs[r.clone()]), mean(&sq[r.clone()]));
                let realized = realized(&chunk);
                let thresholds = |m| self.thresholds.get(&m).copied().unwrap_or_default();
                let sqrt_n = (n as f64).sqrt();
                let metrics = BTreeMap::from([
                    (
                        DleMetric::Mae,
                        Estimate::new(
                            Some(mae),
                            self.abs_sd / sqrt_n,
                            realized.map(|(m, _)| m),
                            LIMITS,
                            thresholds(DleMetric::Mae),
                        ),
                    ),
                    (
                        DleMetric::Rmse,
                        Estimate::new(
                            Some(mse.sqrt()),
                            self.sq_sd / sqrt_n / (2.0 * self.sq_mean.sqrt()),
                            realized.map(|(_, r)| r),
                            LIMITS,
                            thresholds(DleMetric::Rmse),
                        ),
                    ),
                ]);
                DleChunk {
                    key: chunks::key(&r),
                    rows: r,
                    metrics,
                }
            })
            .collect())
    }
}

/// The chunk's realised MAE and RMSE, when every row has its label.
fn realized(chunk: &RegressionRows) -> Option<(f64, f64)> {
    let n = chunk.rows();
    if n == 0 {
        return None;
    }
    let mut abs = 0.0;
    let mut sq = 0.0;
    for (a, p) in chunk.actual.iter().zip(&chunk.predicted) {
        let e = (a.filter(|v| v.is_finite())? - p).abs();
        abs += e;
        sq += e * e;
    }
    Some((abs / n as f64, (sq / n as f64).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_ranked_from_one_and_unknown_ones_are_missing() {
        let r: Vec<String> = ["gas", "diesel", "electric", "gas", ""]
            .map(String::from)
            .to_vec();
        let d: Vec<String> = ["diesel", "gas", "hydrogen", ""].map(String::from).to_vec();
        let e = ordinal(&r, &d);
        assert_eq!(&e[..2], &[1.0, 3.0]);
        assert!(e[2].is_nan() && e[3].is_nan());
    }

    /// The error grows with a feature the model ignores: the nanny learns it, so a chunk
    /// of high-error rows is estimated high, close to its realised MAE.
    #[test]
    fn a_chunk_of_hard_rows_is_estimated_worse() {
        let n = 6000;
        let x: Vec<f64> = (0..n).map(|i| (i % 100) as f64 / 100.0).collect();
        // |error| = 10·x exactly, sign alternating.
        let actual: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 2 == 0 { 10.0 * v } else { -10.0 * v })
            .collect();
        let reference = RegressionRows {
            features: vec![x],
            predicted: vec![0.0; n],
            actual: actual.into_iter().map(Some).collect(),
        };
        let dle = Dle::fit(&reference, 1000).unwrap();
        assert_eq!(dle.reference.len(), 6);
        let hard = RegressionRows {
            features: vec![vec![0.9; 500]],
            predicted: vec![0.0; 500],
            actual: vec![None; 500],
        };
        let e = &dle.estimate(&hard).unwrap()[0].metrics[&DleMetric::Mae];
        assert!((e.value.unwrap() - 9.0).abs() < 0.1, "{e:?}");
        assert_eq!(e.realized, None);
        assert!(e.alert, "far above the reference's MAE of 4.95: {e:?}");
    }
}
