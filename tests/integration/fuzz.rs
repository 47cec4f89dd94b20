//! Mutation fuzzing of the parsers an outsider can feed: the config parser, the signature
//! verifiers and the decision/interaction parsers behind them, and the HTML report renderer
//! (stored report JSON). Seeded inputs are mutated (byte flips, splices of hostile tokens,
//! deletions, duplications; for JSON, values swapped for other types, huge numbers and deep
//! nesting) and every input must come back as `Ok` or `Err`, never a panic.
//!
//! CI runs a few seconds per target. A long run: `RETRAIND_FUZZ_SECONDS=600 cargo test
//! --test integration fuzz -- --nocapture` (each target gets that many seconds; the seed is
//! printed, and `RETRAIND_FUZZ_SEED` replays one).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use retraind::secret::Secret;
use retraind::signing;
use serde_json::{Value, json};

const TOKENS: &[&str] = &[
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "\"",
    "'",
    "\"\"\"",
    "\n",
    "#",
    ",",
    ".",
    "-",
    "\0",
    "\u{feff}",
    "é",
    "{date}",
    "1e309",
    "-1",
    "0",
    "nan",
    "inf",
    "18446744073709551616",
    "99999999999999999999h",
    "true",
    "[pipeline]",
    "[[pipeline]]",
    "[pipeline.gate]",
    "name",
    "*",
    "../",
    "s3://",
    "http://",
    "://",
    "\\u0000",
    "\\",
];

fn seconds() -> Duration {
    let s = std::env::var("RETRAIND_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s)
}

fn rng(target: &str) -> StdRng {
    let seed = std::env::var("RETRAIND_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| target.bytes().map(u64::from).sum::<u64>() * 7919);
    eprintln!("fuzz {target}: seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// One mutation of a byte string.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = if out.is_empty() {
            0
        } else {
            rng.random_range(0..out.len())
        };
        match rng.random_range(0..5) {
            0 if !out.is_empty() => out[at] ^= 1 << rng.random_range(0..8),
            1 => {
                let t = TOKENS[rng.random_range(0..TOKENS.len())].as_bytes();
                out.splice(at..at, t.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + rng.random_range(1..64)).min(out.len());
                out.drain(at..end);
            }
            3 if !out.is_empty() => {
                let end = (at + rng.random_range(1..128)).min(out.len());
                let piece = out[at..end].to_vec();
                out.splice(at..at, piece);
            }
            _ => out.insert(at, rng.random()),
        }
    }
    out
}

/// Run `f` on mutations of the seeds for the configured time; report panics.
fn fuzz(target: &str, seeds: &[Vec<u8>], f: impl Fn(&[u8])) {
    let mut rng = rng(target);
    let until = Instant::now() + seconds();
    let mut runs = 0u64;
    while Instant::now() < until {
        let seed = &seeds[rng.random_range(0..seeds.len())];
        let input = mutate(&mut rng, seed);
        if catch_unwind(AssertUnwindSafe(|| f(&input))).is_err() {
            panic!(
                "{target} panicked on input #{runs}:\n{}",
                String::from_utf8_lossy(&input)
            );
        }
        runs += 1;
    }
    eprintln!("fuzz {target}: {runs} inputs, no panic");
    assert!(runs > 0);
}

#[test]
fn fuzz_the_config_parser() {
    let shipped =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/config/retraind.toml")).unwrap();
    let small = b"[daemon]\nstate_dir = \"s\"\n[[pipeline]]\nname = \"p\"\n[pipeline.data]\nreference = \"r.csv\"\ncurrent = \"{date}.csv\"\n[pipeline.guards]\nmax_retrains = [\"1/24h\"]\n".to_vec();
    let path = std::env::temp_dir().join("fuzz.toml");
    fuzz("config", &[shipped, small], |input| {
        let text = String::from_utf8_lossy(input);
        let _ = retraind::config::Config::parse(&text, &path, &[]);
    });
}

#[test]
fn fuzz_the_signed_endpoints_parsers() {
    let slack_secret = Secret::new("8f742231b10e8888abcd99yyyzzz85a5");
    let hook_secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    let payload = json!({
        "type": "block_actions",
        "user": {"id": "U1", "username": "alice"},
        "actions": [{"action_id": "approve", "value": "7"}],
        "response_url": "https://hooks.slack.com/actions/T/1/x"
    });
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
        .into_bytes();
    let decision =
        br#"{"cycle": 7, "decision": "approve", "approver": "carol", "reason": "ok"}"#.to_vec();
    let now = 1_700_000_000i64;
    fuzz("signatures", &[form, decision], |input| {
        // Headers made of the input too: timestamp, signature, id.
        let text = String::from_utf8_lossy(input);
        let mut parts = text.splitn(3, '&');
        let (a, b, c) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        let _ = signing::verify_slack(&slack_secret, Some(a), Some(b), input, now);
        let good = signing::slack_signature(&slack_secret, &now.to_string(), input);
        assert!(
            signing::verify_slack(
                &slack_secret,
                Some(&now.to_string()),
                Some(&good),
                input,
                now
            )
            .is_ok()
        );
        let _ = signing::verify_webhook(&hook_secret, Some(a), Some(b), Some(c), input, now);
        let _ = retraind::approval::slack::parse_interaction(input);
        let _ = retraind::approval::webhook::parse_decision(input);
    });
}

/// Replace a random value deep in `v` with something of another shape.
fn mutate_json(rng: &mut StdRng, v: &mut Value, depth: usize) {
    let replace = depth > 6 || rng.random_bool(0.2);
    match v {
        Value::Object(map) if !replace && !map.is_empty() => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let k = &keys[rng.random_range(0..keys.len())];
            if rng.random_bool(0.1) {
                map.remove(k);
            } else if let Some(child) = map.get_mut(k) {
                mutate_json(rng, child, depth + 1);
            }
        }
        Value::Array(items) if !replace && !items.is_empty() => {
            let i = rng.random_range(0..items.len());
            mutate_json(rng, &mut items[i], depth + 1);
        }
        _ => {
            *v = match rng.random_range(0..9) {
                0 => Value::Null,
                1 => json!(f64::MAX),
                2 => json!(-1),
                3 => json!("<script>alert(1)</script>"),
                4 => json!([]),
                5 => json!({}),
                6 => json!(u64::MAX),
                7 => json!("x".repeat(10_000)),
                _ => {
                    let mut deep = json!(1);
                    for _ in 0..100 {
                        deep = json!([deep]);
                    }
                    deep
                }
            }
        }
    }
}

