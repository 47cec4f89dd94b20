//! `retraind demo`: the whole loop on embedded defaults, with nothing installed.
//!
//! Generates a synthetic tabular classification data set shaped like the seed's
//! (`feature_a`, `feature_b`, `feature_c`, `value`, a categorical `segment`, `target`), writes
//! a config that uses a SQLite store under the demo folder and the local burn trainer, starts
//! the daemon in-process (so `/metrics` is live), and runs four simulated days, each copied
//! into the pipeline's live window (`data/live.csv`) when it begins:
//! day 1 bootstraps the first champion, day 2 is quiet (no drift, no retrain), day 3 brings
//! covariate and concept drift (drift found, the champion's accuracy drops → retrain →
//! evaluation gate → approval → deploy → a post-deploy watch that passes), and on day 4 a
//! labelling job ships inverted labels: the champion looks broken, the retrained model fits
//! the bad labels and passes the gate, a human approves it — and when the corrected labels
//! arrive, the post-deploy watch fails twice, rolls back to the previous version automatically
//! and freezes the pipeline. The demo plays the human approver through the HTTP API, exactly
//! as `retraind approve` does. Days are compressed into seconds, so the demo's guard budgets
//! and watch window are in seconds too.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::cycle::{CycleState, TriggerKind};
use crate::daemon;
use crate::engine::Engine;
use crate::store::CreateOutcome;

/// How one simulated day's data is drawn.
#[derive(Debug, Clone, Copy)]
pub struct Regime {
    /// Mean of `feature_a`.
    pub a_mean: f64,
    /// Share of (retail, wholesale, online).
    pub segments: [f64; 3],
    /// Weight of `feature_c` in the true decision function (concept).
    pub c_weight: f64,
    /// Labels swapped (a labelling bug), features unchanged.
    pub inverted: bool,
}

impl Regime {
    pub const NORMAL: Regime = Regime {
        a_mean: 0.0,
        segments: [0.5, 0.3, 0.2],
        c_weight: 1.0,
        inverted: false,
    };
    pub const DRIFTED: Regime = Regime {
        a_mean: 0.8,
        segments: [0.2, 0.3, 0.5],
        c_weight: -1.0,
        inverted: false,
    };
    /// The drifted world, labelled by a broken job that swapped the classes.
    pub const INVERTED: Regime = Regime {
        inverted: true,
        ..Regime::DRIFTED
    };
}

const SEGMENTS: [&str; 3] = ["retail", "wholesale", "online"];

impl Regime {
    /// The true decision function of a row (before the label noise): a row is of class 1
    /// when it is above 0.
    pub fn score(&self, a: f64, b: f64, c: f64, value: f64, segment: &str) -> f64 {
        let offset = match segment {
            "wholesale" => 0.5,
            "online" => -0.5,
            _ => 0.0,
        };
        2.0 * a - 1.5 * b + self.c_weight * c + 0.5 * value.ln_1p() - 1.5 + offset
    }
}

/// Write `rows` rows of synthetic data as CSV (a 0/1 target).
pub fn generate(path: &Path, rows: usize, regime: Regime, seed: u64) -> std::io::Result<()> {
    generate_for(
        path,
        rows,
        regime,
        seed,
        crate::performance::Task::Classification,
    )
}

