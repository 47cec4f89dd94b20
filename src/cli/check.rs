//! `retraind check`: a one-off drift and data quality report for two files, without a
//! daemon or a config. Exit status: 0 no drift, 3 dataset drift, 4 quality failure, 1 error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Reference data (CSV, Parquet or NDJSON): a path, a glob, an http(s):// URL or
    /// s3://bucket/key (credentials from the AWS_* variables); or a profile written by
    /// `retraind profile` (a `.profile` file), which is read instead of the rows.
    #[arg(long)]
    pub reference: String,
    /// Current window, in the same forms (or in Spark: see --spark).
    #[arg(long, required_unless_present = "spark", conflicts_with = "spark")]
    pub current: Option<String>,
    #[command(flatten)]
    pub spark: SparkArgs,
    /// Drift method for every feature: auto, ks, chi2, z_test, psi, wasserstein, js.
    #[arg(long, default_value = "auto")]
    pub method: String,
    /// Correction across features: bh, bonferroni, none.
    #[arg(long, default_value = "bh")]
    pub correction: String,
    #[command(flatten)]
    pub columns: ColumnArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Significance level after correction.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Smallest effect a test's drift needs (normalised Wasserstein for numerical features,
    /// Jensen–Shannon for categorical ones); 0 lets the p-value alone decide.
    #[arg(long, default_value_t = 0.1)]
    pub min_effect: f64,
    /// Below this many rows in either file the result is insufficient data.
    #[arg(long, default_value_t = 50)]
    pub min_rows: usize,
    /// Also test for multivariate drift: the data reconstruction error (as NannyML computes
    /// it) of the current file's chunks against the reference's chunks of the same size.
    #[arg(long)]
    pub multivariate: bool,
    /// Rows per chunk for --multivariate (default: the current file is one chunk; the
    /// reference must hold at least two chunks for thresholds).
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// Share of the reference's variance the kept components explain (--multivariate).
    #[arg(long, default_value_t = crate::drift::reconstruction::DEFAULT_VARIANCE)]
    pub variance: f64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: CheckFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// The current window in Spark: Spark computes its summaries and only those travel.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SparkArgs {
    /// Spark Connect address of the current window: sc://host:port[/;use_ssl=true].
    #[arg(long, requires = "spark_relation")]
    pub spark: Option<String>,
    /// Table (or view) Spark reads as the current window.
    #[arg(long, group = "spark_relation")]
    pub spark_table: Option<String>,
    /// SQL query whose rows are the current window.
    #[arg(long, group = "spark_relation")]
    pub spark_query: Option<String>,
    /// File holding the Spark token (default: $SPARK_CONNECT_AUTHENTICATE_TOKEN when set).
    #[arg(long)]
    pub spark_token_file: Option<PathBuf>,
    /// Longest wait for Spark's answer.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub spark_timeout: std::time::Duration,
}

impl SparkArgs {
    /// The source and its token, when --spark is given.
    fn source(
        &self,
    ) -> anyhow::Result<Option<(crate::spark::SparkSource, Option<crate::secret::Secret>)>> {
        use crate::secret::{Secret, SecretSource};
        use crate::spark::{Endpoint, Relation, SparkSource};
        let Some(address) = &self.spark else {
            return Ok(None);
        };
        let endpoint = Endpoint::parse(address).map_err(|e| anyhow::anyhow!("--spark: {e}"))?;
        let relation = match (&self.spark_table, &self.spark_query) {
            (Some(t), _) => Relation::Table(t.clone()),
            (None, Some(q)) => Relation::Query(q.clone()),
            (None, None) => anyhow::bail!("--spark needs --spark-table or --spark-query"),
        };
        const VAR: &str = "SPARK_CONNECT_AUTHENTICATE_TOKEN";
        let token = match &self.spark_token_file {
            Some(path) => Some(Secret::load(&SecretSource::File(path.clone()))?),
            None if std::env::var_os(VAR).is_some() => {
                Some(Secret::load(&SecretSource::Env(VAR.to_string()))?)
            }
            None => None,
        };
        let source = SparkSource {
            endpoint,
            relation,
            timeout: self.spark_timeout,
        };
        Ok(Some((source, token)))
    }
}

