//! The command line (clap): the arguments, and a dispatch to one file per command group.
//! `status`, `history`, `models` and `lineage` read the store directly (they work while the
//! daemon is down); `trigger`, `approve`, `reject`, `rollback`, `freeze` and `resume` call
//! the running daemon's API with the configured token ([`api`]); `check` needs neither.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod api;
mod check;
mod estimate;
mod gc;
mod models;
mod predict;
mod profile;
mod show;
mod simulate;
mod status;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::progress;
pub use crate::progress::{Quiet, Report};
pub use check::{
    CheckArgs, CheckFormat, CheckReport, ColumnArgs, MemoryArgs, SparkArgs, run_check,
};
pub use profile::ProfileArgs;

use crate::config::{Config, ConfigError};
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
    /// Tell one cycle's story: why it started, its data, drift, decision, gate, approvals,
    /// events and transitions (`--pipeline P` for P's newest cycle).
    Show {
        cycle: Option<i64>,
        #[arg(long, conflicts_with = "cycle")]
        pipeline: Option<String>,
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
    /// Collect what [daemon.retention] no longer keeps (old versions' files, old inputs
    /// and report files, staging leftovers); the daemon does it daily.
    Gc {
        /// List what would be collected; delete nothing.
        #[arg(long)]
        dry_run: bool,
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
    /// Summarise data into a reference profile (exact values up to a limit, else quantile
    /// sketches; category counts; rows; schema) that `check --reference` reads instead of
    /// the rows; or merge the profiles of parts into one.
    Profile(ProfileArgs),
    /// Estimate a classifier's performance on data without labels from its probabilities
    /// (CBPE, as NannyML computes it), against a labelled reference (no daemon, no config).
    /// Exit status: 0 every estimate inside its thresholds, 3 one outside, 1 error.
    Estimate(estimate::EstimateArgs),
    /// Run the real engine through simulated years of drift, faults and crashes, and check
    /// its promises (no config). Exit status: 0 every promise held, 1 a seed broke one.
    Simulate(simulate::SimulateArgs),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Run the parsed command line.
pub async fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    let default_level = match cli.command {
        // The demo tells its own story on stdout; only errors join it, as readable lines.
        Command::Demo { .. } => "error",
        Command::Simulate(_) => "off",
        _ => "info",
    };
    let log_format = match (&cli.command, cli.log_format) {
        (Command::Demo { .. }, telemetry::LogFormat::Auto) => telemetry::LogFormat::Text,
        (_, format) => format,
    };
    telemetry::init(
        log_format,
        cli.log_level.as_deref().unwrap_or(default_level),
    );
    match cli.command {
        Command::Run => crate::daemon::run(cli.config)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Demo { dir, keep_running } => crate::demo::run(&dir, keep_running)
            .await
            .map(|_| ExitCode::SUCCESS),
        Command::Check(args) => check::run(args).await,
        Command::Profile(args) => profile::run(args).await,
        Command::Estimate(args) => estimate::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Version => {
            out!("retraind {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => Ok(config_check(file.as_deref().unwrap_or(&cli.config))),
        Command::Status { format } => status::status(&cli.config, format).await,
        Command::History {
            pipeline,
            limit,
            format,
        } => status::history(&cli.config, pipeline.as_deref(), limit, format).await,
        Command::Show {
            cycle,
            pipeline,
            format,
        } => show::show(&cli.config, cycle, pipeline.as_deref(), format).await,
        Command::Models { pipeline, format } => {
            models::models(&cli.config, pipeline.as_deref(), format).await
        }
        Command::Gc { dry_run, format } => gc::run(&cli.config, dry_run, format).await,
        Command::Lineage {
            version,
            pipeline,
            format,
        } => models::lineage(&cli.config, version, pipeline.as_deref(), format).await,
        Command::Predict {
            model,
            input,
            pipeline,
            output,
        } => {
            predict::run(
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
            api::post(
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
            api::post(
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
            api::post(&cli.config, &format!("/api/v1/cycles/{cycle}/reject"), body).await
        }
        Command::Rollback {
            pipeline,
            to,
            actor,
            reason,
        } => {
            let body = serde_json::json!({ "to": to, "actor": actor, "reason": reason });
            api::post(
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
            api::post(&cli.config, "/api/v1/freeze", body).await
        }
        Command::Resume { pipeline, actor } => {
            let body = serde_json::json!({ "pipeline": pipeline, "actor": actor });
            api::post(&cli.config, "/api/v1/resume", body).await
        }
    }
}

/// An input named on the command line of a command without a config (a path, a glob, an
/// http(s):// URL or s3://bucket/key); remote ones are downloaded into a cache under the
/// temporary directory.
fn standalone_input(text: &str) -> anyhow::Result<crate::data::Input> {
    let cache = std::env::temp_dir().join("retraind-inputs");
    let location = crate::source::Location::parse(text, &std::env::current_dir()?)?;
    Ok(crate::source::resolve(
        &location,
        &cache,
        &crate::source::S3Config::default(),
    )?)
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
