//! Operations files proven with the real tools: the alert rules with promtool, the systemd
//! unit with systemd-analyze.

use crate::helpers::unavailable;

#[test]
fn alert_rules_pass_their_promtool_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let Ok(out) = std::process::Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(dir)
        .output()
    else {
        unavailable("promtool");
        return;
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("SUCCESS"), "{text}");
}

/// `systemd-analyze verify` is clean on the shipped unit (with ExecStart pointed at the
/// binary under test, since /usr/local/bin/retraind is not installed here), and the offline
/// security analysis rates the unit's exposure at 2.0 or better.
#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/retraind.service");
    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        unavailable("systemd-analyze (Debian package `systemd`)");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/local/bin/retraind "),
        "{text}"
    );
    let copy = dir.path().join("retraind.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/retraind", env!("CARGO_BIN_EXE_retraind")),
    )
    .unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for retraind.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in\n{report}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{report}");
}

/// Every PromQL expression of the dashboard and of the alert rules, evaluated by a real
/// Prometheus scraping a real daemon after a cycle, returns at least one series: no dead
/// panel, no alert on a metric that does not exist. Alert expressions are evaluated without
/// their threshold (the series must exist; whether it fires is `promtool test rules`' job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_expression_returns_data() {
    use std::time::Duration;

    use crate::helpers::{Db, Env, Opts, start_cycle, start_daemon, wait_state};

    let opts = Opts {
        approval: "manual",
        extra: r#"
[pipeline.guards]
max_retrains = ["10/1h"]
max_deploys = ["10/1h"]
cooldown = "0s"
"#
        .into(),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    // With the scheduler (the next-run gauge is its), which will not fire during the test.
    let (running, shutdown) = start_daemon(&env, true).await;
    let store = running.engine.store().clone();
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let post = |path: String, body: serde_json::Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(crate::helpers::TOKEN)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            assert!(
                r.status().is_success(),
                "{path}: {}",
                r.text().await.unwrap()
            );
        }
    };
    // Two cycles, each approved over the API as a human would (the second one on drifted
    // data, so a retrain), then a rollback by hand.
    for day in 0..2 {
        if day == 1 {
            env.drift_today();
        }
        let id = start_cycle(&running.engine, "p1").await;
        wait_state(
            &store,
            id,
            retraind::cycle::CycleState::AwaitingApproval,
            Duration::from_secs(120),
        )
        .await;
        post(
            format!("/api/v1/cycles/{id}/approve"),
            serde_json::json!({"approver": "ann"}),
        )
        .await;
        let done = wait_state(
            &store,
            id,
            retraind::cycle::CycleState::Completed,
            Duration::from_secs(120),
        )
        .await;
        assert_eq!(
            done.outcome,
            Some(retraind::cycle::Outcome::Deployed),
            "{:?}",
            done.reason
        );
    }
    post(
        "/api/v1/pipelines/p1/rollback".into(),
        serde_json::json!({"actor": "ops", "reason": "e2e"}),
    )
    .await;
    let prom_dir = tempfile::tempdir().unwrap();
    let Some((_prom, url)) =
        crate::helpers::prometheus(prom_dir.path(), &running.addr.to_string(), "retraind").await
    else {
        return;
    };
    // A few scrapes, so that rate() and increase() have two samples.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/retraind.json")).unwrap())
            .unwrap();
    // The series part of a condition: up to its first comparison (`x > 26 * 3600` → `x`,
    // `a == 1 and b == 0` → `a`).
    let series = |expr: &str| -> String {
        [" > ", " == ", " < ", " >= ", " != "]
            .iter()
            .filter_map(|op| expr.find(op))
            .min()
            .map(|i| &expr[..i])
            .unwrap_or(expr)
            .trim()
            .to_string()
    };
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    // Annotations mark events (a deploy in the last minutes): like alerts, conditions.
    exprs.extend(
        dashboard["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["expr"].as_str().map(series)),
    );
    let alerts = std::fs::read_to_string(format!("{dir}/alerts.yml")).unwrap();
    exprs.extend(
        alerts
            .lines()
            .filter_map(|l| l.trim().strip_prefix("expr:").map(series)),
    );
    let client = reqwest::Client::new();
    let mut dead = Vec::new();
    for expr in &exprs {
        // Grafana's variables as Grafana would fill them for "All".
        let q = expr
            .replace("$pipeline", ".*")
            .replace("$__rate_interval", "1m");
        let answer: serde_json::Value = client
            .get(format!("{url}/api/v1/query"))
            .query(&[("query", q.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let has_data = answer["status"] == "success"
            && match answer["data"]["resultType"].as_str() {
                Some("scalar") => true,
                _ => answer["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()),
            };
        if !has_data {
            dead.push(format!("{q}  ->  {answer}"));
        }
    }
    assert!(
        dead.is_empty(),
        "expressions without data:\n{}",
        dead.join("\n")
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
