//! Retention keeps the disk bounded: 1,000 cycles' versions, each with its model files, and
//! their report files; `retraind gc --dry-run` lists and deletes nothing, `retraind gc`
//! keeps the champion, `previous`, the candidate of a cycle in flight and the newest
//! `keep_versions`, and report files younger than `keep_for`. A rollback to a kept version
//! works; one to a collected version is refused with what happened and what to do.

use std::path::Path;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use retraind::cycle::{CycleState, TriggerKind};
use retraind::engine::RollbackCause;
use retraind::records::{Lineage, VersionMetrics};
use retraind::store::{
    ChampionMove, CreateOutcome, CycleUpdate, DeployKind, NewVersion, ReportSummary, Store,
};

use crate::helpers::{Db, Env, Opts, retraind, start_daemon};

const CYCLES: i64 = 1000;
const MODEL_BYTES: usize = 4096;

/// A cycle walked to `state` along the legal path; its id.
async fn cycle_at(store: &Store, state: CycleState, candidate: Option<i64>) -> i64 {
    use CycleState::*;
    let CreateOutcome::Created(id) = store
        .create_cycle("p1", TriggerKind::Manual, "d", None, Utc::now())
        .await
        .unwrap()
    else {
        panic!("a cycle is in flight")
    };
    let path = [
        Scheduled, Loading, Checking, Decided, Training, Trained, Evaluating,
    ];
    for w in path.windows(2) {
        if w[0] == state {
            break;
        }
        let update = CycleUpdate {
            candidate_version: candidate.filter(|_| w[1] == Evaluating),
            ..CycleUpdate::default()
        };
        store
            .transition(id, w[0], w[1], "walk", update, Utc::now())
            .await
            .unwrap();
    }
    id
}

/// A trained version with a model file; the cycle then ends.
async fn trained_version(store: &Store, state: &Path) -> (i64, i64) {
    let id = cycle_at(store, CycleState::Training, None).await;
    let dir = state.join(format!("models/p1/cycle-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.bin"), vec![7u8; MODEL_BYTES]).unwrap();
    let v = store
        .register_trained(
            NewVersion {
                pipeline: "p1".into(),
                cycle_id: id,
                path: dir.display().to_string(),
                metrics: VersionMetrics::default(),
                lineage: Lineage::default(),
            },
            "trained",
            Utc::now(),
        )
        .await
        .unwrap();
    store
        .transition(
            id,
            CycleState::Trained,
            CycleState::Failed,
            "done",
            CycleUpdate::default(),
            Utc::now(),
        )
        .await
        .unwrap();
    (v.id, id)
}

