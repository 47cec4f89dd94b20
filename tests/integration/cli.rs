//! The command line as a user runs it: `config check`, `status` and `history` as JSON.

use crate::helpers::retraind;

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
    let (running, shutdown) = crate::helpers::start_daemon(&env, false).await;
    let id = crate::helpers::start_cycle(&running.engine, "p1").await;
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
    assert_eq!(v[0]["holds"], serde_json::json!([]));
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

    // `show`: the cycle's story in order, the API's document as JSON, the newest by pipeline.
    let (code, text, err) = retraind(&["--config", config, "show", &id.to_string()]);
    assert_eq!(code, 0, "{err}");
    let first = format!(
        "cycle {id} · p1 · {} · manual trigger · completed (deployed)",
        env.date
    );
    let parts = [
        first.as_str(),
        "\ndata\n  reference is ",
        "\ncheck (full report: ",
        "  data quality: passed",
        "\ndecision: retrain\n  - ",
        "\ncandidate: v1\ngate: blessed",
        "\ntransitions\n",
        "scheduled → loading: ",
        "→ completed: ",
    ];
    let mut at = 0;
    for part in parts {
        let found = text[at..]
            .find(part)
            .unwrap_or_else(|| panic!("`{part}` not after byte {at} in\n{text}"));
        at += found;
    }
    let (code, out, err) = retraind(&[
        "--config",
        config,
        "show",
        &id.to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["id"], id);
    assert_eq!(doc["state"], "completed");
    assert!(doc["report"]["drift"]["features"].is_array(), "{doc}");
    assert!(doc["transitions"].as_array().unwrap().len() >= 8, "{doc}");
    let (_, out, _) = retraind(&[
        "--config",
        config,
        "show",
        "--pipeline",
        "p1",
        "--format",
        "json",
    ]);
    let newest: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(newest["id"], id);
    let (code, _, err) = retraind(&["--config", config, "show", "999"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no cycle 999 (see `retraind history`)"),
        "{err}"
    );
}

#[test]
fn standalone_check_reports_drift_as_json_and_exit_status() {
    use retraind::demo::{Regime, generate};
    let dir = tempfile::tempdir().unwrap();
    let (r, same, drifted) = (
        dir.path().join("r.csv"),
        dir.path().join("s.csv"),
        dir.path().join("d.csv"),
    );
    generate(&r, 2000, Regime::NORMAL, 1).unwrap();
    generate(&same, 2000, Regime::NORMAL, 2).unwrap();
    generate(&drifted, 2000, Regime::DRIFTED, 3).unwrap();
    let run = |cur: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "check",
            "--reference",
            r.to_str().unwrap(),
            "--current",
            cur.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        retraind(&args)
    };
    let (code, out, err) = run(&same, &["--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dataset"]["drifted"], false);
    assert_eq!(
        v["features"].as_array().unwrap().len(),
        5,
        "target left out: {out}"
    );
    assert_eq!(v["quality"]["passed"], true);
    assert_eq!(v["reference"]["rows"], 2000);
    let (code, out, err) = run(&drifted, &["--format", "json"]);
    assert_eq!(code, 3, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dataset"]["drifted"], true);
    assert_eq!(v["dataset"]["correction"], "benjamini_hochberg");
    let a = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "feature_a")
        .unwrap();
    assert_eq!(
        (
            a["kind"].as_str(),
            a["method"].as_str(),
            a["drifted"].as_bool()
        ),
        (Some("numerical"), Some("ks"), Some(true))
    );
    assert!(a["p_value"].as_f64().unwrap() < 1e-10 && a["threshold"] == 0.05);
    let seg = v["features"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "segment")
        .unwrap();
    assert_eq!(seg["method"], "chi_square");
    // A distance method has no p-value.
    let (code, out, _) = run(&drifted, &["--format", "json", "--method", "psi"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["features"][0]["p_value"].is_null() && v["features"][0]["threshold"] == 0.2);
    // Text output, and a clear error for a bad method.
    let (code, out, _) = run(&drifted, &[]);
    assert_eq!(code, 3);
    assert!(
        out.contains("dataset: DRIFT") && out.contains("feature_a"),
        "{out}"
    );
    let (code, _, err) = run(&drifted, &["--method", "t_test"]);
    assert_eq!(code, 1);
    assert!(err.contains("`t_test` is not a drift method"), "{err}");
}

/// The README's first command: the demo retrains on the drifted, degraded day only, and the
/// model it deploys learned from the window it was trained on (its rows are the next reference).
#[test]
fn the_demo_retrains_on_the_drifted_day_only_and_rolls_back_a_bad_model() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let (code, out, err) = retraind(&["demo", "--dir", demo.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    // The story is not interleaved with JSON log lines, nor with a bar off a terminal.
    assert!(!err.lines().any(|l| l.starts_with('{')), "{err}");
    assert!(!err.contains("training ["), "{err}");
    let story = out.clone();
    let line = |day: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(day))
            .unwrap_or_else(|| panic!("no `{day}` line in\n{out}"))
            .to_string()
    };
    assert!(line("day 1").contains("deployed"), "{out}");
    assert!(line("day 2").contains("no_retrain"), "{out}");
    assert!(line("day 3").contains("deployed"), "{out}");
    // Day 4: inverted labels fool the gate; the corrected labels make the watch roll back.
    assert!(line("day 4").contains("rolled_back"), "{out}");
    assert!(out.contains("champion: v2"), "{out}");
    assert!(out.contains("approved by demo-approver via api"), "{out}");
    assert!(
        out.contains("rollback v2 by watch — v3 -> v2: v3 failed 2 post-deploy checks"),
        "{out}"
    );
    assert!(out.contains("frozen by watch"), "{out}");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(demo.join("state/reports/churn/cycle-3.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["performance"]["status"], "degraded", "{report}");
    assert_eq!(report["performance"]["test"], "two_proportion_z");
    assert!(
        report["inputs"]["reference_from"]
            .as_str()
            .unwrap()
            .starts_with("champion v1"),
        "{report}"
    );
    assert!(
        demo.join("state/models/churn/cycle-3/training-data.parquet")
            .is_file()
    );
    let html = std::fs::read_to_string(demo.join("state/reports/churn/cycle-3.html")).unwrap();
    assert!(
        html.contains("Champion performance") && html.contains("<b>degraded</b>"),
        "{html}"
    );

    // The registry: versions with aliases, the lineage chain, and scoring by hand.
    let config = demo.join("retraind.toml");
    let config = config.to_str().unwrap();
    let (code, out, err) = retraind(&["--config", config, "models", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let models: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(models[0]["version"], 3);
    assert_eq!(models[0]["aliases"], serde_json::json!([]));
    assert_eq!(models[1]["version"], 2);
    assert_eq!(models[1]["aliases"], serde_json::json!(["champion"]));
    assert_eq!(models[2]["aliases"], serde_json::json!(["previous"]));
    assert_eq!(models[1]["lineage"]["parent_version"], 1);
    assert_eq!(models[1]["lineage"]["backend"], "burn");
    assert_eq!(models[1]["lineage"]["training_data"]["source"], "current");
    assert_eq!(models[1]["gate"]["blessed"], true);
    assert!(
        models[1]["metrics"]["holdout_f1_weighted"]
            .as_f64()
            .unwrap()
            > 0.9
    );
    let (code, out, err) = retraind(&["--config", config, "lineage", "2", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let chain: serde_json::Value = serde_json::from_str(&out).unwrap();
    let versions: Vec<i64> = chain
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);
    let (code, _, err) = retraind(&["--config", config, "lineage", "7"]);
    assert_eq!(code, 1);
    assert!(err.contains("no version 7"), "{err}");
    let mut days: Vec<_> = std::fs::read_dir(demo.join("data/current"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.to_string_lossy();
            !name.contains("corrected") && !name.contains("later")
        })
        .collect();
    days.sort();
    let day3 = days[2].clone();
    let (code, out, err) = retraind(&[
        "--config",
        config,
        "predict",
        "--model",
        "champion",
        "--input",
        day3.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("row,prediction,p_0,p_1"));
    assert_eq!(lines.count(), 3000);
    assert!(err.contains("accuracy 0.9"), "{err}");
    the_demos_hint_lifts_its_freeze(&demo, &story);
    the_demos_training_shows_a_bar_on_a_terminal();
}

/// The demo's closing hint runs as printed: with the daemon running, the printed `resume`
/// lifts the freeze, and `status` says so (before: the hold, who and why).
/// On a terminal the demo's training shows a bar of the epochs. (Called by the demo test:
/// two demos at once would race for the port.)
fn the_demos_training_shows_a_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let command = format!(
        "{} demo --dir {}",
        env!("CARGO_BIN_EXE_retraind"),
        dir.path().join("demo").display()
    );
    let run = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{shown}");
    let bars: Vec<&str> = shown
        .split(['\r', '\n'])
        .filter(|l| l.contains("training [") && l.contains("/40"))
        .collect();
    // That a bar of the epochs is drawn; how far it got before the next redraw depends on
    // the machine's speed (a 0.1 s training on a busy machine may show only `0/40`), so
    // the count is tested on the bar itself (progress::tests).
    assert!(!bars.is_empty(), "a bar of the epochs: {shown}");
}

fn the_demos_hint_lifts_its_freeze(demo: &std::path::Path, story: &str) {
    use crate::helpers::{Server, free_port};
    let config = demo.join("retraind.toml");
    // A fixed port (the demo falls back to an ephemeral one when 9464 is taken).
    let text = std::fs::read_to_string(&config).unwrap();
    let port = free_port();
    let text = text
        .lines()
        .map(|l| match l.starts_with("listen = ") {
            true => format!("listen = \"127.0.0.1:{port}\""),
            false => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    let c = config.to_str().unwrap();
    let (code, out, err) = retraind(&["--config", c, "status", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hold = &status[0]["holds"][0];
    assert_eq!(hold["kind"], "frozen", "{status}");
    assert_eq!(hold["by"], "watch", "{status}");
    assert!(
        hold["reason"].as_str().unwrap().contains("watch"),
        "{status}"
    );
    let (_, text, _) = retraind(&["--config", c, "status"]);
    assert!(text.contains("HOLD frozen by watch since "), "{text}");
    let lift = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("lift: "))
        .unwrap_or_else(|| panic!("no lift hint in\n{text}"));
    let hint = story
        .lines()
        .find_map(|l| l.trim().strip_prefix('`')?.strip_suffix('`'))
        .filter(|h| h.contains(" resume "))
        .unwrap_or_else(|| panic!("no resume hint in\n{story}"));
    assert_eq!(hint, lift, "the demo and status give the same command");
    let _daemon = Server(
        std::process::Command::new(env!("CARGO_BIN_EXE_retraind"))
            .args(["--config", c, "--log-format", "json", "run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed().as_secs() < 60, "the daemon did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let bin = env!("CARGO_BIN_EXE_retraind");
    let run = std::process::Command::new("sh")
        .arg("-c")
        .arg(hint.replacen("retraind", bin, 1))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "`{hint}` failed: {said}");
    let (_, out, _) = retraind(&["--config", c, "status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status[0]["holds"], serde_json::json!([]), "{status}");
}

/// `check --multivariate`: a correlation that flips while every column keeps its
/// distribution is invisible to the per-feature tests and flagged by the reconstruction
/// error (exit 3); the same correlation is not.
#[test]
fn check_multivariate_sees_a_flipped_correlation_the_feature_tests_miss() {
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, seed: u64, rows: usize, rho: f64| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut text = String::from("x1,x2,x3\n");
        for _ in 0..rows {
            let (a, b, c): (f64, f64, f64) = (
                rng.sample(StandardNormal),
                rng.sample(StandardNormal),
                rng.sample(StandardNormal),
            );
            let x2 = rho * a + (1.0 - rho * rho).sqrt() * b;
            text.push_str(&format!("{a},{x2},{c}\n"));
        }
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let reference = write("r.csv", 1, 20_000, 0.8);
    let same = write("s.csv", 2, 2_000, 0.8);
    let flipped = write("f.csv", 3, 2_000, -0.8);
    let run = |current: &std::path::Path| {
        retraind(&[
            "check",
            "--reference",
            reference.to_str().unwrap(),
            "--current",
            current.to_str().unwrap(),
            "--multivariate",
            "--chunk-size",
            "2000",
            "--format",
            "json",
        ])
    };
    let (code, out, err) = run(&flipped);
    assert_eq!(code, 3, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["dataset"]["drifted_features"], 0, "{out}");
    assert_eq!(v["multivariate"]["drifted"], true, "{out}");
    assert_eq!(v["multivariate"]["components"], 2);
    assert_eq!(v["multivariate"]["reference"].as_array().unwrap().len(), 10);
    let (code, out, err) = run(&same);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["multivariate"]["drifted"], false, "{out}");
    let (code, out, _) = retraind(&[
        "check",
        "--reference",
        reference.to_str().unwrap(),
        "--current",
        flipped.to_str().unwrap(),
        "--multivariate",
        "--chunk-size",
        "2000",
    ]);
    assert_eq!(code, 3);
    assert!(
        out.contains("multivariate: DRIFT (2 components explain"),
        "{out}"
    );
}

/// A candidate awaiting approval is a hold in `status` (JSON and text) naming the approvers,
/// and the command `status` prints to lift it runs as printed: the candidate is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaiting_approval_is_a_hold_and_its_hint_approves() {
    use crate::helpers::{Db, Env, Opts, free_port, wait_state};
    use retraind::cycle::CycleState;
    use std::time::Duration;
    let me = std::process::Command::new("sh")
        .args(["-c", "whoami"])
        .output()
        .unwrap();
    let me = String::from_utf8_lossy(&me.stdout).trim().to_string();
    let opts = Opts {
        approval: "manual",
        listen: format!("127.0.0.1:{}", free_port()),
        extra: format!("approvers = [\"{me}\"]\n"),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (running, shutdown, id) = crate::helpers::start_awaiting_approval(&env).await;
    let store = running.engine.store().clone();
    let config = env.config_path.to_str().unwrap().to_string();
    let c = config.clone();
    let (out, text) = tokio::task::spawn_blocking(move || {
        let (code, out, err) = retraind(&["--config", &c, "status", "--format", "json"]);
        assert_eq!(code, 0, "{err}");
        (out, retraind(&["--config", &c, "status"]).1)
    })
    .await
    .unwrap();
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let hold = &status[0]["holds"][0];
    assert_eq!(hold["kind"], "awaiting_approval", "{status}");
    assert_eq!(
        (hold["by"].as_str(), hold["cycle"].as_i64()),
        (Some(me.as_str()), Some(id))
    );
    assert!(
        hold["since"].is_string() && hold["reason"].is_string(),
        "{status}"
    );
    assert!(
        text.contains(&format!(
            "HOLD awaiting approval (cycle {id}) by {me} since "
        )),
        "{text}"
    );
    let lift = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("lift: "))
        .unwrap_or_else(|| panic!("no lift hint in\n{text}"))
        .to_string();
    assert_eq!(
        lift,
        format!("retraind --config {config} approve {id} --approver \"$(whoami)\"")
    );
    let bin = env!("CARGO_BIN_EXE_retraind");
    let run = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(lift.replacen("retraind", bin, 1))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    assert_eq!(
        done.outcome,
        Some(retraind::cycle::Outcome::Deployed),
        "{:?}",
        done.reason
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
