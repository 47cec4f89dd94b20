//! Runaway guards: the brakes between a decision and an action. Each guard looks at the
//! pipeline's recorded history (retrains, deploys, outcomes of finished cycles, freezes) and
//! either lets an action through or blocks it with a reason a person reads and a name the
//! `retraind_guard_blocks_total{guard}` metric counts. Pure: the engine reads the history
//! from the store, asks here, and stores the verdict.
//!
//! The guards: a global and a per-pipeline freeze (`retraind freeze`), a circuit breaker that
//! pauses a pipeline after N consecutive failed cycles, budgets of retrains and deploys per
//! rolling window, a cooldown after each deploy, and the monotonic-quality guard (a candidate
//! never scores below the best of the last K champions on the pipeline's fixed golden set),
//! and the watch: no new model is trained or deployed while the last deploy is still under
//! its post-deploy watch (its verdict comes first).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cycle::Outcome;

mod config;
pub use config::{GuardConfig, RawGuards};

/// Which guard blocked an action (the metric's `guard` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guard {
    Frozen,
    CircuitBreaker,
    RetrainBudget,
    DeployBudget,
    Cooldown,
    MonotonicQuality,
    Watching,
}

impl Guard {
    pub const ALL: [Guard; 7] = [
        Guard::Frozen,
        Guard::CircuitBreaker,
        Guard::RetrainBudget,
        Guard::DeployBudget,
        Guard::Cooldown,
        Guard::MonotonicQuality,
        Guard::Watching,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Guard::Frozen => "frozen",
            Guard::CircuitBreaker => "circuit_breaker",
            Guard::RetrainBudget => "retrain_budget",
            Guard::DeployBudget => "deploy_budget",
            Guard::Cooldown => "cooldown",
            Guard::MonotonicQuality => "monotonic_quality",
            Guard::Watching => "watching",
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A guard's refusal, with the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    pub guard: Guard,
    pub reason: String,
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blocked by guard {}: {}", self.guard, self.reason)
    }
}

/// At most `count` actions in any rolling `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub count: usize,
    pub window: Duration,
}

impl Budget {
    /// Parse `"3/7d"` (count / humantime window).
    pub fn parse(text: &str) -> Result<Budget, String> {
        let (count, window) = text.split_once('/').ok_or_else(|| {
            format!("`{text}` is not a budget; write COUNT/WINDOW such as \"1/24h\" or \"3/7d\"")
        })?;
        let count: usize = count.trim().parse().map_err(|_| {
            format!("`{count}` in `{text}` is not a whole number of actions (e.g. \"1/24h\")")
        })?;
        let window = humantime::parse_duration(window.trim())
            .map_err(|e| format!("`{window}` in `{text}` is not a duration ({e}); e.g. \"24h\""))?;
        if window.is_zero() || window > Duration::from_secs(366 * 86400) {
            return Err(format!(
                "window of `{text}` must be between 1s and 366 days"
            ));
        }
        Ok(Budget { count, window })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.window)
        )
    }
}

/// A freeze or pause on record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// What the guards need to know about a pipeline, read from the store.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// When each retrain of a live model started (first models excluded).
    pub retrains: Vec<DateTime<Utc>>,
    /// When each deploy (not rollback) happened.
    pub deploys: Vec<DateTime<Utc>>,
    /// Outcomes of the newest finished cycles, newest first.
    pub recent_outcomes: Vec<Outcome>,
    /// `retraind freeze` for all pipelines.
    pub global_freeze: Option<Hold>,
    /// `retraind freeze <pipeline>`, or an automatic rollback.
    pub freeze: Option<Hold>,
    /// The circuit breaker's pause.
    pub paused: Option<Hold>,
    /// The deploy still under its post-deploy watch: its version and the watch's end.
    pub watching: Option<(i64, DateTime<Utc>)>,
}

