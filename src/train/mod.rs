//! The train step's contract: a [`Trainer`] turns a training table into a model directory
//! (weights, preprocessing, model card) and reports per-epoch progress; a [`Predictor`]
//! scores a table with a stored model. The engine only sees these traits, so new backends
//! (Kubeflow runs, external commands) plug in without touching it.
//!
//! Trainers are blocking by design: the engine runs them on the blocking pool
//! (`spawn_blocking`), so `/metrics` and the API stay responsive while a model trains, and it
//! stops them through a shared [`CancelFlag`] checked between epochs.

pub mod burn;
pub mod card;
pub mod command;
mod config;
pub mod kfp;

pub use config::{Backend, RawTrain, TrainConfig};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use crate::data::{Roles, Table};

/// Why training (or scoring) failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("training was cancelled (shutdown or timeout); the cycle resumes it on the next start")]
    Cancelled,
    #[error("training data has no target labels (column `{0}` missing from the data)")]
    NoLabels(String),
    #[error("training data has only one class ({0}); a classifier needs at least two")]
    OneClass(String),
    #[error(
        "training data has {rows} rows, fewer than the {needed} a train/validation split needs"
    )]
    TooFewRows { rows: usize, needed: usize },
    #[error(
        "loss became NaN at epoch {0}; lower train.burn.learning_rate or check the data for extreme values"
    )]
    NanLoss(usize),
    #[error(
        "failed to learn: validation {metric} {value:.3} after epoch {epoch} is below train.burn.{key} = {floor}; check the labels and features"
    )]
    FailedToLearn {
        epoch: usize,
        metric: &'static str,
        value: f64,
        floor: f64,
        key: &'static str,
    },
    #[error(
        "task = \"regression\" needs a numeric target: it has `{value}` ({rows} training row(s) with a value that is not a number); fix the data or set task = \"classification\""
    )]
    NotNumeric { value: String, rows: usize },
    #[error("cannot write model artifacts to {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the model at {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("{0}")]
    Command(String),
    #[error("model at {path} expects feature `{feature}`, which the data lacks")]
    MissingFeature { path: PathBuf, feature: String },
}

/// An I/O error on `path`, as a [`TrainError`].
pub fn io_err(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A flag the engine sets to stop a trainer at its next checkpoint, with why: a shutdown
/// (the cycle resumes on the next start, so a remote run is left running) or the training
/// timeout (a remote run is terminated).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<std::sync::atomic::AtomicU8>);

const SHUTDOWN: u8 = 1;
const TIMEOUT: u8 = 2;

impl CancelFlag {
    /// Stop for a shutdown.
    pub fn cancel(&self) {
        let _ = self
            .0
            .compare_exchange(0, SHUTDOWN, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Stop because `train.timeout` passed.
    pub fn time_out(&self) {
        self.0.store(TIMEOUT, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }

    pub fn timed_out(&self) -> bool {
        self.0.load(Ordering::SeqCst) == TIMEOUT
    }
}

/// How a trainer that starts remote work records the remote id durably before it waits on
/// it (the engine stores it with the cycle), so a restart resumes instead of starting again.
#[derive(Clone, Default)]
pub struct RemoteRunRecorder(pub Option<Arc<RecordFn>>);

/// Stores a remote run id; `Err` carries why it could not.
pub type RecordFn = dyn Fn(&str) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for RemoteRunRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteRunRecorder")
    }
}

impl RemoteRunRecorder {
    pub fn record(&self, id: &str) -> Result<(), String> {
        match &self.0 {
            Some(f) => f(id),
            None => Ok(()),
        }
    }
}

/// Metrics of one finished epoch: accuracy and weighted F1 for a classifier, RMSE and R²
/// for a regressor (each absent where it does not apply, and from older cards and external
/// trainers that do not report it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochReport {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_loss: f64,
    #[serde(default)]
    pub valid_accuracy: Option<f64>,
    #[serde(default)]
    pub valid_f1: Option<f64>,
    #[serde(default)]
    pub valid_rmse: Option<f64>,
    #[serde(default)]
    pub valid_r2: Option<f64>,
}

/// What a trainer needs.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    pub pipeline: String,
    pub cycle_id: i64,
    pub data: Table,
    /// The columns' roles (features, target) of the cycle's inputs.
    pub roles: Roles,
    /// Empty directory to write the model into; the engine moves it into place.
    pub out_dir: PathBuf,
    /// The cycle's recorded inputs (locations and fingerprints), for remote trainers.
    pub inputs: Option<crate::records::CycleInputs>,
    /// A remote run this cycle already started (recorded before a restart).
    pub remote_run: Option<String>,
    pub record_remote_run: RemoteRunRecorder,
    /// `train.timeout`: a remote trainer terminates its run when it passes.
    pub timeout: std::time::Duration,
}

