//! Why a step failed (stored as the cycle's reason) and why an engine call was refused.

use std::time::Duration;

use crate::artifacts::ArtifactError;
use crate::cycle::CycleState;
use crate::deploy::DeployError;
use crate::store::StoreError;
use crate::train::TrainError;

/// Why a step failed. Stored as the cycle's reason.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Spark(#[from] crate::spark::SparkError),
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(
        "pipeline `{0}` is no longer in the configuration; add it back or the cycle stays failed"
    )]
    UnknownPipeline(String),
    #[error(
        "input {path} changed since it was loaded (blake3 {was} -> {now}); the cycle stops so its report and model describe one data set"
    )]
    InputChanged {
        path: String,
        was: String,
        now: String,
    },
    #[error("training timed out after {0:?} (train.timeout)")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
    #[error("step interrupted by shutdown")]
    Interrupted,
}

/// Errors from the engine's public calls.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("no pipeline named `{0}` in the configuration")]
    UnknownPipeline(String),
    #[error("no cycle {0}")]
    UnknownCycle(i64),
    #[error("cycle {id} is {state}, not awaiting approval")]
    NotAwaitingApproval { id: i64, state: CycleState },
    #[error(
        "the approval request of cycle {0} expired; the cycle is rejected and cannot be approved"
    )]
    Expired(i64),
    #[error("`{approver}` is not in approval.approvers of pipeline `{pipeline}`")]
    NotAnApprover { approver: String, pipeline: String },
    #[error("pipeline `{0}` has no champion yet; there is nothing to roll back")]
    NoChampion(String),
    #[error(
        "pipeline `{0}` has no `previous` version; name one with --to <version> (see `retraind models {0}`)"
    )]
    NoPrevious(String),
    #[error("pipeline `{pipeline}` has no version {version} (see `retraind models {pipeline}`)")]
    UnknownVersion { pipeline: String, version: i64 },
    #[error(
        "v{version} of `{pipeline}` was collected by retention on {at}: its files are gone ([daemon.retention] keeps the champion, `previous`, versions in flight and the newest keep_versions); pick a kept version from `retraind models {pipeline}`"
    )]
    Collected {
        pipeline: String,
        version: i64,
        at: String,
    },
    #[error("v{version} of `{pipeline}` is already the champion")]
    AlreadyChampion { pipeline: String, version: i64 },
    #[error("rollback failed, the champion is unchanged: {0}")]
    Deploy(String),
    #[error("this daemon is a standby; send this to the leader ({0})")]
    NotLeader(String),
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("replayed {0} request: this signed decision was already recorded")]
    Replayed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EngineError {
    /// The HTTP status an API or console request that met this error answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            EngineError::UnknownPipeline(_)
            | EngineError::UnknownCycle(_)
            | EngineError::UnknownVersion { .. } => 404,
            EngineError::NotAwaitingApproval { .. }
            | EngineError::Expired(_)
            | EngineError::NoChampion(_)
            | EngineError::NoPrevious(_)
            | EngineError::AlreadyChampion { .. }
            | EngineError::Collected { .. } => 409,
            EngineError::Deploy(_) => 502,
            EngineError::NotAnApprover { .. } => 403,
            EngineError::Replayed(_) => 401,
            EngineError::Store(StoreError::MoveInProgress { .. }) => 409,
            EngineError::NotLeader(_) | EngineError::ShuttingDown | EngineError::Store(_) => 503,
        }
    }
}
