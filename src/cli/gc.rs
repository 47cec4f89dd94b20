//! `retraind gc [--dry-run]`: collect what `[daemon.retention]` no longer keeps — version
//! directories no alias, move or cycle in flight holds beyond the newest `keep_versions`,
//! inputs and report files older than `keep_for`, staging leftovers — and say what it freed.
//! The daemon runs the same once a day; this is for a disk that cannot wait, or a look first.

use std::path::Path;
use std::process::ExitCode;

use super::{Format, open_store};
use crate::config::Config;
use crate::engine::gc;

pub(super) async fn run(
    config_path: &Path,
    dry_run: bool,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(config_path)?;
    let store = open_store(&config).await?;
    let report = gc::run(&store, &config, chrono::Utc::now(), dry_run).await?;
    store.close().await;
    match format {
        Format::Json => out!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => print_text(&report),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(r: &gc::GcReport) {
    let verb = if r.dry_run {
        "would collect"
    } else {
        "collected"
    };
    out!(
        "{verb} {} model versions and {} files ({}), and {} stored report bodies",
        r.versions.len(),
        r.files.len(),
        bytes(r.freed_bytes),
        r.report_bodies
    );
    for v in &r.versions {
        out!("  {v}");
    }
    for f in &r.files {
        out!("  {f}");
    }
    let left: Vec<String> = r
        .disk_bytes
        .iter()
        .map(|(kind, b)| format!("{kind} {}", bytes(*b)))
        .collect();
    out!("state directory: {}", left.join(", "));
}

fn bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / f64::from(1u32 << 10)),
        b => format!("{b} B"),
    }
}
