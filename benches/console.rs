//! How fast the console renders with a year and more of history: 1,000 cycles (every fifth
//! one retrained, deployed and approved: 200 model versions, each the parent of the next)
//! in a SQLite store, behind a running daemon. One real cycle is run first (demo data, burn
//! training) so every page has a real report, gate document, inputs and model card; the
//! other 999 are written through the store's own calls with that cycle's documents.
//!
//! Prints, per page kind, the median, 95th percentile and slowest of 50 requests timed from
//! a client on the same machine (so the figure includes the HTTP round trip over loopback)
//! and the page's size. Run:
//!
//!   cargo bench --bench console            # release build
//!   cargo bench --bench console --profile dev   # the test build's profile, no release build

use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use retraind::approval::{ApprovalDecision, ApprovalRow, Recorded};
use retraind::cycle::{CycleState, Outcome, TriggerKind};
use retraind::records::EventKind;
use retraind::store::{
    ChampionMove, CreateOutcome, CycleRow, CycleUpdate, DeployKind, NewVersion, ReportSummary,
    Store,
};

const TOKEN: &str = "bench-token-0123456789abcdef";
const CYCLES: usize = 1000;
const EVERY: usize = 5;
const REQUESTS: usize = 50;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("current"))?;
    let task = retraind::performance::Task::Classification;
    let normal = retraind::demo::Regime::NORMAL;
    retraind::demo::generate_for(&data.join("reference.csv"), 2000, normal, 1, task)?;
    let today = Utc::now().format("%Y-%m-%d").to_string();
    let current = data.join("current").join(format!("{today}.csv"));
    retraind::demo::generate_for(&current, 2000, normal, 2, task)?;
    std::fs::write(dir.path().join("api-token"), TOKEN)?;
    let config_path = dir.path().join("retraind.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
[daemon]
state_dir = "state"
[server]
listen = "127.0.0.1:0"
api_token_file = "api-token"
[store]
url = "sqlite://{}"
[[pipeline]]
name = "churn"
schedule = "0 0 2 * * *"
[pipeline.data]
reference = "data/reference.csv"
current = "data/current/{{date}}.csv"
categorical = ["segment"]
[pipeline.train.burn]
epochs = 8
[pipeline.gate]
min_accuracy = 0.5
[pipeline.approval]
mode = "auto"
"#,
            dir.path().join("state").join("retraind.db").display()
        ),
    )?;
    let config = std::sync::Arc::new(retraind::config::Config::load(&config_path)?);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = retraind::daemon::start(config, shutdown.clone(), false).await?;
    let store = running.engine.store().clone();

    eprintln!("running one real cycle (training a model) …");
    let CreateOutcome::Created(first) = running
        .engine
        .trigger("churn", TriggerKind::Manual, None, None)
        .await?
    else {
        anyhow::bail!("a cycle is already in flight");
    };
    let real = wait_done(&store, first).await?;
    let report = store.report(first).await?.unwrap_or_default();
    let version = store.version_for_cycle(first).await?.ok_or_else(|| {
        anyhow::anyhow!("the real cycle registered no version: {:?}", real.reason)
    })?;

    eprintln!("writing {CYCLES} cycles of history …");
    let t = Instant::now();
    let mut parent = version.version;
    let mut newest_retrain = first;
    let mut newest_plain = first;
    for i in 1..CYCLES {
        let at = Utc::now() - Days::new((CYCLES - i) as u64);
        let retrain = i % EVERY == 0;
        let id = history_cycle(&store, &real, &report, at, i, retrain).await?;
        if retrain {
            let mut lineage = version.lineage.clone();
            lineage.parent_version = Some(parent);
            lineage.trigger_cycle = id;
            let v = store
                .register_trained(
                    NewVersion {
                        pipeline: "churn".into(),
                        cycle_id: id,
                        path: version.path.clone(),
                        metrics: version.metrics.clone(),
                        lineage,
                    },
                    "trained",
                    at,
                )
                .await?;
            parent = v.version;
            finish_retrain(&store, &real, id, v.id, at).await?;
            newest_retrain = id;
        } else {
            newest_plain = id;
        }
    }
    eprintln!("history written in {:.1} s", t.elapsed().as_secs_f64());

    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = http
        .post(format!("{base}/login"))
        .form(&[("user", "bench"), ("token", TOKEN)])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("login failed: {}", login.status()))?
        .to_string();
    let pages = [
        ("overview", "/".to_string()),
        (
            "pipeline (50 cycles, 200 versions, charts)",
            "/pipelines/churn".to_string(),
        ),
        (
            "cycle (retrained, approved)",
            format!("/cycles/{newest_retrain}"),
        ),
        ("cycle (no retrain)", format!("/cycles/{newest_plain}")),
        (
            "version (newest: 200 ancestors)",
            format!("/pipelines/churn/versions/{parent}"),
        ),
        (
            "version (oldest)",
            format!("/pipelines/churn/versions/{}", version.version),
        ),
    ];
    println!(
        "console pages, {CYCLES} cycles, {} versions, {REQUESTS} requests each (ms)",
        store.versions("churn").await?.len()
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>9}",
        "page", "median", "p95", "max", "bytes"
    );
    for (name, path) in pages {
        let mut times = Vec::with_capacity(REQUESTS);
        let mut bytes = 0;
        for _ in 0..REQUESTS {
            let t = Instant::now();
            let r = http
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await?;
            anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
            bytes = r.bytes().await?.len();
            times.push(t.elapsed());
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{name:<44} {:>8.2} {:>8.2} {:>8.2} {bytes:>9}",
            ms(times[REQUESTS / 2]),
            ms(times[REQUESTS * 95 / 100]),
            ms(times[REQUESTS - 1])
        );
    }
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
    Ok(())
}

