//! Data from elsewhere and performance from a live metric, against real servers on
//! 127.0.0.1: a cycle reading its inputs over HTTP, globs of part files, an S3-compatible
//! object store (moto's server, `moto_server` on PATH or `$RETRAIND_TEST_MOTO`), and a real
//! Prometheus (`prometheus` on PATH) scraping a serving system's accuracy gauge for the
//! performance check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use retraind::cycle::{CycleState, Outcome};
use retraind::data;
use retraind::source::{Location, S3Config, resolve};

use crate::helpers::{
    Db, Env, Opts, Server, eventually, free_port, program, run_cycle, unavailable,
};

/// The files under `root`, at `/files/...`.
fn files_app(root: PathBuf) -> axum::Router {
    async fn get(
        State(root): State<PathBuf>,
        UrlPath(rest): UrlPath<String>,
    ) -> Result<Vec<u8>, StatusCode> {
        if rest.contains("..") {
            return Err(StatusCode::BAD_REQUEST);
        }
        std::fs::read(root.join(rest)).map_err(|_| StatusCode::NOT_FOUND)
    }
    axum::Router::new()
        .route("/files/{*rest}", axum::routing::get(get))
        .with_state(root)
}

/// Serve the files under `root` at `/files/...` on a port-0 listener; the base URL.
async fn file_server(root: PathBuf) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = files_app(root);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/files")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_reads_its_inputs_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let base = file_server(dir.path().join("data")).await;
    let opts = Opts {
        reference: format!("{base}/reference.csv"),
        current: format!("{base}/current/{{date}}.csv"),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    // The env wrote its data into its own folder; serve that one.
    std::fs::remove_dir_all(dir.path()).ok();
    std::os::unix::fs::symlink(env.dir.path(), dir.path()).unwrap();
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    let inputs = row.inputs.clone().unwrap();
    let reference: data::Fingerprint = inputs.reference.clone();
    assert_eq!(reference.path, format!("{base}/reference.csv"));
    // Read once into the content-addressed cache, under the state directory.
    let cached = Path::new(&reference.files[0].path);
    assert!(cached.starts_with(env.dir.path().join("state/inputs")));
    assert_eq!(
        cached.file_name().unwrap().to_str().unwrap(),
        format!("{}.csv", reference.blake3)
    );
    // A window the server does not have fails the load step with the URL in the reason.
    let store = running.engine.store().clone();
    std::fs::remove_file(
        env.dir
            .path()
            .join(format!("data/current/{}.csv", env.date)),
    )
    .unwrap();
    let id = crate::helpers::start_cycle(&running.engine, "p1").await;
    let failed =
        crate::helpers::wait_state(&store, id, CycleState::Failed, Duration::from_secs(60)).await;
    assert_eq!(failed.state, CycleState::Failed);
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason.contains(&format!("{base}/current/{}.csv", env.date)),
        "{reason}"
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

/// An https:// source behind a private CA: the CA file may be a bundle in which the
/// server's issuer is not the first certificate (here after an unrelated CA) — every
/// certificate of it is trusted. A bundle without the issuer is refused with the
/// certificate error and the setting to fill in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_source_trusts_every_certificate_of_its_ca_bundle() {
    let certs = tempfile::tempdir().unwrap();
    let (tls, ca) = crate::helpers::private_ca(certs.path());
    let other = tempfile::tempdir().unwrap();
    crate::helpers::private_ca(other.path());
    let bundle = certs.path().join("bundle.pem");
    let unrelated = std::fs::read_to_string(other.path().join("ca.pem")).unwrap();
    let issuer = std::fs::read_to_string(&ca).unwrap();
    std::fs::write(&bundle, format!("{unrelated}{issuer}")).unwrap();
    std::fs::write(certs.path().join("unrelated.pem"), &unrelated).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = crate::helpers::serve_tls(files_app(dir.path().join("data")), tls).await;
    let base = format!("https://127.0.0.1:{port}/files");
    let with_ca = |file: &str| Opts {
        reference: format!("{base}/reference.csv"),
        current: format!("{base}/current/{{date}}.csv"),
        extra: format!(
            "[pipeline.data.s3]\nca_file = \"{}\"\n",
            certs.path().join(file).display()
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, with_ca("bundle.pem")).await else {
        return;
    };
    std::fs::remove_dir_all(dir.path()).ok();
    std::os::unix::fs::symlink(env.dir.path(), dir.path()).unwrap();
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    assert_eq!(
        row.inputs.unwrap().reference.path,
        format!("{base}/reference.csv")
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;

    let Some(env) = Env::new(Db::Sqlite, with_ca("unrelated.pem")).await else {
        return;
    };
    std::fs::remove_file(dir.path()).ok();
    std::os::unix::fs::symlink(env.dir.path(), dir.path()).unwrap();
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.state, CycleState::Failed);
    let reason = row.reason.unwrap_or_default();
    assert!(
        reason.contains("certificate") && reason.contains("data.s3.ca_file"),
        "{reason}"
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[test]
fn a_glob_stacks_its_part_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("day-part-2.csv"), "x,target\n3,1\n4,0\n").unwrap();
    std::fs::write(dir.path().join("day-part-1.csv"), "x,target\n1,0\n2,1\n").unwrap();
    let loc = Location::parse("day-part-*.csv", dir.path()).unwrap();
    let input = resolve(&loc, dir.path(), &S3Config::default()).unwrap();
    let spec = data::RoleSpec {
        target: "target",
        ..data::RoleSpec::default()
    };
    let (_, t) = data::load_inferred(&input, &spec, true).unwrap();
    assert_eq!(t.numerical("x").unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(t.fingerprint.files.len(), 2);
    assert_eq!(t.fingerprint.path, loc.describe());
    // A part with other columns is refused, naming it.
    std::fs::write(dir.path().join("day-part-3.csv"), "y,target\n1,0\n").unwrap();
    let input = resolve(&loc, dir.path(), &S3Config::default()).unwrap();
    let e = data::load_inferred(&input, &spec, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("day-part-3.csv") && e.contains("same columns"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_load_through_an_s3_compatible_server() {
    let Some(moto) = program("moto_server", "RETRAIND_TEST_MOTO") else {
        unavailable("moto_server (pip install 'moto[server]')");
        return;
    };
    let port = free_port();
    let _server = Server(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key-id"), "AKIDEXAMPLE\n").unwrap();
    std::fs::write(dir.path().join("secret"), "wJalrXUtnFEMI/K7MDENG\n").unwrap();
    // Create the bucket (S3 CreateBucket) and put two objects with a plain HTTP client;
    // moto accepts unsigned requests, retraind's reads are SigV4-signed.
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), "moto_server", || {
        let (c, url) = (client.clone(), format!("{endpoint}/bucket"));
        async move {
            c.put(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    let csv = "a,segment,target\n1.5,x,0\n2.5,y,1\n3.5,x,1\n";
    let r = client
        .put(format!("{endpoint}/bucket/days/2026-11-27.csv"))
        .body(csv)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let s3 = S3Config {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: true,
        access_key_id_file: Some(dir.path().join("key-id")),
        secret_access_key_file: Some(dir.path().join("secret")),
        ca_file: None,
    };
    let cache = dir.path().join("inputs");
    let (s3c, cachec) = (s3.clone(), cache.clone());
    let loaded = tokio::task::spawn_blocking(move || {
        let loc = Location::parse("s3://bucket/days/2026-11-27.csv", Path::new("/")).unwrap();
        let input = resolve(&loc, &cachec, &s3c).unwrap();
        let spec = data::RoleSpec {
            target: "target",
            ..data::RoleSpec::default()
        };
        data::load_inferred(&input, &spec, true).unwrap()
    })
    .await
    .unwrap();
    let (roles, table) = loaded;
    assert_eq!(roles.categorical, vec!["segment"]);
    assert_eq!(table.numerical("a").unwrap(), &[1.5, 2.5, 3.5]);
    assert_eq!(table.fingerprint.path, "s3://bucket/days/2026-11-27.csv");
    assert_eq!(
        table.fingerprint.blake3,
        blake3::hash(csv.as_bytes()).to_hex().to_string()
    );
    // A key that is not there: an error naming the location, never a panic; the secret
    // never appears in it.
    let e = tokio::task::spawn_blocking(move || {
        let loc = Location::parse("s3://bucket/days/missing.csv", Path::new("/")).unwrap();
        resolve(&loc, &cache, &s3).unwrap_err().to_string()
    })
    .await
    .unwrap();
    assert!(e.contains("s3://bucket/days/missing.csv"), "{e}");
    assert!(!e.contains("wJalrXUtnFEMI"), "{e}");
}

/// A serving system's metrics endpoint with one accuracy gauge per model.
async fn serving_metrics(accuracy: f64) -> String {
    let body = format!(
        "# TYPE serving_model_accuracy gauge\nserving_model_accuracy{{model=\"churn\"}} {accuracy}\nserving_model_accuracy{{model=\"fraud\"}} 0.99\n"
    );
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let b = body.clone();
            async move { b }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr.to_string()
}

/// Prometheus scraping the serving gauge; its base URL once the gauge has a sample.
async fn prometheus(dir: &Path, target: &str) -> Option<(Server, String)> {
    let (server, url) = crate::helpers::prometheus(dir, target, "serving").await?;
    let q = "serving_model_accuracy{model=\"churn\"}".to_string();
    eventually(Duration::from_secs(60), "Prometheus to scrape", || {
        let (u, q) = (url.clone(), q.clone());
        async move {
            retraind::promql::query(&u, &q, Duration::from_secs(2))
                .await
                .ok()
        }
    })
    .await;
    Some((server, url))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_metric_from_prometheus_drives_the_performance_check() {
    let dir = tempfile::tempdir().unwrap();
    let target = serving_metrics(0.81).await;
    let Some((_prom, url)) = prometheus(dir.path(), &target).await else {
        return;
    };
    let t = Duration::from_secs(5);
    let q = |s: &str| s.to_string();
    let v = retraind::promql::query(&url, &q("serving_model_accuracy{model=\"churn\"}"), t)
        .await
        .unwrap();
    assert_eq!(v, 0.81);
    // Two series, or no series: an error that says so, never a number.
    let e = retraind::promql::query(&url, "serving_model_accuracy", t)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("returned 2 series"), "{e}");
    let e = retraind::promql::query(&url, "nope_metric", t)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("returned 0 series"), "{e}");
    let e = retraind::promql::query(&url, "sum(", t).await.unwrap_err();
    assert!(e.to_string().contains("bad_data"), "{e}");

    // A pipeline whose performance comes from the live gauge: 0.81 against a baseline of
    // 0.95 is degraded (threshold 0.9025); Prometheus down is "unknown".
    let perf = |url: &str| {
        format!(
            "[pipeline.performance]\nsource = \"prometheus\"\nprometheus_url = \"{url}\"\nquery = 'serving_model_accuracy{{model=\"churn\"}}'\nbaseline = 0.95\nquery_timeout = \"2s\"\n"
        )
    };
    let opts = Opts {
        extra: perf(&url),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.state, CycleState::Completed, "{:?}", row.reason);
    let body = env.report(row.id);
    let p = &body["performance"];
    assert_eq!(p["status"], "degraded", "{p}");
    assert_eq!(p["current"], 0.81);
    assert_eq!(p["test"], "none");
    let metrics = running.engine.metrics().render();
    assert!(
        metrics.contains("retraind_degradation_detected{pipeline=\"p1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "retraind_model_metric{alias=\"champion\",metric=\"accuracy\",pipeline=\"p1\",source=\"live\"} 0.81"
        ),
        "{metrics}"
    );
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;

    let down = format!("http://127.0.0.1:{}", free_port());
    let opts = Opts {
        extra: perf(&down),
        ..Opts::default()
    };
    let env = Env::new(Db::Sqlite, opts).await.unwrap();
    let (row, running, shutdown) = run_cycle(&env).await;
    let p = &env.report(row.id)["performance"];
    assert_eq!(p["status"], "unknown", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("unreachable"), "{p}");
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

/// The serving system's own predictions, in a column of the current window, against the
/// labels: weighted F1 with a bootstrap test. Rows without a label or a prediction are left
/// out of the performance check (but not of the drift check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prediction_column_is_scored_against_the_labels() {
    let opts = Opts {
        data_extra: "prediction = \"predicted\"".into(),
        extra: "[pipeline.performance]\nsource = \"prediction_column\"\nmetric = \"f1_weighted\"\nbaseline = 0.95\nmin_labels = 200\n".into(),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    // Rewrite today's window with a `predicted` column: right on 70% of the rows; every
    // 10th row unlabelled.
    let path = env
        .dir
        .path()
        .join(format!("data/current/{}.csv", env.date));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let t = header.iter().position(|h| *h == "target").unwrap();
    let mut out = format!("{},predicted\n", header.join(","));
    let mut labelled = 0;
    for (i, line) in lines.enumerate() {
        let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
        let label = cells[t].clone();
        let predicted = if i % 10 < 7 {
            label.clone()
        } else if label == "1" {
            "0".into()
        } else {
            "1".into()
        };
        if i % 10 == 9 {
            cells[t] = String::new();
        } else {
            labelled += 1;
        }
        out.push_str(&format!("{},{predicted}\n", cells.join(",")));
    }
    std::fs::write(&path, out).unwrap();
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.state, CycleState::Completed, "{:?}", row.reason);
    let body = env.report(row.id);
    let p = &body["performance"];
    assert_eq!(p["status"], "degraded", "{p}");
    assert_eq!(p["metric"], "f1_weighted");
    assert_eq!(p["test"], "bootstrap");
    assert_eq!(p["labels"], labelled, "{p}");
    let f1 = p["current"].as_f64().unwrap();
    assert!((0.6..0.8).contains(&f1), "{p}");
    // The extra column is a role, not an "added column" for the quality gate.
    assert_eq!(body["quality"]["passed"], true, "{}", body["quality"]);
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}
