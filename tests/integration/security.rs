//! Secrets and auth: a full cycle of the real binary with marker secrets in every secret
//! slot (API token, Slack bot token and signing secret, webhook secret, deploy-hook secret),
//! with channels that fail once so error paths run too; then every output is searched for
//! the markers: the daemon's log (debug level), `/metrics`, every API answer and report, every
//! file under the state directory (the SQLite store included) and every body sent out.
//! Every mutating endpoint refuses a request without the token.

use std::time::Duration;

use retraind::secret::Secret;
use retraind::signing;
use serde_json::json;

use crate::helpers::{Db, Env, Opts, Recorder, Server, TOKEN, eventually, wait_http};

const SLACK_BOT: &str = "xoxb-MARKER-slack-bot-7f3a";
const SLACK_SIGNING: &str = "MARKER-slack-signing-91cc";
const WEBHOOK: &str = "MARKER-webhook-secret-44d0";
const HOOK: &str = "MARKER-deploy-hook-secret-b2e1";

fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            walk(&p, out);
        } else if p.is_file() {
            out.push(p);
        }
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_metrics_reports_errors_or_the_store() {
    let outside = Recorder::start().await;
    let port = crate::helpers::free_port();
    let opts = Opts {
        approval: "manual",
        listen: format!("127.0.0.1:{port}"),
        extra: format!(
            r#"approvers = ["@alice"]

[pipeline.deploy]
hook_url = "{url}/reload"
hook_secret_file = "hook-secret"

[slack]
api_url = "{url}/api"
channel = "ml"
bot_token_file = "slack-bot"
signing_secret_file = "slack-signing"

[webhook]
url = "{url}/events"
secret_file = "webhook-secret"
"#,
            url = outside.url
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    for (file, value) in [
        ("slack-bot", SLACK_BOT),
        ("slack-signing", SLACK_SIGNING),
        ("webhook-secret", WEBHOOK),
        ("hook-secret", HOOK),
    ] {
        std::fs::write(env.dir.path().join(file), value).unwrap();
    }
    // Everything outside fails at first: the request deliveries log their errors.
    outside.set_status(500);
    let log = env.dir.path().join("daemon.log");
    let child = env
        .run_command()
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(env.dir.path().join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Server(child);
    let base = format!("http://127.0.0.1:{port}");
    wait_http(&format!("127.0.0.1:{port}")).await;
    let client = reqwest::Client::new();
    let mut answers = Vec::new();

    // Every mutation refuses a missing or wrong token.
    for path in [
        "/api/v1/pipelines/p1/trigger",
        "/api/v1/cycles/1/approve",
        "/api/v1/cycles/1/reject",
        "/api/v1/pipelines/p1/rollback",
        "/api/v1/freeze",
        "/api/v1/resume",
    ] {
        for token in [None, Some("wrong-token")] {
            let mut req = client.post(format!("{base}{path}")).json(&json!({}));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {token:?}");
            answers.push(r.text().await.unwrap());
        }
    }

    let id = crate::helpers::trigger_api(&format!("127.0.0.1:{port}"))
        .await
        .expect("the leader accepts the trigger");
    let cycle_url = format!("{base}/api/v1/cycles/{id}");
    eventually(Duration::from_secs(120), "awaiting approval", || {
        let url = cycle_url.clone();
        async move {
            let c: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (c["state"] == "awaiting_approval").then_some(())
        }
    })
    .await;
    // Let a delivery fail, then recover.
    tokio::time::sleep(Duration::from_secs(1)).await;
    outside.set_status(200);
    // A forged and a genuine Slack press.
    let payload = json!({
        "type": "block_actions",
        "user": {"id": "U1", "username": "alice"},
        "actions": [{"action_id": "approve", "value": id.to_string()}],
        "response_url": format!("{}/respond", outside.url)
    });
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish();
    let ts = chrono::Utc::now().timestamp().to_string();
    // The forged press is refused (401) and the genuine one recorded (200); the same genuine
    // press again is a replay of a recorded decision (401).
    for (secret, status) in [("wrong", 401), (SLACK_SIGNING, 200), (SLACK_SIGNING, 401)] {
        let sig = signing::slack_signature(&Secret::new(secret), &ts, body.as_bytes());
        let r = client
            .post(format!("{base}/slack/interactions"))
            .header("x-slack-request-timestamp", &ts)
            .header("x-slack-signature", sig)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(code, status, "Slack press signed with `{secret}`: {text}");
        answers.push(format!("{code} {text}"));
    }
    eventually(Duration::from_secs(60), "completed", || {
        let url = cycle_url.clone();
        async move {
            let c: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            (c["state"] == "completed").then_some(())
        }
    })
    .await;
    assert!(
        !outside.to("/reload").is_empty(),
        "the deploy hook was called"
    );

    // Collect every output.
    for path in [
        "/metrics".to_string(),
        "/api/v1/pipelines".into(),
        "/api/v1/cycles".into(),
        format!("/api/v1/cycles/{id}"),
        "/api/v1/pipelines/p1/models".into(),
        format!("/reports/{id}"),
        "/readyz".into(),
    ] {
        answers.push(
            reqwest::get(format!("{base}{path}"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let mut files = Vec::new();
    walk(&env.dir.path().join("state"), &mut files);
    files.push(log.clone());
    files.push(env.dir.path().join("daemon.out"));
    let sent: Vec<Vec<u8>> = outside
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.body.clone())
        .collect();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("\"level\":\"DEBUG\""),
        "the log ran at debug level"
    );
    assert!(
        log_text.contains("not delivered"),
        "a delivery failed and was logged:\n{log_text}"
    );
    let markers = [SLACK_BOT, SLACK_SIGNING, WEBHOOK, HOOK, TOKEN];
    let mut leaks = Vec::new();
    for m in markers {
        for (i, a) in answers.iter().enumerate() {
            if a.contains(m) {
                leaks.push(format!("{m} in HTTP answer #{i}"));
            }
        }
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            if bytes.windows(m.len()).any(|w| w == m.as_bytes()) {
                leaks.push(format!("{m} in {}", f.display()));
            }
        }
        for (i, b) in sent.iter().enumerate() {
            if b.windows(m.len()).any(|w| w == m.as_bytes()) {
                leaks.push(format!("{m} in body #{i} sent out"));
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("retraind.db")),
        "{files:?}"
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
