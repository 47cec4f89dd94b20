//! Shared set-up for the integration tests: temporary pipelines with generated data, a
//! store on SQLite or on a fresh PostgreSQL database, the daemon in-process or as a child
//! process, and polling helpers.
//!
//! PostgreSQL tests need `RETRAIND_TEST_POSTGRES_URL` (a server URL without a database,
//! e.g. `postgres://postgres:postgres@127.0.0.1:5432`); promtool tests need `promtool` on
//! PATH. Without them those tests print why and pass, unless `RETRAIND_TEST_REQUIRE_ALL=1`
//! (set by .ci/run), which turns a missing dependency into a failure.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use retraind::config::Config;
use retraind::cycle::CycleState;
use retraind::daemon::Running;
use retraind::engine::Engine;
pub use retraind::performance::Task;
use retraind::store::{CreateOutcome, CycleRow, Store};
use tokio_util::sync::CancellationToken;

/// A typed record as the JSON document the store holds (for assertions by key).
pub fn json<T: serde::Serialize>(record: &T) -> serde_json::Value {
    serde_json::to_value(record).unwrap()
}

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

fn require_all() -> bool {
    std::env::var("RETRAIND_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// Skip (or fail, in CI) a test whose external dependency is missing. Every skip is counted
/// and the count printed when the test binary exits, after libtest's own summary, so a run
/// that passed without its services says so.
pub fn unavailable(what: &str) -> bool {
    if require_all() {
        panic!("{what} is required (RETRAIND_TEST_REQUIRE_ALL=1) but not available");
    }
    eprintln!("skipping: {what} not available");
    count_skip(what);
    true
}

static SKIPPED: std::sync::Mutex<std::collections::BTreeMap<String, usize>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

fn count_skip(what: &str) {
    static REPORT: std::sync::Once = std::sync::Once::new();
    REPORT.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no captured state.
        unsafe {
            libc::atexit(report_skips);
        }
    });
    if let Ok(mut s) = SKIPPED.lock() {
        *s.entry(what.to_string()).or_default() += 1;
    }
}

extern "C" fn report_skips() {
    let Ok(s) = SKIPPED.lock() else { return };
    let n: usize = s.values().sum();
    let each: Vec<String> = s.iter().map(|(what, k)| format!("{k} × {what}")).collect();
    eprintln!(
        "\n{n} tests skipped for a missing service ({}); RETRAIND_TEST_REQUIRE_ALL=1 makes that a failure, .ci/run installs them all",
        each.join(", ")
    );
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A store URL for `db` inside `dir`; a fresh PostgreSQL database per call. None = skip.
pub async fn store_url(db: Db, dir: &Path) -> Option<String> {
    match db {
        Db::Sqlite => Some(format!(
            "sqlite://{}",
            dir.join("state").join("retraind.db").display()
        )),
        Db::Postgres => {
            let Ok(base) = std::env::var("RETRAIND_TEST_POSTGRES_URL") else {
                unavailable("PostgreSQL (RETRAIND_TEST_POSTGRES_URL)");
                return None;
            };
            let base = base.trim_end_matches('/').to_string();
            sqlx::any::install_default_drivers();
            let admin = sqlx::AnyPool::connect(&format!("{base}/postgres"))
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {base}/postgres: {e}"));
            let name = format!(
                "retraind_test_{}_{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::SeqCst)
            );
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&admin)
            .await
            .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
            Some(format!("{base}/{name}"))
        }
    }
}

/// Knobs of a test pipeline.
#[derive(Debug, Clone)]
pub struct Opts {
    pub schedule: String,
    pub approval: &'static str,
    pub epochs: usize,
    pub rows: usize,
    pub listen: String,
    pub grace: &'static str,
    pub token: bool,
    pub catch_up: bool,
    /// `data.reference` and `data.current` (relative to the test folder, or URLs; an empty
    /// `current` is left out).
    pub reference: String,
    pub current: String,
    /// TOML appended to the pipeline (e.g. a `[pipeline.performance]` table).
    pub extra: String,
    /// Keys added to `[pipeline.data]`.
    pub data_extra: String,
    /// Keys added to `[pipeline.gate]`.
    pub gate_extra: String,
    /// The pipeline's task: the demo data gets a 0/1 or a numeric target, and the gate a
    /// floor on accuracy or a ceiling on RMSE.
    pub task: Task,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            schedule: "0 0 2 * * *".into(),
            approval: "auto",
            epochs: 20,
            rows: 1500,
            listen: "127.0.0.1:0".into(),
            grace: "5s",
            token: true,
            catch_up: false,
            reference: "data/reference.csv".into(),
            current: "data/current/{date}.csv".into(),
            extra: String::new(),
            data_extra: String::new(),
            gate_extra: String::new(),
            task: Task::Classification,
        }
    }
}