impl History {
    /// Frozen or paused: automation (retrain, deploy) stops until `retraind resume`.
    pub fn hold(&self) -> Option<Block> {
        if let Some(h) = &self.global_freeze {
            return Some(Block {
                guard: Guard::Frozen,
                reason: format!(
                    "all pipelines frozen by {} at {}: {} (run `retraind resume` to lift)",
                    h.by,
                    h.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    h.reason
                ),
            });
        }
        if let Some(h) = &self.freeze {
            return Some(Block {
                guard: Guard::Frozen,
                reason: format!(
                    "pipeline frozen by {} at {}: {} (run `retraind resume <pipeline>` to lift)",
                    h.by,
                    h.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    h.reason
                ),
            });
        }
        self.paused.as_ref().map(|h| Block {
            guard: Guard::CircuitBreaker,
            reason: format!(
                "pipeline paused by the circuit breaker at {}: {} (fix the cause, then run `retraind resume <pipeline>`)",
                h.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                h.reason
            ),
        })
    }
}

fn over_budget(
    times: &[DateTime<Utc>],
    budgets: &[Budget],
    now: DateTime<Utc>,
    what: &str,
) -> Option<String> {
    budgets.iter().find_map(|b| {
        let since = now - chrono::Duration::from_std(b.window).unwrap_or_default();
        let used = times.iter().filter(|t| **t > since && **t <= now).count();
        (used >= b.count).then(|| {
            format!(
                "{used} {what} in the last {} (budget {b})",
                humantime::format_duration(b.window)
            )
        })
    })
}

/// May the pipeline start a retrain now? First models (`has_champion == false`) are not
/// counted against the budget or the cooldown, but a freeze still stops them.
pub fn retrain_allowed(
    h: &History,
    has_champion: bool,
    now: DateTime<Utc>,
    cfg: &GuardConfig,
) -> Result<(), Block> {
    let first_model = !has_champion;
    allowed(h, now, cfg, first_model, Action::Retrain)
}

/// May the pipeline deploy a new version now?
pub fn deploy_allowed(h: &History, now: DateTime<Utc>, cfg: &GuardConfig) -> Result<(), Block> {
    allowed(h, now, cfg, false, Action::Deploy)
}

#[derive(Clone, Copy)]
enum Action {
    Retrain,
    Deploy,
}

