//! The real engine through simulated years (`retraind::sim`): 200 seeds of 180 days each —
//! drift episodes, labels three days late, flawed models that fool their holdout, people who
//! approve late, twice or never, outages of the chat, the serving system, the training
//! cluster and the upstream data, crashes at random instants and right after side effects,
//! operator freezes and reloads — keep every promise with the brakes on; the same worlds
//! break them with the brakes off, and each brake removed alone is caught.
//!
//! A test binary of its own, its tests one at a time (`SERIAL`): `cargo test` runs test
//! binaries one after another, so the 200-seed run has the machine to itself and its time
//! is the simulator's, not that of whatever other test shares the cores with it.

use std::collections::{BTreeMap, BTreeSet};

use retraind::sim::{self, Brake, Brakes, Options, Promise, SeedRun, StoreKind};

const JOBS: usize = 6;

/// Held by each test for its whole run.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(seeds: std::ops::RangeInclusive<u64>, options: &Options) -> Vec<SeedRun> {
    let seeds: Vec<u64> = seeds.collect();
    sim::run_many(&seeds, options, JOBS)
        .into_iter()
        .map(|(seed, r)| r.unwrap_or_else(|e| panic!("seed {seed} could not run: {e}")))
        .collect()
}

fn with(brakes: Brakes) -> Options {
    Options {
        brakes,
        ..Options::default()
    }
}

/// The seeds that broke each promise.
fn broken_by(runs: &[SeedRun]) -> BTreeMap<Promise, Vec<u64>> {
    let mut by: BTreeMap<Promise, Vec<u64>> = BTreeMap::new();
    for r in runs {
        let promises: BTreeSet<Promise> = r.violations.iter().map(|v| v.promise).collect();
        for p in promises {
            by.entry(p).or_default().push(r.seed);
        }
    }
    by
}

fn broken(runs: &[SeedRun]) -> usize {
    runs.iter().filter(|r| !r.violations.is_empty()).count()
}

#[test]
fn with_the_brakes_on_every_promise_holds_in_200_seeds_of_180_days() {
    let _serial = serial();
    let started = std::time::Instant::now();
    let runs = run(1..=200, &Options::default());
    let elapsed = started.elapsed();
    let mut totals = sim::Stats::default();
    runs.iter().for_each(|r| totals.add(&r.stats));
    eprintln!("200 seeds × 180 days in {elapsed:?}: {totals:?}");
    if let Some(r) = runs.iter().find(|r| !r.violations.is_empty()) {
        let lines: Vec<String> = r.violations.iter().map(|v| v.to_string()).collect();
        panic!(
            "seed {} broke a promise (replay: retraind simulate --seed {}):\n{}\n\n{}",
            r.seed,
            r.seed,
            lines.join("\n"),
            r.timeline
        );
    }
    // The worlds did what they are for: the engine crashed, deployed flawed models and
    // rolled them back, and every cycle of every day ran.
    assert_eq!(totals.cycles, 200 * 180);
    assert!(totals.crashes >= 200 * 8, "{totals:?}");
    assert!(totals.flawed_deployed >= 100, "{totals:?}");
    assert!(totals.rollbacks >= 50, "{totals:?}");
}

#[test]
fn with_the_brakes_off_every_seed_breaks_a_promise() {
    let _serial = serial();
    let runs = run(1..=40, &with(Brakes::off()));
    let by = broken_by(&runs);
    eprintln!("brakes off: {by:?}");
    assert_eq!(broken(&runs), 40);
    assert_eq!(by.get(&Promise::ApprovedFirst).map(Vec::len), Some(40));
    assert_eq!(by.get(&Promise::WithinBudgets).map(Vec::len), Some(40));
}

