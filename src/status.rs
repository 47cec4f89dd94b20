//! The read model shared by the HTTP API and the CLI: pipeline status and cycle details as
//! stable JSON documents (their fields are documented in the README; add fields, never
//! rename or remove them). Built from the store's typed records; it must not mutate
//! anything.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::approval::ApprovalRow;
use crate::config::Config;
use crate::cycle::{CycleState, Outcome};
use crate::performance::Metric;
use crate::records::{self, GateDocument, Lineage, VersionMetrics};
use crate::store::{CycleRow, EventRow, ModelVersion, Store, StoreError, TransitionRow};

/// `retraind status --format json` / `GET /api/v1/pipelines`, one entry per pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub next_scheduled_at: Option<DateTime<Utc>>,
    pub champion: Option<VersionSummary>,
    pub previous: Option<VersionSummary>,
    /// The cycle in flight, if any.
    pub active_cycle: Option<CycleSummary>,
    /// The newest finished cycle, if any.
    pub last_cycle: Option<CycleSummary>,
    /// What stops or holds its automation now: freezes (its own and the kill switch), the
    /// circuit breaker's pause, a candidate awaiting approval. Empty when nothing does.
    pub holds: Vec<HoldSummary>,
    /// The newest check: its cycle, when, whether the dataset drifted and how much.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_check: Option<crate::store::CheckGlance>,
}

/// One hold on a pipeline, with who, since when and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldSummary {
    pub kind: HoldKind,
    /// The actor who froze it, the guard that paused it, or the approvers awaited.
    pub by: String,
    pub since: DateTime<Utc>,
    pub reason: String,
    /// The cycle awaiting approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cycle: Option<i64>,
}

/// Why a pipeline's automation is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// `retraind freeze <pipeline>`, or the freeze after an automatic rollback.
    Frozen,
    /// `retraind freeze` without a pipeline: the kill switch, on every pipeline.
    FrozenAll,
    /// The circuit breaker (too many failures or rollbacks in a row).
    Paused,
    /// A blessed candidate waits for a person's decision.
    AwaitingApproval,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Frozen => "frozen",
            HoldKind::FrozenAll => "frozen (all pipelines)",
            HoldKind::Paused => "paused by the circuit breaker",
            HoldKind::AwaitingApproval => "awaiting approval",
        }
    }
}

/// The holds of pipeline `p` on record, and its cycle awaiting approval.
fn holds_of(
    p: &crate::config::Pipeline,
    on_record: crate::store::Holds,
    active: Option<&CycleRow>,
) -> Vec<HoldSummary> {
    let mut out: Vec<HoldSummary> = [
        (HoldKind::FrozenAll, on_record.global),
        (HoldKind::Frozen, on_record.frozen),
        (HoldKind::Paused, on_record.paused),
    ]
    .into_iter()
    .filter_map(|(kind, hold)| {
        hold.map(|h| HoldSummary {
            kind,
            by: h.by,
            since: h.at,
            reason: h.reason,
            cycle: None,
        })
    })
    .collect();
    if let Some(c) = active.filter(|c| c.state == CycleState::AwaitingApproval) {
        let approvers = &p.approval.approvers;
        out.push(HoldSummary {
            kind: HoldKind::AwaitingApproval,
            by: match approvers.is_empty() {
                true => "any approver".to_string(),
                false => approvers.join(", "),
            },
            since: c.updated_at,
            reason: c.reason.clone().unwrap_or_default(),
            cycle: Some(c.id),
        });
    }
    out
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionSummary {
    pub version: i64,
    pub cycle: i64,
    pub path: String,
    pub holdout_accuracy: Option<f64>,
    /// The pipeline's gate metric and its value on the version's evaluation holdout.
    pub metric: Metric,
    pub holdout: Option<f64>,
    pub created_at: DateTime<Utc>,
}

impl VersionSummary {
    fn new(v: &ModelVersion, metric: Metric) -> Self {
        VersionSummary {
            version: v.version,
            cycle: v.cycle_id,
            path: v.path.clone(),
            holdout_accuracy: v.metrics.holdout(Metric::Accuracy),
            metric,
            holdout: v.metrics.holdout(metric),
            created_at: v.created_at,
        }
    }
}

/// `retraind history --format json` / `GET /api/v1/cycles`, one entry per cycle.
#[derive(Debug, Clone, Serialize)]
pub struct CycleSummary {
    pub id: i64,
    pub pipeline: String,
    pub trigger: String,
    pub date: String,
    pub state: CycleState,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub candidate_version: Option<i64>,
    pub resumes: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The champion's metric as estimated without labels, and realised once they came
    /// (`history` only; absent when the cycle's check did not estimate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<EstimateSummary>,
}

/// A check's estimate of the champion's metric beside the realised value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EstimateSummary {
    pub metric: Metric,
    pub estimated: f64,
    pub lower: f64,
    pub upper: f64,
    pub realised: Option<f64>,
}

impl EstimateSummary {
    /// The estimate in a stored check report, if its metric was estimated.
    pub fn of(report: &records::CheckReport) -> Option<EstimateSummary> {
        let perf = report.performance.as_ref()?;
        let e = perf.estimated.as_ref()?;
        Some(EstimateSummary {
            metric: perf.metric,
            estimated: perf.current?,
            lower: e.lower,
            upper: e.upper,
            realised: e.realised,
        })
    }