/// Which columns are features, for the commands that read data without a config.
#[derive(Debug, Clone, clap::Args)]
pub struct ColumnArgs {
    /// Categorical columns (default: text and boolean columns).
    #[arg(long, value_delimiter = ',')]
    pub categorical: Vec<String>,
    /// Columns to leave out.
    #[arg(long, value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// Label column (left out of the drift tests).
    #[arg(long, default_value = "target")]
    pub target: String,
}

impl ColumnArgs {
    /// Columns the quality gate leaves alone: the ignored ones and the label.
    fn quality_ignore(&self) -> Vec<String> {
        let mut ignore = self.ignore.clone();
        ignore.push(self.target.clone());
        ignore
    }

    pub fn spec(&self) -> crate::data::RoleSpec<'_> {
        crate::data::RoleSpec {
            numerical: None,
            categorical: (!self.categorical.is_empty()).then_some(self.categorical.as_slice()),
            target: &self.target,
            prediction: None,
            timestamp: None,
            ignore: &self.ignore,
        }
    }
}

/// How much memory reading the data may take.
#[derive(Debug, Clone, clap::Args)]
pub struct MemoryArgs {
    /// Memory for the data at most (e.g. 1GiB, 512MiB): files are read by row group or
    /// block; a feature's values are kept exactly while both sides fit in half of it,
    /// beyond that summarised by quantile sketches (KS widened by their rank error).
    #[arg(long, default_value = "2GiB", value_parser = crate::validate::parse_bytes)]
    pub memory_budget: u64,
    /// Rank error of the quantile sketches used beyond the budget.
    #[arg(long, default_value_t = crate::profile::sketch::DEFAULT_EPSILON)]
    pub epsilon: f64,
}

impl MemoryArgs {
    pub fn plan(&self) -> anyhow::Result<crate::data::stream::Plan> {
        let (lo, hi) = crate::profile::sketch::EPSILON_RANGE;
        anyhow::ensure!(
            (lo..=hi).contains(&self.epsilon),
            "--epsilon {} is out of range; use {lo} to {hi}",
            self.epsilon
        );
        anyhow::ensure!(
            self.memory_budget >= 16 << 20,
            "--memory-budget {} bytes is too small; give at least 16MiB",
            self.memory_budget
        );
        Ok(crate::data::stream::Plan::for_budget(
            self.memory_budget,
            self.epsilon,
        ))
    }
}

/// Output of `retraind check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
    /// A self-contained page with a histogram per feature.
    Html,
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
    /// With `--multivariate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<crate::drift::reconstruction::MultivariateDrift>,
}

/// Run the standalone check: load both files, the quality gate, the drift tests.
pub fn run_check(
    args: &CheckArgs,
    report: &dyn super::progress::Report,
) -> anyhow::Result<CheckReport> {
    use crate::drift::DriftConfig;
    use crate::stats::Correction;
    let method: crate::drift::Method = args.method.parse()?;
    let correction: Correction = args.correction.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.alpha > 0.0 && args.alpha < 1.0,
        "--alpha {} is out of range; use 0 < alpha < 1",
        args.alpha
    );
    anyhow::ensure!(
        args.min_effect >= 0.0,
        "--min-effect {} is negative; use 0 or more",
        args.min_effect
    );
    let config = DriftConfig {
        alpha: args.alpha,
        correction,
        method,
        min_effect_numerical: args.min_effect,
        min_effect_categorical: args.min_effect,
        ..DriftConfig::default()
    };
    if args.multivariate {
        return check_rows(args, &config, report);
    }
    check_summaries(args, &config, report)
}

