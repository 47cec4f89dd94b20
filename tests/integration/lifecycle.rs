//! The daemon's lifecycle against a real store: a scheduled cycle end to end, a cycle whose
//! process is killed mid-way resuming after restart and completing once, and SIGTERM
//! exiting cleanly within the grace period.

use std::time::{Duration, Instant};

use retraind::cycle::{CycleState, Outcome, TriggerKind};

use crate::helpers::{Db, Env, Opts, TOKEN, eventually, free_port, kill9, wait_http, wait_state};

async fn scheduled_cycle_end_to_end(db: Db) {
    let opts = Opts {
        schedule: "*/2 * * * * *".into(),
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    let (running, shutdown) = crate::helpers::start_daemon(&env, true).await;
    let store = running.engine.store().clone();
    let first = eventually(Duration::from_secs(30), "a scheduled cycle", || async {
        store.cycles(Some("p1"), 10).await.ok()?.into_iter().last()
    })
    .await;
    assert_eq!(first.trigger, TriggerKind::Scheduled);
    let done = wait_state(
        &store,
        first.id,
        CycleState::Completed,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        done.state,
        CycleState::Completed,
        "reason: {:?}",
        done.reason
    );
    assert_eq!(done.outcome, Some(Outcome::Deployed));
    let states: Vec<CycleState> = store
        .transitions(first.id)
        .await
        .unwrap()
        .iter()
        .map(|t| t.to)
        .collect();
    use CycleState::*;
    assert_eq!(
        states,
        vec![
            Scheduled,
            Loading,
            Checking,
            Decided,
            Training,
            Trained,
            Evaluating,
            AwaitingApproval,
            Deploying,
            Watching,
            Completed
        ]
    );
    let champion = store
        .alias("p1", "champion")
        .await
        .unwrap()
        .expect("a champion after the first cycle");
    assert_eq!(champion.cycle_id, first.id);
    assert!(
        std::path::Path::new(&champion.path)
            .join("model.bpk")
            .is_file()
    );
    let current = env.dir.path().join("state/models/p1/current");
    assert_eq!(
        std::fs::read_link(&current).unwrap(),
        std::path::PathBuf::from(&champion.path)
    );
    assert!(store.report(first.id).await.unwrap().is_some());
    let metrics = running.engine.metrics().render();
    assert!(
        metrics.contains("retraind_cycles_total{outcome=\"deployed\",pipeline=\"p1\"} 1"),
        "{metrics}"
    );
    shutdown.cancel();
    assert!(running.drain(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_cycle_runs_end_to_end_sqlite() {
    scheduled_cycle_end_to_end(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_cycle_runs_end_to_end_postgres() {
    scheduled_cycle_end_to_end(Db::Postgres).await
}

async fn trigger(addr: &str) -> i64 {
    crate::helpers::trigger_api(addr)
        .await
        .expect("the trigger is accepted (202)")
}

/// Kill the process (SIGKILL) while the cycle is in `kill_at`, restart, and check the cycle
/// completes exactly once: one model version, one deploy, the transition history intact.
async fn killed_cycle_resumes_once(db: Db, kill_at: CycleState, approval: &'static str) {
    let addr = format!("127.0.0.1:{}", free_port());
    // Training long enough (seconds) that the poll sees the training state.
    let epochs = if kill_at == CycleState::Training {
        1500
    } else {
        20
    };
    let opts = Opts {
        listen: addr.clone(),
        approval,
        epochs,
        rows: 3000,
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    let mut child = env.spawn();
    wait_http(&addr).await;
    let id = trigger(&addr).await;
    let store = env.store().await;
    let c = wait_state(&store, id, kill_at, Duration::from_secs(120)).await;
    assert_eq!(
        c.state,
        kill_at,
        "cycle ended before the kill point: {:?}\n{}",
        c.reason,
        env.log()
    );
    kill9(&mut child);

    let mut child = env.spawn();
    wait_http(&addr).await;
    if kill_at == CycleState::AwaitingApproval {
        let r = reqwest::Client::new()
            .post(format!("http://{addr}/api/v1/cycles/{id}/approve"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"approver": "ann", "reason": "after restart"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(180)).await;
    kill9(&mut child);
    assert_eq!(
        done.state,
        CycleState::Completed,
        "reason {:?}\n{}",
        done.reason,
        env.log()
    );
    assert_eq!(done.outcome, Some(Outcome::Deployed));
    assert_eq!(done.resumes, 1);
    let versions = store.versions("p1").await.unwrap();
    assert_eq!(
        versions.len(),
        1,
        "exactly one model registered: {versions:?}"
    );
    assert_eq!(
        store.alias("p1", "champion").await.unwrap().unwrap().id,
        versions[0].id
    );
    let states: Vec<CycleState> = store
        .transitions(id)
        .await
        .unwrap()
        .iter()
        .map(|t| t.to)
        .collect();
    for s in [
        CycleState::Training,
        CycleState::Deploying,
        CycleState::Completed,
    ] {
        assert_eq!(
            states.iter().filter(|x| **x == s).count(),
            1,
            "{s} once in {states:?}"
        );
    }
    // Nothing half-written is left in staging.
    let staging = env.dir.path().join("state/staging");
    let leftovers = std::fs::read_dir(&staging).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "staging not empty");
}

#[tokio::test]
async fn killed_while_training_resumes_once_sqlite() {
    killed_cycle_resumes_once(Db::Sqlite, CycleState::Training, "auto").await
}

#[tokio::test]
async fn killed_while_training_resumes_once_postgres() {
    killed_cycle_resumes_once(Db::Postgres, CycleState::Training, "auto").await
}

#[tokio::test]
async fn killed_while_awaiting_approval_resumes_once_sqlite() {
    killed_cycle_resumes_once(Db::Sqlite, CycleState::AwaitingApproval, "manual").await
}

#[tokio::test]
async fn killed_while_awaiting_approval_resumes_once_postgres() {
    killed_cycle_resumes_once(Db::Postgres, CycleState::AwaitingApproval, "manual").await
}

async fn sigterm_exits_cleanly_within_grace(db: Db) {
    let addr = format!("127.0.0.1:{}", free_port());
    let opts = Opts {
        listen: addr.clone(),
        epochs: 100_000,
        rows: 3000,
        grace: "5s",
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    let mut child = env.spawn();
    wait_http(&addr).await;
    let id = trigger(&addr).await;
    let store = env.store().await;
    let c = wait_state(&store, id, CycleState::Training, Duration::from_secs(60)).await;
    assert_eq!(c.state, CycleState::Training);
    // Let a few epochs run, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = child.id() as i32;
    let sent = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually(Duration::from_secs(10), "the daemon to exit", || {
        let r = child.try_wait().unwrap();
        async move { r }
    })
    .await;
    let took = sent.elapsed();
    assert!(exit.success(), "exit status {exit:?}\n{}", env.log());
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} with a 5s grace period"
    );
    let log = env.log();
    assert!(log.contains("stopped cleanly"), "{log}");
    // The cycle was not failed: it is still training, to be resumed on the next start.
    let c = store.cycle(id).await.unwrap().unwrap();
    assert_eq!(c.state, CycleState::Training);
}

async fn missed_schedule_is_caught_up_once(db: Db) {
    let opts = Opts {
        catch_up: true,
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    // The daemon has known the pipeline for three days but was down at today's 02:00.
    let known = chrono::Utc::now() - chrono::Duration::days(3);
    env.store()
        .await
        .ensure_pipeline("p1", known)
        .await
        .unwrap();
    for round in 0..2 {
        let (running, shutdown) = crate::helpers::start_daemon(&env, true).await;
        let store = running.engine.store().clone();
        let cycles = eventually(Duration::from_secs(10), "the catch-up cycle", || async {
            Some(store.cycles(Some("p1"), 10).await.ok()?).filter(|c| !c.is_empty())
        })
        .await;
        assert_eq!(
            cycles.len(),
            1,
            "round {round}: one catch-up cycle, never two: {cycles:#?}"
        );
        assert_eq!(cycles[0].trigger, TriggerKind::CatchUp);
        let schedule = retraind::schedule::Schedule::default_daily(chrono_tz::Tz::UTC);
        let missed = schedule.previous_at_or_before(chrono::Utc::now()).unwrap();
        assert_eq!(cycles[0].cycle_date, schedule.local_date(missed));
        let row = store.pipeline("p1").await.unwrap().unwrap();
        assert_eq!(
            row.last_scheduled_at.map(|t| t.timestamp()),
            Some(missed.timestamp())
        );
        wait_state(
            &store,
            cycles[0].id,
            CycleState::Completed,
            Duration::from_secs(120),
        )
        .await;
        shutdown.cancel();
        running.drain(Duration::from_secs(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_schedule_is_caught_up_once_sqlite() {
    missed_schedule_is_caught_up_once(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_schedule_is_caught_up_once_postgres() {
    missed_schedule_is_caught_up_once(Db::Postgres).await
}

#[tokio::test]
async fn sighup_with_an_invalid_config_keeps_the_old_one() {
    let addr = format!("127.0.0.1:{}", free_port());
    let opts = Opts {
        listen: addr.clone(),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let mut child = env.spawn();
    wait_http(&addr).await;
    let good = std::fs::read_to_string(&env.config_path).unwrap();
    assert!(good.contains("min_accuracy = 0.8"));
    std::fs::write(
        &env.config_path,
        good.replace("min_accuracy = 0.8", "min_accuracy = 7"),
    )
    .unwrap();
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(
        Duration::from_secs(10),
        "the reload failure in the log",
        || {
            let log = env.log();
            async move { log.contains("configuration reload failed").then_some(()) }
        },
    )
    .await;
    // Still serving, still with the old configuration.
    let id = trigger(&addr).await;
    let store = env.store().await;
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    assert_eq!(
        done.outcome,
        Some(Outcome::Deployed),
        "{:?}\n{}",
        done.reason,
        env.log()
    );
    assert!(
        env.log().contains("min_accuracy"),
        "the reload error names the key"
    );
    kill9(&mut child);
}

#[tokio::test]
async fn sigterm_exits_cleanly_within_grace_sqlite() {
    sigterm_exits_cleanly_within_grace(Db::Sqlite).await
}

#[tokio::test]
async fn sigterm_exits_cleanly_within_grace_postgres() {
    sigterm_exits_cleanly_within_grace(Db::Postgres).await
}

/// POST an approval of cycle `id` over the API.
async fn approve(addr: &str, id: i64, approver: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/cycles/{id}/approve"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "approver": approver }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A reload rebuilds the approval channels and re-reads their secrets: a daemon started with
/// only a signed webhook, reloaded with a `[slack]` section instead, posts the next approval
/// request to Slack (with the bot token it read at the reload) and no longer to the webhook.
#[tokio::test]
async fn sighup_adds_slack_and_removes_the_webhook() {
    use crate::helpers::Recorder;
    let (slack, receiver) = (Recorder::start().await, Recorder::start().await);
    let addr = format!("127.0.0.1:{}", free_port());
    let guards = "[pipeline.guards]\ncooldown = \"0s\"\nmax_retrains = [\"10/1h\"]\nmax_deploys = [\"10/1h\"]\n";
    let webhook = format!(
        "[webhook]\nurl = \"{}/events\"\nsecret_file = \"webhook-secret\"\n",
        receiver.url
    );
    let opts = Opts {
        listen: addr.clone(),
        approval: "manual",
        extra: format!("# channel\n{guards}\n{webhook}"),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    std::fs::write(env.dir.path().join("webhook-secret"), "whsec-sighup-test").unwrap();
    std::fs::write(env.dir.path().join("slack-bot-token"), "xoxb-after-reload").unwrap();
    std::fs::write(env.dir.path().join("slack-signing-secret"), "signing").unwrap();
    let mut child = env.spawn();
    wait_http(&addr).await;
    let store = env.store().await;
    let id = trigger(&addr).await;
    wait_state(
        &store,
        id,
        CycleState::AwaitingApproval,
        Duration::from_secs(120),
    )
    .await;
    let delivered = eventually(Duration::from_secs(20), "the webhook delivery", || {
        let n = receiver.to("/events").len();
        async move { (n == 1).then_some(n) }
    })
    .await;
    assert_eq!(delivered, 1);
    assert!(slack.to("/api/chat.postMessage").is_empty());
    assert_eq!(approve(&addr, id, "ops").await, 200);
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(60)).await;
    assert_eq!(done.outcome, Some(Outcome::Deployed), "{:?}", done.reason);

    // Reload: the webhook section goes, a Slack section comes.
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let slack_section = format!(
        "[slack]\napi_url = \"{}/api\"\nbot_token_file = \"slack-bot-token\"\nsigning_secret_file = \"slack-signing-secret\"\n",
        slack.url
    );
    let reloaded = text
        .replace("# channel\n", "slack_channel = \"#ml\"\n")
        .replace(&webhook, &slack_section);
    std::fs::write(&env.config_path, reloaded).unwrap();
    let pid = child.id().to_string();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status();
    assert!(hup.unwrap().success());
    eventually(Duration::from_secs(10), "the reload in the log", || {
        let log = env.log();
        async move { log.contains("configuration reloaded").then_some(()) }
    })
    .await;
    env.drift_today();
    let id = trigger(&addr).await;
    let waiting = wait_state(
        &store,
        id,
        CycleState::AwaitingApproval,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(
        waiting.state,
        CycleState::AwaitingApproval,
        "{:?}",
        waiting.reason
    );
    let posted = eventually(Duration::from_secs(20), "chat.postMessage", || {
        let p = slack.to("/api/chat.postMessage");
        async move { (!p.is_empty()).then_some(p) }
    })
    .await;
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].header("authorization"),
        Some("Bearer xoxb-after-reload")
    );
    assert_eq!(posted[0].json()["channel"], "#ml");
    let events: Vec<String> = store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == "approval_delivered")
        .map(|e| e.message)
        .collect();
    assert_eq!(events, ["log", "slack"]);
    assert_eq!(
        receiver.to("/events").len(),
        1,
        "no delivery after the webhook was removed"
    );
    kill9(&mut child);
}
