//! One seed: build the world and its faults, start the engine on a simulated clock, and move
//! time — to the engine's next wake-up or the world's next act, whichever comes first, and
//! only when every task of the engine is parked — until the last day; then check the
//! promises.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::fakes::{Faults, Outage, Outside, SimChannel, SimModels, SimServing, SimTrainer};
use super::promises::{self, Facts, Violation};
use super::world::World;
use super::{Brake, Brakes};
use crate::approval::ApprovalDecision::{self, Approve, Reject};
use crate::approval::Approver;
use crate::clock::{Clock, SimClock};
use crate::config::Config;
use crate::engine::{Engine, PartsError, Runtime, Shared};
use crate::metrics::Metrics;
use crate::store::Store;

/// Where the engine's store lives.
#[derive(Debug, Clone)]
pub enum StoreKind {
    /// A SQLite file in the seed's temporary folder.
    Sqlite,
    /// A fresh database on this PostgreSQL server (`postgres://user:pass@host:port`).
    Postgres(String),
}

/// How to run a seed.
#[derive(Debug, Clone)]
pub struct Options {
    pub brakes: Brakes,
    pub days: i64,
    pub store: StoreKind,
    /// Faults (crashes, outages, failing training) on.
    pub faults: bool,
    /// Write the timeline of every seed, not only of those that broke a promise.
    pub timelines: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            brakes: Brakes::on(),
            days: 180,
            store: StoreKind::Sqlite,
            faults: true,
            timelines: false,
        }
    }
}

/// What one seed did.
#[derive(Debug)]
pub struct SeedRun {
    pub seed: u64,
    pub violations: Vec<Violation>,
    /// Everything that happened, in order (the world's acts, the serving log, the store's
    /// transitions and events); empty for a seed that kept every promise unless
    /// [`Options::timelines`].
    pub timeline: String,
    pub stats: Stats,
}

/// Counts of one run, for the summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub cycles: usize,
    pub deploys: usize,
    pub rollbacks: usize,
    pub crashes: usize,
    pub flawed_deployed: usize,
    /// Models worse in the world that outlived their watch because the rows the watch read
    /// did not show them worse (promise 1 cannot ask a test to see what its rows hide).
    pub hidden: usize,
}

impl Stats {
    /// Add another run's counts.
    pub fn add(&mut self, other: &Stats) {
        self.cycles += other.cycles;
        self.deploys += other.deploys;
        self.rollbacks += other.rollbacks;
        self.crashes += other.crashes;
        self.flawed_deployed += other.flawed_deployed;
        self.hidden += other.hidden;
    }
}

/// Run seed `seed` to its end (blocking: it builds its own single-threaded runtime).
pub fn run_seed(seed: u64, options: &Options) -> Result<SeedRun, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let mut sim = Sim::new(seed, options).await?;
        sim.run().await?;
        sim.finish().await
    })
}

const APPROVERS: [&str; 2] = ["ann", "bob"];
const START: (i32, u32, u32) = (2026, 1, 1);

