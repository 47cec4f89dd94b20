//! The HTTP server (axum): `/metrics`, `/healthz`, `/readyz`, and the JSON API under
//! `/api/v1`. Mutating endpoints need `Authorization: Bearer <token>` (compared in constant
//! time); with no token configured they answer 403 — disabled, never open. Every request body
//! is limited to 64 KiB.
//!
//! `run(listener, state, shutdown)` takes a bound listener and a shutdown future, as in
//! mini-redis, so tests bind port 0 and the daemon drains on SIGTERM.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;

use crate::approval::ApprovalDecision;
use crate::cycle::TriggerKind;
use crate::engine::{Engine, EngineError};
use crate::secret::Secret;
use crate::status;
use crate::store::{CreateOutcome, Recorded};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub api_token: Option<Arc<Secret>>,
}

/// A JSON error response.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::UnknownPipeline(_) | EngineError::UnknownCycle(_) => StatusCode::NOT_FOUND,
            EngineError::NotAwaitingApproval { .. } | EngineError::Expired(_) => {
                StatusCode::CONFLICT
            }
            EngineError::NotAnApprover { .. } => StatusCode::FORBIDDEN,
            EngineError::ShuttingDown | EngineError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(code, e.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// Build the router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/pipelines", get(pipelines))
        .route("/api/v1/pipelines/{pipeline}/trigger", post(trigger))
        .route("/api/v1/pipelines/{pipeline}/models", get(models))
        .route("/api/v1/cycles", get(cycles))
        .route("/api/v1/cycles/{id}", get(cycle))
        .route("/api/v1/cycles/{id}/approve", post(approve))
        .route("/api/v1/cycles/{id}/reject", post(reject))
        .route("/reports/{id}", get(report_html))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serve until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.engine.metrics().render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.engine.store().ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")).into_response(),
    }
}

async fn pipelines(
    State(s): State<AppState>,
) -> Result<Json<Vec<status::PipelineStatus>>, ApiError> {
    let config = s.engine.config().await;
    Ok(Json(status::pipelines(s.engine.store(), &config).await?))
}

async fn models(
    State(s): State<AppState>,
    Path(pipeline): Path<String>,
) -> Result<Json<Vec<status::ModelEntry>>, ApiError> {
    let config = s.engine.config().await;
    if !config.pipelines.iter().any(|p| p.name == pipeline) {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no pipeline `{pipeline}` in the configuration"),
        ));
    }
    Ok(Json(status::models(s.engine.store(), &pipeline).await?))
}

#[derive(Debug, Deserialize)]
struct CyclesQuery {
    pipeline: Option<String>,
    limit: Option<i64>,
}

async fn cycles(
    State(s): State<AppState>,
    Query(q): Query<CyclesQuery>,
) -> Result<Json<Vec<status::CycleSummary>>, ApiError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let rows = s
        .engine
        .store()
        .cycles(q.pipeline.as_deref(), limit)
        .await?;
    Ok(Json(rows.iter().map(status::CycleSummary::from).collect()))
}

async fn cycle(
    State(s): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<status::CycleDetail>, ApiError> {
    status::cycle(s.engine.store(), id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no cycle {id}")))
}

/// The HTML drift report of a cycle, rendered from the stored report.
async fn report_html(State(s): State<AppState>, Path(id): Path<i64>) -> Result<Response, ApiError> {
    let body = s.engine.store().report(id).await?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("cycle {id} has no report (it never reached the check step)"),
        )
    })?;
    Ok((
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::report::render(&body),
    )
        .into_response())
}

/// Check the bearer token of a mutating request.
fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &s.api_token else {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "mutating endpoints are disabled: set server.api_token_file (or api_token_env) and restart".into(),
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if token.matches(presented) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (send Authorization: Bearer <token>)".into(),
        ))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    /// The cycle's day (YYYY-MM-DD); defaults to today in the pipeline's timezone.
    date: Option<String>,
}

async fn trigger(
    State(s): State<AppState>,
    Path(pipeline): Path<String>,
    headers: HeaderMap,
    body: Option<Json<TriggerBody>>,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    if let Some(d) = &body.date
        && chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err()
    {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("date `{d}` is not YYYY-MM-DD"),
        ));
    }
    let outcome = s
        .engine
        .trigger(&pipeline, TriggerKind::Manual, body.date, None)
        .await?;
    let code = match outcome {
        CreateOutcome::Created(_) => StatusCode::ACCEPTED,
        CreateOutcome::AlreadyRunning(_) => StatusCode::CONFLICT,
    };
    Ok((code, Json(outcome)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    approver: String,
    #[serde(default)]
    reason: String,
}

async fn decide(
    s: AppState,
    id: i64,
    headers: HeaderMap,
    body: DecisionBody,
    verdict: ApprovalDecision,
) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    if body.approver.trim().is_empty() || body.approver.len() > 128 {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "approver must be 1-128 characters".into(),
        ));
    }
    let recorded = s
        .engine
        .decide(id, body.approver.trim(), "api", verdict, &body.reason)
        .await?;
    let result = match recorded {
        Recorded::New => "recorded",
        Recorded::Duplicate => "duplicate",
    };
    Ok((
        StatusCode::OK,
        Json(json!({ "cycle": id, "result": result })),
    )
        .into_response())
}

async fn approve(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<DecisionBody>,
) -> Result<Response, ApiError> {
    decide(s, id, headers, body, ApprovalDecision::Approve).await
}

async fn reject(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    Json(body): Json<DecisionBody>,
) -> Result<Response, ApiError> {
    decide(s, id, headers, body, ApprovalDecision::Reject).await
}
