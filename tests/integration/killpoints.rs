//! The kill harness: the real binary is SIGKILLed at 50 seeded points of a cycle per store —
//! while loading, checking, training, evaluating, awaiting approval, deploying, watching —
//! restarted, and the store is checked after each: the cycle ends exactly once, at most one
//! model version and one deploy per cycle, the champion is the version a deployed cycle made,
//! no cycle is left active, the staging area is empty, and every registered version has its
//! model files. Cycles alternate between normal and drifted data so that every one retrains.
//!
//! The deploy hook is at-least-once: a daemon killed while the hook answers calls it again
//! after the restart. Every call of one deploy carries the same `webhook-id`
//! (`deploy-<pipeline>-v<N>-move-<id>`, the open move's row), so the serving system can drop the repeats; the
//! harness asserts it, counts the calls per deploy, and requires every one of the eight
//! working states to have been hit on each store (`decided` and `loading`, the two short
//! ones, are stretched by triggers the harness puts on the store: see `slow_two_writes`).

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use retraind::cycle::{CycleState, Outcome};
use retraind::store::DeployKind;

use crate::helpers::{Db, Env, Opts, Server, TOKEN, eventually, free_port, kill9, wait_http};

const KILL_POINTS: usize = 50;

/// The states a kill point aims at.
const TARGETS: [CycleState; 8] = [
    CycleState::Loading,
    CycleState::Checking,
    CycleState::Decided,
    CycleState::Training,
    CycleState::Evaluating,
    CycleState::AwaitingApproval,
    CycleState::Deploying,
    CycleState::Watching,
];

/// `decided` lasts one guard check and one event write between two transitions, `loading`
/// the read of two small files — too short for a poll to catch every time. The harness slows
/// a write inside the store itself (~0.4 s: the `retrain_started` event, and the transition
/// out of `loading`, whose transaction keeps `loading` the committed state while it waits),
/// so that a kill aimed at either lands in it. The daemon is not changed: a kill during the
/// slow write rolls it back, as any kill mid-transaction would.
async fn slow_two_writes(db: Db, url: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let statements: &[&'static str] = match db {
        // No CTE inside a SQLite trigger: a cross join of a 300-row table (27M rows).
        Db::Sqlite => &[
            "CREATE TABLE harness_n (x INTEGER)",
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) \
             INSERT INTO harness_n SELECT x FROM c",
            "CREATE TRIGGER harness_slow BEFORE INSERT ON events \
             WHEN NEW.kind = 'retrain_started' BEGIN \
             SELECT count(*) FROM harness_n a, harness_n b, harness_n c; END",
            "CREATE TRIGGER harness_slow_load BEFORE INSERT ON transitions \
             WHEN NEW.to_state = 'checking' BEGIN \
             SELECT count(*) FROM harness_n a, harness_n b, harness_n c; END",
        ],
        Db::Postgres => &[
            "CREATE FUNCTION harness_slow() RETURNS trigger AS $$ BEGIN \
             PERFORM pg_sleep(0.4); RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER harness_slow BEFORE INSERT ON events FOR EACH ROW \
             WHEN (NEW.kind = 'retrain_started') EXECUTE FUNCTION harness_slow()",
            "CREATE TRIGGER harness_slow_load BEFORE INSERT ON transitions FOR EACH ROW \
             WHEN (NEW.to_state = 'checking') EXECUTE FUNCTION harness_slow()",
        ],
    };
    for sql in statements {
        sqlx::query(*sql).execute(&mut conn).await.unwrap();
    }
}

/// Approve as a human would (idempotent: a second call is a duplicate or refused).
async fn approve(addr: &str, id: i64) {
    let _ = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/cycles/{id}/approve"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"approver": "harness"}))
        .send()
        .await;
}

