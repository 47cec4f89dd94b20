//! `[pipeline.train.burn]`: the MLP's shape and training settings, derived features and row
//! filters — raw shape, defaults (here and nowhere else) and validation.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::performance::Task;
use crate::train::TrainError;
use crate::validate::Checker;

/// `[pipeline.train.burn]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawBurn {
    pub hidden: Option<Vec<i64>>,
    pub dropout: Option<f64>,
    pub learning_rate: Option<f64>,
    pub batch_size: Option<i64>,
    pub epochs: Option<i64>,
    pub patience: Option<i64>,
    pub validation_share: Option<f64>,
    pub seed: Option<i64>,
    pub fail_below_accuracy: Option<f64>,
    pub fail_below_r2: Option<f64>,
    pub fail_check_epoch: Option<i64>,
    pub device: Option<String>,
    pub activation: Option<String>,
    pub derived: Option<Vec<RawDerived>>,
    pub filters: Option<Vec<RawFilter>>,
    pub drop_null_rows: Option<bool>,
}

/// One entry of `train.burn.derived`.
#[derive(Debug, Default, Deserialize)]
pub struct RawDerived {
    pub name: Option<String>,
    pub ratio: Option<Vec<String>>,
    pub log1p: Option<String>,
}

/// One entry of `train.burn.filters`.
#[derive(Debug, Default, Deserialize)]
pub struct RawFilter {
    pub column: Option<String>,
    pub op: Option<String>,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BurnConfig {
    /// Classifier (cross-entropy, class probabilities) or regressor (mean squared error on
    /// the standardised target, one output): the pipeline's `task`.
    #[serde(default)]
    pub task: Task,
    pub hidden: Vec<usize>,
    pub dropout: f64,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub patience: usize,
    pub validation_share: f64,
    pub seed: u64,
    /// The seed's `failed_to_learn` guard: after `fail_check_epoch` epochs, a validation
    /// accuracy below this aborts training (0 = off).
    #[serde(default)]
    pub fail_below_accuracy: f64,
    #[serde(default)]
    pub fail_check_epoch: usize,
    /// The same guard for regressors: a validation R² below this after `fail_check_epoch`
    /// epochs aborts training (default 0: worse than predicting the mean).
    #[serde(default)]
    pub fail_below_r2: Option<f64>,
    /// Where training runs: the CPU (default) or a GPU of a build with `cuda`/`wgpu`.
    #[serde(default)]
    pub device: ComputeDevice,
    #[serde(default)]
    pub activation: Activation,
    /// Features computed from others (saved with the model, applied when scoring).
    #[serde(default)]
    pub derived: Vec<Derived>,
    /// Training rows must pass every filter.
    #[serde(default)]
    pub filters: Vec<RowFilter>,
    /// Leave out training rows with an empty or non-finite feature (default: impute the
    /// training mean, and an empty category is a category).
    #[serde(default)]
    pub drop_null_rows: bool,
}

impl BurnConfig {
    /// The MLP a pipeline of `task` trains when it sets nothing.
    pub fn defaults(task: Task) -> BurnConfig {
        BurnConfig {
            task,
            hidden: vec![32, 16],
            dropout: 0.1,
            learning_rate: 0.01,
            batch_size: 64,
            epochs: 30,
            patience: 5,
            validation_share: 0.2,
            seed: 42,
            fail_below_accuracy: 0.1,
            fail_check_epoch: 5,
            fail_below_r2: (task == Task::Regression).then_some(0.0),
            device: ComputeDevice::Cpu,
            activation: Activation::Relu,
            derived: Vec::new(),
            filters: Vec::new(),
            drop_null_rows: false,
        }
    }

