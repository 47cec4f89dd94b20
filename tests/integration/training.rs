//! Training backends through whole cycles: the command backend running a real Python
//! trainer and scorer (examples/command-trainer, standard library only), and its failure
//! modes — non-zero exit, malformed metrics, a hang past the timeout — each failing the
//! cycle with the reason and registering nothing.

use std::time::Duration;

use retraind::cycle::{CycleState, Outcome};

use crate::helpers::{Db, Env, Opts, run_cycle};

fn command_config(env: &str, timeout: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/command-trainer");
    format!(
        r#"
[pipeline.train]
backend = "command"
timeout = "{timeout}"

[pipeline.train.command]
program = ["python3", "{dir}/train.py", "{{train_path}}", "{{model_dir}}", "{{metrics_path}}", "{{target}}"]
predict = ["python3", "{dir}/predict.py", "{{model_dir}}", "{{input_path}}", "{{output_path}}"]
data_format = "csv"
env = {{ {env} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_trainer_trains_scores_and_deploys() {
    let opts = Opts {
        extra: command_config("", "120s"),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    let store = running.engine.store().clone();
    let versions = store.versions("p1").await.unwrap();
    assert_eq!(versions.len(), 1);
    let v = &versions[0];
    assert_eq!(v.lineage["backend"], "command");
    // Validation accuracy from the trainer's metrics file; holdout accuracy from the gate,
    // which scored the model with the predict command.
    assert!(
        v.metrics["valid_accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        v.metrics
    );
    assert!(
        v.metrics["holdout_accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        v.metrics
    );
    assert!(
        v.metrics["holdout_roc_auc"].as_f64().unwrap() > 0.9,
        "{}",
        v.metrics
    );
    let dir = std::path::Path::new(&v.path);
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["format"], "command-v1");
    assert_eq!(card["training"]["history"].as_array().unwrap().len(), 30);
    assert!(card["metrics"]["model_size_mb"].as_f64().unwrap() > 0.0);
    assert!(dir.join("model/model.json").is_file());
    assert!(!dir.join("work").exists(), "scratch files are removed");
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

async fn failing(mode: &str, timeout: &str, expect: &[&str]) {
    let pidfile = tempfile::NamedTempFile::new().unwrap();
    let env_line = format!(
        "RETRAIND_EXAMPLE_MODE = \"{mode}\", RETRAIND_EXAMPLE_PIDFILE = \"{}\"",
        pidfile.path().display()
    );
    let opts = Opts {
        extra: command_config(&env_line, timeout),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.state, CycleState::Failed, "{mode}: {:?}", row.reason);
    let reason = row.reason.clone().unwrap_or_default();
    for e in expect {
        assert!(reason.contains(e), "{mode}: `{e}` not in {reason}");
    }
    let store = running.engine.store().clone();
    assert!(store.versions("p1").await.unwrap().is_empty(), "{mode}");
    let models = env.dir.path().join("state/models/p1");
    let leftovers: Vec<_> = std::fs::read_dir(&models)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{mode}: {leftovers:?}");
    // Nor a staging folder with a copy of the training rows.
    let staging = env.dir.path().join("state/staging");
    let staged: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(staged.is_empty(), "{mode}: {staged:?}");
    if mode == "hang" {
        // The whole process group was killed, not left running.
        let pid = std::fs::read_to_string(pidfile.path()).unwrap();
        let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
        crate::helpers::eventually(Duration::from_secs(10), "the trainer to die", || {
            let gone = !proc.exists()
                || std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z "));
            async move { gone.then_some(()) }
        })
        .await;
    }
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_trainer_exiting_non_zero_fails_the_cycle() {
    failing("fail", "60s", &["exited with", "cannot converge"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_trainer_writing_bad_metrics_fails_the_cycle() {
    failing("bad_metrics", "60s", &["not a JSON object"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_trainer_is_killed_at_the_timeout() {
    failing("hang", "3s", &["timed out after 3s"]).await;
}
