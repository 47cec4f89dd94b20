//! Training backends through whole cycles: a burn regressor judged on RMSE from its first
//! model through a drift retrain; the command backend running a real Python trainer and
//! scorer (examples/command-trainer, standard library only), and its failure modes —
//! non-zero exit, malformed metrics, a hang past the timeout — each failing the cycle with
//! the reason and registering nothing.

use std::time::Duration;

use retraind::cycle::{CycleState, Outcome};

use crate::helpers::{Db, Env, Opts, Task, json, retraind, run_cycle, start_cycle, wait_state};

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

/// `task = "regression"`: the burn regressor trains on the numeric target, the gate judges
/// RMSE (a ceiling, then the champion on the same holdout), the daily check scores the
/// champion's RMSE, and `retraind predict` writes numbers and reports RMSE/MAE/R².
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burn_regressor_is_gated_on_rmse_and_replaced_after_drift() {
    let opts = Opts {
        task: Task::Regression,
        epochs: 30,
        // Two deploys in a row: the budgets and cooldown are for the guard tests.
        extra: "[pipeline.guards]\nenabled = false\n".into(),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (first, running, shutdown) = run_cycle(&env).await;
    assert_eq!(first.outcome, Some(Outcome::Deployed), "{:?}", first.reason);
    let store = running.engine.store().clone();
    let v1 = store.alias("p1", "champion").await.unwrap().unwrap();
    let m = &json(&v1.metrics);
    assert!(m["holdout_r2"].as_f64().unwrap() > 0.9, "{m}");
    assert!(m["holdout_rmse"].as_f64().unwrap() < 10.0, "{m}");
    assert!(
        m["holdout_mae"].as_f64().unwrap() < m["holdout_rmse"].as_f64().unwrap(),
        "{m}"
    );
    assert!(m["valid_r2"].as_f64().unwrap() > 0.9, "{m}");
    assert!(
        m.get("holdout_accuracy").is_none() && m.get("valid_accuracy").is_none(),
        "{m}"
    );
    let gate = json(&first.gate.clone().unwrap());
    assert_eq!(gate["metric"], "rmse", "{gate}");
    assert_eq!(gate["checks"][0]["name"], "max_error", "{gate}");
    let card: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(&v1.path).join("card.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(card["task"], "regression");
    assert!(
        card["training"]["history"][0]["valid_rmse"]
            .as_f64()
            .is_some(),
        "{card}"
    );

    // The world drifts (the concept too): the check scores the champion's RMSE on the new
    // labels, the retrained model is compared with it on the same holdout and wins.
    env.drift_today();
    let id = start_cycle(&running.engine, "p1").await;
    let second = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    assert_eq!(
        second.outcome,
        Some(Outcome::Deployed),
        "{:?}",
        second.reason
    );
    let perf = env.report(id)["performance"].clone();
    assert_eq!(perf["metric"], "rmse", "{perf}");
    assert_eq!(perf["status"], "degraded", "{perf}");
    let gate = json(&second.gate.clone().unwrap());
    let champion_check = gate["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "not_worse_than_champion_relative")
        .cloned()
        .unwrap_or_else(|| panic!("{gate}"));
    assert_eq!(champion_check["passed"], true, "{gate}");
    // By default a regressor's margin is relative (1 %), and R² must beat the mean.
    assert!(
        champion_check["detail"]
            .as_str()
            .unwrap()
            .ends_with("(allowed relative increase 1.00%)"),
        "{gate}"
    );
    assert!(
        gate["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "min_r2" && c["passed"] == true),
        "{gate}"
    );
    assert!(
        gate["challenger"].as_f64().unwrap() < gate["champion"].as_f64().unwrap(),
        "{gate}"
    );
    assert_eq!(
        champion_check["detail"].as_str().unwrap().split(' ').next(),
        Some("rmse")
    );
    let v2 = store.alias("p1", "champion").await.unwrap().unwrap();
    assert_eq!(v2.version, 2);

    // Scoring by hand: numbers, and the error on the labelled rows.
    let config = env.config_path.to_str().unwrap();
    let input = env.dir.path().join("data/reference.csv");
    let (code, out, err) = retraind(&[
        "--config",
        config,
        "predict",
        "--model",
        "v1",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("row,prediction"));
    let first_row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert!(first_row[1].parse::<f64>().unwrap() > 0.0, "{first_row:?}");
    assert!(
        err.contains("r2 0.9") && err.contains("rmse ") && err.contains("mae "),
        "{err}"
    );
    let (code, out, _) = retraind(&["--config", config, "models"]);
    assert_eq!(code, 0);
    assert!(out.contains("rmse/hold"), "{out}");
    let (code, out, _) = retraind(&["--config", config, "status", "--format", "json"]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let champion = &status[0]["champion"];
    assert_eq!(
        (champion["version"].as_i64(), champion["metric"].as_str()),
        (Some(2), Some("rmse"))
    );
    assert!(champion["holdout"].as_f64().unwrap() < 10.0, "{champion}");
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
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
    assert_eq!(json(&v.lineage)["backend"], "command");
    // Validation accuracy from the trainer's metrics file; holdout accuracy from the gate,
    // which scored the model with the predict command.
    assert!(
        json(&v.metrics)["valid_accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        json(&v.metrics)
    );
    assert!(
        json(&v.metrics)["holdout_accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        json(&v.metrics)
    );
    assert!(
        json(&v.metrics)["holdout_roc_auc"].as_f64().unwrap() > 0.9,
        "{}",
        json(&v.metrics)
    );
    let dir = std::path::Path::new(&v.path);
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("card.json")).unwrap()).unwrap();
    assert_eq!(card["format"], "command-v1");
    assert_eq!(card["training"]["history"].as_array().unwrap().len(), 30);
    assert!(card["metrics"]["model_size_mb"].as_f64().unwrap() > 0.0);
    assert!(dir.join("model/model.json").is_file());
    assert!(!dir.join("work").exists(), "scratch files are removed");
    // `retraind predict` scores with the trainer's own predict command.
    let input = env.dir.path().join("data/reference.csv");
    let (code, out, err) = retraind(&[
        "--config",
        env.config_path.to_str().unwrap(),
        "predict",
        "--model",
        "champion",
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("row,prediction,p_0,p_1\n"),
        "{}",
        &out[..80.min(out.len())]
    );
    assert_eq!(out.lines().count(), 1 + 1500);
    assert!(
        err.contains("accuracy 0.") && err.contains("on 1500 labelled rows"),
        "{err}"
    );
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
