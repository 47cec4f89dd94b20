//! The local trainer: a tabular MLP in burn on the CPU (Flex backend) — a classifier trained
//! with cross-entropy, or a regressor trained with mean squared error on the standardised
//! target — optimised with Adam, early-stopped on validation loss, and stored as a burnpack
//! record next to its preprocessing parameters.
//!
//! Preprocessing is fitted on the training split only: numerical features are standardised
//! (missing values imputed with the training mean), categorical features one-hot encoded
//! over the categories seen in training (unseen ones encode as all zeros), a regressor's
//! target standardised too (and scaled back when scoring). The validation split is
//! stratified (by class, or by the target's decile) and seeded, so a retry of the same cycle
//! trains the same model.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
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
use crate::performance::Task;

/// Model card format of burn-trained models.
pub const FORMAT: &str = "burn-mlp-v1";
const WEIGHTS_FILE: &str = "model.bpk";
const PREPROCESS_FILE: &str = "preprocess.json";

/// Where a burn model trains.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeDevice {
    /// burn's Flex backend on the CPU (default; the same seed gives the same model).
    #[default]
    Cpu,
    /// An NVIDIA GPU by index (a retraind built with `--features cuda`).
    Cuda(usize),
    /// The best GPU wgpu finds: Vulkan, Metal or DX12 (a retraind built with `--features wgpu`).
    Wgpu,
}

impl std::str::FromStr for ComputeDevice {
    type Err = String;
    /// `cpu`, `cuda`, `cuda:N` or `wgpu`; a GPU this build cannot drive is refused with the
    /// rebuild command.
    fn from_str(s: &str) -> Result<ComputeDevice, String> {
        let needs = |feature: &str| {
            format!(
                "`{s}` needs a retraind built with the `{feature}` feature (cargo build --release --features {feature}); this one has {}",
                ComputeDevice::compiled().join(", ")
            )
        };
        let device = match s {
            "cpu" => return Ok(ComputeDevice::Cpu),
            "wgpu" => ComputeDevice::Wgpu,
            "cuda" => ComputeDevice::Cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(i)) => ComputeDevice::Cuda(i),
                _ => {
                    return Err(format!(
                        "`{s}` is not a device; use \"cpu\" (default), \"cuda\", \"cuda:N\" or \"wgpu\""
                    ));
                }
            },
        };
        let feature = match device {
            ComputeDevice::Wgpu => "wgpu",
            _ => "cuda",
        };
        if ComputeDevice::compiled().contains(&feature) {
            Ok(device)
        } else {
            Err(needs(feature))
        }
    }
}

impl ComputeDevice {
    /// The devices this build can train on.
    pub fn compiled() -> Vec<&'static str> {
        let mut out = vec!["cpu"];
        if cfg!(feature = "cuda") {
            out.push("cuda");
        }
        if cfg!(feature = "wgpu") {
            out.push("wgpu");
        }
        out
    }

    /// The burn device. A GPU this build cannot drive (a model card from another build) is an
    /// error, not a silent fallback.
    pub fn device(self) -> Result<Device, TrainError> {
        match self {
            ComputeDevice::Cpu => Ok(Device::flex()),
            #[cfg(feature = "cuda")]
            ComputeDevice::Cuda(i) => Ok(Device::cuda(i)),
            #[cfg(feature = "wgpu")]
            ComputeDevice::Wgpu => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
            #[allow(unreachable_patterns)]
            other => Err(TrainError::Command(format!(
                "train.burn.device {other:?} is not available in this build (it has {})",
                ComputeDevice::compiled().join(", ")
            ))),
        }
    }
}

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
    /// Classifier or regressor (older models: classifiers).
    #[serde(default)]
    pub task: Task,
    /// Class labels; the model's output index i is `classes[i]` (empty for a regressor).
    pub classes: Vec<String>,
    /// A regressor's target (mean, std) on the training split: output × std + mean.
    #[serde(default)]
    pub target_scale: Option<(f64, f64)>,
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
            task: config.task,
            classes,
            target_scale: None,
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

/// The network: hidden Linear+activation+Dropout blocks, then a Linear to class logits (or
/// to the one standardised value of a regressor).
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
        outputs: usize,
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
            output: LinearConfig::new(width, outputs).init(device),
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

