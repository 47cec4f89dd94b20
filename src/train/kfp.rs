//! The Kubeflow Pipelines backend: training runs as a KFP run (REST v2beta1) of a configured
//! pipeline version, and retraind waits for it.
//!
//! Exactly-once: KFP has no idempotency key, so every run's display name carries the
//! pipeline and cycle (`retraind-<pipeline>-cycle-<id>`). Before creating a run the trainer
//! looks for one with that name (a crash between create and store left it there); the run id
//! is recorded in the store before polling starts; after a restart the stored id is polled
//! again. A shutdown leaves the remote run running; the training timeout terminates it.
//!
//! Convention for results: the run receives the runtime parameters `retraind_pipeline`,
//! `retraind_cycle`, `retraind_train_uri` (the rows to train on, written there by retraind:
//! the window minus the gate's holdout), `retraind_current_uri`, `retraind_reference_uri` and
//! `retraind_output_uri` (plus the user's `parameters`), and writes
//! `<retraind_output_uri>/metrics.json` (a JSON object of numbers, like the command backend's)
//! and its model under `<retraind_output_uri>/model`. The gate scores that model locally with
//! the `predict` command, which gets `{model_uri}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::info;

use super::{CancelFlag, EpochReport, TrainError, TrainOutput, TrainRequest, Trainer};
use crate::http::{HttpError, JsonApi};
use crate::secret::SecretSource;
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[pipeline.train.kfp]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawKfp {
    pub endpoint: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub ca_file: Option<String>,
    pub experiment_id: Option<String>,
    pub pipeline_id: Option<String>,
    pub pipeline_version_id: Option<String>,
    pub parameters: Option<BTreeMap<String, String>>,
    pub output_uri: Option<String>,
    pub poll_interval: Option<String>,
    pub max_poll_interval: Option<String>,
    pub predict: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub workdir: Option<String>,
    pub data_format: Option<String>,
}

/// How often a run is polled at first, and at most.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(60);

impl KfpConfig {
    /// Validate `raw` (the checker is at `pipeline[i].train.kfp`).
    pub fn from_raw(raw: RawKfp, files: Files, c: &mut Checker) -> KfpConfig {
        let required = |c: &mut Checker, key: &str, v: &Option<String>| -> String {
            match v {
                Some(s) if !s.is_empty() => s.clone(),
                _ => {
                    c.problem(
                        key,
                        "missing; see [pipeline.train.kfp] in config/retraind.toml",
                    );
                    String::new()
                }
            }
        };
        let endpoint = required(c, "endpoint", &raw.endpoint);
        if !endpoint.is_empty() {
            c.url("endpoint", &endpoint, " of the KFP API server");
        }
        let token = files.secret(
            c,
            "token",
            &raw.token_file,
            &raw.token_env,
            Some("kfp-token"),
        );
        let predict = match &raw.predict {
            Some(a) if !a.is_empty() => a.clone(),
            _ => {
                c.problem("predict", "missing; the gate scores the run's model locally with this command ({model_uri}, {input_path}, {output_path})");
                Vec::new()
            }
        };
        let scoring = super::command::Scoring::from_raw(
            predict,
            raw.env,
            &raw.workdir,
            &raw.data_format,
            files,
            c,
        );
        KfpConfig {
            experiment_id: required(c, "experiment_id", &raw.experiment_id),
            pipeline_id: required(c, "pipeline_id", &raw.pipeline_id),
            pipeline_version_id: required(c, "pipeline_version_id", &raw.pipeline_version_id),
            output_uri: required(c, "output_uri", &raw.output_uri),
            endpoint,
            token,
            ca_file: files.file(c, "ca_file", &raw.ca_file),
            parameters: raw.parameters.unwrap_or_default(),
            poll_interval: c.duration("poll_interval", &raw.poll_interval, POLL_INTERVAL),
            max_poll_interval: c.duration(
                "max_poll_interval",
                &raw.max_poll_interval,
                MAX_POLL_INTERVAL,
            ),
            scoring,
        }
    }
}

