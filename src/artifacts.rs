//! Where files live under the state directory — model versions, reports, the staging area,
//! the `current` link — and how they are written: atomically (temp file or directory in the
//! same folder, fsync, rename), so a crash never leaves a half-written file in place.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors writing artifacts.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source} (check free space and permissions of the state directory)")]
pub struct ArtifactError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl Fn(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of the model trained by `cycle`.
pub fn model_dir(state_dir: &Path, pipeline: &str, cycle: i64) -> PathBuf {
    state_dir
        .join("models")
        .join(pipeline)
        .join(format!("cycle-{cycle}"))
}

/// Where a trainer writes before the model is moved into place.
pub fn staging_dir(state_dir: &Path, pipeline: &str, cycle: i64) -> PathBuf {
    state_dir
        .join("staging")
        .join(format!("{pipeline}-cycle-{cycle}"))
}

/// Where downloaded inputs are kept, content-addressed.
pub fn inputs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("inputs")
}

/// File in a model directory holding the rows the model was trained on.
pub const TRAINING_DATA: &str = "training-data.parquet";
/// The training rows' profile beside them (`data::stream::StoredProfile`): what the checks
/// read instead of the rows while this version is the champion.
pub const REFERENCE_PROFILE: &str = "reference.profile";

/// File in a model directory holding the model's answers on its gate holdout, which a
/// label-free estimate is calibrated on.
pub const HOLDOUT_SCORES: &str = "holdout-scores.json";

/// The link that always points at the deployed champion's directory.
pub fn current_link(state_dir: &Path, pipeline: &str) -> PathBuf {
    state_dir.join("models").join(pipeline).join("current")
}

/// The JSON report of a cycle.
pub fn report_path(state_dir: &Path, pipeline: &str, cycle: i64) -> PathBuf {
    state_dir
        .join("reports")
        .join(pipeline)
        .join(format!("cycle-{cycle}.json"))
}

/// The HTML rendering of a cycle's report.
pub fn report_html_path(state_dir: &Path, pipeline: &str, cycle: i64) -> PathBuf {
    report_path(state_dir, pipeline, cycle).with_extension("html")
}

/// Total size in bytes of the files under `dir` (0 if unreadable).
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Write a file atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(bytes).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(err(path))
}

/// Remove a directory if it exists (a leftover of an interrupted attempt).
pub fn remove_dir_if_exists(dir: &Path) -> Result<(), ArtifactError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(dir)(e)),
        _ => Ok(()),
    }
}

/// Move a finished directory into its final place (same filesystem: atomic).
pub fn move_into_place(from: &Path, to: &Path) -> Result<(), ArtifactError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(err(parent))?;
    }
    std::fs::rename(from, to).map_err(err(to))
}

/// Point `link` at `target` atomically (a new link beside it, renamed over it).
pub fn swap_symlink(link: &Path, target: &Path) -> Result<(), ArtifactError> {
    let dir = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let tmp = dir.join(".current.tmp");
    if tmp.symlink_metadata().is_ok() {
        std::fs::remove_file(&tmp).map_err(err(&tmp))?;
    }
    std::os::unix::fs::symlink(target, &tmp).map_err(err(&tmp))?;
    std::fs::rename(&tmp, link).map_err(err(link))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_and_link_swaps() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a/b/report.json");
        write_atomic(&f, b"{}").unwrap();
        write_atomic(&f, b"{\"x\":1}").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{\"x\":1}");
        assert_eq!(
            std::fs::read_dir(f.parent().unwrap()).unwrap().count(),
            1,
            "no temp file left"
        );
        let link = current_link(dir.path(), "p");
        for n in [1, 2] {
            let target = model_dir(dir.path(), "p", n);
            std::fs::create_dir_all(&target).unwrap();
            swap_symlink(&link, &target).unwrap();
            assert_eq!(std::fs::read_link(&link).unwrap(), target);
        }
        remove_dir_if_exists(&dir.path().join("nope")).unwrap();
    }
}
