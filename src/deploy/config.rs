//! `[pipeline.deploy]`: the post-deploy watch and the deploy hook — raw shape, defaults (here
//! and nowhere else) and validation.

use std::time::Duration;

use serde::Deserialize;

use crate::guards::OnFailure;
use crate::secret::SecretSource;
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[pipeline.deploy]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawDeploy {
    pub watch: Option<String>,
    pub watch_for: Option<String>,
    pub watch_interval: Option<String>,
    pub failure_limit: Option<i64>,
    pub watch_relative_threshold: Option<f64>,
    pub on_failure: Option<String>,
    pub hook_url: Option<String>,
    pub hook_secret_file: Option<String>,
    pub hook_secret_env: Option<String>,
    pub hook_timeout: Option<String>,
}

/// A signed HTTP deploy hook (`deploy.hook_url`).
#[derive(Debug, Clone)]
pub struct HookConfig {
    pub url: String,
    pub secret: Option<SecretSource>,
    pub timeout: Duration,
}

/// How a version is put in place and watched after.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    /// The post-deploy watch window (`deploy.watch_for`; 0 = no watch).
    pub watch: Duration,
    /// Time between two watch checks.
    pub watch_interval: Duration,
    /// Failed watch checks that trigger `on_failure`.
    pub failure_limit: usize,
    /// A watch check fails when the live metric is past this share of the previous
    /// champion's baseline (errors: baseline / share) and the drop is significant.
    pub watch_relative_threshold: f64,
    pub on_failure: OnFailure,
    pub hook: Option<HookConfig>,
}

/// The deploy hook's default timeout.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            watch: Duration::ZERO,
            watch_interval: Duration::from_secs(3600),
            failure_limit: 2,
            watch_relative_threshold: 0.98,
            on_failure: OnFailure::Rollback,
            hook: None,
        }
    }
}

impl DeployConfig {
    /// Validate `raw` (the checker is at `pipeline[i].deploy`).
    pub fn from_raw(raw: RawDeploy, files: Files, c: &mut Checker) -> DeployConfig {
        let d = DeployConfig::default();
        if raw.watch.is_some() && raw.watch_for.is_some() {
            c.problem(
                "watch",
                "set either watch_for or its older name watch, not both",
            );
        }
        let on_failure = c.choice(
            "on_failure",
            raw.on_failure.as_deref(),
            d.on_failure,
            |w| match w {
                "rollback" => Some(OnFailure::Rollback),
                "ask" => Some(OnFailure::Ask),
                _ => None,
            },
            |w| format!("`{w}` is not a policy; use \"rollback\" (default) or \"ask\""),
        );
        let hook = raw.hook_url.clone().map(|url| {
            c.url("hook_url", &url, "");
            HookConfig {
                url,
                secret: files.secret(
                    c,
                    "hook_secret",
                    &raw.hook_secret_file,
                    &raw.hook_secret_env,
                    None,
                ),
                timeout: c.duration("hook_timeout", &raw.hook_timeout, HOOK_TIMEOUT),
            }
        });
        let watch_interval = c.duration("watch_interval", &raw.watch_interval, d.watch_interval);
        if watch_interval.is_zero() {
            c.problem("watch_interval", "must be longer than 0s (e.g. \"1h\")");
        }
        DeployConfig {
            watch: c.duration("watch_for", &raw.watch_for.or(raw.watch), d.watch),
            watch_interval,
            failure_limit: c.positive("failure_limit", raw.failure_limit, d.failure_limit, 1000),
            watch_relative_threshold: c.fraction(
                "watch_relative_threshold",
                raw.watch_relative_threshold,
                d.watch_relative_threshold,
                true,
            ),
            on_failure,
            hook,
        }
    }
}
