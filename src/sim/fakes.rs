//! The world's side of the engine's traits: a trainer that fits the world's boundary and
//! sometimes makes a model that is worse in the world than on its holdout, the model loader
//! that scores with it, an approval channel and a serving system (the deploy target) that
//! fail for hours, and a crash point that kills the engine right after a side effect.
//!
//! What the simulator checks is written here, by the world, never by the engine: the
//! serving system's log of what it put in place, and the requests people saw.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalChannel, ApprovalError, ApprovalRequest, BoxFuture, Notice};
use crate::clock::{Clock, SimClock};
use crate::data::Table;
use crate::deploy::{DeployError, DeployTarget, Placement};
use crate::engine::ModelLoader;
use crate::train::{
    CancelFlag, EpochReport, Predictions, Predictor, TrainError, TrainOutput, TrainRequest, Trainer,
};

/// A model of the world: `y = 1` when `x1 + x2 > boundary`. A flawed model also flips a
/// share `flip` of its answers on rows newer than the data it was trained on — it looks
/// right on every holdout and is wrong in production.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SimModel {
    pub id: u64,
    pub boundary: f64,
    pub trained_until_ms: i64,
    pub flip: f64,
}

impl SimModel {
    pub const FILE: &'static str = "sim-model.json";

    /// The class and the probability of class 1 for one row.
    pub fn predict(&self, ts_ms: i64, x1: f64, x2: f64) -> (u8, f64) {
        let margin = x1 + x2 - self.boundary;
        let mut class = u8::from(margin > 0.0);
        let mut p1 = 1.0 / (1.0 + (-4.0 * margin).exp());
        if self.flip > 0.0
            && ts_ms > self.trained_until_ms
            && unit(&(self.id, x1.to_bits(), x2.to_bits())) < self.flip
        {
            class = 1 - class;
            p1 = 1.0 - p1;
        }
        (class, p1)
    }

    pub fn read(dir: &Path) -> Result<SimModel, TrainError> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path).map_err(crate::train::io_err(&path))?;
        serde_json::from_str(&text).map_err(|e| TrainError::Load {
            path,
            message: e.to_string(),
        })
    }
}

/// A number in [0, 1) from hashing `key`.
pub fn unit(key: &impl Hash) -> f64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// A span of simulated time in which a part of the world is down.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// What the world breaks, and when.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub channel: Vec<Outage>,
    pub serving: Vec<Outage>,
    pub trainer: Vec<Outage>,
    /// The upstream data pipeline: no window is written for a day that starts in one.
    pub data: Vec<Outage>,
    /// Chance that a training run fails by itself.
    pub train_failure: f64,
    /// Chance that a trainer produces a flawed model.
    pub flawed: f64,
    /// Chance that the engine dies right after a training run or a deploy call returns.
    pub crash_after_train: f64,
    pub crash_after_deploy: f64,
}

pub fn down(outages: &[Outage], at: DateTime<Utc>) -> bool {
    outages.iter().any(|o| o.from <= at && at < o.to)
}

/// One call of the serving system: it put `version` in place at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub at: DateTime<Utc>,
    pub version: i64,
    pub version_id: i64,
}

/// An approval request a person received.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub at: DateTime<Utc>,
    pub cycle: i64,
}

/// Where a fake asks for the engine to be killed, and waits until it was.
#[derive(Default)]
pub struct CrashPoint {
    state: Mutex<Option<(String, bool)>>,
    released: Condvar,
    pub signal: tokio::sync::Notify,
}