/// Write `rows` rows of synthetic data as CSV: the same features and decision function, with
/// a 0/1 target for classification or, for regression, the function itself plus noise on a
/// scale of its own (≈ 100 ± 40), so the target's standardisation matters.
pub fn generate_for(
    path: &Path,
    rows: usize,
    regime: Regime,
    seed: u64,
    task: crate::performance::Task,
) -> std::io::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let std = Normal::new(0.0, 1.0).map_err(std::io::Error::other)?;
    let noise = Normal::new(0.0, 0.3).map_err(std::io::Error::other)?;
    let value = LogNormal::new(3.0, 1.0).map_err(std::io::Error::other)?;
    let mut out = String::with_capacity(rows * 64);
    out.push_str("feature_a,feature_b,feature_c,value,segment,target\n");
    for _ in 0..rows {
        let a = regime.a_mean + std.sample(&mut rng);
        let b = std.sample(&mut rng);
        let c = std.sample(&mut rng);
        let v: f64 = value.sample(&mut rng);
        let u: f64 = rng.random();
        let seg = if u < regime.segments[0] {
            0
        } else if u < regime.segments[0] + regime.segments[1] {
            1
        } else {
            2
        };
        let score = regime.score(a, b, c, v, SEGMENTS[seg]);
        let noisy = score + noise.sample(&mut rng);
        let _ = write!(out, "{a:.5},{b:.5},{c:.5},{v:.3},{},", SEGMENTS[seg]);
        let _ = match task {
            crate::performance::Task::Classification => {
                writeln!(out, "{}", u8::from((noisy > 0.0) != regime.inverted))
            }
            crate::performance::Task::Regression => {
                let sign = if regime.inverted { -1.0 } else { 1.0 };
                writeln!(out, "{:.4}", 100.0 + 15.0 * sign * noisy)
            }
        };
    }
    std::fs::write(path, out)
}

/// The demo's configuration file.
/// Most epochs the demo's model trains (patience may stop it earlier).
const DEMO_EPOCHS: u64 = 40;

fn config_text(listen: &str) -> String {
    format!(
        r#"# Generated by `retraind demo`. See config/retraind.toml for every key.
[daemon]
state_dir = "state"
shutdown_grace = "10s"

[server]
listen = "{listen}"
api_token_file = "api-token"

[[pipeline]]
name = "churn"
schedule = "0 0 2 * * *"
timezone = "UTC"

[pipeline.data]
reference = "data/reference.csv"
# The live window: the newest labelled rows (the demo copies each day in).
current = "data/live.csv"
target = "target"
categorical = ["segment"]
min_rows = 200

[pipeline.train.burn]
hidden = [32, 16]
epochs = {DEMO_EPOCHS}
patience = 6
learning_rate = 0.01
batch_size = 64

[pipeline.gate]
min_accuracy = 0.9

[pipeline.approval]
mode = "manual"
expires = "72h"
approvers = ["demo-approver"]

[pipeline.deploy]
# Days last seconds here; a real pipeline watches for e.g. 48h, every hour.
watch_for = "4s"
watch_interval = "1s"
failure_limit = 2
on_failure = "rollback"

[pipeline.guards]
# Budgets scaled to the demo's seconds-long days (defaults: 1/24h and 3/7d, 24h cooldown).
max_retrains = ["3/10m"]
max_deploys = ["3/10m"]
cooldown = "1s"
"#
    )
}

