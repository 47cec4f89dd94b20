//! `retraind status` and `retraind history`: what each pipeline serves and does, and its
//! recent cycles, read from the store (they work while the daemon is down).

use std::path::Path;
use std::process::ExitCode;

use super::{Format, open_store};
use crate::config::Config;
use crate::records::CheckReport;
use crate::status;

pub(super) async fn status(config_path: &Path, format: Format) -> anyhow::Result<ExitCode> {
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
                for h in &p.holds {
                    let cycle = h.cycle.map(|c| format!(" (cycle {c})")).unwrap_or_default();
                    out!(
                        "  HOLD {}{cycle} by {} since {}: {}",
                        h.kind.as_str(),
                        h.by,
                        h.since.to_rfc3339(),
                        h.reason
                    );
                    out!("       lift: {}", lift_hint(config_path, &p.name, h));
                }
                if let Some(t) = p.next_scheduled_at {
                    out!("  next check: {}", t.to_rfc3339());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The command that lifts a hold (with the daemon running: it goes through its API).
fn lift_hint(config_path: &Path, pipeline: &str, h: &status::HoldSummary) -> String {
    let config = config_path.display();
    match (h.kind, h.cycle) {
        (status::HoldKind::AwaitingApproval, Some(c)) => {
            format!("retraind --config {config} approve {c} --approver \"$(whoami)\"")
        }
        (status::HoldKind::FrozenAll, _) => {
            format!("retraind --config {config} resume --actor \"$(whoami)\"")
        }
        _ => format!("retraind --config {config} resume {pipeline} --actor \"$(whoami)\""),
    }
}

pub(super) async fn history(
    config_path: &Path,
    pipeline: Option<&str>,
    limit: i64,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = open_store(&config).await?;
    let mut rows: Vec<status::CycleSummary> = store
        .cycles(pipeline, limit.clamp(1, 10_000))
        .await?
        .iter()
        .map(status::CycleSummary::from)
        .collect();
    for row in &mut rows {
        let report = store.report(row.id).await?;
        row.estimate = report
            .and_then(|body| serde_json::from_value::<CheckReport>(body).ok())
            .and_then(|r| status::EstimateSummary::of(&r));
    }
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
                if let Some(e) = &c.estimate {
                    out!("{:>6}  {}", "", e.describe());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
