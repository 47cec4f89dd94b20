//! The local trainer: a tabular MLP classifier in burn on the CPU (Flex backend), trained
//! with Adam and cross-entropy, early-stopped on validation loss, and stored as a burnpack
//! record next to its preprocessing parameters.
//!
//! Preprocessing is fitted on the training split only: numerical features are standardised
//! (missing values imputed with the training mean), categorical features one-hot encoded
//! over the categories seen in training (unseen ones encode as all zeros). The split is
//! stratified-free but seeded, so a retry of the same cycle trains the same model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{
    CancelFlag, EpochReport, Predictions, Predictor, TrainError, TrainOutput, TrainRequest,
    Trainer, io_err,
};
use crate::config::BurnConfig;
use crate::data::Table;

/// Model card format of burn-trained models.
pub const FORMAT: &str = "burn-mlp-v1";
const WEIGHTS_FILE: &str = "model.bpk";
const PREPROCESS_FILE: &str = "preprocess.json";

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Relu,
    Gelu,
    Tanh,
    LeakyRelu,
}

impl Activation {
    fn apply(self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Activation::Relu => relu(x),
            Activation::Gelu => burn::tensor::activation::gelu(x),
            Activation::Tanh => burn::tensor::activation::tanh(x),
            Activation::LeakyRelu => burn::tensor::activation::leaky_relu(x, 0.01),
        }
    }
}

/// A feature computed from others, the same way when training and when scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Derived {
    /// `a / (b + 1e-8)`.
    Ratio { name: String, a: String, b: String },
    /// `ln(1 + x)` (NaN below -1, then imputed).
    Log1p { name: String, column: String },
}

impl Derived {
    pub fn name(&self) -> &str {
        match self {
            Derived::Ratio { name, .. } | Derived::Log1p { name, .. } => name,
        }
    }

    /// The columns it reads.
    pub fn inputs(&self) -> Vec<&str> {
        match self {
            Derived::Ratio { a, b, .. } => vec![a, b],
            Derived::Log1p { column, .. } => vec![column],
        }
    }

    /// Its value for every row of `table`.
    fn values(&self, table: &Table, model_dir: &Path) -> Result<Vec<f64>, TrainError> {
        let col = |n: &str| {
            table
                .numerical(n)
                .ok_or_else(|| TrainError::MissingFeature {
                    path: model_dir.to_path_buf(),
                    feature: n.to_string(),
                })
        };
        Ok(match self {
            Derived::Ratio { a, b, .. } => {
                let (a, b) = (col(a)?, col(b)?);
                a.iter().zip(b).map(|(x, y)| x / (y + 1e-8)).collect()
            }
            Derived::Log1p { column, .. } => col(column)?.iter().map(|x| x.ln_1p()).collect(),
        })
    }
}

/// A row filter on a numerical column, applied to training rows (`value > 0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowFilter {
    pub column: String,
    pub op: FilterOp,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterOp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl std::str::FromStr for FilterOp {
    type Err = String;
    fn from_str(s: &str) -> Result<FilterOp, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string()))
            .map_err(|_| format!("`{s}` is not a comparison; use >, >=, <, <=, == or !="))
    }
}

impl RowFilter {
    /// Whether a value passes (NaN never does).
    pub fn keeps(&self, x: f64) -> bool {
        match self.op {
            FilterOp::Gt => x > self.value,
            FilterOp::Ge => x >= self.value,
            FilterOp::Lt => x < self.value,
            FilterOp::Le => x <= self.value,
            FilterOp::Eq => x == self.value,
            FilterOp::Ne => !x.is_nan() && x != self.value,
        }
    }
}