#[test]
fn fuzz_the_report_renderer() {
    // A real report: the standalone check of two generated windows.
    let dir = tempfile::tempdir().unwrap();
    let (r, c) = (dir.path().join("r.csv"), dir.path().join("c.csv"));
    retraind::demo::generate(&r, 800, retraind::demo::Regime::NORMAL, 1).unwrap();
    retraind::demo::generate(&c, 800, retraind::demo::Regime::DRIFTED, 2).unwrap();
    let (code, out, err) = crate::helpers::retraind(&[
        "check",
        "--reference",
        r.to_str().unwrap(),
        "--current",
        c.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 3, "{err}");
    let check: Value = serde_json::from_str(&out).unwrap();
    let seed = json!({
        "cycle": 1, "pipeline": "p", "date": "2026-11-27",
        "quality": check["quality"],
        "drift": { "features": check["features"], "dataset": check["dataset"], "insufficient_data": false },
        "performance": { "metric": "accuracy", "status": "degraded", "current": 0.8, "baseline": 0.95, "labels": 100, "test": "bootstrap", "detail": "x" },
        "decision": { "verdict": "retrain", "reasons": ["drift"] },
    });
    assert!(retraind::report::render_stored(&seed).contains("<svg"));
    let mut rng = rng("report");
    let until = Instant::now() + seconds();
    let mut runs = 0;
    while Instant::now() < until {
        let mut v = seed.clone();
        for _ in 0..rng.random_range(1..4) {
            mutate_json(&mut rng, &mut v, 0);
        }
        let html = catch_unwind(AssertUnwindSafe(|| retraind::report::render_stored(&v)))
            .unwrap_or_else(|_| panic!("render panicked on {v}"));
        assert!(
            !html.contains("<script>alert"),
            "unescaped text in the report"
        );
        runs += 1;
    }
    eprintln!("fuzz report: {runs} inputs, no panic");
    assert!(runs > 0, "the report fuzzer ran no input");
}
