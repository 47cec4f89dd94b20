//! `retraind estimate`: a model's performance on data without labels, for two files — a
//! labelled reference and the data to estimate — without a daemon or a config: a
//! classifier's from its probabilities (CBPE, equal to NannyML's), a regressor's MAE and RMSE
//! from a nanny model of its errors (DLE, `--method dle`). Exit status: 0 every estimate
//! inside its thresholds, 3 an estimate outside them, 1 error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::data::{self, Roles, Table};
use crate::estimate::dle::{self, Dle, RegressionRows};
use crate::estimate::{Cbpe, CbpeMetric, EstimateReport, Predictions};

/// How the performance is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// A classifier's metrics from its probabilities (confidence-based).
    Cbpe,
    /// A regressor's MAE and RMSE from a nanny model of its errors (direct loss estimation).
    Dle,
}

#[derive(Debug, clap::Args)]
pub struct EstimateArgs {
    /// `cbpe` for a classifier (needs --proba), `dle` for a regressor (numeric --prediction
    /// and --target; the nanny model learns from --features).
    #[arg(long, value_enum, default_value = "cbpe")]
    pub method: Method,
    /// DLE: the feature columns the nanny model learns the errors from (default: every
    /// column but the prediction and the target; text columns are encoded as NannyML does).
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Labelled reference data with the model's predictions (CSV, Parquet or NDJSON): a
    /// path, a glob, an http(s):// URL or s3://bucket/key.
    #[arg(long)]
    pub reference: String,
    /// The data to estimate, in the same forms; labels in it are optional and, where
    /// present for every row of a chunk, reported as the realised value.
    #[arg(long)]
    pub current: String,
    /// Column of the model's predicted class.
    #[arg(long, default_value = "y_pred")]
    pub prediction: String,
    /// Probability columns: one column for a binary model (the positive class's
    /// probability), or CLASS=COLUMN for each class of a multiclass model.
    #[arg(long, value_delimiter = ',', default_value = "y_pred_proba")]
    pub proba: Vec<String>,
    /// Label column.
    #[arg(long, default_value = "target")]
    pub target: String,
    /// Binary models: the positive class (default: the greater of the two labels).
    #[arg(long)]
    pub positive: Option<String>,
    /// Rows per chunk (default: the whole current file is one chunk). The reference is cut
    /// into chunks of the same size to set the thresholds.
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// Metrics: roc_auc, f1, precision, recall, specificity, accuracy, confusion_matrix
    /// (binary only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "roc_auc,f1,precision,recall,specificity,accuracy"
    )]
    pub metrics: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::CheckFormat,
    /// Write the report here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// The probability columns: one unnamed (binary) or one per class.
enum Proba {
    Binary(String),
    Classes(BTreeMap<String, String>),
}

fn parse_proba(items: &[String]) -> anyhow::Result<Proba> {
    match items {
        [one] if !one.contains('=') => Ok(Proba::Binary(one.clone())),
        _ => {
            let mut classes = BTreeMap::new();
            for item in items {
                let Some((class, column)) = item.split_once('=') else {
                    bail!(
                        "--proba `{item}`: with more than one probability column each must be CLASS=COLUMN"
                    );
                };
                classes.insert(class.trim().to_string(), column.trim().to_string());
            }
            if classes.len() < 3 {
                bail!(
                    "--proba names {} class(es); a binary model takes one column (the positive class's probability), a multiclass model CLASS=COLUMN for each of its classes",
                    classes.len()
                );
            }
            Ok(Proba::Classes(classes))
        }
    }
}

/// Read `text` (a path, glob, URL or s3 key) with `roles`.
fn read(text: &str, roles: &Roles, labelled: bool) -> anyhow::Result<Table> {
    Ok(data::load(
        &super::standalone_input(text)?,
        roles,
        labelled,
    )?)
}

/// Run the estimate: read both files, fit the method on the reference, estimate the
/// current data.
pub fn run_estimate(args: &EstimateArgs) -> anyhow::Result<EstimateReport> {
    match args.method {
        Method::Cbpe => run_cbpe(args),
        Method::Dle => run_dle(args),
    }
}