/// The holds, then (unless the guards are off or the action is exempt) the action's budget,
/// then the cooldown after the last deploy.
fn allowed(
    h: &History,
    now: DateTime<Utc>,
    cfg: &GuardConfig,
    exempt: bool,
    action: Action,
) -> Result<(), Block> {
    if let Some(b) = h.hold() {
        return Err(b);
    }
    if !cfg.enabled || exempt {
        return Ok(());
    }
    let (times, budgets, what, guard) = match action {
        Action::Retrain => (
            &h.retrains,
            &cfg.max_retrains,
            "retrains",
            Guard::RetrainBudget,
        ),
        Action::Deploy => (&h.deploys, &cfg.max_deploys, "deploys", Guard::DeployBudget),
    };
    if let Some((version, until)) = h.watching
        && now < until
    {
        return Err(Block {
            guard: Guard::Watching,
            reason: format!(
                "v{version} is under its post-deploy watch until {}; nothing new is trained or deployed before its verdict",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        });
    }
    if let Some(reason) = over_budget(times, budgets, now, what) {
        return Err(Block { guard, reason });
    }
    if let Some(last) = h.deploys.iter().max() {
        let until = *last + chrono::Duration::from_std(cfg.cooldown).unwrap_or_default();
        if now < until {
            return Err(Block {
                guard: Guard::Cooldown,
                reason: format!(
                    "last deploy at {}; cooldown {} lasts until {}",
                    last.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    humantime::format_duration(cfg.cooldown),
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            });
        }
    }
    Ok(())
}

/// Should the circuit breaker pause the pipeline (after a cycle finished)?
pub fn breaker_trips(h: &History, cfg: &GuardConfig) -> Option<String> {
    let n = cfg.breaker_failures;
    if !cfg.enabled || n == 0 || h.paused.is_some() {
        return None;
    }
    let failed = h
        .recent_outcomes
        .iter()
        .take_while(|o| **o == Outcome::Failed)
        .count();
    (failed >= n).then(|| format!("{failed} consecutive failed cycles (breaker_failures = {n})"))
}

/// The monotonic-quality guard: `candidate`'s `metric` on the golden set against the scores
/// of the last K champions on the same set (worse = lower, or higher for an error metric).
pub fn monotonic_quality(
    metric: crate::performance::Metric,
    candidate: f64,
    past_champions: &[(i64, f64)],
    cfg: &GuardConfig,
) -> Result<(), Block> {
    if !cfg.enabled {
        return Ok(());
    }
    let Some((version, best)) = past_champions
        .iter()
        .take(cfg.monotonic_last)
        .copied()
        .min_by(|a, b| metric.worse_by(a.1, b.1).total_cmp(&0.0))
    else {
        return Ok(());
    };
    if metric.worse_by(candidate, best) > cfg.monotonic_tolerance {
        return Err(Block {
            guard: Guard::MonotonicQuality,
            reason: format!(
                "golden-set {} {candidate:.4} is worse than v{version}'s {best:.4}, the best of the last {} champions (tolerance {})",
                metric.name(),
                cfg.monotonic_last,
                cfg.monotonic_tolerance
            ),
        });
    }
    Ok(())
}

/// What the post-deploy watch does after `failure_limit` failed checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Roll back to `previous` at once, notify, freeze the pipeline.
    Rollback,
    /// Notify with the rollback command and freeze; a human decides.
    Ask,
}

/// What the post-deploy watch does after a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchAction {
    /// Keep watching.
    Continue,
    /// Roll back to `previous` now, and freeze.
    RollBack,
    /// Freeze and ask a human (policy `ask`, or nothing to roll back to).
    Ask,
}

