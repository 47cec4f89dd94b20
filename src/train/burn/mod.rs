//! The local trainer: a tabular MLP in burn on the CPU (Flex backend) — a classifier trained
//! with cross-entropy, or a regressor trained with mean squared error on the standardised
//! target — optimised with Adam, early-stopped on validation loss, and stored as a burnpack
//! record next to its preprocessing parameters.
//!
//! Preprocessing is fitted on the training split only ([`preprocess`]); a regressor's target
//! is standardised too (and scaled back when scoring). The validation split is stratified
//! (by class, or by the target's decile, [`crate::splits`]) and seeded, so a retry of the
//! same cycle trains the same model.

mod config;
mod model;
mod preprocess;
#[cfg(test)]
mod tests;

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

pub use config::{
    Activation, BurnConfig, ComputeDevice, Derived, FilterOp, RawBurn, RawDerived, RawFilter,
    RowFilter,
};
pub use model::{BurnModel, Mlp};
pub use preprocess::{Preprocess, kept_rows};

use super::{CancelFlag, EpochReport, TrainError, TrainOutput, TrainRequest, Trainer};
use crate::data::Table;
use crate::performance::Task;
use crate::splits;
use model::{Answers, Targets};

/// Model card format of burn-trained models.
pub const FORMAT: &str = "burn-mlp-v1";
const WEIGHTS_FILE: &str = "model.bpk";
const PREPROCESS_FILE: &str = "preprocess.json";

/// One burn training at a time per process (see [`BurnTrainer::train`]).
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The burn trainer (default backend), with its pipeline's settings.
#[derive(Debug, Clone)]
pub struct BurnTrainer {
    pub config: BurnConfig,
}

/// The encoded training and validation rows, ready for the network.
struct Prepared {
    pre: Preprocess,
    x_train: Vec<f32>,
    x_valid: Vec<f32>,
    y_train: Targets,
    y_valid: Targets,
    /// The validation rows' true answers, for the per-epoch metrics.
    truth: Answers,
    train_rows: usize,
    valid_rows: usize,
    /// The split's generator, which goes on to shuffle the batches.
    rng: StdRng,
}

/// The best epoch so far: its validation loss, number, model and report.
type Best = (f64, usize, Mlp, EpochReport);

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
        let cfg = &self.config;
        check_derived_inputs(cfg, &request.data)?;
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
        let mut prepared = prepare(cfg, table, request)?;
        // burn's CPU backend draws initial weights and dropout masks from one process-wide
        // generator: two trainings at once would interleave their draws and neither would be
        // reproducible. Trainings in one process take turns (cycles of other pipelines wait
        // here, off the async runtime).
        let _turn = take_turn(cancel)?;
        let device = cfg.device.device()?.autodiff();
        device.seed(cfg.seed);
        let (best, history) = fit(cfg, &mut prepared, &device, cancel, progress)?;
        let Some((valid_loss, best_epoch, best_model, best_report)) = best else {
            return Err(TrainError::TooFewRows {
                rows: table.rows,
                needed: 3,
            });
        };
        model::save(&request.out_dir, best_model, &prepared.pre)?;
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
            train_rows: prepared.train_rows,
            valid_rows: prepared.valid_rows,
            duration_seconds: started.elapsed().as_secs_f64(),
            history,
        })
    }
}

/// A derived feature must read numerical features the data has.
fn check_derived_inputs(cfg: &BurnConfig, data: &Table) -> Result<(), TrainError> {
    for d in &cfg.derived {
        for input in d.inputs() {
            if data.numerical(input).is_none() {
                return Err(TrainError::Command(format!(
                    "train.burn.derived `{}` reads `{input}`, which is not a numerical feature of the data",
                    d.name()
                )));
            }
        }
    }
    Ok(())
}

