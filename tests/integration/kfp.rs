//! The Kubeflow Pipelines backend against a fake KFP API server. Kubeflow needs Kubernetes,
//! which cannot run here, so the fake implements exactly the documented v2beta1 run service
//! (`docs/external-apis.md`): create, get, list with a display-name filter, `:terminate`,
//! the `state` enum, google.rpc.Status error bodies, bearer auth. On success it plays the
//! pipeline's component: it trains with examples/command-trainer on the current window and
//! writes `metrics.json` and the model under `retraind_output_uri`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use retraind::cycle::{CycleState, Outcome};
use serde_json::{Value, json};

use crate::helpers::{
    Db, Env, Opts, eventually, json, private_ca, run_cycle, serve_tls, start_cycle, start_daemon,
    wait_state,
};

const TOKEN: &str = "kfp-token-abc";
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/command-trainer");

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Succeed,
    Fail,
    Hang,
    /// Polls answer 503, then drop the connection, then behave as `Succeed`.
    Flaky,
    /// Creating a run answers 503 (the API server's upstream is down).
    CreateUnavailable,
}

#[derive(Debug, Clone)]
struct FakeRun {
    id: String,
    display_name: String,
    experiment_id: String,
    parameters: Value,
    state: &'static str,
    polls: usize,
    error: Option<Value>,
}

struct Fake {
    runs: Mutex<Vec<FakeRun>>,
    creates: AtomicUsize,
    terminates: AtomicUsize,
    behaviour: Mutex<Behaviour>,
    /// Polls of a RUNNING run before it finishes.
    polls_to_finish: usize,
}

type Shared = Arc<Fake>;

fn status(code: StatusCode, rpc: i32, message: &str) -> (StatusCode, Json<Value>) {
    (
        code,
        Json(json!({"code": rpc, "message": message, "details": []})),
    )
}

fn authorized(h: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    match h.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bearer {TOKEN}") => Ok(()),
        _ => Err(status(
            StatusCode::UNAUTHORIZED,
            16,
            "missing or invalid bearer token",
        )),
    }
}

fn run_json(r: &FakeRun) -> Value {
    let mut v = json!({
        "run_id": r.id,
        "display_name": r.display_name,
        "experiment_id": r.experiment_id,
        "state": r.state,
        "runtime_config": {"parameters": r.parameters},
        "state_history": [{"state": r.state}],
        "created_at": "2026-11-27T00:00:00Z",
    });
    if let Some(e) = &r.error {
        v["error"] = e.clone();
    }
    v
}

/// What the pipeline's component does on success: train on the current window and write
/// metrics.json and the model under the output URI (a local folder in this test).
fn component(params: &Value) {
    let out = PathBuf::from(params["retraind_output_uri"].as_str().unwrap());
    std::fs::create_dir_all(out.join("model")).unwrap();
    let status = std::process::Command::new("python3")
        .arg(format!("{EXAMPLE}/train.py"))
        .arg(params["retraind_train_uri"].as_str().unwrap())
        .arg(out.join("model"))
        .arg(out.join("metrics.json"))
        .arg("target")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

async fn create(
    State(f): State<Shared>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&h)?;
    if *f.behaviour.lock().unwrap() == Behaviour::CreateUnavailable {
        return Err(status(
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            "upstream connect error or disconnect/reset before headers",
        ));
    }
    let name = body["display_name"].as_str().unwrap_or_default();
    let reference = &body["pipeline_version_reference"];
    if name.is_empty()
        || body["experiment_id"].as_str().is_none()
        || reference["pipeline_id"].as_str().is_none()
        || reference["pipeline_version_id"].as_str().is_none()
    {
        return Err(status(
            StatusCode::BAD_REQUEST,
            3,
            "display_name, experiment_id and pipeline_version_reference are required",
        ));
    }
    f.creates.fetch_add(1, Ordering::SeqCst);
    let mut runs = f.runs.lock().unwrap();
    let run = FakeRun {
        id: format!("run-{}", runs.len() + 1),
        display_name: name.to_string(),
        experiment_id: body["experiment_id"].as_str().unwrap().to_string(),
        parameters: body["runtime_config"]["parameters"].clone(),
        state: "PENDING",
        polls: 0,
        error: None,
    };
    runs.push(run.clone());
    Ok(Json(run_json(&run)))
}