/// What a trainer produced (written into `out_dir`, summarised here).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutput {
    /// Model card format: how to load the model again (`burn-mlp-v1`, `command-v1`).
    pub format: String,
    pub epochs_run: usize,
    pub best_epoch: usize,
    /// A classifier's validation accuracy (a regressor reports `valid_rmse`/`valid_r2` in
    /// `extra_metrics`).
    #[serde(default)]
    pub valid_accuracy: Option<f64>,
    #[serde(deserialize_with = "crate::nan::or_null")]
    pub valid_loss: f64,
    pub train_rows: usize,
    pub valid_rows: usize,
    #[serde(deserialize_with = "crate::nan::or_null")]
    pub duration_seconds: f64,
    pub history: Vec<EpochReport>,
    /// Further metrics the backend reported (a command trainer's metrics file).
    #[serde(default)]
    pub extra_metrics: std::collections::BTreeMap<String, f64>,
    /// Id of the remote run that trained the model (Kubeflow).
    #[serde(default)]
    pub remote_run: Option<String>,
}

impl TrainOutput {
    /// The validation result in words, for logs and cycle reasons.
    pub fn headline(&self) -> String {
        match (self.valid_accuracy, self.extra_metrics.get("valid_rmse")) {
            (Some(a), _) if a.is_finite() => format!("validation accuracy {a:.3}"),
            (_, Some(r)) => format!("validation RMSE {r:.4}"),
            _ => format!("validation loss {:.4}", self.valid_loss),
        }
    }
}

/// A training backend.
pub trait Trainer: Send + Sync {
    /// Backend name for logs and lineage ("burn").
    fn name(&self) -> &'static str;

    /// Train on `request.data`, writing the model into `request.out_dir`. Blocking.
    fn train(
        &self,
        request: &TrainRequest,
        cancel: &CancelFlag,
        progress: &(dyn Fn(&EpochReport) + Send + Sync),
    ) -> Result<TrainOutput, TrainError>;
}

/// A model's answer for every row of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Predictions {
    /// Class names, in the model's order (empty for a regressor).
    pub classes: Vec<String>,
    /// Predicted class per row (a regressor's number, as text).
    pub labels: Vec<String>,
    /// Class probabilities, row-major (`rows × classes`; empty for a regressor).
    pub probabilities: Vec<f64>,
}

impl Predictions {
    /// Probability of `class` per row (`None` if the model does not know the class).
    pub fn scores_of(&self, class: &str) -> Option<Vec<f64>> {
        let k = self.classes.iter().position(|c| c == class)?;
        let n = self.classes.len();
        Some(self.probabilities.chunks(n).map(|row| row[k]).collect())
    }
}

/// A stored model that can score a table.
pub trait Predictor: Send + Sync {
    /// Predicted class and class probabilities per row.
    fn predict_scored(&self, table: &Table) -> Result<Predictions, TrainError>;

    /// Predicted class per row.
    fn predict(&self, table: &Table) -> Result<Vec<String>, TrainError> {
        Ok(self.predict_scored(table)?.labels)
    }
}

/// Score the labelled rows of `table` with `model`, ready for [`crate::performance`]
/// (the positive class is `positive`, or inferred for two classes).
pub fn score(
    model: &dyn Predictor,
    table: &Table,
    positive: Option<&str>,
) -> Result<crate::performance::Scored, TrainError> {
    let labels = table.target.clone().unwrap_or_default();
    let p = model.predict_scored(table)?;
    Ok(scored(&p, labels, positive))
}

/// `labels` with what a model answered for them (see [`score`]).
pub fn scored(
    p: &Predictions,
    labels: Vec<String>,
    positive: Option<&str>,
) -> crate::performance::Scored {
    let positive = crate::performance::positive_class(positive, &labels, &p.classes);
    let positive_scores = positive.as_deref().and_then(|c| p.scores_of(c));
    crate::performance::Scored {
        labels,
        predicted: p.labels.clone(),
        positive_scores,
        positive,
    }
}

/// Load the predictor stored in a model directory, by the format its card names.
pub fn load_predictor(dir: &Path) -> Result<Box<dyn Predictor>, TrainError> {
    match card::ModelCard::format_of(dir).as_deref() {
        Some(command::FORMAT) => Ok(Box::new(command::CommandModel::load(dir)?)),
        _ => Ok(Box::new(burn::BurnModel::load(dir)?)),
    }
}
