//! The runaway simulation: 180 days of one pipeline on a simulated clock, driven by the same
//! policy functions the engine uses — the decision rule on the live metric
//! ([`performance::assess_live`]), the evaluation gate ([`gate::evaluate`]), the runaway guards
//! ([`guards::retrain_allowed`], [`guards::deploy_allowed`], [`guards::breaker_trips`]) and the
//! rollback policy ([`guards::watch_action`]) — against a world built to fool them: drift
//! episodes, labels that arrive days late, a trainer that produces a worse model one time in
//! four (which looks fine on its holdout), an approver who approves everything, and a live
//! metric that shows the truth only after the labels arrive.
//!
//! It checks the three promises of the guardrails: no model worse than its predecessor
//! serves past its watch window, retrains and deploys stay within budget, every deploy has an
//! approval on record. With the brakes off the same world breaks them, so the test can fail.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};

use crate::cycle::Outcome;
use crate::deploy::DeployConfig;
use crate::gate::GateConfig;
use crate::gate::{self, GateInput};
use crate::guards::OnFailure;
use crate::guards::{self, Budget, GuardConfig, History, Hold, WatchAction};
use crate::performance::{self, Baseline, Metric, Rule};

/// The brakes under test.
#[derive(Debug, Clone)]
pub struct Brakes {
    pub guards: GuardConfig,
    /// Days to watch a deploy (0 = no watch) and the failed checks that roll back.
    pub watch_days: u32,
    pub failure_limit: usize,
}

impl Brakes {
    /// The defaults a user gets, with a 5-day watch (labels arrive 3 days late).
    pub fn on() -> Brakes {
        Brakes {
            guards: GuardConfig::default(),
            watch_days: 5,
            failure_limit: DeployConfig::default().failure_limit,
        }
    }

    /// Guards disabled, no watch: the naive loop with a gate and a rubber-stamp approver.
    pub fn off() -> Brakes {
        Brakes {
            guards: GuardConfig {
                enabled: false,
                ..GuardConfig::default()
            },
            watch_days: 0,
            failure_limit: DeployConfig::default().failure_limit,
        }
    }
}

/// A trained model: how good it really is in the world it was trained for, and what its
/// holdout said.
#[derive(Debug, Clone, Copy)]
struct Model {
    version: i64,
    episode: usize,
    /// Accuracy in its own episode's world.
    quality: f64,
    /// Accuracy on its (possibly misleading) holdout.
    holdout: f64,
}

/// The world: concept episodes; a model from another episode is 0.2 worse.
fn true_accuracy(m: &Model, episode: usize) -> f64 {
    if m.episode == episode {
        m.quality
    } else {
        m.quality - 0.2
    }
}

/// What the simulation found.
#[derive(Debug, Default)]
pub struct Report {
    pub timeline: Vec<String>,
    pub violations: Vec<String>,
    pub retrains: usize,
    pub deploys: usize,
    pub rollbacks: usize,
    pub bad_deploys: usize,
}

impl Report {
    pub fn render(&self) -> String {
        let mut out = self.timeline.join("\n");
        let _ = write!(out, "\nviolations:\n  {}", self.violations.join("\n  "));
        out
    }
}

const DAYS: u32 = 180;
const LABEL_DELAY: u32 = 3;

fn day(d: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + i64::from(d) * 86_400, 0).unwrap_or_default()
}

