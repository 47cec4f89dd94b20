//! The rows the store hands out and takes in, and how they are read from a query result.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use crate::cycle::{CycleState, Outcome, TriggerKind, UnknownState};
use crate::decision::Decision;
use crate::guards::Hold;
use crate::records::{CycleInputs, EventKind, GateDocument, Lineage, VersionMetrics};

/// The current holder of the leader lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub holder: String,
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

/// A pipeline row.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRow {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_scheduled_at: Option<DateTime<Utc>>,
}

/// A cycle row.
#[derive(Debug, Clone, Serialize)]
pub struct CycleRow {
    pub id: i64,
    pub pipeline: String,
    pub trigger: TriggerKind,
    /// The cycle's day (YYYY-MM-DD in the pipeline's timezone); `{date}` in data paths.
    pub cycle_date: String,
    pub state: CycleState,
    pub outcome: Option<Outcome>,
    /// Why the cycle is where it is (the last transition's reason).
    pub reason: Option<String>,
    pub inputs: Option<CycleInputs>,
    pub decision: Option<Decision>,
    pub candidate_version: Option<i64>,
    pub gate: Option<GateDocument>,
    pub deadline_at: Option<DateTime<Utc>>,
    /// How many times a restart resumed this cycle.
    pub resumes: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One persisted state transition.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionRow {
    pub from: Option<CycleState>,
    pub to: CycleState,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A registered model version.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    pub id: i64,
    pub pipeline: String,
    pub version: i64,
    pub cycle_id: i64,
    pub path: String,
    pub metrics: VersionMetrics,
    pub lineage: Lineage,
    pub created_at: DateTime<Utc>,
}

/// How a champion moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    Deploy,
    Rollback,
}

impl DeployKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployKind::Deploy => "deploy",
            DeployKind::Rollback => "rollback",
        }
    }
}

impl FromStr for DeployKind {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deploy" => Ok(DeployKind::Deploy),
            "rollback" => Ok(DeployKind::Rollback),
            other => Err(UnknownState(other.to_string())),
        }
    }
}

/// A champion move to record.
#[derive(Debug, Clone)]
pub struct ChampionMove<'a> {
    pub pipeline: &'a str,
    pub version_id: i64,
    pub kind: DeployKind,
    pub cycle: Option<i64>,
    pub actor: &'a str,
    pub reason: &'a str,
    /// The open move ([`Store::begin_move`]) this closes.
    pub move_id: i64,
}

/// A recorded champion move.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub id: i64,
    pub kind: DeployKind,
    pub version_id: i64,
    /// The version number (per pipeline) of `version_id`.
    pub version: i64,
    pub from_version_id: Option<i64>,
    pub cycle_id: Option<i64>,
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The `guard_state` pipeline name of holds that cover every pipeline.
pub const GLOBAL: &str = "*";

/// Which hold a `guard_state` row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    Frozen,
    Paused,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Frozen => "frozen",
            HoldKind::Paused => "paused",
        }
    }
}

/// The holds on a pipeline.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    pub global: Option<Hold>,
    pub frozen: Option<Hold>,
    pub paused: Option<Hold>,
}

/// What a trigger produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "cycle", rename_all = "snake_case")]
pub enum CreateOutcome {
    Created(i64),
    /// The pipeline already has a cycle in flight; this is its id.
    AlreadyRunning(i64),
}

/// Column updates that ride along with a transition.
#[derive(Debug, Default, Clone)]
pub struct CycleUpdate {
    pub outcome: Option<Outcome>,
    pub inputs: Option<CycleInputs>,
    pub decision: Option<Decision>,
    pub gate: Option<GateDocument>,
    pub candidate_version: Option<i64>,
    /// `Some(None)` clears the deadline.
    pub deadline_at: Option<Option<DateTime<Utc>>>,
}

impl CycleUpdate {
    /// An update that records how the cycle ended.
    pub fn outcome(outcome: Outcome) -> CycleUpdate {
        CycleUpdate {
            outcome: Some(outcome),
            ..CycleUpdate::default()
        }
    }
}

