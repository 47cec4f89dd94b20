//! Configuration: the raw TOML shape (`raw`), environment overrides, and the validated
//! [`Config`] the rest of the daemon uses.
//!
//! Loading is two-phase, as in ripgrep: the file is parsed into raw structs that mirror the
//! TOML exactly (every field optional), then `validate` turns them into typed values and
//! collects *every* problem at once — unknown keys, bad cron expressions, bad durations,
//! missing files, out-of-range thresholds — each naming its key path and the fix. Nothing
//! here reads secrets' contents; [`crate::secret`] does that at start-up.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::schedule::Schedule;
use crate::source::{Location, S3Config};
use chrono_tz::Tz;

/// Default cron schedule: 02:00 every day (six fields, seconds first).
pub const DEFAULT_SCHEDULE: &str = "0 0 2 * * *";
/// Default admin/API listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// One problem found in a configuration, with the key path at fault and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `pipeline[0].schedule`.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Errors from loading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (pass an existing file with --config)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {} problem(s):\n{}", problems.len(), render_problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The raw TOML shape. Every field is optional so that missing keys get their documented
/// defaults and unknown keys are collected (not fatal on first sight).
pub mod raw {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    pub struct RawConfig {
        #[serde(default)]
        pub daemon: RawDaemon,
        #[serde(default)]
        pub server: RawServer,
        #[serde(default)]
        pub store: RawStore,
        #[serde(default)]
        pub pipeline: Vec<RawPipeline>,
        pub slack: Option<RawSlack>,
        pub webhook: Option<RawWebhook>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawSlack {
        pub api_url: Option<String>,
        pub channel: Option<String>,
        pub bot_token_file: Option<String>,
        pub bot_token_env: Option<String>,
        pub signing_secret_file: Option<String>,
        pub signing_secret_env: Option<String>,
        pub incoming_webhook_file: Option<String>,
        pub incoming_webhook_env: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawWebhook {
        pub url: Option<String>,
        pub secret_file: Option<String>,
        pub secret_env: Option<String>,
        pub timeout: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawDaemon {
        pub state_dir: Option<String>,
        pub shutdown_grace: Option<String>,
        pub instance: Option<String>,
        pub lease_ttl: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawServer {
        pub listen: Option<String>,
        pub api_token_file: Option<String>,
        pub api_token_env: Option<String>,
        pub public_url: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawStore {
        pub url: Option<String>,
        pub max_connections: Option<i64>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawPipeline {
        pub name: Option<String>,
        pub task: Option<String>,
        pub schedule: Option<String>,
        pub timezone: Option<String>,
        pub catch_up: Option<bool>,
        #[serde(default)]
        pub data: RawData,
        #[serde(default)]
        pub quality: RawQuality,
        #[serde(default)]
        pub drift: RawDrift,
        #[serde(default)]
        pub performance: RawPerformance,
        #[serde(default)]
        pub train: RawTrain,
        #[serde(default)]
        pub gate: RawGate,
        #[serde(default)]
        pub approval: RawApproval,
        #[serde(default)]
        pub guards: RawGuards,
        #[serde(default)]
        pub deploy: RawDeploy,
        pub mlflow: Option<RawMlflow>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawMlflow {
        pub tracking_uri: Option<String>,
        pub experiment: Option<String>,
        pub registered_model: Option<String>,
        pub token_file: Option<String>,
        pub token_env: Option<String>,
        pub ca_file: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawData {
        pub reference: Option<String>,
        pub reference_source: Option<String>,
        pub reference_window: Option<Vec<String>>,
        pub current: Option<String>,
        pub target: Option<String>,
        pub prediction: Option<String>,
        pub timestamp: Option<String>,
        #[serde(default)]
        pub s3: RawS3,
        pub numerical: Option<Vec<String>>,
        pub categorical: Option<Vec<String>>,
        pub ignore: Option<Vec<String>>,
        pub min_rows: Option<i64>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawS3 {
        pub endpoint: Option<String>,
        pub region: Option<String>,
        pub allow_http: Option<bool>,
        pub access_key_id_file: Option<String>,
        pub secret_access_key_file: Option<String>,
        pub ca_file: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawQuality {
        pub allow_added_columns: Option<bool>,
        pub max_null_rate_increase: Option<f64>,
        pub max_out_of_range_share: Option<f64>,
        pub min_row_ratio: Option<f64>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawDrift {
        pub alpha: Option<f64>,
        pub correction: Option<String>,
        pub min_effect_numerical: Option<f64>,
        pub min_effect_categorical: Option<f64>,
        pub drift_share: Option<f64>,
        pub method: Option<String>,
        pub methods: Option<std::collections::BTreeMap<String, String>>,
        pub psi_threshold: Option<f64>,
        pub wasserstein_threshold: Option<f64>,
        pub jensen_shannon_threshold: Option<f64>,
        pub bins: Option<i64>,
        pub critical_features: Option<Vec<String>>,
        pub consecutive: Option<i64>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawPerformance {
        pub source: Option<String>,
        pub metric: Option<String>,
        pub relative_threshold: Option<f64>,
        pub alpha: Option<f64>,
        pub min_labels: Option<i64>,
        pub positive_class: Option<String>,
        pub baseline: Option<f64>,
        pub bootstrap_resamples: Option<i64>,
        pub prometheus_url: Option<String>,
        pub query: Option<String>,
        pub query_timeout: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawTrain {
        pub backend: Option<String>,
        pub timeout: Option<String>,
        #[serde(default)]
        pub burn: RawBurn,
        pub command: Option<RawCommand>,
        pub kfp: Option<RawKfp>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawKfp {
        pub endpoint: Option<String>,
        pub token_file: Option<String>,
        pub token_env: Option<String>,
        pub ca_file: Option<String>,
        pub experiment_id: Option<String>,
        pub pipeline_id: Option<String>,
        pub pipeline_version_id: Option<String>,
        pub parameters: Option<std::collections::BTreeMap<String, String>>,
        pub output_uri: Option<String>,
        pub poll_interval: Option<String>,
        pub max_poll_interval: Option<String>,
        pub predict: Option<Vec<String>>,
        pub env: Option<std::collections::BTreeMap<String, String>>,
        pub workdir: Option<String>,
        pub data_format: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawCommand {
        pub program: Option<Vec<String>>,
        pub predict: Option<Vec<String>>,
        pub env: Option<std::collections::BTreeMap<String, String>>,
        pub workdir: Option<String>,
        pub data_format: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawBurn {
        pub hidden: Option<Vec<i64>>,
        pub dropout: Option<f64>,
        pub learning_rate: Option<f64>,
        pub batch_size: Option<i64>,
        pub epochs: Option<i64>,
        pub patience: Option<i64>,
        pub validation_share: Option<f64>,
        pub seed: Option<i64>,
        pub fail_below_accuracy: Option<f64>,
        pub fail_below_r2: Option<f64>,
        pub fail_check_epoch: Option<i64>,
        pub device: Option<String>,
        pub activation: Option<String>,
        pub derived: Option<Vec<RawDerived>>,
        pub filters: Option<Vec<RawFilter>>,
        pub drop_null_rows: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawDerived {
        pub name: Option<String>,
        pub ratio: Option<Vec<String>>,
        pub log1p: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawFilter {
        pub column: Option<String>,
        pub op: Option<String>,
        pub value: Option<f64>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawGate {
        pub metric: Option<String>,
        pub min_accuracy: Option<f64>,
        pub max_error: Option<f64>,
        pub min_r2: Option<f64>,
        pub max_drop: Option<f64>,
        pub max_drop_relative: Option<f64>,
        pub holdout_share: Option<f64>,
        pub slices: Option<Vec<String>>,
        pub slice_max_drop: Option<f64>,
        pub slice_max_drop_relative: Option<f64>,
        pub min_slice_rows: Option<i64>,
        pub max_model_size_mb: Option<f64>,
        pub max_latency_ms_per_1k: Option<f64>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawGuards {
        pub enabled: Option<bool>,
        pub max_retrains: Option<Vec<String>>,
        pub max_deploys: Option<Vec<String>>,
        pub cooldown: Option<String>,
        pub breaker_failures: Option<i64>,
        pub golden_set: Option<String>,
        pub monotonic_last: Option<i64>,
        pub monotonic_tolerance: Option<f64>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawApproval {
        pub mode: Option<String>,
        pub expires: Option<String>,
        pub required: Option<i64>,
        pub approvers: Option<Vec<String>>,
        pub slack_channel: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    pub struct RawDeploy {
        pub watch: Option<String>,
        pub watch_for: Option<String>,
        pub watch_interval: Option<String>,
        pub failure_limit: Option<i64>,
        pub watch_relative_threshold: Option<f64>,
        pub on_failure: Option<String>,
        pub hook_url: Option<String>,
        pub hook_secret_file: Option<String>,
        pub hook_secret_env: Option<String>,
        pub hook_timeout: Option<String>,
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File the configuration was read from (relative data paths resolve against its folder).
    pub source: PathBuf,
    pub daemon: Daemon,
    pub server: Server,
    pub store: StoreConfig,
    pub pipelines: Vec<Pipeline>,
    /// The Slack app (approval requests with buttons, or an incoming webhook), when set.
    pub slack: Option<SlackConfig>,
    /// The generic signed webhook (outgoing requests and notices, incoming decisions).
    pub webhook: Option<WebhookConfig>,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    /// Slack Web API base, `https://slack.com/api` (a fake server's in tests).
    pub api_url: String,
    /// Default channel for approval requests (`approval.slack_channel` overrides it).
    pub channel: Option<String>,
    pub bot_token: Option<crate::secret::SecretSource>,
    pub signing_secret: Option<crate::secret::SecretSource>,
    pub incoming_webhook: Option<crate::secret::SecretSource>,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Where approval requests and notices are POSTed (none: incoming decisions only).
    pub url: Option<String>,
    pub secret: crate::secret::SecretSource,
    pub timeout: Duration,
}

/// A signed HTTP deploy hook (`deploy.hook_url`).
#[derive(Debug, Clone)]
pub struct HookConfig {
    pub url: String,
    pub secret: Option<crate::secret::SecretSource>,
    pub timeout: Duration,
}

/// What the post-deploy watch does after `failure_limit` failed checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Roll back to `previous` at once, notify, freeze the pipeline.
    Rollback,
    /// Notify with the rollback command and freeze; a human decides.
    Ask,
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub shutdown_grace: Duration,
    /// This daemon's name in the leader lease and `retraind_leader{instance}`.
    pub instance: String,
    /// How long a leader's lease lasts without renewal (renewed every third of it).
    pub lease_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    /// Where the API token comes from; `None` disables mutating endpoints.
    pub api_token: Option<crate::secret::SecretSource>,
    /// How people reach this daemon (report links in Slack messages), e.g.
    /// `https://retraind.example.com`.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://…` or `postgres://…`. May embed a password: never log it (see `redacted_url`).
    pub url: String,
    pub max_connections: u32,
}

impl StoreConfig {
    /// The URL with any password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// Replace the password in `scheme://user:password@host/...` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}://{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// What the model predicts: a class (default) or a number.
    pub task: crate::performance::Task,
    pub schedule: Schedule,
    pub catch_up: bool,
    pub data: DataConfig,
    pub quality: crate::quality::QualityConfig,
    pub drift: DriftConfig,
    pub performance: PerformanceConfig,
    pub train: TrainConfig,
    pub gate: GateConfig,
    pub approval: ApprovalConfig,
    pub deploy: DeployConfig,
    pub guards: crate::guards::GuardConfig,
    pub mlflow: Option<crate::mlflow::MlflowConfig>,
}

/// Which data the current window is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceSource {
    /// The rows the current champion was trained on (kept in its version directory); the
    /// `data.reference` location until a champion exists.
    Champion,
    /// Always the `data.reference` location (optionally cut to `reference_window`).
    Fixed,
}

#[derive(Debug, Clone)]
pub struct DataConfig {
    /// Reference location: a path, a glob, an http(s):// URL or s3://bucket/key.
    pub reference: Location,
    pub reference_source: ReferenceSource,
    /// Keep only reference rows with `from <= timestamp < to` (ms since the epoch).
    pub reference_window: Option<(i64, i64)>,
    /// Location template; `{date}` is replaced by the cycle's day (YYYY-MM-DD, pipeline
    /// timezone) before it is read as a path, glob or URL.
    pub current: String,
    pub target: String,
    pub prediction: Option<String>,
    pub timestamp: Option<String>,
    pub numerical: Option<Vec<String>>,
    pub categorical: Option<Vec<String>>,
    pub ignore: Vec<String>,
    pub min_rows: usize,
    pub s3: S3Config,
}

impl DataConfig {
    /// The current-window location for one cycle day.
    pub fn current_location(&self, date: &str) -> Result<Location, crate::source::SourceError> {
        Location::parse(&self.current.replace("{date}", date), Path::new("/"))
    }

    /// The role settings as the data module takes them.
    pub fn role_spec(&self) -> crate::data::RoleSpec<'_> {
        crate::data::RoleSpec {
            numerical: self.numerical.as_deref(),
            categorical: self.categorical.as_deref(),
            target: &self.target,
            prediction: self.prediction.as_deref(),
            timestamp: self.timestamp.as_deref(),
            ignore: &self.ignore,
        }
    }
}

/// Multiple-testing correction across features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Correction {
    BenjaminiHochberg,
    Bonferroni,
    None,
}

impl std::str::FromStr for Correction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "benjamini_hochberg" | "bh" => Ok(Correction::BenjaminiHochberg),
            "bonferroni" => Ok(Correction::Bonferroni),
            "none" => Ok(Correction::None),
            other => Err(format!(
                "`{other}` is not a correction; use \"benjamini_hochberg\" (bh), \"bonferroni\" or \"none\""
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct DriftConfig {
    pub alpha: f64,
    pub correction: Correction,
    pub min_effect_numerical: f64,
    pub min_effect_categorical: f64,
    /// Share of drifted features for dataset drift; 0 means "any feature".
    pub drift_share: f64,
    /// Method for every feature unless overridden in `methods`.
    pub method: crate::drift::Method,
    /// Per-feature method overrides.
    pub methods: std::collections::BTreeMap<String, crate::drift::Method>,
    pub psi_threshold: f64,
    pub wasserstein_threshold: f64,
    pub jensen_shannon_threshold: f64,
    /// Quantile bins of the reference for PSI and Jensen–Shannon on numerical features.
    pub bins: usize,
    /// Any of these drifting makes the dataset drift.
    pub critical_features: Vec<String>,
    /// Retrain on drift only after this many consecutive checks found it (1 = at once).
    pub consecutive: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            alpha: 0.05,
            correction: Correction::BenjaminiHochberg,
            min_effect_numerical: 0.1,
            min_effect_categorical: 0.1,
            drift_share: 0.0,
            method: crate::drift::Method::Auto,
            methods: std::collections::BTreeMap::new(),
            psi_threshold: 0.2,
            wasserstein_threshold: 0.1,
            jensen_shannon_threshold: 0.1,
            bins: 10,
            critical_features: Vec::new(),
            consecutive: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PerformanceConfig {
    pub source: PerformanceSource,
    pub rule: crate::performance::Rule,
    pub positive_class: Option<String>,
    /// A fixed baseline instead of the champion's stored evaluation.
    pub baseline: Option<f64>,
    pub prometheus: Option<PrometheusQuery>,
}

/// Where the performance check gets predictions or values from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerformanceSource {
    /// Score the labelled current rows with the champion model.
    Model,
    /// Compare the `data.prediction` column (what the serving system predicted) with labels.
    PredictionColumn,
    /// An instant PromQL query (e.g. a serving system's accuracy gauge).
    Prometheus,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusQuery {
    pub url: String,
    pub query: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub backend: Backend,
    pub timeout: Duration,
    pub burn: BurnConfig,
    pub command: Option<crate::train::command::CommandConfig>,
    pub kfp: Option<crate::train::kfp::KfpConfig>,
}

/// Which trainer a pipeline uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Burn,
    Command,
    Kfp,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BurnConfig {
    /// Classifier (cross-entropy, class probabilities) or regressor (mean squared error on
    /// the standardised target, one output): the pipeline's `task`.
    #[serde(default)]
    pub task: crate::performance::Task,
    pub hidden: Vec<usize>,
    pub dropout: f64,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub epochs: usize,
    pub patience: usize,
    pub validation_share: f64,
    pub seed: u64,
    /// The seed's `failed_to_learn` guard: after `fail_check_epoch` epochs, a validation
    /// accuracy below this aborts training (0 = off).
    #[serde(default)]
    pub fail_below_accuracy: f64,
    #[serde(default)]
    pub fail_check_epoch: usize,
    /// The same guard for regressors: a validation R² below this after `fail_check_epoch`
    /// epochs aborts training (default 0: worse than predicting the mean).
    #[serde(default)]
    pub fail_below_r2: Option<f64>,
    /// Where training runs: the CPU (default) or a GPU of a build with `cuda`/`wgpu`.
    #[serde(default)]
    pub device: crate::train::burn::ComputeDevice,
    #[serde(default)]
    pub activation: crate::train::burn::Activation,
    /// Features computed from others (saved with the model, applied when scoring).
    #[serde(default)]
    pub derived: Vec<crate::train::burn::Derived>,
    /// Training rows must pass every filter.
    #[serde(default)]
    pub filters: Vec<crate::train::burn::RowFilter>,
    /// Leave out training rows with an empty or non-finite feature (default: impute the
    /// training mean, and an empty category is a category).
    #[serde(default)]
    pub drop_null_rows: bool,
}

#[derive(Debug, Clone)]
pub struct GateConfig {
    /// What the gate compares: accuracy for classifiers, RMSE for regressors by default.
    pub metric: crate::performance::Metric,
    /// Floor of the gate metric when higher is better (accuracy, F1, R² …).
    pub min_accuracy: f64,
    /// Ceiling of the gate metric when lower is better (RMSE, MAE), when set.
    pub max_error: Option<f64>,
    /// A regressor's floor on holdout R² (default 0: better than predicting the mean).
    pub min_r2: Option<f64>,
    /// Largest allowed worsening of the gate metric against the champion, in its units
    /// (unset when only a relative margin applies).
    pub max_drop: Option<f64>,
    /// Largest allowed relative worsening (0.01 = 1 %), when set.
    pub max_drop_relative: Option<f64>,
    pub holdout_share: f64,
    /// Categorical columns whose every value is a slice that must not regress.
    pub slices: Vec<String>,
    /// Largest allowed worsening per slice, in the metric's units / relative, when set.
    pub slice_max_drop: Option<f64>,
    pub slice_max_drop_relative: Option<f64>,
    pub min_slice_rows: usize,
    pub max_model_size_mb: Option<f64>,
    pub max_latency_ms_per_1k: Option<f64>,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            metric: crate::performance::Metric::Accuracy,
            min_accuracy: 0.9,
            max_error: None,
            min_r2: None,
            max_drop: Some(0.0),
            max_drop_relative: None,
            holdout_share: 0.3,
            slices: Vec::new(),
            slice_max_drop: Some(0.05),
            slice_max_drop_relative: None,
            min_slice_rows: 30,
            max_model_size_mb: None,
            max_latency_ms_per_1k: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    Manual,
    Auto,
}

#[derive(Debug, Clone)]
pub struct ApprovalConfig {
    pub mode: ApprovalMode,
    pub expires: Duration,
    pub required: usize,
    pub approvers: Vec<String>,
    pub slack_channel: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// The post-deploy watch window (`deploy.watch_for`).
    pub watch: Duration,
    /// Time between two watch checks.
    pub watch_interval: Duration,
    /// Failed watch checks that trigger `on_failure`.
    pub failure_limit: usize,
    /// A watch check fails when the live metric is past this share of the previous
    /// champion's baseline (errors: baseline / share) and the drop is significant.
    pub watch_relative_threshold: f64,
    pub on_failure: OnFailure,
    pub hook: Option<HookConfig>,
}

impl Config {
    /// Read, override from the environment, and validate a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(path, &env)
    }

    /// As [`Config::load`], with the environment passed in (tests).
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, env)
    }

    /// Parse and validate TOML text that was read from `path`.
    pub fn parse(text: &str, path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut problems = apply_env_overrides(&mut value, env);
        let mut unknown = Vec::new();
        let parsed: Result<raw::RawConfig, _> = {
            let mut record = |p: serde_ignored::Path<'_>| unknown.push(p.to_string());
            let de = serde_ignored::Deserializer::new(toml::Value::Table(value), &mut record);
            serde_path_to_error::deserialize(de)
        };
        let raw = match parsed {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(Problem {
                    path: display_path(&e.path().to_string()),
                    message: format!(
                        "{} (see config/retraind.toml for the expected type)",
                        e.inner()
                    ),
                });
                problems.extend(unknown.iter().map(|p| unknown_key(p)));
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    problems,
                });
            }
        };
        problems.extend(unknown.iter().map(|p| unknown_key(p)));
        // Relative paths resolve against the config file's folder, made absolute now: with
        // `--config retraind.toml` the folder is "" and the daemon must not depend on its
        // working directory (templated data paths are resolved later, per cycle).
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        let env_lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let config = validate(raw, path, &base, &env_lookup, &mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Find a pipeline by name.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == name)
    }
}

/// serde paths print sequences as `pipeline.0.drift`; show them as `pipeline[0].drift`.
fn display_path(path: &str) -> String {
    let mut out = String::new();
    for (i, part) in path.split('.').enumerate() {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

fn unknown_key(path: &str) -> Problem {
    Problem {
        path: display_path(path),
        message: "unknown key (check its spelling against config/retraind.toml, or remove it)"
            .to_string(),
    }
}

/// Apply `RETRAIND_<SECTION>__<KEY>=value` overrides (e.g. `RETRAIND_STORE__URL`,
/// `RETRAIND_SERVER__LISTEN`, `RETRAIND_DAEMON__STATE_DIR`) to the top-level tables. Values
/// are read as TOML literals when they parse as one (numbers, booleans), else as strings.
fn apply_env_overrides(table: &mut toml::Table, env: &[(String, String)]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("RETRAIND_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if !["daemon", "server", "store"].contains(&section.as_str()) {
            problems.push(Problem {
                path: format!("{section}.{key}"),
                message: format!(
                    "environment variable {name} overrides an unknown section (use RETRAIND_DAEMON__…, RETRAIND_SERVER__… or RETRAIND_STORE__…)"
                ),
            });
            continue;
        }
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !v.is_table() && !v.is_array())
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry.as_table_mut() {
            Some(t) => {
                t.insert(key, parsed);
            }
            None => problems.push(Problem {
                path: section,
                message: format!("must be a table to accept the override from {name}"),
            }),
        }
    }
    problems
}

/// Reads an environment variable (the real environment, or a test's).
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Collects problems while turning raw values into typed ones.
struct Checker<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Checker<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, raw: &Option<String>, default: &str) -> Duration {
        let text = raw.as_deref().unwrap_or(default);
        match humantime::parse_duration(text) {
            Ok(d) if d.as_secs() <= 10 * 365 * 24 * 3600 => d,
            Ok(_) => {
                self.problem(path, format!("duration `{text}` is longer than 10 years; use a value such as \"{default}\""));
                Duration::ZERO
            }
            Err(e) => {
                self.problem(
                    path,
                    format!("`{text}` is not a duration ({e}); write it like \"30s\", \"15m\" or \"72h\""),
                );
                Duration::ZERO
            }
        }
    }

    fn fraction(&mut self, path: &str, raw: Option<f64>, default: f64, lo_open: bool) -> f64 {
        let v = raw.unwrap_or(default);
        let ok = v.is_finite() && v <= 1.0 && if lo_open { v > 0.0 } else { v >= 0.0 };
        if !ok {
            let range = if lo_open { "0 < x <= 1" } else { "0 <= x <= 1" };
            self.problem(
                path,
                format!("{v} is out of range; use a number with {range} (default {default})"),
            );
        }
        v
    }

    /// A secret named by `<key>_file` or `<key>_env` (`key` is the full path without the
    /// suffix); else `$CREDENTIALS_DIRECTORY/<credential>` when systemd passed one.
    fn secret(
        &mut self,
        key: &str,
        file: &Option<String>,
        var: &Option<String>,
        base: &Path,
        credential: Option<(EnvLookup<'_>, &str)>,
    ) -> Option<crate::secret::SecretSource> {
        use crate::secret::SecretSource;
        match (file, var) {
            (Some(_), Some(_)) => {
                self.problem(
                    &format!("{key}_file"),
                    format!("set either {key}_file or {key}_env, not both"),
                );
                None
            }
            (Some(f), None) => {
                let path = resolve(base, f);
                if !path.is_file() {
                    self.problem(
                        &format!("{key}_file"),
                        format!(
                            "file {} does not exist; create it (mode 0600) holding the secret",
                            path.display()
                        ),
                    );
                }
                Some(SecretSource::File(path))
            }
            (None, Some(v)) => Some(SecretSource::Env(v.clone())),
            (None, None) => credential.and_then(|(env, name)| {
                env("CREDENTIALS_DIRECTORY")
                    .map(|dir| Path::new(&dir).join(name))
                    .filter(|p| p.is_file())
                    .map(SecretSource::File)
            }),
        }
    }

    fn non_negative(&mut self, path: &str, raw: Option<f64>, default: f64) -> f64 {
        let v = raw.unwrap_or(default);
        if !(v.is_finite() && v >= 0.0) {
            self.problem(
                path,
                format!("{v} is out of range; use a number >= 0 (default {default})"),
            );
            return default;
        }
        v
    }

    fn positive_number(&mut self, path: &str, raw: Option<f64>, default: f64) -> f64 {
        let v = raw.unwrap_or(default);
        if !(v.is_finite() && v > 0.0) {
            self.problem(
                path,
                format!("{v} is out of range; use a number > 0 (default {default})"),
            );
            return default;
        }
        v
    }

    fn positive(&mut self, path: &str, raw: Option<i64>, default: i64, max: i64) -> usize {
        let v = raw.unwrap_or(default);
        if v < 1 || v > max {
            self.problem(
                path,
                format!(
                    "{v} is out of range; use a whole number from 1 to {max} (default {default})"
                ),
            );
            return default as usize;
        }
        v as usize
    }
}

/// The scoring settings shared by the command and Kubeflow backends, under `at` (the table).
fn scoring(
    c: &mut Checker,
    at: &str,
    base: &Path,
    predict: Vec<String>,
    env: &Option<std::collections::BTreeMap<String, String>>,
    workdir: &Option<String>,
    data_format: &Option<String>,
) -> crate::train::command::Scoring {
    let workdir = workdir
        .as_deref()
        .map(|w| resolve(base, w))
        .unwrap_or_else(|| base.to_path_buf());
    if !workdir.is_dir() {
        c.problem(
            &format!("{at}.workdir"),
            format!("{} is not a directory", workdir.display()),
        );
    }
    crate::train::command::Scoring {
        predict,
        env: env.clone().unwrap_or_default(),
        workdir,
        data_format: table_format(c, &format!("{at}.data_format"), data_format),
    }
}

fn table_format(c: &mut Checker, path: &str, raw: &Option<String>) -> crate::data::TableFormat {
    match raw.as_deref() {
        None | Some("parquet") => crate::data::TableFormat::Parquet,
        Some("csv") => crate::data::TableFormat::Csv,
        Some(other) => {
            c.problem(
                path,
                format!("`{other}` is not a format; use \"parquet\" (default) or \"csv\""),
            );
            crate::data::TableFormat::Parquet
        }
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = PathBuf::from(p);
    if path.is_absolute() {
        path
    } else {
        base.join(path)
    }
}

fn validate(
    raw: raw::RawConfig,
    source: &Path,
    base: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Config {
    let mut c = Checker { problems };

    let state_dir = raw
        .daemon
        .state_dir
        .map(|s| resolve(base, &s))
        .or_else(|| env("STATE_DIRECTORY").map(PathBuf::from))
        .unwrap_or_else(|| base.join("state"));
    let shutdown_grace = c.duration("daemon.shutdown_grace", &raw.daemon.shutdown_grace, "30s");
    let lease_ttl = c.duration("daemon.lease_ttl", &raw.daemon.lease_ttl, "15s");
    if lease_ttl < Duration::from_secs(1) {
        c.problem(
            "daemon.lease_ttl",
            "must be at least 1s (default 15s: a standby takes over within about 20s)",
        );
    }
    // The host name by default: stable across restarts, so a daemon restarted after a crash
    // takes its own lease back at once. Two daemons on one host need distinct names.
    let instance = raw.daemon.instance.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    });

    let listen_text = raw
        .server
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
        c.problem(
            "server.listen",
            format!(
                "`{listen_text}` is not an address; write IP:PORT such as \"{DEFAULT_LISTEN}\""
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 9464))
    });
    let api_token = c.secret(
        "server.api_token",
        &raw.server.api_token_file,
        &raw.server.api_token_env,
        base,
        Some((env, "api-token")),
    );
    let public_url = raw
        .server
        .public_url
        .map(|u| u.trim_end_matches('/').to_string());
    let slack = raw.slack.map(|r| {
        let api_url = r
            .api_url
            .unwrap_or_else(|| "https://slack.com/api".to_string())
            .trim_end_matches('/')
            .to_string();
        if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
            c.problem("slack.api_url", format!("`{api_url}` is not an http(s):// URL"));
        }
        let bot_token = c.secret("slack.bot_token", &r.bot_token_file, &r.bot_token_env, base, Some((env, "slack-bot-token")));
        let signing_secret = c.secret("slack.signing_secret", &r.signing_secret_file, &r.signing_secret_env, base, Some((env, "slack-signing-secret")));
        let incoming_webhook = c.secret("slack.incoming_webhook", &r.incoming_webhook_file, &r.incoming_webhook_env, base, Some((env, "slack-incoming-webhook")));
        if bot_token.is_none() && incoming_webhook.is_none() {
            c.problem("slack", "set bot_token_file (an app with Approve/Reject buttons) or incoming_webhook_file (notifications only)");
        }
        if bot_token.is_some() && signing_secret.is_none() {
            c.problem("slack.signing_secret_file", "missing; the buttons' callbacks at /slack/interactions are verified with the app's signing secret");
        }
        SlackConfig {
            api_url,
            channel: r.channel,
            bot_token,
            signing_secret,
            incoming_webhook,
        }
    });
    let webhook = raw.webhook.and_then(|r| {
        if let Some(u) = &r.url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            c.problem("webhook.url", format!("`{u}` is not an http(s):// URL"));
        }
        let timeout = c.duration("webhook.timeout", &r.timeout, "10s");
        match c.secret(
            "webhook.secret",
            &r.secret_file,
            &r.secret_env,
            base,
            Some((env, "webhook-secret")),
        ) {
            Some(secret) => Some(WebhookConfig {
                url: r.url,
                secret,
                timeout,
            }),
            None => {
                c.problem(
                    "webhook.secret_file",
                    "missing; webhooks are always signed (Standard Webhooks): create a secret file",
                );
                None
            }
        }
    });

    let raw_slack_missing = slack.is_none();
    let default_url = format!("sqlite://{}", state_dir.join("retraind.db").display());
    let url = raw.store.url.unwrap_or(default_url);
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        c.problem(
            "store.url",
            format!("`{}` is not a supported store; use sqlite:///path/to/retraind.db or postgres://user@host/db", redact_url(&url)),
        );
    }
    let max_connections =
        c.positive("store.max_connections", raw.store.max_connections, 5, 100) as u32;

    let mut names = BTreeSet::new();
    let mut pipelines = Vec::new();
    if raw.pipeline.is_empty() {
        c.problem(
            "pipeline",
            "no [[pipeline]] table; add one per model (see config/retraind.toml)",
        );
    }
    for (i, p) in raw.pipeline.into_iter().enumerate() {
        let at = |k: &str| format!("pipeline[{i}].{k}");
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty()
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            || name.len() > 64
        {
            c.problem(
                &at("name"),
                format!("`{name}` is not a valid name; use 1-64 letters, digits, '-' or '_'"),
            );
        } else if !names.insert(name.clone()) {
            c.problem(
                &at("name"),
                format!("pipeline `{name}` is defined twice; names must be unique"),
            );
        }
        let tz_text = p.timezone.unwrap_or_else(|| "UTC".to_string());
        let tz: Tz = tz_text.parse().unwrap_or_else(|_| {
            c.problem(
                &at("timezone"),
                format!(
                    "`{tz_text}` is not an IANA timezone; use e.g. \"UTC\" or \"Europe/Berlin\""
                ),
            );
            Tz::UTC
        });
        let cron_text = p.schedule.unwrap_or_else(|| DEFAULT_SCHEDULE.to_string());
        let schedule = Schedule::parse(&cron_text, tz).unwrap_or_else(|e| {
            c.problem(&at("schedule"), format!("{e}"));
            Schedule::default_daily(tz)
        });

        let reference = match p
            .data
            .reference
            .as_deref()
            .map(|r| Location::parse(r, base))
        {
            Some(Ok(loc)) => {
                if !loc.exists_locally() {
                    c.problem(&at("data.reference"), format!("{} matches no file; point it at the reference data (CSV, Parquet or NDJSON: a path, a glob, an http(s):// URL or s3://bucket/key)", loc.describe()));
                }
                loc
            }
            Some(Err(e)) => {
                c.problem(&at("data.reference"), e.to_string());
                Location::File(PathBuf::new())
            }
            None => {
                c.problem(
                    &at("data.reference"),
                    "missing; set the location of the reference data set",
                );
                Location::File(PathBuf::new())
            }
        };
        let reference_source = match p.data.reference_source.as_deref() {
            None | Some("champion") => ReferenceSource::Champion,
            Some("fixed") => ReferenceSource::Fixed,
            Some(other) => {
                c.problem(&at("data.reference_source"), format!("`{other}` is not a reference source; use \"champion\" (the champion's training rows, default) or \"fixed\" (data.reference)"));
                ReferenceSource::Champion
            }
        };
        let reference_window = match p.data.reference_window.as_deref() {
            None => None,
            Some([from, to]) => {
                match (
                    crate::data::parse_timestamp(from),
                    crate::data::parse_timestamp(to),
                ) {
                    (Some(f), Some(t)) if f < t => {
                        if p.data.timestamp.is_none() {
                            c.problem(
                                &at("data.reference_window"),
                                "needs data.timestamp, the column with each row's time",
                            );
                        }
                        Some((f, t))
                    }
                    _ => {
                        c.problem(&at("data.reference_window"), format!("[\"{from}\", \"{to}\"] is not a window; write two times, earlier first, e.g. [\"2026-01-01\", \"2026-02-01\"]"));
                        None
                    }
                }
            }
            Some(other) => {
                c.problem(
                    &at("data.reference_window"),
                    format!("has {} entries; write [from, to]", other.len()),
                );
                None
            }
        };
        let current = match p.data.current {
            Some(t) => match Location::parse(&t, base) {
                Ok(Location::File(path)) => {
                    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    if !dir.to_string_lossy().contains('{') && !dir.is_dir() {
                        c.problem(
                            &at("data.current"),
                            format!(
                                "directory {} does not exist; create it or fix the path template",
                                dir.display()
                            ),
                        );
                    }
                    path.to_string_lossy().into_owned()
                }
                Ok(Location::Glob(g)) => g,
                Ok(_) => t,
                Err(e) => {
                    c.problem(&at("data.current"), e.to_string());
                    String::new()
                }
            },
            None => {
                c.problem(
                    &at("data.current"),
                    "missing; set the current-window path, e.g. \"data/current/{date}.csv\"",
                );
                String::new()
            }
        };
        let file = |c: &mut Checker, key: &str, v: &Option<String>| -> Option<PathBuf> {
            let path = resolve(base, v.as_deref()?);
            if !path.is_file() {
                c.problem(&at(key), format!("file {} does not exist", path.display()));
            }
            Some(path)
        };
        let s3 = S3Config {
            endpoint: p.data.s3.endpoint.clone(),
            region: p.data.s3.region.clone(),
            allow_http: p.data.s3.allow_http.unwrap_or(false),
            access_key_id_file: file(
                &mut c,
                "data.s3.access_key_id_file",
                &p.data.s3.access_key_id_file,
            ),
            secret_access_key_file: file(
                &mut c,
                "data.s3.secret_access_key_file",
                &p.data.s3.secret_access_key_file,
            ),
            ca_file: file(&mut c, "data.s3.ca_file", &p.data.s3.ca_file),
        };
        let min_rows = c.positive(
            &at("data.min_rows"),
            p.data.min_rows,
            50,
            i64::from(u32::MAX),
        );

        let d = DriftConfig::default();
        let correction = match p.drift.correction.as_deref().map(str::parse::<Correction>) {
            None => d.correction,
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                c.problem(&at("drift.correction"), e);
                d.correction
            }
        };
        let mut method_of = |key: &str, text: &str| match text.parse::<crate::drift::Method>() {
            Ok(m) => m,
            Err(e) => {
                c.problem(&at(key), e.to_string());
                crate::drift::Method::Auto
            }
        };
        let method = p
            .drift
            .method
            .as_deref()
            .map(|m| method_of("drift.method", m))
            .unwrap_or(d.method);
        let methods = p
            .drift
            .methods
            .unwrap_or_default()
            .into_iter()
            .map(|(feature, m)| {
                let parsed = method_of(&format!("drift.methods.{feature}"), &m);
                (feature, parsed)
            })
            .collect();
        let drift = DriftConfig {
            alpha: c.fraction(&at("drift.alpha"), p.drift.alpha, d.alpha, true),
            correction,
            min_effect_numerical: c.fraction(
                &at("drift.min_effect_numerical"),
                p.drift.min_effect_numerical,
                d.min_effect_numerical,
                false,
            ),
            min_effect_categorical: c.fraction(
                &at("drift.min_effect_categorical"),
                p.drift.min_effect_categorical,
                d.min_effect_categorical,
                false,
            ),
            drift_share: c.fraction(
                &at("drift.drift_share"),
                p.drift.drift_share,
                d.drift_share,
                false,
            ),
            method,
            methods,
            psi_threshold: c.positive_number(
                &at("drift.psi_threshold"),
                p.drift.psi_threshold,
                d.psi_threshold,
            ),
            wasserstein_threshold: c.positive_number(
                &at("drift.wasserstein_threshold"),
                p.drift.wasserstein_threshold,
                d.wasserstein_threshold,
            ),
            jensen_shannon_threshold: c.fraction(
                &at("drift.jensen_shannon_threshold"),
                p.drift.jensen_shannon_threshold,
                d.jensen_shannon_threshold,
                true,
            ),
            bins: c
                .positive(&at("drift.bins"), p.drift.bins, d.bins as i64, 1000)
                .max(2),
            critical_features: p.drift.critical_features.unwrap_or_default(),
            consecutive: c.positive(
                &at("drift.consecutive"),
                p.drift.consecutive,
                d.consecutive as i64,
                365,
            ),
        };
        let q = crate::quality::QualityConfig::default();
        let quality = crate::quality::QualityConfig {
            allow_added_columns: p
                .quality
                .allow_added_columns
                .unwrap_or(q.allow_added_columns),
            max_null_rate_increase: c.fraction(
                &at("quality.max_null_rate_increase"),
                p.quality.max_null_rate_increase,
                q.max_null_rate_increase,
                false,
            ),
            max_out_of_range_share: c.fraction(
                &at("quality.max_out_of_range_share"),
                p.quality.max_out_of_range_share,
                q.max_out_of_range_share,
                false,
            ),
            min_row_ratio: c.fraction(
                &at("quality.min_row_ratio"),
                p.quality.min_row_ratio,
                q.min_row_ratio,
                false,
            ),
        };
        let task = match p
            .task
            .as_deref()
            .map(str::parse::<crate::performance::Task>)
        {
            None => crate::performance::Task::Classification,
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                c.problem(&at("task"), e);
                crate::performance::Task::Classification
            }
        };
        // A metric named for this pipeline must fit its task.
        let metric_of = |c: &mut Checker, key: &str, raw: &Option<String>| match raw
            .as_deref()
            .map(str::parse::<crate::performance::Metric>)
        {
            None => task.default_metric(),
            Some(Ok(m)) if task.fits(m) || key == "performance.metric" => m,
            Some(Ok(m)) => {
                c.problem(
                    &at(key),
                    format!(
                        "{} is not a {} metric; task = \"{}\" (set at the pipeline's top) takes {}",
                        m.name(),
                        task.name(),
                        task.name(),
                        crate::performance::Metric::ALL
                            .into_iter()
                            .filter(|m| task.fits(*m))
                            .map(|m| m.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                task.default_metric()
            }
            Some(Err(e)) => {
                c.problem(&at(key), e);
                task.default_metric()
            }
        };
        let performance = {
            let rp = &p.performance;
            let source = match rp.source.as_deref() {
                None | Some("model") => PerformanceSource::Model,
                Some("prediction_column") => PerformanceSource::PredictionColumn,
                Some("prometheus") => PerformanceSource::Prometheus,
                Some(other) => {
                    c.problem(&at("performance.source"), format!("`{other}` is not a source; use \"model\" (score the champion, default), \"prediction_column\" or \"prometheus\""));
                    PerformanceSource::Model
                }
            };
            let metric = metric_of(&mut c, "performance.metric", &rp.metric);
            // The served predictions (a column, a PromQL value) may be judged by any metric;
            // scoring the champion gives what its task's models give.
            if !task.fits(metric) && source == PerformanceSource::Model {
                c.problem(&at("performance.metric"), format!("{} does not fit task = \"{}\" with source = \"model\"; set the pipeline's task, pick a {} metric, or use source = \"prediction_column\" or \"prometheus\"", metric.name(), task.name(), task.name()));
            }
            if metric == crate::performance::Metric::RocAuc
                && source == PerformanceSource::PredictionColumn
            {
                c.problem(
                    &at("performance.metric"),
                    "roc_auc needs scores; use source = \"model\"",
                );
            }
            if source == PerformanceSource::PredictionColumn && p.data.prediction.is_none() {
                c.problem(&at("performance.source"), "prediction_column needs data.prediction, the column with the served predictions");
            }
            let prometheus = match (source, &rp.prometheus_url, &rp.query) {
                (PerformanceSource::Prometheus, Some(url), Some(query)) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        c.problem(
                            &at("performance.prometheus_url"),
                            format!("`{url}` is not an http(s):// URL"),
                        );
                    }
                    Some(PrometheusQuery {
                        url: url.clone(),
                        query: query.clone(),
                        timeout: c.duration(
                            &at("performance.query_timeout"),
                            &rp.query_timeout,
                            "10s",
                        ),
                    })
                }
                (PerformanceSource::Prometheus, _, _) => {
                    c.problem(
                        &at("performance"),
                        "source = \"prometheus\" needs prometheus_url and query",
                    );
                    None
                }
                _ => None,
            };
            if source == PerformanceSource::Prometheus
                && rp.baseline.is_none()
                && !task.fits(metric)
            {
                c.problem(
                    &at("performance.baseline"),
                    format!(
                        "a live {} needs a fixed baseline: a {} champion stores only {} metrics",
                        metric.name(),
                        task.name(),
                        task.name()
                    ),
                );
            }
            let baseline = rp
                .baseline
                .map(|b| c.positive_number(&at("performance.baseline"), Some(b), 1.0));
            PerformanceConfig {
                source,
                rule: crate::performance::Rule {
                    metric,
                    relative_threshold: c.fraction(
                        &at("performance.relative_threshold"),
                        rp.relative_threshold,
                        0.95,
                        true,
                    ),
                    alpha: c.fraction(&at("performance.alpha"), rp.alpha, 0.05, true),
                    min_labels: c.positive(
                        &at("performance.min_labels"),
                        rp.min_labels,
                        100,
                        i64::from(u32::MAX),
                    ),
                    bootstrap_resamples: c.positive(
                        &at("performance.bootstrap_resamples"),
                        rp.bootstrap_resamples,
                        1000,
                        100_000,
                    ),
                },
                positive_class: rp.positive_class.clone(),
                baseline,
                prometheus,
            }
        };

        let backend = match p.train.backend.as_deref() {
            None | Some("burn") => Backend::Burn,
            Some("command") => Backend::Command,
            Some("kfp") => Backend::Kfp,
            Some(b) => {
                c.problem(
                    &at("train.backend"),
                    format!("`{b}` is not a backend; use \"burn\" (default, local), \"command\" (your own program) or \"kfp\" (a Kubeflow Pipelines run)"),
                );
                Backend::Burn
            }
        };
        let command = match (&p.train.command, backend) {
            (Some(cmd), _) => {
                let argv = |c: &mut Checker, key: &str, v: &Option<Vec<String>>| -> Vec<String> {
                    match v {
                        Some(a) if !a.is_empty() && !a[0].is_empty() => a.clone(),
                        _ => {
                            c.problem(&at(key), "missing; write the program and its arguments as a list, e.g. [\"python3\", \"train.py\", \"--data\", \"{train_path}\"]");
                            Vec::new()
                        }
                    }
                };
                let program = argv(&mut c, "train.command.program", &cmd.program);
                let predict = argv(&mut c, "train.command.predict", &cmd.predict);
                Some(crate::train::command::CommandConfig {
                    program,
                    scoring: scoring(
                        &mut c,
                        &at("train.command"),
                        base,
                        predict,
                        &cmd.env,
                        &cmd.workdir,
                        &cmd.data_format,
                    ),
                })
            }
            (None, Backend::Command) => {
                c.problem(&at("train.command"), "backend = \"command\" needs a [pipeline.train.command] table with program and predict");
                None
            }
            (None, _) => None,
        };
        let kfp = match (&p.train.kfp, backend) {
            (Some(k), _) => {
                let required = |c: &mut Checker, key: &str, v: &Option<String>| -> String {
                    match v {
                        Some(s) if !s.is_empty() => s.clone(),
                        _ => {
                            c.problem(
                                &at(&format!("train.kfp.{key}")),
                                "missing; see [pipeline.train.kfp] in config/retraind.toml",
                            );
                            String::new()
                        }
                    }
                };
                let endpoint = required(&mut c, "endpoint", &k.endpoint);
                if !(endpoint.is_empty()
                    || endpoint.starts_with("http://")
                    || endpoint.starts_with("https://"))
                {
                    c.problem(
                        &at("train.kfp.endpoint"),
                        format!("`{endpoint}` is not an http(s):// URL of the KFP API server"),
                    );
                }
                let token = c.secret(
                    &at("train.kfp.token"),
                    &k.token_file,
                    &k.token_env,
                    base,
                    Some((env, "kfp-token")),
                );
                let predict = match &k.predict {
                    Some(a) if !a.is_empty() => a.clone(),
                    _ => {
                        c.problem(&at("train.kfp.predict"), "missing; the gate scores the run's model locally with this command ({model_uri}, {input_path}, {output_path})");
                        Vec::new()
                    }
                };
                let scoring = scoring(
                    &mut c,
                    &at("train.kfp"),
                    base,
                    predict,
                    &k.env,
                    &k.workdir,
                    &k.data_format,
                );
                Some(crate::train::kfp::KfpConfig {
                    experiment_id: required(&mut c, "experiment_id", &k.experiment_id),
                    pipeline_id: required(&mut c, "pipeline_id", &k.pipeline_id),
                    pipeline_version_id: required(
                        &mut c,
                        "pipeline_version_id",
                        &k.pipeline_version_id,
                    ),
                    output_uri: required(&mut c, "output_uri", &k.output_uri),
                    endpoint,
                    token,
                    ca_file: file(&mut c, "train.kfp.ca_file", &k.ca_file),
                    parameters: k.parameters.clone().unwrap_or_default(),
                    poll_interval: c.duration(
                        &at("train.kfp.poll_interval"),
                        &k.poll_interval,
                        "5s",
                    ),
                    max_poll_interval: c.duration(
                        &at("train.kfp.max_poll_interval"),
                        &k.max_poll_interval,
                        "60s",
                    ),
                    scoring,
                })
            }
            (None, Backend::Kfp) => {
                c.problem(
                    &at("train.kfp"),
                    "backend = \"kfp\" needs a [pipeline.train.kfp] table",
                );
                None
            }
            (None, _) => None,
        };
        let hidden = match p.train.burn.hidden {
            Some(h) => h
                .iter()
                .enumerate()
                .map(|(j, &n)| {
                    if !(1..=4096).contains(&n) {
                        c.problem(
                            &at(&format!("train.burn.hidden[{j}]")),
                            format!("{n} is out of range; use 1 to 4096 units"),
                        );
                    }
                    n.clamp(1, 4096) as usize
                })
                .collect(),
            None => vec![32, 16],
        };
        let burn = BurnConfig {
            hidden,
            dropout: c.fraction(&at("train.burn.dropout"), p.train.burn.dropout, 0.1, false),
            learning_rate: {
                let lr = p.train.burn.learning_rate.unwrap_or(0.01);
                if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) {
                    c.problem(
                        &at("train.burn.learning_rate"),
                        format!(
                            "{lr} is out of range; use a number with 0 < x <= 10 (default 0.01)"
                        ),
                    );
                }
                lr
            },
            batch_size: c.positive(
                &at("train.burn.batch_size"),
                p.train.burn.batch_size,
                64,
                1 << 20,
            ),
            epochs: c.positive(&at("train.burn.epochs"), p.train.burn.epochs, 30, 100_000),
            patience: c.positive(
                &at("train.burn.patience"),
                p.train.burn.patience,
                5,
                100_000,
            ),
            validation_share: c.fraction(
                &at("train.burn.validation_share"),
                p.train.burn.validation_share,
                0.2,
                true,
            ),
            activation: match p.train.burn.activation.as_deref() {
                None | Some("relu") => crate::train::burn::Activation::Relu,
                Some("gelu") => crate::train::burn::Activation::Gelu,
                Some("tanh") => crate::train::burn::Activation::Tanh,
                Some("leaky_relu") => crate::train::burn::Activation::LeakyRelu,
                Some(other) => {
                    c.problem(&at("train.burn.activation"), format!("`{other}` is not an activation; use relu (default), gelu, tanh or leaky_relu"));
                    crate::train::burn::Activation::Relu
                }
            },
            derived: p
                .train
                .burn
                .derived
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(j, d)| {
                    let key = at(&format!("train.burn.derived[{j}]"));
                    let name = d.name.clone().unwrap_or_default();
                    if name.is_empty() {
                        c.problem(&key, "needs a name");
                        return None;
                    }
                    match (&d.ratio, &d.log1p) {
                        (Some(r), None) if r.len() == 2 => Some(crate::train::burn::Derived::Ratio {
                            name,
                            a: r[0].clone(),
                            b: r[1].clone(),
                        }),
                        (None, Some(col)) => Some(crate::train::burn::Derived::Log1p {
                            name,
                            column: col.clone(),
                        }),
                        _ => {
                            c.problem(&key, "write exactly one of ratio = [\"a\", \"b\"] (a / (b + 1e-8)) or log1p = \"column\"");
                            None
                        }
                    }
                })
                .collect(),
            filters: p
                .train
                .burn
                .filters
                .iter()
                .flatten()
                .enumerate()
                .filter_map(|(j, f)| {
                    let key = at(&format!("train.burn.filters[{j}]"));
                    let op = f.op.as_deref().unwrap_or("").parse::<crate::train::burn::FilterOp>();
                    match (&f.column, op, f.value) {
                        (Some(column), Ok(op), Some(value)) if value.is_finite() => Some(crate::train::burn::RowFilter {
                            column: column.clone(),
                            op,
                            value,
                        }),
                        (_, Err(e), _) => {
                            c.problem(&key, e);
                            None
                        }
                        _ => {
                            c.problem(&key, "write { column = \"value\", op = \">\", value = 0 }");
                            None
                        }
                    }
                })
                .collect(),
            drop_null_rows: p.train.burn.drop_null_rows.unwrap_or(false),
            fail_below_accuracy: c.fraction(
                &at("train.burn.fail_below_accuracy"),
                p.train.burn.fail_below_accuracy,
                0.1,
                false,
            ),
            fail_below_r2: match p.train.burn.fail_below_r2 {
                Some(v) if !(v.is_finite() && v <= 1.0) => {
                    c.problem(
                        &at("train.burn.fail_below_r2"),
                        format!("{v} is out of range; use a number <= 1 (default 0)"),
                    );
                    None
                }
                Some(v) => Some(v),
                None => (task == crate::performance::Task::Regression).then_some(0.0),
            },
            task,
            device: match p.train.burn.device.as_deref().map(str::parse) {
                None => crate::train::burn::ComputeDevice::Cpu,
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    c.problem(&at("train.burn.device"), e);
                    crate::train::burn::ComputeDevice::Cpu
                }
            },
            fail_check_epoch: c.positive(
                &at("train.burn.fail_check_epoch"),
                p.train.burn.fail_check_epoch,
                5,
                100_000,
            ),
            seed: match p.train.burn.seed {
                Some(s) if s < 0 => {
                    c.problem(
                        &at("train.burn.seed"),
                        format!("{s} is negative; use a whole number >= 0"),
                    );
                    0
                }
                Some(s) => s as u64,
                None => 42,
            },
        };
        // Each failed-to-learn floor belongs to one kind of model; the other is never read.
        match task {
            crate::performance::Task::Classification if p.train.burn.fail_below_r2.is_some() => {
                c.problem(&at("train.burn.fail_below_r2"), "applies to task = \"regression\"; a classifier's floor is train.burn.fail_below_accuracy");
            }
            crate::performance::Task::Regression if p.train.burn.fail_below_accuracy.is_some() => {
                c.problem(&at("train.burn.fail_below_accuracy"), "applies to classifiers; a regressor's floor is train.burn.fail_below_r2 (validation R²)");
            }
            _ => {}
        }
        let train = TrainConfig {
            backend,
            timeout: c.duration(&at("train.timeout"), &p.train.timeout, "1h"),
            burn,
            command,
            kfp,
        };
        let gate_metric = metric_of(&mut c, "gate.metric", &p.gate.metric);
        // Errors (RMSE, MAE) are in the target's units: their tolerances are any number >= 0,
        // and with no scale known the defaults are relative (1 % overall, 10 % per slice).
        let error = !gate_metric.higher_is_better();
        let tolerance = |c: &mut Checker, key: &str, raw: Option<f64>, default: f64| {
            if error {
                c.non_negative(&at(key), raw, default)
            } else {
                c.fraction(&at(key), raw, default, false)
            }
        };
        let relative = |c: &mut Checker, key: &str, raw: Option<f64>, default: Option<f64>| {
            raw.or(default)
                .map(|v| c.fraction(&at(key), Some(v), 0.0, false))
        };
        if !error && p.gate.max_error.is_some() {
            c.problem(&at("gate.max_error"), format!("applies to error metrics (rmse, mae); the gate metric {} is bounded by gate.min_accuracy", gate_metric.name()));
        }
        if error && p.gate.min_accuracy.is_some() {
            c.problem(
                &at("gate.min_accuracy"),
                format!(
                    "applies to metrics where higher is better; bound {} with gate.max_error",
                    gate_metric.name()
                ),
            );
        }
        let gate = GateConfig {
            metric: gate_metric,
            min_accuracy: if gate_metric == crate::performance::Metric::R2 {
                let v = p.gate.min_accuracy.unwrap_or(0.0);
                if !(v.is_finite() && v <= 1.0) {
                    c.problem(
                        &at("gate.min_accuracy"),
                        format!("{v} is out of range for r2; use a number <= 1 (default 0)"),
                    );
                }
                v
            } else {
                c.fraction(
                    &at("gate.min_accuracy"),
                    p.gate.min_accuracy,
                    if error { 0.0 } else { 0.9 },
                    false,
                )
            },
            max_error: p
                .gate
                .max_error
                .map(|v| c.positive_number(&at("gate.max_error"), Some(v), 1.0)),
            // An absolute margin when set, or by default when no relative one applies.
            max_drop: match (p.gate.max_drop, p.gate.max_drop_relative, error) {
                (Some(v), _, _) => Some(tolerance(&mut c, "gate.max_drop", Some(v), 0.0)),
                (None, None, false) => Some(0.0),
                _ => None,
            },
            min_r2: match (p.gate.min_r2, task) {
                (Some(v), crate::performance::Task::Regression) => {
                    if !(v.is_finite() && v <= 1.0) {
                        c.problem(
                            &at("gate.min_r2"),
                            format!("{v} is out of range; use a number <= 1 (default 0)"),
                        );
                    }
                    Some(v)
                }
                (Some(_), crate::performance::Task::Classification) => {
                    c.problem(&at("gate.min_r2"), "applies to task = \"regression\"");
                    None
                }
                (None, task) => (task == crate::performance::Task::Regression
                    && gate_metric != crate::performance::Metric::R2)
                    .then_some(0.0),
            },
            holdout_share: c.fraction(&at("gate.holdout_share"), p.gate.holdout_share, 0.3, true),
            max_drop_relative: relative(
                &mut c,
                "gate.max_drop_relative",
                p.gate.max_drop_relative,
                (error && p.gate.max_drop.is_none()).then_some(0.01),
            ),
            slices: p.gate.slices.clone().unwrap_or_default(),
            slice_max_drop: match (p.gate.slice_max_drop, error) {
                (None, true) => None,
                (raw, _) => Some(tolerance(&mut c, "gate.slice_max_drop", raw, 0.05)),
            },
            slice_max_drop_relative: relative(
                &mut c,
                "gate.slice_max_drop_relative",
                p.gate.slice_max_drop_relative,
                (error && p.gate.slice_max_drop.is_none()).then_some(0.10),
            ),
            min_slice_rows: c.positive(
                &at("gate.min_slice_rows"),
                p.gate.min_slice_rows,
                30,
                1_000_000,
            ),
            max_model_size_mb: p
                .gate
                .max_model_size_mb
                .map(|v| c.positive_number(&at("gate.max_model_size_mb"), Some(v), 100.0)),
            max_latency_ms_per_1k: p
                .gate
                .max_latency_ms_per_1k
                .map(|v| c.positive_number(&at("gate.max_latency_ms_per_1k"), Some(v), 100.0)),
        };
        if let Some(cats) = &p.data.categorical {
            for s in &gate.slices {
                if !cats.contains(s) {
                    c.problem(&at("gate.slices"), format!("`{s}` is not in data.categorical; slices are values of categorical columns"));
                }
            }
        }
        let mode = match p.approval.mode.as_deref().unwrap_or("manual") {
            "manual" => ApprovalMode::Manual,
            "auto" => ApprovalMode::Auto,
            other => {
                c.problem(&at("approval.mode"), format!("`{other}` is not a mode; use \"manual\" (default) or \"auto\" (explicit opt-in)"));
                ApprovalMode::Manual
            }
        };
        let approval = ApprovalConfig {
            mode,
            expires: c.duration(&at("approval.expires"), &p.approval.expires, "72h"),
            required: c.positive(&at("approval.required"), p.approval.required, 1, 10),
            approvers: p.approval.approvers.unwrap_or_default(),
            slack_channel: p.approval.slack_channel.clone(),
        };
        let defaults = crate::guards::GuardConfig::default();
        let budgets = |c: &mut Checker,
                       key: &str,
                       raw: &Option<Vec<String>>,
                       default: Vec<crate::guards::Budget>| match raw {
            None => default,
            Some(list) => list
                .iter()
                .filter_map(|b| {
                    crate::guards::Budget::parse(b)
                        .map_err(|e| c.problem(&at(key), e))
                        .ok()
                })
                .collect(),
        };
        let guards = crate::guards::GuardConfig {
            enabled: p.guards.enabled.unwrap_or(true),
            max_retrains: budgets(
                &mut c,
                "guards.max_retrains",
                &p.guards.max_retrains,
                defaults.max_retrains.clone(),
            ),
            max_deploys: budgets(
                &mut c,
                "guards.max_deploys",
                &p.guards.max_deploys,
                defaults.max_deploys.clone(),
            ),
            cooldown: c.duration(&at("guards.cooldown"), &p.guards.cooldown, "24h"),
            breaker_failures: match p.guards.breaker_failures {
                Some(0) => 0,
                other => c.positive(&at("guards.breaker_failures"), other, 3, 1000),
            },
            golden_set: p.guards.golden_set.as_deref().and_then(|g| {
                Location::parse(g, base)
                    .map_err(|e| c.problem(&at("guards.golden_set"), e.to_string()))
                    .ok()
            }),
            monotonic_last: c.positive(
                &at("guards.monotonic_last"),
                p.guards.monotonic_last,
                3,
                100,
            ),
            // In the gate metric's units: a fraction of accuracy, or the target's units for an
            // error metric.
            monotonic_tolerance: if gate.metric.higher_is_better() {
                c.fraction(
                    &at("guards.monotonic_tolerance"),
                    p.guards.monotonic_tolerance,
                    0.0,
                    false,
                )
            } else {
                c.non_negative(
                    &at("guards.monotonic_tolerance"),
                    p.guards.monotonic_tolerance,
                    0.0,
                )
            },
        };
        if p.approval.slack_channel.is_some() && raw_slack_missing {
            c.problem(
                &at("approval.slack_channel"),
                "set, but there is no [slack] table; configure the Slack app or remove the key",
            );
        }
        let mlflow = p.mlflow.as_ref().map(|m| {
            let tracking_uri = m.tracking_uri.clone().unwrap_or_default();
            if !(tracking_uri.starts_with("http://") || tracking_uri.starts_with("https://")) {
                c.problem(
                    &at("mlflow.tracking_uri"),
                    format!(
                        "`{tracking_uri}` is not an http(s):// URL of an MLflow tracking server"
                    ),
                );
            }
            let token = c.secret(
                &at("mlflow.token"),
                &m.token_file,
                &m.token_env,
                base,
                Some((env, "mlflow-token")),
            );
            crate::mlflow::MlflowConfig {
                tracking_uri,
                experiment: m.experiment.clone().unwrap_or_else(|| "retraind".into()),
                registered_model: m.registered_model.clone().unwrap_or_else(|| name.clone()),
                token,
                ca_file: file(&mut c, "mlflow.ca_file", &m.ca_file),
            }
        });
        if p.deploy.watch.is_some() && p.deploy.watch_for.is_some() {
            c.problem(
                &at("deploy.watch"),
                "set either watch_for or its older name watch, not both",
            );
        }
        let on_failure = match p.deploy.on_failure.as_deref().unwrap_or("rollback") {
            "rollback" => OnFailure::Rollback,
            "ask" => OnFailure::Ask,
            other => {
                c.problem(
                    &at("deploy.on_failure"),
                    format!("`{other}` is not a policy; use \"rollback\" (default) or \"ask\""),
                );
                OnFailure::Rollback
            }
        };
        let hook = p.deploy.hook_url.clone().map(|url| {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                c.problem(
                    &at("deploy.hook_url"),
                    format!("`{url}` is not an http(s):// URL"),
                );
            }
            HookConfig {
                url,
                secret: c.secret(
                    &at("deploy.hook_secret"),
                    &p.deploy.hook_secret_file,
                    &p.deploy.hook_secret_env,
                    base,
                    None,
                ),
                timeout: c.duration(&at("deploy.hook_timeout"), &p.deploy.hook_timeout, "30s"),
            }
        });
        let watch_interval =
            c.duration(&at("deploy.watch_interval"), &p.deploy.watch_interval, "1h");
        if watch_interval.is_zero() {
            c.problem(
                &at("deploy.watch_interval"),
                "must be longer than 0s (e.g. \"1h\")",
            );
        }
        let deploy = DeployConfig {
            watch: c.duration(
                &at("deploy.watch_for"),
                &p.deploy
                    .watch_for
                    .clone()
                    .or_else(|| p.deploy.watch.clone()),
                "0s",
            ),
            watch_interval,
            failure_limit: c.positive(&at("deploy.failure_limit"), p.deploy.failure_limit, 2, 1000),
            watch_relative_threshold: c.fraction(
                &at("deploy.watch_relative_threshold"),
                p.deploy.watch_relative_threshold,
                0.98,
                true,
            ),
            on_failure,
            hook,
        };
        pipelines.push(Pipeline {
            name,
            task,
            schedule,
            catch_up: p.catch_up.unwrap_or(true),
            data: DataConfig {
                reference,
                reference_source,
                reference_window,
                current,
                target: p.data.target.unwrap_or_else(|| "target".to_string()),
                prediction: p.data.prediction,
                timestamp: p.data.timestamp,
                s3,
                numerical: p.data.numerical,
                categorical: p.data.categorical,
                ignore: p.data.ignore.unwrap_or_default(),
                min_rows,
            },
            quality,
            drift,
            performance,
            train,
            gate,
            approval,
            deploy,
            guards,
            mlflow,
        });
    }

    Config {
        source: source.to_path_buf(),
        daemon: Daemon {
            state_dir,
            shutdown_grace,
            instance,
            lease_ttl,
        },
        server: Server {
            listen,
            api_token,
            public_url,
        },
        store: StoreConfig {
            url,
            max_connections,
        },
        pipelines,
        slack,
        webhook,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir();
        Config::parse(text, &dir.join("t.toml"), &[])
    }

    fn problems(text: &str) -> Vec<Problem> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid config, got {other:?}"),
        }
    }

    #[test]
    fn reports_every_problem_with_its_key_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ref.csv"), "a\n1\n").unwrap();
        let text = r#"
            [[pipeline]]
            name = "p"
            schedule = "every day at noon"
            colour = "blue"
            [pipeline.data]
            reference = "ref.csv"
            current = "{date}.csv"
            [pipeline.drift]
            alpha = -0.5
        "#;
        let got = Config::parse(text, &dir.path().join("c.toml"), &[]).unwrap_err();
        let ConfigError::Invalid { problems, .. } = got else {
            panic!("{got}")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"pipeline[0].schedule"), "{paths:?}");
        assert!(paths.contains(&"pipeline[0].colour"), "{paths:?}");
        assert!(paths.contains(&"pipeline[0].drift.alpha"), "{paths:?}");
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn wrong_type_names_the_path() {
        let p = problems("[server]\nlisten = 5\n[[pipeline]]\nname='x'\n");
        assert_eq!(p[0].path, "server.listen");
    }

    #[test]
    fn env_overrides_apply_and_unknown_sections_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ref.csv"), "a\n1\n").unwrap();
        let text =
            "[[pipeline]]\nname='p'\n[pipeline.data]\nreference='ref.csv'\ncurrent='{date}.csv'\n";
        let env = vec![
            (
                "RETRAIND_STORE__URL".to_string(),
                "postgres://u:hunter2@db/x".to_string(),
            ),
            (
                "RETRAIND_SERVER__LISTEN".to_string(),
                "127.0.0.1:1234".to_string(),
            ),
        ];
        let c = Config::parse(text, &dir.path().join("c.toml"), &env).unwrap();
        assert_eq!(c.store.url, "postgres://u:hunter2@db/x");
        assert_eq!(c.store.redacted_url(), "postgres://u:***@db/x");
        assert_eq!(c.server.listen.port(), 1234);
        let env = vec![("RETRAIND_NOPE__X".to_string(), "1".to_string())];
        let err = Config::parse(text, &dir.path().join("c.toml"), &env).unwrap_err();
        assert!(err.to_string().contains("nope.x"), "{err}");
    }