/// The training rows after `config.filters` and `config.drop_null_rows`.
pub fn kept_rows(table: &Table, config: &BurnConfig) -> Result<Vec<usize>, TrainError> {
    let mut keep = vec![true; table.rows];
    for f in &config.filters {
        let v = table.numerical(&f.column).ok_or_else(|| {
            TrainError::Command(format!(
                "train.burn.filters: `{}` is not a numerical feature of the training data",
                f.column
            ))
        })?;
        for (k, x) in keep.iter_mut().zip(v) {
            *k &= f.keeps(*x);
        }
    }
    if config.drop_null_rows {
        for (_, v) in &table.numerical {
            for (k, x) in keep.iter_mut().zip(v) {
                *k &= x.is_finite();
            }
        }
        for (_, v) in &table.categorical {
            for (k, x) in keep.iter_mut().zip(v) {
                *k &= !x.is_empty();
            }
        }
    }
    Ok((0..table.rows).filter(|&i| keep[i]).collect())
}

/// Fitted preprocessing: how raw columns become the model's input vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// (feature, mean, std) for each numerical feature.
    pub numerical: Vec<(String, f64, f64)>,
    /// (feature, categories) for each categorical feature.
    pub categorical: Vec<(String, Vec<String>)>,
    /// (feature, mean, std) for each derived feature.
    #[serde(default)]
    pub derived: Vec<(Derived, f64, f64)>,
    /// Class labels; the model's output index i is `classes[i]`.
    pub classes: Vec<String>,
    pub hidden: Vec<usize>,
    pub dropout: f64,
    #[serde(default)]
    pub activation: Activation,
}

/// Mean and standard deviation (population; 1 when constant) of the finite values at `rows`.
fn standardise(v: &[f64], rows: &[usize]) -> (f64, f64) {
    let vals: Vec<f64> = rows
        .iter()
        .map(|&i| v[i])
        .filter(|x| x.is_finite())
        .collect();
    let n = vals.len().max(1) as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let var = vals.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
    (mean, std)
}

impl Preprocess {
    /// Fit on the training rows.
    pub fn fit(
        table: &Table,
        rows: &[usize],
        classes: Vec<String>,
        config: &BurnConfig,
    ) -> Preprocess {
        let numerical = table
            .numerical
            .iter()
            .map(|(name, v)| {
                let (mean, std) = standardise(v, rows);
                (name.clone(), mean, std)
            })
            .collect();
        let categorical = table
            .categorical
            .iter()
            .map(|(name, v)| {
                let mut cats: Vec<String> = rows.iter().map(|&i| v[i].clone()).collect();
                cats.sort();
                cats.dedup();
                (name.clone(), cats)
            })
            .collect();
        let derived = config
            .derived
            .iter()
            .map(|d| {
                // Inputs were checked by `kept_rows`' caller; a missing one yields NaNs here
                // and the error surfaces when encoding.
                let v = d.values(table, Path::new("")).unwrap_or_default();
                let (mean, std) = if v.is_empty() {
                    (0.0, 1.0)
                } else {
                    standardise(&v, rows)
                };
                (d.clone(), mean, std)
            })
            .collect();
        Preprocess {
            numerical,
            categorical,
            derived,
            classes,
            hidden: config.hidden.clone(),
            dropout: config.dropout,
            activation: config.activation,
        }
    }

    pub fn width(&self) -> usize {
        self.numerical.len()
            + self.derived.len()
            + self.categorical.iter().map(|(_, c)| c.len()).sum::<usize>()
    }

