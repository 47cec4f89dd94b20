//! Preprocessing of the burn MLP, fitted on the training split only: numerical features
//! standardised (missing values imputed with the training mean), categorical features
//! one-hot encoded over the categories seen in training (unseen ones encode as all zeros),
//! derived features computed the same way when training and when scoring, and the row
//! filters that shape what the model learns from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Activation, BurnConfig, Derived};
use crate::data::Table;
use crate::performance::Task;
use crate::train::TrainError;

impl Derived {
    /// Its value for every row of `table`.
    pub(super) fn values(&self, table: &Table, model_dir: &Path) -> Result<Vec<f64>, TrainError> {
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
pub(super) fn standardise(v: &[f64], rows: &[usize]) -> (f64, f64) {
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
