//! Performance estimated without labels. Labels often arrive days or weeks after the
//! predictions; until then a degradation check that needs them is blind. This module
//! estimates what the labels will say: CBPE ([`cbpe`]) for classifiers, from their
//! calibrated probabilities ([`calibration`]); DLE ([`dle`]) for regressors, from a nanny
//! model ([`gbm`]) that learned the monitored model's errors; in chunks cut as NannyML cuts them
//! ([`chunks`]). CBPE's numbers equal NannyML 0.13.1's ([`numpy`] holds the ports that make
//! the order-sensitive parts equal); DLE's nanny is not LightGBM, so its are close.
//!
//! Pure policy: must not do I/O, read configuration, or know about pipelines, stores or
//! files; the engine hands it typed predictions and gets typed estimates back.

pub mod calibration;
pub mod cbpe;
pub mod chunks;
pub mod dle;
pub mod gbm;
pub mod numpy;

pub use cbpe::{Cbpe, CbpeError, CbpeMetric, ChunkEstimate, Estimate, Predictions, Thresholds};

use serde::{Deserialize, Serialize};

/// How one class's probabilities were calibrated (binary models: the positive class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCalibration {
    pub class: String,
    pub calibrated: bool,
    /// Why calibration was not even tried (one class, or a ROC AUC above 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Expected calibration error of the raw and the calibrated scores on the reference's
    /// shuffle splits: calibration is kept only when it lowers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ece_before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ece_after: Option<f64>,
}

impl ClassCalibration {
    /// In words: applied or not, and the two errors it was decided on.
    pub fn describe(&self) -> String {
        match (&self.skipped, self.ece_before, self.ece_after) {
            (Some(why), _, _) => format!("not tried ({why})"),
            (None, Some(b), Some(a)) => format!(
                "{} (expected calibration error {b:.4} raw, {a:.4} calibrated)",
                if self.calibrated {
                    "applied"
                } else {
                    "not applied"
                }
            ),
            _ => "not applied".into(),
        }
    }
}

/// A label-free estimate, as reported (`retraind estimate --format json`, the HTML report):
/// CBPE's for a classifier (`method = "cbpe"`), DLE's for a regressor (`"dle"`, no classes
/// and no calibration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateReport {
    /// `cbpe`.
    pub method: String,
    pub reference_rows: usize,
    pub chunk_size: usize,
    pub classes: Vec<String>,
    pub calibration: Vec<ClassCalibration>,
    /// The reference's own chunks (in-sample), which set the thresholds.
    pub reference: Vec<ReportChunk>,
    /// The estimated data's chunks.
    pub chunks: Vec<ReportChunk>,
}

/// One chunk's estimates in a report, by metric name (CBPE's and DLE's alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportChunk {
    /// NannyML's key, `[first:last]`.
    pub key: String,
    pub rows: std::ops::Range<usize>,
    pub metrics: std::collections::BTreeMap<String, Estimate>,
}

impl ReportChunk {
    fn of<M: Copy>(
        key: &str,
        rows: &std::ops::Range<usize>,
        metrics: &std::collections::BTreeMap<M, Estimate>,
        name: fn(M) -> &'static str,
    ) -> ReportChunk {
        ReportChunk {
            key: key.to_string(),
            rows: rows.clone(),
            metrics: metrics
                .iter()
                .map(|(m, e)| (name(*m).to_string(), *e))
                .collect(),
        }
    }
}

impl From<&ChunkEstimate> for ReportChunk {
    fn from(c: &ChunkEstimate) -> ReportChunk {
        ReportChunk::of(&c.key, &c.rows, &c.metrics, CbpeMetric::name)
    }
}

impl From<&dle::DleChunk> for ReportChunk {
    fn from(c: &dle::DleChunk) -> ReportChunk {
        ReportChunk::of(&c.key, &c.rows, &c.metrics, dle::DleMetric::name)
    }
}

impl EstimateReport {
    /// The report of `cbpe` fitted on `reference_rows` rows, for `chunks`.
    pub fn cbpe(cbpe: &Cbpe, reference_rows: usize, chunks: &[ChunkEstimate]) -> EstimateReport {
        let classes = cbpe.classes().to_vec();
        let calibrated_class = |i: usize| {
            if classes.len() == 2 {
                classes[1].clone()
            } else {
                classes[i].clone()
            }
        };
        EstimateReport {
            method: "cbpe".into(),
            reference_rows,
            chunk_size: cbpe.chunk_size(),
            calibration: cbpe
                .decisions
                .iter()
                .enumerate()
                .map(|(i, d)| ClassCalibration {
                    class: calibrated_class(i),
                    calibrated: d.calibrate,
                    skipped: d.skipped.map(str::to_string),
                    ece_before: d.ece_before,
                    ece_after: d.ece_after,
                })
                .collect(),
            classes,
            reference: cbpe.reference.iter().map(ReportChunk::from).collect(),
            chunks: chunks.iter().map(ReportChunk::from).collect(),
        }
    }

    /// The report of `dle` fitted on `reference_rows` rows, for `chunks`.
    pub fn dle(dle: &dle::Dle, reference_rows: usize, chunks: &[dle::DleChunk]) -> EstimateReport {
        EstimateReport {
            method: "dle".into(),
            reference_rows,
            chunk_size: dle.chunk_size(),
            classes: Vec::new(),
            calibration: Vec::new(),
            reference: dle.reference.iter().map(ReportChunk::from).collect(),
            chunks: chunks.iter().map(ReportChunk::from).collect(),
        }
    }

    /// Whether any chunk's estimate of any metric is outside its thresholds.
    pub fn alert(&self) -> bool {
        self.chunks
            .iter()
            .any(|c| c.metrics.values().any(|e| e.alert))
    }
}