    /// Validate `raw` (the checker is at `pipeline[i].train.burn`).
    pub fn from_raw(raw: RawBurn, task: Task, c: &mut Checker) -> BurnConfig {
        let d = BurnConfig::defaults(task);
        check_floor_kind(c, &raw, task);
        let learning_rate = raw.learning_rate.unwrap_or(d.learning_rate);
        if !(learning_rate.is_finite() && learning_rate > 0.0 && learning_rate <= 10.0) {
            c.problem(
                "learning_rate",
                format!(
                    "{learning_rate} is out of range; use a number with 0 < x <= 10 (default {})",
                    d.learning_rate
                ),
            );
        }
        BurnConfig {
            task,
            hidden: hidden(c, raw.hidden, d.hidden),
            dropout: c.fraction("dropout", raw.dropout, d.dropout, false),
            learning_rate,
            batch_size: c.positive("batch_size", raw.batch_size, d.batch_size, 1 << 20),
            epochs: c.positive("epochs", raw.epochs, d.epochs, 100_000),
            patience: c.positive("patience", raw.patience, d.patience, 100_000),
            validation_share: c.fraction(
                "validation_share",
                raw.validation_share,
                d.validation_share,
                true,
            ),
            seed: match raw.seed {
                Some(s) if s < 0 => {
                    c.problem("seed", format!("{s} is negative; use a whole number >= 0"));
                    0
                }
                Some(s) => s as u64,
                None => d.seed,
            },
            fail_below_accuracy: c.fraction(
                "fail_below_accuracy",
                raw.fail_below_accuracy,
                d.fail_below_accuracy,
                false,
            ),
            fail_check_epoch: c.positive(
                "fail_check_epoch",
                raw.fail_check_epoch,
                d.fail_check_epoch,
                100_000,
            ),
            fail_below_r2: match raw.fail_below_r2 {
                Some(v) => c.at_most_one("fail_below_r2", Some(v), 0.0),
                None => d.fail_below_r2,
            },
            device: c.parsed("device", raw.device.as_deref(), d.device),
            activation: c.choice(
                "activation",
                raw.activation.as_deref(),
                d.activation,
                |w| match w {
                    "relu" => Some(Activation::Relu),
                    "gelu" => Some(Activation::Gelu),
                    "tanh" => Some(Activation::Tanh),
                    "leaky_relu" => Some(Activation::LeakyRelu),
                    _ => None,
                },
                |w| {
                    format!(
                        "`{w}` is not an activation; use relu (default), gelu, tanh or leaky_relu"
                    )
                },
            ),
            derived: derived(c, raw.derived.unwrap_or_default()),
            filters: filters(c, raw.filters.unwrap_or_default()),
            drop_null_rows: raw.drop_null_rows.unwrap_or(d.drop_null_rows),
        }
    }
}

/// Each failed-to-learn floor belongs to one kind of model; the other is never read.
fn check_floor_kind(c: &mut Checker, raw: &RawBurn, task: Task) {
    match task {
        Task::Classification if raw.fail_below_r2.is_some() => {
            c.problem("fail_below_r2", "applies to task = \"regression\"; a classifier's floor is train.burn.fail_below_accuracy");
        }
        Task::Regression if raw.fail_below_accuracy.is_some() => {
            c.problem("fail_below_accuracy", "applies to classifiers; a regressor's floor is train.burn.fail_below_r2 (validation R²)");
        }
        _ => {}
    }
}

/// Hidden layer widths, 1 to 4096 units each.
fn hidden(c: &mut Checker, raw: Option<Vec<i64>>, default: Vec<usize>) -> Vec<usize> {
    let Some(widths) = raw else {
        return default;
    };
    widths
        .iter()
        .enumerate()
        .map(|(j, &n)| {
            if !(1..=4096).contains(&n) {
                c.problem(
                    &format!("hidden[{j}]"),
                    format!("{n} is out of range; use 1 to 4096 units"),
                );
            }
            n.clamp(1, 4096) as usize
        })
        .collect()
}

/// `derived = [{ name, ratio = [a, b] } | { name, log1p = column }]`.
fn derived(c: &mut Checker, raw: Vec<RawDerived>) -> Vec<Derived> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(j, d)| {
            let key = format!("derived[{j}]");
            let name = d.name.unwrap_or_default();
            if name.is_empty() {
                c.problem(&key, "needs a name");
                return None;
            }
            match (d.ratio, d.log1p) {
                (Some(r), None) if r.len() == 2 => {
                    let [a, b]: [String; 2] = r.try_into().ok()?;
                    Some(Derived::Ratio { name, a, b })
                }
                (None, Some(column)) => Some(Derived::Log1p { name, column }),
                _ => {
                    c.problem(&key, "write exactly one of ratio = [\"a\", \"b\"] (a / (b + 1e-8)) or log1p = \"column\"");
                    None
                }
            }
        })
        .collect()
}

/// `filters = [{ column, op, value }]`.
fn filters(c: &mut Checker, raw: Vec<RawFilter>) -> Vec<RowFilter> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(j, f)| {
            let key = format!("filters[{j}]");
            let op = f.op.as_deref().unwrap_or("").parse::<FilterOp>();
            match (f.column, op, f.value) {
                (Some(column), Ok(op), Some(value)) if value.is_finite() => {
                    Some(RowFilter { column, op, value })
                }
                (_, Err(e), _) => {
                    c.problem(&key, e);
                    None
                }
                _ => {
                    c.problem(&key, "write { column = \"value\", op = \">\", value = 0 }");
                    None
                }
            }
        })
        .collect()
}

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