    /// Encode `rows` of `table` as a row-major matrix.
    pub fn encode(
        &self,
        table: &Table,
        rows: &[usize],
        model_dir: &Path,
    ) -> Result<Vec<f32>, TrainError> {
        let missing = |feature: &str| TrainError::MissingFeature {
            path: model_dir.to_path_buf(),
            feature: feature.to_string(),
        };
        let nums = self
            .numerical
            .iter()
            .map(|(n, m, s)| {
                table
                    .numerical(n)
                    .map(|v| (v, *m, *s))
                    .ok_or_else(|| missing(n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let cats = self
            .categorical
            .iter()
            .map(|(n, c)| {
                table
                    .categorical(n)
                    .map(|v| (v, c))
                    .ok_or_else(|| missing(n))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let derived = self
            .derived
            .iter()
            .map(|(d, m, s)| Ok((d.values(table, model_dir)?, *m, *s)))
            .collect::<Result<Vec<_>, TrainError>>()?;
        let mut out = Vec::with_capacity(rows.len() * self.width());
        for &r in rows {
            for (v, mean, std) in nums
                .iter()
                .map(|(v, m, s)| (*v, m, s))
                .chain(derived.iter().map(|(v, m, s)| (v.as_slice(), m, s)))
            {
                let x = if v[r].is_finite() { v[r] } else { *mean };
                out.push(((x - mean) / std) as f32);
            }
            for (v, categories) in &cats {
                let hit = categories.binary_search(&v[r]).ok();
                out.extend((0..categories.len()).map(|i| if Some(i) == hit { 1.0 } else { 0.0 }));
            }
        }
        Ok(out)
    }
}

/// The network: hidden Linear+activation+Dropout blocks, then a Linear to class logits.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<Linear>,
    output: Linear,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl Mlp {
    pub fn new(
        input: usize,
        hidden: &[usize],
        classes: usize,
        dropout: f64,
        activation: Activation,
        device: &Device,
    ) -> Mlp {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut width = input;
        for &h in hidden {
            layers.push(LinearConfig::new(width, h).init(device));
            width = h;
        }
        Mlp {
            hidden: layers,
            output: LinearConfig::new(width, classes).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            activation,
        }
    }

    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let mut x = x;
        for layer in &self.hidden {
            x = self
                .dropout
                .forward(self.activation.apply(layer.forward(x)));
        }
        self.output.forward(x)
    }
}

fn matrix(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(values, [rows, cols]), device)
}

fn labels(values: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = values.len();
    Tensor::<1, Int>::from_data(TensorData::new(values, [n]), device)
}

fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

fn to_f32(t: Tensor<2>) -> Vec<f32> {
    t.into_data().try_to_vec_as::<f32>().unwrap_or_default()
}

/// Loss and predicted class indices of `model` (in validation mode) on encoded rows.
fn evaluate(
    model: &Mlp,
    x: &[f32],
    y: &[i64],
    width: usize,
    classes: usize,
    device: &Device,
) -> (f64, Vec<usize>) {
    let n = y.len();
    if n == 0 {
        return (f64::NAN, Vec::new());
    }
    let logits = model.forward(matrix(x.to_vec(), n, width, device));
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits.clone(), labels(y.to_vec(), device));
    let loss = f64::from(loss.into_scalar::<f32>());
    (loss, argmax_rows(&to_f32(logits), classes))
}

/// Split row indices into (validation, training) with each class's share of the validation
/// split equal to its share of the data (at least one row per class that has two), seeded.
pub fn stratified_split(
    target: &[String],
    classes: &[String],
    share: f64,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<usize>, Vec<usize>) {
    let (mut valid, mut train) = (Vec::new(), Vec::new());
    for class in classes {
        let mut rows: Vec<usize> = (0..target.len()).filter(|&i| &target[i] == class).collect();
        rows.shuffle(rng);
        let mut k = (rows.len() as f64 * share).round() as usize;
        if k == 0 && rows.len() >= 2 {
            k = 1;
        }
        valid.extend_from_slice(&rows[..k]);
        train.extend_from_slice(&rows[k..]);
    }
    valid.shuffle(rng);
    train.shuffle(rng);
    (valid, train)
}

/// One burn training at a time per process (see `BurnTrainer::train`).
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The burn trainer (default backend).
#[derive(Debug, Default, Clone, Copy)]
pub struct BurnTrainer;

impl Trainer for BurnTrainer {
    fn name(&self) -> &'static str {
        "burn"
    }

    fn train(
        &self,
        request: &TrainRequest,
        cancel: &CancelFlag,
        progress: &(dyn Fn(&EpochReport) + Send + Sync),
    ) -> Result<TrainOutput, TrainError> {
        let started = Instant::now();
        let cfg = &request.config;
        for d in &cfg.derived {
            for input in d.inputs() {
                if request.data.numerical(input).is_none() {
                    return Err(TrainError::Command(format!(
                        "train.burn.derived `{}` reads `{input}`, which is not a numerical feature of the data",
                        d.name()
                    )));
                }
            }
        }
        // Row filters and null dropping shape what the model learns from; scoring sees every
        // row (derived features are computed the same way there).
        let kept = kept_rows(&request.data, cfg)?;
        let filtered;
        let table = if kept.len() == request.data.rows {
            &request.data
        } else {
            filtered = request.data.take(&kept);
            &filtered
        };
        let target = table
            .target
            .as_ref()
            .ok_or_else(|| TrainError::NoLabels("target".into()))?;
        let mut classes: Vec<String> = target.clone();
        classes.sort();
        classes.dedup();
        if classes.len() < 2 {
            return Err(TrainError::OneClass(
                classes.first().cloned().unwrap_or_default(),
            ));
        }
        let n_valid = ((table.rows as f64) * cfg.validation_share).round() as usize;
        if n_valid < 1 || table.rows - n_valid < 2 {
            return Err(TrainError::TooFewRows {
                rows: table.rows,
                needed: 3,
            });
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let (valid_rows, train_rows) =
            stratified_split(target, &classes, cfg.validation_share, &mut rng);
        if valid_rows.is_empty() || train_rows.len() < 2 {
            return Err(TrainError::TooFewRows {
                rows: table.rows,
                needed: 3,
            });
        }
        let (valid_rows, train_rows) = (valid_rows.as_slice(), train_rows.as_slice());
        let pre = Preprocess::fit(table, train_rows, classes.clone(), cfg);
        let width = pre.width();
        let class_of = |r: usize| {
            classes
                .binary_search(&target[r])
                .map(|i| i as i64)
                .unwrap_or(0)
        };
        let x_train = pre.encode(table, train_rows, &request.out_dir)?;
        let y_train: Vec<i64> = train_rows.iter().map(|&r| class_of(r)).collect();
        let x_valid = pre.encode(table, valid_rows, &request.out_dir)?;
        let y_valid: Vec<i64> = valid_rows.iter().map(|&r| class_of(r)).collect();

        // burn's CPU backend draws initial weights and dropout masks from one process-wide
        // generator: two trainings at once would interleave their draws and neither would be
        // reproducible. Trainings in one process take turns (cycles of other pipelines wait
        // here, off the async runtime).
        let _turn = loop {
            match TRAINING.try_lock() {
                Ok(guard) => break guard,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    // Waiting for another pipeline's training; a shutdown or timeout still
                    // stops this one.
                    if cancel.is_cancelled() {
                        return Err(TrainError::Cancelled);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        };
        let device = Device::default().autodiff();
        device.seed(cfg.seed);
        let mut model = Mlp::new(
            width,
            &cfg.hidden,
            classes.len(),
            cfg.dropout,
            cfg.activation,
            &device,
        );
        let mut optim = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);

        let mut best: Option<(f64, usize, Mlp, f64)> = None;
        let mut history = Vec::new();
        let mut idx: Vec<usize> = (0..train_rows.len()).collect();
        for epoch in 1..=cfg.epochs {
            if cancel.is_cancelled() {
                return Err(TrainError::Cancelled);
            }
            idx.shuffle(&mut rng);
            let mut total = 0.0;
            for batch in idx.chunks(cfg.batch_size) {
                let mut xb = Vec::with_capacity(batch.len() * width);
                for &i in batch {
                    xb.extend_from_slice(&x_train[i * width..(i + 1) * width]);
                }
                let yb: Vec<i64> = batch.iter().map(|&i| y_train[i]).collect();
                let logits = model.forward(matrix(xb, batch.len(), width, &device));
                let loss = loss_fn.forward(logits, labels(yb, &device));
                let value = f64::from(loss.clone().into_scalar::<f32>());
                if !value.is_finite() {
                    return Err(TrainError::NanLoss(epoch));
                }
                total += value * batch.len() as f64;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(cfg.learning_rate, model, grads);
            }
            let valid_model = model.valid();
            let (valid_loss, predicted) = evaluate(
                &valid_model,
                &x_valid,
                &y_valid,
                width,
                classes.len(),
                &valid_model_device(&device),
            );
            let names =
                |v: &[usize]| -> Vec<String> { v.iter().map(|&i| classes[i].clone()).collect() };
            let truth: Vec<usize> = y_valid.iter().map(|&y| y as usize).collect();
            let (truth, predicted) = (names(&truth), names(&predicted));
            let valid_accuracy = crate::performance::accuracy(&truth, &predicted);
            let report = EpochReport {
                epoch,
                train_loss: total / train_rows.len() as f64,
                valid_loss,
                valid_accuracy,
                valid_f1: Some(crate::performance::f1_weighted(&truth, &predicted)),
            };
            progress(&report);
            history.push(report);
            if cfg.fail_below_accuracy > 0.0
                && epoch == cfg.fail_check_epoch
                && valid_accuracy < cfg.fail_below_accuracy
            {
                return Err(TrainError::FailedToLearn {
                    epoch,
                    accuracy: valid_accuracy,
                    floor: cfg.fail_below_accuracy,
                });
            }
            let improved = best.as_ref().is_none_or(|(l, ..)| valid_loss < *l);
            if improved {
                best = Some((valid_loss, epoch, valid_model, valid_accuracy));
            } else if best
                .as_ref()
                .is_some_and(|(_, e, ..)| epoch - e >= cfg.patience)
            {
                break;
            }
        }
        let Some((valid_loss, best_epoch, best_model, valid_accuracy)) = best else {
            return Err(TrainError::TooFewRows {
                rows: table.rows,
                needed: 3,
            });
        };
        save(&request.out_dir, best_model, &pre)?;
        Ok(TrainOutput {
            format: FORMAT.to_string(),
            extra_metrics: Default::default(),
            remote_run: None,
            epochs_run: history.len(),
            best_epoch,
            valid_accuracy,
            valid_loss,
            train_rows: train_rows.len(),
            valid_rows: valid_rows.len(),
            duration_seconds: started.elapsed().as_secs_f64(),
            history,
        })
    }
}

/// Validation runs on the same device without gradient tracking (`Module::valid` already
/// disables it on the parameters); inputs are created on the plain device.
fn valid_model_device(device: &Device) -> Device {
    device.clone().inner()
}

fn save(dir: &Path, model: Mlp, pre: &Preprocess) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let weights = dir.join(WEIGHTS_FILE);
    model.save_file(&weights).map_err(|e| TrainError::Io {
        path: weights.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let pre_path = dir.join(PREPROCESS_FILE);
    let text = serde_json::to_vec_pretty(pre).map_err(|e| TrainError::Io {
        path: pre_path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&pre_path, text).map_err(io_err(&pre_path))?;
    Ok(())
}

/// A stored burn model, loaded for scoring.
pub struct BurnModel {
    dir: PathBuf,
    model: Mlp,
    pre: Preprocess,
    device: Device,
}

impl BurnModel {
    pub fn load(dir: &Path) -> Result<BurnModel, TrainError> {
        let load_err = |message: String| TrainError::Load {
            path: dir.to_path_buf(),
            message,
        };
        let text = std::fs::read(dir.join(PREPROCESS_FILE)).map_err(|e| load_err(e.to_string()))?;
        let pre: Preprocess = serde_json::from_slice(&text).map_err(|e| load_err(e.to_string()))?;
        let device = Device::default();
        let model = Mlp::new(
            pre.width(),
            &pre.hidden,
            pre.classes.len(),
            pre.dropout,
            pre.activation,
            &device,
        )
        .try_load_file(dir.join(WEIGHTS_FILE))
        .map_err(|e| load_err(e.to_string()))?
        .valid();
        Ok(BurnModel {
            dir: dir.to_path_buf(),
            model,
            pre,
            device,
        })
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }
}

impl Predictor for BurnModel {
    fn predict_scored(&self, table: &Table) -> Result<Predictions, TrainError> {
        let rows: Vec<usize> = (0..table.rows).collect();
        let classes = self.pre.classes.len();
        let mut labels = Vec::with_capacity(table.rows);
        let mut probabilities = Vec::with_capacity(table.rows * classes);
        let width = self.pre.width();
        for chunk in rows.chunks(4096) {
            let x = self.pre.encode(table, chunk, &self.dir)?;
            let logits = to_f32(
                self.model
                    .forward(matrix(x, chunk.len(), width, &self.device)),
            );
            labels.extend(
                argmax_rows(&logits, classes)
                    .into_iter()
                    .map(|i| self.pre.classes[i].clone()),
            );
            for row in logits.chunks(classes) {
                // Softmax, shifted by the row's maximum for stability.
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let exp: Vec<f64> = row.iter().map(|&v| f64::from(v - max).exp()).collect();
                let sum: f64 = exp.iter().sum();
                probabilities.extend(exp.iter().map(|e| e / sum));
            }
        }
        Ok(Predictions {
            classes: self.pre.classes.clone(),
            labels,
            probabilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Input, RoleSpec, load_inferred};

    fn config() -> BurnConfig {
        BurnConfig {
            hidden: vec![32, 16],
            dropout: 0.1,
            learning_rate: 0.01,
            batch_size: 64,
            epochs: 15,
            patience: 5,
            validation_share: 0.2,
            seed: 42,
            fail_below_accuracy: 0.1,
            fail_check_epoch: 5,
            activation: Activation::Relu,
            derived: Vec::new(),
            filters: Vec::new(),
            drop_null_rows: false,
        }
    }

    fn demo_table(dir: &Path) -> Table {
        let path = dir.join("d.csv");
        crate::demo::generate(&path, 3000, crate::demo::Regime::NORMAL, 7).unwrap();
        let categorical = vec!["segment".to_string()];
        let spec = RoleSpec {
            target: "target",
            categorical: Some(&categorical),
            ..RoleSpec::default()
        };
        load_inferred(&Input::file(&path), &spec, true).unwrap().1
    }

    fn request(table: &Table, out: &Path, config: BurnConfig) -> TrainRequest {
        TrainRequest {
            pipeline: "p".into(),
            cycle_id: 1,
            data: table.clone(),
            config,
            out_dir: out.to_path_buf(),
            inputs: serde_json::Value::Null,
            remote_run: None,
            record_remote_run: Default::default(),
            timeout: std::time::Duration::from_secs(600),
        }
    }

    /// The seed's registration threshold (0.9) on the demo data, and the same model twice
    /// from the same seed.
    #[test]
    fn demo_data_trains_past_the_threshold_deterministically() {
        let dir = tempfile::tempdir().unwrap();
        let table = demo_table(dir.path());
        let run = |name: &str| {
            let out = dir.path().join(name);
            let o = BurnTrainer
                .train(
                    &request(&table, &out, config()),
                    &CancelFlag::default(),
                    &|_| {},
                )
                .unwrap();
            let scores = BurnModel::load(&out)
                .unwrap()
                .predict_scored(&table)
                .unwrap();
            (o, scores)
        };
        let (a, sa) = run("a");
        let (b, sb) = run("b");
        assert!(a.valid_accuracy >= 0.9, "{}", a.valid_accuracy);
        assert!(a.history.iter().all(|e| e.valid_f1.is_some()));
        assert_eq!(a.history, b.history);
        // The weight files differ in burn's random parameter ids, not in the weights.
        assert_eq!(sa, sb, "same seed, same model");
        let labels = table.target.clone().unwrap();
        let acc = crate::performance::accuracy(&labels, &sa.labels);
        assert!(acc >= 0.9, "{acc}");
    }

    #[test]
    fn a_model_that_fails_to_learn_is_aborted() {
        let dir = tempfile::tempdir().unwrap();
        let table = demo_table(dir.path());
        let strict = BurnConfig {
            fail_below_accuracy: 0.999,
            fail_check_epoch: 2,
            ..config()
        };
        let e = BurnTrainer
            .train(
                &request(&table, &dir.path().join("m"), strict),
                &CancelFlag::default(),
                &|_| {},
            )
            .unwrap_err();
        assert!(
            matches!(e, TrainError::FailedToLearn { epoch: 2, .. }),
            "{e}"
        );
    }

    /// The seed's preprocessing, configured: a row filter, a ratio and a log1p feature, and
    /// another activation. Scoring applies the same derived features.
    #[test]
    fn configured_preprocessing_is_fitted_saved_and_applied() {
        let dir = tempfile::tempdir().unwrap();
        let table = demo_table(dir.path());
        let cfg = BurnConfig {
            activation: Activation::Gelu,
            derived: vec![
                Derived::Ratio {
                    name: "a_per_b".into(),
                    a: "feature_a".into(),
                    b: "feature_b".into(),
                },
                Derived::Log1p {
                    name: "log_value".into(),
                    column: "value".into(),
                },
            ],
            filters: vec![RowFilter {
                column: "feature_c".into(),
                op: FilterOp::Gt,
                value: 0.0,
            }],
            ..config()
        };
        let kept = kept_rows(&table, &cfg).unwrap();
        let positive = table
            .numerical("feature_c")
            .unwrap()
            .iter()
            .filter(|c| **c > 0.0)
            .count();
        assert_eq!(kept.len(), positive);
        let out = dir.path().join("m");
        let o = BurnTrainer
            .train(&request(&table, &out, cfg), &CancelFlag::default(), &|_| {})
            .unwrap();
        assert_eq!(o.train_rows + o.valid_rows, positive);
        let model = BurnModel::load(&out).unwrap();
        let pre = model.preprocess();
        assert_eq!(pre.activation, Activation::Gelu);
        assert_eq!(pre.derived.len(), 2);
        assert_eq!(pre.width(), 4 + 2 + 3);
        // Every row is scored, filtered or not.
        assert_eq!(model.predict(&table).unwrap().len(), table.rows);
        // A derived feature whose input is missing is refused up front.
        let bad = BurnConfig {
            derived: vec![Derived::Log1p {
                name: "x".into(),
                column: "nope".into(),
            }],
            ..config()
        };
        let e = BurnTrainer
            .train(
                &request(&table, &dir.path().join("n"), bad),
                &CancelFlag::default(),
                &|_| {},
            )
            .unwrap_err();
        assert!(e.to_string().contains("`nope`"), "{e}");
    }

    #[test]
    fn the_split_keeps_each_class_share() {
        let target: Vec<String> = (0..1000)
            .map(|i| if i % 10 == 0 { "rare" } else { "common" }.to_string())
            .collect();
        let classes = vec!["common".to_string(), "rare".to_string()];
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (valid, train) = stratified_split(&target, &classes, 0.2, &mut rng);
        assert_eq!(valid.len() + train.len(), 1000);
        let rare = valid.iter().filter(|&&i| target[i] == "rare").count();
        assert_eq!((valid.len(), rare), (200, 20));
        let mut all: Vec<usize> = valid.iter().chain(&train).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }
}
