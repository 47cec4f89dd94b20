//! One HTTP client module for every outgoing call: MLflow and Kubeflow (JSON APIs with a
//! bearer token), data downloads (http(s), and the CA of an S3-compatible endpoint), PromQL,
//! Slack, webhooks and the deploy hook.
//!
//! A client has a bounded timeout, follows no redirects, and trusts the system's roots plus
//! every certificate of a PEM bundle (`ca_file`: a server's issuer may come after the
//! server's own certificate). A failed request is told with its causes — an untrusted
//! certificate says which setting names the CA — and a non-2xx answer with its status and
//! the start of its body. URLs are never part of a transport error (they may carry tokens);
//! callers name what they called.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::secret::{Secret, SecretSource};

/// How much of an error answer's body an error keeps.
const BODY_KEPT: usize = 64 * 1024;

/// Why an HTTP call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The client could not be built, or the request not sent or read.
    #[error("{0}")]
    Transport(String),
    /// The server answered, but not with success.
    #[error("answered {status}: {body}")]
    Status { status: u16, body: String },
}

/// Every certificate in the PEM file at `path`; an error names the file.
fn ca_pem(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read CA file {}: {e}", path.display()))
}

fn no_certificate(path: &Path) -> String {
    format!(
        "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        path.display()
    )
}

/// The certificates of a CA bundle, for reqwest. Blocking.
pub fn ca_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    reqwest::Certificate::from_pem_bundle(&ca_pem(path)?)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| no_certificate(path))
}

/// The certificates of a CA bundle, for object_store (the S3 client). Blocking.
pub fn object_store_certificates(path: &Path) -> Result<Vec<object_store::Certificate>, String> {
    object_store::Certificate::from_pem_bundle(&ca_pem(path)?)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| no_certificate(path))
}

/// A client builder with `timeout` that also trusts the certificates in `ca_file`. Reads
/// the CA file (blocking, small).
fn builder(timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)));
    if let Some(ca) = ca_file {
        for cert in ca_certificates(ca)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// A client for APIs and downloads: `timeout`, the roots plus `ca_file`, redirects followed.
pub fn client(timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    builder(timeout, ca_file)?
        .build()
        .map_err(|e| e.to_string())
}

/// A client for notifications and hooks (Slack, webhooks, the deploy hook): `timeout`, and
/// no redirect to a place nobody configured.
pub fn sender(timeout: Duration) -> reqwest::Client {
    builder(timeout, None)
        .and_then(|b| {
            b.redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| e.to_string())
        })
        .unwrap_or_default()
}

/// A request error with its causes ("error sending request: … invalid peer certificate:
/// UnknownIssuer"), without the URL; an untrusted certificate adds that `ca_key` (when the
/// caller has such a setting) names the CA file.
pub fn describe(e: reqwest::Error, ca_key: Option<&str>) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    if let Some(ca_key) = ca_key.filter(|_| text.contains("certificate")) {
        text.push_str(&format!(
            " (if the server's certificate is signed by a private CA, set {ca_key} to that CA's PEM)"
        ));
    }
    text
}

/// Send `req` and read the answer: its body as text on success, an error with the status
/// and the start of the body otherwise.
pub async fn send(req: reqwest::RequestBuilder, ca_key: Option<&str>) -> Result<String, HttpError> {
    let resp = req
        .send()
        .await
        .map_err(|e| HttpError::Transport(describe(e, ca_key)))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| HttpError::Transport(describe(e, ca_key)))?;
    if !status.is_success() {
        return Err(HttpError::Status {
            status: status.as_u16(),
            body: text.chars().take(BODY_KEPT).collect(),
        });
    }
    Ok(text)
}

/// A JSON API at a base URL, with an optional bearer token (MLflow, Kubeflow).
pub struct JsonApi {
    base: String,
    http: reqwest::Client,
    token: Option<Secret>,
    /// The setting that names the CA file, for certificate errors.
    ca_key: &'static str,
}

impl JsonApi {
    /// A client for `base`; the token is read from its source now.
    pub fn new(
        base: &str,
        timeout: Duration,
        ca_file: Option<&Path>,
        token: Option<&SecretSource>,
        ca_key: &'static str,
    ) -> Result<JsonApi, HttpError> {
        let token = token
            .map(Secret::load)
            .transpose()
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        Ok(JsonApi {
            base: base.trim_end_matches('/').to_string(),
            http: client(timeout, ca_file).map_err(HttpError::Transport)?,
            token,
            ca_key,
        })
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `url` (absolute) with the bearer token.
    pub fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t.expose()),
            None => req,
        }
    }

    /// Call `path` with an optional JSON body; the answer as JSON (`null` when it is none).
    pub async fn call<Q: serde::Serialize + ?Sized>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        query: &Q,
    ) -> Result<Value, HttpError> {
        let mut req = self.request(method, &self.url(path)).query(query);
        if let Some(b) = body {
            req = req.json(b);
        }
        let text = send(req, Some(self.ca_key)).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Send a request built with [`JsonApi::request`].
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Result<String, HttpError> {
        send(req, Some(self.ca_key)).await
    }
}

/// POST a JSON body with extra headers (a signature) and an optional bearer token to `url`
/// (Slack, a webhook, the deploy hook); the answer as JSON (`null` when it is none). Errors
/// never show the URL, which may hold a token.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<Value, HttpError> {
    let mut req = client
        .post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .body(body);
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let text = send(req, None).await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let missing = client(Duration::from_secs(1), Some(&dir.path().join("nope.pem")));
        assert!(missing.unwrap_err().contains("nope.pem"));
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = client(Duration::from_secs(1), Some(&junk)).unwrap_err();
        assert!(
            e.contains("junk.pem") && e.contains("BEGIN CERTIFICATE"),
            "{e}"
        );
        assert!(
            object_store_certificates(&junk)
                .unwrap_err()
                .contains("junk.pem")
        );
        assert!(client(Duration::from_secs(1), None).is_ok());
    }
}
