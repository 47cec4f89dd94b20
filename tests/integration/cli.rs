//! The command line as a user runs it: `config check`, `status` and `history` as JSON.

use std::process::Command;

fn retraind(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_retraind"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_config_checks_clean() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/retraind.toml");
    let (code, out, err) = retraind(&["config", "check", path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK (1 pipeline(s))"), "{out}");
}

#[test]
fn a_bad_config_names_every_key_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), "a,target\n1,0\n").unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[[pipeline]]
name = "p"
schedule = "0 0 25 * * *"
shedule = "0 0 2 * * *"
[pipeline.data]
reference = "ref.csv"
current = "{date}.csv"
[pipeline.drift]
alpha = -0.05
"#,
    )
    .unwrap();
    let (code, out, err) = retraind(&["config", "check", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    for key in [
        "pipeline[0].schedule",
        "pipeline[0].shedule",
        "pipeline[0].drift.alpha",
    ] {
        assert!(err.contains(key), "{key} not named in:\n{err}{out}");
    }
    assert!(err.contains("3 problem(s)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_history_as_json() {
    use crate::helpers::{Db, Env, Opts};
    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = retraind::daemon::start(env.config(), shutdown.clone(), false)
        .await
        .unwrap();
    let id = match running
        .engine
        .trigger("p1", retraind::cycle::TriggerKind::Manual, None, None)
        .await
        .unwrap()
    {
        retraind::store::CreateOutcome::Created(id) => id,
        other => panic!("{other:?}"),
    };
    let done = running.engine.wait_terminal(id).await.unwrap();
    assert_eq!(
        done.outcome,
        Some(retraind::cycle::Outcome::Deployed),
        "{:?}",
        done.reason
    );
    shutdown.cancel();
    running.drain(std::time::Duration::from_secs(10)).await;

    let config = env.config_path.to_str().unwrap();
    let (code, out, err) = retraind(&["--config", config, "status", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["name"], "p1");
    assert_eq!(v[0]["champion"]["version"], 1);
    assert!(v[0]["champion"]["holdout_accuracy"].as_f64().unwrap() > 0.8);
    assert_eq!(v[0]["last_cycle"]["outcome"], "deployed");
    assert!(v[0]["active_cycle"].is_null());
    assert!(v[0]["next_scheduled_at"].is_string());

    let (code, out, err) = retraind(&[
        "--config", config, "history", "--format", "json", "--limit", "5",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["id"], id);
    assert_eq!(v[0]["state"], "completed");
    assert_eq!(v[0]["trigger"], "manual");
    assert_eq!(v[0]["date"], env.date);
}