/// What the network learns to predict, encoded: class indices (cross-entropy) or the
/// standardised target (mean squared error).
enum Targets {
    Classes(Vec<i64>),
    Values(Vec<f32>),
}

impl Targets {
    fn len(&self) -> usize {
        match self {
            Targets::Classes(v) => v.len(),
            Targets::Values(v) => v.len(),
        }
    }

    /// The loss of `outputs` against the targets at `rows` (all when `None`).
    fn loss(&self, outputs: Tensor<2>, rows: Option<&[usize]>, device: &Device) -> Tensor<1> {
        fn pick<T: Copy>(v: &[T], rows: Option<&[usize]>) -> Vec<T> {
            match rows {
                Some(r) => r.iter().map(|&i| v[i]).collect(),
                None => v.to_vec(),
            }
        }
        match self {
            Targets::Classes(y) => CrossEntropyLossConfig::new()
                .init(device)
                .forward(outputs, labels(pick(y, rows), device)),
            Targets::Values(y) => {
                let y = pick(y, rows);
                let n = y.len();
                MseLoss::new().forward(outputs, matrix(y, n, 1, device), Reduction::Mean)
            }
        }
    }
}

/// A model's validation answers, decoded: class names, or numbers in the target's units.
enum Answers {
    Classes(Vec<String>),
    Values(Vec<f64>),
}

impl Preprocess {
    /// Output width of the network: one logit per class, or one value.
    fn outputs(&self) -> usize {
        match self.task {
            Task::Classification => self.classes.len(),
            Task::Regression => 1,
        }
    }

    /// The network's raw outputs for rows, decoded.
    fn decode(&self, outputs: &[f32]) -> Answers {
        match (self.task, self.target_scale) {
            (Task::Regression, scale) => {
                let (mean, std) = scale.unwrap_or((0.0, 1.0));
                Answers::Values(outputs.iter().map(|&v| f64::from(v) * std + mean).collect())
            }
            (Task::Classification, _) => Answers::Classes(
                argmax_rows(outputs, self.classes.len())
                    .into_iter()
                    .map(|i| self.classes[i].clone())
                    .collect(),
            ),
        }
    }
}

/// Loss and decoded answers of `model` (in validation mode) on encoded rows.
fn evaluate(
    model: &Mlp,
    pre: &Preprocess,
    x: &[f32],
    y: &Targets,
    device: &Device,
) -> (f64, Answers) {
    let n = y.len();
    let outputs = model.forward(matrix(x.to_vec(), n, pre.width(), device));
    let loss = y.loss(outputs.clone(), None, device);
    let loss = f64::from(loss.into_scalar::<f32>());
    (loss, pre.decode(&to_f32(outputs)))
}

/// The numeric target of a regressor; a non-numeric value is refused with the first such
/// value and how many rows have one.
fn numeric_target(target: &[String]) -> Result<Vec<f64>, TrainError> {
    let parse = |v: &String| v.trim().parse::<f64>().ok().filter(|x| x.is_finite());
    let values: Vec<Option<f64>> = target.iter().map(parse).collect();
    let bad = values.iter().filter(|v| v.is_none()).count();
    match target.iter().zip(&values).find(|(_, v)| v.is_none()) {
        Some((value, _)) => Err(TrainError::NotNumeric {
            value: value.clone(),
            rows: bad,
        }),
        None => Ok(values.into_iter().flatten().collect()),
    }
}

/// What a split is stratified by, per row: the class, or for a regressor the target's
/// decile (one stratum for a target that is not all numbers, which a regressor refuses).
pub fn strata(target: &[String], task: Task) -> Vec<String> {
    match task {
        Task::Classification => target.to_vec(),
        Task::Regression => match numeric_target(target) {
            Ok(values) => deciles(&values),
            Err(_) => vec![String::new(); target.len()],
        },
    }
}

/// Strata for a numeric target: its decile (by rank), so the validation split covers the
/// whole range as a stratified split covers every class.
fn deciles(values: &[f64]) -> Vec<String> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut bins = vec![String::new(); values.len()];
    for (rank, &i) in order.iter().enumerate() {
        bins[i] = format!("{}", rank * 10 / values.len().max(1));
    }
    bins
}

