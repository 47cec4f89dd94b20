//! Deploy targets: what "deploying a version" does outside the store. The engine runs every
//! target of a pipeline, then moves the `champion` alias (and `previous`) in one store
//! transaction; a failing target fails the deploy step before the alias moves, so the store
//! never names a champion that was not put in place. Targets must be idempotent: after a
//! crash the step runs them again.
//!
//! Targets: the `current` symlink (an atomic rename of a link to the version's directory, for
//! serving processes that load `models/<pipeline>/current`) and a signed HTTP deploy hook
//! (`deploy.hook_url`: a Standard Webhooks-signed JSON POST, so a serving system can reload).
//! When a target fails, the engine runs the targets that already succeeded again for the
//! champion in place, so nothing points at a version the store does not name. The MLflow
//! alias follows the store after the move (best effort, [`crate::mlflow`]).

use std::path::{Path, PathBuf};

use crate::artifacts::{self, ArtifactError};
use crate::store::ModelVersion;

mod config;
pub use config::{DeployConfig, HookConfig, RawDeploy};

/// Why a deploy target failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("deploy target {target}: {source}")]
    Artifact {
        target: &'static str,
        source: ArtifactError,
    },
    #[error(
        "deploy target {target}: model directory {path} is missing; the version cannot be deployed"
    )]
    MissingModel { target: &'static str, path: PathBuf },
    #[error("deploy target {target}: {message}")]
    Hook {
        target: &'static str,
        message: String,
    },
}

/// One placement of a version: what goes in, what it replaces, and the delivery id that
/// names this move (the same on every retry of it, a restart in between included, and
/// distinct for every other move), so a serving system can de-duplicate.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub delivery: &'a str,
    pub version: &'a ModelVersion,
    /// The version in place now; none for the first.
    pub replacing: Option<&'a ModelVersion>,
}

/// One place a deployed version must reach. Blocking; run off the async runtime.
pub trait DeployTarget: Send + Sync {
    fn name(&self) -> &'static str;
    /// Put `placement.version` in place of `placement.replacing`. Called again with the same
    /// placement when a retry or a restart repeats the same move.
    fn deploy(&self, state_dir: &Path, placement: &Placement<'_>) -> Result<(), DeployError>;
}

/// The delivery id of move `move_id` putting `version` in place:
/// `deploy-<pipeline>-v<N>-move-<id>`. The move is a row of the store's `moves` table, opened
/// before any target runs: its retries (and a restart mid-move) carry the same id, and
/// v1→v2, a rollback to v1 and v1→v2 again are three moves with three ids. Putting the
/// champion back after a failed target is the move's undo: `…-undo`.
pub fn delivery_id(version: &ModelVersion, move_id: i64) -> String {
    format!(
        "deploy-{}-v{}-move-{move_id}",
        version.pipeline, version.version
    )
}

/// Point `<state_dir>/models/<pipeline>/current` at the version's directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct CurrentSymlink;

impl DeployTarget for CurrentSymlink {
    fn name(&self) -> &'static str {
        "current_symlink"
    }

    fn deploy(&self, state_dir: &Path, placement: &Placement<'_>) -> Result<(), DeployError> {
        let version = placement.version;
        let target = PathBuf::from(&version.path);
        if !target.is_dir() {
            return Err(DeployError::MissingModel {
                target: self.name(),
                path: target,
            });
        }
        let link = artifacts::current_link(state_dir, &version.pipeline);
        artifacts::swap_symlink(&link, &target).map_err(|source| DeployError::Artifact {
            target: self.name(),
            source,
        })
    }
}

/// POST `{type: "model.deployed", pipeline, version, path, ...}` to the pipeline's hook,
/// signed with the hook secret (Standard Webhooks) when one is configured. Any answer but 2xx
/// fails the target.
pub struct HttpHook {
    pub url: String,
    /// Read at every deploy, so a rotated secret is used at once.
    pub secret: Option<crate::secret::SecretSource>,
    pub timeout: std::time::Duration,
}

impl HttpHook {
    /// The JSON body for a version (also what tests compare byte for byte).
    pub fn body(version: &ModelVersion, at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
        serde_json::json!({
            "type": "model.deployed",
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "pipeline": version.pipeline,
            "version": version.version,
            "path": version.path,
            "cycle": version.cycle_id,
        })
        .to_string()
        .into_bytes()
    }
}

impl DeployTarget for HttpHook {
    fn name(&self) -> &'static str {
        "http_hook"
    }

    fn deploy(&self, _state_dir: &Path, placement: &Placement<'_>) -> Result<(), DeployError> {
        let now = chrono::Utc::now();
        let id = placement.delivery.to_string();
        let body = Self::body(placement.version, now);
        let secret = self
            .secret
            .as_ref()
            .map(crate::secret::Secret::load)
            .transpose()
            .map_err(|e| DeployError::Hook {
                target: self.name(),
                message: format!("deploy.hook_secret: {e}"),
            })?;
        // Signed (Standard Webhooks) with a secret; the id is sent either way.
        let headers = match &secret {
            Some(s) => crate::signing::sign_webhook(s, &id, now.timestamp(), &body)
                .pairs()
                .to_vec(),
            None => vec![("webhook-id", id)],
        };
        let client = crate::approval::http_client(self.timeout);
        let url = self.url.clone();
        let sent = crate::source::block_on(async move {
            crate::approval::post_json(&client, "http_hook", &url, None, &headers, body).await
        });
        match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(DeployError::Hook {
                target: self.name(),
                message: e.message,
            }),
            Err(e) => Err(DeployError::Hook {
                target: self.name(),
                message: e.to_string(),
            }),
        }
    }
}