/// A pipeline on disk: data for today, a config, a token file.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub store_url: String,
    pub date: String,
    pub task: Task,
}

impl Env {
    pub async fn new(db: Db, opts: Opts) -> Option<Env> {
        let dir = tempfile::tempdir().unwrap();
        let url = store_url(db, dir.path()).await?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("current")).unwrap();
        retraind::demo::generate_for(
            &data.join("reference.csv"),
            opts.rows,
            retraind::demo::Regime::NORMAL,
            1,
            opts.task,
        )
        .unwrap();
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        retraind::demo::generate_for(
            &data.join("current").join(format!("{date}.csv")),
            opts.rows,
            retraind::demo::Regime::NORMAL,
            2,
            opts.task,
        )
        .unwrap();
        let gate_line = match opts.task {
            Task::Classification => "min_accuracy = 0.8",
            Task::Regression => "max_error = 30.0",
        };
        std::fs::write(dir.path().join("api-token"), TOKEN).unwrap();
        let token_line = if opts.token {
            "api_token_file = \"api-token\""
        } else {
            ""
        };
        let text = format!(
            r#"
[daemon]
state_dir = "state"
shutdown_grace = "{grace}"

[server]
listen = "{listen}"
{token_line}

[store]
url = "{url}"

[[pipeline]]
name = "p1"
task = "{task}"
schedule = "{schedule}"
catch_up = {catch_up}

[pipeline.data]
reference = "{reference}"
{current}
categorical = ["segment"]
{data_extra}

[pipeline.train.burn]
epochs = {epochs}
patience = {epochs}

[pipeline.gate]
{gate_line}
{gate_extra}

[pipeline.approval]
mode = "{approval}"
{extra}
"#,
            reference = opts.reference,
            // An empty `current` leaves the key out (a window in Spark instead).
            current = match opts.current.as_str() {
                "" => String::new(),
                c => format!("current = \"{c}\""),
            },
            extra = opts.extra,
            data_extra = opts.data_extra,
            gate_extra = opts.gate_extra,
            grace = opts.grace,
            listen = opts.listen,
            schedule = opts.schedule,
            epochs = opts.epochs,
            approval = opts.approval,
            catch_up = opts.catch_up,
            task = opts.task.name(),
        );
        let config_path = dir.path().join("retraind.toml");
        std::fs::write(&config_path, text).unwrap();
        Some(Env {
            dir,
            config_path,
            store_url: url,
            date,
            task: opts.task,
        })
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::new(Config::load(&self.config_path).unwrap_or_else(|e| panic!("{e}")))
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.store_url, 2).await.unwrap()
    }

    /// `retraind --config … --log-format json run` for this env, not started yet.
    pub fn run_command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_retraind"));
        command.args([
            "--config",
            self.config_path.to_str().unwrap(),
            "--log-format",
            "json",
            "run",
        ]);
        command
    }

    /// Start `retraind run` as a child process.
    pub fn spawn(&self) -> Child {
        self.run_command()
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap()
    }

    /// Append TOML to the config file (extra pipelines in a test).
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(&self.config_path).unwrap();
        config.push_str(text);
        std::fs::write(&self.config_path, config).unwrap();
    }

    /// Replace today's current window with drifted data (covariate and concept drift).
    pub fn drift_today(&self) {
        self.write_today(retraind::demo::Regime::DRIFTED, 7);
    }

    /// Replace today's current window with 1,500 rows of `regime` drawn from `seed`, with the
    /// env's kind of target.
    pub fn write_today(&self, regime: retraind::demo::Regime, seed: u64) {
        retraind::demo::generate_for(
            &self
                .dir
                .path()
                .join("data/current")
                .join(format!("{}.csv", self.date)),
            1500,
            regime,
            seed,
            self.task,
        )
        .unwrap();
    }

    /// The JSON report of one of p1's cycles.
    pub fn report(&self, cycle: i64) -> serde_json::Value {
        let path = self
            .dir
            .path()
            .join(format!("state/reports/p1/cycle-{cycle}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

/// A free port on 127.0.0.1 (bound and released; fine for tests).
pub fn free_port() -> u16 {
    free_port_inner()
}

/// Run a trigger-to-terminal cycle of `p1` in-process; the finished row.
pub async fn run_cycle(env: &Env) -> (CycleRow, Running, CancellationToken) {
    let (running, shutdown) = start_daemon(env, false).await;
    let id = start_cycle(&running.engine, "p1").await;
    let store = running.engine.store().clone();
    let row = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
    (row, running, shutdown)
}

/// A program on PATH (or at `$var`), for tests that start a real server.
pub fn program(name: &str, var: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(var) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// A child process killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        kill9(&mut self.0);
    }
}

fn free_port_inner() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll until `f` returns Some, or panic after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until the cycle is in `state` (or any terminal state).
pub async fn wait_state(store: &Store, id: i64, state: CycleState, timeout: Duration) -> CycleRow {
    eventually(timeout, &format!("cycle {id} to reach {state}"), || async {
        store
            .cycle(id)
            .await
            .ok()
            .flatten()
            .filter(|c| c.state == state || c.state.is_terminal())
    })
    .await
}

/// Wait until the HTTP server answers /healthz.
pub async fn wait_http(addr: &str) {
    let url = format!("http://{addr}/healthz");
    eventually(Duration::from_secs(30), "the daemon's HTTP server", || {
        let url = url.clone();
        async move {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await
}

pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Start the daemon in-process on `env`'s config (scheduler on or off).
pub async fn start_daemon(env: &Env, schedule: bool) -> (Running, CancellationToken) {
    let shutdown = CancellationToken::new();
    let running = retraind::daemon::start(env.config(), shutdown.clone(), schedule)
        .await
        .unwrap();
    (running, shutdown)
}

/// Trigger a manual cycle of `pipeline` now; its id.
pub async fn start_cycle(engine: &Engine, pipeline: &str) -> i64 {
    match engine
        .trigger(pipeline, retraind::cycle::TriggerKind::Manual, None, None)
        .await
        .unwrap()
    {
        CreateOutcome::Created(id) => id,
        other => panic!("a cycle of {pipeline} is already in flight: {other:?}"),
    }
}

/// Start the daemon on `env` and a manual cycle of `p1`, and wait for it to await approval:
/// the daemon, its shutdown token and the cycle's id.
pub async fn start_awaiting_approval(env: &Env) -> (Running, CancellationToken, i64) {
    let (running, shutdown) = start_daemon(env, false).await;
    let id = start_cycle(&running.engine, "p1").await;
    wait_state(
        running.engine.store(),
        id,
        CycleState::AwaitingApproval,
        Duration::from_secs(120),
    )
    .await;
    (running, shutdown, id)
}

/// GET a URL and parse the JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// A real Prometheus (`prometheus` on PATH or `$RETRAIND_TEST_PROMETHEUS`) scraping `target`
/// (host:port) every second as job `job`; its base URL once the target is up. None = skip.
pub async fn prometheus(dir: &Path, target: &str, job: &str) -> Option<(Server, String)> {
    let Some(bin) = program("prometheus", "RETRAIND_TEST_PROMETHEUS") else {
        unavailable("prometheus (Debian package `prometheus`)");
        return None;
    };
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let server = Server(
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let up = format!("up{{job=\"{job}\"}} == 1");
    eventually(
        Duration::from_secs(60),
        "Prometheus to scrape its target",
        || {
            let (u, q) = (url.clone(), up.clone());
            async move {
                retraind::promql::query(&u, &q, Duration::from_secs(2))
                    .await
                    .ok()
            }
        },
    )
    .await;
    Some((server, url))
}

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A real HTTP server on 127.0.0.1 that records every POST and answers with a settable
/// status. On `/api/chat.postMessage` it behaves as Slack's Web API does: `not_authed`
/// without a bearer token, `channel_not_found` without a channel, else `{"ok": true, ...}`
/// (HTTP 200 in every case, as Slack answers). Used as the fake Slack API, the Slack
/// `response_url`, a webhook receiver and a deploy hook.
pub struct Recorder {
    pub url: String,
    pub requests: Arc<std::sync::Mutex<Vec<Recorded>>>,
    pub status: Arc<std::sync::atomic::AtomicU16>,
    /// Milliseconds to wait before answering (a slow server).
    pub delay_ms: Arc<std::sync::atomic::AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        use axum::http::{HeaderMap, StatusCode, Uri};
        let requests: Arc<std::sync::Mutex<Vec<Recorded>>> = Arc::default();
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (reqs, st, delay) = (requests.clone(), status.clone(), delay_ms.clone());
        let app = axum::Router::new().fallback(
            move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let (reqs, st, delay) = (reqs.clone(), st.clone(), delay.clone());
                async move {
                    let wait = delay.load(Ordering::SeqCst);
                    if wait > 0 {
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    let path = uri.path().to_string();
                    reqs.lock().unwrap().push(Recorded {
                        path: path.clone(),
                        headers: headers.clone(),
                        body: body.to_vec(),
                    });
                    let code = StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap();
                    if path.ends_with("/chat.postMessage") {
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let authed = headers
                            .get("authorization")
                            .and_then(|h| h.to_str().ok())
                            .is_some_and(|h| h.starts_with("Bearer xoxb-"));
                        let answer = if !authed {
                            serde_json::json!({"ok": false, "error": "not_authed"})
                        } else if !v["channel"].is_string() {
                            serde_json::json!({"ok": false, "error": "channel_not_found"})
                        } else {
                            serde_json::json!({"ok": true, "channel": "C0123", "ts": "1700000000.000100", "message": {"text": v["text"]}})
                        };
                        return (code, axum::Json(answer));
                    }
                    (code, axum::Json(serde_json::json!({})))
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            url,
            requests,
            status,
            delay_ms,
            _task: task,
        }
    }

    /// Requests to `path` so far.
    pub fn to(&self, path: &str) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    pub fn set_status(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }
}

/// The version number the champion alias points at (0 = none).
pub async fn champion_version(store: &Store) -> i64 {
    store
        .alias("p1", "champion")
        .await
        .unwrap()
        .map(|v| v.version)
        .unwrap_or(0)
}

/// `retraind check --reference R --current C --format json` and `extra` arguments: (exit
/// status, stdout, stderr).
pub fn check_json(reference: &Path, current: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "check",
        "--reference",
        reference.to_str().unwrap(),
        "--current",
        current.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    retraind(&args)
}

/// Run the binary with `args`: (exit status, stdout, stderr).
pub fn retraind(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_retraind"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Trigger `p1` over the API of the daemon at `addr`; the new cycle's id (None if refused).
pub async fn trigger_api(addr: &str) -> Option<i64> {
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/pipelines/p1/trigger"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?;
    if r.status() != 202 {
        return None;
    }
    let body: serde_json::Value = r.json().await.ok()?;
    body["cycle"].as_i64()
}

/// A private CA and a certificate for 127.0.0.1 it signs (made with openssl in `dir`): the
/// server's TLS settings and the CA's PEM, for a client's `ca_file`.
pub fn private_ca(dir: &Path) -> (Arc<tokio_rustls::rustls::ServerConfig>, PathBuf) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let subject = |cn: &str| format!("/CN={cn}");
    let ca_subject = subject("retraind test CA");
    let server_subject = subject("127.0.0.1");
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &ca_subject,
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                &server_subject,
            ],
        ]
        .concat(),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    (Arc::new(config), dir.join("ca.pem"))
}

/// Accept TLS connections on a free port and hand each to `serve` (a client that does not
/// trust the certificate ends at the handshake). Returns the port.
async fn tls_listener<F, Fut>(tls: Arc<tokio_rustls::rustls::ServerConfig>, serve: F) -> u16
where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, serve) = (acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    serve(stream).await;
                }
            });
        }
    });
    port
}

/// An axum app served over TLS. Returns the port.
pub async fn serve_tls(app: axum::Router, tls: Arc<tokio_rustls::rustls::ServerConfig>) -> u16 {
    tls_listener(tls, move |stream| {
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

/// A TLS-terminating proxy in front of a plain server on 127.0.0.1:`upstream` (a real server
/// that speaks only HTTP, put behind a private CA). Returns the port.
pub async fn tls_proxy(upstream: u16, tls: Arc<tokio_rustls::rustls::ServerConfig>) -> u16 {
    tls_listener(tls, move |mut stream| async move {
        if let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut plain).await;
        }
    })
    .await
}
