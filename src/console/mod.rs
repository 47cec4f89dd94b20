//! The web console the daemon serves at `/`: server-rendered HTML (maud templates, checked
//! at compile time) that answers "why is this model serving?" — an overview of every
//! pipeline with its holds, a page per pipeline (timeline, versions, charts), per cycle (the
//! whole story in order) and per model version (metrics, card, lineage) — and forms for the
//! people allowed to act: approve, reject, rollback, freeze, resume. No JavaScript: every
//! page reads, and every form posts, with scripts off.
//!
//! Reading is behind the login unless `[server] console = "public"`; acting always is. A
//! login exchanges the API token for a session cookie ([`session`]); every form carries the
//! session's CSRF token; what a person does goes through the same engine calls as the API,
//! with the name they logged in under recorded as approver or actor and `console` as the
//! channel. Pages send a Content-Security-Policy that allows no script at all.
//!
//! The console must not write to the store except through the engine's actions, must not
//! print a secret (the token is compared and dropped), and never imports the server (the
//! server mounts the console's router).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::config::ConsoleAccess;
use crate::engine::{Engine, EngineError};
use crate::store::StoreError;

mod actions;
mod cycle;
mod layout;
mod login;
mod overview;
mod pipeline;
pub mod session;
pub mod svg;
mod version;

use session::{Session, Sessions};

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    engine: Engine,
    sessions: Arc<Sessions>,
}

/// Who is asking, as the console sees it.
pub(crate) struct Viewer {
    /// The session id and the session, when logged in.
    session: Option<(String, Session)>,
    /// Whether the daemon is reached over TLS (`server.public_url` is https, or the proxy
    /// in front says so): the cookie is then Secure.
    tls: bool,
}

impl Viewer {
    fn user(&self) -> Option<&str> {
        self.session.as_ref().map(|(_, s)| s.user.as_str())
    }

    fn csrf(&self) -> Option<&str> {
        self.session.as_ref().map(|(_, s)| s.csrf.as_str())
    }
}

/// A page that could not be shown: its status and a sentence, rendered as HTML (escaped).
pub(crate) struct PageError(StatusCode, String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout::page(
            "Error",
            None,
            maud::html! {
                h1 { "Error " (self.0.as_u16()) }
                p.error role="alert" { (self.1) }
                p { a href="/" { "Back to the overview" } }
            },
        );
        (self.0, Html(body.into_string())).into_response()
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        PageError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<EngineError> for PageError {
    fn from(e: EngineError) -> Self {
        let code = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        PageError(code, e.to_string())
    }
}

impl PageError {
    fn not_found(what: String) -> PageError {
        PageError(StatusCode::NOT_FOUND, what)
    }
}

/// The console's routes, with its state applied, for the server to merge.
pub fn router(engine: Engine) -> Router {
    let console = Console {
        engine,
        sessions: Arc::new(Sessions::default()),
    };
    Router::new()
        .route("/", get(overview::page))
        .route("/pipelines/{pipeline}", get(pipeline::page))
        .route(
            "/pipelines/{pipeline}/versions/{version}",
            get(version::page),
        )
        .route("/cycles/{id}", get(cycle::page))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/cycles/{id}/approve", post(actions::approve))
        .route("/cycles/{id}/reject", post(actions::reject))
        .route("/pipelines/{pipeline}/rollback", post(actions::rollback))
        .route("/pipelines/{pipeline}/freeze", post(actions::freeze))
        .route("/pipelines/{pipeline}/resume", post(actions::resume))
        .route("/console.css", get(layout::stylesheet))
        .layer(axum::middleware::from_fn_with_state(console.clone(), gate))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// Turn the console off (`console = "off"`: 404 for every console path) before anything
/// else runs.
async fn gate(
    axum::extract::State(c): axum::extract::State<Console>,
    request: Request,
    next: Next,
) -> Response {
    if c.engine.config().await.server.console == ConsoleAccess::Off {
        return PageError::not_found(
            "the console is off ([server] console = \"off\"); the JSON API is at /api/v1".into(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Headers on every console response: no script may run, no framing, no sniffing, no
/// caching of pages that may hold a CSRF token.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

impl Console {
    /// Who is asking: the session named by the request's cookie, if it is live.
    async fn viewer(&self, headers: &HeaderMap) -> Viewer {
        let session = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(session::cookie_value)
            .and_then(|id| {
                self.sessions
                    .get(id, Instant::now())
                    .map(|s| (id.to_string(), s))
            });
        let config = self.engine.config().await;
        let https_url = config
            .server
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let forwarded = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
        Viewer {
            session,
            tls: https_url || forwarded,
        }
    }

    /// The viewer, if they may read pages; otherwise the redirect to the login.
    async fn reader(&self, headers: &HeaderMap, here: &str) -> Result<Viewer, Response> {
        let viewer = self.viewer(headers).await;
        let public = self.engine.config().await.server.console == ConsoleAccess::Public;
        if viewer.session.is_some() || public {
            Ok(viewer)
        } else {
            Err(Redirect::to(&format!("/login?next={}", urlencoding(here))).into_response())
        }
    }
}

/// The client's address, for the login limit (the proxy's, behind one: the limit is then
/// shared by everyone behind it, which errs on the safe side).
fn client(request_extensions: &axum::http::Extensions) -> IpAddr {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// Percent-encode a local path for a query parameter.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A `next` target that stays on this site: a path, never `//host` or a URL.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(local_path(Some("/cycles/4")), "/cycles/4");
        assert_eq!(local_path(Some("//evil.example/x")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
        assert_eq!(urlencoding("/pipelines/a b?x"), "/pipelines/a%20b%3Fx");
    }
}
