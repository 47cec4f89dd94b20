//! `retraind simulate`: run the real engine through simulated years ([`crate::sim`]) and
//! report, per promise, how many seeds broke it. `--seed N` replays one seed and prints its
//! timeline.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use crate::sim::{self, Brakes, Options, Promise, StoreKind};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// How many seeds to run: FIRST, FIRST+1, …
    #[arg(long, default_value_t = 200)]
    pub seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    pub first: u64,
    /// Replay this one seed and print its timeline.
    #[arg(long, conflicts_with_all = ["seeds", "first"])]
    pub seed: Option<u64>,
    /// `on` (every brake, the default), `off` (no guards, no watch, automatic approval), or
    /// `without:NAME[,NAME…]` — watch, budgets, cooldown, breaker, golden-set, approval.
    #[arg(long, default_value = "on")]
    pub brakes: String,
    /// Simulated days per seed.
    #[arg(long, default_value_t = 180)]
    pub days: i64,
    /// Seeds run at once (default: three per CPU; a seed mostly waits on its threads).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run on this PostgreSQL server (`postgres://user:password@host:port`) instead of
    /// SQLite: every seed gets a database of its own, dropped afterwards.
    #[arg(long)]
    pub postgres: Option<String>,
    /// Print the timeline of every seed that broke a promise (default: the first only).
    #[arg(long)]
    pub timelines: bool,
}

/// Exit 0 when every promise held in every seed, 1 when a seed broke one, 4 when a seed
/// could not run.
pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let brakes = Brakes::parse(&args.brakes).map_err(anyhow::Error::msg)?;
    let options = Options {
        brakes,
        days: args.days,
        store: match &args.postgres {
            Some(url) => StoreKind::Postgres(url.clone()),
            None => StoreKind::Sqlite,
        },
        faults: true,
        timelines: args.seed.is_some() || args.timelines,
    };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first..args.first + args.seeds).collect(),
    };
    let jobs = args
        .jobs
        .unwrap_or_else(|| 3 * std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = Instant::now();
    let opts = options.clone();
    let runs = tokio::task::spawn_blocking(move || sim::run_many(&seeds, &opts, jobs)).await?;
    let elapsed = started.elapsed();
    Ok(report(
        &runs,
        &options,
        args.seed.is_some() || args.timelines,
        elapsed,
    ))
}

fn report(
    runs: &[(u64, Result<sim::SeedRun, String>)],
    options: &Options,
    timelines: bool,
    elapsed: std::time::Duration,
) -> ExitCode {
    let mut by_promise: BTreeMap<Promise, Vec<u64>> = BTreeMap::new();
    let (mut broken, mut errors, mut shown) = (0usize, 0usize, false);
    let mut totals = sim::Stats::default();
    let mut hidden: Vec<u64> = Vec::new();
    for (seed, run) in runs {
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                errors += 1;
                out!("seed {seed}: could not run: {e}");
                continue;
            }
        };
        totals.add(&run.stats);
        if run.stats.hidden > 0 {
            hidden.push(*seed);
        }
        if run.violations.is_empty() {
            if timelines {
                out!("{}", run.timeline);
            }
            continue;
        }
        broken += 1;
        for v in &run.violations {
            let seeds = by_promise.entry(v.promise).or_default();
            if seeds.last() != Some(seed) {
                seeds.push(*seed);
            }
        }
        if timelines || !shown {
            shown = true;
            out!(
                "seed {seed} broke a promise; its timeline:\n{}",
                run.timeline
            );
            for v in &run.violations {
                out!("seed {seed}: {v}");
            }
            out!(
                "replay: retraind simulate --seed {seed} --brakes {}\n",
                options.brakes.setting()
            );
        }
    }
    out!(
        "{} seeds of {} days, brakes {}: {broken} broke a promise, {errors} could not run ({:.1} s, {:.2} s a seed)",
        runs.len(),
        options.days,
        options.brakes,
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / runs.len().max(1) as f64
    );
    out!(
        "the engine ran {} cycles, {} deploys, {} rollbacks ({} of the deploys a flawed model), through {} crashes",
        totals.cycles,
        totals.deploys,
        totals.rollbacks,
        totals.flawed_deployed,
        totals.crashes
    );
    if totals.hidden > 0 {
        out!(
            "  {} worse model(s) outlived their watch because the rows it read did not show them worse by the watch's rule (sampling, not a broken promise; e.g. seed {})",
            totals.hidden,
            hidden
                .iter()
                .take(5)
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    for p in Promise::ALL {
        let seeds = by_promise.get(&p).map(Vec::as_slice).unwrap_or(&[]);
        let first: Vec<String> = seeds.iter().take(5).map(|s| s.to_string()).collect();
        out!(
            "  promise {p}: broken in {} seed(s){}",
            seeds.len(),
            if first.is_empty() {
                String::new()
            } else {
                format!(" (e.g. {})", first.join(", "))
            }
        );
    }
    if errors > 0 {
        ExitCode::from(4)
    } else if broken > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