impl CrashPoint {
    fn lock(&self) -> MutexGuard<'_, Option<(String, bool)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by a fake on a blocking thread: ask for the crash, wait until it happened.
    fn crash_here(&self, at: String) {
        *self.lock() = Some((at, false));
        self.signal.notify_one();
        let mut s = self.lock();
        while s.as_ref().is_some_and(|(_, done)| !done) {
            s = self.released.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        *s = None;
    }

    /// The crash a fake asked for, if any (the simulator then kills the engine).
    pub fn requested(&self) -> Option<String> {
        self.lock()
            .as_ref()
            .filter(|(_, done)| !done)
            .map(|(at, _)| at.clone())
    }

    /// The engine is dead: let the fake's thread return into nothing.
    pub fn release(&self) {
        if let Some((_, done)) = self.lock().as_mut() {
            *done = true;
        }
        self.released.notify_all();
    }
}

/// The world outside the engine, shared by every fake and the simulator.
pub struct Outside {
    pub clock: SimClock,
    pub faults: Faults,
    seed: u64,
    draws: Mutex<HashMap<(&'static str, i64), u64>>,
    pub served: Mutex<Vec<Served>>,
    pub delivered: Mutex<Vec<Delivered>>,
    pub notices: Mutex<Vec<(DateTime<Utc>, &'static str, String)>>,
    pub crash: CrashPoint,
}

impl Outside {
    pub fn new(seed: u64, clock: SimClock, faults: Faults) -> Arc<Outside> {
        Arc::new(Outside {
            clock,
            faults,
            seed,
            draws: Mutex::new(HashMap::new()),
            served: Mutex::new(Vec::new()),
            delivered: Mutex::new(Vec::new()),
            notices: Mutex::new(Vec::new()),
            crash: CrashPoint::default(),
        })
    }

    /// A reproducible draw in [0, 1): the `n`-th for `what` about `id`.
    pub fn draw(&self, what: &'static str, id: i64) -> f64 {
        let mut draws = self.draws.lock().unwrap_or_else(|p| p.into_inner());
        let n = draws.entry((what, id)).or_insert(0);
        *n += 1;
        unit(&(self.seed, what, id, *n))
    }

    pub fn served(&self) -> Vec<Served> {
        self.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The notices delivered since the last call: when, kind, text.
    pub fn take_notices(&self) -> Vec<(DateTime<Utc>, &'static str, String)> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The requests delivered since the last call.
    pub fn take_delivered(&self) -> Vec<Delivered> {
        std::mem::take(&mut *self.delivered.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Fits the boundary on the labelled rows it is given.
pub struct SimTrainer(pub Arc<Outside>);

impl Trainer for SimTrainer {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn train(
        &self,
        request: &TrainRequest,
        _cancel: &CancelFlag,
        _progress: &(dyn Fn(&EpochReport) + Send + Sync),
    ) -> Result<TrainOutput, TrainError> {
        let out = &self.0;
        let now = out.clock.now();
        let cycle = request.cycle_id;
        if down(&out.faults.trainer, now) {
            return Err(TrainError::Command(
                "simulated: the training cluster is down".into(),
            ));
        }
        if out.draw("train-failure", cycle) < out.faults.train_failure {
            return Err(TrainError::Command(
                "simulated: the training job died".into(),
            ));
        }
        let (boundary, accuracy, rows) = fit(&request.data)?;
        let trained_until_ms = request
            .data
            .timestamp
            .as_ref()
            .and_then(|ts| ts.iter().flatten().max().copied())
            .unwrap_or_else(|| now.timestamp_millis());
        let flip = if out.draw("flawed", cycle) < out.faults.flawed {
            0.03 + 0.3 * out.draw("flaw-size", cycle)
        } else {
            0.0
        };
        let model = SimModel {
            id: (cycle as u64) << 8 | (out.draw("model-id", cycle) * 255.0) as u64,
            boundary,
            trained_until_ms,
            flip,
        };
        std::fs::create_dir_all(&request.out_dir)
            .map_err(crate::train::io_err(&request.out_dir))?;
        let path = request.out_dir.join(SimModel::FILE);
        let text = serde_json::to_string(&model).unwrap_or_default();
        std::fs::write(&path, text).map_err(crate::train::io_err(&path))?;
        if out.draw("crash-after-train", cycle) < out.faults.crash_after_train {
            out.crash
                .crash_here(format!("the trainer of cycle {cycle}"));
        }
        Ok(TrainOutput {
            format: "sim-v1".into(),
            epochs_run: 1,
            best_epoch: 1,
            valid_accuracy: Some(accuracy),
            valid_loss: 1.0 - accuracy,
            train_rows: rows,
            valid_rows: 0,
            duration_seconds: 0.0,
            history: vec![EpochReport {
                epoch: 1,
                train_loss: 1.0 - accuracy,
                valid_loss: 1.0 - accuracy,
                valid_accuracy: Some(accuracy),
                valid_f1: None,
                valid_rmse: None,
                valid_r2: None,
            }],
            extra_metrics: Default::default(),
            remote_run: None,
        })
    }
}

fn column<'a>(t: &'a Table, name: &str) -> Result<&'a [f64], TrainError> {
    t.numerical
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .ok_or_else(|| TrainError::MissingFeature {
            path: Path::new("sim").to_path_buf(),
            feature: name.to_string(),
        })
}

/// The boundary on `x1 + x2` with the fewest errors on the labelled rows, its accuracy
/// there, and the number of rows.
fn fit(t: &Table) -> Result<(f64, f64, usize), TrainError> {
    let (x1, x2) = (column(t, "x1")?, column(t, "x2")?);
    let labels = t
        .target
        .as_ref()
        .ok_or_else(|| TrainError::NoLabels("y".into()))?;
    let mut rows: Vec<(f64, bool)> = (0..t.rows)
        .filter(|&i| !labels[i].is_empty())
        .map(|i| (x1[i] + x2[i], labels[i] == "1"))
        .collect();
    if rows.is_empty() {
        return Err(TrainError::NoLabels("y".into()));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Errors with the boundary below every row: every 0 is wrong.
    let mut errors = rows.iter().filter(|r| !r.1).count();
    let (mut best, mut best_at) = (errors, rows[0].0 - 1e-9);
    for (i, r) in rows.iter().enumerate() {
        errors = if r.1 { errors + 1 } else { errors - 1 };
        if errors < best {
            best = errors;
            best_at = match rows.get(i + 1) {
                Some(next) => (r.0 + next.0) / 2.0,
                None => r.0 + 1e-9,
            };
        }
    }
    let n = rows.len();
    Ok((best_at, 1.0 - best as f64 / n as f64, n))
}

/// Loads the models the [`SimTrainer`] wrote.
pub struct SimModels;

impl ModelLoader for SimModels {
    fn load(&self, dir: &Path) -> Result<Box<dyn Predictor>, TrainError> {
        Ok(Box::new(SimModel::read(dir)?))
    }
}

impl Predictor for SimModel {
    fn predict_scored(&self, table: &Table) -> Result<Predictions, TrainError> {
        let (x1, x2) = (column(table, "x1")?, column(table, "x2")?);
        let ts = table.timestamp.as_ref();
        let mut labels = Vec::with_capacity(table.rows);
        let mut probabilities = Vec::with_capacity(table.rows * 2);
        for i in 0..table.rows {
            let t = ts.and_then(|t| t[i]).unwrap_or(i64::MAX);
            let (class, p1) = self.predict(t, x1[i], x2[i]);
            labels.push(class.to_string());
            probabilities.extend([1.0 - p1, p1]);
        }
        Ok(Predictions {
            classes: vec!["0".into(), "1".into()],
            labels,
            probabilities,
        })
    }
}

/// The people's chat: delivers requests and notices, except while it is down.
pub struct SimChannel(pub Arc<Outside>);

impl SimChannel {
    /// Now, if the chat is up.
    fn up(&self) -> Result<DateTime<Utc>, ApprovalError> {
        let now = self.0.clock.now();
        if down(&self.0.faults.channel, now) {
            return Err(ApprovalError {
                channel: "sim_chat",
                message: "simulated outage: HTTP 503".into(),
            });
        }
        Ok(now)
    }
}

impl ApprovalChannel for SimChannel {
    fn name(&self) -> &'static str {
        "sim_chat"
    }

    fn request<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let at = self.up()?;
            let delivered = Delivered {
                at,
                cycle: request.cycle,
            };
            self.0
                .delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(delivered);
            Ok(())
        })
    }

    fn notify<'a>(&'a self, notice: &'a Notice) -> BoxFuture<'a, Result<(), ApprovalError>> {
        Box::pin(async move {
            let at = self.up()?;
            self.0
                .notices
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((at, notice.kind, notice.text.clone()));
            Ok(())
        })
    }
}

/// The serving system: logs what it put in place; down for hours at times.
pub struct SimServing(pub Arc<Outside>);

impl DeployTarget for SimServing {
    fn name(&self) -> &'static str {
        "sim_serving"
    }

    fn deploy(&self, _state_dir: &Path, placement: &Placement<'_>) -> Result<(), DeployError> {
        let version = placement.version;
        let out = &self.0;
        let now = out.clock.now();
        if down(&out.faults.serving, now) {
            return Err(DeployError::Hook {
                target: "sim_serving",
                message: "simulated outage: HTTP 503".into(),
            });
        }
        out.served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Served {
                at: now,
                version: version.version,
                version_id: version.id,
            });
        if out.draw("crash-after-deploy", version.id) < out.faults.crash_after_deploy {
            out.crash.crash_here(format!(
                "the serving system's call for v{}",
                version.version
            ));
        }
        Ok(())
    }
}
