//! One `[[pipeline]]` table: its own keys (name, task, schedule), each section validated by
//! the module that owns it, and the rules that span sections (a gate slice must be a
//! categorical column; a Slack channel needs `[slack]`).

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::approval::{ApprovalConfig, RawApproval};
use crate::data::{DataConfig, RawData};
use crate::deploy::{DeployConfig, RawDeploy};
use crate::drift::{DriftConfig, RawDrift};
use crate::gate::{GateConfig, RawGate};
use crate::guards::{GuardConfig, RawGuards};
use crate::mlflow::{MlflowConfig, RawMlflow};
use crate::performance::{PerformanceConfig, RawPerformance, Task};
use crate::quality::{QualityConfig, RawQuality};
use crate::schedule::Schedule;
use crate::train::{RawTrain, TrainConfig};
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[[pipeline]]` as written.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawPipeline {
    name: Option<String>,
    task: Option<String>,
    schedule: Option<String>,
    timezone: Option<String>,
    catch_up: Option<bool>,
    #[serde(default)]
    data: RawData,
    #[serde(default)]
    quality: RawQuality,
    #[serde(default)]
    drift: RawDrift,
    #[serde(default)]
    check: crate::data::stream::RawCheck,
    #[serde(default)]
    performance: RawPerformance,
    #[serde(default)]
    train: RawTrain,
    #[serde(default)]
    gate: RawGate,
    #[serde(default)]
    approval: RawApproval,
    #[serde(default)]
    guards: RawGuards,
    #[serde(default)]
    deploy: RawDeploy,
    mlflow: Option<RawMlflow>,
}

/// One model's loop.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// What the model predicts: a class (default) or a number.
    pub task: Task,
    pub schedule: Schedule,
    /// Run a missed schedule once on start.
    pub catch_up: bool,
    pub data: DataConfig,
    pub quality: QualityConfig,
    pub drift: DriftConfig,
    /// `[pipeline.check]`: the memory a day's check may take.
    pub check: crate::data::stream::Plan,
    pub performance: PerformanceConfig,
    pub train: TrainConfig,
    pub gate: GateConfig,
    pub approval: ApprovalConfig,
    pub deploy: DeployConfig,
    pub guards: GuardConfig,
    pub mlflow: Option<MlflowConfig>,
}

/// Every pipeline; names must be unique. `has_slack`: the file has a `[slack]` table.
pub(super) fn assemble_all(
    raw: Vec<RawPipeline>,
    has_slack: bool,
    files: Files,
    c: &mut Checker,
) -> Vec<Pipeline> {
    if raw.is_empty() {
        c.problem(
            "pipeline",
            "no [[pipeline]] table; add one per model (see config/retraind.toml)",
        );
    }
    let mut names = BTreeSet::new();
    let mut list = c.section("pipeline");
    raw.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut c = list.section(&format!("[{i}]"));
            let pipeline = assemble(p, has_slack, files, &mut c);
            if valid_name(&pipeline.name) && !names.insert(pipeline.name.clone()) {
                c.problem(
                    "name",
                    format!(
                        "pipeline `{}` is defined twice; names must be unique",
                        pipeline.name
                    ),
                );
            }
            pipeline
        })
        .collect()
}

/// A valid name: 1-64 letters, digits, '-' or '_' (it is a metric label and a folder).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
}

/// One pipeline (the checker is at `pipeline[i]`).
fn assemble(p: RawPipeline, has_slack: bool, files: Files, c: &mut Checker) -> Pipeline {
    let name = p.name.unwrap_or_default();
    if !valid_name(&name) {
        c.problem(
            "name",
            format!("`{name}` is not a valid name; use 1-64 letters, digits, '-' or '_'"),
        );
    }
    let task = c.parsed("task", p.task.as_deref(), Task::Classification);
    let schedule = Schedule::from_raw(p.schedule, p.timezone, c);
    let has_prediction = p.data.prediction.is_some();
    let categorical = p.data.categorical.clone();
    if p.approval.slack_channel.is_some() && !has_slack {
        c.problem(
            "approval.slack_channel",
            "set, but there is no [slack] table; configure the Slack app or remove the key",
        );
    }
    let gate = GateConfig::from_raw(p.gate, task, &mut c.section("gate"));
    if let Some(cats) = &categorical {
        for s in gate.slices.iter().filter(|s| !cats.contains(s)) {
            c.problem(
                "gate.slices",
                format!(
                    "`{s}` is not in data.categorical; slices are values of categorical columns"
                ),
            );
        }
    }
    let higher_is_better = gate.metric.higher_is_better();
    Pipeline {
        task,
        schedule,
        catch_up: p.catch_up.unwrap_or(true),
        data: DataConfig::from_raw(p.data, files, &mut c.section("data")),
        quality: QualityConfig::from_raw(p.quality, &mut c.section("quality")),
        drift: DriftConfig::from_raw(p.drift, &mut c.section("drift")),
        check: crate::data::stream::Plan::from_raw(p.check, &mut c.section("check")),
        performance: PerformanceConfig::from_raw(
            p.performance,
            task,
            has_prediction,
            &mut c.section("performance"),
        ),
        train: TrainConfig::from_raw(p.train, task, files, &mut c.section("train")),
        gate,
        approval: ApprovalConfig::from_raw(p.approval, &mut c.section("approval")),
        deploy: DeployConfig::from_raw(p.deploy, files, &mut c.section("deploy")),
        guards: GuardConfig::from_raw(
            p.guards,
            higher_is_better,
            files.base,
            &mut c.section("guards"),
        ),
        mlflow: p
            .mlflow
            .map(|m| MlflowConfig::from_raw(m, &name, files, &mut c.section("mlflow"))),
        name,
    }
}
