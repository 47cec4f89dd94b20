//! `retraind show <cycle>` (or `--pipeline P` for its newest cycle): one cycle's whole story
//! in order — why it started, the data it read, the drift table, the decision and its
//! reasons, the candidate and the gate's checks, approvals, events and every transition —
//! read from the store (works while the daemon is down). `--format json` prints the same
//! document as `GET /api/v1/cycles/{id}`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use super::{Format, open_store};
use crate::config::Config;
use crate::data::Fingerprint;
use crate::records::CheckReport;
use crate::status::{self, CycleDetail};

pub(super) async fn show(
    config_path: &Path,
    cycle: Option<i64>,
    pipeline: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = open_store(&config).await?;
    let id = match (cycle, pipeline) {
        (Some(id), _) => id,
        (None, Some(p)) => store
            .cycles(Some(p), 1)
            .await?
            .first()
            .map(|c| c.id)
            .with_context(|| format!("pipeline `{p}` has no cycle yet (see `retraind history`)"))?,
        (None, None) => anyhow::bail!(
            "name a cycle (`retraind show 42`) or a pipeline (`retraind show --pipeline churn`)"
        ),
    };
    let detail = status::cycle(&store, id)
        .await?
        .with_context(|| format!("no cycle {id} (see `retraind history`)"))?;
    match format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&detail)?),
        Format::Text => out_raw!("{}", story(&detail, &config)),
    }
    Ok(ExitCode::SUCCESS)
}

/// A value's name as the JSON documents spell it (`no_retrain`, `awaiting_approval`).
fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The cycle's story, in the order it happened.
fn story(d: &CycleDetail, config: &Config) -> String {
    let c = &d.cycle;
    let mut out = String::new();
    let outcome = c
        .outcome
        .map(|o| format!(" ({})", o.as_str()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "cycle {} · {} · {} · {} trigger · {}{outcome}",
        c.id,
        c.pipeline,
        c.cycle_date,
        c.trigger.as_str(),
        c.state.as_str()
    );
    let finished = c
        .finished_at
        .map(|t| format!(", finished {}", time(t)))
        .unwrap_or_default();
    let _ = writeln!(out, "started {}{finished}", time(c.created_at));
    if let Some(reason) = &c.reason {
        let _ = writeln!(out, "now: {reason}");
    }
    let report: Option<CheckReport> = d
        .report
        .clone()
        .and_then(|r| serde_json::from_value(r).ok());
    inputs(&mut out, c);
    if let Some(r) = &report {
        check(&mut out, r, config, c.id);
    }
    if let Some(decision) = &c.decision {
        let _ = writeln!(out, "\ndecision: {}", name(&decision.verdict));
        for reason in &decision.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
    candidate(&mut out, d);
    if !d.approvals.is_empty() {
        let _ = writeln!(out, "\napprovals");
        for a in &d.approvals {
            let _ = writeln!(
                out,
                "  {}  {} {} via {}{}",
                time(a.at),
                a.approver,
                a.decision.as_str(),
                a.channel,
                if a.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.reason)
                }
            );
        }
    }
    if !d.events.is_empty() {
        let _ = writeln!(out, "\nevents");
        for e in &d.events {
            let _ = writeln!(
                out,
                "  {}  {:<20} {}",
                time(e.at),
                e.kind.as_str(),
                e.message
            );
        }
    }
    let _ = writeln!(out, "\ntransitions");
    for t in &d.transitions {
        let from = t.from.map(|f| f.as_str()).unwrap_or("-");
        let _ = writeln!(
            out,
            "  {}  {from} → {}: {}",
            time(t.at),
            t.to.as_str(),
            t.reason
        );
    }
    out
}

fn fingerprint(out: &mut String, what: &str, f: &Fingerprint) {
    let hash = &f.blake3[..16.min(f.blake3.len())];
    let _ = writeln!(
        out,
        "  {what:<9} {} — {} rows, {} bytes, blake3 {hash}…",
        f.path, f.rows, f.bytes
    );
}

fn inputs(out: &mut String, c: &crate::store::CycleRow) {
    let Some(i) = &c.inputs else {
        return;
    };
    let _ = writeln!(out, "\ndata");
    let _ = writeln!(out, "  reference is {}", i.reference_from);
    fingerprint(out, "reference", &i.reference);
    fingerprint(out, "current", &i.current);
    let _ = writeln!(
        out,
        "  {} labelled rows in the current window",
        i.labelled_rows
    );
}

fn check(out: &mut String, r: &CheckReport, config: &Config, cycle: i64) {
    let html = crate::artifacts::report_path(&config.daemon.state_dir, &r.pipeline, cycle)
        .with_extension("html");
    let _ = writeln!(out, "\ncheck (full report: {})", html.display());
    let quality = match r.quality.passed {
        true => "passed".to_string(),
        false => "FAILED".to_string(),
    };
    let _ = writeln!(out, "  data quality: {quality}");
    for f in &r.quality.findings {
        let _ = writeln!(out, "    {}: {}", name(&f.severity), f.message);
    }
    for line in super::check::drift_text(
        &r.drift.features,
        &r.drift.dataset,
        r.drift.insufficient_data,
    )
    .lines()
    {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(p) = &r.performance {
        let value = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  champion {}: {} now, baseline {}, {} — {}",
            p.metric.name(),
            value(p.current),
            value(p.baseline),
            name(&p.status),
            p.detail
        );
    }
}

fn candidate(out: &mut String, d: &CycleDetail) {
    let c = &d.cycle;
    if let Some(v) = c.candidate_version {
        let _ = writeln!(out, "\ncandidate: v{v}");
    }
    let Some(gate) = &c.gate else {
        return;
    };
    let g = &gate.result;
    let champion = g
        .champion
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(
        out,
        "gate: {} — {} challenger {:.4} vs champion {champion} on {} holdout rows",
        if g.blessed { "blessed" } else { "NOT blessed" },
        g.metric.name(),
        g.challenger,
        g.holdout_rows
    );
    for check in &g.checks {
        let mark = if check.passed { "pass" } else { "FAIL" };
        let _ = writeln!(out, "  {mark}  {:<24} {}", check.name, check.detail);
    }
    if !gate.metrics.is_empty() {
        let _ = writeln!(
            out,
            "  {:<24} {:>10} {:>10}",
            "metric", "champion", "challenger"
        );
        for m in &gate.metrics {
            let champion = m
                .champion
                .map(|v| format!("{v:.4}"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "  {:<24} {champion:>10} {:>10.4}",
                m.metric, m.challenger
            );
        }
    }
}
