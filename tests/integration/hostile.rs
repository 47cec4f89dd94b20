//! The hostile-input corpus: bad data files, bad configurations and bad HTTP requests. Each
//! must give a clear error naming what is wrong — never a panic (exit status 101), never a
//! 5xx, never a dead daemon. Data files go through `retraind check` (the loaders and the
//! statistics the daemon uses) and one through a daemon cycle; configs through
//! `retraind config check`; HTTP bodies through a running daemon.

use std::path::Path;
use std::time::Duration;

use retraind::secret::Secret;
use retraind::signing;

use crate::helpers::{Db, Env, Opts, TOKEN, retraind, start_cycle, start_daemon};

const HEADER: &str = "feature_a,feature_b,segment,target\n";

fn good_rows(n: usize) -> String {
    let mut s = String::from(HEADER);
    for i in 0..n {
        let seg = ["a", "b", "c"][i % 3];
        s.push_str(&format!("{},{},{seg},{}\n", i % 17, (i * 7) % 13, i % 2));
    }
    s
}

/// A bad data file: its bytes, the exit status it must end with (1 an error, 4 a failed
/// quality gate; never 0 or 3, which a report of good data gives) and the phrase of the
/// error — words a successful report never prints.
struct BadData {
    name: &'static str,
    bytes: Vec<u8>,
    exit: i32,
    /// Substrings of stdout + stderr (all must appear), lower-cased comparison.
    says: &'static [&'static str],
}

