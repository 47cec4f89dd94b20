//! `[pipeline.train]`: which backend trains, its timeout, and each backend's table — raw
//! shape, defaults (here and nowhere else) and validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::burn::{BurnConfig, RawBurn};
use super::command::{CommandConfig, RawCommand};
use super::kfp::{KfpConfig, RawKfp};
use crate::performance::Task;
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[pipeline.train]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawTrain {
    pub backend: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub burn: RawBurn,
    pub command: Option<RawCommand>,
    pub kfp: Option<RawKfp>,
}

/// Which trainer a pipeline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Burn,
    Command,
    Kfp,
}

/// How a pipeline trains.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub backend: Backend,
    /// A training that runs longer is stopped (a remote run is terminated).
    pub timeout: Duration,
    pub burn: BurnConfig,
    pub command: Option<CommandConfig>,
    pub kfp: Option<KfpConfig>,
}

/// The default training timeout.
const TIMEOUT: Duration = Duration::from_secs(3600);

impl TrainConfig {
    /// Validate `raw` (the checker is at `pipeline[i].train`).
    pub fn from_raw(raw: RawTrain, task: Task, files: Files, c: &mut Checker) -> TrainConfig {
        let backend = c.choice(
            "backend",
            raw.backend.as_deref(),
            Backend::Burn,
            |w| match w {
                "burn" => Some(Backend::Burn),
                "command" => Some(Backend::Command),
                "kfp" => Some(Backend::Kfp),
                _ => None,
            },
            |w| format!("`{w}` is not a backend; use \"burn\" (default, local), \"command\" (your own program) or \"kfp\" (a Kubeflow Pipelines run)"),
        );
        let command = match (raw.command, backend) {
            (Some(cmd), _) => Some(CommandConfig::from_raw(
                cmd,
                files,
                &mut c.section("command"),
            )),
            (None, Backend::Command) => {
                c.problem("command", "backend = \"command\" needs a [pipeline.train.command] table with program and predict");
                None
            }
            (None, _) => None,
        };
        let kfp = match (raw.kfp, backend) {
            (Some(k), _) => Some(KfpConfig::from_raw(k, files, &mut c.section("kfp"))),
            (None, Backend::Kfp) => {
                c.problem(
                    "kfp",
                    "backend = \"kfp\" needs a [pipeline.train.kfp] table",
                );
                None
            }
            (None, _) => None,
        };
        TrainConfig {
            backend,
            timeout: c.duration("timeout", &raw.timeout, TIMEOUT),
            burn: BurnConfig::from_raw(raw.burn, task, &mut c.section("burn")),
            command,
            kfp,
        }
    }
}