/// Split row indices into (held out, rest): `round(rows × share)` rows held out, shared
/// among the strata in proportion to their size (largest remainders get the rounding), so
/// each stratum keeps its share and a small table still gets its whole held-out part. Seeded.
pub fn stratified_split(
    strata: &[String],
    share: f64,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<usize>, Vec<usize>) {
    // One pass to group the rows (a target with many values costs no more than one with two).
    let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, s) in strata.iter().enumerate() {
        groups.entry(s.as_str()).or_default().push(i);
    }
    let total = ((strata.len() as f64) * share).round() as usize;
    let ideal: Vec<f64> = groups
        .values()
        .map(|rows| rows.len() as f64 * share)
        .collect();
    let mut take: Vec<usize> = ideal.iter().map(|q| q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..ideal.len()).collect();
    // Largest remainder first; ties by size of the stratum, then by name order (stable).
    order.sort_by(|&a, &b| (ideal[b] - ideal[b].floor()).total_cmp(&(ideal[a] - ideal[a].floor())));
    let short = total.saturating_sub(take.iter().sum());
    for &k in order.iter().take(short) {
        take[k] += 1;
    }
    let (mut held, mut rest) = (Vec::new(), Vec::new());
    for (mut rows, k) in groups.into_values().zip(take) {
        rows.shuffle(rng);
        let k = k.min(rows.len());
        held.extend_from_slice(&rows[..k]);
        rest.extend_from_slice(&rows[k..]);
    }
    held.shuffle(rng);
    rest.shuffle(rng);
    (held, rest)
}

/// One burn training at a time per process (see `BurnTrainer::train`).
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The burn trainer (default backend).
#[derive(Debug, Default, Clone, Copy)]
pub struct BurnTrainer;