/// The pipeline's configuration: the defaults a user gets with a five-day watch, a golden
/// set and human approval, minus the brakes that are off.
pub fn config_text(dir: &Path, brakes: &Brakes, approvers: &[&str]) -> String {
    let d = dir.display();
    let on = |b: Brake| brakes.has(b);
    let mut t = format!(
        "[daemon]\nstate_dir = \"{d}/state\"\nshutdown_grace = \"5s\"\n\n\
         [[pipeline]]\nname = \"p\"\nschedule = \"0 0 6 * * *\"\ncatch_up = true\n\n\
         [pipeline.data]\nreference = \"{d}/data/reference.parquet\"\ncurrent = \"{d}/data/{{date}}.parquet\"\n\
         target = \"y\"\ntimestamp = \"ts\"\nnumerical = [\"x1\", \"x2\"]\ncategorical = []\nmin_rows = 100\n\n\
         [pipeline.performance]\nsource = \"model\"\nmin_labels = 100\n\n"
    );
    let _ = write!(
        t,
        "[pipeline.approval]\nmode = \"{}\"\napprovers = [{}]\nexpires = \"20h\"\n\n",
        if on(Brake::Approval) {
            "manual"
        } else {
            "auto"
        },
        approvers
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = write!(
        t,
        "[pipeline.deploy]\nwatch_for = \"{}\"\nwatch_interval = \"12h\"\n\n",
        if on(Brake::Watch) { "5d" } else { "0s" }
    );
    t.push_str("[pipeline.guards]\n");
    if !brakes.guards_enabled() {
        t.push_str("enabled = false\n");
    }
    if !on(Brake::Budgets) {
        t.push_str("max_retrains = []\nmax_deploys = []\n");
    }
    if !on(Brake::Cooldown) {
        t.push_str("cooldown = \"0s\"\n");
    }
    if !on(Brake::Breaker) {
        t.push_str("breaker_failures = 0\n");
    }
    if on(Brake::GoldenSet) {
        let _ = writeln!(t, "golden_set = \"{d}/data/golden.parquet\"");
    }
    t
}

/// Something the world does at an instant.
#[derive(Debug, Clone)]
enum Act {
    /// Midnight: the day's window is written.
    NewDay(i64),
    /// The engine dies and a new one starts on the same store.
    Crash,
    /// The operator freezes the pipeline for maintenance…
    Freeze,
    /// …and resumes it.
    Resume,
    /// The operator's morning look at the holds: one older than a day is lifted.
    MorningRound,
    /// The operator read a notice (a rollback, a pause) and lifts the hold.
    ResumeAfterNotice(&'static str),
    /// The operator adds or removes `carol` from the approvers and reloads.
    Reload,
    /// A person answers an approval request.
    Answer {
        cycle: i64,
        who: &'static str,
        verdict: ApprovalDecision,
    },
}

struct Incarnation {
    engine: Engine,
    scheduler: tokio::task::JoinHandle<()>,
}

struct Sim {
    seed: u64,
    dir: tempfile::TempDir,
    options: Options,
    clock: SimClock,
    world: Arc<World>,
    outside: Arc<Outside>,
    url: String,
    config: Arc<Config>,
    agenda: BTreeMap<(DateTime<Utc>, u64), Act>,
    seq: u64,
    rng: rand::rngs::StdRng,
    end: DateTime<Utc>,
    engine: Option<Incarnation>,
    facts: Facts,
    log: Vec<(DateTime<Utc>, String)>,
    answered: std::collections::HashSet<i64>,
    carol: bool,
    crashes: usize,
}

impl Sim {
    async fn new(seed: u64, options: &Options) -> Result<Sim, String> {
        let start = Utc
            .with_ymd_and_hms(START.0, START.1, START.2, 0, 0, 0)
            .single()
            .ok_or("bad start date")?;
        let days = options.days;
        let dir = scratch_dir()?;
        std::fs::create_dir_all(dir.path().join("data")).map_err(|e| e.to_string())?;
        let world = Arc::new(World::new(seed, start, days));
        world
            .write_reference(dir.path())
            .and_then(|_| world.write_golden(dir.path()))
            .and_then(|_| world.write_window(dir.path(), 0))
            .map_err(|e| format!("cannot write the world's data: {e}"))?;
        let clock = SimClock::new(start);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xFA17);
        let end = start + chrono::Duration::days(days);
        let faults = if options.faults {
            faults(&mut rng, start, end)
        } else {
            Faults {
                flawed: 0.25,
                ..Faults::default()
            }
        };
        let outside = Outside::new(seed, clock.clone(), faults);
        let url = store_url(&options.store, dir.path(), seed).await?;
        let config = load_config(dir.path(), &options.brakes, &APPROVERS)?;
        let mut sim = Sim {
            seed,
            dir,
            options: options.clone(),
            clock,
            world,
            outside,
            url,
            config,
            agenda: BTreeMap::new(),
            seq: 0,
            rng,
            end,
            engine: None,
            facts: Facts::new(
                start,
                end,
                APPROVERS.iter().map(|s| s.to_string()).collect(),
            ),
            log: Vec::new(),
            answered: Default::default(),
            carol: false,
            crashes: 0,
        };
        sim.plan(start);
        Ok(sim)
    }

    fn at(&mut self, at: DateTime<Utc>, act: Act) {
        self.seq += 1;
        self.agenda.insert((at, self.seq), act);
    }

    /// The world's acts known in advance.
    fn plan(&mut self, start: DateTime<Utc>) {
        for day in 1..self.options.days {
            self.at(self.world.day_start(day), Act::NewDay(day));
            self.at(
                self.world.day_start(day) + chrono::Duration::hours(9),
                Act::MorningRound,
            );
        }
        let span = self.options.days * 86_400;
        let random_instant = |rng: &mut rand::rngs::StdRng| {
            start + chrono::Duration::seconds(rng.random_range(3_600..span))
        };
        if self.options.faults {
            for _ in 0..8 {
                let t = random_instant(&mut self.rng);
                self.at(t, Act::Crash);
            }
        }
        for _ in 0..2 {
            let t = random_instant(&mut self.rng);
            let days = self.rng.random_range(1..4);
            self.at(t, Act::Freeze);
            self.at(t + chrono::Duration::days(days), Act::Resume);
        }
        for _ in 0..3 {
            let t = random_instant(&mut self.rng);
            self.at(t, Act::Reload);
        }
    }

    fn note(&mut self, what: impl Into<String>) {
        self.log.push((self.clock.now(), what.into()));
    }

    /// Start an engine on the store, as the daemon does: resume what is in flight, catch up
    /// a missed schedule, run the scheduler.
    async fn start_engine(&mut self) -> Result<(), String> {
        let store = Store::connect(&self.url, 2)
            .await
            .map_err(|e| format!("store: {e}"))?;
        let token = CancellationToken::new();
        let clock: Arc<dyn Clock> = Arc::new(self.clock.clone());
        let shared = Shared::with_clock(store, Metrics::new(), token.clone(), clock.clone());
        let outside = self.outside.clone();
        let factory = move |config: &Arc<Config>| -> Result<Runtime, PartsError> {
            let mut runtime = Runtime::from_config(config)?;
            let o = outside.clone();
            runtime.replace("p", move |parts| {
                parts.trainer = Arc::new(SimTrainer(o.clone()));
                parts.models = Arc::new(SimModels);
                parts.channels.push(Arc::new(SimChannel(o.clone())));
                parts.targets.push(Arc::new(SimServing(o)));
            });
            Ok(runtime)
        };
        let engine = Engine::with_shared(shared, self.config.clone(), Arc::new(factory))
            .map_err(|e| e.to_string())?;
        engine
            .register_pipelines()
            .await
            .map_err(|e| e.to_string())?;
        engine.resume_all().await.map_err(|e| e.to_string())?;
        crate::scheduler::catch_up(&engine, self.clock.now()).await;
        let guard = clock.task();
        let scheduler = tokio::spawn({
            let engine = engine.clone();
            async move {
                crate::scheduler::run(engine, token).await;
                drop(guard);
            }
        });
        self.engine = Some(Incarnation { engine, scheduler });
        Ok(())
    }

    fn kill_engine(&mut self) {
        if let Some(inc) = self.engine.take() {
            inc.engine.crash();
            inc.scheduler.abort();
        }
    }

    async fn crash(&mut self, why: String) -> Result<(), String> {
        self.crashes += 1;
        self.note(format!(
            "CRASH ({why}); a new engine starts on the same store"
        ));
        self.kill_engine();
        self.outside.crash.release();
        // Let the aborted tasks unwind before the next engine opens the store.
        tokio::task::yield_now().await;
        self.start_engine().await
    }

    fn engine(&self) -> Result<&Engine, String> {
        self.engine
            .as_ref()
            .map(|i| &i.engine)
            .ok_or_else(|| "no engine running".to_string())
    }

    async fn run(&mut self) -> Result<(), String> {
        self.start_engine().await?;
        loop {
            tokio::select! {
                _ = self.clock.wait_settled() => {}
                _ = self.outside.crash.signal.notified() => {}
            }
            if let Some(at) = self.outside.crash.requested() {
                self.crash(format!("right after {at} returned")).await?;
                continue;
            }
            if !self.clock.settled() {
                continue;
            }
            self.schedule_answers();
            self.schedule_resumes();
            let wake = self.clock.next_wake();
            let act = self.agenda.keys().next().map(|(t, _)| *t);
            let next = match (wake, act) {
                (Some(w), Some(a)) => w.min(a),
                (w, a) => w.or(a).ok_or("nothing left to happen")?,
            };
            if next >= self.end {
                break;
            }
            if act == Some(next) {
                let Some((_, act)) = self.agenda.pop_first() else {
                    continue;
                };
                self.clock.advance_to(next);
                self.apply(act).await?;
            } else {
                self.clock.advance_to(next);
            }
        }
        self.clock.advance_to(self.end);
        self.kill_engine();
        Ok(())
    }

    /// The operator reads the chat's notices of holds and lifts each after a while.
    fn schedule_resumes(&mut self) {
        for (at, kind, _) in self.outside.take_notices() {
            if matches!(kind, "paused" | "rollback" | "watch_failed") {
                let after = chrono::Duration::minutes(self.rng.random_range(60..30 * 60));
                self.at(at + after, Act::ResumeAfterNotice(kind));
            }
        }
    }

    /// A person reads each request delivered to the chat and answers as their kind does.
    fn schedule_answers(&mut self) {
        for d in self.outside.take_delivered() {
            if !self.answered.insert(d.cycle) {
                continue;
            }
            let who = APPROVERS[self.rng.random_range(0..APPROVERS.len())];
            let minutes = |rng: &mut rand::rngs::StdRng, lo: i64, hi: i64| {
                d.at + chrono::Duration::minutes(rng.random_range(lo..hi))
            };
            let kind = self.rng.random_range(0..100);
            let cycle = d.cycle;
            // Each answer: minutes after delivery (drawn from a range, in this order), who,
            // the verdict; a double click comes three minutes after the first.
            let answers: Vec<(i64, i64, &'static str, ApprovalDecision)> = match kind {
                // 55..65 click twice (below).
                0..65 => vec![(5, 180, who, Approve)],
                // Too late: after the request expired.
                65..75 => vec![(21 * 60, 40 * 60, who, Approve)],
                // Never answers.
                75..85 => Vec::new(),
                85..93 => vec![(5, 600, who, Reject)],
                // Someone not on the list clicks first; then an approver.
                _ => {
                    let later = if self.carol { "carol" } else { who };
                    vec![(1, 60, "mallory", Approve), (60, 300, later, Approve)]
                }
            };
            for (lo, hi, who, verdict) in answers {
                let t = minutes(&mut self.rng, lo, hi);
                self.at(
                    t,
                    Act::Answer {
                        cycle,
                        who,
                        verdict,
                    },
                );
                if (55..65).contains(&kind) {
                    let again = t + chrono::Duration::minutes(3);
                    self.at(
                        again,
                        Act::Answer {
                            cycle,
                            who,
                            verdict,
                        },
                    );
                }
            }
        }
    }

    async fn apply(&mut self, act: Act) -> Result<(), String> {
        match act {
            Act::NewDay(day) => {
                if super::fakes::down(&self.outside.faults.data, self.clock.now()) {
                    self.note(format!(
                        "the upstream data of day {day} is late: no window today"
                    ));
                    self.facts.no_window.insert(day);
                    return Ok(());
                }
                self.world
                    .write_window(self.dir.path(), day)
                    .map_err(|e| format!("cannot write day {day}: {e}"))
            }
            Act::Crash => self.crash("at a random instant".into()).await,
            Act::Freeze => {
                self.note("operator freezes the pipeline");
                self.facts.freezes.push(self.clock.now());
                let engine = self.engine()?;
                engine
                    .freeze(Some("p"), "operator", "maintenance")
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Act::Resume => self.resume("maintenance over").await,
            Act::ResumeAfterNotice(kind) => {
                self.resume(&format!("read the {kind} notice and lifted the hold"))
                    .await
            }
            Act::MorningRound => self.morning_round().await,
            Act::Reload => self.reload().await,
            Act::Answer {
                cycle,
                who,
                verdict,
            } => {
                let engine = self.engine()?;
                let result = engine
                    .decide(
                        cycle,
                        &Approver::named(who),
                        "api",
                        verdict,
                        "simulated",
                        None,
                    )
                    .await;
                let what = match &result {
                    Ok(r) => format!("{r:?}"),
                    Err(e) => format!("refused: {e}"),
                };
                self.note(format!(
                    "{who} answers {verdict:?} on cycle {cycle}: {what}"
                ));
                Ok(())
            }
        }
    }

    async fn resume(&mut self, why: &str) -> Result<(), String> {
        self.note(format!("operator resumes the pipeline ({why})"));
        self.facts.resumes.push(self.clock.now());
        let engine = self.engine()?;
        engine
            .resume(Some("p"), "operator")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Lift a freeze or pause older than a day that the operator did not set.
    async fn morning_round(&mut self) -> Result<(), String> {
        let holds = self
            .engine()?
            .store()
            .holds("p")
            .await
            .map_err(|e| e.to_string())?;
        let now = self.clock.now();
        let old = |h: &Option<crate::guards::Hold>| {
            h.as_ref()
                .is_some_and(|h| h.by != "operator" && now - h.at > chrono::Duration::hours(20))
        };
        if old(&holds.frozen) || old(&holds.paused) {
            return self.resume("looked at the hold and lifted it").await;
        }
        Ok(())
    }

    async fn reload(&mut self) -> Result<(), String> {
        self.carol = !self.carol;
        let approvers: Vec<&str> = if self.carol {
            vec!["ann", "bob", "carol"]
        } else {
            APPROVERS.to_vec()
        };
        self.note(format!(
            "operator reloads the config: approvers {approvers:?}"
        ));
        self.config = load_config(self.dir.path(), &self.options.brakes, &approvers)?;
        self.facts.approvers.push((
            self.clock.now(),
            approvers.iter().map(|s| s.to_string()).collect(),
        ));
        self.engine()?
            .set_config(self.config.clone())
            .await
            .map_err(|e| e.to_string())
    }

    async fn finish(mut self) -> Result<SeedRun, String> {
        let store = Store::connect(&self.url, 2)
            .await
            .map_err(|e| format!("store: {e}"))?;
        self.facts.served = self.outside.served();
        self.facts.crashes = self.crashes;
        let report = promises::check(&store, &self.facts, &self.world)
            .await
            .map_err(|e| format!("reading the store: {e}"))?;
        // The seed's folder is a fresh temporary one each run: named, the timeline replays.
        let timeline = if self.options.timelines || !report.violations.is_empty() {
            promises::timeline(&store, &self.log, &self.facts)
                .await
                .map_err(|e| format!("reading the store: {e}"))?
                .replace(&self.dir.path().display().to_string(), "<dir>")
        } else {
            String::new()
        };
        if let StoreKind::Postgres(admin) = &self.options.store {
            store.close().await;
            drop_database(admin, &self.url).await;
        }
        Ok(SeedRun {
            seed: self.seed,
            violations: report.violations,
            timeline,
            stats: Stats {
                crashes: self.crashes,
                ..report.stats
            },
        })
    }
}

/// Outages, failure storms and crash chances of a seed.
fn faults(rng: &mut rand::rngs::StdRng, start: DateTime<Utc>, end: DateTime<Utc>) -> Faults {
    let span = (end - start).num_seconds().max(7200);
    let outage = |rng: &mut rand::rngs::StdRng, min_h: i64, max_h: i64| {
        let from = start + chrono::Duration::seconds(rng.random_range(3600..span));
        Outage {
            from,
            to: from + chrono::Duration::hours(rng.random_range(min_h..max_h)),
        }
    };
    Faults {
        channel: (0..2).map(|_| outage(rng, 2, 12)).collect(),
        serving: (0..2).map(|_| outage(rng, 2, 24)).collect(),
        trainer: vec![outage(rng, 72, 120)],
        data: (0..2).map(|_| outage(rng, 24, 96)).collect(),
        train_failure: 0.05,
        flawed: 0.25,
        crash_after_train: 0.05,
        crash_after_deploy: 0.1,
    }
}

fn load_config(dir: &Path, brakes: &Brakes, approvers: &[&str]) -> Result<Arc<Config>, String> {
    let path = dir.join("retraind.toml");
    std::fs::write(&path, config_text(dir, brakes, approvers))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Config::load_with_env(&path, &[])
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// A temporary folder, in memory where the machine has one (the store's file too).
fn scratch_dir() -> Result<tempfile::TempDir, String> {
    let shm = PathBuf::from("/dev/shm");
    let builder = || {
        tempfile::Builder::new()
            .prefix("retraind-sim-")
            .tempdir_in(&shm)
    };
    match shm.is_dir().then(builder) {
        Some(Ok(d)) => Ok(d),
        _ => tempfile::tempdir().map_err(|e| format!("cannot make a temporary folder: {e}")),
    }
}

async fn store_url(kind: &StoreKind, dir: &Path, seed: u64) -> Result<String, String> {
    match kind {
        StoreKind::Sqlite => Ok(format!("sqlite://{}", dir.join("retraind.db").display())),
        StoreKind::Postgres(base) => {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let name = format!("retraind_sim_{}_{seed}_{n}", std::process::id());
            admin(base, &format!("DROP DATABASE IF EXISTS {name}")).await?;
            admin(base, &format!("CREATE DATABASE {name}")).await?;
            Ok(format!("{}/{name}", base.trim_end_matches('/')))
        }
    }
}

/// Run one statement on the server's `postgres` database.
async fn admin(base: &str, sql: &str) -> Result<(), String> {
    sqlx::any::install_default_drivers();
    let url = format!("{}/postgres", base.trim_end_matches('/'));
    let pool = sqlx::AnyPool::connect(&url)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    let result = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&pool)
        .await;
    pool.close().await;
    result.map(|_| ()).map_err(|e| format!("{sql}: {e}"))
}

async fn drop_database(base: &str, url: &str) {
    if let Some(name) = url.rsplit('/').next() {
        let _ = admin(
            base,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )
        .await;
    }
}