/// The check on both files' rows in memory (the multivariate test needs them).
fn check_rows(
    args: &CheckArgs,
    config: &crate::drift::DriftConfig,
    report: &dyn super::progress::Report,
) -> anyhow::Result<CheckReport> {
    anyhow::ensure!(
        !crate::data::stream::StoredProfile::is_profile(&args.reference),
        "--multivariate needs the reference's rows; give the data file, not a profile"
    );
    let current = args
        .current
        .as_deref()
        .context("--multivariate needs the current window's rows; give --current, not --spark")?;
    report.stage(&format!("reading {}", args.reference));
    let spec = args.columns.spec();
    let (reference_input, current_input) = (
        super::standalone_input(&args.reference)?,
        super::standalone_input(current)?,
    );
    let (roles, reference, current) =
        crate::data::load_pair(&reference_input, &current_input, &spec)?;
    report.stage(&format!(
        "testing {} features ({} x {} rows)",
        roles.numerical.len() + roles.categorical.len(),
        reference.rows,
        current.rows
    ));
    let quality = crate::quality::check(
        (&reference.fingerprint, &reference),
        (&current.fingerprint, &current),
        &args.columns.quality_ignore(),
        &crate::quality::QualityConfig::default(),
    );
    let drift = crate::drift::detect(&reference, &current, config, args.min_rows);
    let size = args.chunk_size.unwrap_or(current.rows).max(1);
    report.stage(&format!("multivariate: chunks of {size} rows"));
    let multivariate = Some(crate::drift::reconstruction::Reconstruction::detect(
        &reference,
        &current,
        args.variance,
        size,
    )?);
    Ok(CheckReport {
        reference: reference.fingerprint.clone(),
        current: current.fingerprint.clone(),
        features: drift.features,
        dataset: drift.dataset,
        insufficient_data: drift.insufficient_data,
        quality,
        multivariate,
    })
}

/// The check on both sides' profiles, read within the memory budget (exact while the
/// values fit, sketched beyond); the reference may be a stored profile.
fn check_summaries(
    args: &CheckArgs,
    config: &crate::drift::DriftConfig,
    report: &dyn super::progress::Report,
) -> anyhow::Result<CheckReport> {
    use crate::data::stream::{self, RolesFrom, StoredProfile, Streamed};
    let plan = args.memory.plan()?;
    report.stage(&format!("reading {}", args.reference));
    let reference = if StoredProfile::is_profile(&args.reference) {
        let stored = StoredProfile::read(std::path::Path::new(&args.reference))?;
        Streamed {
            roles: stored.roles,
            profile: stored.profile,
            fingerprint: stored.source,
        }
    } else {
        let spec = args.columns.spec();
        let input = super::standalone_input(&args.reference)?;
        stream::profile_input_with(
            &input,
            RolesFrom::Infer(&spec),
            &plan,
            &Default::default(),
            &|p| report.read(p),
        )?
    };
    let expect = reference.profile.expectation(config.bins);
    let current = match (args.spark.source()?, &args.current) {
        (Some((source, token)), _) => {
            report.stage(&format!(
                "asking Spark for the summaries of {}",
                source.relation.describe()
            ));
            let summarise = crate::spark::summarise(
                &source,
                token,
                reference.roles.columns(),
                &expect,
                plan.epsilon,
            );
            let s = match tokio::runtime::Handle::try_current() {
                Ok(handle) => handle.block_on(summarise),
                Err(_) => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(summarise),
            }?;
            let stored = StoredProfile::of_spark(s, &reference.roles);
            Streamed {
                roles: stored.roles,
                profile: stored.profile,
                fingerprint: stored.source,
            }
        }
        (None, Some(current)) => {
            report.stage(&format!("reading {current}"));
            let input = super::standalone_input(current)?;
            stream::profile_input_with(
                &input,
                RolesFrom::Given(&reference.roles),
                &plan,
                &expect,
                &|p| report.read(p),
            )?
        }
        (None, None) => {
            anyhow::bail!("give --current (a file) or --spark (a Spark Connect address)")
        }
    };
    report.stage(&format!(
        "testing {} features ({} x {} rows)",
        reference.profile.features.len(),
        reference.profile.rows,
        current.profile.rows
    ));
    let quality = crate::quality::check_profiles(
        (&reference.fingerprint, &reference.profile),
        (&current.fingerprint, &current.profile),
        &args.columns.quality_ignore(),
        &crate::quality::QualityConfig::default(),
    );
    let drift =
        crate::drift::detect_profiles(&reference.profile, &current.profile, config, args.min_rows);
    Ok(CheckReport {
        reference: reference.fingerprint,
        current: current.fingerprint,
        features: drift.features,
        dataset: drift.dataset,
        insufficient_data: drift.insufficient_data,
        quality,
        multivariate: None,
    })
}