async fn get_run(
    State(f): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&h)?;
    let behaviour = *f.behaviour.lock().unwrap();
    let mut runs = f.runs.lock().unwrap();
    let run = runs
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, 5, &format!("run {id} not found")))?;
    run.polls += 1;
    if behaviour == Behaviour::Flaky {
        match run.polls {
            1 | 2 => {
                return Err(status(
                    StatusCode::SERVICE_UNAVAILABLE,
                    14,
                    "the API server is restarting",
                ));
            }
            // The handler dies mid-request (after releasing the lock, so the fake lives on):
            // hyper closes the connection without an answer, which the client sees as a
            // reset.
            3 => {
                drop(runs);
                panic!("simulated connection reset");
            }
            _ => {}
        }
    }
    let behaviour = match behaviour {
        Behaviour::Flaky => Behaviour::Succeed,
        b => b,
    };
    run.state = match (run.state, behaviour) {
        ("PENDING", _) => "RUNNING",
        ("CANCELING", _) => "CANCELED",
        ("RUNNING", Behaviour::Succeed) if run.polls > f.polls_to_finish => {
            component(&run.parameters);
            "SUCCEEDED"
        }
        ("RUNNING", Behaviour::Fail) if run.polls > f.polls_to_finish => {
            run.error = Some(
                json!({"code": 2, "message": "component train failed: OOMKilled", "details": []}),
            );
            "FAILED"
        }
        (s, _) => s,
    };
    Ok(Json(run_json(run)))
}

async fn terminate(
    State(f): State<Shared>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&h)?;
    let id = id
        .strip_suffix(":terminate")
        .ok_or_else(|| status(StatusCode::NOT_FOUND, 5, "unknown method"))?;
    let mut runs = f.runs.lock().unwrap();
    let run = runs
        .iter_mut()
        .find(|r| r.id == id)
        .ok_or_else(|| status(StatusCode::NOT_FOUND, 5, &format!("run {id} not found")))?;
    f.terminates.fetch_add(1, Ordering::SeqCst);
    run.state = "CANCELING";
    Ok(Json(json!({})))
}

async fn list(
    State(f): State<Shared>,
    h: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    authorized(&h)?;
    let filter: Value = q
        .get("filter")
        .map(|t| serde_json::from_str(t))
        .transpose()
        .map_err(|_| status(StatusCode::BAD_REQUEST, 3, "filter is not JSON"))?
        .unwrap_or(Value::Null);
    let wanted = filter["predicates"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["key"] == "display_name" && p["operation"] == "EQUALS")
        .and_then(|p| p["string_value"].as_str());
    let runs = f.runs.lock().unwrap();
    let found: Vec<Value> = runs
        .iter()
        .filter(|r| q.get("experiment_id").is_none_or(|e| *e == r.experiment_id))
        .filter(|r| wanted.is_none_or(|w| w == r.display_name))
        .map(run_json)
        .collect();
    Ok(Json(json!({"runs": found, "total_size": found.len()})))
}

async fn fake(behaviour: Behaviour) -> (Shared, String) {
    fake_with(behaviour, 2).await
}

async fn fake_with(behaviour: Behaviour, polls_to_finish: usize) -> (Shared, String) {
    let (f, app) = fake_app(behaviour, polls_to_finish);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (f, format!("http://{addr}"))
}

/// The same fake behind TLS, with a certificate for 127.0.0.1 signed by a private CA made
/// for the test: the endpoint and the CA's PEM.
async fn fake_tls(behaviour: Behaviour, dir: &std::path::Path) -> (Shared, String, PathBuf) {
    let (tls, ca) = private_ca(dir);
    let (f, app) = fake_app(behaviour, 2);
    let port = serve_tls(app, tls).await;
    (f, format!("https://127.0.0.1:{port}"), ca)
}

/// The fake's state and its routes.
fn fake_app(behaviour: Behaviour, polls_to_finish: usize) -> (Shared, axum::Router) {
    let f = Arc::new(Fake {
        runs: Mutex::new(Vec::new()),
        creates: AtomicUsize::new(0),
        terminates: AtomicUsize::new(0),
        behaviour: Mutex::new(behaviour),
        polls_to_finish,
    });
    let app = axum::Router::new()
        .route("/apis/v2beta1/runs", axum::routing::post(create).get(list))
        .route(
            "/apis/v2beta1/runs/{id}",
            axum::routing::get(get_run).post(terminate),
        )
        .with_state(f.clone());
    (f, app)
}

