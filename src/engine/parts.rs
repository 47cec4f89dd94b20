//! The pluggable parts of a cycle, chosen per pipeline from the configuration by one
//! mechanism: how drift is detected, which trainer trains (burn, a command, a Kubeflow run),
//! how a stored model is loaded for scoring, which channels carry approval requests and
//! notices (the log, Slack, the signed webhook), and which targets a deploy goes through
//! (the `current` symlink, the signed hook). The server's secrets are read here too.
//!
//! A [`PartsFactory`] builds a [`Runtime`] — the configuration with every part built from
//! it — at start and again on every reload, so a `[slack]` section added by a reload posts
//! the next request and every secret is read again. Tests build the same runtime and swap
//! a part for a fake.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::approval::{ApprovalChannel, LogChannel};
use crate::config::{Config, Pipeline};
use crate::deploy::{CurrentSymlink, DeployTarget, HttpHook};
use crate::drift::{Detector, StatisticalDetector};
use crate::secret::{Secret, SecretError, SecretSource};
use crate::train::burn::BurnTrainer;
use crate::train::command::CommandTrainer;
use crate::train::kfp::KfpTrainer;
use crate::train::{Backend, Predictor, TrainError, Trainer};

/// How a stored model directory becomes something that scores a table. Blocking.
pub trait ModelLoader: Send + Sync {
    fn load(&self, dir: &Path) -> Result<Box<dyn Predictor>, TrainError>;
}

/// Models as they are stored: loaded by the format their card names.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoredModels;

impl ModelLoader for StoredModels {
    fn load(&self, dir: &Path) -> Result<Box<dyn Predictor>, TrainError> {
        crate::train::load_predictor(dir)
    }
}

/// One pipeline's parts.
#[derive(Clone)]
pub struct Parts {
    pub detector: Arc<dyn Detector>,
    pub trainer: Arc<dyn Trainer>,
    pub models: Arc<dyn ModelLoader>,
    /// Where approval requests and notices go, in order (the log first).
    pub channels: Vec<Arc<dyn ApprovalChannel>>,
    /// Where a deployed version is put in place, in order.
    pub targets: Vec<Arc<dyn DeployTarget>>,
}

/// The secrets the HTTP server checks requests with.
#[derive(Clone, Default)]
pub struct ServerSecrets {
    /// The bearer token of mutating calls (none: they are disabled).
    pub api_token: Option<Arc<Secret>>,
    /// Verifies `/slack/interactions` (none: the endpoint answers 404).
    pub slack_signing_secret: Option<Arc<Secret>>,
    /// Verifies `/hooks/approval` (none: the endpoint answers 404).
    pub webhook_secret: Option<Arc<Secret>>,
}

/// A configuration with every part built from it.
#[derive(Clone)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// Each pipeline's parts, by name.
    pub pipelines: BTreeMap<String, Arc<Parts>>,
    /// The channels every pipeline shares (notices about all pipelines go here).
    pub channels: Vec<Arc<dyn ApprovalChannel>>,
    pub secrets: ServerSecrets,
}

impl Runtime {
    /// Build every part from `config`, reading the secrets now.
    pub fn from_config(config: &Arc<Config>) -> Result<Runtime, PartsError> {
        let channels = channels(config)?;
        let mut pipelines = BTreeMap::new();
        for p in &config.pipelines {
            let parts = pipeline_parts(p, &channels)?;
            pipelines.insert(p.name.clone(), Arc::new(parts));
        }
        Ok(Runtime {
            config: config.clone(),
            pipelines,
            channels,
            secrets: server_secrets(config)?,
        })
    }

    /// The parts of `pipeline`, if it is configured.
    pub fn parts(&self, pipeline: &str) -> Option<Arc<Parts>> {
        self.pipelines.get(pipeline).cloned()
    }

    /// Change one pipeline's parts (tests put fakes in).
    pub fn replace(&mut self, pipeline: &str, change: impl FnOnce(&mut Parts)) {
        if let Some(parts) = self.pipelines.get_mut(pipeline) {
            change(Arc::make_mut(parts));
        }
    }
}

