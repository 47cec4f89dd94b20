//! The command line (clap): argument definitions and each command's implementation.
//! `status` and `history` read the store directly (they work while the daemon is down);
//! `trigger`, `approve` and `reject` call the running daemon's API with the configured token.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};
use crate::secret::Secret;
use crate::status;
use crate::store::Store;
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "retraind",
    version,
    about = "Continuous-training daemon: drift checks, guarded retraining, approval, deploy and rollback"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "RETRAIND_CONFIG",
        default_value = "/etc/retraind/retraind.toml"
    )]
    pub config: PathBuf,
    /// Log format: auto = text on a terminal, JSON otherwise.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    /// Log level (RUST_LOG overrides). Default: info; warn for `demo`, which prints its own story.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (scheduler, cycles, HTTP server) until SIGTERM.
    Run,
    /// Run the whole loop on generated data with embedded defaults.
    Demo {
        /// Folder for the demo's data, config and state.
        #[arg(long, default_value = "demo")]
        dir: PathBuf,
        /// Keep serving /metrics and the API after the demo, until Ctrl-C.
        #[arg(long)]
        keep_running: bool,
    },
    /// Start a cycle of a pipeline now (asks the running daemon).
    Trigger {
        pipeline: String,
        /// The cycle's day, YYYY-MM-DD (default: today in the pipeline's timezone).
        #[arg(long)]
        date: Option<String>,
    },
    /// Show each pipeline's champion, cycle in flight and last outcome.
    Status {
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List recent cycles, newest first.
    History {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List a pipeline's model versions, newest first, with aliases, metrics and lineage.
    Models {
        /// Pipeline (default: the only one configured).
        pipeline: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show a model version and its ancestors: data, parent, trigger, config, metrics.
    Lineage {
        version: i64,
        /// Pipeline (default: the only one configured).
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Score a data file with a stored model; writes CSV (row, prediction, probabilities).
    Predict {
        /// Version number, or an alias: champion, previous.
        #[arg(long)]
        model: String,
        /// Data to score: a path, a glob, an http(s):// URL or s3://bucket/key.
        #[arg(long)]
        input: String,
        /// Pipeline (default: the only one configured).
        #[arg(long)]
        pipeline: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Approve a cycle awaiting approval.
    Approve {
        cycle: i64,
        #[arg(long, env = "USER")]
        approver: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Reject a cycle awaiting approval.
    Reject {
        cycle: i64,
        #[arg(long, env = "USER")]
        approver: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Roll a pipeline's champion back to `previous` (or --to a version), through the
    /// deploy targets (asks the running daemon).
    Rollback {
        pipeline: String,
        /// Version number to restore (default: the `previous` alias).
        #[arg(long)]
        to: Option<i64>,
        #[arg(long, env = "USER")]
        actor: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stop retrains and deploys of one pipeline, or of all (kill switch), until `resume`.
    Freeze {
        /// Pipeline (default: every pipeline).
        pipeline: Option<String>,
        #[arg(long, env = "USER")]
        actor: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a freeze or a circuit-breaker pause.
    Resume {
        /// Pipeline (default: the global freeze).
        pipeline: Option<String>,
        #[arg(long, env = "USER")]
        actor: String,
    },
    /// Compare two data files and report drift and data quality (no daemon, no config).
    /// Exit status: 0 no drift, 3 dataset drift, 4 quality failure, 1 error.
    Check(CheckArgs),
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file and report every problem.
    Check {
        /// File to check (default: --config).
        file: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Reference data (CSV, Parquet or NDJSON): a path, a glob, an http(s):// URL or
    /// s3://bucket/key (credentials from the AWS_* variables).
    #[arg(long)]
    pub reference: String,
    /// Current window, in the same forms.
    #[arg(long)]
    pub current: String,
    /// Drift method for every feature: auto, ks, chi2, z_test, psi, wasserstein, js.
    #[arg(long, default_value = "auto")]
    pub method: String,
    /// Correction across features: bh, bonferroni, none.
    #[arg(long, default_value = "bh")]
    pub correction: String,
    /// Categorical columns (default: text and boolean columns).
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Columns to leave out.
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// Label column (left out of the drift tests).
    #[arg(long, default_value = "target")]
    pub target: String,
    /// Significance level after correction.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Below this many rows in either file the result is insufficient data.
    #[arg(long, default_value_t = 50)]
    pub min_rows: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Output of `retraind check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
    /// A self-contained page with a histogram per feature.
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Run the parsed command line.
pub async fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    let default_level = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "info",
    };
    telemetry::init(
        cli.log_format,
        cli.log_level.as_deref().unwrap_or(default_level),
    );
    match cli.command {
        Command::Run => crate::daemon::run(cli.config)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Demo { dir, keep_running } => crate::demo::run(&dir, keep_running)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Check(args) => check_cmd(args).await,
        Command::Version => {
            out!("retraind {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(config_check(file.as_deref().unwrap_or(&cli.config))),
        Command::Status { format } => status_cmd(&cli.config, format).await,
        Command::History {
            pipeline,
            limit,
            format,
        } => history_cmd(&cli.config, pipeline.as_deref(), limit, format).await,
        Command::Models { pipeline, format } => {
            models_cmd(&cli.config, pipeline.as_deref(), format).await
        }
        Command::Lineage {
            version,
            pipeline,
            format,
        } => lineage_cmd(&cli.config, version, pipeline.as_deref(), format).await,
        Command::Predict {
            model,
            input,
            pipeline,
            output,
        } => {
            predict_cmd(
                &cli.config,
                &model,
                &input,
                pipeline.as_deref(),
                output.as_deref(),
            )
            .await
        }
        Command::Trigger { pipeline, date } => {
            let body = serde_json::json!({ "date": date });
            api_post(
                &cli.config,
                &format!("/api/v1/pipelines/{pipeline}/trigger"),
                body,
            )
            .await
        }
        Command::Approve {
            cycle,
            approver,
            reason,
        } => {
            let body = serde_json::json!({ "approver": approver, "reason": reason });
            api_post(
                &cli.config,
                &format!("/api/v1/cycles/{cycle}/approve"),
                body,
            )
            .await
        }
        Command::Reject {
            cycle,
            approver,
            reason,
        } => {
            let body = serde_json::json!({ "approver": approver, "reason": reason });
            api_post(&cli.config, &format!("/api/v1/cycles/{cycle}/reject"), body).await
        }
        Command::Rollback {
            pipeline,
            to,
            actor,
            reason,
        } => {
            let body = serde_json::json!({ "to": to, "actor": actor, "reason": reason });
            api_post(
                &cli.config,
                &format!("/api/v1/pipelines/{pipeline}/rollback"),
                body,
            )
            .await
        }
        Command::Freeze {
            pipeline,
            actor,
            reason,
        } => {
            let body =
                serde_json::json!({ "pipeline": pipeline, "actor": actor, "reason": reason });
            api_post(&cli.config, "/api/v1/freeze", body).await
        }
        Command::Resume { pipeline, actor } => {
            let body = serde_json::json!({ "pipeline": pipeline, "actor": actor });
            api_post(&cli.config, "/api/v1/resume", body).await
        }
    }
}

fn config_check(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            out!("{}: OK ({} pipeline(s))", path.display(), c.pipelines.len());
            for p in &c.pipelines {
                let next = p
                    .schedule
                    .next_after(chrono::Utc::now())
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default();
                out!(
                    "  {}: schedule `{}` ({}), next {next}",
                    p.name,
                    p.schedule.expression(),
                    p.schedule.timezone()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e @ ConfigError::Invalid { .. })
        | Err(e @ ConfigError::Syntax { .. })
        | Err(e @ ConfigError::Read { .. }) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::connect(&config.store.url, 2)
        .await
        .with_context(|| format!("opening the store {}", config.store.redacted_url()))
}

async fn status_cmd(config_path: &Path, format: Format) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = open_store(&config).await?;
    let rows = status::pipelines(&store, &config).await?;
    match format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            for p in &rows {
                let champ = p
                    .champion
                    .as_ref()
                    .map(|v| {
                        format!(
                            "v{} ({} {:.3})",
                            v.version,
                            v.metric.name(),
                            v.holdout.unwrap_or(f64::NAN)
                        )
                    })
                    .unwrap_or_else(|| "none".into());
                out!("{}  champion {champ}", p.name);
                if let Some(c) = &p.active_cycle {
                    out!(
                        "  in flight: cycle {} {} — {}",
                        c.id,
                        c.state,
                        c.reason.as_deref().unwrap_or("")
                    );
                }
                if let Some(c) = &p.last_cycle {
                    let outcome = c.outcome.map(|o| o.as_str()).unwrap_or("-");
                    out!(
                        "  last: cycle {} {outcome} — {}",
                        c.id,
                        c.reason.as_deref().unwrap_or("")
                    );
                }
                if let Some(t) = p.next_scheduled_at {
                    out!("  next check: {}", t.to_rfc3339());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The named pipeline, or the only configured one.
fn pick_pipeline<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> anyhow::Result<&'a crate::config::Pipeline> {
    match name {
        Some(n) => config
            .pipelines
            .iter()
            .find(|p| p.name == n)
            .ok_or_else(|| anyhow::anyhow!("no pipeline `{n}` in {}", config.source.display())),
        None => match config.pipelines.as_slice() {
            [only] => Ok(only),
            many => anyhow::bail!(
                "{} pipelines are configured ({}); name one with --pipeline",
                many.len(),
                many.iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

fn metric_text(m: &serde_json::Value, key: &str) -> String {
    m[key]
        .as_f64()
        .map(|v| format!("{v:.3}"))
        .unwrap_or_else(|| "-".into())
}

/// The key of `metric` on the validation split in a model's metrics (burn stores weighted F1
/// as `valid_f1`).
fn valid_key(metric: crate::performance::Metric) -> String {
    match metric {
        crate::performance::Metric::F1Weighted => "valid_f1".to_string(),
        m => format!("valid_{}", m.name()),
    }
}

/// The chosen pipeline's name, its gate metric and its model versions, newest first.
async fn pipeline_models(
    config_path: &Path,
    pipeline: Option<&str>,
) -> anyhow::Result<(String, crate::performance::Metric, Vec<status::ModelEntry>)> {
    let config = Config::load(config_path)?;
    let p = pick_pipeline(&config, pipeline)?;
    let store = open_store(&config).await?;
    Ok((
        p.name.clone(),
        p.gate.metric,
        status::models(&store, &p.name).await?,
    ))
}

async fn models_cmd(
    config_path: &Path,
    pipeline: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let (_, metric, rows) = pipeline_models(config_path, pipeline).await?;
    let (holdout, valid) = (format!("holdout_{}", metric.name()), valid_key(metric));
    match format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            out!(
                "{:>7}  {:<18} {:>6}  {:>9} {:>9} {:>7}  {:<20} created",
                "version",
                "aliases",
                "cycle",
                // The gate metric, on the holdout and on the validation split.
                format!("{}/hold", metric.name()),
                "valid",
                "parent",
                "gate"
            );
            for m in &rows {
                let gate = match &m.gate {
                    Some(g) if g["blessed"].as_bool() == Some(true) => "blessed".to_string(),
                    Some(_) => "rejected".to_string(),
                    None => "-".to_string(),
                };
                out!(
                    "{:>7}  {:<18} {:>6}  {:>9} {:>9} {:>7}  {:<20} {}",
                    format!("v{}", m.version),
                    m.aliases.join(","),
                    m.cycle,
                    metric_text(&m.metrics, &holdout),
                    metric_text(&m.metrics, &valid),
                    m.lineage["parent_version"]
                        .as_i64()
                        .map(|v| format!("v{v}"))
                        .unwrap_or_else(|| "-".into()),
                    gate,
                    m.created_at.to_rfc3339()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn lineage_cmd(
    config_path: &Path,
    version: i64,
    pipeline: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let (name, metric, models) = pipeline_models(config_path, pipeline).await?;
    let chain = status::lineage(&models, version);
    anyhow::ensure!(
        !chain.is_empty(),
        "pipeline `{name}` has no version {version}; `retraind models` lists them"
    );
    match format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&chain)?),
        Format::Text => {
            for m in chain {
                let l = &m.lineage;
                out!(
                    "v{} (cycle {}, {}){}",
                    m.version,
                    m.cycle,
                    m.created_at.to_rfc3339(),
                    if m.aliases.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", m.aliases.join(", "))
                    }
                );
                out!(
                    "  backend        {}",
                    l["backend"].as_str().unwrap_or("burn")
                );
                out!(
                    "  trained on     {} ({} rows, blake3 {})",
                    l["training_data"]["path"].as_str().unwrap_or("-"),
                    l["training_data"]["rows"].as_u64().unwrap_or(0),
                    l["training_data"]["blake3"]
                        .as_str()
                        .map(|h| &h[..h.len().min(12)])
                        .unwrap_or("-")
                );
                for key in ["reference", "current"] {
                    let f = &l["inputs"][key];
                    if f.is_object() {
                        out!(
                            "  {key:<14} {} ({} rows, blake3 {}){}",
                            f["path"].as_str().unwrap_or("-"),
                            f["rows"].as_u64().unwrap_or(0),
                            f["blake3"]
                                .as_str()
                                .map(|h| &h[..h.len().min(12)])
                                .unwrap_or("-"),
                            l["dvc"][key]
                                .as_str()
                                .map(|m| format!(", dvc md5 {m}"))
                                .unwrap_or_default()
                        );
                    }
                }
                out!(
                    "  trigger        report of cycle {}",
                    l["trigger_cycle"].as_i64().unwrap_or(m.cycle)
                );
                out!(
                    "  config         {}",
                    l["config_hash"].as_str().unwrap_or("-")
                );
                out!(
                    "  metrics        holdout {m_} {}, validation {m_} {}",
                    metric_text(&m.metrics, &format!("holdout_{}", metric.name())),
                    metric_text(&m.metrics, &valid_key(metric)),
                    m_ = metric.name()
                );
                match l["parent_version"].as_i64() {
                    Some(v) => out!("  parent         v{v}"),
                    None => out!("  parent         none (first model)"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn predict_cmd(
    config_path: &Path,
    model: &str,
    input: &str,
    pipeline: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use std::fmt::Write as _;
    let config = Config::load(config_path)?;
    let p = pick_pipeline(&config, pipeline)?;
    let store = open_store(&config).await?;
    let version = match model.trim_start_matches('v').parse::<i64>() {
        Ok(n) => store.versions(&p.name).await?.into_iter().find(|v| v.version == n),
        Err(_) => store.alias(&p.name, model).await?,
    }
    .ok_or_else(|| anyhow::anyhow!("pipeline `{}` has no model `{model}`; use a version number or champion/previous (`retraind models` lists them)", p.name))?;
    let data_cfg = p.data.clone();
    let (dir, input) = (PathBuf::from(&version.path), input.to_string());
    let cache = config.daemon.state_dir.join("inputs");
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let location = crate::source::Location::parse(&input, &std::env::current_dir()?)?;
        let input = crate::source::resolve(&location, &cache, &data_cfg.s3)?;
        let card: serde_json::Value = std::fs::read(dir.join("card.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        // A burn model names the columns it reads; a command or Kubeflow model reads the
        // pipeline's columns, taken from the file as a cycle takes them.
        let (model, table, task): (
            Box<dyn crate::train::Predictor>,
            crate::data::Table,
            crate::performance::Task,
        ) = if card["format"] == crate::train::command::FORMAT {
            let (_, table) = crate::data::load_inferred(&input, &data_cfg.role_spec(), false)?;
            let task = serde_json::from_value(card["task"].clone()).unwrap_or_default();
            (crate::train::load_predictor(&dir)?, table, task)
        } else {
            let model = crate::train::burn::BurnModel::load(&dir)?;
            let pre = model.preprocess();
            let roles = crate::data::Roles {
                numerical: pre.numerical.iter().map(|(n, _, _)| n.clone()).collect(),
                categorical: pre.categorical.iter().map(|(n, _)| n.clone()).collect(),
                target: data_cfg.target.clone(),
                prediction: None,
                timestamp: None,
            };
            let table = crate::data::load(&input, &roles, false)?;
            let task = pre.task;
            (Box::new(model), table, task)
        };
        let out = model.predict_scored(&table)?;
        // row, prediction, then a classifier's probability per class.
        let mut header = vec!["row".to_string(), "prediction".to_string()];
        header.extend(out.classes.iter().map(|c| format!("p_{c}")));
        let mut text = header.join(",") + "\n";
        let k = out.classes.len();
        for (i, label) in out.labels.iter().enumerate() {
            let mut row = vec![i.to_string(), label.clone()];
            row.extend(
                out.probabilities[i * k..(i + 1) * k]
                    .iter()
                    .map(|p| format!("{p:.6}")),
            );
            let _ = writeln!(text, "{}", row.join(","));
        }
        if let Some(labels) = &table.target {
            let idx = table.labelled_rows();
            if !idx.is_empty() {
                let scored = crate::performance::Scored {
                    labels: idx.iter().map(|&i| labels[i].clone()).collect(),
                    predicted: idx.iter().map(|&i| out.labels[i].clone()).collect(),
                    ..Default::default()
                };
                // Accuracy and weighted F1, or RMSE, MAE and R², on the labelled rows.
                let metrics: Vec<String> = task
                    .metrics(&scored)
                    .iter()
                    .filter(|(k, _)| !k.ends_with("_n"))
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect();
                eprintln!("{} on {} labelled rows", metrics.join(", "), idx.len());
            }
        }
        Ok(text)
    })
    .await??;
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => out_raw!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn history_cmd(
    config_path: &Path,
    pipeline: Option<&str>,
    limit: i64,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = open_store(&config).await?;
    let rows: Vec<status::CycleSummary> = store
        .cycles(pipeline, limit.clamp(1, 10_000))
        .await?
        .iter()
        .map(status::CycleSummary::from)
        .collect();
    match format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&rows)?),
        Format::Text => {
            out!(
                "{:>6}  {:<12} {:<10} {:<18} {:<11} reason",
                "cycle",
                "pipeline",
                "date",
                "state",
                "outcome"
            );
            for c in &rows {
                out!(
                    "{:>6}  {:<12} {:<10} {:<18} {:<11} {}",
                    c.id,
                    c.pipeline,
                    c.date,
                    c.state.as_str(),
                    c.outcome.map(|o| o.as_str()).unwrap_or("-"),
                    c.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// POST to the running daemon's API with the configured bearer token; print the JSON reply.
async fn api_post(
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

/// The JSON document `retraind check --format json` prints.
#[derive(Debug, serde::Serialize)]
pub struct CheckReport {
    pub reference: crate::data::Fingerprint,
    pub current: crate::data::Fingerprint,
    pub features: Vec<crate::drift::FeatureDrift>,
    pub dataset: crate::drift::DatasetDrift,
    pub insufficient_data: bool,
    pub quality: crate::quality::QualityReport,
}

/// Run the standalone check: load both files, the quality gate, the drift tests.
pub fn run_check(args: &CheckArgs, progress: &dyn Fn(&str)) -> anyhow::Result<CheckReport> {
    use crate::data;
    use crate::drift::DriftConfig;
    use crate::stats::Correction;
    let method: crate::drift::Method = args.method.parse()?;
    let correction: Correction = args.correction.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.alpha > 0.0 && args.alpha < 1.0,
        "--alpha {} is out of range; use 0 < alpha < 1",
        args.alpha
    );
    progress(&format!("reading {}", args.reference));
    let categorical = (!args.categorical.is_empty()).then_some(args.categorical.as_slice());
    let spec = data::RoleSpec {
        numerical: None,
        categorical,
        target: &args.target,
        prediction: None,
        timestamp: None,
        ignore: &args.ignore,
    };
    // Remote inputs are downloaded into a cache under the temporary directory.
    let cache = std::env::temp_dir().join("retraind-inputs");
    let cwd = std::env::current_dir()?;
    let resolve = |text: &str| -> anyhow::Result<data::Input> {
        let location = crate::source::Location::parse(text, &cwd)?;
        Ok(crate::source::resolve(
            &location,
            &cache,
            &crate::source::S3Config::default(),
        )?)
    };
    let (reference_input, current_input) = (resolve(&args.reference)?, resolve(&args.current)?);
    let (roles, reference, current) = data::load_pair(&reference_input, &current_input, &spec)?;
    progress(&format!("read {}", args.current));
    progress(&format!(
        "testing {} features ({} x {} rows)",
        roles.numerical.len() + roles.categorical.len(),
        reference.rows,
        current.rows
    ));
    let mut ignore = args.ignore.clone();
    ignore.push(args.target.clone());
    let quality = crate::quality::check(
        (&reference.fingerprint, &reference),
        (&current.fingerprint, &current),
        &ignore,
        &crate::quality::QualityConfig::default(),
    );
    let config = DriftConfig {
        alpha: args.alpha,
        correction,
        method,
        ..DriftConfig::default()
    };
    let drift = crate::drift::detect(&reference, &current, &config, args.min_rows);
    Ok(CheckReport {
        reference: reference.fingerprint.clone(),
        current: current.fingerprint.clone(),
        features: drift.features,
        dataset: drift.dataset,
        insufficient_data: drift.insufficient_data,
        quality,
    })
}

fn render_check_text(r: &CheckReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<15} {:>11} {:>10} {:>10}  verdict",
        "feature", "kind", "method", "statistic", "p_adj", "threshold"
    );
    let mut features: Vec<&crate::drift::FeatureDrift> = r.features.iter().collect();
    features.sort_by(|a, b| {
        b.drifted.cmp(&a.drifted).then(
            a.p_adjusted
                .unwrap_or(1.0)
                .total_cmp(&b.p_adjusted.unwrap_or(1.0)),
        )
    });
    for f in features {
        let kind = f.kind.as_str();
        let p = f
            .p_adjusted
            .map(|p| format!("{p:.3e}"))
            .unwrap_or_else(|| "-".into());
        let verdict = if f.drifted { "DRIFT" } else { "ok" };
        let effect = f
            .effect
            .as_ref()
            .map(|e| format!(" ({} {:.3}, min {})", e.method, e.value, e.minimum))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<15} {:>11.4} {:>10} {:>10}  {verdict}{effect}",
            f.name,
            kind,
            f.method.as_str(),
            f.statistic,
            p,
            f.threshold
        );
    }
    let _ = writeln!(
        out,
        "\ndataset: {} ({} of {} features drifted, {:.0}%, correction {:?}){}",
        if r.dataset.drifted {
            "DRIFT"
        } else {
            "no drift"
        },
        r.dataset.drifted_features,
        r.features.len(),
        r.dataset.drifted_share * 100.0,
        r.dataset.correction,
        if r.insufficient_data {
            "; insufficient data"
        } else {
            ""
        }
    );
    for f in &r.quality.findings {
        let _ = writeln!(out, "quality {:?}: {}", f.severity, f.message);
    }
    out
}

async fn check_cmd(args: CheckArgs) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let interactive = std::io::stderr().is_terminal();
    let (format, output) = (args.format, args.output.clone());
    let report = tokio::task::spawn_blocking(move || {
        let progress = |msg: &str| {
            if interactive {
                eprintln!("… {msg}");
            }
        };
        run_check(&args, &progress)
    })
    .await??;
    let text = match format {
        CheckFormat::Json => serde_json::to_string_pretty(&report)?,
        CheckFormat::Text => render_check_text(&report),
        CheckFormat::Html => crate::report::render(&serde_json::to_value(&report)?),
    };
    match output {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out!("{text}"),
    }
    Ok(if !report.quality.passed {
        ExitCode::from(4)
    } else if report.dataset.drifted {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