/// `[pipeline.train.kfp]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KfpConfig {
    /// Base URL of the KFP API server, e.g. `https://kubeflow.example.com/pipeline`.
    pub endpoint: String,
    #[serde(skip)]
    pub token: Option<SecretSource>,
    pub ca_file: Option<PathBuf>,
    pub experiment_id: String,
    pub pipeline_id: String,
    pub pipeline_version_id: String,
    /// Extra runtime parameters (values templated with `{pipeline}`, `{cycle}`).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Where the run writes its outputs; `{pipeline}` and `{cycle}` are substituted.
    pub output_uri: String,
    /// First poll interval; doubles up to `max_poll_interval`.
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde_compat")]
    pub max_poll_interval: Duration,
    /// Local scoring for the gate (like `train.command.predict`, with `{model_uri}`).
    #[serde(flatten)]
    pub scoring: super::command::Scoring,
}

/// Durations as seconds in the model card.
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_secs_f64(f64::deserialize(d)?))
    }
}

/// Run states (`V2beta1RuntimeState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    RuntimeStateUnspecified,
    Pending,
    Running,
    Succeeded,
    Skipped,
    Failed,
    Canceling,
    Canceled,
    Paused,
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Skipped | RunState::Failed | RunState::Canceled
        )
    }
}

/// The display name that identifies a cycle's run.
pub fn display_name(pipeline: &str, cycle: i64) -> String {
    format!("retraind-{pipeline}-cycle-{cycle}")
}

fn template(text: &str, pipeline: &str, cycle: i64) -> String {
    text.replace("{pipeline}", pipeline)
        .replace("{cycle}", &cycle.to_string())
}

/// A small async KFP client.
pub struct Client {
    api: JsonApi,
}

fn err(message: impl Into<String>) -> TrainError {
    TrainError::Command(format!("Kubeflow: {}", message.into()))
}

impl Client {
    pub fn new(config: &KfpConfig) -> Result<Client, TrainError> {
        let api = JsonApi::new(
            &config.endpoint,
            Duration::from_secs(30),
            config.ca_file.as_deref(),
            config.token.as_ref(),
            "train.kfp.ca_file",
        )
        .map_err(|e| err(e.to_string()))?;
        Ok(Client { api })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        query: &[(&str, String)],
    ) -> Result<Value, TrainError> {
        let url = self.api.url(path);
        match self.api.call(method, path, body.as_ref(), query).await {
            Ok(v) => Ok(v),
            Err(HttpError::Transport(message)) => Err(err(format!("{url}: {message}"))),
            Err(HttpError::Status { status, body }) => {
                // google.rpc.Status {code, message, details}
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let message = v["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| body.chars().take(200).collect());
                let status = reqwest::StatusCode::from_u16(status)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|_| status.to_string());
                Err(err(format!("{url} answered {status}: {message}")))
            }
        }
    }

