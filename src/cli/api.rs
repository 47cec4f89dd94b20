//! The commands that ask the running daemon (trigger, approve, reject, rollback, freeze,
//! resume): a POST to its API with the configured bearer token, the reply printed.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::config::Config;
use crate::secret::Secret;

/// POST to the running daemon's API with the configured bearer token; print the JSON reply.
pub(super) async fn post(
    config_path: &Path,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let Some(source) = &config.server.api_token else {
        bail!(
            "no API token configured: set server.api_token_file in {} (the daemon needs it too)",
            config_path.display()
        );
    };
    let token = Secret::load(source)?;
    let url = format!("http://{}{path}", config.server.listen);
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.expose())
        .json(&body)
        .send()
        .await
        .with_context(|| format!("cannot reach the daemon at {url}: is `retraind run` running?"))?;
    let code = response.status();
    let text = response.text().await.unwrap_or_default();
    out!("{text}");
    Ok(if code.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
