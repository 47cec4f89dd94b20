//! Bad input fails one step of one cycle, with a stored reason naming the file and column;
//! the daemon keeps serving and other pipelines are unaffected.

use std::time::Duration;

use retraind::cycle::{CycleState, Outcome, TriggerKind};
use retraind::store::CreateOutcome;

use crate::helpers::{Db, Env, Opts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_one_cycle_and_other_pipelines_go_on() {
    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    let data = env.dir.path().join("data");
    std::fs::create_dir_all(data.join("missing")).unwrap();
    std::fs::create_dir_all(data.join("bad")).unwrap();
    std::fs::write(
        data.join("bad").join(format!("{}.csv", env.date)),
        "feature_a,feature_b,feature_c,value,segment,target\nhigh,1,1,1,retail,0\n",
    )
    .unwrap();
    // p4: half of feature_b is empty in the current window (quality gate).
    std::fs::create_dir_all(data.join("holes")).unwrap();
    let full =
        std::fs::read_to_string(data.join("current").join(format!("{}.csv", env.date))).unwrap();
    let holed: Vec<String> = full
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i > 0 && i % 2 == 0 {
                let mut cells: Vec<&str> = line.split(',').collect();
                cells[1] = "";
                cells.join(",")
            } else {
                line.to_string()
            }
        })
        .collect();
    std::fs::write(
        data.join("holes").join(format!("{}.csv", env.date)),
        holed.join("\n"),
    )
    .unwrap();
    for (name, dir) in [("p2", "missing"), ("p3", "bad"), ("p4", "holes")] {
        env.append_config(&format!(
            "\n[[pipeline]]\nname = \"{name}\"\n[pipeline.data]\nreference = \"data/reference.csv\"\ncurrent = \"data/{dir}/{{date}}.csv\"\ncategorical = [\"segment\"]\n[pipeline.approval]\nmode = \"auto\"\n"
        ));
    }
    let (running, shutdown) = crate::helpers::start_daemon(&env, false).await;
    let engine = running.engine.clone();
    let mut ids = Vec::new();
    for p in ["p1", "p2", "p3", "p4"] {
        ids.push(crate::helpers::start_cycle(&engine, p).await);
    }
    let mut ends = Vec::new();
    for id in &ids {
        ends.push(
            tokio::time::timeout(Duration::from_secs(120), engine.wait_terminal(*id))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(
        ends[0].outcome,
        Some(Outcome::Deployed),
        "{:?}",
        ends[0].reason
    );
    for (end, want) in [
        (&ends[1], format!("missing/{}.csv", env.date)),
        (&ends[2], "`feature_a` is str".to_string()),
    ] {
        assert_eq!(end.state, CycleState::Failed);
        assert_eq!(end.outcome, Some(Outcome::Failed));
        let reason = end.reason.clone().unwrap_or_default();
        assert!(
            reason.contains(&want),
            "reason {reason:?} should name {want}"
        );
    }
    // Bad data never trains: p4 ends skipped with the quality finding as its reason.
    assert_eq!(ends[3].state, CycleState::Skipped, "{:?}", ends[3].reason);
    assert_eq!(ends[3].outcome, Some(Outcome::QualityFailed));
    assert!(
        ends[3]
            .reason
            .clone()
            .unwrap_or_default()
            .contains("`feature_b` is empty in 50.0% of current rows"),
        "{:?}",
        ends[3].reason
    );
    assert!(engine.store().versions("p4").await.unwrap().is_empty());
    // Failed in the load step: the transition history says where.
    let t = engine.store().transitions(ids[1]).await.unwrap();
    assert_eq!(t.last().unwrap().from, Some(CycleState::Loading));
    let metrics = engine.metrics().render();
    assert!(
        metrics.contains(
            "retraind_data_quality_failures_total{check=\"null_rate\",pipeline=\"p4\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("retraind_cycles_total{outcome=\"failed\",pipeline=\"p2\"} 1"),
        "{metrics}"
    );
    let health = reqwest::get(format!("http://{}/healthz", running.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The next cycle of a failed pipeline may start.
    assert!(matches!(
        engine
            .trigger("p2", TriggerKind::Manual, None, None)
            .await
            .unwrap(),
        CreateOutcome::Created(_)
    ));
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

/// The bad-input corpus for data files: each gives a clear error (exit 1, naming the file)
/// or an honest verdict (insufficient data, a quality failure) — never a panic.
#[test]
fn bad_data_files_give_clear_errors_never_panics() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = d.join("good.csv");
    retraind::demo::generate(&good, 500, retraind::demo::Regime::NORMAL, 1).unwrap();
    let text = std::fs::read_to_string(&good).unwrap();
    let header = text.lines().next().unwrap().to_string();
    let write = |name: &str, bytes: &[u8]| {
        let p = d.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    // A valid Parquet file, then the same file cut in half.
    let mut df = CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(good.clone()))
        .unwrap()
        .finish()
        .unwrap();
    let parquet = d.join("good.parquet");
    ParquetWriter::new(std::fs::File::create(&parquet).unwrap())
        .finish(&mut df)
        .unwrap();
    let bytes = std::fs::read(&parquet).unwrap();
    let all_nan: String = std::iter::once(header.clone())
        .chain(text.lines().skip(1).map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells[0] = "";
            cells.join(",")
        }))
        .collect::<Vec<_>>()
        .join("\n");
    let mut non_utf8 = text.clone().into_bytes();
    let at = non_utf8.iter().position(|b| *b == b'r').unwrap(); // inside "retail"
    non_utf8[at] = 0xff;
    let cases: Vec<(&str, std::path::PathBuf, i32, &str)> = vec![
        ("empty file", write("empty.csv", b""), 1, "empty.csv"),
        (
            "header only",
            write("header.csv", format!("{header}\n").as_bytes()),
            1,
            "has no rows",
        ),
        (
            "missing column",
            write("missing.csv", b"feature_b,target\n1,0\n"),
            1,
            "`feature_a` is missing",
        ),
        (
            "wrong type",
            write(
                "text.csv",
                format!("{header}\nhigh,1,1,1,retail,0\n").as_bytes(),
            ),
            1,
            "expected a numerical type",
        ),
        (
            "truncated parquet",
            write("cut.parquet", &bytes[..bytes.len() / 2]),
            1,
            "cut.parquet",
        ),
        (
            "unknown format",
            write("data.xlsx", b"PK"),
            1,
            "unknown format",
        ),
        (
            "all-NaN column",
            write("nan.csv", all_nan.as_bytes()),
            4,
            "feature_a",
        ),
        (
            "one row",
            write(
                "one.csv",
                format!("{header}\n{}\n", text.lines().nth(1).unwrap()).as_bytes(),
            ),
            0,
            "insufficient_data",
        ),
        ("non-UTF-8", write("bytes.csv", &non_utf8), -1, ""),
        ("valid parquet", parquet.clone(), 0, "\"rows\": 500"),
    ];
    for (what, path, want_code, want_text) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_retraind"))
            .args([
                "check",
                "--reference",
                good.to_str().unwrap(),
                "--current",
                path.to_str().unwrap(),
                "--format",
                "json",
            ])
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_ne!(code, 101, "{what}: panicked:\n{text}");
        assert!(!text.contains("panicked"), "{what}: {text}");
        if want_code >= 0 {
            assert_eq!(code, want_code, "{what}: {text}");
            assert!(
                text.contains(want_text),
                "{what}: `{want_text}` not in:\n{text}"
            );
        } else {
            // Either a clear error naming the file, or a report: both are fine, a panic is not.
            assert!(
                code == 1 && text.contains("bytes.csv") || code == 0 || code == 3 || code == 4,
                "{what}: {code} {text}"
            );
        }
    }
}

/// Another process holds SQLite's write lock for longer than the busy timeout (10 s): the
/// step's write fails as "database is locked", the step is retried with backoff, the daemon
/// keeps serving, and the cycle completes once the lock is gone — nothing failed, nothing
/// doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_store_delays_the_cycle_and_nothing_breaks() {
    use retraind::cycle::{CycleState, Outcome};
    use sqlx::Connection;

    use crate::helpers::{Db, Env, Opts, start_cycle, start_daemon, wait_state};

    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    let (running, shutdown) = start_daemon(&env, false).await;
    let base = format!("http://{}", running.addr);
    let store = running.engine.store().clone();
    // A second writer (as `sqlite3 retraind.db` with an open transaction would be).
    sqlx::any::install_default_drivers();
    let mut other = sqlx::AnyConnection::connect(&env.store_url).await.unwrap();
    let id = start_cycle(&running.engine, "p1").await;
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut other)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(13)).await;
    // Blocked, not failed: unlocked, the cycle takes about a second.
    let held = store.cycle(id).await.unwrap().unwrap();
    assert!(!held.state.is_terminal(), "{held:?}");
    // Still serving while the store is locked.
    let health = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .status();
    assert_eq!(health, 200);
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    let c = wait_state(
        &store,
        id,
        CycleState::Completed,
        std::time::Duration::from_secs(120),
    )
    .await;
    assert_eq!(c.outcome, Some(Outcome::Deployed), "{:?}", c.reason);
    assert_eq!(store.versions("p1").await.unwrap().len(), 1);
    shutdown.cancel();
    running.drain(std::time::Duration::from_secs(10)).await;
}