    #[test]
    fn durations_and_ranges_are_checked() {
        let p = problems(
            "[daemon]\nshutdown_grace='soon'\n[[pipeline]]\nname='bad name'\n[pipeline.train.burn]\nepochs=0\n",
        );
        let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "daemon.shutdown_grace",
            "pipeline[0].name",
            "pipeline[0].train.burn.epochs",
            "pipeline[0].data.reference",
            "pipeline[0].data.current",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn redacts_only_passwords() {
        assert_eq!(redact_url("sqlite:///x/y.db"), "sqlite:///x/y.db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u:p@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
    }

    #[test]
    fn training_settings_are_checked_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ref.csv"), "a,target\n1,0\n").unwrap();
        let text = r#"
[[pipeline]]
name = "p"
[pipeline.data]
reference = "ref.csv"
current = "{date}.csv"
[pipeline.train]
backend = "kfp"
[pipeline.train.burn]
activation = "swish"
derived = [{ name = "x", ratio = ["a"] }, { log1p = "v" }]
filters = [{ column = "v", op = "=>", value = 1 }]
"#;
        let got = match Config::parse(text, &dir.path().join("t.toml"), &[]) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid config, got {other:?}"),
        };
        let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "pipeline[0].train.kfp",
            "pipeline[0].train.burn.activation",
            "pipeline[0].train.burn.derived[0]",
            "pipeline[0].train.burn.derived[1]",
            "pipeline[0].train.burn.filters[0]",
        ] {
            assert!(paths.contains(&want), "{want} not in {paths:?}");
        }
    }