async fn kill_points(db: Db, seed: u64) {
    let addr = format!("127.0.0.1:{}", free_port());
    // A deploy hook that takes its time, so that `deploying` lasts long enough to be hit.
    let hook = crate::helpers::Recorder::start().await;
    hook.delay_ms
        .store(700, std::sync::atomic::Ordering::SeqCst);
    let opts = Opts {
        listen: addr.clone(),
        approval: "manual",
        epochs: 400,
        rows: 1500,
        extra: format!(
            r#"
[pipeline.deploy]
watch_for = "1s"
watch_interval = "300ms"
hook_url = "{}/reload"

[pipeline.guards]
max_retrains = ["1000/1h"]
max_deploys = ["1000/1h"]
cooldown = "0s"
breaker_failures = 0
"#,
            hook.url
        ),
        ..Opts::default()
    };
    let Some(env) = Env::new(db, opts).await else {
        return;
    };
    let store = env.store().await;
    slow_two_writes(db, &env.store_url).await;
    let state_dir = env.dir.path().join("state");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed_in: std::collections::BTreeMap<String, usize> = Default::default();
    let mut report = Vec::new();
    let mut drifted: std::collections::HashMap<i64, bool> = Default::default();
    // Deploys by how many times the hook was called for them.
    let mut hook_calls: std::collections::BTreeMap<usize, usize> = Default::default();
    for point in 0..KILL_POINTS {
        let calls_before = hook.requests.lock().unwrap().len();
        // Data the champion was not trained on, so that the cycle retrains; and no freeze
        // left by an automatic rollback of the previous round.
        let champion_drifted = match store.alias("p1", "champion").await.unwrap() {
            Some(v) => drifted.get(&v.cycle_id).copied().unwrap_or(false),
            None => true,
        };
        let regime = if champion_drifted {
            retraind::demo::Regime::NORMAL
        } else {
            retraind::demo::Regime::DRIFTED
        };
        env.write_today(regime, point as u64);
        store.clear_holds("p1").await.unwrap();
        let mut daemon = Server(env.spawn());
        wait_http(&addr).await;
        let id = eventually(Duration::from_secs(10), "a trigger", || {
            crate::helpers::trigger_api(&addr)
        })
        .await;
        drifted.insert(id, !champion_drifted);
        // A seeded kill point: a target state, then a seeded moment inside it (states
        // shorter than the poll are killed just after; the state actually hit is recorded).
        let target = TARGETS[rng.random_range(0..TARGETS.len())];
        let extra = Duration::from_millis(rng.random_range(0..15));
        let order = |s: CycleState| CycleState::ALL.iter().position(|x| *x == s).unwrap_or(0);
        let started = Instant::now();
        loop {
            let state = store.cycle(id).await.unwrap().unwrap().state;
            if state == target {
                tokio::time::sleep(extra).await;
                break;
            }
            if order(state) > order(target)
                || state.is_terminal()
                || started.elapsed() > Duration::from_secs(60)
            {
                break;
            }
            if state == CycleState::AwaitingApproval {
                approve(&addr, id).await;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let delay = started.elapsed();
        kill9(&mut daemon.0);
        let at_kill = store.cycle(id).await.unwrap().unwrap().state;
        *killed_in.entry(at_kill.to_string()).or_default() += 1;
        // Restart; the cycle resumes (or was already over) and ends.
        let daemon = Server(env.spawn());
        wait_http(&addr).await;
        let started = Instant::now();
        let c = eventually(Duration::from_secs(120), "the cycle to end", || {
            let (store, addr) = (store.clone(), addr.clone());
            async move {
                let c = store.cycle(id).await.ok()??;
                if c.state == CycleState::AwaitingApproval {
                    approve(&addr, id).await;
                }
                c.state.is_terminal().then_some(c)
            }
        })
        .await;
        drop(daemon);
        report.push(format!(
            "point {point}: killed after {delay:?} in {at_kill}, ended {} ({:?}) {:?} after restart",
            c.state,
            c.outcome,
            started.elapsed()
        ));
        let fail =
            |what: String| -> String { format!("{what}\n{}\n{}", report.join("\n"), env.log()) };
        // Exactly once: terminal, no other active cycle, the transition log ends once.
        assert!(
            store.active_cycles().await.unwrap().is_empty(),
            "{}",
            fail("an active cycle is left".into())
        );
        let transitions = store.transitions(id).await.unwrap();
        let terminal = transitions.iter().filter(|t| t.to.is_terminal()).count();
        assert_eq!(
            terminal,
            1,
            "{}",
            fail(format!("{terminal} terminal transitions"))
        );
        if !at_kill.is_terminal() && at_kill != CycleState::Scheduled {
            assert!(c.resumes >= 1, "{}", fail("not resumed".into()));
        }
        // Nothing half-registered: at most one version for the cycle, with its files.
        if let Some(v) = store.version_for_cycle(id).await.unwrap() {
            assert!(
                std::path::Path::new(&v.path).join("card.json").is_file(),
                "{}",
                fail(format!("v{} has no card.json", v.version))
            );
        }
        let staging = state_dir.join("staging");
        let left: Vec<_> = std::fs::read_dir(&staging)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{}",
            fail(format!("staging not empty: {left:?}"))
        );
        // No double deploy.
        let deploys: Vec<_> = store
            .deployments("p1", 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|d| d.kind == DeployKind::Deploy && d.cycle_id == Some(id))
            .collect();
        assert!(
            deploys.len() <= 1,
            "{}",
            fail(format!("{} deploys", deploys.len()))
        );
        if c.outcome == Some(Outcome::Deployed) {
            assert_eq!(
                deploys.len(),
                1,
                "{}",
                fail("deployed without a deploy record".into())
            );
            let champion = store.alias("p1", "champion").await.unwrap().unwrap();
            assert_eq!(
                Some(champion.cycle_id),
                Some(id),
                "{}",
                fail("champion is not this cycle's".into())
            );
            // The hook heard of this deploy, under one delivery id however often it was called.
            let ids: Vec<String> = hook.requests.lock().unwrap()[calls_before..]
                .iter()
                .filter(|r| {
                    r.path == "/reload" && r.json()["version"].as_i64() == Some(champion.version)
                })
                .map(|r| r.header("webhook-id").unwrap_or_default().to_string())
                .collect();
            let prefix = format!("deploy-p1-v{}-move-", champion.version);
            assert!(
                !ids.is_empty() && ids.iter().all(|i| i == &ids[0] && i.starts_with(&prefix)),
                "{}",
                fail(format!("hook calls for v{}: {ids:?}", champion.version))
            );
            *hook_calls.entry(ids.len()).or_default() += 1;
        }
        if c.outcome == Some(Outcome::Failed) {
            panic!("{}", fail(format!("cycle failed: {:?}", c.reason)));
        }
    }
    // Every version number is used once (monotonic, no gaps from half-registrations).
    let versions: Vec<i64> = store
        .versions("p1")
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    let mut sorted = versions.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), versions.len());
    eprintln!(
        "{db:?}: kills by state {killed_in:?}\n{}",
        report.join("\n")
    );
    // The seeded points covered the cycle, not just its start.
    let working = killed_in
        .iter()
        .filter(|(s, _)| {
            !matches!(
                s.as_str(),
                "completed" | "rejected" | "skipped" | "scheduled"
            )
        })
        .count();
    assert!(working >= 5, "kill points only hit {killed_in:?}");
    // Every one of the eight working states was hit (`decided` through the slowed write).
    let missed: Vec<String> = TARGETS
        .iter()
        .map(|s| s.to_string())
        .filter(|s| !killed_in.contains_key(s))
        .collect();
    assert!(
        missed.is_empty(),
        "never killed in {missed:?}: {killed_in:?}"
    );
    eprintln!("{db:?}: deploys by hook calls {hook_calls:?}");
    let retrained = report
        .iter()
        .filter(|l| !l.contains("NoRetrain") && !l.contains("Blocked"))
        .count();
    assert!(
        retrained >= KILL_POINTS * 3 / 4,
        "only {retrained} rounds retrained"
    );
}

#[tokio::test]
async fn fifty_kill_points_on_sqlite() {
    kill_points(Db::Sqlite, 7).await;
}

#[tokio::test]
async fn fifty_kill_points_on_postgres() {
    kill_points(Db::Postgres, 11).await;
}