/// Builds a runtime from a configuration.
pub trait PartsFactory: Send + Sync {
    fn build(&self, config: &Arc<Config>) -> Result<Runtime, PartsError>;
}

/// The daemon's factory: every part as the configuration says.
#[derive(Debug, Default, Clone, Copy)]
pub struct FromConfig;

impl PartsFactory for FromConfig {
    fn build(&self, config: &Arc<Config>) -> Result<Runtime, PartsError> {
        Runtime::from_config(config)
    }
}

impl<F> PartsFactory for F
where
    F: Fn(&Arc<Config>) -> Result<Runtime, PartsError> + Send + Sync,
{
    fn build(&self, config: &Arc<Config>) -> Result<Runtime, PartsError> {
        self(config)
    }
}

/// A part that could not be built: the secret behind `key` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PartsError {
    pub key: String,
    pub message: String,
}

fn load(key: &str, source: &SecretSource) -> Result<Secret, PartsError> {
    Secret::load(source).map_err(|e: SecretError| PartsError {
        key: key.to_string(),
        message: e.to_string(),
    })
}

fn load_opt(key: &str, source: Option<&SecretSource>) -> Result<Option<Secret>, PartsError> {
    source.map(|s| load(key, s)).transpose()
}

/// The log channel always; Slack and the signed webhook when configured.
fn channels(config: &Config) -> Result<Vec<Arc<dyn ApprovalChannel>>, PartsError> {
    let mut out: Vec<Arc<dyn ApprovalChannel>> = vec![Arc::new(LogChannel)];
    if let Some(s) = &config.slack {
        out.push(Arc::new(crate::approval::slack::Slack::new(
            s.api_url.clone(),
            s.channel.clone(),
            load_opt("slack.bot_token", s.bot_token.as_ref())?,
            load_opt("slack.incoming_webhook", s.incoming_webhook.as_ref())?,
        )));
    }
    if let Some(w) = &config.webhook
        && let Some(url) = &w.url
    {
        out.push(Arc::new(crate::approval::webhook::Webhook::new(
            url.clone(),
            load("webhook.secret", &w.secret)?,
            w.timeout,
        )));
    }
    Ok(out)
}

/// The trainer of the pipeline's backend (each holds its own settings).
fn trainer(p: &Pipeline) -> Arc<dyn Trainer> {
    match (&p.train.backend, &p.train.command, &p.train.kfp) {
        (Backend::Command, Some(cmd), _) => Arc::new(CommandTrainer {
            config: cmd.clone(),
        }),
        (Backend::Kfp, _, Some(kfp)) => Arc::new(KfpTrainer {
            config: kfp.clone(),
            s3: p.data.s3.clone(),
        }),
        _ => Arc::new(BurnTrainer {
            config: p.train.burn.clone(),
        }),
    }
}

fn pipeline_parts(
    p: &Pipeline,
    channels: &[Arc<dyn ApprovalChannel>],
) -> Result<Parts, PartsError> {
    let mut targets: Vec<Arc<dyn DeployTarget>> = vec![Arc::new(CurrentSymlink)];
    if let Some(h) = &p.deploy.hook {
        targets.push(Arc::new(HttpHook {
            url: h.url.clone(),
            secret: h.secret.clone(),
            timeout: h.timeout,
        }));
    }
    Ok(Parts {
        detector: Arc::new(StatisticalDetector),
        trainer: trainer(p),
        models: Arc::new(StoredModels),
        channels: channels.to_vec(),
        targets,
    })
}

/// The server's secrets, read now.
fn server_secrets(config: &Config) -> Result<ServerSecrets, PartsError> {
    let arc = |s: Option<Secret>| s.map(Arc::new);
    Ok(ServerSecrets {
        api_token: arc(load_opt(
            "server.api_token",
            config.server.api_token.as_ref(),
        )?),
        slack_signing_secret: arc(load_opt(
            "slack.signing_secret",
            config
                .slack
                .as_ref()
                .and_then(|s| s.signing_secret.as_ref()),
        )?),
        webhook_secret: arc(load_opt(
            "webhook.secret",
            config.webhook.as_ref().map(|w| &w.secret),
        )?),
    })
}
