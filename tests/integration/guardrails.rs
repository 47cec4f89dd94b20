//! Guardrails end to end, over real HTTP on 127.0.0.1: Slack's signed interactions (with a
//! fake Slack Web API that follows `chat.postMessage`'s published request and answer shape),
//! Standard Webhooks decisions both ways, a signed deploy hook that fails, manual rollback,
//! and the freeze kill switch.

use std::time::Duration;

use retraind::cycle::{CycleState, Outcome};
use retraind::demo::Regime;
use retraind::secret::Secret;
use retraind::signing;
use serde_json::json;

use crate::helpers::{
    Db, Env, Opts, Recorder, TOKEN, champion_version, json, start_awaiting_approval, start_cycle,
    start_daemon, wait_state,
};

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn write_secret(env: &Env, name: &str, value: &str) {
    std::fs::write(env.dir.path().join(name), value).unwrap();
}

async fn metrics(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The form body Slack sends when `user` presses `action` on cycle `id`'s message.
fn slack_form(id: i64, user: &str, action: &str, response_url: &str) -> Vec<u8> {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": format!("U-{user}"), "username": user, "team_id": "T1" },
        "actions": [{ "action_id": action, "block_id": format!("retraind_approval_{id}"), "value": id.to_string(), "type": "button", "action_ts": "1700000000.1" }],
        "response_url": response_url,
        "channel": { "id": "C0123", "name": "ml" },
        "message": { "ts": "1700000000.000100" }
    });
    form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
        .into_bytes()
}

async fn post_slack(base: &str, body: Vec<u8>, ts: i64, secret: &str) -> (u16, String) {
    let ts = ts.to_string();
    let sig = signing::slack_signature(&Secret::new(secret), &ts, &body);
    post_signed_slack(base, body, &ts, &sig).await
}

