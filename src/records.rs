//! The typed records a cycle and a model version carry in the store: what the load step read
//! ([`CycleInputs`]), the gate's document ([`GateDocument`]), a version's scores
//! ([`VersionMetrics`]) and lineage ([`Lineage`]), and the kinds of event in a cycle's log
//! ([`EventKind`]). The decision is [`crate::decision::Decision`]; the model card is
//! [`crate::train::card::ModelCard`].
//!
//! They are serialised with the key names earlier releases wrote, and every field that a
//! release may not have written has a default, so rows written before these types existed
//! still read. Writers and readers share these types: a renamed field is a compile error,
//! not a "-" in a table. Pure: no I/O here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::data::{Fingerprint, ReferenceSource, Roles};
use crate::decision::Decision;
use crate::drift::DriftReport;
use crate::gate::{GateResult, MetricRow};
use crate::performance::{Assessment, Metric};
use crate::quality::QualityReport;

/// The key of a stored report body that retention collected (`{"collected_at": "<time>"}`):
/// its figures stay in the store, its body is gone.
pub const REPORT_COLLECTED: &str = "collected_at";

/// The stored report of a check (`GET /reports/{cycle}` renders it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckReport {
    pub cycle: i64,
    pub pipeline: String,
    pub date: String,
    pub inputs: Option<CycleInputs>,
    pub quality: QualityReport,
    pub drift: DriftReport,
    pub performance: Option<Assessment>,
    pub decision: Decision,
    /// The label-free estimate behind `performance`, when the metric was estimated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<crate::estimate::EstimateReport>,
}

/// What the load step read: the column roles, both inputs' fingerprints (every later step
/// re-reads exactly these bytes), and how many current rows carry a label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CycleInputs {
    pub roles: Roles,
    pub reference: Fingerprint,
    /// In words: "champion v3's training rows", or the configured location.
    #[serde(default)]
    pub reference_from: String,
    /// Whether the reference is the champion's training rows or the configured data.
    pub reference_source: ReferenceSource,
    /// `data.reference_window` (ms since the epoch), when the reference was cut to it.
    #[serde(default)]
    pub reference_window: Option<(i64, i64)>,
    pub current: Fingerprint,
    #[serde(default)]
    pub labelled: bool,
    #[serde(default)]
    pub labelled_rows: usize,
    /// The champion's stored profile of its training rows, read instead of the rows
    /// (`reference` is then the rows' fingerprint as the profile recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_profile: Option<String>,
    /// The current window's profile when Spark computed it (`[pipeline.data.spark]`): the
    /// rows never arrived, `current` describes the summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_profile: Option<String>,
}

/// The gate's verdict with every check, and the champion-vs-challenger table of every metric
/// on the holdout (the cycle's `gate` column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateDocument {
    #[serde(flatten)]
    pub result: GateResult,
    #[serde(default)]
    pub metrics: Vec<MetricRow>,
}

/// One named score of a model version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScoreKey {
    /// `holdout_<metric>`: the metric on the gate's holdout, the version's baseline.
    Holdout(Metric),
    /// `holdout_<metric>_n`: how many holdout rows the proportion counts.
    HoldoutCount(Metric),
    /// `golden_<metric>_<set>`: the metric on the golden set whose digest starts with `set`.
    Golden { metric: Metric, set: String },
    /// `latency_ms_per_1k`: scoring time per 1000 holdout rows.
    Latency,
    /// Any other score a trainer reported (`valid_accuracy`, `valid_f1`, `valid_rmse` …).
    Other(String),
}

impl ScoreKey {
    /// The validation score of `metric` (burn stores weighted F1 as `valid_f1`).
    pub fn valid(metric: Metric) -> ScoreKey {
        ScoreKey::Other(match metric {
            Metric::F1Weighted => "valid_f1".to_string(),
            m => format!("valid_{}", m.name()),
        })
    }
}

impl fmt::Display for ScoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScoreKey::Holdout(m) => write!(f, "holdout_{}", m.name()),
            ScoreKey::HoldoutCount(m) => write!(f, "holdout_{}_n", m.name()),
            ScoreKey::Golden { metric, set } => write!(f, "golden_{}_{set}", metric.name()),
            ScoreKey::Latency => f.write_str("latency_ms_per_1k"),
            ScoreKey::Other(name) => f.write_str(name),
        }
    }
}