/// The README's table: each brake removed alone, and which promise catches it. The cooldown
/// is only caught with the watch off too: the `watching` guard keeps a pipeline from
/// retraining while its last deploy is watched, which covers the cooldown whenever the
/// watch is longer.
#[test]
fn each_brake_removed_alone_is_caught_by_a_promise() {
    let _serial = serial();
    let cases: [(&[Brake], Promise); 6] = [
        (&[Brake::Watch], Promise::NoWorseModelServes),
        (&[Brake::Budgets], Promise::WithinBudgets),
        (&[Brake::Watch, Brake::Cooldown], Promise::WithinBudgets),
        (&[Brake::Breaker], Promise::NothingWhileHeld),
        (&[Brake::GoldenSet], Promise::NeverProgressivelyWorse),
        (&[Brake::Approval], Promise::ApprovedFirst),
    ];
    let mut table = Vec::new();
    for (off, promise) in cases {
        let runs = run(1..=20, &with(Brakes::without_all(off)));
        let by = broken_by(&runs);
        let caught = by.get(&promise).map(Vec::len).unwrap_or(0);
        table.push(format!(
            "{off:?} -> {promise}: {caught} of 20 seeds ({by:?})"
        ));
        assert!(caught > 0, "{off:?} was not caught by {promise}: {by:?}");
    }
    eprintln!("{}", table.join("\n"));
}

/// One seed is one run: the same seed twice gives the same timeline, byte for byte.
#[test]
fn a_seed_replays_exactly() {
    let _serial = serial();
    let options = Options {
        timelines: true,
        ..Options::default()
    };
    let a = sim::run_seed(7, &options).unwrap();
    let b = sim::run_seed(7, &options).unwrap();
    assert!(a.stats.crashes > 0 && a.stats.deploys > 0, "{:?}", a.stats);
    assert_eq!(a.timeline, b.timeline);
}

/// Seed 3488: a flawed v12 (0.729 in the world against v1's 0.787) survives its watch
/// because the 750 labelled rows the watch read put it at 0.7587 against 0.7733 (129 rows
/// only v1 got right, 118 only v12: McNemar p = 0.26). No test can see a gap its rows do
/// not show; the checker counts it as hidden by sampling, computed from the world's own
/// rows, and promise (1) still holds every model those rows do show worse.
#[test]
fn a_gap_the_watchs_rows_do_not_show_is_a_sampling_miss_not_a_broken_promise() {
    let _serial = serial();
    let run = sim::run_seed(3488, &Options::default()).unwrap();
    assert!(run.violations.is_empty(), "{:?}", run.violations);
    assert_eq!(run.stats.hidden, 1, "{:?}", run.stats);
    assert_eq!(run.stats.deploys, 9, "{:?}", run.stats);
}

/// The same worlds on PostgreSQL (one database per seed).
#[test]
fn on_postgresql_every_promise_holds() {
    let _serial = serial();
    let Ok(url) = std::env::var("RETRAIND_TEST_POSTGRES_URL") else {
        if std::env::var("RETRAIND_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            panic!(
                "PostgreSQL is required (RETRAIND_TEST_REQUIRE_ALL=1) but RETRAIND_TEST_POSTGRES_URL is not set"
            );
        }
        eprintln!("skipped: RETRAIND_TEST_POSTGRES_URL is not set");
        // Said again after libtest's summary, which counts this test as passed.
        extern "C" fn report_skip() {
            eprintln!(
                "\n1 test skipped for a missing service (PostgreSQL: RETRAIND_TEST_POSTGRES_URL); RETRAIND_TEST_REQUIRE_ALL=1 makes that a failure"
            );
        }
        // SAFETY: registers a plain `extern "C"` function with no captured state.
        unsafe {
            libc::atexit(report_skip);
        }
        return;
    };
    let options = Options {
        store: StoreKind::Postgres(url),
        ..Options::default()
    };
    let runs = run(1..=8, &options);
    let failing: Vec<String> = runs
        .iter()
        .flat_map(|r| {
            r.violations
                .iter()
                .map(move |v| format!("seed {}: {v}", r.seed))
        })
        .collect();
    assert!(failing.is_empty(), "{}", failing.join("\n"));
    assert_eq!(runs.iter().map(|r| r.stats.cycles).sum::<usize>(), 8 * 180);
}
