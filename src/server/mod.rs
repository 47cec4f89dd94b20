//! The HTTP server (axum): `/metrics`, `/healthz`, `/readyz`, the JSON API under
//! `/api/v1`, and the web console's pages (mounted from [`crate::console`]). Mutating endpoints need `Authorization: Bearer <token>` (compared in constant
//! time); with no token configured they answer 403 — disabled, never open. Every request body
//! is limited to 64 KiB.
//!
//! `run(listener, state, shutdown)` takes a bound listener and a shutdown future, as in
//! mini-redis, so tests bind port 0 and the daemon drains on SIGTERM; [`serve`] bounds what
//! clients can take (header and request timeouts, connection and read limits).

pub mod serve;

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

use crate::approval::{ApprovalDecision, Approver};
use crate::cycle::TriggerKind;
use crate::engine::{Engine, EngineError};
use crate::secret::Secret;
use crate::status;
use crate::store::{CreateOutcome, Recorded};

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the handlers share: the engine, whose runtime holds the secrets requests are
/// checked with (read again on every reload).
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
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
        let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError(code, e.to_string())
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// Build the router. The token check of the mutating API runs as a layer, before any body is
/// read or parsed: an unauthenticated request learns nothing about the body it should send.
pub fn router(state: AppState) -> Router {
    let mutations = Router::new()
        .route("/api/v1/pipelines/{pipeline}/trigger", post(trigger))
        .route("/api/v1/cycles/{id}/approve", post(approve))
        .route("/api/v1/cycles/{id}/reject", post(reject))
        .route("/api/v1/pipelines/{pipeline}/rollback", post(rollback))
        .route("/api/v1/freeze", post(freeze))
        .route("/api/v1/resume", post(resume))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token,
        ));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/pipelines", get(pipelines))
        .route("/api/v1/pipelines/{pipeline}/models", get(models))
        .route("/api/v1/cycles", get(cycles))
        .route("/api/v1/cycles/{id}", get(cycle))
        .merge(mutations)
        .route("/slack/interactions", post(slack_interaction))
        .route("/hooks/approval", post(hook_approval))
        .route("/reports/{id}", get(report_html))
        .with_state(state.clone())
        .merge(crate::console::router(state.engine))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

/// Serve until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The peer's address (ConnectInfo) feeds the console's login limit.
    serve::serve(listener, router(state), shutdown).await
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
        crate::report::render_stored(&body),
    )
        .into_response())
}

/// The layer in front of every mutating endpoint.
async fn require_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    authorize(&s, &headers).await?;
    Ok(next.run(request).await)
}

/// Check the bearer token of a mutating request.
async fn authorize(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let secrets = s.engine.runtime().await.secrets.clone();
    let Some(token) = &secrets.api_token else {
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
    body: Option<Json<TriggerBody>>,
) -> Result<Response, ApiError> {
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
    body: DecisionBody,
    verdict: ApprovalDecision,
) -> Result<Response, ApiError> {
    if body.approver.trim().is_empty() || body.approver.len() > 128 {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "approver must be 1-128 characters".into(),
        ));
    }
    let who = Approver::named(body.approver.trim());
    let recorded = s
        .engine
        .decide(id, &who, "api", verdict, &body.reason, None)
        .await?;
    Ok(decision_response(id, recorded))
}

fn decision_response(id: i64, recorded: Recorded) -> Response {
    let (code, result) = match recorded {
        Recorded::New => (StatusCode::OK, "recorded"),
        Recorded::Duplicate => (StatusCode::OK, "duplicate"),
        Recorded::Settled => (StatusCode::CONFLICT, "already_decided"),
        Recorded::Replayed => (StatusCode::UNAUTHORIZED, "replayed"),
    };
    (code, Json(json!({ "cycle": id, "result": result }))).into_response()
}

async fn approve(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<DecisionBody>,
) -> Result<Response, ApiError> {
    decide(s, id, body, ApprovalDecision::Approve).await
}

async fn reject(
    State(s): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<DecisionBody>,
) -> Result<Response, ApiError> {
    decide(s, id, body, ApprovalDecision::Reject).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// Version number to restore; `previous` when absent.
    to: Option<i64>,
    actor: String,
    #[serde(default)]
    reason: String,
}

fn check_actor(actor: &str) -> Result<(), ApiError> {
    if actor.trim().is_empty() || actor.len() > 128 {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "actor must be 1-128 characters (who is doing this)".into(),
        ));
    }
    Ok(())
}

async fn rollback(
    State(s): State<AppState>,
    Path(pipeline): Path<String>,
    Json(body): Json<RollbackBody>,
) -> Result<Response, ApiError> {
    check_actor(&body.actor)?;
    let v = s
        .engine
        .rollback(
            &pipeline,
            body.to,
            body.actor.trim(),
            &body.reason,
            crate::engine::RollbackCause::Manual,
        )
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({ "pipeline": pipeline, "champion": v.version })),
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldBody {
    /// One pipeline; all when absent.
    pipeline: Option<String>,
    actor: String,
    #[serde(default)]
    reason: String,
}