/// A finished epoch's validation metrics, by task.
fn epoch_metrics(
    truth: &Answers,
    answers: &Answers,
) -> (Option<f64>, Option<f64>, Option<f64>, Option<f64>) {
    match (truth, answers) {
        (Answers::Classes(t), Answers::Classes(p)) => (
            Some(crate::performance::accuracy(t, p)),
            Some(crate::performance::f1_weighted(t, p)),
            None,
            None,
        ),
        (Answers::Values(t), Answers::Values(p)) => (
            None,
            None,
            Some(crate::performance::rmse(t, p)),
            Some(crate::performance::r2(t, p)),
        ),
        _ => (None, None, None, None),
    }
}

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
        // Classes (or, for a regressor, the target's deciles) stratify the split.
        let (classes, values) = match cfg.task {
            Task::Classification => {
                let mut classes: Vec<String> = target.clone();
                classes.sort();
                classes.dedup();
                if classes.len() < 2 {
                    return Err(TrainError::OneClass(
                        classes.first().cloned().unwrap_or_default(),
                    ));
                }
                (classes, Vec::new())
            }
            Task::Regression => (Vec::new(), numeric_target(target)?),
        };
        let strata = strata(target, cfg.task);
        let n_valid = ((table.rows as f64) * cfg.validation_share).round() as usize;
        if n_valid < 1 || table.rows - n_valid < 2 {
            return Err(TrainError::TooFewRows {
                rows: table.rows,
                needed: 3,
            });
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let (valid_rows, train_rows) = stratified_split(&strata, cfg.validation_share, &mut rng);
        if valid_rows.is_empty() || train_rows.len() < 2 {
            return Err(TrainError::TooFewRows {
                rows: table.rows,
                needed: 3,
            });
        }
        let (valid_rows, train_rows) = (valid_rows.as_slice(), train_rows.as_slice());
        let mut pre = Preprocess::fit(table, train_rows, classes.clone(), cfg);
        let width = pre.width();
        let (y_train, y_valid, truth) = match cfg.task {
            Task::Classification => {
                let class_of = |r: &usize| {
                    classes
                        .binary_search(&target[*r])
                        .map(|i| i as i64)
                        .unwrap_or(0)
                };
                (
                    Targets::Classes(train_rows.iter().map(class_of).collect()),
                    Targets::Classes(valid_rows.iter().map(class_of).collect()),
                    Answers::Classes(valid_rows.iter().map(|&r| target[r].clone()).collect()),
                )
            }
            Task::Regression => {
                // The target is standardised with the training split's mean and deviation
                // (saved with the model), so one learning rate suits any unit.
                let (mean, std) = standardise(&values, train_rows);
                pre.target_scale = Some((mean, std));
                let scaled = |rows: &[usize]| {
                    rows.iter()
                        .map(|&r| ((values[r] - mean) / std) as f32)
                        .collect()
                };
                (
                    Targets::Values(scaled(train_rows)),
                    Targets::Values(scaled(valid_rows)),
                    Answers::Values(valid_rows.iter().map(|&r| values[r]).collect()),
                )
            }
        };
        let x_train = pre.encode(table, train_rows, &request.out_dir)?;
        let x_valid = pre.encode(table, valid_rows, &request.out_dir)?;

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
        let device = cfg.device.device()?.autodiff();
        device.seed(cfg.seed);
        let mut model = Mlp::new(
            width,
            &cfg.hidden,
            pre.outputs(),
            cfg.dropout,
            cfg.activation,
            &device,
        );
        let mut optim = AdamConfig::new().init();

        let mut best: Option<(f64, usize, Mlp, EpochReport)> = None;
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
                let outputs = model.forward(matrix(xb, batch.len(), width, &device));
                let loss = y_train.loss(outputs, Some(batch), &device);
                let value = f64::from(loss.clone().into_scalar::<f32>());
                if !value.is_finite() {
                    return Err(TrainError::NanLoss(epoch));
                }
                total += value * batch.len() as f64;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(cfg.learning_rate, model, grads);
            }
            let valid_model = model.valid();
            let (valid_loss, answers) = evaluate(
                &valid_model,
                &pre,
                &x_valid,
                &y_valid,
                &valid_model_device(&device),
            );
            if !valid_loss.is_finite() {
                return Err(TrainError::NanLoss(epoch));
            }
            let (valid_accuracy, valid_f1, valid_rmse, valid_r2) = epoch_metrics(&truth, &answers);
            let report = EpochReport {
                epoch,
                train_loss: total / train_rows.len() as f64,
                valid_loss,
                valid_accuracy,
                valid_f1,
                valid_rmse,
                valid_r2,
            };
            progress(&report);
            history.push(report);
            if epoch == cfg.fail_check_epoch {
                if let Some(accuracy) = valid_accuracy
                    && cfg.fail_below_accuracy > 0.0
                    && accuracy < cfg.fail_below_accuracy
                {
                    return Err(TrainError::FailedToLearn {
                        epoch,
                        metric: "accuracy",
                        value: accuracy,
                        floor: cfg.fail_below_accuracy,
                        key: "fail_below_accuracy",
                    });
                }
                if let (Some(r2), Some(floor)) = (valid_r2, cfg.fail_below_r2)
                    && r2 < floor
                {
                    return Err(TrainError::FailedToLearn {
                        epoch,
                        metric: "R²",
                        value: r2,
                        floor,
                        key: "fail_below_r2",
                    });
                }
            }
            let improved = best.as_ref().is_none_or(|(l, ..)| valid_loss < *l);
            if improved {
                best = Some((valid_loss, epoch, valid_model, report));
            } else if best
                .as_ref()
                .is_some_and(|(_, e, ..)| epoch - e >= cfg.patience)
            {
                break;
            }
        }
        let Some((valid_loss, best_epoch, best_model, best_report)) = best else {
            return Err(TrainError::TooFewRows {
                rows: table.rows,
                needed: 3,
            });
        };
        save(&request.out_dir, best_model, &pre)?;
        let mut extra_metrics = std::collections::BTreeMap::new();
        for (key, value) in [
            ("valid_f1", best_report.valid_f1),
            ("valid_rmse", best_report.valid_rmse),
            ("valid_r2", best_report.valid_r2),
        ] {
            if let Some(v) = value {
                extra_metrics.insert(key.to_string(), v);
            }
        }
        Ok(TrainOutput {
            format: FORMAT.to_string(),
            extra_metrics,
            remote_run: None,
            epochs_run: history.len(),
            best_epoch,
            valid_accuracy: best_report.valid_accuracy,
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
        // Scoring runs on the CPU whatever trained the model: batches are small, and the
        // daemon's scoring must not depend on a GPU being free.
        let device = Device::flex();
        let model = Mlp::new(
            pre.width(),
            &pre.hidden,
            pre.outputs(),
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
            let outputs = to_f32(
                self.model
                    .forward(matrix(x, chunk.len(), width, &self.device)),
            );
            match self.pre.decode(&outputs) {
                // A regressor's prediction is its number, written so it reads back exactly.
                Answers::Values(v) => labels.extend(v.iter().map(|x| x.to_string())),
                Answers::Classes(c) => {
                    labels.extend(c);
                    for row in outputs.chunks(classes) {
                        // Softmax, shifted by the row's maximum for stability.
                        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let exp: Vec<f64> = row.iter().map(|&v| f64::from(v - max).exp()).collect();
                        let sum: f64 = exp.iter().sum();
                        probabilities.extend(exp.iter().map(|e| e / sum));
                    }
                }
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
            task: Task::Classification,
            fail_below_r2: None,
            device: ComputeDevice::Cpu,
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
        demo_table_for(dir, Task::Classification)
    }

    fn demo_table_for(dir: &Path, task: Task) -> Table {
        let path = dir.join(format!("{}.csv", task.name()));
        crate::demo::generate_for(&path, 3000, crate::demo::Regime::NORMAL, 7, task).unwrap();
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
        assert!(a.valid_accuracy.unwrap() >= 0.9, "{:?}", a.valid_accuracy);
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
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (valid, train) = stratified_split(&target, 0.2, &mut rng);
        assert_eq!(valid.len() + train.len(), 1000);
        let rare = valid.iter().filter(|&&i| target[i] == "rare").count();
        assert_eq!((valid.len(), rare), (200, 20));
        let mut all: Vec<usize> = valid.iter().chain(&train).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    /// A regressor on the demo features (target ≈ 100 ± 40): R² past 0.9 on the data,
    /// deterministically, predictions in the target's units, the split stratified by decile.
    #[test]
    fn a_regressor_learns_the_target_in_its_units() {
        let dir = tempfile::tempdir().unwrap();
        let table = demo_table_for(dir.path(), Task::Regression);
        let cfg = BurnConfig {
            task: Task::Regression,
            fail_below_r2: Some(0.0),
            ..config()
        };
        let run = |name: &str| {
            let out = dir.path().join(name);
            let mut epochs = Vec::new();
            let seen = std::sync::Mutex::new(&mut epochs);
            let o = BurnTrainer
                .train(
                    &request(&table, &out, cfg.clone()),
                    &CancelFlag::default(),
                    &|e| seen.lock().unwrap().push(*e),
                )
                .unwrap();
            let p = BurnModel::load(&out)
                .unwrap()
                .predict_scored(&table)
                .unwrap();
            (o, p, epochs)
        };
        let (a, pa, epochs) = run("a");
        let (b, pb, _) = run("b");
        assert_eq!(a.history, b.history);
        assert_eq!(pa, pb, "same seed, same model");
        assert!(pa.classes.is_empty() && pa.probabilities.is_empty());
        assert_eq!(a.valid_accuracy, None);
        assert!(a.extra_metrics["valid_r2"] > 0.9, "{:?}", a.extra_metrics);
        assert!(
            epochs.iter().all(|e| e.valid_rmse.is_some()
                && e.valid_r2.is_some()
                && e.valid_accuracy.is_none())
        );
        let truth: Vec<f64> = table
            .target
            .clone()
            .unwrap()
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let predicted: Vec<f64> = pa.labels.iter().map(|v| v.parse().unwrap()).collect();
        let r2 = crate::performance::r2(&truth, &predicted);
        assert!(r2 > 0.9, "{r2}");
        // In the target's units: the mean prediction is near the target's mean (≈ 100), not
        // near the standardised 0.
        let mean = predicted.iter().sum::<f64>() / predicted.len() as f64;
        let truth_mean = truth.iter().sum::<f64>() / truth.len() as f64;
        assert!((mean - truth_mean).abs() < 2.0, "{mean} vs {truth_mean}");
        let pre = BurnModel::load(&dir.path().join("a"))
            .unwrap()
            .preprocess()
            .clone();
        assert_eq!(pre.task, Task::Regression);
        let (m, sd) = pre.target_scale.unwrap();
        assert!((m - truth_mean).abs() < 2.0 && sd > 10.0, "{m} {sd}");
        assert_eq!(a.valid_rows, 600);
    }

    #[test]
    fn a_regressor_refuses_a_text_target_and_aborts_when_it_cannot_learn() {
        let dir = tempfile::tempdir().unwrap();
        let mut table = demo_table_for(dir.path(), Task::Regression);
        let cfg = BurnConfig {
            task: Task::Regression,
            fail_below_r2: Some(0.0),
            ..config()
        };
        // Noise for a target: R² stays below 0 on validation, aborted at the check epoch.
        let mut noise = table.clone();
        let n = noise.rows;
        noise.target = Some(
            (0..n)
                .map(|i| format!("{}", (i * 7919 % 1000) as f64 / 10.0))
                .collect(),
        );
        let strict = BurnConfig {
            fail_below_r2: Some(0.5),
            fail_check_epoch: 3,
            ..cfg.clone()
        };
        let e = BurnTrainer
            .train(
                &request(&noise, &dir.path().join("n"), strict),
                &CancelFlag::default(),
                &|_| {},
            )
            .unwrap_err();
        assert!(
            matches!(
                e,
                TrainError::FailedToLearn {
                    epoch: 3,
                    key: "fail_below_r2",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("train.burn.fail_below_r2 = 0.5"),
            "{e}"
        );
        table.target.as_mut().unwrap()[41] = "n/a".into();
        let e = BurnTrainer
            .train(
                &request(&table, &dir.path().join("t"), cfg),
                &CancelFlag::default(),
                &|_| {},
            )
            .unwrap_err();
        assert!(e.to_string().contains("`n/a` (1 training row"), "{e}");
        assert!(!dir.path().join("t").join(WEIGHTS_FILE).exists());
    }

    #[test]
    fn deciles_rank_the_target() {
        let v: Vec<f64> = (0..100).map(|i| ((i * 37) % 100) as f64).collect();
        let d = deciles(&v);
        for (x, bin) in v.iter().zip(&d) {
            assert_eq!(bin, &format!("{}", (*x as usize) / 10));
        }
    }

    /// A GPU this build cannot drive is refused with the rebuild command, at config time.
    #[test]
    fn devices_are_checked_against_the_build() {
        assert_eq!("cpu".parse(), Ok(ComputeDevice::Cpu));
        assert!(
            "tpu"
                .parse::<ComputeDevice>()
                .unwrap_err()
                .contains("\"cuda:N\"")
        );
        match "cuda:1".parse::<ComputeDevice>() {
            Ok(d) => assert!(cfg!(feature = "cuda") && d == ComputeDevice::Cuda(1)),
            Err(e) => assert!(
                !cfg!(feature = "cuda") && e.contains("cargo build --release --features cuda"),
                "{e}"
            ),
        }
    }

    /// A GPU build trains on the GPU device and the model scores on the CPU. Without a GPU,
    /// wgpu takes a software Vulkan (Mesa's lavapipe): the code path, not the speed.
    #[cfg(feature = "wgpu")]
    #[test]
    fn the_wgpu_device_trains_a_model_the_cpu_scores() {
        let dir = tempfile::tempdir().unwrap();
        let table = demo_table(dir.path());
        let cfg = BurnConfig {
            device: ComputeDevice::Wgpu,
            epochs: 8,
            ..config()
        };
        let out = dir.path().join("gpu");
        let o = BurnTrainer
            .train(&request(&table, &out, cfg), &CancelFlag::default(), &|_| {})
            .unwrap();
        assert!(o.valid_accuracy.unwrap() >= 0.9, "{:?}", o.valid_accuracy);
        let scores = BurnModel::load(&out).unwrap().predict(&table).unwrap();
        let acc = crate::performance::accuracy(table.target.as_ref().unwrap(), &scores);
        assert!(acc >= 0.9, "{acc}");
    }

    /// A small table still gets its share held out (the rounding goes to the largest
    /// remainders, not to each stratum), and every row lands on one side.
    #[test]
    fn a_small_split_holds_out_its_share() {
        let ten: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (held, rest) = stratified_split(&ten, 0.3, &mut rng);
        assert_eq!((held.len(), rest.len()), (3, 7));
        let twenty: Vec<String> = (0..20).map(|i| (i / 2).to_string()).collect();
        let (held, rest) = stratified_split(&twenty, 0.3, &mut rng);
        assert_eq!(held.len(), 6);
        let mut all: Vec<usize> = held.into_iter().chain(rest).collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
    }
}