    /// The run with this display name in the experiment, if any.
    pub async fn find(&self, experiment: &str, name: &str) -> Result<Option<String>, TrainError> {
        let filter = json!({"predicates": [{"key": "display_name", "operation": "EQUALS", "string_value": name}]});
        let v = self
            .call(
                reqwest::Method::GET,
                "/apis/v2beta1/runs",
                None,
                &[
                    ("experiment_id", experiment.to_string()),
                    ("filter", filter.to_string()),
                    ("page_size", "10".into()),
                ],
            )
            .await?;
        Ok(v["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["display_name"] == name)
            .and_then(|r| r["run_id"].as_str())
            .map(str::to_string))
    }

    pub async fn create(&self, body: Value) -> Result<String, TrainError> {
        let v = self
            .call(reqwest::Method::POST, "/apis/v2beta1/runs", Some(body), &[])
            .await?;
        v["run_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| err("the created run has no run_id"))
    }

    pub async fn get(&self, run: &str) -> Result<Value, TrainError> {
        self.call(
            reqwest::Method::GET,
            &format!("/apis/v2beta1/runs/{run}"),
            None,
            &[],
        )
        .await
    }

    pub async fn terminate(&self, run: &str) -> Result<(), TrainError> {
        self.call(
            reqwest::Method::POST,
            &format!("/apis/v2beta1/runs/{run}:terminate"),
            Some(json!({})),
            &[],
        )
        .await
        .map(|_| ())
    }
}

/// Trains by running a KFP pipeline version.
#[derive(Debug, Clone)]
pub struct KfpTrainer {
    pub config: KfpConfig,
    /// S3 settings of the pipeline, for the output URI.
    pub s3: crate::source::S3Config,
}

impl Trainer for KfpTrainer {
    fn name(&self) -> &'static str {
        "kfp"
    }

    fn train(
        &self,
        request: &TrainRequest,
        cancel: &CancelFlag,
        progress: &(dyn Fn(&EpochReport) + Send + Sync),
    ) -> Result<TrainOutput, TrainError> {
        // Its own runtime (on a helper thread when called inside one), like remote fetches.
        crate::source::block_on(self.run(request, cancel, progress))
            .map_err(|e| err(e.to_string()))?
    }
}

impl KfpTrainer {
    async fn run(
        &self,
        request: &TrainRequest,
        cancel: &CancelFlag,
        progress: &(dyn Fn(&EpochReport) + Send + Sync),
    ) -> Result<TrainOutput, TrainError> {
        let started = Instant::now();
        std::fs::create_dir_all(&request.out_dir).map_err(super::io_err(&request.out_dir))?;
        let client = Client::new(&self.config)?;
        let output_uri = template(&self.config.output_uri, &request.pipeline, request.cycle_id);
        let run_id = match &request.remote_run {
            Some(id) => id.clone(),
            None => self.start(&client, request, &output_uri).await?,
        };
        let run = self.poll(&client, &run_id, request, cancel).await?;
        let state: RunState = serde_json::from_value(run["state"].clone())
            .unwrap_or(RunState::RuntimeStateUnspecified);
        if state != RunState::Succeeded {
            let why = run["error"]["message"]
                .as_str()
                .unwrap_or("no error message");
            return Err(err(format!("run {run_id} ended {state:?}: {why}")));
        }
        let (metrics, history) = self.results(request, &output_uri, &run_id)?;
        for e in &history {
            progress(e);
        }
        Ok(super::command::external_output(
            request,
            started,
            metrics,
            history,
            Some(run_id),
        ))
    }

    /// This cycle's run: found by its display name (created before a restart), or created
    /// now; its id is recorded before anything waits on it.
    async fn start(
        &self,
        client: &Client,
        request: &TrainRequest,
        output_uri: &str,
    ) -> Result<String, TrainError> {
        let (pipeline, cycle) = (request.pipeline.as_str(), request.cycle_id);
        let name = display_name(pipeline, cycle);
        let id = match client.find(&self.config.experiment_id, &name).await? {
            Some(id) => {
                info!(
                    pipeline,
                    cycle,
                    run = id,
                    "found this cycle's Kubeflow run from before a restart"
                );
                id
            }
            None => {
                let body = self.run_body(request, &name, output_uri)?;
                let id = client.create(body).await?;
                info!(pipeline, cycle, run = id, "Kubeflow run created");
                id
            }
        };
        // Durable before we wait on it: a restart polls this run, never a new one.
        if let Err(e) = request.record_remote_run.record(&id) {
            // Untracked, the run would go on unseen: stop it.
            let stopped = client.terminate(&id).await;
            return Err(err(format!(
                "cannot record run {id} ({e}); {}",
                match stopped {
                    Ok(()) => "it was terminated".to_string(),
                    Err(t) => format!("terminating it failed too ({t}); stop it by hand"),
                }
            )));
        }
        Ok(id)
    }

