//! `[pipeline.guards]`: its raw shape, the guards' defaults (here and nowhere else) and
//! their validation.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::Budget;
use crate::source::Location;
use crate::validate::Checker;

/// `[pipeline.guards]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawGuards {
    pub enabled: Option<bool>,
    pub max_retrains: Option<Vec<String>>,
    pub max_deploys: Option<Vec<String>>,
    pub cooldown: Option<String>,
    pub breaker_failures: Option<i64>,
    pub golden_set: Option<String>,
    pub monotonic_last: Option<i64>,
    pub monotonic_tolerance: Option<f64>,
}

/// A pipeline's guard settings (`[pipeline.guards]`).
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Off only for experiments: every guard but the freeze lets everything through.
    pub enabled: bool,
    pub max_retrains: Vec<Budget>,
    pub max_deploys: Vec<Budget>,
    pub cooldown: Duration,
    /// Consecutive failed cycles that pause the pipeline (0 = never).
    pub breaker_failures: usize,
    /// The golden set for the monotonic-quality guard (none = guard off).
    pub golden_set: Option<Location>,
    /// How many past champions the candidate must not fall below.
    pub monotonic_last: usize,
    /// Allowed shortfall below the best past champion on the golden set.
    pub monotonic_tolerance: f64,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            max_retrains: vec![
                Budget {
                    count: 1,
                    window: Duration::from_secs(86400),
                },
                Budget {
                    count: 3,
                    window: Duration::from_secs(7 * 86400),
                },
            ],
            max_deploys: vec![
                Budget {
                    count: 1,
                    window: Duration::from_secs(86400),
                },
                Budget {
                    count: 3,
                    window: Duration::from_secs(7 * 86400),
                },
            ],
            cooldown: Duration::from_secs(86400),
            breaker_failures: 3,
            golden_set: None,
            monotonic_last: 3,
            monotonic_tolerance: 0.0,
        }
    }
}

impl GuardConfig {
    /// Validate `raw` (the checker is at `pipeline[i].guards`). `higher_is_better`: the
    /// direction of the gate metric, whose units the monotonic tolerance is in; `base`: the
    /// config file's folder, for a relative golden set.
    pub fn from_raw(
        raw: RawGuards,
        higher_is_better: bool,
        base: &Path,
        c: &mut Checker,
    ) -> GuardConfig {
        let d = GuardConfig::default();
        let budgets = |c: &mut Checker,
                       key: &str,
                       raw: Option<Vec<String>>,
                       default: Vec<Budget>| {
            match raw {
                None => default,
                Some(list) => list
                    .iter()
                    .filter_map(|b| Budget::parse(b).map_err(|e| c.problem(key, e)).ok())
                    .collect(),
            }
        };
        GuardConfig {
            enabled: raw.enabled.unwrap_or(d.enabled),
            max_retrains: budgets(c, "max_retrains", raw.max_retrains, d.max_retrains),
            max_deploys: budgets(c, "max_deploys", raw.max_deploys, d.max_deploys),
            cooldown: c.duration("cooldown", &raw.cooldown, d.cooldown),
            breaker_failures: match raw.breaker_failures {
                Some(0) => 0,
                other => c.positive("breaker_failures", other, d.breaker_failures, 1000),
            },
            golden_set: raw.golden_set.as_deref().and_then(|g| {
                Location::parse(g, base)
                    .map_err(|e| c.problem("golden_set", e.to_string()))
                    .ok()
            }),
            monotonic_last: c.positive("monotonic_last", raw.monotonic_last, d.monotonic_last, 100),
            // In the gate metric's units: a share of accuracy, or the target's units for an
            // error metric.
            monotonic_tolerance: if higher_is_better {
                c.fraction(
                    "monotonic_tolerance",
                    raw.monotonic_tolerance,
                    d.monotonic_tolerance,
                    false,
                )
            } else {
                c.non_negative(
                    "monotonic_tolerance",
                    raw.monotonic_tolerance,
                    d.monotonic_tolerance,
                )
            },
        }
    }
}
