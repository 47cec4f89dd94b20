//! The simulator: the real engine — its store, scheduler, steps, guards, gate, watch,
//! approval settlement, deploy targets and metrics — run through 180 simulated days a seed
//! on a [`SimClock`](crate::clock::SimClock), in a world built to fool it: drift episodes,
//! labels three days late, a trainer that sometimes makes a model that is worse in the world
//! than on its holdout, people who approve at once, late, twice or never, a chat and a
//! serving system that fail for hours, a training cluster that fails for days, crashes at
//! random instants and right after side effects, an operator who freezes, resumes and
//! reloads the configuration.
//!
//! The six promises ([`Promise`]) are checked afterwards only from records the engine
//! cannot fake: the store's cycles, transitions and approvals, the serving system's own log
//! of what it put in place, the world's truth about each model, and the operator's own
//! actions. With the brakes off ([`Brakes::off`]) the same worlds break them.
//!
//! One seed is one reproducible run; `retraind simulate --seed N --timeline` replays one and
//! prints what happened. This module is a test harness compiled into the library so that
//! `cargo test` and the `simulate` command share it; the daemon never uses it, and it must
//! not reach into the engine past its public API.

mod fakes;
mod promises;
mod run;
mod world;

use std::collections::BTreeSet;
use std::fmt;

pub use promises::{Promise, Violation};
pub use run::{Options, SeedRun, Stats, StoreKind, run_seed};

/// One brake of the engine, for switching off alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Brake {
    /// The post-deploy watch with automatic rollback.
    Watch,
    /// The retrain and deploy budgets.
    Budgets,
    /// The cooldown after a deploy.
    Cooldown,
    /// The circuit breaker after consecutive failed cycles.
    Breaker,
    /// The monotonic-quality guard on the golden set.
    GoldenSet,
    /// Human approval (off: `approval.mode = "auto"`).
    Approval,
}

impl Brake {
    pub const ALL: [Brake; 6] = [
        Brake::Watch,
        Brake::Budgets,
        Brake::Cooldown,
        Brake::Breaker,
        Brake::GoldenSet,
        Brake::Approval,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Brake::Watch => "watch",
            Brake::Budgets => "budgets",
            Brake::Cooldown => "cooldown",
            Brake::Breaker => "breaker",
            Brake::GoldenSet => "golden-set",
            Brake::Approval => "approval",
        }
    }

    pub fn parse(name: &str) -> Option<Brake> {
        Brake::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for Brake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which brakes the engine runs with. The promises always hold it to all of them: the
/// policy a user configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Brakes {
    off: BTreeSet<Brake>,
    /// Every guard off at once (`guards.enabled = false`), as well as the watch and the
    /// approval.
    all_off: bool,
}

impl Brakes {
    /// Every brake on, as configured in [`run::config_text`].
    pub fn on() -> Brakes {
        Brakes::default()
    }

    /// No guards, no watch, automatic approval: the naive loop with a gate.
    pub fn off() -> Brakes {
        Brakes {
            off: Brake::ALL.into_iter().collect(),
            all_off: true,
        }
    }

    /// Every brake but `brake`.
    pub fn without(brake: Brake) -> Brakes {
        Brakes::without_all(&[brake])
    }

    /// Every brake but those in `brakes`.
    pub fn without_all(brakes: &[Brake]) -> Brakes {
        Brakes {
            off: brakes.iter().copied().collect(),
            all_off: false,
        }
    }

    /// `on`, `off`, or `without:NAME[,NAME…]` with the names of [`Brake::name`].
    pub fn parse(text: &str) -> Result<Brakes, String> {
        match text {
            "on" => Ok(Brakes::on()),
            "off" => Ok(Brakes::off()),
            _ => {
                let names = text.strip_prefix("without:").ok_or_else(|| {
                    format!(
                        "`{text}` is not a brake setting; use on, off or without:NAME[,NAME...]"
                    )
                })?;
                let brakes = names
                    .split(',')
                    .map(|n| {
                        Brake::parse(n.trim()).ok_or_else(|| {
                            let known: Vec<&str> = Brake::ALL.iter().map(|b| b.name()).collect();
                            format!("unknown brake `{n}`; the brakes are {}", known.join(", "))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Brakes::without_all(&brakes))
            }
        }
    }

    /// The `--brakes` setting that gives these brakes.
    pub fn setting(&self) -> String {
        if self.all_off {
            "off".into()
        } else if self.off.is_empty() {
            "on".into()
        } else {
            let names: Vec<&str> = self.off.iter().map(|b| b.name()).collect();
            format!("without:{}", names.join(","))
        }
    }

    pub fn has(&self, brake: Brake) -> bool {
        !self.off.contains(&brake)
    }

    pub fn guards_enabled(&self) -> bool {
        !self.all_off
    }
}

impl fmt::Display for Brakes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all_off {
            return f.write_str("all off");
        }
        if self.off.is_empty() {
            return f.write_str("all on");
        }
        let names: Vec<&str> = self.off.iter().map(|b| b.name()).collect();
        write!(f, "without {}", names.join(", "))
    }
}

/// Run `seeds` on `jobs` threads (each seed on its own single-threaded runtime); results in
/// seed order. A seed that could not run at all (no temporary folder, no database) is an
/// `Err` with the reason.
pub fn run_many(
    seeds: &[u64],
    options: &Options,
    jobs: usize,
) -> Vec<(u64, Result<SeedRun, String>)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(seeds.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&seed) = seeds.get(i) else { break };
                    let run = run_seed(seed, options);
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((seed, run));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(seed, _)| *seed);
    results
}