/// A new model version to register.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub pipeline: String,
    pub cycle_id: i64,
    pub path: String,
    pub metrics: VersionMetrics,
    pub lineage: Lineage,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub kind: EventKind,
    pub message: String,
}

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// A JSON column as its record type; a document that does not read is treated as absent
/// (as it always was: a row must never make a listing fail).
pub(super) fn json_col<T: DeserializeOwned>(
    row: &AnyRow,
    col: &str,
) -> Result<Option<T>, sqlx::Error> {
    let text: Option<String> = row.try_get(col)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

/// A record as the JSON text its column holds.
pub(super) fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

pub(super) fn cycle_from_row(row: &AnyRow) -> Result<CycleRow, StoreError> {
    let outcome: Option<String> = row.try_get("outcome")?;
    Ok(CycleRow {
        id: row.try_get("id")?,
        pipeline: row.try_get("pipeline")?,
        trigger: TriggerKind::from_str(&row.try_get::<String, _>("trigger_kind")?)?,
        cycle_date: row.try_get("cycle_date")?,
        state: CycleState::from_str(&row.try_get::<String, _>("state")?)?,
        outcome: outcome.map(|o| Outcome::from_str(&o)).transpose()?,
        reason: row.try_get("reason")?,
        inputs: json_col(row, "inputs")?,
        decision: json_col(row, "decision")?,
        candidate_version: row.try_get("candidate_version")?,
        gate: json_col(row, "gate")?,
        deadline_at: row
            .try_get::<Option<i64>, _>("deadline_at")?
            .map(from_millis),
        resumes: row.try_get("resumes")?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis),
    })
}

pub(super) fn version_from_row(row: &AnyRow) -> Result<ModelVersion, StoreError> {
    Ok(ModelVersion {
        id: row.try_get("id")?,
        pipeline: row.try_get("pipeline")?,
        version: row.try_get("version")?,
        cycle_id: row.try_get("cycle_id")?,
        path: row.try_get("path")?,
        metrics: json_col(row, "metrics")?.unwrap_or_default(),
        lineage: json_col(row, "lineage")?.unwrap_or_default(),
        created_at: from_millis(row.try_get("created_at")?),
    })
}

pub(super) const CYCLE_COLUMNS: &str = "id, pipeline, trigger_kind, cycle_date, state, outcome, reason, inputs, decision, candidate_version, gate, deadline_at, resumes, created_at, updated_at, finished_at";
pub(super) const VERSION_COLUMNS: &str =
    "id, pipeline, version, cycle_id, path, metrics, lineage, created_at";

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// The figures of a check report the console plots, stored beside its body.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportSummary {
    pub dataset_drift: bool,
    /// Share of features that drifted.
    pub drift_share: Option<f64>,
    /// The champion's metric on the window (estimated when `estimated`).
    pub metric: Option<f64>,
    /// `metric` was estimated without labels.
    pub estimated: bool,
    /// The realised value of an estimated metric, once labels came.
    pub realised: Option<f64>,
}

impl From<&crate::records::CheckReport> for ReportSummary {
    fn from(r: &crate::records::CheckReport) -> Self {
        let perf = r.performance.as_ref();
        let estimate = perf.and_then(|p| p.estimated.as_ref());
        ReportSummary {
            dataset_drift: r.drift.dataset.drifted,
            drift_share: Some(r.drift.dataset.drifted_share).filter(|s| s.is_finite()),
            metric: perf.and_then(|p| p.current).filter(|v| v.is_finite()),
            estimated: estimate.is_some(),
            realised: estimate.and_then(|e| e.realised).filter(|v| v.is_finite()),
        }
    }
}

/// One check of a pipeline, as the console plots it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportPoint {
    pub cycle: i64,
    pub date: String,
    pub at: DateTime<Utc>,
    pub dataset_drift: bool,
    pub drift_share: Option<f64>,
    pub metric: Option<f64>,
    pub estimated: bool,
    pub realised: Option<f64>,
}