    /// `task` picks the metric family: a regressor is gated on RMSE with relative margins
    /// by default; metrics and bounds of the other family are refused by key.
    #[test]
    fn the_task_sets_metrics_and_their_bounds() {
        use crate::performance::{Metric, Task};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ref.csv"), "a,target\n1,0.5\n").unwrap();
        let base = "[[pipeline]]\nname = \"p\"\ntask = \"regression\"\n[pipeline.data]\nreference = \"ref.csv\"\ncurrent = \"{date}.csv\"\n";
        let c = Config::parse(base, &dir.path().join("t.toml"), &[]).unwrap();
        let p = &c.pipelines[0];
        assert_eq!(p.task, Task::Regression);
        assert_eq!(p.train.burn.task, Task::Regression);
        assert_eq!(p.train.burn.fail_below_r2, Some(0.0));
        assert_eq!(p.gate.metric, Metric::Rmse);
        assert_eq!(p.performance.rule.metric, Metric::Rmse);
        assert_eq!(
            (p.gate.max_drop, p.gate.max_drop_relative, p.gate.min_r2),
            (None, Some(0.01), Some(0.0))
        );
        assert_eq!(
            (p.gate.slice_max_drop, p.gate.slice_max_drop_relative),
            (None, Some(0.10))
        );
        // Absolute margins in the target's units are any number >= 0.
        let units =
            format!("{base}[pipeline.gate]\nmetric = \"mae\"\nmax_error = 12.5\nmax_drop = 3.0\n");
        let c = Config::parse(&units, &dir.path().join("t.toml"), &[]).unwrap();
        let g = &c.pipelines[0].gate;
        assert_eq!(
            (g.metric, g.max_error, g.max_drop, g.max_drop_relative),
            (Metric::Mae, Some(12.5), Some(3.0), None)
        );
        let wrong = format!(
            "{base}[pipeline.gate]\nmetric = \"accuracy\"\nmin_accuracy = 0.9\n[pipeline.performance]\nmetric = \"roc_auc\"\n[pipeline.train.burn]\nfail_below_accuracy = 0.2\n"
        );
        let got = match Config::parse(&wrong, &dir.path().join("t.toml"), &[]) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid config, got {other:?}"),
        };
        let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"pipeline[0].gate.metric"), "{got:?}");
        assert!(paths.contains(&"pipeline[0].gate.min_accuracy"), "{got:?}");
        assert!(paths.contains(&"pipeline[0].performance.metric"), "{got:?}");
        assert!(
            paths.contains(&"pipeline[0].train.burn.fail_below_accuracy"),
            "{got:?}"
        );
        let unknown = base.replace("\"regression\"", "\"ranking\"");
        match Config::parse(&unknown, &dir.path().join("t.toml"), &[]) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert!(
                    problems
                        .iter()
                        .any(|p| p.path == "pipeline[0].task"
                            && p.message.contains("\"regression\"")),
                    "{problems:?}"
                )
            }
            other => panic!("expected invalid config, got {other:?}"),
        }
        // A classifier keeps accuracy, its 0.9 floor and absolute margins.
        let classifier = base.replace("task = \"regression\"\n", "");
        let c = Config::parse(&classifier, &dir.path().join("t.toml"), &[]).unwrap();
        let g = &c.pipelines[0].gate;
        assert_eq!(
            (
                g.metric,
                g.min_accuracy,
                g.max_drop,
                g.max_drop_relative,
                g.slice_max_drop
            ),
            (Metric::Accuracy, 0.9, Some(0.0), None, Some(0.05))
        );
        // A relative margin alone is not undercut by the absolute default.
        let relative = format!("{classifier}[pipeline.gate]\nmax_drop_relative = 0.02\n");
        let c = Config::parse(&relative, &dir.path().join("t.toml"), &[]).unwrap();
        let g = &c.pipelines[0].gate;
        assert_eq!(
            (g.max_drop, g.max_drop_relative, g.min_r2),
            (None, Some(0.02), None)
        );
        assert_eq!(c.pipelines[0].train.burn.fail_below_r2, None);
    }

    #[test]
    fn guardrail_settings_are_checked_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ref.csv"), "a,target\n1,0\n").unwrap();
        let text = r##"