/// The state directory's disk is full: the step that writes fails with the OS's reason,
/// nothing is half-registered (no version, empty staging), the daemon goes on, and once
/// space is back the next cycle deploys. The disk is a 4 MB tmpfs (mounting needs root, as
/// CI has).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_step_with_its_reason_and_registers_nothing() {
    use retraind::cycle::{CycleState, Outcome};

    use crate::helpers::{Db, Env, Opts, start_cycle, start_daemon, unavailable, wait_state};

    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    // The store lives elsewhere; the state directory (models, staging, reports) is the tiny
    // disk.
    let db_dir = env.dir.path().join("db");
    std::fs::create_dir_all(&db_dir).unwrap();
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    let config = config.replace(
        &env.store_url,
        &format!("sqlite://{}", db_dir.join("retraind.db").display()),
    );
    std::fs::write(&env.config_path, config).unwrap();
    let state = env.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&state)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        unavailable("mounting a tmpfs (root)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    // Fill it, leaving 8 KB.
    let filler = state.join("filler");
    let free = 4 * 1024 * 1024 - 8 * 1024;
    std::fs::write(&filler, vec![0u8; free]).ok();

    let (running, shutdown) = start_daemon(&env, false).await;
    let store = running.engine.store().clone();
    let id = start_cycle(&running.engine, "p1").await;
    let failed = wait_state(
        &store,
        id,
        CycleState::Failed,
        std::time::Duration::from_secs(120),
    )
    .await;
    let reason = failed.reason.unwrap_or_default();
    assert!(reason.contains("No space left on device"), "{reason}");
    assert!(store.versions("p1").await.unwrap().is_empty());
    let staging: Vec<_> = std::fs::read_dir(state.join("staging"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "{staging:?}");
    assert_eq!(
        reqwest::get(format!("http://{}/healthz", running.addr))
            .await
            .unwrap()
            .status(),
        200
    );
    // Space is back: the next cycle deploys.
    std::fs::remove_file(&filler).unwrap();
    let id = start_cycle(&running.engine, "p1").await;
    let done = wait_state(
        &store,
        id,
        CycleState::Completed,
        std::time::Duration::from_secs(120),
    )
    .await;
    assert_eq!(done.outcome, Some(Outcome::Deployed), "{:?}", done.reason);
    shutdown.cancel();
    running.drain(std::time::Duration::from_secs(10)).await;
}