async fn wait_done(store: &Store, id: i64) -> anyhow::Result<CycleRow> {
    for _ in 0..600 {
        if let Some(c) = store.cycle(id).await?
            && c.state.is_terminal()
        {
            return Ok(c);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!("cycle {id} did not finish in 5 minutes")
}

/// One past cycle through check and decision, with the real cycle's documents; a plain one
/// ends there (no retrain), a retrain one is left in `training`.
async fn history_cycle(
    store: &Store,
    real: &CycleRow,
    report: &serde_json::Value,
    at: chrono::DateTime<Utc>,
    i: usize,
    retrain: bool,
) -> anyhow::Result<i64> {
    let date = at.format("%Y-%m-%d").to_string();
    let CreateOutcome::Created(id) = store
        .create_cycle("churn", TriggerKind::Scheduled, &date, Some(at), at)
        .await?
    else {
        anyhow::bail!("cycle in flight");
    };
    use CycleState::*;
    let step = |from, to, update| store.transition(id, from, to, "history", update, at);
    step(Scheduled, Loading, CycleUpdate::default()).await?;
    let inputs = CycleUpdate {
        inputs: real.inputs.clone(),
        ..CycleUpdate::default()
    };
    step(Loading, Checking, inputs).await?;
    let share = ((i * 37) % 100) as f64 / 100.0;
    let summary = ReportSummary {
        dataset_drift: share > 0.5,
        drift_share: Some(share),
        metric: Some(0.8 + share / 10.0),
        estimated: false,
        realised: None,
    };
    store.save_report(id, "churn", &summary, report, at).await?;
    let decided = CycleUpdate {
        decision: real.decision.clone(),
        ..CycleUpdate::default()
    };
    step(Checking, Decided, decided).await?;
    if retrain {
        step(Decided, Training, CycleUpdate::default()).await?;
    } else {
        step(Decided, Completed, CycleUpdate::outcome(Outcome::NoRetrain)).await?;
    }
    Ok(id)
}

/// Evaluate, approve, deploy and watch a retrained history cycle.
async fn finish_retrain(
    store: &Store,
    real: &CycleRow,
    id: i64,
    version_id: i64,
    at: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    use CycleState::*;
    let step = |from, to, update| store.transition(id, from, to, "history", update, at);
    step(Trained, Evaluating, CycleUpdate::default()).await?;
    let gated = CycleUpdate {
        gate: real.gate.clone(),
        ..CycleUpdate::default()
    };
    step(Evaluating, AwaitingApproval, gated).await?;
    let approval = ApprovalRow {
        approver: "ada".into(),
        channel: "console".into(),
        decision: ApprovalDecision::Approve,
        reason: "gate table looks right".into(),
        at,
    };
    store
        .record_approval(id, &approval, None, |_| Recorded::New)
        .await?;
    step(AwaitingApproval, Deploying, CycleUpdate::default()).await?;
    let mv = store
        .begin_move("churn", DeployKind::Deploy, version_id, Some(id), at)
        .await?;
    store
        .promote(
            &ChampionMove {
                pipeline: "churn",
                version_id,
                kind: DeployKind::Deploy,
                cycle: Some(id),
                actor: "retraind",
                reason: "approved",
                move_id: mv.id,
            },
            at,
        )
        .await?;
    store
        .event("churn", Some(id), EventKind::Deployed, "deployed", at)
        .await?;
    step(Deploying, Watching, CycleUpdate::default()).await?;
    store
        .event(
            "churn",
            Some(id),
            EventKind::WatchCheck,
            "watch check passed",
            at,
        )
        .await?;
    step(Watching, Completed, CycleUpdate::outcome(Outcome::Deployed)).await?;
    Ok(())
}