    /// In words, for `history`'s text.
    pub fn describe(&self) -> String {
        let realised = self.realised.map_or_else(
            || "labels not yet in".to_string(),
            |r| format!("realised {r:.4}"),
        );
        format!(
            "estimated {} {:.4} [{:.4}, {:.4}], {realised}",
            self.metric.name(),
            self.estimated,
            self.lower,
            self.upper
        )
    }
}

impl From<&CycleRow> for CycleSummary {
    fn from(c: &CycleRow) -> Self {
        CycleSummary {
            id: c.id,
            pipeline: c.pipeline.clone(),
            trigger: c.trigger.as_str().to_string(),
            date: c.cycle_date.clone(),
            state: c.state,
            outcome: c.outcome,
            reason: c.reason.clone(),
            candidate_version: c.candidate_version,
            resumes: c.resumes,
            created_at: c.created_at,
            finished_at: c.finished_at,
            estimate: None,
        }
    }
}

/// `GET /api/v1/cycles/{id}`: a cycle with everything recorded about it.
#[derive(Debug, Clone, Serialize)]
pub struct CycleDetail {
    #[serde(flatten)]
    pub cycle: CycleRow,
    pub transitions: Vec<TransitionRow>,
    pub approvals: Vec<ApprovalRow>,
    pub events: Vec<EventRow>,
    /// The stored report of the check, as written.
    pub report: Option<serde_json::Value>,
}

/// Status of every configured pipeline, one store round trip each ([`Store::snapshot`]).
pub async fn pipelines(store: &Store, config: &Config) -> Result<Vec<PipelineStatus>, StoreError> {
    let mut out = Vec::new();
    for p in &config.pipelines {
        out.push(pipeline(store, p).await?);
    }
    Ok(out)
}

/// Status of one configured pipeline, in one store round trip.
pub async fn pipeline(
    store: &Store,
    p: &crate::config::Pipeline,
) -> Result<PipelineStatus, StoreError> {
    let s = store.snapshot(&p.name).await?;
    Ok(PipelineStatus {
        holds: holds_of(p, s.holds, s.active.as_ref()),
        name: p.name.clone(),
        schedule: p.schedule.expression().to_string(),
        timezone: p.schedule.timezone().to_string(),
        next_scheduled_at: p.schedule.next_after(Utc::now()),
        champion: s
            .champion
            .as_ref()
            .map(|v| VersionSummary::new(v, p.gate.metric)),
        previous: s
            .previous
            .as_ref()
            .map(|v| VersionSummary::new(v, p.gate.metric)),
        active_cycle: s.active.as_ref().map(CycleSummary::from),
        last_cycle: s.last.as_ref().map(CycleSummary::from),
        last_check: s.last_check,
    })
}

/// `retraind models <pipeline> --format json` / `GET /api/v1/pipelines/{p}/models`: one
/// entry per model version, newest first. The stored documents print with their keys in
/// name order, as they always have.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEntry {
    pub version: i64,
    pub cycle: i64,
    pub path: String,
    /// Aliases pointing at this version now (`champion`, `previous`).
    pub aliases: Vec<String>,
    /// Training and evaluation metrics (`holdout_<metric>` from the gate's holdout).
    #[serde(serialize_with = "records::sorted")]
    pub metrics: VersionMetrics,
    /// Inputs' fingerprints, parent version, trigger report, config hash, backend.
    #[serde(serialize_with = "records::sorted")]
    pub lineage: Lineage,
    /// The evaluation gate's verdict on this version, when it was evaluated.
    #[serde(serialize_with = "records::sorted")]
    pub gate: Option<GateDocument>,
    pub created_at: DateTime<Utc>,
}

/// Every version of a pipeline, newest first.
pub async fn models(store: &Store, pipeline: &str) -> Result<Vec<ModelEntry>, StoreError> {
    let champion = store.alias(pipeline, "champion").await?.map(|v| v.id);
    let previous = store.alias(pipeline, "previous").await?.map(|v| v.id);
    let mut out = Vec::new();
    let mut versions = store.versions(pipeline).await?;
    versions.sort_by_key(|v| std::cmp::Reverse(v.version));
    for v in versions {
        let aliases = [("champion", champion), ("previous", previous)]
            .into_iter()
            .filter(|(_, id)| *id == Some(v.id))
            .map(|(a, _)| a.to_string())
            .collect();
        let gate = store.cycle(v.cycle_id).await?.and_then(|c| c.gate);
        out.push(ModelEntry {
            version: v.version,
            cycle: v.cycle_id,
            path: v.path,
            aliases,
            metrics: v.metrics,
            lineage: v.lineage,
            gate,
            created_at: v.created_at,
        });
    }
    Ok(out)
}

/// A version and its ancestors (parent, grandparent …), newest first; empty if the version
/// does not exist.
pub fn lineage(models: &[ModelEntry], version: i64) -> Vec<&ModelEntry> {
    let mut chain = Vec::new();
    let mut next = Some(version);
    while let Some(v) = next {
        let Some(m) = models.iter().find(|m| m.version == v) else {
            break;
        };
        if chain.iter().any(|c: &&ModelEntry| c.version == v) {
            break;
        }
        chain.push(m);
        next = m.lineage.parent_version;
    }
    chain
}

/// Everything about one cycle.
pub async fn cycle(store: &Store, id: i64) -> Result<Option<CycleDetail>, StoreError> {
    let Some(cycle) = store.cycle(id).await? else {
        return Ok(None);
    };
    Ok(Some(CycleDetail {
        transitions: store.transitions(id).await?,
        approvals: store.approvals(id).await?,
        events: store.events(id).await?,
        report: store.report(id).await?,
        cycle,
    }))
}
