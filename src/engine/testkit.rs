//! Test set-up for the steps, without a daemon: a pipeline `p` over generated data (the
//! demo's), a store on a temporary SQLite file, the parts its configuration says, and an
//! engine that is never started — steps run one at a time and the driver's own code
//! persists their results.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::steps::StepResult;
use super::{Engine, FromConfig, StepContext, driver};
use crate::config::Config;
use crate::cycle::{CycleState, Outcome, TriggerKind};
use crate::demo::Regime;
use crate::metrics::Metrics;
use crate::store::{CreateOutcome, CycleRow, CycleUpdate, Store};

/// The base configuration, by table; a test replaces whole tables.
const BASE: [(&str, &str); 7] = [
    (
        "[daemon]",
        "state_dir = \"state\"\nshutdown_grace = \"5s\"\n",
    ),
    ("[[pipeline]]", "name = \"p\"\ncatch_up = false\n"),
    (
        "[pipeline.data]",
        "reference = \"data/reference.csv\"\ncurrent = \"data/{date}.csv\"\ncategorical = [\"segment\"]\nmin_rows = 100\n",
    ),
    ("[pipeline.train.burn]", "epochs = 15\nhidden = [16]\n"),
    ("[pipeline.approval]", "mode = \"auto\"\n"),
    (
        "[pipeline.guards]",
        "cooldown = \"1s\"\nmax_retrains = [\"10/1h\"]\nmax_deploys = [\"10/1h\"]\n",
    ),
    ("[pipeline.deploy]", "watch_for = \"0s\"\n"),
];

pub struct Kit {
    dir: tempfile::TempDir,
    engine: Engine,
    seed: AtomicU64,
    /// The day every cycle of the kit is about: today (UTC), the day the watch reads.
    date: String,
}

impl Kit {
    pub const NORMAL: Regime = Regime::NORMAL;
    pub const DRIFTED: Regime = Regime::DRIFTED;
    pub const INVERTED: Regime = Regime::INVERTED;

    pub async fn new() -> Kit {
        Kit::with("").await
    }

