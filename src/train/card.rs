//! The model card: everything needed to load, judge and trace a model without the store,
//! written as `card.json` beside the model's files — its format, task and backend, its
//! metrics and lineage as registered, the training report (per-epoch history included) and
//! the trainer's settings (environment values masked).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::TrainOutput;
use crate::performance::Task;
use crate::records::{Lineage, VersionMetrics};

/// The file name of a model card.
pub const CARD_FILE: &str = "card.json";

/// `card.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelCard {
    /// How to load the model again (`burn-mlp-v1`, `command-v1`).
    pub format: String,
    #[serde(default)]
    pub task: Task,
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub cycle: i64,
    #[serde(default, deserialize_with = "crate::records::lenient_or_default")]
    pub metrics: VersionMetrics,
    #[serde(default, deserialize_with = "crate::records::lenient")]
    pub lineage: Option<Lineage>,
    #[serde(default, deserialize_with = "crate::records::lenient")]
    pub training: Option<TrainOutput>,
    /// The trainer's settings as configured (for MLflow params); environment values masked.
    #[serde(default)]
    pub config: serde_json::Value,
}

/// Just the format, which is all loading needs (cards of every release have it).
#[derive(Deserialize)]
struct Format {
    format: Option<String>,
}

impl ModelCard {
    /// The card in a model directory, if it reads. Blocking.
    pub fn load(dir: &Path) -> Option<ModelCard> {
        let bytes = std::fs::read(dir.join(CARD_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The format the card in `dir` names. Blocking.
    pub fn format_of(dir: &Path) -> Option<String> {
        let bytes = std::fs::read(dir.join(CARD_FILE)).ok()?;
        serde_json::from_slice::<Format>(&bytes).ok()?.format
    }
}