async fn promote(store: &Store, version_id: i64) {
    let mv = store
        .begin_move("p1", DeployKind::Deploy, version_id, None, Utc::now())
        .await
        .unwrap();
    let m = ChampionMove {
        pipeline: "p1",
        version_id,
        kind: DeployKind::Deploy,
        cycle: None,
        actor: "test",
        reason: "deploy",
        move_id: mv.id,
    };
    assert!(store.promote(&m, Utc::now()).await.unwrap());
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cycles_keep_the_disk_bounded_on_sqlite() {
    a_thousand_cycles_keep_the_disk_bounded(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cycles_keep_the_disk_bounded_on_postgresql() {
    a_thousand_cycles_keep_the_disk_bounded(Db::Postgres).await;
}

async fn a_thousand_cycles_keep_the_disk_bounded(db: Db) {
    let Some(env) = Env::new(db, Opts::default()).await else {
        return;
    };
    env.append_config("\n[daemon.retention]\nkeep_versions = 10\nkeep_for = \"30d\"\n");
    let state = env.dir.path().join("state");
    let store = env.store().await;
    store.ensure_pipeline("p1", Utc::now()).await.unwrap();
    let mut versions = Vec::new();
    for _ in 0..CYCLES {
        versions.push(trained_version(&store, &state).await);
    }
    // v980 then v990 deployed: v990 the champion, v980 `previous`; v5 the candidate of a
    // cycle in flight.
    promote(&store, versions[979].0).await;
    promote(&store, versions[989].0).await;
    let in_flight = cycle_at(&store, CycleState::Evaluating, Some(versions[4].0)).await;
    // A report file per cycle; those of the first 900 cycles written 40 days ago.
    let reports = state.join("reports/p1");
    std::fs::create_dir_all(&reports).unwrap();
    let old = SystemTime::now() - Duration::from_secs(40 * 86_400);
    for (i, (_, cycle)) in versions.iter().enumerate() {
        let f = reports.join(format!("cycle-{cycle}.json"));
        std::fs::write(&f, "{}").unwrap();
        if i < 900 {
            let file = std::fs::File::options().write(true).open(&f).unwrap();
            file.set_modified(old).unwrap();
        }
    }
    // Stored reports: three written 40 days ago, one today.
    let summary = |share: f64| ReportSummary {
        drift_share: Some(share),
        ..ReportSummary::default()
    };
    let body = serde_json::json!({"drift": {"dataset": {"drifted_share": 0.5}}});
    let forty_days_ago = Utc::now() - chrono::Duration::days(40);
    for (i, at) in [
        (0, forty_days_ago),
        (1, forty_days_ago),
        (2, forty_days_ago),
        (999, Utc::now()),
    ] {
        let cycle = versions[i].1;
        store
            .save_report(cycle, "p1", &summary(0.5), &body, at)
            .await
            .unwrap();
    }
    let config = env.config_path.to_str().unwrap();
    let models = state.join("models/p1");

    let (code, out, err) = retraind(&["--config", config, "gc", "--dry-run", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["versions"].as_array().unwrap().len(), 987, "{out:.400}");
    assert_eq!(dry["files"].as_array().unwrap().len(), 900);
    assert_eq!(dry["report_bodies"], 3);
    assert_eq!(count(&models), 1000, "a dry run deletes nothing");
    assert_eq!(count(&reports), 1000);

    let (code, out, err) = retraind(&["--config", config, "gc"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(
            "collected 987 model versions and 900 files (3.9 MiB), and 3 stored report bodies"
        ),
        "{out:.300}"
    );
    let mut kept: Vec<String> = std::fs::read_dir(&models)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort_by_key(|n| n.trim_start_matches("cycle-").parse::<i64>().unwrap_or(0));
    let cycle_of = |i: usize| format!("cycle-{}", versions[i].1);
    let mut want: Vec<String> = [4, 979, 989].into_iter().map(cycle_of).collect();
    want.extend((990..1000).map(cycle_of));
    assert_eq!(kept, want);
    assert_eq!(count(&reports), 100);
    // Old report bodies gave way to a note; their figures and the recent body stay.
    let first = versions[0].1;
    let collected = store.report(first).await.unwrap().unwrap();
    assert!(collected["collected_at"].is_string(), "{collected}");
    assert_eq!(
        store.report(versions[999].1).await.unwrap(),
        Some(body.clone())
    );
    let shares: Vec<Option<f64>> = store
        .report_points("p1", 10)
        .await
        .unwrap()
        .iter()
        .map(|p| p.drift_share)
        .collect();
    assert_eq!(shares, [Some(0.5); 4]);
    // Disk bounded: 13 models of 4 KiB, whatever the number of cycles.
    let (code, out, _) = retraind(&["--config", config, "gc", "--format", "json"]);
    assert_eq!(code, 0);
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again["versions"].as_array().unwrap().len(), 0);
    assert_eq!(
        again["disk_bytes"][0],
        serde_json::json!(["models", 13 * MODEL_BYTES])
    );
    // Every row stays: the history of all 1,000 versions still reads.
    assert_eq!(store.versions("p1").await.unwrap().len(), 1000);
    assert_eq!(store.collected("p1").await.unwrap().len(), 987);

    // Rollbacks: to a collected version refused, saying why; to a kept one done. (The cycle
    // in flight ends first: the daemon would resume it.)
    store
        .transition(
            in_flight,
            CycleState::Evaluating,
            CycleState::Failed,
            "test over",
            CycleUpdate::default(),
            Utc::now(),
        )
        .await
        .unwrap();
    let (running, shutdown) = start_daemon(&env, false).await;
    let engine = running.engine.clone();
    let page = reqwest::get(format!("http://{}/reports/{first}", running.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<h1>Report collected</h1>") && page.contains("collected by retention on"),
        "{page:.300}"
    );
    let gone = engine
        .rollback("p1", Some(3), "ops", "test", RollbackCause::Manual)
        .await
        .unwrap_err();
    let text = gone.to_string();
    assert!(
        text.starts_with("v3 of `p1` was collected by retention on ")
            && text.contains("pick a kept version from `retraind models p1`"),
        "{text}"
    );
    assert_eq!(gone.http_status(), 409);
    let back = engine
        .rollback("p1", Some(995), "ops", "test", RollbackCause::Manual)
        .await
        .unwrap();
    assert_eq!(back.version, 995);
    assert_eq!(
        std::fs::read_link(models.join("current")).unwrap(),
        std::path::PathBuf::from(&back.path)
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