/// Run the 180 days.
pub fn simulate(seed: u64, brakes: &Brakes) -> Report {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Drift episodes start every 10-25 days.
    let mut starts = vec![0u32];
    while *starts.last().unwrap_or(&0) < DAYS {
        let last = *starts.last().unwrap_or(&0);
        starts.push(last + rng.random_range(10..25));
    }
    let episode_of = |d: u32| starts.iter().rposition(|s| *s <= d).unwrap_or(0);
    // The daily check's defaults (a proportion: the z-test, no bootstrap).
    let rule = Rule {
        bootstrap_resamples: 0,
        ..Rule::defaults(Metric::Accuracy)
    };
    // The watch holds a new champion to its predecessor at the default
    // `deploy.watch_relative_threshold`.
    let watch_rule = Rule {
        relative_threshold: DeployConfig::default().watch_relative_threshold,
        ..rule.clone()
    };
    let gate_cfg = GateConfig::default();
    let mut report = Report::default();
    let mut history = History::default();
    let mut champion: Option<Model> = None;
    let mut previous: Option<Model> = None;
    let mut models: Vec<Model> = Vec::new();
    // (deploy day, model, predecessor) and (day, version) approval records.
    let mut deploys: Vec<(u32, Model, Option<Model>)> = Vec::new();
    let mut approvals: Vec<(u32, i64)> = Vec::new();
    // The champion of each day, to check who served when.
    let mut served: Vec<Option<i64>> = Vec::new();
    // A watch in progress: (model, deploy day, failed checks).
    let mut watch: Option<(Model, u32, usize)> = None;
    let mut frozen_on: Option<u32> = None;
    let freeze = |history: &mut History, at, reason: &str| {
        history.freeze = Some(Hold {
            by: "watch".into(),
            reason: reason.into(),
            at,
        });
    };

    for d in 0..DAYS {
        let now = day(d);
        let world = episode_of(d);
        let mut line = format!("day {d:>3} ep {world}");
        // The on-call looks and resumes a frozen pipeline the day after.
        if frozen_on.is_some_and(|f| d > f) {
            history.freeze = None;
            frozen_on = None;
            line.push_str(" | resumed by on-call");
        }
        if let Some((m, since, failures)) = watch {
            // The watch holds the pipeline's cycle: a live check, no new cycle.
            if d >= since + brakes.watch_days {
                line.push_str(&format!(" | watch of v{} ends", m.version));
                watch = None;
                history.recent_outcomes.insert(0, Outcome::Deployed);
            } else {
                // Labels of the days it served arrive LABEL_DELAY days late.
                let live = (d >= since + LABEL_DELAY)
                    .then(|| true_accuracy(&m, episode_of(d - LABEL_DELAY)));
                let baseline = Some(Baseline {
                    value: previous.unwrap_or(m).holdout,
                    n: None,
                });
                let failed = live
                    .is_some_and(|v| performance::assess_live(&watch_rule, v, baseline).degraded());
                let failures = failures + usize::from(failed);
                line.push_str(&format!(
                    " | watch v{}: live {}",
                    m.version,
                    live.map(|v| format!("{v:.3}"))
                        .unwrap_or_else(|| "unknown".into())
                ));
                match guards::watch_action(
                    failures,
                    brakes.failure_limit,
                    OnFailure::Rollback,
                    previous.is_some(),
                ) {
                    WatchAction::Continue => watch = Some((m, since, failures)),
                    WatchAction::RollBack => {
                        champion = previous.take();
                        report.rollbacks += 1;
                        freeze(&mut history, now, "live metric failed");
                        frozen_on = Some(d);
                        watch = None;
                        history.recent_outcomes.insert(0, Outcome::RolledBack);
                        line.push_str(&format!(
                            " -> ROLLBACK to v{}",
                            champion.map(|c| c.version).unwrap_or(0)
                        ));
                    }
                    WatchAction::Ask => {
                        // Nothing to roll back to: freeze, tell people, keep watching.
                        if history.freeze.is_none() {
                            freeze(&mut history, now, "live metric failed, no previous version");
                            frozen_on = Some(d);
                            line.push_str(" -> frozen, asking a human");
                        }
                        watch = Some((m, since, failures));
                    }
                }
            }
            served.push(champion.map(|c| c.version));
            report.timeline.push(line);
            continue;
        }
        // The daily check: drift is visible at once; accuracy only on the labels that arrive
        // today, of the model that served LABEL_DELAY days ago.
        let drifted = champion.is_some_and(|c| c.episode != world);
        let observed = d
            .checked_sub(LABEL_DELAY)
            .and_then(|old| Some((old, served.get(old as usize).copied().flatten()?)))
            .and_then(|(old, v)| {
                let m = models.iter().find(|m| m.version == v)?;
                Some(true_accuracy(m, episode_of(old)))
            });
        let degraded = match (champion, observed) {
            (Some(c), Some(v)) => {
                let base = Baseline {
                    value: c.holdout,
                    n: None,
                };
                performance::assess_live(&rule, v, Some(base)).degraded()
            }
            _ => false,
        };
        let retrain = champion.is_none() || drifted || degraded;
        if !retrain {
            line.push_str(" | healthy");
            history.recent_outcomes.insert(0, Outcome::NoRetrain);
            served.push(champion.map(|c| c.version));
            report.timeline.push(line);
            continue;
        }
        if let Err(b) = guards::retrain_allowed(&history, champion.is_some(), now, &brakes.guards) {
            line.push_str(&format!(" | retrain blocked: {}", b.guard));
            history.recent_outcomes.insert(0, Outcome::Blocked);
            served.push(champion.map(|c| c.version));
            report.timeline.push(line);
            continue;
        }
        if champion.is_some() {
            history.retrains.push(now);
            report.retrains += 1;
        }
        // The trainer: one time in four a subtly worse model (above the daily check's
        // threshold, below the watch's) that looks fine on its holdout.
        let bad = rng.random_bool(0.25);
        let quality = if bad { 0.91 } else { 0.95 } + rng.random_range(-0.005..0.005);
        let candidate = Model {
            version: models.len() as i64 + 1,
            episode: world,
            quality,
            holdout: 0.95 + rng.random_range(-0.01..0.01),
        };
        models.push(candidate);
        // The gate scores both on the same fresh holdout: the champion as today's world
        // sees it, the challenger as its (fooled) holdout says.
        let champ_holdout =
            champion.map(|c| true_accuracy(&c, world) + rng.random_range(-0.01..0.01));
        let verdict = gate::evaluate(
            &GateInput {
                challenger: candidate.holdout,
                champion: champ_holdout,
                holdout_rows: 1000,
                ..GateInput::default()
            },
            &gate_cfg,
        );
        let why = if champion.is_none() {
            "first"
        } else if drifted {
            "drift"
        } else {
            "degraded"
        };
        line.push_str(&format!(
            " | {why}: v{} (true {:.3}{}) gate {}",
            candidate.version,
            candidate.quality,
            if bad { ", BAD" } else { "" },
            if verdict.blessed {
                "blessed"
            } else {
                "rejected"
            }
        ));
        if !verdict.blessed {
            history.recent_outcomes.insert(0, Outcome::Rejected);
            served.push(champion.map(|c| c.version));
            report.timeline.push(line);
            continue;
        }
        // The approver approves everything; the deploy guards are asked after approval.
        approvals.push((d, candidate.version));
        if let Err(b) = guards::deploy_allowed(&history, now, &brakes.guards) {
            line.push_str(&format!(", approved, deploy blocked: {}", b.guard));
            history.recent_outcomes.insert(0, Outcome::Rejected);
            served.push(champion.map(|c| c.version));
            report.timeline.push(line);
            continue;
        }
        deploys.push((d, candidate, champion));
        history.deploys.push(now);
        report.deploys += 1;
        report.bad_deploys += usize::from(bad);
        previous = champion;
        champion = Some(candidate);
        line.push_str(&format!(", approved, DEPLOYED v{}", candidate.version));
        if brakes.watch_days > 0 {
            watch = Some((candidate, d, 0));
        } else {
            history.recent_outcomes.insert(0, Outcome::Deployed);
        }
        served.push(champion.map(|c| c.version));
        report.timeline.push(line);
    }

    // Promise 1: a model worse than its predecessor (each in the world it was trained for:
    // "progressively worse models") is gone by the end of the brakes-on watch window.
    let window = Brakes::on().watch_days;
    for (d, m, pred) in &deploys {
        let worse = pred.is_some_and(|p| m.quality < p.quality - 0.01);
        let check_day = (*d + window) as usize;
        if worse && served.get(check_day).copied().flatten() == Some(m.version) {
            report.violations.push(format!(
                "v{} (true {:.3}) deployed on day {d} is worse than its predecessor and still serves on day {check_day}",
                m.version, m.quality
            ));
        }
    }
    // Promise 2: the default budgets (first models excluded, as the guard does).
    let defaults = GuardConfig::default();
    let breaches = |times: &[DateTime<Utc>], budgets: &[Budget], what: &str| -> Vec<String> {
        let mut out = Vec::new();
        for t in times {
            for b in budgets {
                let since = *t - chrono::Duration::from_std(b.window).unwrap_or_default();
                let n = times.iter().filter(|x| **x > since && *x <= t).count();
                if n > b.count {
                    out.push(format!(
                        "{n} {what} in the {} up to {t} (budget {b})",
                        humantime::format_duration(b.window)
                    ));
                }
            }
        }
        out
    };
    report.violations.extend(breaches(
        &history.retrains,
        &defaults.max_retrains,
        "retrains",
    ));
    report
        .violations
        .extend(breaches(&history.deploys, &defaults.max_deploys, "deploys"));
    // Promise 3: every deploy has an approval on record.
    for (d, m, _) in &deploys {
        if !approvals.iter().any(|(ad, v)| ad == d && *v == m.version) {
            report.violations.push(format!(
                "v{} deployed on day {d} without an approval",
                m.version
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_the_brakes_on_no_runaway_in_180_days() {
        for seed in 0..20 {
            let r = simulate(seed, &Brakes::on());
            assert!(r.violations.is_empty(), "seed {seed}:\n{}", r.render());
            // The world did test the brakes: bad models got through the gate and were
            // rolled back.
            if seed == 0 {
                assert!(r.bad_deploys > 0 && r.rollbacks > 0, "{}", r.render());
            }
        }
    }

    #[test]
    fn with_the_brakes_off_the_same_world_runs_away() {
        let mut failing = 0;
        for seed in 0..20 {
            let r = simulate(seed, &Brakes::off());
            if !r.violations.is_empty() {
                failing += 1;
            }
        }
        // The seeds where no subtly bad model followed a good one are the lucky ones.
        assert!(
            failing >= 15,
            "only {failing}/20 seeds broke a promise without brakes"
        );
    }
}