/// The rollback policy: `failures` failed checks so far against `failure_limit`.
pub fn watch_action(
    failures: usize,
    failure_limit: usize,
    on_failure: OnFailure,
    has_previous: bool,
) -> WatchAction {
    if failures < failure_limit.max(1) {
        WatchAction::Continue
    } else if on_failure == OnFailure::Rollback && has_previous {
        WatchAction::RollBack
    } else {
        WatchAction::Ask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap()
    }

    #[test]
    fn budgets_parse_and_name_their_mistakes() {
        assert_eq!(
            Budget::parse("3/7d").unwrap(),
            Budget {
                count: 3,
                window: Duration::from_secs(7 * 86400)
            }
        );
        assert!(Budget::parse("3").unwrap_err().contains("COUNT/WINDOW"));
        assert!(Budget::parse("x/1d").unwrap_err().contains("`x`"));
        assert!(Budget::parse("1/soon").unwrap_err().contains("`soon`"));
        assert!(Budget::parse("1/0s").is_err());
    }

    #[test]
    fn retrain_budget_counts_a_rolling_window_and_first_models_are_free() {
        let cfg = GuardConfig {
            cooldown: Duration::ZERO,
            ..GuardConfig::default()
        };
        let mut h = History::default();
        assert!(retrain_allowed(&h, true, t(0), &cfg).is_ok());
        h.retrains.push(t(0));
        let b = retrain_allowed(&h, true, t(23), &cfg).unwrap_err();
        assert_eq!(b.guard, Guard::RetrainBudget);
        assert!(
            b.reason.contains("1 retrains in the last 1day"),
            "{}",
            b.reason
        );
        assert!(retrain_allowed(&h, true, t(25), &cfg).is_ok());
        assert!(retrain_allowed(&h, false, t(1), &cfg).is_ok());
        h.retrains.extend([t(25), t(50)]);
        let b = retrain_allowed(&h, true, t(80), &cfg).unwrap_err();
        assert!(b.reason.contains("budget 3/7days"), "{}", b.reason);
        assert!(retrain_allowed(&h, true, t(7 * 24 + 1), &cfg).is_ok());
    }

    #[test]
    fn cooldown_deploy_budget_and_freeze() {
        let cfg = GuardConfig::default();
        let mut h = History {
            deploys: vec![t(0)],
            ..History::default()
        };
        let b = deploy_allowed(&h, t(10), &cfg).unwrap_err();
        assert_eq!(b.guard, Guard::DeployBudget);
        let no_budget = GuardConfig {
            max_deploys: vec![],
            ..cfg.clone()
        };
        assert_eq!(
            deploy_allowed(&h, t(10), &no_budget).unwrap_err().guard,
            Guard::Cooldown
        );
        assert!(deploy_allowed(&h, t(25), &cfg).is_ok());
        h.freeze = Some(Hold {
            by: "alice".into(),
            reason: "incident 42".into(),
            at: t(1),
        });
        let b = deploy_allowed(&h, t(100), &cfg).unwrap_err();
        assert_eq!(b.guard, Guard::Frozen);
        assert!(b.reason.contains("alice") && b.reason.contains("incident 42"));
        // A freeze holds even with the guards disabled and for a first model.
        let off = GuardConfig {
            enabled: false,
            ..cfg
        };
        assert!(retrain_allowed(&h, false, t(100), &off).is_err());
    }

    #[test]
    fn breaker_trips_on_consecutive_failures_only() {
        let cfg = GuardConfig::default();
        let mut h = History {
            recent_outcomes: vec![Outcome::Failed, Outcome::Failed, Outcome::Deployed],
            ..History::default()
        };
        assert!(breaker_trips(&h, &cfg).is_none());
        h.recent_outcomes.insert(0, Outcome::Failed);
        assert!(breaker_trips(&h, &cfg).unwrap().contains("3 consecutive"));
        h.paused = Some(Hold {
            by: "breaker".into(),
            reason: "x".into(),
            at: t(0),
        });
        assert!(breaker_trips(&h, &cfg).is_none());
        assert_eq!(
            retrain_allowed(&h, true, t(0), &cfg).unwrap_err().guard,
            Guard::CircuitBreaker
        );
    }

    #[test]
    fn the_watch_rolls_back_at_the_limit_and_asks_without_a_previous_version() {
        assert_eq!(
            watch_action(1, 2, OnFailure::Rollback, true),
            WatchAction::Continue
        );
        assert_eq!(
            watch_action(2, 2, OnFailure::Rollback, true),
            WatchAction::RollBack
        );
        assert_eq!(
            watch_action(2, 2, OnFailure::Rollback, false),
            WatchAction::Ask
        );
        assert_eq!(watch_action(3, 2, OnFailure::Ask, true), WatchAction::Ask);
    }

    #[test]
    fn monotonic_quality_compares_with_the_best_recent_champion() {
        use crate::performance::Metric;
        let cfg = GuardConfig::default();
        let past = [(5, 0.90), (4, 0.95), (3, 0.93), (2, 0.99)];
        let acc = Metric::Accuracy;
        assert!(monotonic_quality(acc, 0.95, &past, &cfg).is_ok());
        let b = monotonic_quality(acc, 0.94, &past, &cfg).unwrap_err();
        assert!(b.reason.contains("v4's 0.9500"), "{}", b.reason);
        // v2 is older than the last 3 champions.
        assert!(monotonic_quality(acc, 0.96, &past, &cfg).is_ok());
        assert!(monotonic_quality(acc, 0.5, &[], &cfg).is_ok());
        // For an error the best is the lowest: v5's 0.90.
        let b = monotonic_quality(Metric::Rmse, 0.91, &past, &cfg).unwrap_err();
        assert!(
            b.reason.contains("rmse 0.9100 is worse than v5's 0.9000"),
            "{}",
            b.reason
        );
        assert!(monotonic_quality(Metric::Rmse, 0.90, &past, &cfg).is_ok());
    }
}