/// DLE: the reference's columns decide the features (and which are categorical).
fn run_dle(args: &EstimateArgs) -> anyhow::Result<EstimateReport> {
    let spec = data::RoleSpec {
        numerical: None,
        categorical: None,
        target: &args.target,
        prediction: Some(&args.prediction),
        timestamp: None,
        ignore: &[],
    };
    let (mut roles, mut reference) =
        data::load_inferred(&super::standalone_input(&args.reference)?, &spec, true)?;
    if !args.features.is_empty() {
        for f in &args.features {
            if !roles.numerical.contains(f) && !roles.categorical.contains(f) {
                bail!(
                    "{}: --features names `{f}`, which is not a column",
                    args.reference
                );
            }
        }
        roles.numerical.retain(|c| args.features.contains(c));
        roles.categorical.retain(|c| args.features.contains(c));
    }
    reference
        .numerical
        .retain(|(n, _)| roles.numerical.contains(n));
    reference
        .categorical
        .retain(|(n, _)| roles.categorical.contains(n));
    let current = read(&args.current, &roles, false)?;
    let rows = |t: &Table, source: &str, labelled: bool| -> anyhow::Result<RegressionRows> {
        regression_rows(
            t,
            &reference,
            &args.prediction,
            &args.target,
            source,
            labelled,
        )
    };
    let reference_rows = rows(&reference, &args.reference, true)?;
    let current_rows = rows(&current, &args.current, false)?;
    let chunk_size = args.chunk_size.unwrap_or(current.rows).max(1);
    let dle = Dle::fit(&reference_rows, chunk_size)?;
    let chunks = dle.estimate(&current_rows)?;
    Ok(EstimateReport::dle(&dle, reference.rows, &chunks))
}

/// A regressor's rows for DLE: numeric features as they are, categorical ones encoded
/// against the reference's categories, the prediction and the label as numbers.
fn regression_rows(
    t: &Table,
    reference: &Table,
    prediction: &str,
    target: &str,
    source: &str,
    labelled: bool,
) -> anyhow::Result<RegressionRows> {
    let number = |v: &str, column: &str, row: usize| -> anyhow::Result<f64> {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .with_context(|| format!("{source}: row {row}: `{column}` is `{v}`, not a number; DLE estimates a regressor's errors (use --method cbpe for a classifier)"))
    };
    let mut features: Vec<Vec<f64>> = t.numerical.iter().map(|(_, v)| v.clone()).collect();
    for (name, values) in &t.categorical {
        let known = reference.categorical(name).unwrap_or_default();
        features.push(dle::ordinal(known, values));
    }
    let (predicted, actual) = answers(t, source, labelled, (prediction, target), number)?;
    Ok(RegressionRows {
        features,
        predicted,
        actual,
    })
}

/// Each row's prediction and label (of the `(prediction, target)` columns) as `read` reads
/// them; a missing label is `None`, refused in a reference (`labelled`).
fn answers<T>(
    t: &Table,
    source: &str,
    labelled: bool,
    (prediction, target): (&str, &str),
    read: impl Fn(&str, &str, usize) -> anyhow::Result<T>,
) -> anyhow::Result<(Vec<T>, Vec<Option<T>>)> {
    let mut predicted = Vec::with_capacity(t.rows);
    for (row, v) in t.prediction.iter().flatten().enumerate() {
        predicted.push(read(v, prediction, row)?);
    }
    let mut actual = Vec::with_capacity(t.rows);
    match &t.target {
        Some(labels) => {
            for (row, v) in labels.iter().enumerate() {
                if v.is_empty() {
                    if labelled {
                        bail!("{source}: row {row} has no label; the reference must be labelled");
                    }
                    actual.push(None);
                } else {
                    actual.push(Some(read(v, target, row)?));
                }
            }
        }
        None => actual.resize_with(t.rows, || None),
    }
    Ok((predicted, actual))
}

/// CBPE: the probability columns decide the classes.
fn run_cbpe(args: &EstimateArgs) -> anyhow::Result<EstimateReport> {
    let proba = parse_proba(&args.proba)?;
    let mut metrics = Vec::new();
    for m in &args.metrics {
        metrics.extend(CbpeMetric::parse(m.trim()).map_err(anyhow::Error::msg)?);
    }
    let roles = Roles {
        numerical: match &proba {
            Proba::Binary(c) => vec![c.clone()],
            Proba::Classes(m) => m.values().cloned().collect(),
        },
        categorical: Vec::new(),
        target: args.target.clone(),
        prediction: Some(args.prediction.clone()),
        timestamp: None,
    };
    let reference = read(&args.reference, &roles, true)?;
    let current = read(&args.current, &roles, false)?;
    let classes = match &proba {
        Proba::Classes(m) => m.keys().cloned().collect(),
        Proba::Binary(_) => binary_classes(&reference, args.positive.as_deref())?,
    };
    let columns = Columns {
        classes: &classes,
        proba: &proba,
        prediction: &args.prediction,
        target: &args.target,
    };
    let reference_p = predictions(&reference, &columns, &args.reference, true)?;
    let current_p = predictions(&current, &columns, &args.current, false)?;
    let chunk_size = args.chunk_size.unwrap_or(current.rows).max(1);
    let cbpe = Cbpe::fit(&reference_p, &metrics, chunk_size)?;
    let chunks = cbpe.estimate(&current_p)?;
    Ok(EstimateReport::cbpe(&cbpe, reference.rows, &chunks))
}