async fn freeze(
    State(s): State<AppState>,
    Json(body): Json<HoldBody>,
) -> Result<Response, ApiError> {
    check_actor(&body.actor)?;
    let new = s
        .engine
        .freeze(body.pipeline.as_deref(), body.actor.trim(), &body.reason)
        .await?;
    Ok(
        Json(json!({ "frozen": body.pipeline.as_deref().unwrap_or("*"), "new": new }))
            .into_response(),
    )
}

async fn resume(
    State(s): State<AppState>,
    Json(body): Json<HoldBody>,
) -> Result<Response, ApiError> {
    check_actor(&body.actor)?;
    let lifted = s
        .engine
        .resume(body.pipeline.as_deref(), body.actor.trim())
        .await?;
    Ok(
        Json(json!({ "resumed": body.pipeline.as_deref().unwrap_or("*"), "lifted": lifted }))
            .into_response(),
    )
}

/// The verifying secret of a signed endpoint, or 404 when the channel is not configured.
fn configured<'a>(secret: &'a Option<Arc<Secret>>, what: &str) -> Result<&'a Secret, ApiError> {
    secret
        .as_deref()
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("{what} is not configured")))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Slack's Approve / Reject buttons. The v0 signature is checked on the raw body before
/// anything is parsed; a replayed signature, a stale timestamp, a tampered body or a wrong
/// secret is 401, a user outside the pipeline's allow-list 403; none of them changes
/// anything.
async fn slack_interaction(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    use crate::approval::slack;
    let secrets = s.engine.runtime().await.secrets.clone();
    let secret = configured(
        &secrets.slack_signing_secret,
        "Slack ([slack] signing_secret_file)",
    )?;
    let now = chrono::Utc::now();
    let signature = header(&headers, "x-slack-signature");
    crate::signing::verify_slack(
        secret,
        header(&headers, "x-slack-request-timestamp"),
        signature,
        &body,
        now.timestamp(),
    )
    .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let store = s.engine.store();
    let i = slack::parse_interaction(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let c = store.cycle(i.cycle).await?.ok_or(ApiError(
        StatusCode::NOT_FOUND,
        format!("no cycle {}", i.cycle),
    ))?;
    let config = s.engine.config().await;
    let approvers = config
        .pipeline(&c.pipeline)
        .map(|p| p.approval.approvers.clone())
        .unwrap_or_default();
    let who = i.approver();
    if !crate::approval::allowed(&approvers, &who, false) {
        tracing::warn!(
            pipeline = c.pipeline,
            cycle = c.id,
            user = i.user_id,
            "Slack decision refused: user not in approval.approvers"
        );
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "Slack user {} is not in approval.approvers of `{}`",
                i.user_id, c.pipeline
            ),
        ));
    }
    let recorded = s
        .engine
        .decide(
            i.cycle,
            &who,
            "slack",
            i.decision,
            "Slack button",
            Some(signature.unwrap_or_default()),
        )
        .await;
    let recorded = match recorded {
        // Nothing to tell the Slack message: the decision it carried stands.
        Err(e @ EngineError::Replayed(_)) => return Err(e.into()),
        r => r,
    };
    let who = &who.name;
    let text = match &recorded {
        Ok(Recorded::New) => format!(
            "{} by {who} at {}",
            match i.decision {
                ApprovalDecision::Approve => "Approved",
                ApprovalDecision::Reject => "Rejected",
            },
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        Ok(Recorded::Duplicate) => format!("{who} already decided cycle {}", i.cycle),
        Ok(Recorded::Settled | Recorded::Replayed) => {
            format!("cycle {} already has its decision", i.cycle)
        }
        Err(e) => e.to_string(),
    };
    if let Some(url) = i.response_url.clone() {
        // Slack wants the 200 within 3 s: the message update goes out on its own.
        tokio::spawn(async move {
            if let Err(e) = slack::respond(&url, &text).await {
                tracing::warn!(error = %e, "cannot update the Slack message");
            }
        });
    }
    match recorded {
        Ok(r) => Ok(decision_response(i.cycle, r)),
        Err(e) => Err(e.into()),
    }
}

/// A decision over the signed webhook (Standard Webhooks headers, same secret as the
/// outgoing requests). Replays of a message id are refused.
async fn hook_approval(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let secrets = s.engine.runtime().await.secrets.clone();
    let secret = configured(&secrets.webhook_secret, "webhooks ([webhook] secret_file)")?;
    let now = chrono::Utc::now();
    let id = crate::signing::verify_webhook(
        secret,
        header(&headers, "webhook-id"),
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
        &body,
        now.timestamp(),
    )
    .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
    let d = crate::approval::webhook::parse_decision(&body)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let who = Approver::named(d.approver.trim());
    let recorded = s
        .engine
        .decide(d.cycle, &who, "webhook", d.decision, &d.reason, Some(&id))
        .await?;
    Ok(decision_response(d.cycle, recorded))
}