async fn post_signed_slack(base: &str, body: Vec<u8>, ts: &str, sig: &str) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn slack_interactions_are_verified_allow_listed_and_counted_once() {
    let slack = Recorder::start().await;
    let opts = Opts {
        approval: "manual",
        extra: format!(
            r##"approvers = ["@alice"]
slack_channel = "#ml-approvals"

[slack]
api_url = "{}/api"
bot_token_file = "slack-bot-token"
signing_secret_file = "slack-signing-secret"
"##,
            slack.url
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    write_secret(&env, "slack-bot-token", "xoxb-test-token");
    write_secret(&env, "slack-signing-secret", SLACK_SECRET);
    let (running, shutdown, id) = start_awaiting_approval(&env).await;
    let base = format!("http://{}", running.addr);
    let store = running.engine.store().clone();

    // The request reached Slack once, as Block Kit with the buttons, in the pipeline's channel.
    let posted = crate::helpers::eventually(Duration::from_secs(10), "chat.postMessage", || {
        let p = slack.to("/api/chat.postMessage");
        async move { (!p.is_empty()).then_some(p) }
    })
    .await;
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].header("authorization"),
        Some("Bearer xoxb-test-token")
    );
    let msg = posted[0].json();
    assert_eq!(msg["channel"], "#ml-approvals");
    let blocks = msg["blocks"].to_string();
    assert!(blocks.contains("no champion model yet"), "{blocks}");
    assert!(blocks.contains("\"action_id\":\"approve\""), "{blocks}");
    assert!(blocks.contains(&format!("\"value\":\"{id}\"")), "{blocks}");

    let response_url = format!("{}/slack/response/{id}", slack.url);
    let now = chrono::Utc::now().timestamp();
    let good = slack_form(id, "alice", "approve", &response_url);
    // Each forgery is refused and changes nothing.
    let (code, text) = post_slack(&base, good.clone(), now, "not-the-secret").await;
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("signature does not match"), "{text}");
    let (code, text) = post_slack(&base, good.clone(), now - 400, SLACK_SECRET).await;
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("stale"), "{text}");
    let ts = now.to_string();
    let sig = signing::slack_signature(&Secret::new(SLACK_SECRET), &ts, &good);
    let tampered = slack_form(id, "alice", "reject", &response_url);
    let (code, _) = post_signed_slack(&base, tampered, &ts, &sig).await;
    assert_eq!(code, 401);
    let (code, _) = post_signed_slack(&base, good.clone(), &ts, "v0=").await;
    assert_eq!(code, 401);
    let mallory = slack_form(id, "mallory", "approve", &response_url);
    let (code, text) = post_slack(&base, mallory, now, SLACK_SECRET).await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("not in approval.approvers"), "{text}");
    assert!(store.approvals(id).await.unwrap().is_empty());
    assert_eq!(
        store.cycle(id).await.unwrap().unwrap().state,
        CycleState::AwaitingApproval
    );

    // The genuine press is accepted once; the same request replayed is refused.
    let (code, text) = post_signed_slack(&base, good.clone(), &ts, &sig).await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("recorded"), "{text}");
    let (code, text) = post_signed_slack(&base, good, &ts, &sig).await;
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("replayed"), "{text}");
    let approvals = store.approvals(id).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(
        (
            approvals[0].approver.as_str(),
            approvals[0].channel.as_str()
        ),
        ("@alice", "slack")
    );
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(60)).await;
    assert_eq!(done.outcome, Some(Outcome::Deployed));

    // The buttons were replaced through response_url.
    let replaced = crate::helpers::eventually(Duration::from_secs(10), "response_url", || {
        let p = slack.to(&format!("/slack/response/{id}"));
        async move { (!p.is_empty()).then_some(p) }
    })
    .await;
    let r = replaced[0].json();
    assert_eq!(r["replace_original"], true);
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved by @alice at "),
        "{r}"
    );
    let m = metrics(&base).await;
    assert!(
        m.contains(r#"retraind_approval_decisions_total{channel="slack",decision="approve",pipeline="p1"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"retraind_approvals_pending{pipeline="p1"} 0"#),
        "{m}"
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

/// A Slack click is admitted by the user id the allow-list names (the identifier Slack
/// recommends), by `@name`, or by `name` — and recorded once as `@name`, with the username
/// every interaction carries — and the candidate deploys; anyone else gets 403.
#[tokio::test]
async fn slack_users_listed_by_id_or_name_approve_once_and_deploy() {
    let slack = Recorder::start().await;
    let opts = Opts {
        approval: "manual",
        extra: format!(
            r##"approvers = ["U-alice", "@bob", "carol"]
slack_channel = "#ml-approvals"

[pipeline.guards]
cooldown = "0s"
max_retrains = ["10/1h"]
max_deploys = ["10/1h"]

[slack]
api_url = "{}/api"
bot_token_file = "slack-bot-token"
signing_secret_file = "slack-signing-secret"
"##,
            slack.url
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    write_secret(&env, "slack-bot-token", "xoxb-test-token");
    write_secret(&env, "slack-signing-secret", SLACK_SECRET);
    let (running, shutdown) = start_daemon(&env, false).await;
    let base = format!("http://{}", running.addr);
    let store = running.engine.store().clone();
    let response_url = format!("{}/slack/response", slack.url);
    let mut ts = chrono::Utc::now().timestamp();
    // One cycle per way of listing: a first model, then a drifted and a normal window.
    let windows = [None, Some(Regime::DRIFTED), Some(Regime::NORMAL)];
    for (version, (user, window)) in ["alice", "bob", "carol"]
        .into_iter()
        .zip(windows)
        .enumerate()
    {
        if let Some(regime) = window {
            env.write_today(regime, 10 + version as u64);
        }
        let id = start_cycle(&running.engine, "p1").await;
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
        let (code, text) = post_slack(
            &base,
            slack_form(id, "mallory", "approve", &response_url),
            ts,
            SLACK_SECRET,
        )
        .await;
        assert_eq!(code, 403, "{text}");
        let (code, text) = post_slack(
            &base,
            slack_form(id, user, "approve", &response_url),
            ts,
            SLACK_SECRET,
        )
        .await;
        assert_eq!(
            (code, text.contains("\"recorded\"")),
            (200, true),
            "{user}: {text}"
        );
        // A second click (a new request, so not a replay) records nothing more: a duplicate
        // (200) while the cycle still waits, a conflict (409) once it moved on.
        ts += 1;
        let (code, text) = post_slack(
            &base,
            slack_form(id, user, "approve", &response_url),
            ts,
            SLACK_SECRET,
        )
        .await;
        assert!(
            (code == 200 && text.contains("\"duplicate\""))
                || (code == 409
                    && (text.contains("already_decided") || text.contains("not awaiting"))),
            "{code} {text}"
        );
        ts += 1;
        let approvals = store.approvals(id).await.unwrap();
        let who: Vec<(&str, &str)> = approvals
            .iter()
            .map(|a| (a.approver.as_str(), a.channel.as_str()))
            .collect();
        assert_eq!(who, [(format!("@{user}").as_str(), "slack")]);
        let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(60)).await;
        assert_eq!(
            done.outcome,
            Some(Outcome::Deployed),
            "{user}: {:?}",
            done.reason
        );
        let champion = store.alias("p1", "champion").await.unwrap().unwrap();
        assert_eq!(champion.version, version as i64 + 1);
    }
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

async fn post_hook(base: &str, id: &str, ts: i64, body: &[u8], secret: &str) -> (u16, String) {
    let h = signing::sign_webhook(&Secret::new(secret), id, ts, body);
    let mut req = reqwest::Client::new()
        .post(format!("{base}/hooks/approval"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in h.pairs() {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn webhook_decisions_are_signed_both_ways(db: Db) {
    let receiver = Recorder::start().await;
    let opts = Opts {
        approval: "manual",
        extra: format!(
            r#"approvers = ["carol"]

[webhook]
url = "{}/retraind-events"
secret_file = "webhook-secret"
"#,
            receiver.url
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    write_secret(&env, "webhook-secret", WEBHOOK_SECRET);
    // The receiver is down at first: the request is retried, never taken as approval.
    receiver.set_status(503);
    let (running, shutdown, id) = start_awaiting_approval(&env).await;
    let base = format!("http://{}", running.addr);
    let store = running.engine.store().clone();
    crate::helpers::eventually(Duration::from_secs(10), "a failed delivery", || {
        let n = receiver.to("/retraind-events").len();
        async move { (n >= 1).then_some(()) }
    })
    .await;
    receiver.set_status(200);
    let delivered =
        crate::helpers::eventually(Duration::from_secs(30), "a retried delivery", || {
            let r = receiver.to("/retraind-events");
            async move { (r.len() >= 2).then_some(r) }
        })
        .await;
    assert!(store.approvals(id).await.unwrap().is_empty());
    // Every delivery is signed per Standard Webhooks and verifies with the shared secret.
    let last = delivered.last().unwrap();
    let verified = signing::verify_webhook(
        &Secret::new(WEBHOOK_SECRET),
        last.header("webhook-id"),
        last.header("webhook-timestamp"),
        last.header("webhook-signature"),
        &last.body,
        chrono::Utc::now().timestamp(),
    );
    assert_eq!(verified.unwrap(), format!("approval-{id}"));
    let event = last.json();
    assert_eq!(event["type"], "approval.requested");
    assert_eq!(event["data"]["cycle"], id);

    let now = chrono::Utc::now().timestamp();
    let body = json!({"cycle": id, "decision": "approve", "approver": "carol", "reason": "ok"})
        .to_string()
        .into_bytes();
    let (code, text) = post_hook(&base, "msg_1", now, &body, "whsec_d3Jvbmcgc2VjcmV0").await;
    assert_eq!(code, 401, "{text}");
    let (code, text) = post_hook(&base, "msg_2", now - 3600, &body, WEBHOOK_SECRET).await;
    assert_eq!(code, 401, "{text}");
    let dave = json!({"cycle": id, "decision": "approve", "approver": "dave"})
        .to_string()
        .into_bytes();
    let (code, text) = post_hook(&base, "msg_3", now, &dave, WEBHOOK_SECRET).await;
    assert_eq!(code, 403, "{text}");
    assert!(store.approvals(id).await.unwrap().is_empty());
    let (code, text) = post_hook(&base, "msg_4", now, &body, WEBHOOK_SECRET).await;
    assert_eq!(code, 200, "{text}");
    let (code, text) = post_hook(&base, "msg_4", now, &body, WEBHOOK_SECRET).await;
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("replayed"), "{text}");
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(60)).await;
    assert_eq!(done.outcome, Some(Outcome::Deployed));
    let approvals = store.approvals(id).await.unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].channel, "webhook");
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn webhook_decisions_are_signed_both_ways_sqlite() {
    webhook_decisions_are_signed_both_ways(Db::Sqlite).await;
}

#[tokio::test]
async fn webhook_decisions_are_signed_both_ways_postgres() {
    webhook_decisions_are_signed_both_ways(Db::Postgres).await;
}

async fn api(base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn a_failing_deploy_hook_keeps_the_champion_then_rollback_and_freeze() {
    let hook = Recorder::start().await;
    let opts = Opts {
        extra: format!(
            r#"
[pipeline.deploy]
hook_url = "{}/reload"
hook_secret_file = "hook-secret"

[pipeline.guards]
max_retrains = ["10/1h"]
max_deploys = ["10/1h"]
cooldown = "0s"
"#,
            hook.url
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    write_secret(&env, "hook-secret", "hook-s3cret");
    let (running, shutdown) = start_daemon(&env, false).await;
    let base = format!("http://{}", running.addr);
    let store = running.engine.store().clone();
    let link = env.dir.path().join("state/models/p1/current");

    // v1 reaches the hook, signed.
    let id = start_cycle(&running.engine, "p1").await;
    wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    let v1 = store.alias("p1", "champion").await.unwrap().unwrap();
    let calls = hook.to("/reload");
    assert_eq!(calls.len(), 1);
    // The id names the move, so a retry after a restart carries the same one.
    assert_eq!(calls[0].header("webhook-id"), Some("deploy-p1-v1-move-1"));
    assert!(
        signing::verify_webhook(
            &Secret::new("hook-s3cret"),
            calls[0].header("webhook-id"),
            calls[0].header("webhook-timestamp"),
            calls[0].header("webhook-signature"),
            &calls[0].body,
            chrono::Utc::now().timestamp()
        )
        .is_ok()
    );
    let sent = calls[0].json();
    assert_eq!(
        (
            sent["type"].as_str(),
            sent["pipeline"].as_str(),
            sent["version"].as_i64()
        ),
        (Some("model.deployed"), Some("p1"), Some(1))
    );
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::PathBuf::from(&v1.path)
    );

    // The hook fails: the cycle fails with the reason, v1 stays champion, the link points
    // back at v1.
    hook.set_status(500);
    env.drift_today();
    let id = start_cycle(&running.engine, "p1").await;
    let failed = wait_state(&store, id, CycleState::Failed, Duration::from_secs(120)).await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.contains("http_hook") && reason.contains("HTTP 500"),
        "{reason}"
    );
    assert!(reason.contains("the champion stays v1"), "{reason}");
    assert_eq!(champion_version(&store).await, 1);
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::PathBuf::from(&v1.path)
    );

    // The hook recovers: v3 deploys (v2 was the failed deploy's candidate).
    hook.set_status(200);
    let id = start_cycle(&running.engine, "p1").await;
    wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    assert_eq!(champion_version(&store).await, 3);

    // A rollback by hand, over the API: back to v1 through the targets.
    let (code, body) = api(
        &base,
        "/api/v1/pipelines/p1/rollback",
        json!({"actor": "ops", "reason": "customer complaints"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["champion"], 1);
    assert_eq!(champion_version(&store).await, 1);
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        std::path::PathBuf::from(&v1.path)
    );
    assert_eq!(hook.to("/reload").last().unwrap().json()["version"], 1);
    let (code, body) = api(
        &base,
        "/api/v1/pipelines/p1/rollback",
        json!({"actor": "ops"}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no `previous` version"),
        "{body}"
    );
    let moves = store.deployments("p1", 10).await.unwrap();
    assert_eq!(moves[0].actor, "ops");
    assert!(
        moves[0].reason.contains("v3 -> v1: customer complaints"),
        "{}",
        moves[0].reason
    );
    // Forward to v3 and back to v1 by hand: every move is delivered under an id of its own —
    // the second v1 → v3 is not mistaken for the first by a receiver that de-duplicates, nor
    // the second v3 → v1 for the first.
    for to in [3, 1] {
        let (code, body) = api(
            &base,
            "/api/v1/pipelines/p1/rollback",
            json!({"actor": "ops", "to": to}),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    let delivered: Vec<String> = hook
        .to("/reload")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.header("webhook-id").unwrap_or_default(),
                r.json()["version"]
            )
        })
        .collect();
    assert_eq!(
        delivered,
        [
            "deploy-p1-v1-move-1 1",
            "deploy-p1-v2-move-2 2",
            "deploy-p1-v3-move-3 3",
            "deploy-p1-v1-move-4 1",
            "deploy-p1-v3-move-5 3",
            "deploy-p1-v1-move-6 1",
        ]
    );
    assert!(store.open_move("p1").await.unwrap().is_none());

    // Freeze: the next drifted check wants a retrain and is blocked, visibly.
    let (code, body) = api(
        &base,
        "/api/v1/freeze",
        json!({"pipeline": "p1", "actor": "ops", "reason": "incident 7"}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let id = start_cycle(&running.engine, "p1").await;
    let blocked = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    assert_eq!(blocked.outcome, Some(Outcome::Blocked));
    let reason = blocked.reason.unwrap();
    assert!(
        reason.contains("blocked by guard frozen") && reason.contains("incident 7"),
        "{reason}"
    );
    let m = metrics(&base).await;
    for want in [
        r#"retraind_guard_blocks_total{guard="frozen",pipeline="p1"} 1"#,
        r#"retraind_pipeline_frozen{pipeline="p1"} 1"#,
        r#"retraind_rollbacks_total{pipeline="p1",reason="manual"} 3"#,
        r#"retraind_deploys_total{pipeline="p1"} 2"#,
        r#"retraind_champion_version{pipeline="p1"} 1"#,
        r#"retraind_training_failures_total{pipeline="p1"} 0"#,
    ] {
        assert!(m.contains(want), "missing {want}");
    }
    let (code, body) = api(
        &base,
        "/api/v1/resume",
        json!({"pipeline": "p1", "actor": "ops"}),
    )
    .await;
    assert_eq!((code, body["lifted"].as_i64()), (200, Some(1)), "{body}");
    assert!(
        metrics(&base)
            .await
            .contains(r#"retraind_pipeline_frozen{pipeline="p1"} 0"#)
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn an_expired_request_is_rejected_and_a_late_approval_refused() {
    let opts = Opts {
        approval: "manual",
        extra: "expires = \"2s\"\n".into(),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (running, shutdown) = start_daemon(&env, false).await;
    let base = format!("http://{}", running.addr);
    let store = running.engine.store().clone();
    let id = start_cycle(&running.engine, "p1").await;
    let rejected = wait_state(&store, id, CycleState::Rejected, Duration::from_secs(120)).await;
    assert!(rejected.reason.unwrap().contains("expired = rejected"));
    let (code, body) = api(
        &base,
        &format!("/api/v1/cycles/{id}/approve"),
        json!({"approver": "ann"}),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert!(store.approvals(id).await.unwrap().is_empty());
    assert!(store.alias("p1", "champion").await.unwrap().is_none());
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn the_gate_checks_size_and_slices_and_the_golden_set_guards_quality() {
    // The golden set guards quality across versions; slices are judged per segment.
    let opts = Opts {
        gate_extra: "slices = [\"segment\"]\nmin_slice_rows = 20\n".into(),
        extra: r#"
[pipeline.guards]
golden_set = "data/reference.csv"
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
    let (running, shutdown) = start_daemon(&env, false).await;
    let store = running.engine.store().clone();
    let id = start_cycle(&running.engine, "p1").await;
    wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    let v1 = store.alias("p1", "champion").await.unwrap().unwrap();
    let golden_v1 = json(&v1.metrics)
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("golden_accuracy_"))
        .map(|(_, v)| v.as_f64().unwrap())
        .expect("v1 scored on the golden set");
    assert!(golden_v1 > 0.9, "{golden_v1}");
    // The concept changes: the retrained model fits the new world and falls below v1 on the
    // golden set (the old world) — the monotonic-quality guard refuses it.
    env.drift_today();
    let id = start_cycle(&running.engine, "p1").await;
    let r = wait_state(&store, id, CycleState::Rejected, Duration::from_secs(120)).await;
    let reason = r.reason.unwrap();
    assert!(
        reason.contains("golden-set accuracy") && reason.contains("worse than v1's"),
        "{reason}"
    );
    let gate = json(&r.gate.unwrap());
    let names: Vec<&str> = gate["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"monotonic_quality"), "{gate}");
    // The drifted window has all three segments, each with enough holdout rows.
    assert_eq!(names.iter().filter(|n| **n == "slice").count(), 3, "{gate}");
    assert!(gate.to_string().contains("slice segment=online"), "{gate}");
    assert_eq!(gate["metrics"][0]["metric"], "accuracy", "{gate}");
    let m = metrics(&format!("http://{}", running.addr)).await;
    assert!(
        m.contains(r#"retraind_guard_blocks_total{guard="monotonic_quality",pipeline="p1"} 1"#)
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;

    // A size limit no model meets: rejected with the numbers; latency measured and kept.
    let opts = Opts {
        gate_extra: r#"
slices = ["segment"]
min_slice_rows = 20
max_model_size_mb = 0.000001
max_latency_ms_per_1k = 60000
"#
        .into(),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (running, shutdown) = start_daemon(&env, false).await;
    let store = running.engine.store().clone();
    let id = start_cycle(&running.engine, "p1").await;
    let r = wait_state(&store, id, CycleState::Rejected, Duration::from_secs(120)).await;
    let reason = r.reason.unwrap();
    assert!(reason.contains("MB vs limit 0.000 MB"), "{reason}");
    let gate = json(&r.gate.unwrap());
    let latency = gate["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "max_latency")
        .unwrap();
    assert_eq!(latency["passed"], true, "{gate}");
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
