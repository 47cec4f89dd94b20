//! Compatibility with what earlier releases wrote and printed.
//!
//! `tests/fixtures/compat/` holds a SQLite store written by the release before the engine
//! was split into steps and its records were typed (commit f1c4f2e; `make.sh` there says
//! how), with cycles in every terminal state and outcome, versions with lineage and gate
//! documents, approvals, deployments, holds and events, and what that release printed for
//! it. The current binary opens a copy of that store and must print the same documents.
//!
//! `tests/fixtures/config-problems/` holds configurations with problems in every section,
//! and what that release's `config check` reported for each: the problems must stay the
//! same now that each section validates itself.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::retraind;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A copy of the fixture store and the config that reads it, in a temporary folder.
struct Fixture {
    _dir: tempfile::TempDir,
    config: PathBuf,
    golden: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let src = fixtures().join("compat");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(src.join("retraind.db"), dir.path().join("retraind.db")).unwrap();
        std::fs::copy(src.join("retraind.toml"), dir.path().join("retraind.toml")).unwrap();
        std::fs::create_dir_all(dir.path().join("data/current")).unwrap();
        std::fs::write(
            dir.path().join("data/reference.csv"),
            "feature_a,feature_b,feature_c,value,segment,target\n0.1,0.2,0.3,4.0,retail,1\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("api-token"), "fixture-token\n").unwrap();
        Fixture {
            config: dir.path().join("retraind.toml"),
            golden: src.join("golden"),
            _dir: dir,
        }
    }

    /// `retraind <args>` on the copied store; its standard output.
    fn run(&self, args: &[&str]) -> String {
        let url = format!(
            "sqlite://{}",
            self.config.with_file_name("retraind.db").display()
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_retraind"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RETRAIND_STORE__URL", url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "retraind {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn golden(&self, name: &str) -> String {
        std::fs::read_to_string(self.golden.join(name))
            .unwrap_or_else(|e| panic!("golden file {name}: {e}"))
    }
}

/// `next_scheduled_at` depends on when the test runs: compared as present, not by value.
fn without_clock(mut v: Value) -> Value {
    if let Some(list) = v.as_array_mut() {
        for p in list {
            if let Some(next) = p.get_mut("next_scheduled_at") {
                assert!(next.is_string(), "next_scheduled_at: {next}");
                *next = Value::Null;
            }
        }
    }
    v
}

/// `status` entries without the fields added since the previous release (documents may
/// gain fields, never lose or rename one).
fn without_added(mut v: Value) -> Value {
    if let Some(list) = v.as_array_mut() {
        for p in list {
            if let Some(entry) = p.as_object_mut() {
                let holds = entry.remove("holds");
                assert!(holds.is_some(), "status has no `holds`: {entry:?}");
                entry.remove("last_check");
            }
        }
    }
    v
}

/// The first place two JSON documents differ, or `None` when they are the same document.
/// Numbers must agree in kind (integer or float) and, for floats, to 2 units in the last
/// place: a float that went through text twice may come back one step off (serde_json's
/// default parser is not correctly rounded).
fn difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => difference(u, v, &format!("{at}.{k}")),
                (u, v) => Some(format!("{at}.{k}: {u:?} vs {v:?}")),
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| difference(u, v, &format!("{at}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            let (u, v) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let ulps = (u.to_bits() as i64 - v.to_bits() as i64).unsigned_abs();
            (ulps > 2).then(|| format!("{at}: {u} vs {v}"))
        }
        _ => (a != b).then(|| format!("{at}: {a} vs {b}")),
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `status`, `history`, `models` and `lineage` print what the release before the
/// restructuring printed for the store it wrote: the same JSON documents (field for field,
/// number for number), and the same text tables.
#[test]
fn the_store_of_the_previous_release_reads_and_prints_the_same() {
    let f = Fixture::new();
    let status = f.run(&["status", "--format", "json"]);
    assert_eq!(
        without_added(without_clock(json(&status))),
        without_clock(json(&f.golden("status.json")))
    );
    for (args, golden) in [
        (
            vec!["history", "--limit", "100", "--format", "json"],
            "history.json",
        ),
        (
            vec!["models", "churn", "--format", "json"],
            "models-churn.json",
        ),
        (
            vec!["models", "fraud", "--format", "json"],
            "models-fraud.json",
        ),
    ] {
        let printed = f.run(&args);
        assert_eq!(json(&printed), json(&f.golden(golden)), "{args:?}");
        assert_eq!(printed, f.golden(golden), "{args:?}: same bytes");
    }
    for (args, golden) in [
        (vec!["history", "--limit", "100"], "history.txt"),
        (vec!["models", "churn"], "models-churn.txt"),
    ] {
        assert_eq!(f.run(&args), f.golden(golden), "{args:?}");
    }
    let models = json(&f.golden("models-churn.json"));
    let versions: Vec<i64> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_i64().unwrap())
        .collect();
    assert!(versions.len() >= 5, "{versions:?}");
    for v in versions {
        let v = v.to_string();
        let printed = f.run(&["lineage", &v, "--pipeline", "churn", "--format", "json"]);
        let golden = format!("lineage-churn-v{v}.json");
        assert_eq!(printed, f.golden(&golden), "lineage v{v}");
        let printed = f.run(&["lineage", &v, "--pipeline", "churn"]);
        assert_eq!(
            printed,
            f.golden(&format!("lineage-churn-v{v}.txt")),
            "lineage v{v}"
        );
    }
}

/// The API's cycle documents (the cycle with its inputs, decision and gate, transitions,
/// approvals, events and report) read back the same from the old rows.
#[tokio::test]
async fn the_api_shows_old_cycles_as_they_were() {
    let f = Fixture::new();
    let url = format!(
        "sqlite://{}",
        f.config.with_file_name("retraind.db").display()
    );
    let store = retraind::store::Store::connect(&url, 1).await.unwrap();
    let history = json(&f.golden("history.json"));
    let ids: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    let outcomes: std::collections::BTreeSet<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["outcome"].as_str())
        .collect();
    for want in [
        "deployed",
        "no_retrain",
        "rolled_back",
        "failed",
        "skipped",
        "quality_failed",
        "rejected",
        "blocked",
    ] {
        assert!(
            outcomes.contains(want),
            "fixture lacks {want}: {outcomes:?}"
        );
    }
    for id in ids {
        let detail = retraind::status::cycle(&store, id).await.unwrap().unwrap();
        let now = serde_json::to_value(&detail).unwrap();
        let then = json(&f.golden(&format!("cycle-{id}.json")));
        assert_eq!(difference(&now, &then, "$"), None, "cycle {id}");
    }
    let config = retraind::config::Config::load_with_env(&f.config, &[]).unwrap();
    let pipelines = retraind::status::pipelines(&store, &config).await.unwrap();
    assert_eq!(
        without_added(without_clock(serde_json::to_value(&pipelines).unwrap())),
        without_clock(json(&f.golden("api-pipelines.json")))
    );
}

