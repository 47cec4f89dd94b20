//! Bad input fails one step of one cycle, with a stored reason naming the file and column;
//! the daemon keeps serving and other pipelines are unaffected.

use std::time::Duration;

use retraind::cycle::{CycleState, Outcome, TriggerKind};
use retraind::store::CreateOutcome;
use tokio_util::sync::CancellationToken;

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
    for (name, dir) in [("p2", "missing"), ("p3", "bad")] {
        env.append_config(&format!(
            "\n[[pipeline]]\nname = \"{name}\"\n[pipeline.data]\nreference = \"data/reference.csv\"\ncurrent = \"data/{dir}/{{date}}.csv\"\ncategorical = [\"segment\"]\n[pipeline.approval]\nmode = \"auto\"\n"
        ));
    }
    let shutdown = CancellationToken::new();
    let running = retraind::daemon::start(env.config(), shutdown.clone(), false)
        .await
        .unwrap();
    let engine = running.engine.clone();
    let mut ids = Vec::new();
    for p in ["p1", "p2", "p3"] {
        match engine
            .trigger(p, TriggerKind::Manual, None, None)
            .await
            .unwrap()
        {
            CreateOutcome::Created(id) => ids.push(id),
            other => panic!("{other:?}"),
        }
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
    // Failed in the load step: the transition history says where.
    let t = engine.store().transitions(ids[1]).await.unwrap();
    assert_eq!(t.last().unwrap().from, Some(CycleState::Loading));
    let metrics = engine.metrics().render();
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