[slack]
api_url = "ftp://slack"
[webhook]
url = "https://hooks.example.com"
[[pipeline]]
name = "p"
[pipeline.data]
reference = "ref.csv"
current = "{date}.csv"
categorical = ["segment"]
[pipeline.gate]
slices = ["region"]
max_drop_relative = 1.5
[pipeline.approval]
slack_channel = "#x"
[pipeline.deploy]
watch = "1h"
watch_for = "2h"
on_failure = "panic"
hook_url = "hook.example.com"
watch_interval = "0s"
[pipeline.guards]
max_retrains = ["1/24h", "lots"]
cooldown = "forever"
"##;
        let got = match Config::parse(text, &dir.path().join("t.toml"), &[]) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid config, got {other:?}"),
        };
        let paths: Vec<&str> = got.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "slack",
            "slack.api_url",
            "webhook.secret_file",
            "pipeline[0].gate.slices",
            "pipeline[0].gate.max_drop_relative",
            "pipeline[0].deploy.watch",
            "pipeline[0].deploy.on_failure",
            "pipeline[0].deploy.hook_url",
            "pipeline[0].deploy.watch_interval",
            "pipeline[0].guards.max_retrains",
            "pipeline[0].guards.cooldown",
        ] {
            assert!(paths.contains(&want), "{want} not in {got:#?}");
        }
        let budget = got
            .iter()
            .find(|p| p.path.ends_with("max_retrains"))
            .unwrap();
        assert!(budget.message.contains("COUNT/WINDOW"), "{budget}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder_even_from_a_bare_file_name() {
        let text = "[[pipeline]]\nname = \"p\"\n[pipeline.data]\nreference = \"Cargo.toml\"\ncurrent = \"live.csv\"\n";
        // A bare file name (as `--config retraind.toml` gives) has an empty folder.
        let c =
            Config::parse(text, Path::new("retraind.toml"), &[]).unwrap_or_else(|e| panic!("{e}"));
        let cwd = std::env::current_dir().unwrap();
        let current = c.pipelines[0].data.current_location("2026-01-01").unwrap();
        assert_eq!(
            current.describe(),
            cwd.join("live.csv").display().to_string()
        );
    }
}