fn bad_data(dir: &Path) -> Vec<BadData> {
    let parquet = {
        // A real Parquet file, cut in half.
        let csv = dir.join("whole.csv");
        std::fs::write(&csv, good_rows(500)).unwrap();
        let spec = retraind::data::RoleSpec {
            numerical: None,
            categorical: None,
            target: "target",
            prediction: None,
            timestamp: None,
            ignore: &[],
        };
        let (roles, table) =
            retraind::data::load_inferred(&retraind::data::Input::file(&csv), &spec, true).unwrap();
        let out = dir.join("whole.parquet");
        retraind::data::write_parquet(&table, &roles, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        bytes[..bytes.len() / 2].to_vec()
    };
    let mut half_nan = String::from(HEADER);
    for i in 0..300 {
        let a = if i % 2 == 0 {
            "NaN".to_string()
        } else {
            (i % 17).to_string()
        };
        half_nan.push_str(&format!(
            "{a},{},{},{}\n",
            (i * 7) % 13,
            ["a", "b", "c"][i % 3],
            i % 2
        ));
    }
    vec![
        BadData {
            name: "empty.csv",
            bytes: Vec::new(),
            exit: 1,
            says: &["empty.csv: cannot parse", "empty csv"],
        },
        BadData {
            name: "header-only.csv",
            bytes: HEADER.as_bytes().to_vec(),
            exit: 1,
            says: &["header-only.csv: has no rows"],
        },
        BadData {
            name: "truncated.parquet",
            bytes: parquet,
            exit: 1,
            says: &["truncated.parquet: cannot parse"],
        },
        BadData {
            name: "garbage.parquet",
            bytes: b"this is not parquet at all".to_vec(),
            exit: 1,
            says: &["garbage.parquet: cannot parse"],
        },
        BadData {
            name: "binary.csv",
            bytes: (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect(),
            exit: 1,
            says: &["binary.csv: cannot parse", "invalid utf-8"],
        },
        BadData {
            name: "ragged.csv",
            bytes: format!("{HEADER}1,2,a,0\n1,2\n1,2,a,0,9,9\n").into_bytes(),
            exit: 1,
            says: &["ragged.csv: cannot parse", "more fields"],
        },
        BadData {
            name: "wrong-schema.csv",
            bytes: b"other,columns\n1,2\n3,4\n".to_vec(),
            exit: 1,
            says: &["column `feature_a` is missing"],
        },
        BadData {
            name: "nan.csv",
            bytes: half_nan.into_bytes(),
            exit: 4,
            says: &["`feature_a` is empty in 50.0% of current rows"],
        },
        BadData {
            name: "inf.csv",
            bytes: format!("{}inf,1,a,0\n-inf,1,b,1\n", good_rows(300)).into_bytes(),
            exit: 4,
            says: &["`feature_a` has 2 infinite value(s)"],
        },
        BadData {
            name: "text-in-numbers.csv",
            bytes: format!("{}abc,1,a,0\n", good_rows(300)).into_bytes(),
            exit: 1,
            says: &["column `feature_a` is str, expected a numerical type"],
        },
        BadData {
            name: "json.parquet",
            bytes: b"{\"feature_a\": 1}".to_vec(),
            exit: 1,
            says: &["json.parquet: cannot parse"],
        },
        BadData {
            name: "missing.csv",
            bytes: Vec::new(),
            exit: 1,
            says: &["cannot read", "missing.csv: no such file"],
        },
    ]
}

/// `retraind check --format json` of `current` against `reference`: exit status, output.
fn check_file(reference: &Path, current: &Path) -> (i32, String) {
    let (code, out, err) = crate::helpers::check_json(reference, current, &[]);
    (code, format!("{out}{err}").to_lowercase())
}

#[test]
fn bad_data_files_give_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.csv");
    std::fs::write(&reference, good_rows(300)).unwrap();
    let mut failures = Vec::new();
    for case in bad_data(dir.path()) {
        let path = dir.path().join(case.name);
        if case.name != "missing.csv" {
            std::fs::write(&path, &case.bytes).unwrap();
        }
        let (code, text) = check_file(&reference, &path);
        let named = case.says.iter().all(|s| text.contains(&s.to_lowercase()));
        if code != case.exit || !named || text.contains("panicked") {
            failures.push(format!(
                "{}: exit {code} (want {}), must say {:?}\n{}",
                case.name,
                case.exit,
                case.says,
                text.chars().take(600).collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Files that are extreme but valid — a 20 MB cell, a million distinct categories — are
/// checked, in bounded time: a report (exit 0 or 3) that names their columns, not an error.
#[test]
fn extreme_but_valid_files_are_checked_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.csv");
    std::fs::write(&reference, good_rows(300)).unwrap();
    let mut huge_line = String::from(HEADER);
    huge_line.push_str(&format!("1,2,{},0\n", "x".repeat(20_000_000)));
    huge_line.push_str(&good_rows(50)[HEADER.len()..]);
    let huge = dir.path().join("huge-line.csv");
    std::fs::write(&huge, huge_line).unwrap();
    let mut many = String::from("feature_a,category,target\n");
    for i in 0..1_000_000 {
        many.push_str(&format!("{},c{i},{}\n", i % 10, i % 2));
    }
    let million = dir.path().join("million-categories.csv");
    std::fs::write(&million, many).unwrap();
    // The million categories against themselves: the point is that they are pooled.
    for (reference, current, column) in [
        (&reference, &huge, "\"segment\""),
        (&million, &million, "\"category\""),
    ] {
        let started = std::time::Instant::now();
        let (code, text) = check_file(reference, current);
        let took = started.elapsed();
        assert!(
            matches!(code, 0 | 3) && text.contains(column) && !text.contains("panicked"),
            "{}: exit {code} after {took:?}\n{}",
            current.display(),
            text.chars().take(600).collect::<String>()
        );
        assert!(
            took < Duration::from_secs(120),
            "{}: {took:?}",
            current.display()
        );
    }
}

#[test]
fn bad_configs_name_the_key_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ref.csv"), good_rows(10)).unwrap();
    let pipeline = "[[pipeline]]\nname = \"p\"\n[pipeline.data]\nreference = \"ref.csv\"\ncurrent = \"{date}.csv\"\n";
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("empty", String::new(), &["pipeline"]),
        ("not toml", "[[pipeline\nname = ".into(), &["invalid toml"]),
        (
            "unknown key",
            format!("{pipeline}[pipeline.gate]\nmin_acuracy = 0.9\n"),
            &["pipeline[0].gate.min_acuracy", "unknown key"],
        ),
        (
            "wrong type",
            format!("{pipeline}[pipeline.gate]\nmin_accuracy = \"high\"\n"),
            &["min_accuracy"],
        ),
        (
            "overflowing duration",
            format!("{pipeline}[pipeline.train]\ntimeout = \"99999999999999999999h\"\n"),
            &["pipeline[0].train.timeout"],
        ),
        (
            "ten-year duration",
            format!("{pipeline}[pipeline.approval]\nexpires = \"100000h\"\n"),
            &["approval.expires", "10 years"],
        ),
        (
            "negative count",
            pipeline.replace(
                "current = \"{date}.csv\"\n",
                "current = \"{date}.csv\"\nmin_rows = -5\n",
            ),
            &["min_rows"],
        ),
        (
            "huge integer",
            "[store]\nmax_connections = 100000000000000000000\n".to_string(),
            &["max_connections"],
        ),
        (
            "path traversal name",
            pipeline.replace("name = \"p\"", "name = \"../../etc\""),
            &["pipeline[0].name", "not a valid name"],
        ),
        (
            "duplicate names",
            format!("{pipeline}{pipeline}"),
            &["pipeline[1].name"],
        ),
        (
            "bad cron",
            pipeline.replace("name = \"p\"", "name = \"p\"\nschedule = \"every day\""),
            &["pipeline[0].schedule"],
        ),
        (
            "bad budget",
            format!("{pipeline}[pipeline.guards]\nmax_deploys = [\"many/day\"]\n"),
            &["pipeline[0].guards.max_deploys", "whole number"],
        ),
        (
            "nan threshold",
            format!("{pipeline}[pipeline.gate]\nmin_accuracy = nan\n"),
            &["min_accuracy"],
        ),
        (
            "deep nesting",
            format!("{pipeline}x = {}1{}\n", "[".repeat(200), "]".repeat(200)),
            &[],
        ),
    ];
    let mut failures = Vec::new();
    for (what, text, says) in cases {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, &text).unwrap();
        let (code, out, err) = retraind(&["config", "check", path.to_str().unwrap()]);
        let all = format!("{out}{err}").to_lowercase();
        let named = says.iter().all(|s| all.contains(&s.to_lowercase()));
        if code == 0 || code == 101 || all.contains("panicked") || !named {
            failures.push(format!("{what}: exit {code}\n{all}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[tokio::test]
async fn bad_requests_get_4xx_with_a_reason_and_the_daemon_lives_on() {
    let opts = Opts {
        extra: "\n[webhook]\nsecret_file = \"webhook-secret\"\n\n[slack]\nincoming_webhook_file = \"slack-hook\"\nsigning_secret_file = \"slack-signing\"\n".into(),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    std::fs::write(env.dir.path().join("webhook-secret"), "whsec_c2VjcmV0").unwrap();
    std::fs::write(env.dir.path().join("slack-hook"), "http://127.0.0.1:9/hook").unwrap();
    std::fs::write(env.dir.path().join("slack-signing"), "signing").unwrap();
    let (running, shutdown) = start_daemon(&env, false).await;
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::new();
    let big = vec![b'x'; retraind::server::BODY_LIMIT + 10];
    let now = chrono::Utc::now().timestamp();
    let hook = |id: &str, ts: i64, body: &[u8]| {
        signing::sign_webhook(&Secret::new("whsec_c2VjcmV0"), id, ts, body).pairs()
    };
    let slack_sig = |ts: i64, body: &[u8]| {
        signing::slack_signature(&Secret::new("signing"), &ts.to_string(), body)
    };
    let form = |payload: &str| {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", payload)
            .finish()
            .into_bytes()
    };
    // (what, path, content type, extra headers, body, expected status, reason fragment)
    type Case = (
        &'static str,
        String,
        &'static str,
        Vec<(&'static str, String)>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let auth = vec![("authorization", format!("Bearer {TOKEN}"))];
    let nested = format!("{}1{}", "[".repeat(30_000), "]".repeat(30_000)).into_bytes();
    let slack_bad_json = form("{not json");
    let slack_other = form("{\"type\":\"view_submission\"}");
    let hook_body = br#"{"cycle": 1, "decision": "approve", "approver": "x"}"#.to_vec();
    let hook_bad = br#"{"cycle": "one"}"#.to_vec();
    let cases: Vec<Case> = vec![
        (
            "oversized trigger",
            "/api/v1/pipelines/p1/trigger".into(),
            "application/json",
            auth.clone(),
            big.clone(),
            413,
            "",
        ),
        (
            "oversized approve",
            "/api/v1/cycles/1/approve".into(),
            "application/json",
            auth.clone(),
            big.clone(),
            413,
            "",
        ),
        (
            "oversized slack",
            "/slack/interactions".into(),
            "application/x-www-form-urlencoded",
            vec![],
            big.clone(),
            413,
            "",
        ),
        (
            "oversized hook",
            "/hooks/approval".into(),
            "application/json",
            vec![],
            big.clone(),
            413,
            "",
        ),
        (
            "invalid json",
            "/api/v1/cycles/1/approve".into(),
            "application/json",
            auth.clone(),
            b"{approver:".to_vec(),
            400,
            "",
        ),
        (
            "wrong content type",
            "/api/v1/cycles/1/approve".into(),
            "text/plain",
            auth.clone(),
            br#"{"approver":"a"}"#.to_vec(),
            415,
            "",
        ),
        (
            "unknown field",
            "/api/v1/cycles/1/approve".into(),
            "application/json",
            auth.clone(),
            br#"{"approver":"a","admin":true}"#.to_vec(),
            422,
            "admin",
        ),
        (
            "empty approver",
            "/api/v1/cycles/1/approve".into(),
            "application/json",
            auth.clone(),
            br#"{"approver":"  "}"#.to_vec(),
            422,
            "approver",
        ),
        (
            "deeply nested json",
            "/api/v1/freeze".into(),
            "application/json",
            auth.clone(),
            nested,
            422,
            "invalid type",
        ),
        (
            "bad date",
            "/api/v1/pipelines/p1/trigger".into(),
            "application/json",
            auth.clone(),
            br#"{"date":"2026-13-45"}"#.to_vec(),
            422,
            "YYYY-MM-DD",
        ),
        (
            "unknown pipeline",
            "/api/v1/pipelines/nope/trigger".into(),
            "application/json",
            auth.clone(),
            b"{}".to_vec(),
            404,
            "nope",
        ),
        (
            "unknown cycle",
            "/api/v1/cycles/999999/approve".into(),
            "application/json",
            auth.clone(),
            br#"{"approver":"a"}"#.to_vec(),
            404,
            "999999",
        ),
        (
            "non-numeric cycle",
            "/api/v1/cycles/abc/approve".into(),
            "application/json",
            auth.clone(),
            br#"{"approver":"a"}"#.to_vec(),
            400,
            "",
        ),
        (
            "negative version rollback",
            "/api/v1/pipelines/p1/rollback".into(),
            "application/json",
            auth.clone(),
            br#"{"actor":"a","to":-3}"#.to_vec(),
            409,
            "no champion",
        ),
        (
            "freeze unknown pipeline",
            "/api/v1/freeze".into(),
            "application/json",
            auth.clone(),
            br#"{"actor":"a","pipeline":"../x"}"#.to_vec(),
            404,
            "../x",
        ),
        (
            "slack unsigned",
            "/slack/interactions".into(),
            "application/x-www-form-urlencoded",
            vec![],
            form("{}"),
            401,
            "x-slack-request-timestamp",
        ),
        (
            "slack bad signature",
            "/slack/interactions".into(),
            "application/x-www-form-urlencoded",
            vec![
                ("x-slack-request-timestamp", now.to_string()),
                ("x-slack-signature", "v0=00".into()),
            ],
            form("{}"),
            401,
            "signature",
        ),
        (
            "slack signed garbage",
            "/slack/interactions".into(),
            "application/x-www-form-urlencoded",
            vec![
                ("x-slack-request-timestamp", now.to_string()),
                ("x-slack-signature", slack_sig(now, &slack_bad_json)),
            ],
            slack_bad_json.clone(),
            400,
            "not json",
        ),
        (
            "slack signed other type",
            "/slack/interactions".into(),
            "application/x-www-form-urlencoded",
            vec![
                ("x-slack-request-timestamp", now.to_string()),
                ("x-slack-signature", slack_sig(now, &slack_other)),
            ],
            slack_other.clone(),
            400,
            "view_submission",
        ),
        (
            "slack future timestamp",
            "/slack/interactions".into(),
            "application/x-www-form-urlencoded",
            vec![
                ("x-slack-request-timestamp", (now + 3600).to_string()),
                ("x-slack-signature", slack_sig(now + 3600, b"x")),
            ],
            b"x".to_vec(),
            401,
            "stale",
        ),
        (
            "hook unsigned",
            "/hooks/approval".into(),
            "application/json",
            vec![],
            hook_body.clone(),
            401,
            "webhook-id",
        ),
        (
            "hook bad signature",
            "/hooks/approval".into(),
            "application/json",
            vec![
                ("webhook-id", "m1".into()),
                ("webhook-timestamp", now.to_string()),
                ("webhook-signature", "v1,AAAA".into()),
            ],
            hook_body.clone(),
            401,
            "signature",
        ),
        (
            "hook stale",
            "/hooks/approval".into(),
            "application/json",
            hook("m2", now - 600, &hook_body).to_vec(),
            hook_body.clone(),
            401,
            "stale",
        ),
        (
            "hook signed bad body",
            "/hooks/approval".into(),
            "application/json",
            hook("m3", now, &hook_bad).to_vec(),
            hook_bad.clone(),
            422,
            "invalid decision json",
        ),
        (
            "hook unknown cycle",
            "/hooks/approval".into(),
            "application/json",
            hook("m4", now, &hook_body).to_vec(),
            hook_body.clone(),
            404,
            "no cycle 1",
        ),
        // The same id again: the first recorded nothing, so it is answered the same, not
        // refused as a replay (a replay of a recorded decision is: security, store tests).
        (
            "hook id of a decision that recorded nothing, again",
            "/hooks/approval".into(),
            "application/json",
            hook("m4", now, &hook_body).to_vec(),
            hook_body.clone(),
            404,
            "no cycle 1",
        ),
    ];
    let mut failures = Vec::new();
    for (what, path, ctype, headers, body, want, says) in cases {
        let mut req = client
            .post(format!("{base}{path}"))
            .header("content-type", ctype)
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if code != want || !text.to_lowercase().contains(&says.to_lowercase()) {
            failures.push(format!(
                "{what}: {code} (want {want}, mentioning {says:?}): {text}"
            ));
        }
    }
    // Still alive and working.
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_truncated_window_fails_its_cycle_with_the_file_named() {
    let Some(env) = Env::new(Db::Sqlite, Opts::default()).await else {
        return;
    };
    let today = env
        .dir
        .path()
        .join("data/current")
        .join(format!("{}.csv", env.date));
    let bytes = std::fs::read(&today).unwrap();
    // Cut mid-row, then binary garbage: what a crashed copy job leaves behind.
    let mut cut = bytes[..bytes.len() / 3 + 7].to_vec();
    cut.extend_from_slice(b"\x00\x01garbage,,,,,,,,\n");
    std::fs::write(&today, cut).unwrap();
    let (running, shutdown) = start_daemon(&env, false).await;
    let id = start_cycle(&running.engine, "p1").await;
    let store = running.engine.store().clone();
    let c = crate::helpers::wait_state(
        &store,
        id,
        retraind::cycle::CycleState::Completed,
        Duration::from_secs(60),
    )
    .await;
    let reason = c.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(&format!("{}.csv", env.date))
            || c.outcome == Some(retraind::cycle::Outcome::QualityFailed),
        "{c:?}"
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
