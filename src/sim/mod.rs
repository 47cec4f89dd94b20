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
pub use run::{Options, SeedRun, StoreKind, run_seed};

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
        Brakes {
            off: [brake].into_iter().collect(),
            all_off: false,
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
