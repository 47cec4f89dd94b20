//! Where files live under the state directory — model versions, reports, the staging area,
//! the `current` link — and how they are written: atomically (temp file or directory in the
//! same folder, fsync, rename), so a crash never leaves a half-written file in place. They
//! are also durable before anyone names them: every file of a model directory and the
//! directory itself are fsynced before it is renamed into place, and the folder that holds a
//! renamed file, directory or link is fsynced after the rename, so after a power loss the
//! store (written last) never names a version whose files are empty or a `current` link that
//! reverted. Temporary names are unique per process and call: two writers never share one.

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

/// A temporary name beside `path`, unique to this process and call.
fn temp_name(dir: &Path, name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Flush a file or a directory (its entries) to the disk.
fn sync_path(path: &Path) -> Result<(), ArtifactError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(err(path))?;
    #[cfg(test)]
    durability::record(durability::Op::Sync(path.to_path_buf()));
    Ok(())
}

/// Rename, then flush the folder that now holds `to` (a rename is durable only then).
fn rename_durably(from: &Path, to: &Path) -> Result<(), ArtifactError> {
    std::fs::rename(from, to).map_err(err(to))?;
    #[cfg(test)]
    durability::record(durability::Op::Rename(to.to_path_buf()));
    sync_path(to.parent().unwrap_or(Path::new(".")))
}

/// Flush every file under `dir` and every folder, `dir` last.
fn sync_tree(dir: &Path) -> Result<(), ArtifactError> {
    for entry in std::fs::read_dir(dir).map_err(err(dir))? {
        let entry = entry.map_err(err(dir))?;
        let kind = entry.file_type().map_err(err(dir))?;
        if kind.is_dir() {
            sync_tree(&entry.path())?;
        } else if kind.is_file() {
            sync_path(&entry.path())?;
        }
    }
    sync_path(dir)
}

/// Write a file atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = temp_name(dir, name);
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(bytes).map_err(err(&tmp))?;
    f.sync_all().map_err(err(&tmp))?;
    rename_durably(&tmp, path)
}

/// Remove a directory if it exists (a leftover of an interrupted attempt).
pub fn remove_dir_if_exists(dir: &Path) -> Result<(), ArtifactError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(dir)(e)),
        _ => Ok(()),
    }
}

/// Remove a file if it exists.
pub fn remove_file_if_exists(path: &Path) -> Result<(), ArtifactError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(err(path)(e)),
        _ => Ok(()),
    }
}

/// Move a finished directory into its final place (same filesystem: atomic), every file in
/// it flushed first and the folder that receives it after.
pub fn move_into_place(from: &Path, to: &Path) -> Result<(), ArtifactError> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(err(parent))?;
    }
    sync_tree(from)?;
    rename_durably(from, to)
}

/// Point `link` at `target` atomically (a new link beside it, renamed over it) and durably.
pub fn swap_symlink(link: &Path, target: &Path) -> Result<(), ArtifactError> {
    let dir = link.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let name = link.file_name().and_then(|n| n.to_str()).unwrap_or("link");
    let tmp = temp_name(dir, name);
    std::os::unix::fs::symlink(target, &tmp).map_err(err(&tmp))?;
    rename_durably(&tmp, link)
}

/// What the tests see of the writes: the syncs and renames of this thread, in order.
#[cfg(test)]
pub(crate) mod durability {
    use std::cell::RefCell;
    use std::path::PathBuf;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Op {
        Sync(PathBuf),
        Rename(PathBuf),
    }

    thread_local! {
        static LOG: RefCell<Vec<Op>> = const { RefCell::new(Vec::new()) };
    }

    pub fn record(op: Op) {
        LOG.with(|l| l.borrow_mut().push(op));
    }

    /// The operations recorded since the last call.
    pub fn take() -> Vec<Op> {
        LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
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

    /// A model directory is flushed file by file, then itself, before the rename; the
    /// folder that receives it after; a link swap and an atomic write flush their folder.
    #[test]
    fn files_are_durable_before_they_are_named() {
        use durability::Op::{Rename, Sync};
        let dir = tempfile::tempdir().unwrap();
        let staging = staging_dir(dir.path(), "p", 1);
        std::fs::create_dir_all(staging.join("weights")).unwrap();
        std::fs::write(staging.join("model.json"), "{}").unwrap();
        std::fs::write(staging.join("weights/w.bin"), [0u8; 8]).unwrap();
        let target = model_dir(dir.path(), "p", 1);
        durability::take();
        move_into_place(&staging, &target).unwrap();
        let ops = durability::take();
        let synced = |p: PathBuf| ops.iter().position(|o| *o == Sync(p.clone()));
        let renamed = ops
            .iter()
            .position(|o| *o == Rename(target.clone()))
            .unwrap();
        for p in [
            staging.join("model.json"),
            staging.join("weights/w.bin"),
            staging.join("weights"),
            staging.clone(),
        ] {
            assert!(
                synced(p.clone()).is_some_and(|i| i < renamed),
                "{p:?}: {ops:?}"
            );
        }
        assert_eq!(
            ops.last(),
            Some(&Sync(target.parent().unwrap().to_path_buf()))
        );

        let link = current_link(dir.path(), "p");
        swap_symlink(&link, &target).unwrap();
        assert_eq!(
            durability::take(),
            [
                Rename(link.clone()),
                Sync(link.parent().unwrap().to_path_buf())
            ]
        );
        let f = dir.path().join("r/report.json");
        write_atomic(&f, b"{}").unwrap();
        assert_eq!(
            durability::take(),
            [Rename(f.clone()), Sync(dir.path().join("r"))]
        );
    }
}