impl FromStr for ScoreKey {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<ScoreKey, Self::Err> {
        if s == "latency_ms_per_1k" {
            return Ok(ScoreKey::Latency);
        }
        let metric = |name: &str| name.parse::<Metric>().ok();
        if let Some(rest) = s.strip_prefix("holdout_") {
            if let Some(m) = metric(rest) {
                return Ok(ScoreKey::Holdout(m));
            }
            if let Some(m) = rest.strip_suffix("_n").and_then(metric) {
                return Ok(ScoreKey::HoldoutCount(m));
            }
        }
        if let Some(rest) = s.strip_prefix("golden_")
            && let Some((name, set)) = rest.rsplit_once('_')
            && let Some(m) = metric(name)
        {
            return Ok(ScoreKey::Golden {
                metric: m,
                set: set.to_string(),
            });
        }
        Ok(ScoreKey::Other(s.to_string()))
    }
}

impl Serialize for ScoreKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScoreKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ScoreKey, D::Error> {
        let text = String::deserialize(d)?;
        Ok(text.parse().unwrap_or(ScoreKey::Other(text)))
    }
}

/// A model version's metrics: what training reported, and the scores added later (the
/// gate's holdout, the golden set, latency). A score that could not be computed (ROC AUC on
/// one class) is `None`, stored as `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionMetrics {
    #[serde(deserialize_with = "crate::nan::or_null")]
    pub valid_loss: f64,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_rows: usize,
    #[serde(deserialize_with = "crate::nan::or_null")]
    pub duration_seconds: f64,
    #[serde(deserialize_with = "crate::nan::or_null")]
    pub model_size_mb: f64,
    #[serde(flatten)]
    pub scores: BTreeMap<ScoreKey, Option<f64>>,
}

impl VersionMetrics {
    /// A score, when it is known and a number.
    pub fn score(&self, key: &ScoreKey) -> Option<f64> {
        self.scores.get(key).copied().flatten()
    }

    /// The metric on the gate's holdout (the version's baseline).
    pub fn holdout(&self, metric: Metric) -> Option<f64> {
        self.score(&ScoreKey::Holdout(metric))
    }

    /// How many holdout rows a proportion's baseline counts.
    pub fn holdout_count(&self, metric: Metric) -> Option<usize> {
        self.score(&ScoreKey::HoldoutCount(metric))
            .map(|n| n as usize)
    }

    /// The metric on the validation split, as training reported it.
    pub fn valid(&self, metric: Metric) -> Option<f64> {
        self.score(&ScoreKey::valid(metric))
    }

    /// Set a score (`NaN` is stored as unknown).
    pub fn set(&mut self, key: ScoreKey, value: f64) {
        if let ScoreKey::Other(name) = &key
            && self.set_field(name, value)
        {
            return;
        }
        self.scores.insert(key, Some(value).filter(|v| !v.is_nan()));
    }

    /// Set a metric a trainer reported by name: the field of that name when there is one
    /// (a trainer's own `valid_loss`), else a score — never both, so the document has each
    /// key once.
    pub fn set_named(&mut self, name: &str, value: f64) {
        let key = name
            .parse()
            .unwrap_or_else(|_| ScoreKey::Other(name.to_string()));
        self.set(key, value);
    }

    /// Set the fixed field `name`, if it is one.
    fn set_field(&mut self, name: &str, value: f64) -> bool {
        let count = |v: f64| {
            if v.is_finite() && v >= 0.0 {
                v as usize
            } else {
                0
            }
        };
        match name {
            "valid_loss" => self.valid_loss = value,
            "duration_seconds" => self.duration_seconds = value,
            "model_size_mb" => self.model_size_mb = value,
            "epochs_run" => self.epochs_run = count(value),
            "best_epoch" => self.best_epoch = count(value),
            "train_rows" => self.train_rows = count(value),
            _ => return false,
        }
        true
    }
}

/// Where a version's training rows are and what they were.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingData {
    pub path: String,
    pub rows: usize,
    pub blake3: String,
    /// `current` (the labelled rows of the current window) or `reference`.
    pub source: String,
    pub holdout_share: f64,
    /// BLAKE3 of the rows' profile file beside them (versions from before profiles: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_blake3: Option<String>,
}

/// The DVC md5 of each input, where a `.dvc` file sits beside it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DvcDigests {
    pub reference: Option<String>,
    pub current: Option<String>,
}

/// Where a version is mirrored in MLflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlflowIds {
    pub experiment_id: String,
    pub run_id: String,
    pub registered_model: String,
    pub version: String,
}

