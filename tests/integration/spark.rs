//! Spark as the engine, against a real Spark Connect server: pyspark 4.2's, started here on
//! `local[2]` (`spark-submit` from `$RETRAIND_TEST_SPARK_SUBMIT` or PATH; Java 17 from
//! `$JAVA_HOME`, else Debian's). The same verdicts as the local check on the same files,
//! only summaries on the wire, Spark's own message in the error, an unreachable endpoint a
//! failed step — through `retraind check --spark` and through a daemon's cycle.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use retraind::cycle::CycleState;
use retraind::data::{self, TableFormat, write_table};
use serde_json::Value;

use crate::bounded::{frame, roles};
use crate::helpers::{
    Db, Env, Opts, Server, check_json, free_port, program, retraind, start_cycle, start_daemon,
    unavailable, wait_state,
};

const SPARK_TOKEN: &str = "spark-test-token-5e1f";

/// A Spark Connect server on a free loopback port, killed when dropped.
struct Spark {
    server: Option<Server>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Spark {
    fn start() -> Option<Spark> {
        let Some(submit) = program("spark-submit", "RETRAIND_TEST_SPARK_SUBMIT") else {
            unavailable("spark-submit (pip install pyspark==4.2.1; RETRAIND_TEST_SPARK_SUBMIT)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("spark.log")).unwrap();
        let mut command = Command::new(submit);
        command
            .args([
                "--class",
                "org.apache.spark.sql.connect.service.SparkConnectServer",
                "--master",
                "local[2]",
                "--driver-memory",
                "512m",
                "--conf",
                &format!("spark.connect.grpc.binding.port={port}"),
                "--conf",
                "spark.connect.grpc.binding.address=127.0.0.1",
                "--conf",
                "spark.ui.enabled=false",
                "--conf",
                &format!(
                    "spark.sql.warehouse.dir={}",
                    dir.path().join("warehouse").display()
                ),
            ])
            .env("SPARK_CONNECT_AUTHENTICATE_TOKEN", SPARK_TOKEN)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .current_dir(dir.path())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        let debian = Path::new("/usr/lib/jvm/java-17-openjdk-amd64");
        if std::env::var_os("JAVA_HOME").is_none() && debian.is_dir() {
            command.env("JAVA_HOME", debian);
        }
        let mut server = Server(command.spawn().unwrap());
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log = std::fs::read_to_string(dir.path().join("spark.log")).unwrap_or_default();
            if let Ok(Some(status)) = server.0.try_wait() {
                panic!("Spark Connect exited ({status}):\n{log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "Spark Connect did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "Spark Connect up on port {port} after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Some(Spark {
            server: Some(server),
            port,
            dir,
        })
    }

    fn address(&self) -> String {
        format!("sc://127.0.0.1:{}", self.port)
    }

    /// A file holding `token`.
    fn token_file(&self, token: &str) -> PathBuf {
        let path = self.dir.path().join(format!("token-{}", token.len()));
        std::fs::write(&path, format!("{token}\n")).unwrap();
        path
    }

    /// `retraind check --reference R --spark … --spark-query Q --format json`.
    fn check(&self, reference: &Path, query: &str, token: &str) -> (i32, String, String) {
        let token = self.token_file(token);
        retraind(&[
            "check",
            "--reference",
            reference.to_str().unwrap(),
            "--spark",
            &self.address(),
            "--spark-query",
            query,
            "--spark-token-file",
            token.to_str().unwrap(),
            "--spark-timeout",
            "2m",
            "--format",
            "json",
        ])
    }
}

fn verdicts(report: &Value) -> Vec<(String, bool)> {
    report["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["drifted"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn parquet_query(path: &Path) -> String {
    format!("SELECT * FROM parquet.`{}`", path.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_computes_the_summaries_and_the_verdicts_are_the_local_ones() {
    let Some(mut spark) = Spark::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    same_verdicts_as_the_local_check(&spark, dir.path());
    errors_carry_sparks_message(&spark, dir.path());
    a_daemon_cycle_reads_its_window_from_spark(&mut spark).await;
}

/// Seeded cases with and without drift: per feature the same verdict as the local check of
/// the same Parquet files; numerical features say they were summarised (rank error 0.001);
/// what crossed the wire is the summary, not the 20,000 rows.
fn same_verdicts_as_the_local_check(spark: &Spark, dir: &Path) {
    let cases: [[f64; 3]; 6] = [
        [0.0, 0.0, 0.0],
        [0.25, 0.0, 0.0],
        [0.0, 0.05, 0.25],
        [0.01, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [0.25, 0.25, 0.05],
    ];
    let mut drifted = 0;
    for (k, shift) in cases.iter().enumerate() {
        let seed = 40 + k as u64;
        let (reference, current) = (
            dir.join(format!("ref-{k}.parquet")),
            dir.join(format!("cur-{k}.parquet")),
        );
        write_table(
            &frame(20_000, [0.0; 3], seed),
            &roles(),
            &reference,
            TableFormat::Parquet,
        )
        .unwrap();
        write_table(
            &frame(20_000, *shift, seed + 100),
            &roles(),
            &current,
            TableFormat::Parquet,
        )
        .unwrap();
        let (code, local, err) = check_json(&reference, &current, &[]);
        assert!(code == 0 || code == 3, "{err}");
        let local: Value = serde_json::from_str(&local).unwrap();
        let (code, remote, err) = spark.check(&reference, &parquet_query(&current), SPARK_TOKEN);
        assert!(code == 0 || code == 3, "case {k}: {err}");
        let remote: Value = serde_json::from_str(&remote).unwrap();
        assert_eq!(
            verdicts(&remote),
            verdicts(&local),
            "case {k} (shift {shift:?})"
        );
        assert_eq!(
            remote["dataset"]["drifted"], local["dataset"]["drifted"],
            "case {k}"
        );
        drifted += verdicts(&local).iter().filter(|(_, d)| *d).count();
        for f in remote["features"].as_array().unwrap() {
            let kind = f["kind"].as_str().unwrap();
            let rank_error = f["rank_error"].as_f64();
            match kind {
                "numerical" => assert!((rank_error.unwrap() - 0.001).abs() < 1e-12, "{f}"),
                _ => assert_eq!(rank_error, None, "{f}"),
            }
        }
        assert_eq!(remote["current"]["rows"], 20_000);
        let received = remote["current"]["bytes"].as_u64().unwrap();
        let file = std::fs::metadata(&current).unwrap().len();
        eprintln!(
            "case {k}: {received} bytes received from Spark; the window's Parquet file is {file} bytes"
        );
        assert!(
            (30_000..40_000).contains(&received),
            "{received} bytes received"
        );
    }
    // Both kinds of verdict occur: the cases are not all quiet.
    assert_eq!(drifted, 7, "drifted features over the cases");
}

/// Spark's error reaches the user with Spark's message (not the plan it appends); a wrong
/// token is refused without being echoed; a closed port is a clear error at once.
fn errors_carry_sparks_message(spark: &Spark, dir: &Path) {
    let reference = dir.join("ref-0.parquet");
    let (code, _, err) = spark.check(&reference, "SELECT * FROM no_such_table", SPARK_TOKEN);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Spark failed the summary query of query `SELECT * FROM no_such_table`: [TABLE_OR_VIEW_NOT_FOUND]"), "{err}");
    assert!(!err.contains("UnresolvedRelation"), "{err}");
    let (code, _, err) = spark.check(&reference, "SELECT 1", "wrong-token-value");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("refused the credentials: Invalid authentication token"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-token-value") && !err.contains(SPARK_TOKEN),
        "{err}"
    );
    let closed = free_port();
    let started = Instant::now();
    let (code, _, err) = retraind(&[
        "check",
        "--reference",
        reference.to_str().unwrap(),
        "--spark",
        &format!("sc://127.0.0.1:{closed}"),
        "--spark-table",
        "t",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach Spark Connect at sc://127.0.0.1:{closed}"
        )),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// A pipeline whose window is in Spark: the cycle's check reads Spark's summary (kept in
/// the input cache), a Spark error fails the load step with Spark's message, and a stopped
/// server fails it as unreachable — never a verdict.
async fn a_daemon_cycle_reads_its_window_from_spark(spark: &mut Spark) {
    let windows = spark.dir.path().join("windows");
    std::fs::create_dir_all(&windows).unwrap();
    let token = spark.token_file(SPARK_TOKEN);
    let extra = format!(
        "\n[pipeline.data.spark]\nendpoint = \"{}\"\ntoken_file = \"{}\"\ncurrent_query = \"SELECT * FROM parquet.`{}/{{date}}.parquet`\"\ntimeout = \"2m\"\n",
        spark.address(),
        token.display(),
        windows.display()
    );
    let opts = Opts {
        current: String::new(),
        extra,
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    // Today's window as Parquet where Spark reads it (the demo's normal regime: no drift).
    let csv = env.dir.path().join("data/day.csv");
    retraind::demo::generate_for(&csv, 1500, retraind::demo::Regime::NORMAL, 2, env.task).unwrap();
    let spec = data::RoleSpec {
        categorical: Some(&["segment".to_string()]),
        target: "target",
        ..data::RoleSpec::default()
    };
    let (roles, table) =
        data::load_inferred(&retraind::source::Input::file(&csv), &spec, true).unwrap();
    let window = windows.join(format!("{}.parquet", env.date));
    write_table(&table, &roles, &window, TableFormat::Parquet).unwrap();

    let (running, shutdown) = start_daemon(&env, false).await;
    let store = running.engine.store().clone();
    let id = start_cycle(&running.engine, "p1").await;
    let done = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    let inputs = done.inputs.clone().unwrap();
    assert!(
        inputs.current.path.starts_with(&spark.address()),
        "{:?}",
        inputs.current.path
    );
    assert_eq!(inputs.current.rows, 1500);
    let cached = PathBuf::from(inputs.current_profile.clone().unwrap());
    assert!(
        cached.starts_with(env.dir.path().join("state/inputs")),
        "{}",
        cached.display()
    );
    let report = env.report(id);
    assert_eq!(report["drift"]["dataset"]["drifted"], false, "{report}");
    let history = store.transitions(id).await.unwrap();
    let loaded = history
        .iter()
        .find(|t| t.to == CycleState::Checking)
        .map(|t| t.reason.clone())
        .unwrap_or_default();
    assert!(
        loaded.contains("(1500 rows, 0 labelled, summarised by Spark:"),
        "{history:?}"
    );

    // The window is missing: Spark's error is the cycle's reason.
    std::fs::remove_file(&window).unwrap();
    let id = start_cycle(&running.engine, "p1").await;
    let failed = wait_state(&store, id, CycleState::Failed, Duration::from_secs(120)).await;
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains("Spark failed the summary query") && reason.contains("[PATH_NOT_FOUND]"),
        "{reason}"
    );
    assert!(failed.decision.is_none(), "{:?}", failed.decision);

    // The server is gone: a failed step saying so, no verdict.
    drop(spark.server.take());
    let id = start_cycle(&running.engine, "p1").await;
    let failed = wait_state(&store, id, CycleState::Failed, Duration::from_secs(120)).await;
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "cannot reach Spark Connect at {}",
            spark.address()
        )),
        "{reason}"
    );
    assert!(failed.decision.is_none(), "{:?}", failed.decision);
    assert!(!env.log().contains(SPARK_TOKEN));
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
