//! The network and a stored model: the MLP (hidden Linear + activation + dropout blocks), its
//! loss for each task, how its outputs decode into classes or numbers, how it is saved next
//! to its preprocessing, and the [`BurnModel`] predictor that scores a table on the CPU.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::Device;
use burn::tensor::activation::relu;
use burn::tensor::{Int, Tensor, TensorData};

use super::{Activation, PREPROCESS_FILE, Preprocess, WEIGHTS_FILE};
use crate::data::Table;
use crate::performance::Task;
use crate::train::{Predictions, Predictor, TrainError, io_err};

impl Activation {
    pub(super) fn apply(self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Activation::Relu => relu(x),
            Activation::Gelu => burn::tensor::activation::gelu(x),
            Activation::Tanh => burn::tensor::activation::tanh(x),
            Activation::LeakyRelu => burn::tensor::activation::leaky_relu(x, 0.01),
        }
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

pub(super) fn matrix(values: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
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
pub(super) enum Targets {
    Classes(Vec<i64>),
    Values(Vec<f32>),
}

impl Targets {
    pub(super) fn len(&self) -> usize {
        match self {
            Targets::Classes(v) => v.len(),
            Targets::Values(v) => v.len(),
        }
    }

    /// The loss of `outputs` against the targets at `rows` (all when `None`).
    pub(super) fn loss(
        &self,
        outputs: Tensor<2>,
        rows: Option<&[usize]>,
        device: &Device,
    ) -> Tensor<1> {
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
pub(super) enum Answers {
    Classes(Vec<String>),
    Values(Vec<f64>),
}

impl Preprocess {
    /// Output width of the network: one logit per class, or one value.
    pub(super) fn outputs(&self) -> usize {
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
pub(super) fn evaluate(
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

/// A finished epoch's validation metrics, by task.
pub(super) fn epoch_metrics(
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

/// Validation runs on the same device without gradient tracking (`Module::valid` already
/// disables it on the parameters); inputs are created on the plain device.
pub(super) fn valid_model_device(device: &Device) -> Device {
    device.clone().inner()
}

pub(super) fn save(dir: &Path, model: Mlp, pre: &Preprocess) -> Result<(), TrainError> {
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
