//! The HTTP server over real sockets: concurrent triggers, bearer-token rules, the JSON API,
//! `/metrics` checked by promtool, and `/readyz` while the store is unreachable.

use std::time::Duration;

use retraind::cycle::CycleState;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Db, Env, Opts, TOKEN, unavailable, wait_state};

async fn start(env: &Env) -> (retraind::daemon::Running, CancellationToken, String) {
    let (running, shutdown) = crate::helpers::start_daemon(env, false).await;
    let base = format!("http://{}", running.addr);
    (running, shutdown, base)
}

async fn two_triggers_give_one_cycle(db: Db) {
    let Some(env) = Env::new(
        db,
        Opts {
            approval: "manual",
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let (running, shutdown, base) = start(&env).await;
    let client = reqwest::Client::new();
    let post = || {
        client
            .post(format!("{base}/api/v1/pipelines/p1/trigger"))
            .bearer_auth(TOKEN)
            .send()
    };
    let (a, b) = tokio::join!(post(), post());
    let mut codes = vec![a.unwrap().status().as_u16(), b.unwrap().status().as_u16()];
    codes.sort();
    assert_eq!(codes, vec![202, 409]);
    let cycles = running.engine.store().cycles(Some("p1"), 10).await.unwrap();
    assert_eq!(cycles.len(), 1);
    // The API shows the cycle and its history.
    let id = cycles[0].id;
    wait_state(
        running.engine.store(),
        id,
        CycleState::AwaitingApproval,
        Duration::from_secs(120),
    )
    .await;
    let list = crate::helpers::get_json(&format!("{base}/api/v1/cycles?pipeline=p1&limit=5")).await;
    assert_eq!(list[0]["id"], id);
    let detail = crate::helpers::get_json(&format!("{base}/api/v1/cycles/{id}")).await;
    assert_eq!(detail["state"], "awaiting_approval");
    assert!(
        detail["transitions"].as_array().unwrap().len() >= 8,
        "{detail}"
    );
    assert!(
        detail["report"]["drift"]["features"]
            .as_array()
            .is_some_and(|f| f.len() == 5),
        "{detail}"
    );
    // The candidate is registered, with its gate verdict and lineage, before approval.
    let models = crate::helpers::get_json(&format!("{base}/api/v1/pipelines/p1/models")).await;
    assert_eq!(models[0]["version"], 1, "{models}");
    assert_eq!(models[0]["aliases"], serde_json::json!([]));
    assert_eq!(models[0]["gate"]["blessed"], true, "{models}");
    assert_eq!(
        models[0]["lineage"]["parent_version"],
        serde_json::Value::Null
    );
    assert_eq!(
        reqwest::get(format!("{base}/api/v1/pipelines/nope/models"))
            .await
            .unwrap()
            .status(),
        404
    );
    let html = reqwest::get(format!("{base}/reports/{id}")).await.unwrap();
    assert_eq!(html.headers()["content-type"], "text/html; charset=utf-8");
    let html = html.text().await.unwrap();
    assert_eq!(html.matches("<svg").count(), 5, "a histogram per feature");
    assert!(html.contains(&format!("cycle {id}")));
    assert_eq!(
        reqwest::get(format!("{base}/reports/999999"))
            .await
            .unwrap()
            .status(),
        404
    );
    let pipes = crate::helpers::get_json(&format!("{base}/api/v1/pipelines")).await;
    assert_eq!(pipes[0]["active_cycle"]["id"], id);
    // Reject through the API: the cycle ends rejected, nothing deployed.
    let r = client
        .post(format!("{base}/api/v1/cycles/{id}/reject"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"approver": "ann", "reason": "not today"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let c = wait_state(
        running.engine.store(),
        id,
        CycleState::Rejected,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(c.state, CycleState::Rejected);
    assert!(
        c.reason
            .unwrap()
            .contains("rejected by ann via api: not today")
    );
    assert!(
        running
            .engine
            .store()
            .alias("p1", "champion")
            .await
            .unwrap()
            .is_none()
    );
    // A late approval is refused with a clear message.
    let r = client
        .post(format!("{base}/api/v1/cycles/{id}/approve"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"approver": "bob"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_triggers_at_once_give_one_cycle_sqlite() {
    two_triggers_give_one_cycle(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_triggers_at_once_give_one_cycle_postgres() {
    two_triggers_give_one_cycle(Db::Postgres).await
}

#[tokio::test]
async fn mutations_need_the_token_and_are_disabled_without_one() {
    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    let (running, shutdown, base) = start(&env).await;
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/pipelines/p1/trigger");
    assert_eq!(client.post(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        client
            .post(&url)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = client
        .post(format!("{base}/api/v1/pipelines/nope/trigger"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let big = "x".repeat(retraind::server::BODY_LIMIT + 1);
    let r = client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;

    let Some(env) = Env::new(
        Db::Sqlite,
        Opts {
            token: false,
            ..Opts::default()
        },
    )
    .await
    else {
        return;
    };
    let (running, shutdown, base) = start(&env).await;
    let r = client
        .post(format!("{base}/api/v1/pipelines/p1/trigger"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("server.api_token_file"));
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    // With the scheduler on, and after one full cycle, so every metric has samples.
    let (running, shutdown) = crate::helpers::start_daemon(&env, true).await;
    let base = format!("http://{}", running.addr);
    let id = crate::helpers::start_cycle(&running.engine, "p1").await;
    running.engine.wait_terminal(id).await.unwrap();
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "retraind_build_info",
        "retraind_cycles_total{outcome=\"deployed\",pipeline=\"p1\"} 1",
        "retraind_cycle_duration_seconds_count{pipeline=\"p1\"} 1",
        "retraind_cycle_state{pipeline=\"p1\",state=\"completed\"} 1",
        "retraind_last_successful_check_timestamp_seconds{pipeline=\"p1\"}",
        "retraind_next_scheduled_check_timestamp_seconds{pipeline=\"p1\"}",
        "retraind_training_loss{pipeline=\"p1\",split=\"valid\"}",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        unavailable("promtool");
        return;
    };
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n---\n{text}"
    );
}

#[tokio::test]
async fn readyz_fails_while_the_store_is_unreachable() {
    let Some(env) = Env::new(Db::Postgres, Opts::default()).await else {
        return;
    };
    let (running, shutdown, base) = start(&env).await;
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    // Cut the daemon off its database: refuse new connections and end the open ones.
    let db = env.store_url.rsplit('/').next().unwrap().to_string();
    let admin_url = format!(
        "{}/postgres",
        std::env::var("RETRAIND_TEST_POSTGRES_URL")
            .unwrap()
            .trim_end_matches('/')
    );
    let admin = sqlx::AnyPool::connect(&admin_url).await.unwrap();
    let exec = |sql: String| {
        let admin = admin.clone();
        async move {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .unwrap()
        }
    };
    exec(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false")).await;
    exec(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
    ))
    .await;
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().starts_with("not ready"));
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200,
        "alive even when not ready"
    );
    exec(format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")).await;
    let ok = crate::helpers::eventually(Duration::from_secs(20), "readyz to recover", || {
        let url = format!("{base}/readyz");
        async move {
            reqwest::get(url)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    let () = ok;
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