    /// The base configuration with the tables in `tables` (TOML) replacing or joining its
    /// own.
    pub async fn with(tables: &str) -> Kit {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        crate::demo::generate(
            &dir.path().join("data/reference.csv"),
            1000,
            Regime::NORMAL,
            1,
        )
        .unwrap();
        let path = dir.path().join("retraind.toml");
        std::fs::write(&path, config_text(tables)).unwrap();
        let config = Arc::new(Config::load_with_env(&path, &[]).unwrap_or_else(|e| panic!("{e}")));
        let url = format!(
            "sqlite://{}",
            dir.path().join("state/retraind.db").display()
        );
        let store = Store::connect(&url, 2).await.unwrap();
        let engine = Engine::new(
            store,
            config,
            Arc::new(FromConfig),
            Metrics::new(),
            CancellationToken::new(),
        )
        .unwrap();
        engine.register_pipelines().await.unwrap();
        Kit {
            dir,
            engine,
            seed: AtomicU64::new(100),
            date: chrono::Utc::now().format("%Y-%m-%d").to_string(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn store(&self) -> &Store {
        self.engine.store()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Write the day's window: `rows` rows drawn from `regime` (fresh draws each call).
    pub fn write_today(&self, regime: Regime, rows: usize) {
        let seed = self.seed.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.path().join(format!("data/{}.csv", self.date));
        crate::demo::generate(&path, rows, regime, seed).unwrap();
    }

    /// Write the day's window as the CSV `text`.
    pub fn write_today_text(&self, text: &str) {
        let path = self.dir.path().join(format!("data/{}.csv", self.date));
        std::fs::write(path, text).unwrap();
    }

    /// A fresh draw of `rows` rows of `regime` as CSV text (header first).
    pub fn draw(&self, regime: Regime, rows: usize) -> String {
        let seed = self.seed.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.path().join(format!("data/draw-{seed}.csv"));
        crate::demo::generate(&path, rows, regime, seed).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(path).unwrap();
        text
    }

    /// A covariate shift CBPE is made for: `rows` rows of `regime` that all lie near its
    /// true decision boundary (the demo's score within ±0.4 of 0), where a model of that
    /// regime is unsure, with P(y | x) the regime's own. The window without its labels (none
    /// has arrived), then with them.
    pub fn unsure_window(&self, regime: Regime, rows: usize) -> (String, String) {
        let text = self.draw(regime, rows * 40);
        let mut lines = text.lines();
        let mut out = format!("{}\n", lines.next().unwrap());
        let mut labelled = out.clone();
        for line in lines {
            let f: Vec<&str> = line.split(',').collect();
            let x = |i: usize| f[i].parse::<f64>().unwrap();
            let score = regime.score(x(0), x(1), x(2), x(3), f[4]);
            if score.abs() < 0.4 && out.lines().count() <= rows {
                out.push_str(&format!("{},{},{},{},{},\n", f[0], f[1], f[2], f[3], f[4]));
                labelled.push_str(&format!("{line}\n"));
            }
        }
        assert_eq!(out.lines().count(), rows + 1, "draw more rows");
        (out, labelled)
    }

    /// A new cycle of `p`, scheduled.
    pub async fn new_cycle(&self) -> CycleRow {
        let now = chrono::Utc::now();
        let created = self
            .store()
            .create_cycle("p", TriggerKind::Manual, &self.date, None, now)
            .await
            .unwrap();
        let CreateOutcome::Created(id) = created else {
            panic!("a cycle is in flight already: {created:?}");
        };
        self.store().cycle(id).await.unwrap().unwrap()
    }

    /// The context a step of cycle `id` gets now.
    pub async fn context_of(&self, id: i64) -> StepContext {
        let cycle = self.store().cycle(id).await.unwrap().unwrap();
        StepContext::new(
            cycle,
            self.engine.runtime().await,
            self.engine.shared().clone(),
        )
        .unwrap()
    }

    /// A new cycle moved to `state` without running a step (for the first steps).
    pub async fn context_in(&self, state: CycleState) -> StepContext {
        let c = self.new_cycle().await;
        if state != CycleState::Scheduled {
            self.store()
                .transition(
                    c.id,
                    c.state,
                    state,
                    "test",
                    CycleUpdate::default(),
                    chrono::Utc::now(),
                )
                .await
                .unwrap();
        }
        self.context_of(c.id).await
    }

    /// A new cycle run by the real steps (and persisted by the driver's code) until it is
    /// in `state`.
    pub async fn run_until(&self, state: CycleState) -> StepContext {
        let c = self.new_cycle().await;
        self.drive_until(c.id, state).await
    }

    /// Cycle `id` run on by the real steps until it is in `state`.
    pub async fn drive_until(&self, id: i64, state: CycleState) -> StepContext {
        loop {
            let cycle = self.store().cycle(id).await.unwrap().unwrap();
            if cycle.state == state {
                return self.context_of(id).await;
            }
            assert!(
                !cycle.state.is_terminal(),
                "cycle ended {} before reaching {state}: {:?}",
                cycle.state,
                cycle.reason
            );
            driver::step(&self.engine, &cycle).await.unwrap();
        }
    }

    /// Run a cycle to its end and check it deployed. Later rows of the base regime arrive
    /// while it is watched (a watch never judges a model on the window it was trained on).
    pub async fn deploy_first_model(&self) {
        let watching = self.run_until(CycleState::Watching).await;
        self.write_today(Kit::NORMAL, 1000);
        let ctx = self
            .drive_until(watching.cycle.id, CycleState::Completed)
            .await;
        assert_eq!(
            ctx.cycle.outcome,
            Some(Outcome::Deployed),
            "{:?}",
            ctx.cycle.reason
        );
    }

    /// End the cycle of `ctx` (from the state it is stored in).
    pub async fn finish(&self, ctx: &StepContext, to: CycleState) {
        let c = self.store().cycle(ctx.cycle.id).await.unwrap().unwrap();
        let update = CycleUpdate::outcome(Outcome::of_terminal(to, false).unwrap());
        self.store()
            .transition(c.id, c.state, to, "test", update, chrono::Utc::now())
            .await
            .unwrap();
    }

    /// The transition a step asked for.
    pub fn advanced(&self, result: StepResult) -> (CycleState, String, CycleUpdate) {
        match result {
            StepResult::Advance(t) => (t.to, t.reason, t.update),
            other => panic!("expected a transition, got {other:?}"),
        }
    }

    /// The value of one series of `/metrics` (`name{labels}` as rendered).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.engine.metrics().render();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    /// The HTML report of cycle `id`.
    pub fn report_html(&self, id: i64) -> String {
        let path = crate::artifacts::report_html_path(&self.state_dir(), "p", id);
        std::fs::read_to_string(path).unwrap()
    }

    /// The messages of cycle `id`'s events of `kind`.
    pub async fn events(&self, id: i64, kind: &str) -> Vec<String> {
        self.store()
            .events(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .map(|e| e.message)
            .collect()
    }

    /// Wait (at most 30 s) until cycle `id` has an event of `kind`.
    pub async fn wait_for_event(&self, id: i64, kind: &str) {
        for _ in 0..300 {
            if !self.events(id, kind).await.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cycle {id} never logged {kind}");
    }
}

/// The base tables, each replaced by the one of the same header in `tables`, then the
/// tables the base does not have.
fn config_text(tables: &str) -> String {
    let mut extra: Vec<(String, String)> = Vec::new();
    for line in tables.lines() {
        if line.starts_with('[') {
            extra.push((line.trim().to_string(), String::new()));
        } else if let Some((_, body)) = extra.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    let mut text = String::new();
    for (header, body) in BASE {
        let body = extra
            .iter()
            .find(|(h, _)| h == header)
            .map(|(_, b)| b.as_str())
            .unwrap_or(body);
        text.push_str(&format!("{header}\n{body}"));
    }
    for (header, body) in extra
        .iter()
        .filter(|(h, _)| !BASE.iter().any(|(b, _)| b == h))
    {
        text.push_str(&format!("{header}\n{body}"));
    }
    text
}