/// A line with its schedule's next fire time (which depends on when the test runs) cut off.
fn without_next_run(line: &str) -> String {
    match line.split_once(", next ") {
        Some((head, _)) => format!("{head}, next <time>"),
        None => line.to_string(),
    }
}

/// Every configuration in `config-problems/` gets exactly the problems the release before
/// the sections moved beside their modules reported (the folder shown as `$DIR`).
#[test]
fn config_check_reports_the_same_problems_as_before() {
    let dir = fixtures().join("config-problems");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let (_, out, err) = retraind(&["config", "check", path.to_str().unwrap()]);
        let mut lines: Vec<String> = format!("{out}{err}")
            .trim_end()
            .replace(dir.to_str().unwrap(), "$DIR")
            .lines()
            .map(without_next_run)
            .collect();
        lines.sort();
        let expected = std::fs::read_to_string(path.with_extension("expected")).unwrap();
        let mut expected: Vec<String> = expected.lines().map(without_next_run).collect();
        expected.sort();
        assert_eq!(lines, expected, "{}", path.display());
        checked += 1;
    }
    assert_eq!(checked, 12);
}

/// A PostgreSQL store of the release before migration 0004 with one report whose body
/// PostgreSQL's `jsonb` refuses (a category value with `\u0000`) and one that is not JSON:
/// the daemon still starts, the reports read as they were, the readable one's figures are
/// filled by 0004 and the odd one's by retraind, and the log names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_odd_report_does_not_stop_the_migrations() {
    use retraind::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = crate::helpers::store_url(crate::helpers::Db::Postgres, dir.path()).await
    else {
        return;
    };
    // Today's schema, then 0004 taken back: a store the previous release left.
    let store = Store::connect(&url, 2).await.unwrap();
    store.close().await;
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    for sql in [
        "DELETE FROM _sqlx_migrations WHERE version >= 4",
        "DROP INDEX reports_by_pipeline",
        "ALTER TABLE reports DROP COLUMN drift_share, DROP COLUMN metric_value, \
         DROP COLUMN metric_estimated, DROP COLUMN metric_realised",
        "DROP TABLE moves",
        "ALTER TABLE deployments DROP COLUMN move_id",
        "ALTER TABLE model_versions DROP COLUMN collected_at",
        "INSERT INTO pipelines (name, created_at) VALUES ('p', 0)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    let good = r#"{"drift":{"dataset":{"drifted":true,"drifted_share":0.5}}}"#;
    let odd =
        r#"{"drift":{"dataset":{"drifted":false,"drifted_share":0.25}},"categories":["a\u0000b"]}"#;
    let broken = r#"{"drift": {"dataset""#;
    for (id, body) in [(1i64, good), (2, odd), (3, broken)] {
        sqlx::query(
            "INSERT INTO cycles (id, pipeline, trigger_kind, cycle_date, state, active, reason, created_at, updated_at) \
             VALUES ($1, 'p', 'manual', 'd', 'completed', 0, 'r', 0, 0)",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO reports (cycle_id, pipeline, created_at, dataset_drift, body) VALUES ($1, 'p', 0, 0, $2)")
            .bind(id)
            .bind(body)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let store = Store::connect(&url, 2)
        .await
        .unwrap_or_else(|e| panic!("the migrations stopped: {e}"));
    store.ready().await.unwrap();
    let points = store.report_points("p", 10).await.unwrap();
    let shares: Vec<(i64, Option<f64>)> = points.iter().map(|p| (p.cycle, p.drift_share)).collect();
    assert_eq!(shares, [(3, None), (2, Some(0.25)), (1, Some(0.5))]);
    let read = store.report(2).await.unwrap().unwrap();
    assert_eq!(read["categories"][0], "a\u{0}b");
    assert!(store.report(3).await.unwrap().is_none());
}