fn render_check_text(r: &CheckReport) -> String {
    use std::fmt::Write as _;
    let mut out = drift_text(&r.features, &r.dataset, r.insufficient_data);
    if let Some(m) = &r.multivariate {
        multivariate_text(&mut out, m);
    }
    for f in &r.quality.findings {
        let _ = writeln!(out, "quality {:?}: {}", f.severity, f.message);
    }
    out
}

/// The drift table, drifted features first, and the dataset's verdict.
pub(super) fn drift_text(
    features: &[crate::drift::FeatureDrift],
    dataset: &crate::drift::DatasetDrift,
    insufficient_data: bool,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<12} {:<15} {:>11} {:>10} {:>10}  verdict",
        "feature", "kind", "method", "statistic", "p_adj", "threshold"
    );
    let mut sorted: Vec<&crate::drift::FeatureDrift> = features.iter().collect();
    sorted.sort_by(|a, b| {
        b.drifted.cmp(&a.drifted).then(
            a.p_adjusted
                .unwrap_or(1.0)
                .total_cmp(&b.p_adjusted.unwrap_or(1.0)),
        )
    });
    for f in sorted {
        let kind = f.kind.as_str();
        let p = f
            .p_adjusted
            .map(crate::stats::p_value)
            .unwrap_or_else(|| "-".into());
        let verdict = if f.drifted { "DRIFT" } else { "ok" };
        let effect = f
            .effect
            .as_ref()
            .map(|e| format!(" ({} {:.3}, min {})", e.method, e.value, e.minimum))
            .unwrap_or_default();
        let sketched = f
            .rank_error
            .map(|e| format!(" [sketched: KS threshold widened by {e:.1e}]"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<24} {:<12} {:<15} {:>11.4} {:>10} {:>10}  {verdict}{effect}{sketched}",
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
        if dataset.drifted { "DRIFT" } else { "no drift" },
        dataset.drifted_features,
        features.len(),
        dataset.drifted_share * 100.0,
        dataset.correction,
        if insufficient_data {
            "; insufficient data"
        } else {
            ""
        }
    );
    out
}

fn multivariate_text(out: &mut String, m: &crate::drift::reconstruction::MultivariateDrift) {
    use std::fmt::Write as _;
    let bound = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    let _ = writeln!(
        out,
        "multivariate: {} ({} components explain {:.0}% of the reference; reconstruction error thresholds [{}, {}]{})",
        if m.drifted { "DRIFT" } else { "no drift" },
        m.components,
        m.explained * 100.0,
        bound(m.lower_threshold),
        bound(m.upper_threshold),
        if m.upper_threshold.is_none() {
            "; none: the reference holds fewer than two chunks, pass --chunk-size"
        } else {
            ""
        }
    );
    for c in &m.chunks {
        let _ = writeln!(
            out,
            "  chunk {} ({} rows): error {:.4} [{:.4}, {:.4}]{}",
            c.key,
            c.rows.len(),
            c.value,
            c.lower,
            c.upper,
            if c.alert { "  DRIFT" } else { "" }
        );
    }
}

pub(super) async fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let (format, output) = (args.format, args.output.clone());
    let report = tokio::task::spawn_blocking(move || {
        let bar = super::progress::Bar::on_terminal();
        run_check(&args, &bar)
    })
    .await??;
    let text = match format {
        CheckFormat::Json => serde_json::to_string_pretty(&report)?,
        CheckFormat::Text => render_check_text(&report),
        CheckFormat::Html => crate::report::render(&crate::report::Report {
            features: report.features.clone(),
            dataset: Some(report.dataset.clone()),
            quality: Some(report.quality.clone()),
            ..Default::default()
        }),
    };
    match output {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out!("{text}"),
    }
    Ok(if !report.quality.passed {
        ExitCode::from(4)
    } else if report.dataset.drifted || report.multivariate.as_ref().is_some_and(|m| m.drifted) {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
