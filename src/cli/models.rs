//! `retraind models` and `retraind lineage`: a pipeline's model versions with their aliases,
//! gate verdicts and metrics, and a version's ancestry back to its first model.

use std::path::Path;
use std::process::ExitCode;

use super::{Format, open_store, pick_pipeline};
use crate::config::Config;
use crate::status;

/// A score with three decimals, or `-`.
fn score_text(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

/// The first 12 characters of a digest, or `-`.
fn short(hash: &str) -> &str {
    if hash.is_empty() {
        "-"
    } else {
        &hash[..hash.len().min(12)]
    }
}

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

pub(super) async fn models(
    config_path: &Path,
    pipeline: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let (_, metric, rows) = pipeline_models(config_path, pipeline).await?;
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
                    Some(g) if g.result.blessed => "blessed",
                    Some(_) => "rejected",
                    None => "-",
                };
                out!(
                    "{:>7}  {:<18} {:>6}  {:>9} {:>9} {:>7}  {:<20} {}",
                    format!("v{}", m.version),
                    m.aliases.join(","),
                    m.cycle,
                    score_text(m.metrics.holdout(metric)),
                    score_text(m.metrics.valid(metric)),
                    m.lineage
                        .parent_version
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

pub(super) async fn lineage(
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
                let backend = if l.backend.is_empty() {
                    "burn"
                } else {
                    &l.backend
                };
                out!("  backend        {backend}");
                let t = &l.training_data;
                let path = if t.path.is_empty() { "-" } else { &t.path };
                out!(
                    "  trained on     {path} ({} rows, blake3 {})",
                    t.rows,
                    short(&t.blake3)
                );
                if let Some(inputs) = &l.inputs {
                    for (key, f, dvc) in [
                        ("reference", &inputs.reference, &l.dvc.reference),
                        ("current", &inputs.current, &l.dvc.current),
                    ] {
                        out!(
                            "  {key:<14} {} ({} rows, blake3 {}){}",
                            f.path,
                            f.rows,
                            short(&f.blake3),
                            dvc.as_ref()
                                .map(|m| format!(", dvc md5 {m}"))
                                .unwrap_or_default()
                        );
                    }
                }
                out!("  trigger        report of cycle {}", l.trigger_cycle);
                let hash = if l.config_hash.is_empty() {
                    "-"
                } else {
                    &l.config_hash
                };
                out!("  config         {hash}");
                out!(
                    "  metrics        holdout {m_} {}, validation {m_} {}",
                    score_text(m.metrics.holdout(metric)),
                    score_text(m.metrics.valid(metric)),
                    m_ = metric.name()
                );
                match l.parent_version {
                    Some(v) => out!("  parent         v{v}"),
                    None => out!("  parent         none (first model)"),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