/// Where a model version came from: its data, its parent, the report that triggered it,
/// the configuration and the backend that trained it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub training_data: TrainingData,
    pub inputs: Option<CycleInputs>,
    #[serde(default)]
    pub dvc: DvcDigests,
    #[serde(default)]
    pub remote_run_id: Option<String>,
    #[serde(default)]
    pub parent_version: Option<i64>,
    #[serde(default)]
    pub trigger_cycle: i64,
    #[serde(default)]
    pub trigger_report: String,
    #[serde(default)]
    pub config_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlflow: Option<MlflowIds>,
}

/// The kinds of entry in a cycle's (or a pipeline's) event log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A restart resumed the cycle.
    Resumed,
    /// A retrain of a live model began (the retrain budget counts these).
    RetrainStarted,
    /// A remote training run was created; the message is its id.
    RemoteRun,
    /// A runaway guard blocked an action.
    GuardBlock,
    /// The approval request was announced.
    ApprovalRequested,
    /// A channel delivered the request; the message is the channel's name.
    ApprovalDelivered,
    /// A channel could not deliver the request (it is retried).
    ApprovalChannelFailed,
    /// A human (or the config) decided.
    Approval,
    /// The champion moved to the cycle's version.
    Deployed,
    /// One post-deploy watch check, and one that failed.
    WatchCheck,
    WatchFailed,
    /// The watch asked a human to act.
    WatchEscalated,
    /// A watch check that judged the new champion; the message is the day of the window
    /// (or the instant of the live metric) it judged on.
    WatchEvidence,
    /// The watch window was extended: too few of its checks could judge.
    WatchExtended,
    /// A notice could not be delivered.
    NoticeFailed,
    /// The champion was rolled back.
    Rollback,
    /// The pipeline (or every pipeline) was frozen, paused by the breaker, or resumed.
    Frozen,
    Paused,
    ResumedAutomation,
    /// An MLflow mirror call failed.
    Mlflow,
    /// An earlier check's estimate met its labels; the message compares the two.
    EstimateSettled,
    /// A kind this release does not know (written by a newer one).
    Other(String),
}

impl EventKind {
    const KNOWN: [EventKind; 21] = [
        EventKind::Resumed,
        EventKind::RetrainStarted,
        EventKind::RemoteRun,
        EventKind::GuardBlock,
        EventKind::ApprovalRequested,
        EventKind::ApprovalDelivered,
        EventKind::ApprovalChannelFailed,
        EventKind::Approval,
        EventKind::Deployed,
        EventKind::WatchCheck,
        EventKind::WatchFailed,
        EventKind::WatchEscalated,
        EventKind::WatchEvidence,
        EventKind::WatchExtended,
        EventKind::NoticeFailed,
        EventKind::Rollback,
        EventKind::Frozen,
        EventKind::Paused,
        EventKind::ResumedAutomation,
        EventKind::Mlflow,
        EventKind::EstimateSettled,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Resumed => "resumed",
            EventKind::RetrainStarted => "retrain_started",
            EventKind::RemoteRun => "remote_run",
            EventKind::GuardBlock => "guard_block",
            EventKind::ApprovalRequested => "approval_requested",
            EventKind::ApprovalDelivered => "approval_delivered",
            EventKind::ApprovalChannelFailed => "approval_channel_failed",
            EventKind::Approval => "approval",
            EventKind::Deployed => "deployed",
            EventKind::WatchCheck => "watch_check",
            EventKind::WatchFailed => "watch_failed",
            EventKind::WatchEscalated => "watch_escalated",
            EventKind::WatchEvidence => "watch_evidence",
            EventKind::WatchExtended => "watch_extended",
            EventKind::NoticeFailed => "notice_failed",
            EventKind::Rollback => "rollback",
            EventKind::Frozen => "frozen",
            EventKind::Paused => "paused",
            EventKind::ResumedAutomation => "resumed_automation",
            EventKind::Mlflow => "mlflow",
            EventKind::EstimateSettled => "estimate_settled",
            EventKind::Other(kind) => kind,
        }
    }

    /// The watch's own entries (the demo prints these as they happen).
    pub fn is_watch(&self) -> bool {
        matches!(
            self,
            EventKind::WatchCheck
                | EventKind::WatchFailed
                | EventKind::WatchEscalated
                | EventKind::WatchEvidence
                | EventKind::WatchExtended
        )
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for EventKind {
    fn from(s: &str) -> EventKind {
        EventKind::KNOWN
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or_else(|| EventKind::Other(s.to_string()))
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EventKind, D::Error> {
        Ok(EventKind::from(String::deserialize(d)?.as_str()))
    }
}

/// Serialise `value` as JSON with every object's keys in name order, as earlier releases
/// printed the documents they read back from the store (`serialize_with` on output types).
pub fn sorted<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    serde_json::to_value(value)
        .map_err(serde::ser::Error::custom)?
        .serialize(s)
}

/// A section that does not read as its type is absent.
pub fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(serde_json::from_value(serde_json::Value::deserialize(d)?).ok())
}