/// The two classes of a binary model from the reference's labels, the positive one last.
fn binary_classes(reference: &Table, positive: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut seen: Vec<String> = reference
        .target
        .iter()
        .flatten()
        .chain(reference.prediction.iter().flatten())
        .filter(|v| !v.is_empty())
        .cloned()
        .collect();
    seen.sort();
    seen.dedup();
    if seen.len() != 2 {
        bail!(
            "the reference's labels and predictions hold {} distinct values ({}); a binary model needs exactly two (for more classes pass --proba CLASS=COLUMN for each)",
            seen.len(),
            seen.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(p) = positive {
        if !seen.iter().any(|c| c == p) {
            bail!(
                "--positive `{p}` is not one of the labels ({})",
                seen.join(", ")
            );
        }
        seen.retain(|c| c != p);
        seen.push(p.to_string());
    }
    Ok(seen)
}

/// What the columns of a file mean.
struct Columns<'a> {
    classes: &'a [String],
    proba: &'a Proba,
    prediction: &'a str,
    target: &'a str,
}

/// The typed predictions of `table`, read from `source`.
fn predictions(
    table: &Table,
    columns: &Columns<'_>,
    source: &str,
    labelled: bool,
) -> anyhow::Result<Predictions> {
    let classes = columns.classes;
    let index = |value: &str, column: &str, row: usize| -> anyhow::Result<usize> {
        classes.iter().position(|c| c == value).with_context(|| {
            format!(
                "{source}: row {row}: `{column}` is `{value}`, not one of the classes ({})",
                classes.join(", ")
            )
        })
    };
    let names = (columns.prediction, columns.target);
    let (predicted, actual) = answers(table, source, labelled, names, index)?;
    let column = |name: &str| -> anyhow::Result<Vec<f64>> {
        table
            .numerical(name)
            .map(<[f64]>::to_vec)
            .with_context(|| format!("{source}: no probability column `{name}`"))
    };
    let scores = match columns.proba {
        Proba::Binary(c) => vec![column(c)?],
        Proba::Classes(m) => m.values().map(|c| column(c)).collect::<Result<_, _>>()?,
    };
    Ok(Predictions {
        classes: classes.to_vec(),
        scores,
        predicted,
        actual,
    })
}

fn render_text(r: &EstimateReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in &r.calibration {
        let _ = writeln!(out, "calibration of `{}`: {}", c.class, c.describe());
    }
    if r.reference_rows < 2 * r.chunk_size {
        let _ = writeln!(
            out,
            "no thresholds: the reference's {} rows hold fewer than two chunks of {} rows; pass --chunk-size (at most {}) to set them from its chunks",
            r.reference_rows,
            r.chunk_size,
            r.reference_rows / 2
        );
    }
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
    for chunk in &r.chunks {
        let _ = writeln!(
            out,
            "\nchunk {} ({} rows)\n{:<15} {:>9} {:>21} {:>9} {:>21}  verdict",
            chunk.key,
            chunk.rows.len(),
            "metric",
            "estimate",
            "band (±3 SE)",
            "realised",
            "thresholds"
        );
        for (m, e) in &chunk.metrics {
            let _ = writeln!(
                out,
                "{:<15} {:>9} {:>21} {:>9} {:>21}  {}",
                m,
                fmt(e.value),
                format!("[{}, {}]", fmt(e.lower), fmt(e.upper)),
                fmt(e.realized),
                format!("[{}, {}]", fmt(e.thresholds.lower), fmt(e.thresholds.upper)),
                if e.alert { "ALERT" } else { "ok" }
            );
        }
    }
    out
}

pub(super) async fn run(args: EstimateArgs) -> anyhow::Result<ExitCode> {
    let (format, output) = (args.format, args.output.clone());
    let report = tokio::task::spawn_blocking(move || run_estimate(&args)).await??;
    let text = match format {
        super::CheckFormat::Json => serde_json::to_string_pretty(&report)?,
        super::CheckFormat::Text => render_text(&report),
        super::CheckFormat::Html => crate::report::render(&crate::report::Report {
            estimate: Some(report.clone()),
            ..Default::default()
        }),
    };
    match output {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => out!("{text}"),
    }
    Ok(if report.alert() {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
