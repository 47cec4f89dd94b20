//! The console's forms: approve, reject, rollback, freeze, resume. Each needs a live
//! session and that session's CSRF token, or it is refused and changes nothing; each goes
//! through the same engine call as the API, with the logged-in name as approver or actor
//! and `console` as the approval channel; each answers with a redirect back to the page it
//! came from (post/redirect/get).

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Console, PageError};
use crate::approval::{ApprovalDecision, Approver};
use crate::engine::RollbackCause;

/// What every form carries.
#[derive(Debug, Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    /// Rollback only: the version to restore (empty: `previous`).
    #[serde(default)]
    to: String,
}

impl Console {
    /// The acting person's name, if the request has a live session and its CSRF token.
    async fn actor(&self, headers: &HeaderMap, form: &ActionForm) -> Result<String, PageError> {
        let viewer = self.viewer(headers).await;
        let Some((_, session)) = viewer.session else {
            return Err(PageError(
                StatusCode::UNAUTHORIZED,
                "log in first: acting needs a session (nothing was changed)".into(),
            ));
        };
        if !session.csrf_matches(&form.csrf) {
            tracing::warn!(
                user = session.user,
                "console action refused: wrong CSRF token"
            );
            return Err(PageError(
                StatusCode::FORBIDDEN,
                "this form is stale or was not sent by this console (CSRF token mismatch); reload the page and try again (nothing was changed)".into(),
            ));
        }
        Ok(session.user)
    }
}

/// The redirect back to a pipeline's page.
fn back_to(pipeline: &str) -> Response {
    Redirect::to(&format!("/pipelines/{}", super::urlencoding(pipeline))).into_response()
}

/// The reason as typed, bounded.
fn reason(form: &ActionForm) -> Result<&str, PageError> {
    let r = form.reason.trim();
    if r.len() > 1000 {
        return Err(PageError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the reason is longer than 1000 characters".into(),
        ));
    }
    Ok(r)
}

async fn decide(
    c: Console,
    headers: HeaderMap,
    id: i64,
    form: ActionForm,
    verdict: ApprovalDecision,
) -> Result<Response, PageError> {
    let user = c.actor(&headers, &form).await?;
    let reason = reason(&form)?;
    c.engine
        .decide(
            id,
            &Approver::named(&user),
            "console",
            verdict,
            reason,
            None,
        )
        .await?;
    Ok(Redirect::to(&format!("/cycles/{id}")).into_response())
}

/// `POST /cycles/{id}/approve`.
pub(crate) async fn approve(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    decide(c, headers, id, form, ApprovalDecision::Approve).await
}

/// `POST /cycles/{id}/reject`.
pub(crate) async fn reject(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    decide(c, headers, id, form, ApprovalDecision::Reject).await
}

/// `POST /pipelines/{p}/rollback`.
pub(crate) async fn rollback(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(pipeline): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    let user = c.actor(&headers, &form).await?;
    let to = match form.to.trim() {
        "" => None,
        t => Some(t.trim_start_matches('v').parse::<i64>().map_err(|_| {
            PageError(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("version `{t}` is not a number; leave it empty for the previous champion"),
            )
        })?),
    };
    c.engine
        .rollback(&pipeline, to, &user, reason(&form)?, RollbackCause::Manual)
        .await?;
    Ok(back_to(&pipeline))
}

/// `POST /pipelines/{p}/freeze`.
pub(crate) async fn freeze(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(pipeline): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    let user = c.actor(&headers, &form).await?;
    c.engine
        .freeze(Some(&pipeline), &user, reason(&form)?)
        .await?;
    Ok(back_to(&pipeline))
}

/// `POST /pipelines/{p}/resume`.
pub(crate) async fn resume(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(pipeline): Path<String>,
    Form(form): Form<ActionForm>,
) -> Result<Response, PageError> {
    let user = c.actor(&headers, &form).await?;
    c.engine.resume(Some(&pipeline), &user).await?;
    Ok(back_to(&pipeline))
}