/// Wait for this process's other burn training to finish; a shutdown or timeout still
/// stops the wait.
fn take_turn(cancel: &CancelFlag) -> Result<std::sync::MutexGuard<'static, ()>, TrainError> {
    loop {
        match TRAINING.try_lock() {
            Ok(guard) => return Ok(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return Ok(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => {
                if cancel.is_cancelled() {
                    return Err(TrainError::Cancelled);
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Split the rows (stratified by class or target decile, seeded), fit the preprocessing on
/// the training split, and encode both splits and their targets.
fn prepare(
    cfg: &BurnConfig,
    table: &Table,
    request: &TrainRequest,
) -> Result<Prepared, TrainError> {
    let target = table
        .target
        .as_ref()
        .ok_or_else(|| TrainError::NoLabels("target".into()))?;
    let (classes, values) = match cfg.task {
        Task::Classification => (classes_of(target)?, Vec::new()),
        Task::Regression => (Vec::new(), regression_target(target)?),
    };
    let too_few = || TrainError::TooFewRows {
        rows: table.rows,
        needed: 3,
    };
    let n_valid = ((table.rows as f64) * cfg.validation_share).round() as usize;
    if n_valid < 1 || table.rows - n_valid < 2 {
        return Err(too_few());
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let strata = splits::strata(target, cfg.task);
    let (valid_rows, train_rows) =
        splits::stratified_split(&strata, cfg.validation_share, &mut rng);
    if valid_rows.is_empty() || train_rows.len() < 2 {
        return Err(too_few());
    }
    let mut pre = Preprocess::fit(table, &train_rows, classes.clone(), cfg);
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
            let (mean, std) = preprocess::standardise(&values, &train_rows);
            pre.target_scale = Some((mean, std));
            let scaled = |rows: &[usize]| {
                rows.iter()
                    .map(|&r| ((values[r] - mean) / std) as f32)
                    .collect()
            };
            (
                Targets::Values(scaled(&train_rows)),
                Targets::Values(scaled(&valid_rows)),
                Answers::Values(valid_rows.iter().map(|&r| values[r]).collect()),
            )
        }
    };
    Ok(Prepared {
        x_train: pre.encode(table, &train_rows, &request.out_dir)?,
        x_valid: pre.encode(table, &valid_rows, &request.out_dir)?,
        pre,
        y_train,
        y_valid,
        truth,
        train_rows: train_rows.len(),
        valid_rows: valid_rows.len(),
        rng,
    })
}

/// A classifier's classes, sorted; at least two.
fn classes_of(target: &[String]) -> Result<Vec<String>, TrainError> {
    let mut classes: Vec<String> = target.to_vec();
    classes.sort();
    classes.dedup();
    if classes.len() < 2 {
        return Err(TrainError::OneClass(
            classes.first().cloned().unwrap_or_default(),
        ));
    }
    Ok(classes)
}

/// A regressor's target as numbers, or the first value that is not one.
fn regression_target(target: &[String]) -> Result<Vec<f64>, TrainError> {
    splits::numeric_target(target).map_err(|bad| TrainError::NotNumeric {
        value: bad.value,
        rows: bad.rows,
    })
}

/// Train epoch by epoch until `epochs`, early stopping (`patience`), the failed-to-learn
/// guard or a cancel; the best epoch by validation loss wins.
fn fit(
    cfg: &BurnConfig,
    p: &mut Prepared,
    device: &Device,
    cancel: &CancelFlag,
    progress: &(dyn Fn(&EpochReport) + Send + Sync),
) -> Result<(Option<Best>, Vec<EpochReport>), TrainError> {
    let width = p.pre.width();
    let mut model = Mlp::new(
        width,
        &cfg.hidden,
        p.pre.outputs(),
        cfg.dropout,
        cfg.activation,
        device,
    );
    let mut optim = AdamConfig::new().init();
    let mut best: Option<Best> = None;
    let mut history = Vec::new();
    let mut idx: Vec<usize> = (0..p.train_rows).collect();
    for epoch in 1..=cfg.epochs {
        if cancel.is_cancelled() {
            return Err(TrainError::Cancelled);
        }
        idx.shuffle(&mut p.rng);
        let mut total = 0.0;
        for batch in idx.chunks(cfg.batch_size) {
            let mut xb = Vec::with_capacity(batch.len() * width);
            for &i in batch {
                xb.extend_from_slice(&p.x_train[i * width..(i + 1) * width]);
            }
            let outputs = model.forward(model::matrix(xb, batch.len(), width, device));
            let loss = p.y_train.loss(outputs, Some(batch), device);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(TrainError::NanLoss(epoch));
            }
            total += value * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.learning_rate, model, grads);
        }
        let valid_model = model.valid();
        let (valid_loss, answers) = model::evaluate(
            &valid_model,
            &p.pre,
            &p.x_valid,
            &p.y_valid,
            &model::valid_model_device(device),
        );
        if !valid_loss.is_finite() {
            return Err(TrainError::NanLoss(epoch));
        }
        let (valid_accuracy, valid_f1, valid_rmse, valid_r2) =
            model::epoch_metrics(&p.truth, &answers);
        let report = EpochReport {
            epoch,
            train_loss: total / p.train_rows as f64,
            valid_loss,
            valid_accuracy,
            valid_f1,
            valid_rmse,
            valid_r2,
        };
        progress(&report);
        history.push(report);
        if epoch == cfg.fail_check_epoch {
            failed_to_learn(cfg, &report)?;
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
    Ok((best, history))
}

/// The seed's `failed_to_learn` guard, at `fail_check_epoch`: validation accuracy (or a
/// regressor's R²) below its floor aborts training.
fn failed_to_learn(cfg: &BurnConfig, report: &EpochReport) -> Result<(), TrainError> {
    let epoch = report.epoch;
    if let Some(accuracy) = report.valid_accuracy
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
    if let (Some(r2), Some(floor)) = (report.valid_r2, cfg.fail_below_r2)
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
    Ok(())
}