fn opts(endpoint: &str, out: &std::path::Path, timeout: &str) -> Opts {
    Opts {
        extra: format!(
            r#"
[pipeline.train]
backend = "kfp"
timeout = "{timeout}"

[pipeline.train.kfp]
endpoint = "{endpoint}"
token_file = "kfp-token"
experiment_id = "exp-1"
pipeline_id = "pl-1"
pipeline_version_id = "pv-1"
output_uri = "{out}/{{pipeline}}/cycle-{{cycle}}"
parameters = {{ learning_rate = "0.05", tag = "cycle-{{cycle}}" }}
poll_interval = "20ms"
max_poll_interval = "100ms"
predict = ["python3", "{EXAMPLE}/predict.py", "{{model_uri}}", "{{input_path}}", "{{output_path}}"]
data_format = "csv"
"#,
            out = out.display()
        ),
        ..Opts::default()
    }
}

/// A fake KFP server behaving as `behaviour`, a folder for run outputs, and a pipeline that
/// trains on Kubeflow with `timeout`.
async fn setup(behaviour: Behaviour, timeout: &str) -> (Shared, tempfile::TempDir, Env) {
    let (f, endpoint) = fake(behaviour).await;
    let out = tempfile::tempdir().unwrap();
    let env = kfp_env(&endpoint, out.path(), timeout, "").await;
    (f, out, env)
}

/// A pipeline training on the KFP server at `endpoint`, with `kfp_extra` appended to its
/// `[pipeline.train.kfp]` table, and the token file.
async fn kfp_env(endpoint: &str, out: &std::path::Path, timeout: &str, kfp_extra: &str) -> Env {
    let mut o = opts(endpoint, out, timeout);
    o.extra.push_str(kfp_extra);
    let env = Env::new(Db::Sqlite, o)
        .await
        .expect("SQLite needs no external service");
    std::fs::write(env.dir.path().join("kfp-token"), TOKEN).unwrap();
    env
}

/// The cycle failed and registered no version: its reason.
async fn failed_without_a_version(
    row: &retraind::store::CycleRow,
    running: &retraind::daemon::Running,
) -> String {
    assert_eq!(row.state, CycleState::Failed, "{:?}", row.reason);
    assert!(
        running
            .engine
            .store()
            .versions("p1")
            .await
            .unwrap()
            .is_empty()
    );
    row.reason.clone().unwrap_or_default()
}

