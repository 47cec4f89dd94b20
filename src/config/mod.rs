//! Configuration: reads the TOML file, applies environment overrides, and assembles the
//! validated [`Config`] from the sections the rest of the daemon owns.
//!
//! Loading is two-phase, as in ripgrep: the file is parsed into raw structs that mirror the
//! TOML exactly (every field optional; each section's raw struct lives beside the module
//! that uses the section: `drift::RawDrift`, `gate::RawGate` …), then each section turns
//! its raw values into typed ones, and *every* problem is collected at once — unknown keys,
//! bad cron expressions, bad durations, missing files, out-of-range thresholds — each naming
//! its key path and the fix ([`crate::validate`]). This module states no default of its own
//! and never reads secrets' contents ([`crate::secret`] does that when parts are built).

mod daemon;
mod pipeline;
mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use daemon::{DaemonConfig, RawDaemon};
pub use pipeline::Pipeline;
pub use server::{ConsoleAccess, DEFAULT_LISTEN, RawServer, ServerConfig};

use crate::approval::slack::{RawSlack, SlackConfig};
use crate::approval::webhook::{RawWebhook, WebhookConfig};
use crate::store::{RawStore, StoreConfig};
use crate::validate::Checker;
pub use crate::validate::Problem;
use crate::validate::files::Files;

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
    #[error("{path}: {} problem(s):\n{}", problems.len(), Problems(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// Problems, one per line.
struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|p| format!("  - {p}")).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// The file as written: every section's raw shape.
#[derive(Debug, Default, Deserialize)]
struct RawConfig {
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    pipeline: Vec<pipeline::RawPipeline>,
    slack: Option<RawSlack>,
    webhook: Option<RawWebhook>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// File the configuration was read from (relative data paths resolve against its folder).
    pub source: PathBuf,
    pub daemon: DaemonConfig,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub pipelines: Vec<Pipeline>,
    /// The Slack app (approval requests with buttons, or an incoming webhook), when set.
    pub slack: Option<SlackConfig>,
    /// The generic signed webhook (outgoing requests and notices, incoming decisions).
    pub webhook: Option<WebhookConfig>,
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
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let mut value: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut problems = apply_env_overrides(&mut value, env);
        let mut unknown = Vec::new();
        let parsed: Result<RawConfig, _> = {
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
                return Err(invalid(problems));
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
        let files = Files {
            base: &base,
            env: &env_lookup,
        };
        let config = assemble(raw, path, files, &mut Checker::new(&mut problems));
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(invalid(problems))
        }
    }

    /// Find a pipeline by name.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == name)
    }
}

/// Every section, validated in turn.
fn assemble(raw: RawConfig, source: &Path, files: Files, c: &mut Checker) -> Config {
    let daemon = DaemonConfig::from_raw(raw.daemon, files, &mut c.section("daemon"));
    let server = ServerConfig::from_raw(raw.server, files, &mut c.section("server"));
    let slack = raw
        .slack
        .map(|r| SlackConfig::from_raw(r, files, &mut c.section("slack")));
    let webhook = raw
        .webhook
        .and_then(|r| WebhookConfig::from_raw(r, files, &mut c.section("webhook")));
    let store = StoreConfig::from_raw(raw.store, &daemon.state_dir, &mut c.section("store"));
    let pipelines = pipeline::assemble_all(raw.pipeline, slack.is_some(), files, c);
    Config {
        source: source.to_path_buf(),
        daemon,
        server,
        store,
        pipelines,
        slack,
        webhook,
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
    let mut c = Checker::new(&mut problems);
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("RETRAIND_") else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if !["daemon", "server", "store"].contains(&section.as_str()) {
            c.problem(
                &format!("{section}.{key}"),
                format!(
                    "environment variable {name} overrides an unknown section (use RETRAIND_DAEMON__…, RETRAIND_SERVER__… or RETRAIND_STORE__…)"
                ),
            );
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
            None => c.problem(
                &section,
                format!("must be a table to accept the override from {name}"),
            ),
        }
    }
    problems
}