/// The entries of a list that read as their type (a feature that does not is left out).
pub fn lenient_list<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// A document that does not read as its type is its default (a model card's metrics).
pub fn lenient_or_default<'de, D: Deserializer<'de>, T: DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(lenient(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_keys_round_trip_through_their_names() {
        for name in [
            "holdout_accuracy",
            "holdout_accuracy_n",
            "holdout_f1_weighted",
            "golden_rmse_0123456789ab",
            "latency_ms_per_1k",
            "valid_f1",
            "holdout_made_up",
        ] {
            let key: ScoreKey = name.parse().unwrap();
            assert_eq!(key.to_string(), name);
        }
        assert_eq!(
            "holdout_f1_weighted_n".parse::<ScoreKey>().unwrap(),
            ScoreKey::HoldoutCount(Metric::F1Weighted)
        );
        assert_eq!(ScoreKey::valid(Metric::F1Weighted).to_string(), "valid_f1");
    }

    /// A version's metrics as the previous release stored them (a NaN score as null, a
    /// golden score, a trainer's own metric) read into the type and write back the same.
    #[test]
    fn stored_metrics_read_and_write_back_unchanged() {
        let stored = serde_json::json!({
            "best_epoch": 7, "duration_seconds": 0.5, "epochs_run": 13,
            "holdout_accuracy": 0.93, "holdout_accuracy_n": 900.0, "holdout_roc_auc": null,
            "golden_accuracy_4f1c0e2ab3d9": 0.91, "latency_ms_per_1k": 1.25,
            "model_size_mb": 0.01, "train_rows": 2100, "valid_accuracy": 0.94,
            "valid_f1": 0.93, "valid_loss": 0.2, "my_metric": 3.0
        });
        let m: VersionMetrics = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(m.holdout(Metric::Accuracy), Some(0.93));
        assert_eq!(m.holdout_count(Metric::Accuracy), Some(900));
        assert_eq!(m.holdout(Metric::RocAuc), None);
        assert_eq!(m.valid(Metric::F1Weighted), Some(0.93));
        assert_eq!((m.epochs_run, m.train_rows), (13, 2100));
        assert_eq!(serde_json::to_value(&m).unwrap(), stored);
        // A command trainer that reports no loss stores NaN, written as null.
        let no_loss = serde_json::json!({"best_epoch": 0, "duration_seconds": 1.5,
            "epochs_run": 0, "model_size_mb": 0.2, "train_rows": 700, "valid_loss": null,
            "valid_accuracy": 0.9});
        let m: VersionMetrics = serde_json::from_value(no_loss.clone()).unwrap();
        assert!(m.valid_loss.is_nan());
        assert_eq!(m.valid(Metric::Accuracy), Some(0.9));
        assert_eq!(serde_json::to_value(&m).unwrap(), no_loss);
    }

    /// A trainer that reports metrics named like the fixed fields (a command trainer's
    /// `valid_loss`) sets those fields: the document has each key once and reads back.
    #[test]
    fn a_trainer_metric_named_like_a_field_sets_the_field() {
        let mut m = VersionMetrics::default();
        m.set_named("valid_loss", 0.25);
        m.set_named("train_rows", 700.0);
        m.set_named("valid_f1", 0.9);
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(text.matches("\"valid_loss\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"train_rows\"").count(), 1, "{text}");
        let back: VersionMetrics = serde_json::from_str(&text).unwrap();
        assert_eq!((back.valid_loss, back.train_rows), (0.25, 700));
        assert_eq!(back.valid(Metric::F1Weighted), Some(0.9));
    }

    #[test]
    fn event_kinds_keep_their_names_and_unknown_ones_survive() {
        for k in EventKind::KNOWN {
            assert_eq!(EventKind::from(k.as_str()), k);
        }
        let later = EventKind::from("estimate_recorded");
        assert_eq!(later, EventKind::Other("estimate_recorded".into()));
        assert_eq!(
            serde_json::to_string(&later).unwrap(),
            "\"estimate_recorded\""
        );
    }
}
