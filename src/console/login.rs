//! `GET/POST /login` and `POST /logout`: the API token (or nothing) in exchange for a
//! session; the name given is who the console records as approver or actor.

use std::time::Instant;

use axum::Form;
use axum::extract::{FromRequest as _, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{Console, layout, local_path, session};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

/// The login page, with an optional error sentence.
fn login_page(next: &str, error: Option<&str>) -> Html<String> {
    let body = html! {
        h1 { "Log in" }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        p.muted { "Use the daemon's API token (server.api_token_file). Your name is recorded with every approval, rejection, rollback, freeze and resume you make." }
        form.action.login method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label for="user" { "Your name" }
            input id="user" type="text" name="user" autocomplete="username" required maxlength="128";
            label for="token" { "API token" }
            input id="token" type="password" name="token" autocomplete="current-password" required;
            button.primary type="submit" { "Log in" }
        }
    };
    Html(layout::page("Log in", None, body).into_string())
}

/// `GET /login`.
pub(crate) async fn form(Query(q): Query<Next>) -> Html<String> {
    login_page(local_path(q.next.as_deref()), None)
}

#[derive(Debug, Deserialize)]
pub(crate) struct Login {
    user: String,
    token: String,
    next: Option<String>,
}

/// `POST /login`: a throttled client is refused before its token is looked at; a wrong
/// token counts against it.
pub(crate) async fn submit(
    State(c): State<Console>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let client = super::client(request.extensions());
    let Ok(Form(login)) = Form::<Login>::from_request(request, &()).await else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            login_page("/", Some("send the form's fields: user, token")),
        )
            .into_response();
    };
    let next = local_path(login.next.as_deref());
    let now = Instant::now();
    if let Err(t) = c.sessions.may_try(client, now) {
        let text = format!(
            "too many failed logins from your address; try again in {} s",
            t.retry_after
        );
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, t.retry_after.to_string())],
            login_page(next, Some(&text)),
        )
            .into_response();
    }
    let user = login.user.trim();
    if user.is_empty() || user.len() > 128 {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            login_page(next, Some("your name must be 1-128 characters")),
        )
            .into_response();
    }
    let secrets = c.engine.runtime().await.secrets.clone();
    let Some(token) = &secrets.api_token else {
        return (
            StatusCode::FORBIDDEN,
            login_page(
                next,
                Some(
                    "logins are disabled: set server.api_token_file (or api_token_env) and restart",
                ),
            ),
        )
            .into_response();
    };
    if !token.matches(&login.token) {
        c.sessions.failed(client, now);
        tracing::warn!(%client, "console login refused: wrong token");
        return (
            StatusCode::UNAUTHORIZED,
            login_page(next, Some("wrong token")),
        )
            .into_response();
    }
    let (id, _) = c.sessions.open(user, now);
    let secure = c.viewer(&headers).await.tls;
    tracing::info!(user, "console login");
    (
        [(header::SET_COOKIE, session::set_cookie(Some(&id), secure))],
        Redirect::to(next),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct Logout {
    csrf: String,
}

/// `POST /logout`.
pub(crate) async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(form): Form<Logout>,
) -> Response {
    let viewer = c.viewer(&headers).await;
    if let Some((id, s)) = &viewer.session
        && s.csrf_matches(&form.csrf)
    {
        c.sessions.close(id);
    }
    (
        [(header::SET_COOKIE, session::set_cookie(None, viewer.tls))],
        Redirect::to("/login"),
    )
        .into_response()
}