    /// Hand the training rows (the window minus the gate's holdout) to where the run reads
    /// them, and describe the run to create.
    fn run_body(
        &self,
        request: &TrainRequest,
        name: &str,
        output_uri: &str,
    ) -> Result<Value, TrainError> {
        let c = &self.config;
        let (pipeline, cycle) = (request.pipeline.as_str(), request.cycle_id);
        let format = c.scoring.data_format;
        let train_uri = format!(
            "{}/train.{}",
            output_uri.trim_end_matches('/'),
            format.extension()
        );
        let local = request
            .out_dir
            .join(format!("train.{}", format.extension()));
        crate::data::write_table(&request.data, &request.roles, &local, format)
            .map_err(|e| err(e.to_string()))?;
        let bytes = std::fs::read(&local).map_err(super::io_err(&local))?;
        let _ = std::fs::remove_file(&local);
        let target = crate::source::Location::parse(&train_uri, std::path::Path::new("/"))
            .map_err(|e| err(e.to_string()))?;
        crate::source::put(&target, bytes, &self.s3)
            .map_err(|e| err(format!("cannot hand the training rows to the run: {e}")))?;
        let mut parameters: BTreeMap<String, Value> = c
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), json!(template(v, pipeline, cycle))))
            .collect();
        let (current, reference) = match &request.inputs {
            Some(i) => (i.current.path.clone(), i.reference.path.clone()),
            None => Default::default(),
        };
        parameters.insert("retraind_pipeline".into(), json!(pipeline));
        parameters.insert("retraind_cycle".into(), json!(cycle.to_string()));
        parameters.insert("retraind_current_uri".into(), json!(current));
        parameters.insert("retraind_reference_uri".into(), json!(reference));
        parameters.insert("retraind_output_uri".into(), json!(output_uri));
        parameters.insert("retraind_train_uri".into(), json!(train_uri));
        Ok(json!({
            "display_name": name,
            "description": format!("retraind cycle {cycle} of pipeline {pipeline}"),
            "experiment_id": c.experiment_id,
            "pipeline_version_reference": {
                "pipeline_id": c.pipeline_id,
                "pipeline_version_id": c.pipeline_version_id,
            },
            "runtime_config": { "parameters": parameters },
        }))
    }

    /// Poll the run with backoff until it ends; the timeout terminates it, a shutdown leaves
    /// it running (the next start polls it again).
    async fn poll(
        &self,
        client: &Client,
        run_id: &str,
        request: &TrainRequest,
        cancel: &CancelFlag,
    ) -> Result<Value, TrainError> {
        let (pipeline, cycle) = (request.pipeline.as_str(), request.cycle_id);
        let mut interval = self.config.poll_interval;
        let mut last = None;
        loop {
            if cancel.timed_out() {
                let how = match client.terminate(run_id).await {
                    Ok(()) => "it was terminated".to_string(),
                    Err(e) => format!("terminating it failed ({e}); stop it by hand"),
                };
                return Err(err(format!(
                    "run {run_id} did not finish within train.timeout ({:?}); {how}",
                    request.timeout
                )));
            }
            if cancel.is_cancelled() {
                return Err(TrainError::Cancelled);
            }
            match client.get(run_id).await {
                Ok(run) => {
                    let state: RunState = serde_json::from_value(run["state"].clone())
                        .unwrap_or(RunState::RuntimeStateUnspecified);
                    if last != Some(state) {
                        info!(pipeline, cycle, run = run_id, ?state, "Kubeflow run state");
                        last = Some(state);
                    }
                    if state.is_terminal() {
                        return Ok(run);
                    }
                }
                // A transient error while polling is retried with backoff, not fatal.
                Err(e) => {
                    tracing::warn!(pipeline, cycle, run = run_id, error = %e, "polling Kubeflow failed; retrying")
                }
            }
            let deadline = Instant::now() + interval;
            while Instant::now() < deadline && !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            interval = (interval * 2).min(self.config.max_poll_interval);
        }
    }

    /// The run's results by convention: `<output_uri>/metrics.json`, and the model under
    /// `<output_uri>/model` (recorded for scoring).
    fn results(
        &self,
        request: &TrainRequest,
        output_uri: &str,
        run_id: &str,
    ) -> Result<(BTreeMap<String, f64>, Vec<EpochReport>), TrainError> {
        let metrics_uri = format!("{}/metrics.json", output_uri.trim_end_matches('/'));
        let scratch = request.out_dir.join("work");
        let loc = crate::source::Location::parse(&metrics_uri, std::path::Path::new("/"))
            .map_err(|e| err(e.to_string()))?;
        let input = crate::source::resolve(&loc, &scratch, &self.s3).map_err(|e| {
            err(format!(
                "run {run_id} succeeded but its metrics are unreadable: {e}"
            ))
        })?;
        let text = std::fs::read_to_string(&input.files[0])
            .map_err(|e| err(format!("{metrics_uri}: {e}")))?;
        let parsed = super::command::parse_metrics(&text, &metrics_uri)?;
        let _ = std::fs::remove_dir_all(&scratch);
        let model_uri = format!("{}/model", output_uri.trim_end_matches('/'));
        super::command::write_spec(
            &request.out_dir,
            &self.config.scoring,
            &request.roles,
            Some(&model_uri),
        )?;
        Ok(parsed)
    }
}
