//! The engine fails closed and never loops, on SQLite and PostgreSQL: a trainer whose output
//! holds a NUL byte and invalid UTF-8, a data (class 22) or constraint (class 23) error
//! raised by the database at the transition that records a training, and a store that is
//! down for two minutes right after a training each end the cycle once — failed with a
//! readable reason, or completed after the outage — with the trainer run once.
//!
//! The errors are real: a trigger in the test's database raises them (PostgreSQL:
//! `RAISE … USING ERRCODE`; SQLite: `RAISE(ABORT)` for a constraint, a text into an
//! INTEGER PRIMARY KEY for a datatype mismatch). The outage is real too: on PostgreSQL the
//! daemon reaches the server through a TCP relay that the test cuts (every connection
//! dropped, new ones refused), on SQLite another connection holds the database's write
//! lock (`BEGIN EXCLUSIVE`, so every write of the daemon meets SQLITE_BUSY).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use retraind::cycle::{CycleState, Outcome};
use retraind::store::{CycleRow, Store};
use sqlx::Connection;

use crate::helpers::{
    Db, Env, Opts, Recorder, Server, TOKEN, eventually, free_port, kill9, start_cycle,
    start_daemon, trigger_api, wait_http, wait_state,
};

/// How long the store stays away in the outage tests.
const OUTAGE: Duration = Duration::from_secs(120);

/// A command trainer that counts its runs in `runs`, then does `body` (bash).
fn counting_trainer(dir: &Path, body: &str) -> (String, PathBuf) {
    let runs = dir.join("trainer-runs");
    let script = dir.join("train.sh");
    std::fs::write(
        &script,
        format!("#!/bin/bash\necho run >> '{}'\n{body}\n", runs.display()),
    )
    .unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/command-trainer");
    let config = format!(
        r#"
[pipeline.train]
backend = "command"
timeout = "300s"

[pipeline.train.command]
program = ["bash", "{script}", "{{train_path}}", "{{model_dir}}", "{{metrics_path}}", "{{target}}"]
predict = ["python3", "{example}/predict.py", "{{model_dir}}", "{{input_path}}", "{{output_path}}"]
data_format = "csv"
"#,
        script = script.display()
    );
    (config, runs)
}

/// The example trainer, then a pause until the test says go (`go` exists): the moment after
/// a training's side effect and before its result is recorded.
fn trains_then_waits(dir: &Path) -> (String, PathBuf, PathBuf, PathBuf) {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/command-trainer");
    let (trained, go) = (dir.join("trained"), dir.join("go"));
    let body = format!(
        "python3 '{example}/train.py' \"$@\"\nrc=$?\ntouch '{}'\nwhile [ ! -e '{}' ]; do sleep 0.1; done\nexit $rc",
        trained.display(),
        go.display()
    );
    let (config, runs) = counting_trainer(dir, &body);
    (config, runs, trained, go)
}

fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn wait_end(store: &Store, id: i64, timeout: Duration) -> CycleRow {
    let start = std::time::Instant::now();
    loop {
        let c = store.cycle(id).await.ok().flatten();
        if let Some(c) = c.clone().filter(|c| c.state.is_terminal()) {
            return c;
        }
        if start.elapsed() > timeout {
            let events = store.events(id).await.unwrap_or_default();
            panic!("cycle {id} did not end within {timeout:?}: {c:?}\nevents: {events:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The transitions of a cycle into `failed`: exactly one when it ended once.
async fn failures(store: &Store, id: i64) -> usize {
    store
        .transitions(id)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.to == CycleState::Failed)
        .count()
}

async fn trainer_output_with_nul_fails_once(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let body = r"printf 'loading libnative\n'
printf 'segfault in \000 native code \377\376 at 0x0\n' >&2
exit 3";
    let (train, runs_file) = counting_trainer(dir.path(), body);
    let opts = Opts {
        extra: train,
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    let reason = fails_once(&env, &runs_file).await;
    assert!(
        reason.contains("exited with exit status: 3")
            && reason.contains("segfault in  native code \u{fffd}\u{fffd} at 0x0"),
        "{reason}"
    );
    assert!(!reason.contains('\0'), "{reason:?}");
}

/// Run a cycle of `p1` that must fail: it fails once (one transition into `failed`, still
/// failed seconds later), the trainer ran once, nothing was registered. Its stored reason.
async fn fails_once(env: &Env, runs_file: &Path) -> String {
    let (running, shutdown) = start_daemon(env, false).await;
    let store = running.engine.store().clone();
    let id = start_cycle(&running.engine, "p1").await;
    let end = wait_end(&store, id, Duration::from_secs(120)).await;
    // Time for a loop to show itself, had there been one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(end.state, CycleState::Failed, "{:?}", end.reason);
    assert_eq!(runs(runs_file), 1, "the trainer ran once");
    assert_eq!(failures(&store, id).await, 1);
    let now = store.cycle(id).await.unwrap().unwrap();
    assert_eq!(
        (now.state, now.reason.clone()),
        (CycleState::Failed, end.reason)
    );
    assert!(store.versions("p1").await.unwrap().is_empty());
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
    now.reason.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainer_printing_nul_fails_its_cycle_once_on_sqlite() {
    trainer_output_with_nul_fails_once(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainer_printing_nul_fails_its_cycle_once_on_postgresql() {
    trainer_output_with_nul_fails_once(Db::Postgres).await;
}

/// What the injected error is.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Class 22 (PostgreSQL 22012 division by zero; SQLite a datatype mismatch).
    Data,
    /// Class 23 (PostgreSQL 23514 check violation; SQLite a constraint raised by a trigger).
    Constraint,
}

/// Make the database refuse every transition into `trained`.
async fn refuse_trained(env: &Env, db: Db, refusal: Refusal) {
    let store = env.store().await;
    drop(store); // migrated
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&env.store_url).await.unwrap();
    let statements: Vec<String> = match (db, refusal) {
        (Db::Postgres, r) => {
            let code = match r {
                Refusal::Data => "22012",
                Refusal::Constraint => "23514",
            };
            vec![
                format!(
                    "CREATE FUNCTION refuse_trained() RETURNS trigger AS $$ BEGIN \
                     RAISE EXCEPTION 'injected refusal' USING ERRCODE = '{code}'; END $$ LANGUAGE plpgsql"
                ),
                "CREATE TRIGGER refuse_trained BEFORE INSERT ON transitions FOR EACH ROW \
                 WHEN (NEW.to_state = 'trained') EXECUTE FUNCTION refuse_trained()"
                    .into(),
            ]
        }
        (Db::Sqlite, Refusal::Data) => vec![
            "CREATE TABLE injected_probe (id INTEGER PRIMARY KEY)".into(),
            "CREATE TRIGGER refuse_trained BEFORE INSERT ON transitions \
             WHEN NEW.to_state = 'trained' BEGIN \
             INSERT INTO injected_probe (id) VALUES ('not an integer'); END"
                .into(),
        ],
        (Db::Sqlite, Refusal::Constraint) => vec![
            "CREATE TRIGGER refuse_trained BEFORE INSERT ON transitions \
             WHEN NEW.to_state = 'trained' BEGIN \
             SELECT RAISE(ABORT, 'injected refusal'); END"
                .into(),
        ],
    };
    for s in statements {
        sqlx::query(sqlx::AssertSqlSafe(s))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

async fn refused_transition_fails_once(db: Db, refusal: Refusal, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/command-trainer");
    let (train, runs_file) = counting_trainer(
        dir.path(),
        &format!("exec python3 '{example}/train.py' \"$@\""),
    );
    let opts = Opts {
        extra: train,
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    refuse_trained(&env, db, refusal).await;
    let reason = fails_once(&env, &runs_file).await;
    assert!(
        reason.starts_with("cannot record the result of the training step: store query failed:")
            && reason.contains(expect),
        "{refusal:?}: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_error_at_a_transition_fails_the_cycle_once_on_sqlite() {
    refused_transition_fails_once(Db::Sqlite, Refusal::Data, "datatype mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_error_at_a_transition_fails_the_cycle_once_on_sqlite() {
    refused_transition_fails_once(Db::Sqlite, Refusal::Constraint, "injected refusal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_error_at_a_transition_fails_the_cycle_once_on_postgresql() {
    refused_transition_fails_once(Db::Postgres, Refusal::Data, "injected refusal").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_error_at_a_transition_fails_the_cycle_once_on_postgresql() {
    refused_transition_fails_once(Db::Postgres, Refusal::Constraint, "injected refusal").await;
}

/// A TCP relay to PostgreSQL that the test can cut: while down, every relayed connection is
/// dropped and new ones are closed at once (as a server that went away).
struct Relay {
    port: u16,
    down: Arc<AtomicBool>,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(upstream: std::net::SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(false);
        let (flag, cuts) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes
                }
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Relay { port, down, cut }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        // `send` would leave the value unchanged while no connection listens.
        self.cut.send_replace(down);
    }
}

/// The store goes away for [`OUTAGE`] right after the training and comes back.
async fn outage_after_training(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let (train, runs_file, trained, go) = trains_then_waits(dir.path());
    let opts = Opts {
        extra: train,
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    let store = env.store().await; // migrated, and the test's own view
    let relay = match db {
        Db::Postgres => {
            let (host, addr) = server_of(&env.store_url);
            let relay = Relay::start(addr).await;
            let through = env
                .store_url
                .replace(&format!("@{host}/"), &format!("@127.0.0.1:{}/", relay.port));
            assert_ne!(through, env.store_url);
            let text = std::fs::read_to_string(&env.config_path).unwrap();
            std::fs::write(&env.config_path, text.replace(&env.store_url, &through)).unwrap();
            Some(relay)
        }
        Db::Sqlite => None,
    };
    let (running, shutdown) = start_daemon(&env, false).await;
    let id = start_cycle(&running.engine, "p1").await;
    crate::helpers::eventually(Duration::from_secs(120), "the training", || {
        let done = trained.exists();
        async move { done.then_some(()) }
    })
    .await;
    // Down: the relay cut, or SQLite's write lock held by another connection.
    let lock = match &relay {
        Some(r) => {
            r.set_down(true);
            None
        }
        None => {
            let mut conn = sqlx::AnyConnection::connect(&env.store_url).await.unwrap();
            sqlx::query("PRAGMA busy_timeout = 30000")
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .unwrap();
            Some(conn)
        }
    };
    std::fs::write(&go, "").unwrap();
    tokio::time::sleep(OUTAGE).await;
    // Nothing was recorded meanwhile; the trainer ran once.
    assert_eq!(runs(&runs_file), 1);
    match (&relay, lock) {
        (Some(r), _) => r.set_down(false),
        (None, Some(mut conn)) => {
            sqlx::query("ROLLBACK").execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        (None, None) => unreachable!(),
    }
    let end = wait_end(&store, id, Duration::from_secs(300)).await;
    assert_eq!(end.outcome, Some(Outcome::Deployed), "{:?}", end.reason);
    assert_eq!(runs(&runs_file), 1, "the trainer ran once");
    let versions = store.versions("p1").await.unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
}

/// The server of a `postgres://user:pass@host:port/db` URL, as written and resolved.
fn server_of(url: &str) -> (String, std::net::SocketAddr) {
    use std::net::ToSocketAddrs;
    let after = url.split('@').nth(1).unwrap_or(url);
    let host = after.split('/').next().unwrap_or(after).to_string();
    let addr = host.to_socket_addrs().unwrap().next().unwrap();
    (host, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_for_two_minutes_after_training_trains_once_on_sqlite() {
    outage_after_training(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_for_two_minutes_after_training_trains_once_on_postgresql() {
    outage_after_training(Db::Postgres).await;
}

async fn rollback_api(addr: &str, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/pipelines/p1/rollback"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// v1 → v2; a rollback to v1 by hand, the daemon killed (-9) while the deploy hook answers;
/// v1 → v2 again. The restarted daemon completes the rollback under the same delivery id,
/// and the three moves are delivered under three ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_killed_mid_move_keeps_its_delivery_id() {
    let hook = Recorder::start().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let opts = Opts {
        listen: addr.clone(),
        extra: format!(
            "[pipeline.deploy]\nhook_url = \"{}/reload\"\n\n[pipeline.guards]\nmax_retrains = [\"10/1h\"]\nmax_deploys = [\"10/1h\"]\ncooldown = \"0s\"\n",
            hook.url
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(Db::Sqlite, opts).await else {
        return;
    };
    let store = env.store().await;
    let mut daemon = Server(env.spawn());
    wait_http(&addr).await;
    for drifted in [false, true] {
        if drifted {
            env.drift_today();
        }
        let id = eventually(Duration::from_secs(10), "a trigger", || trigger_api(&addr)).await;
        let c = wait_state(&store, id, CycleState::Completed, Duration::from_secs(120)).await;
        assert_eq!(c.outcome, Some(Outcome::Deployed), "{:?}", c.reason);
    }
    let champion = |store: Store| async move {
        store
            .alias("p1", "champion")
            .await
            .unwrap()
            .map(|v| v.version)
    };
    assert_eq!(champion(store.clone()).await, Some(2));
    // The hook answers slowly; the rollback is killed while it waits.
    hook.delay_ms.store(5_000, Ordering::SeqCst);
    let call = tokio::spawn({
        let addr = addr.clone();
        async move { rollback_api(&addr, serde_json::json!({"actor": "ops"})).await }
    });
    let open = eventually(Duration::from_secs(10), "the rollback's move", || {
        let store = store.clone();
        async move { store.open_move("p1").await.ok().flatten() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill9(&mut daemon.0);
    let _ = call.await;
    assert_eq!(
        champion(store.clone()).await,
        Some(2),
        "the kill came before the alias move"
    );
    assert_eq!(store.open_move("p1").await.unwrap().as_ref(), Some(&open));
    hook.delay_ms.store(0, Ordering::SeqCst);
    let _daemon = Server(env.spawn());
    wait_http(&addr).await;
    eventually(Duration::from_secs(30), "the rollback completed", || {
        let store = store.clone();
        async move {
            let done = store.open_move("p1").await.ok()?.is_none();
            (done && champion(store).await == Some(1)).then_some(())
        }
    })
    .await;
    assert_eq!(
        rollback_api(&addr, serde_json::json!({"actor": "ops", "to": 2})).await,
        200
    );
    let mut delivered: Vec<String> = hook
        .to("/reload")
        .iter()
        .map(|r| r.header("webhook-id").unwrap_or_default().to_string())
        .collect();
    // However often the interrupted rollback was delivered, it was under one id.
    delivered.dedup();
    let rollback = format!("deploy-p1-v1-move-{}", open.id);
    assert_eq!(
        delivered,
        [
            "deploy-p1-v1-move-1".to_string(),
            "deploy-p1-v2-move-2".to_string(),
            rollback,
            format!("deploy-p1-v2-move-{}", open.id + 1),
        ]
    );
}
