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