async fn stop(running: retraind::daemon::Running, shutdown: tokio_util::sync::CancellationToken) {
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kfp_run_trains_the_candidate() {
    let (f, _out, env) = setup(Behaviour::Succeed, "120s").await;
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    assert_eq!(f.creates.load(Ordering::SeqCst), 1);
    let run = f.runs.lock().unwrap()[0].clone();
    assert_eq!(run.display_name, format!("retraind-p1-cycle-{}", row.id));
    let p = &run.parameters;
    assert_eq!(p["retraind_cycle"], row.id.to_string());
    assert_eq!(p["tag"], format!("cycle-{}", row.id));
    assert!(
        p["retraind_current_uri"]
            .as_str()
            .unwrap()
            .ends_with(".csv")
    );
    let v = &running.engine.store().versions("p1").await.unwrap()[0];
    assert_eq!(json(&v.lineage)["backend"], "kfp");
    // The run trained on the rows retraind handed it: the window minus the gate's holdout.
    let train = std::fs::read_to_string(p["retraind_train_uri"].as_str().unwrap()).unwrap();
    let train_rows = train.lines().count() - 1;
    assert_eq!(
        train_rows as u64,
        json(&v.lineage)["training_data"]["rows"].as_u64().unwrap()
    );
    assert_eq!(train_rows, 1050, "1500 rows minus the 30% holdout");
    assert_eq!(json(&v.lineage)["remote_run_id"], run.id.as_str());
    assert!(
        json(&v.metrics)["valid_accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        json(&v.metrics)
    );
    // The gate scored the remote model locally through {model_uri}.
    assert!(
        json(&v.metrics)["holdout_accuracy"].as_f64().unwrap() > 0.8,
        "{}",
        json(&v.metrics)
    );
    stop(running, shutdown).await;
}

/// KFP over TLS: with `ca_file` naming the private CA the run is created, polled and
/// deployed; without it the certificate is refused, the cycle fails saying so (and what to
/// set), and no run is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kfp_over_tls_trusts_the_configured_ca_only() {
    let certs = tempfile::tempdir().unwrap();
    let (f, endpoint, ca) = fake_tls(Behaviour::Succeed, certs.path()).await;
    let out = tempfile::tempdir().unwrap();
    let ca_line = format!("ca_file = \"{}\"\n", ca.display());
    let env = kfp_env(&endpoint, out.path(), "120s", &ca_line).await;
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    assert_eq!(f.creates.load(Ordering::SeqCst), 1);
    stop(running, shutdown).await;

    let (f, endpoint, _) = fake_tls(Behaviour::Succeed, certs.path()).await;
    let env = kfp_env(&endpoint, out.path(), "120s", "").await;
    let (row, running, shutdown) = run_cycle(&env).await;
    let reason = failed_without_a_version(&row, &running).await;
    assert!(
        reason.contains("certificate") && reason.contains("train.kfp.ca_file"),
        "{reason}"
    );
    assert_eq!(f.creates.load(Ordering::SeqCst), 0);
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_kfp_run_fails_the_cycle_with_its_error() {
    let (f, _out, env) = setup(Behaviour::Fail, "120s").await;
    let (row, running, shutdown) = run_cycle(&env).await;
    let reason = failed_without_a_version(&row, &running).await;
    assert!(
        reason.contains("Failed") && reason.contains("OOMKilled"),
        "{reason}"
    );
    assert_eq!(f.creates.load(Ordering::SeqCst), 1);
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kfp_timeout_terminates_the_run() {
    let (f, _out, env) = setup(Behaviour::Hang, "2s").await;
    let (row, running, shutdown) = run_cycle(&env).await;
    let reason = failed_without_a_version(&row, &running).await;
    assert!(reason.contains("terminated"), "{reason}");
    assert_eq!(f.terminates.load(Ordering::SeqCst), 1);
    assert_eq!(f.runs.lock().unwrap()[0].state, "CANCELING");
    stop(running, shutdown).await;
}

/// A crash between "create" and "store the id" leaves a run only KFP knows about: the next
/// attempt finds it by its display name instead of creating a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_created_before_a_crash_is_adopted_not_duplicated() {
    let (f, out, env) = setup(Behaviour::Succeed, "120s").await;
    let current = env
        .dir
        .path()
        .join(format!("data/current/{}.csv", env.date));
    // The first cycle of a fresh store is cycle 1.
    f.runs.lock().unwrap().push(FakeRun {
        id: "run-from-before".into(),
        display_name: "retraind-p1-cycle-1".into(),
        experiment_id: "exp-1".into(),
        parameters: json!({
            "retraind_train_uri": current.display().to_string(),
            "retraind_output_uri": out.path().join("p1/cycle-1").display().to_string(),
        }),
        state: "RUNNING",
        polls: 0,
        error: None,
    });
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.id, 1);
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    assert_eq!(f.creates.load(Ordering::SeqCst), 0, "no second run");
    let v = &running.engine.store().versions("p1").await.unwrap()[0];
    assert_eq!(json(&v.lineage)["remote_run_id"], "run-from-before");
    stop(running, shutdown).await;
}

/// A shutdown while the run is going leaves it running; the next start polls the stored run
/// and finishes the cycle with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_polling_the_stored_run() {
    let (f, _out, env) = setup(Behaviour::Hang, "120s").await;
    let (running, shutdown) = start_daemon(&env, false).await;
    let store = running.engine.store().clone();
    let id = start_cycle(&running.engine, "p1").await;
    eventually(Duration::from_secs(60), "the run id to be stored", || {
        let store = store.clone();
        async move {
            store
                .events(id)
                .await
                .ok()?
                .into_iter()
                .find(|e| e.kind.as_str() == "remote_run")
        }
    })
    .await;
    shutdown.cancel();
    assert!(running.drain(Duration::from_secs(10)).await);
    assert_eq!(
        f.terminates.load(Ordering::SeqCst),
        0,
        "a shutdown leaves the run alone"
    );
    *f.behaviour.lock().unwrap() = Behaviour::Succeed;
    let (running, shutdown) = start_daemon(&env, false).await;
    let store = running.engine.store().clone();
    let row = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    assert_eq!(
        f.creates.load(Ordering::SeqCst),
        1,
        "exactly one remote run"
    );
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kfp_5xx_and_a_reset_while_polling_are_retried_not_fatal() {
    let (f, _out, env) = setup(Behaviour::Flaky, "120s").await;
    let (row, running, shutdown) = run_cycle(&env).await;
    assert_eq!(row.outcome, Some(Outcome::Deployed), "{:?}", row.reason);
    assert_eq!(
        f.creates.load(Ordering::SeqCst),
        1,
        "retries never create a second run"
    );
    assert!(f.runs.lock().unwrap()[0].polls > 3);
    stop(running, shutdown).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kfp_unavailable_at_create_fails_the_cycle_with_its_message() {
    let (f, _out, env) = setup(Behaviour::CreateUnavailable, "120s").await;
    let (row, running, shutdown) = run_cycle(&env).await;
    let reason = failed_without_a_version(&row, &running).await;
    assert!(
        reason.contains("503") && reason.contains("upstream connect error"),
        "{reason}"
    );
    assert!(!reason.contains(TOKEN), "{reason}");
    assert_eq!(f.creates.load(Ordering::SeqCst), 0);
    stop(running, shutdown).await;
}

/// SIGKILL of the real binary while its Kubeflow run is being created or polled, at seeded
/// moments, then a restart: every cycle ends deployed with exactly one run created for it
/// (the fake counts creations); the stored run id is polled again, never replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_the_kfp_poll_never_duplicates_the_run() {
    use rand::{Rng, SeedableRng};

    use crate::helpers::{Server, free_port, kill9, trigger_api, wait_http};

    let (f, endpoint) = fake_with(Behaviour::Succeed, 25).await;
    let out = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut o = opts(&endpoint, out.path(), "120s");
    o.listen = addr.clone();
    o.extra.push_str(
        "\n[pipeline.guards]\nmax_retrains = [\"100/1h\"]\nmax_deploys = [\"100/1h\"]\ncooldown = \"0s\"\n",
    );
    let env = Env::new(Db::Sqlite, o)
        .await
        .expect("SQLite needs no external service");
    std::fs::write(env.dir.path().join("kfp-token"), TOKEN).unwrap();
    let store = env.store().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut kills_while_training = 0;
    for point in 0..10u64 {
        // Data the champion was not trained on, so each cycle trains remotely.
        let regime = if point % 2 == 0 {
            retraind::demo::Regime::DRIFTED
        } else {
            retraind::demo::Regime::NORMAL
        };
        env.write_today(regime, 100 + point);
        let mut daemon = Server(env.spawn());
        wait_http(&addr).await;
        let id = trigger_api(&addr).await.expect("the trigger is accepted");
        // Into training (the run is being created or polled), then a seeded moment.
        eventually(Duration::from_secs(60), "training", || {
            let store = store.clone();
            async move {
                let c = store.cycle(id).await.ok()??;
                (c.state == CycleState::Training || c.state.is_terminal()).then_some(())
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
        kill9(&mut daemon.0);
        if store.cycle(id).await.unwrap().unwrap().state == CycleState::Training {
            kills_while_training += 1;
        }
        let daemon = Server(env.spawn());
        wait_http(&addr).await;
        let c =
            crate::helpers::wait_state(&store, id, CycleState::Completed, Duration::from_secs(120))
                .await;
        drop(daemon);
        assert_eq!(
            c.outcome,
            Some(Outcome::Deployed),
            "point {point}: {:?}\n{}",
            c.reason,
            env.log()
        );
        let runs: Vec<String> = f
            .runs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.display_name == format!("retraind-p1-cycle-{id}"))
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(runs.len(), 1, "point {point}: runs {runs:?}");
        let v = store.version_for_cycle(id).await.unwrap().unwrap();
        assert_eq!(json(&v.lineage)["remote_run_id"], runs[0].as_str());
    }
    assert_eq!(f.creates.load(Ordering::SeqCst), 10, "one run per cycle");
    assert!(
        kills_while_training >= 6,
        "only {kills_while_training} kills hit the poll"
    );
}
