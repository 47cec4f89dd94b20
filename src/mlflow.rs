//! The MLflow mirror (optional, per pipeline): each trained version becomes an MLflow run
//! (params, per-epoch metrics, `model_size_mb`, final status, the model card as an artifact)
//! and a registered model version; a deploy sets the registered model's `champion` alias
//! (aliases, not the deprecated stages). Our store stays the source of truth: a failing
//! MLflow server is logged and retried on the next step, never a reason to fail a cycle.
//!
//! REST 2.0 as documented (`docs/external-apis.md`): runs/create, runs/search (to find the
//! run of a cycle again after a crash instead of creating a second one), runs/log-batch
//! (≤1000 metrics and ≤100 params per call), runs/update, mlflow-artifacts PUT,
//! registered-models/create, model-versions/create (source inside the run's artifacts),
//! registered-models/alias.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{HttpError, JsonApi};
use crate::secret::SecretSource;
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[pipeline.mlflow]`.
#[derive(Debug, Clone)]
pub struct MlflowConfig {
    pub tracking_uri: String,
    pub experiment: String,
    /// Registered model name (default: the pipeline's name).
    pub registered_model: String,
    /// Bearer token for a server behind auth (file, env or credential).
    pub token: Option<SecretSource>,
    /// PEM of a private CA that signed the server's certificate (besides the system roots).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `[pipeline.mlflow]` as written.
#[derive(Debug, Default, serde::Deserialize)]
pub struct RawMlflow {
    pub tracking_uri: Option<String>,
    pub experiment: Option<String>,
    pub registered_model: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub ca_file: Option<String>,
}

impl MlflowConfig {
    /// Validate `raw` (the checker is at `pipeline[i].mlflow`); the registered model is
    /// named after the pipeline unless set.
    pub fn from_raw(raw: RawMlflow, pipeline: &str, files: Files, c: &mut Checker) -> MlflowConfig {
        let tracking_uri = raw.tracking_uri.unwrap_or_default();
        c.url(
            "tracking_uri",
            &tracking_uri,
            " of an MLflow tracking server",
        );
        MlflowConfig {
            token: files.secret(
                c,
                "token",
                &raw.token_file,
                &raw.token_env,
                Some("mlflow-token"),
            ),
            ca_file: files.file(c, "ca_file", &raw.ca_file),
            tracking_uri,
            experiment: raw.experiment.unwrap_or_else(|| "retraind".into()),
            registered_model: raw.registered_model.unwrap_or_else(|| pipeline.to_string()),
        }
    }
}

/// Errors talking to MLflow.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    #[error("MLflow at {url}: {message}")]
    Http { url: String, message: String },
    #[error("MLflow at {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

impl MlflowError {
    /// A failed call to `url`.
    fn from_http(url: String, e: HttpError) -> MlflowError {
        match e {
            HttpError::Transport(message) => MlflowError::Http { url, message },
            HttpError::Status { status, body } => MlflowError::Status {
                url,
                status,
                body: body.chars().take(300).collect(),
            },
        }
    }
}

/// One metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub key: String,
    pub value: f64,
    pub step: i64,
}

/// A thin client for the calls retraind makes.
pub struct Client {
    api: JsonApi,
}

impl Client {
    pub fn new(config: &MlflowConfig) -> Result<Client, MlflowError> {
        let api = JsonApi::new(
            &config.tracking_uri,
            Duration::from_secs(30),
            config.ca_file.as_deref(),
            config.token.as_ref(),
            "mlflow.ca_file",
        )
        .map_err(|e| MlflowError::from_http(config.tracking_uri.clone(), e))?;
        Ok(Client { api })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        query: &[(&str, &str)],
    ) -> Result<Value, MlflowError> {
        self.api
            .call(method, path, body.as_ref(), query)
            .await
            .map_err(|e| MlflowError::from_http(self.api.url(path), e))
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, MlflowError> {
        self.call(reqwest::Method::POST, path, Some(body), &[])
            .await
    }

    /// The experiment's id, creating it if needed.
    pub async fn experiment(&self, name: &str) -> Result<String, MlflowError> {
        let got = self
            .call(
                reqwest::Method::GET,
                "/api/2.0/mlflow/experiments/get-by-name",
                None,
                &[("experiment_name", name)],
            )
            .await;
        if let Ok(v) = got
            && let Some(id) = v["experiment"]["experiment_id"].as_str()
        {
            return Ok(id.to_string());
        }
        let v = self
            .post(
                "/api/2.0/mlflow/experiments/create",
                json!({ "name": name }),
            )
            .await?;
        Ok(v["experiment_id"].as_str().unwrap_or_default().to_string())
    }

    /// The run tagged with this cycle, if one exists: (run id, artifact uri, status).
    pub async fn find_run(
        &self,
        experiment: &str,
        pipeline: &str,
        cycle: i64,
    ) -> Result<Option<(String, String, String)>, MlflowError> {
        let filter = format!(
            "tags.`retraind.pipeline` = '{pipeline}' and tags.`retraind.cycle` = '{cycle}'"
        );
        let v = self
            .post(
                "/api/2.0/mlflow/runs/search",
                json!({ "experiment_ids": [experiment], "filter": filter, "max_results": 1 }),
            )
            .await?;
        Ok(v["runs"].as_array().and_then(|r| r.first()).map(|r| {
            let info = &r["info"];
            (
                info["run_id"].as_str().unwrap_or_default().to_string(),
                info["artifact_uri"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                info["status"].as_str().unwrap_or_default().to_string(),
            )
        }))
    }

    /// Create a run; (run id, artifact uri).
    pub async fn create_run(
        &self,
        experiment: &str,
        name: &str,
        tags: &[(&str, String)],
        start_ms: i64,
    ) -> Result<(String, String), MlflowError> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": v }))
            .collect();
        let v = self
            .post(
                "/api/2.0/mlflow/runs/create",
                json!({ "experiment_id": experiment, "run_name": name, "start_time": start_ms, "tags": tags }),
            )
            .await?;
        let info = &v["run"]["info"];
        Ok((
            info["run_id"].as_str().unwrap_or_default().to_string(),
            info["artifact_uri"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ))
    }

    /// Log params and metric points, in batches within the API's limits.
    pub async fn log(
        &self,
        run: &str,
        params: &[(String, String)],
        points: &[Point],
        at_ms: i64,
    ) -> Result<(), MlflowError> {
        for chunk in params.chunks(100) {
            let params: Vec<Value> = chunk
                .iter()
                .map(
                    |(k, v)| json!({ "key": k, "value": v.chars().take(6000).collect::<String>() }),
                )
                .collect();
            self.post(
                "/api/2.0/mlflow/runs/log-batch",
                json!({ "run_id": run, "params": params }),
            )
            .await?;
        }
        for chunk in points.chunks(1000) {
            let metrics: Vec<Value> = chunk
                .iter()
                .filter(|p| p.value.is_finite())
                .map(|p| json!({ "key": p.key, "value": p.value, "timestamp": at_ms, "step": p.step }))
                .collect();
            self.post(
                "/api/2.0/mlflow/runs/log-batch",
                json!({ "run_id": run, "metrics": metrics }),
            )
            .await?;
        }
        Ok(())
    }

    /// Upload one file into the run's artifacts (proxied artifact store).
    pub async fn upload(
        &self,
        artifact_uri: &str,
        rel: &str,
        bytes: Vec<u8>,
    ) -> Result<(), MlflowError> {
        let root = artifact_uri
            .strip_prefix("mlflow-artifacts:/")
            .ok_or_else(|| MlflowError::Http {
                url: self.api.url(""),
                message: format!(
                    "artifact uri `{artifact_uri}` is not served by the tracking server; start it with --serve-artifacts"
                ),
            })?;
        let url = self.api.url(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}/{rel}",
            root.trim_start_matches('/')
        ));
        let req = self.api.request(reqwest::Method::PUT, &url).body(bytes);
        self.api
            .send(req)
            .await
            .map_err(|e| MlflowError::from_http(url, e))?;
        Ok(())
    }

    /// Mark a run finished (or failed).
    pub async fn finish(&self, run: &str, ok: bool, end_ms: i64) -> Result<(), MlflowError> {
        self.post(
            "/api/2.0/mlflow/runs/update",
            json!({ "run_id": run, "status": if ok { "FINISHED" } else { "FAILED" }, "end_time": end_ms }),
        )
        .await
        .map(|_| ())
    }

    /// Register `source` (inside the run's artifacts) as a new version of `model`; the
    /// version number MLflow assigned.
    pub async fn register(
        &self,
        model: &str,
        source: &str,
        run: &str,
    ) -> Result<String, MlflowError> {
        // The version of this run, if an earlier attempt registered it before a crash.
        let found = self
            .call(
                reqwest::Method::GET,
                "/api/2.0/mlflow/model-versions/search",
                None,
                &[("filter", &format!("name='{model}' and run_id='{run}'"))],
            )
            .await?;
        if let Some(v) = found["model_versions"]
            .as_array()
            .and_then(|v| v.first())
            .and_then(|v| v["version"].as_str())
        {
            return Ok(v.to_string());
        }
        // Creating an existing registered model is an error we can ignore.
        let _ = self
            .post(
                "/api/2.0/mlflow/registered-models/create",
                json!({ "name": model }),
            )
            .await;
        let v = self
            .post(
                "/api/2.0/mlflow/model-versions/create",
                json!({ "name": model, "source": source, "run_id": run }),
            )
            .await?;
        Ok(v["model_version"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Point `alias` of `model` at `version`.
    pub async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: &str,
    ) -> Result<(), MlflowError> {
        self.post(
            "/api/2.0/mlflow/registered-models/alias",
            json!({ "name": model, "alias": alias, "version": version }),
        )
        .await
        .map(|_| ())
    }
}