/// Prepare the demo folder: data for three days, the config and an API token.
pub fn prepare(dir: &Path, listen: &str) -> anyhow::Result<(PathBuf, Vec<(String, &'static str)>)> {
    let data = dir.join("data");
    let current = data.join("current");
    std::fs::create_dir_all(&current)
        .with_context(|| format!("cannot create {}", current.display()))?;
    generate(&data.join("reference.csv"), 5000, Regime::NORMAL, 1)?;
    let today = Utc::now().date_naive() - chrono::Days::new(1);
    let days = [
        (
            today - chrono::Days::new(2),
            Regime::NORMAL,
            "bootstrap: no champion yet",
        ),
        (
            today - chrono::Days::new(1),
            Regime::NORMAL,
            "quiet day: same distribution",
        ),
        (
            today - chrono::Days::new(0),
            Regime::DRIFTED,
            "drifted day: feature_a and segment shift, concept changes",
        ),
        (
            today + chrono::Days::new(1),
            Regime::INVERTED,
            "bad labels: the labelling job swapped the classes",
        ),
    ];
    let mut plan = Vec::new();
    for (i, (day, regime, what)) in days.iter().enumerate() {
        let date = day.format("%Y-%m-%d").to_string();
        generate(
            &current.join(format!("{date}.csv")),
            3000,
            *regime,
            100 + i as u64,
        )?;
        if !regime.inverted {
            // Later rows of the same day, labelled: what a post-deploy watch judges the new
            // model on (never the rows it was trained on).
            generate(
                &current.join(format!("{date}.later.csv")),
                3000,
                *regime,
                200 + i as u64,
            )?;
        } else {
            // The same rows with the labels fixed: they "arrive" after the deploy.
            generate(
                &current.join(format!("{date}.corrected.csv")),
                3000,
                Regime {
                    inverted: false,
                    ..*regime
                },
                100 + i as u64,
            )?;
        }
        plan.push((date, *what));
    }
    let config = dir.join("retraind.toml");
    std::fs::write(&config, config_text(listen))?;
    let token = dir.join("api-token");
    if !token.exists() {
        let mut rng = rand::rng();
        let value: String = (0..32)
            .map(|_| format!("{:x}", rng.random::<u8>() % 16))
            .collect();
        std::fs::write(&token, value)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((config, plan))
}

/// Run the demo. `keep_running` keeps serving `/metrics` and the API after the last day.
pub async fn run(dir: &Path, keep_running: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    // A fresh store each run, so the story starts from "no champion".
    let state = dir.join("state");
    if state.exists() {
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("cannot clear {}", state.display()))?;
    }
    let listen = if std::net::TcpListener::bind("127.0.0.1:9464").is_ok() {
        "127.0.0.1:9464"
    } else {
        "127.0.0.1:0"
    };
    let (config_path, plan) = prepare(&dir, listen)?;
    let config = Arc::new(Config::load(&config_path)?);
    out!("retraind demo — data and config in {}", dir.display());
    let shutdown = CancellationToken::new();
    let running = daemon::start(config.clone(), shutdown.clone(), false).await?;
    let engine = running.engine.clone();
    out!("daemon up: metrics at http://{}/metrics\n", running.addr);

    let token = std::fs::read_to_string(dir.join("api-token"))?
        .trim()
        .to_string();
    let api = Api {
        base: format!("http://{}", running.addr),
        token,
        client: reqwest::Client::new(),
    };
    let data = dir.join("data");
    let mut summary = Vec::new();
    for (n, (date, what)) in plan.iter().enumerate() {
        out!("── day {} ({date}): {what}", n + 1);
        let day_file = data.join("current").join(format!("{date}.csv"));
        std::fs::copy(&day_file, data.join("live.csv"))
            .with_context(|| format!("cannot copy {}", day_file.display()))?;
        let id = match engine
            .trigger("churn", TriggerKind::Manual, Some(date.clone()), None)
            .await?
        {
            CreateOutcome::Created(id) | CreateOutcome::AlreadyRunning(id) => id,
        };
        // What arrives while a deploy is watched: the day's later labelled rows, or the
        // corrected labels of a day whose labels were wrong.
        let corrected = data.join("current").join(format!("{date}.corrected.csv"));
        let arrives = if corrected.is_file() {
            (corrected, "corrected labels for this day arrive")
        } else {
            let later = data.join("current").join(format!("{date}.later.csv"));
            (later, "the day's later rows and their labels arrive")
        };
        let end = follow(&engine, &api, id, Some(arrives)).await?;
        summary.push((n + 1, date.clone(), end));
        out!();
    }

    let store = engine.store();
    out!("── summary");
    for (n, date, c) in &summary {
        out!(
            "  day {n} {date}  cycle {:>2}  {:<10} {}",
            c.id,
            c.outcome.map(|o| o.as_str()).unwrap_or("-"),
            c.reason.as_deref().unwrap_or("")
        );
    }
    if let Some(ch) = store.alias("churn", "champion").await? {
        out!(
            "  champion: v{} (holdout accuracy {:.3}) at {}",
            ch.version,
            ch.metrics
                .holdout(crate::performance::Metric::Accuracy)
                .unwrap_or(f64::NAN),
            ch.path
        );
    }
    if let Some(prev) = store.alias("churn", "previous").await? {
        out!("  previous: v{}", prev.version);
    }
    for d in store.deployments("churn", 10).await?.iter().rev() {
        out!(
            "  {:<8} v{} by {} — {}",
            d.kind.as_str(),
            d.version,
            d.actor,
            d.reason
        );
    }
    let holds = store.holds("churn").await?;
    if let Some(h) = holds.frozen {
        let config = config_path.display();
        out!("  frozen by {}: {}", h.by, h.reason);
        out!(
            "  automation stops until it is lifted; with the daemon running (`retraind --config {config} run`):"
        );
        out!("    `retraind --config {config} resume churn --actor \"$(whoami)\"`");
    }
    let state_dir = &config.daemon.state_dir;
    out!("\nwhere to look:");
    out!("  store     {}", state_dir.join("retraind.db").display());
    out!(
        "  reports   {}",
        state_dir.join("reports").join("churn").display()
    );
    out!(
        "  models    {}",
        state_dir.join("models").join("churn").display()
    );
    out!(
        "  metrics   http://{}/metrics{}",
        running.addr,
        if keep_running {
            ""
        } else {
            " (while --keep-running)"
        }
    );
    out!(
        "  history   retraind --config {} history",
        config_path.display()
    );
    out!("finished in {:.1}s", started.elapsed().as_secs_f64());

    if keep_running {
        out!("\nserving until Ctrl-C …");
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
    running.drain(Duration::from_secs(10)).await;
    Ok(())
}

/// The daemon's HTTP API, as `retraind approve` uses it.
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Api {
    async fn approve(&self, id: i64, reason: &str) -> anyhow::Result<()> {
        let url = format!("{}/api/v1/cycles/{id}/approve", self.base);
        let r = self
            .client
            .post(&url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "approver": "demo-approver", "reason": reason }))
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let code = r.status();
        if !code.is_success() {
            anyhow::bail!("POST {url}: {code}: {}", r.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

/// Print a cycle's transitions and watch checks as they happen; approve it through the API
/// when it asks; when it is watching, let the day's `arrives` file (later or corrected rows)
/// arrive in the live window.
async fn follow(
    engine: &Engine,
    api: &Api,
    id: i64,
    mut arrives: Option<(PathBuf, &'static str)>,
) -> anyhow::Result<crate::store::CycleRow> {
    let mut seen = 0;
    let mut seen_events = 0;
    let mut approved = false;
    // The epochs trained, as a bar on a terminal (nothing elsewhere) while it trains.
    let mut bar: Option<crate::progress::Bar> = None;
    loop {
        let c = engine.store().cycle(id).await?.context("cycle vanished")?;
        if c.state != CycleState::Training {
            // Dropping the bar clears it before the next lines print.
            bar = None;
        }
        let transitions = engine.store().transitions(id).await?;
        for t in transitions.iter().skip(seen) {
            out!("   {:<18} {}", t.to.as_str(), t.reason);
        }
        seen = transitions.len();
        let events = engine.store().events(id).await?;
        for e in events.iter().skip(seen_events) {
            if e.kind.is_watch() {
                out!("   {:<18} {}", e.kind.as_str(), e.message);
            }
        }
        seen_events = events.len();
        if c.state.is_terminal() {
            return Ok(c);
        }
        if c.state == CycleState::Training {
            let epoch = engine
                .metrics()
                .training_epoch
                .with_label_values(&[c.pipeline.as_str()])
                .get();
            bar.get_or_insert_with(crate::progress::Bar::on_terminal)
                .count(
                    "   training",
                    u64::try_from(epoch).unwrap_or(0),
                    DEMO_EPOCHS,
                );
        }
        if c.state == CycleState::AwaitingApproval && !approved && c.deadline_at.is_some() {
            out!(
                "   (the demo approves as `demo-approver` via POST /api/v1/cycles/{id}/approve, as `retraind approve {id}` does)"
            );
            api.approve(id, "demo: gate passed, looks good").await?;
            approved = true;
        }
        if c.state == CycleState::Watching
            && let Some((path, what)) = arrives.take()
        {
            let live = path
                .parent()
                .and_then(Path::parent)
                .map(|d| d.join("live.csv"))
                .context("arriving rows outside data/current")?;
            std::fs::copy(&path, &live)
                .with_context(|| format!("cannot copy {}", path.display()))?;
            out!("   ({what} in data/live.csv)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
