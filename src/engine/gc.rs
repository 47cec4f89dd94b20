//! Retention at work: what `retraind gc` and the daemon's daily run delete, by the rule of
//! [`crate::retention`]. A version's files go only after the store marked it collected, in a
//! statement that checks again that no alias, open move or cycle in flight holds it; inputs
//! an in-flight cycle read, the staging folder of a cycle in flight and anything younger
//! than `keep_for` stay; stored report bodies older than `keep_for` give way to a note of
//! when they were collected, their plotted figures kept. A dry run lists the same things and
//! deletes nothing. It reads the
//! store and the state directory and deletes files; it never moves a cycle.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::artifacts;
use crate::config::Config;
use crate::retention::{self, Pinned, VersionFacts};
use crate::store::{Store, StoreError};

/// What one run collected (or, dry, would collect), and what the state directory holds after.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Versions whose files were collected, as `pipeline v<N>`.
    pub versions: Vec<String>,
    /// Input, report and staging files and folders deleted.
    pub files: Vec<String>,
    /// Stored report bodies collected (their figures stay).
    pub report_bodies: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// What is left, by kind (`models`, `inputs`, `reports`, `staging`).
    pub disk_bytes: Vec<(String, u64)>,
}

/// Why a run could not finish.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifact(#[from] artifacts::ArtifactError),
}

/// Collect what retention no longer keeps, for every configured pipeline.
pub async fn run(
    store: &Store,
    config: &Config,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<GcReport, GcError> {
    let state = &config.daemon.state_dir;
    let keep = &config.daemon.retention;
    let mut report = GcReport {
        dry_run,
        ..GcReport::default()
    };
    let active = store.active_cycles().await?;
    let mut in_flight: BTreeSet<i64> = active.iter().filter_map(|c| c.candidate_version).collect();
    in_flight.extend(store.open_moves().await?.iter().map(|m| m.version_id));
    for p in &config.pipelines {
        let pinned = Pinned {
            champion: store.alias(&p.name, "champion").await?.map(|v| v.id),
            previous: store.alias(&p.name, "previous").await?.map(|v| v.id),
            in_flight: in_flight.clone(),
        };
        let collected = store.collected(&p.name).await?;
        let versions = store.versions(&p.name).await?;
        let facts: Vec<VersionFacts> = versions
            .iter()
            .map(|v| VersionFacts {
                id: v.id,
                version: v.version,
                collected: collected.contains_key(&v.id),
            })
            .collect();
        for id in retention::to_collect(&facts, &pinned, keep.keep_versions) {
            let Some(v) = versions.iter().find(|v| v.id == id) else {
                continue;
            };
            if !dry_run && !store.mark_collected(id, now).await? {
                continue; // held after all (a deploy began meanwhile)
            }
            let dir = PathBuf::from(&v.path);
            report.freed_bytes += artifacts::dir_size(&dir);
            if !dry_run {
                artifacts::remove_dir_if_exists(&dir)?;
            }
            report.versions.push(format!("{} v{}", p.name, v.version));
        }
        let reports = state.join("reports").join(&p.name);
        sweep(
            &reports,
            now,
            keep.keep_for,
            &BTreeSet::new(),
            dry_run,
            &mut report,
        )?;
    }
    let cutoff = now - chrono::Duration::from_std(keep.keep_for).unwrap_or(chrono::Duration::MAX);
    report.report_bodies = match dry_run {
        true => store.reports_before(cutoff).await?,
        false => store.collect_reports(cutoff, now).await?,
    };
    let read: BTreeSet<String> = active
        .iter()
        .filter_map(|c| c.inputs.as_ref())
        .flat_map(|i| [&i.reference, &i.current])
        .flat_map(|f| {
            f.files
                .iter()
                .map(|d| d.blake3.clone())
                .chain([f.blake3.clone()])
        })
        .collect();
    let inputs = artifacts::inputs_dir(state);
    sweep(&inputs, now, keep.keep_for, &read, dry_run, &mut report)?;
    let staging: BTreeSet<String> = active
        .iter()
        .map(|c| format!("{}-cycle-{}", c.pipeline, c.id))
        .collect();
    sweep_staging(&state.join("staging"), &staging, dry_run, &mut report)?;
    report.disk_bytes = disk_bytes(state);
    Ok(report)
}

/// Bytes under the state directory by kind.
pub fn disk_bytes(state: &Path) -> Vec<(String, u64)> {
    ["models", "inputs", "reports", "staging"]
        .into_iter()
        .map(|kind| (kind.to_string(), artifacts::dir_size(&state.join(kind))))
        .collect()
}

/// Delete the files directly in `dir` older than `keep_for`, unless their name starts with
/// one of `held` (a content hash an in-flight cycle read).
fn sweep(
    dir: &Path,
    now: DateTime<Utc>,
    keep_for: std::time::Duration,
    held: &BTreeSet<String>,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // nothing written there yet
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let written = meta.modified().map(DateTime::<Utc>::from);
        let old = written.is_ok_and(|w| retention::expired(w, now, keep_for));
        if !meta.is_file() || !old || held.iter().any(|h| name.starts_with(h.as_str())) {
            continue;
        }
        report.freed_bytes += meta.len();
        report.files.push(entry.path().display().to_string());
        if !dry_run {
            artifacts::remove_file_if_exists(&entry.path())?;
        }
    }
    Ok(())
}

/// Delete staging folders of cycles no longer in flight (a crash's leftovers).
fn sweep_staging(
    dir: &Path,
    active: &BTreeSet<String>,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<(), GcError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if active.contains(&name) {
            continue;
        }
        report.freed_bytes += artifacts::dir_size(&entry.path());
        report.files.push(entry.path().display().to_string());
        if !dry_run {
            artifacts::remove_dir_if_exists(&entry.path())?;
        }
    }
    Ok(())
}
