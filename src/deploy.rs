//! Deploy targets: what "deploying a version" does outside the store. The engine runs every
//! target of a pipeline, then moves the `champion` alias (and `previous`) in one store
//! transaction; a failing target fails the deploy step before the alias moves, so the store
//! never names a champion that was not put in place. Targets must be idempotent: after a
//! crash the step runs them again.
//!
//! This build has the `current` symlink target (an atomic rename of a link to the version's
//! directory, for serving processes that load `models/<pipeline>/current`). Signed HTTP deploy
//! hooks and the MLflow alias plug in here.

use std::path::{Path, PathBuf};

use crate::artifacts::{self, ArtifactError};
use crate::store::ModelVersion;

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
}

/// One place a deployed version must reach. Blocking; run off the async runtime.
pub trait DeployTarget: Send + Sync {
    fn name(&self) -> &'static str;
    fn deploy(&self, state_dir: &Path, version: &ModelVersion) -> Result<(), DeployError>;
}

/// Point `<state_dir>/models/<pipeline>/current` at the version's directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct CurrentSymlink;

impl DeployTarget for CurrentSymlink {
    fn name(&self) -> &'static str {
        "current_symlink"
    }

    fn deploy(&self, state_dir: &Path, version: &ModelVersion) -> Result<(), DeployError> {
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
