//! The seven promises, checked after a run from records the engine cannot fake: the store's
//! cycles, transitions and approvals; the serving system's own log of what it put in place
//! ([`Served`]); the world's truth about each model; the operator's own actions. The
//! engine is held to the policy the user configured — every brake on — whatever brakes it
//! actually ran with, so a missing brake shows up as a broken promise.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};

use super::fakes::{Served, SimModel};
use super::run::Stats;
use super::world::{LABEL_LAG_DAYS, ROWS_PER_DAY, World};
use crate::approval::ApprovalDecision;
use crate::cycle::{CycleState, Outcome, TriggerKind};
use crate::guards::{Budget, GuardConfig};
use crate::store::{CycleRow, Store, StoreError, TransitionRow};

/// The watch the user configured (`deploy.watch_for`, `deploy.watch_interval`).
const WATCH_DAYS: i64 = 5;
const WATCH_INTERVAL_HOURS: i64 = 12;
/// How much worse than its predecessor (accuracy, on the days its watch sees) a model must
/// be for promise 1 to require it gone.
const WORSE_BY: f64 = 0.05;
/// The watch's rule as the user configured it (the defaults): a model is worse on the rows
/// its watch read when it is below 98 % of its predecessor's accuracy on them and a
/// one-sided paired test at 5 % says so. The checker computes this itself (a normal
/// approximation of McNemar's test), not through the engine's code.
const WATCH_RELATIVE: f64 = 0.98;
const WATCH_Z: f64 = 1.6449;
/// A scheduled check must start within this long of its fire time.
const TICK_SECONDS: i64 = 60;

/// A promise the engine makes its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Promise {
    /// (1) No model worse than its predecessor serves longer than the watch window plus one
    /// watch interval (plus a day for each day the upstream data wrote no window: nothing
    /// can judge a model on rows that do not exist), unless the rows its watch read did not
    /// show it worse (a sampling miss, counted in the run's stats).
    NoWorseModelServes,
    /// (2) Retrains and deploys stay within every budget window and the cooldown.
    WithinBudgets,
    /// (3) Every deploy has an approval on record from an approver allowed at the time,
    /// recorded before the deploy, and no rejection.
    ApprovedFirst,
    /// (4) Every cycle ends exactly once.
    EndsOnce,
    /// (5) Nothing deploys while the pipeline is frozen (by the operator or after a
    /// rollback) or paused by the breaker, until the operator resumes it.
    NothingWhileHeld,
    /// (6) Every scheduled check starts within a minute of its fire time.
    ChecksOnTime,
    /// (7) No model goes into serving that is worse on the world's usual traffic (outside
    /// drift episodes) than the best of the three models that served before it: automation
    /// never deploys progressively worse models.
    NeverProgressivelyWorse,
}

impl Promise {
    pub const ALL: [Promise; 7] = [
        Promise::NoWorseModelServes,
        Promise::WithinBudgets,
        Promise::ApprovedFirst,
        Promise::EndsOnce,
        Promise::NothingWhileHeld,
        Promise::ChecksOnTime,
        Promise::NeverProgressivelyWorse,
    ];

    pub fn number(self) -> usize {
        self as usize + 1
    }

    pub fn name(self) -> &'static str {
        match self {
            Promise::NoWorseModelServes => "no worse model serves past its watch",
            Promise::WithinBudgets => "within budgets and cooldown",
            Promise::ApprovedFirst => "approved before deploy",
            Promise::EndsOnce => "every cycle ends once",
            Promise::NothingWhileHeld => "nothing deploys while held",
            Promise::ChecksOnTime => "checks on time",
            Promise::NeverProgressivelyWorse => "never progressively worse",
        }
    }
}

impl fmt::Display for Promise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {}", self.number(), self.name())
    }
}

/// A broken promise: which, when, and the records that show it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub promise: Promise,
    pub at: DateTime<Utc>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "promise {} broken at {}: {}",
            self.promise,
            self.at.format("%Y-%m-%d %H:%M"),
            self.detail
        )
    }
}

/// What the simulator itself saw and did.
#[derive(Debug, Clone)]
pub struct Facts {
    pub end: DateTime<Utc>,
    /// The serving system's log.
    pub served: Vec<Served>,
    /// When the operator froze the pipeline.
    pub freezes: Vec<DateTime<Utc>>,
    /// When the operator resumed it.
    pub resumes: Vec<DateTime<Utc>>,
    /// The approvers in force from each instant on.
    pub approvers: Vec<(DateTime<Utc>, Vec<String>)>,
    pub crashes: usize,
    /// The days the upstream data never wrote a window (an outage).
    pub no_window: BTreeSet<i64>,
}

impl Facts {
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>, approvers: Vec<String>) -> Facts {
        Facts {
            end,
            served: Vec::new(),
            freezes: Vec::new(),
            resumes: Vec::new(),
            approvers: vec![(start, approvers)],
            no_window: BTreeSet::new(),
            crashes: 0,
        }
    }

    fn approvers_at(&self, at: DateTime<Utc>) -> &[String] {
        self.approvers
            .iter()
            .rev()
            .find(|(from, _)| *from <= at)
            .map(|(_, a)| a.as_slice())
            .unwrap_or(&[])
    }

    fn next_resume(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        self.resumes
            .iter()
            .copied()
            .filter(|r| *r > after)
            .min()
            .unwrap_or(self.end)
    }
}

/// One change of what serves: a new version, or one that served before (a rollback).
#[derive(Debug, Clone)]
struct Change {
    at: DateTime<Utc>,
    version: i64,
    version_id: i64,
    rollback: bool,
}

/// The serving log with repeated calls for the version already in place removed (a deploy
/// retried after a crash puts the same version in place twice).
fn changes(served: &[Served]) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for s in served {
        if out.last().is_some_and(|c| c.version_id == s.version_id) {
            continue;
        }
        let rollback = out.iter().any(|c| c.version_id == s.version_id);
        out.push(Change {
            at: s.at,
            version: s.version,
            version_id: s.version_id,
            rollback,
        });
    }
    out
}

/// The records a check reads.
struct Records {
    cycles: Vec<CycleRow>,
    transitions: HashMap<i64, Vec<TransitionRow>>,
    models: HashMap<i64, (i64, SimModel)>,
    changes: Vec<Change>,
}

pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

/// Check every promise.
pub async fn check(store: &Store, facts: &Facts, world: &World) -> Result<Report, StoreError> {
    let mut cycles = store.cycles(Some("p"), i64::MAX).await?;
    cycles.reverse();
    let mut transitions = HashMap::new();
    for c in &cycles {
        transitions.insert(c.id, store.transitions(c.id).await?);
    }
    let mut models = HashMap::new();
    for v in store.versions("p").await? {
        if let Ok(m) = SimModel::read(std::path::Path::new(&v.path)) {
            models.insert(v.id, (v.cycle_id, m));
        }
    }
    let r = Records {
        cycles,
        transitions,
        models,
        changes: changes(&facts.served),
    };
    let (mut violations, hidden) = no_worse_model(&r, facts, world);
    violations.extend(within_budgets(&r));
    violations.extend(approved_first(store, &r, facts).await?);
    violations.extend(ends_once(&r));
    violations.extend(nothing_while_held(&r, facts));
    violations.extend(checks_on_time(&r, facts, world));
    violations.extend(never_progressively_worse(&r, world));
    violations.sort_by_key(|v| (v.at, v.promise));
    let deploys: Vec<&Change> = r.changes.iter().filter(|c| !c.rollback).collect();
    let stats = Stats {
        cycles: r.cycles.len(),
        deploys: deploys.len(),
        rollbacks: r.changes.len() - deploys.len(),
        crashes: facts.crashes,
        flawed_deployed: deploys
            .iter()
            .filter(|c| {
                r.models
                    .get(&c.version_id)
                    .is_some_and(|(_, m)| m.flip > 0.0)
            })
            .count(),
        hidden,
    };
    Ok(Report { violations, stats })
}

/// (1): each new version against the one it replaced, on the days whose labels its watch
/// reads (from `LABEL_LAG_DAYS - 1` days before the deploy to the watch's end, minus the lag).
///
/// A significance test cannot see a gap its rows do not show: a model worse in the world
/// whose watch read rows on which it was *not* worse by the user's rule (see
/// [`shown_worse`]) is counted as hidden by sampling (the second value), not as a broken
/// promise. The summary prints how often that happened.
fn no_worse_model(r: &Records, facts: &Facts, world: &World) -> (Vec<Violation>, usize) {
    let watch = chrono::Duration::days(WATCH_DAYS) + chrono::Duration::hours(WATCH_INTERVAL_HOURS);
    let (mut out, mut hidden) = (Vec::new(), 0);
    for (i, c) in r.changes.iter().enumerate() {
        if c.rollback || i == 0 {
            continue;
        }
        let prev = &r.changes[i - 1];
        let (Some((_, v)), Some((_, u))) =
            (r.models.get(&c.version_id), r.models.get(&prev.version_id))
        else {
            continue;
        };
        let d0 = world.day_of(c.at);
        let days: Vec<i64> = (d0 - LABEL_LAG_DAYS + 1..=d0 + WATCH_DAYS - LABEL_LAG_DAYS)
            .filter(|d| *d < world.days)
            .collect();
        if days.is_empty() {
            continue;
        }
        let (mut acc_v, mut acc_u) = (0.0, 0.0);
        for d in &days {
            acc_v += world.accuracy(v, *d);
            acc_u += world.accuracy(u, *d);
        }
        let n = days.len() as f64;
        let (acc_v, acc_u) = (acc_v / n, acc_u / n);
        if acc_u - acc_v <= WORSE_BY {
            continue;
        }
        let until = r.changes.get(i + 1).map(|n| n.at).unwrap_or(facts.end);
        let limit = blind_extended(
            c.at + watch + chrono::Duration::seconds(TICK_SECONDS),
            d0,
            facts,
            world,
        );
        if until <= limit {
            continue;
        }
        if !shown_worse(v, u, &days, facts, world) {
            hidden += 1;
            continue;
        }
        out.push(Violation {
            promise: Promise::NoWorseModelServes,
            at: limit,
            detail: format!(
                "v{} (accuracy {acc_v:.3}{}) replaced v{} ({acc_u:.3}) at {} and served until {}",
                c.version,
                if v.flip > 0.0 { ", flawed" } else { "" },
                prev.version,
                c.at.format("%Y-%m-%d %H:%M"),
                if until >= facts.end {
                    "the end".to_string()
                } else {
                    until.format("%Y-%m-%d %H:%M").to_string()
                }
            ),
        });
    }
    (out, hidden)
}

/// Whether the labelled rows of `days` that reached the pipeline (the days whose window the
/// upstream data wrote) show `new` worse than `old` by the watch's rule: accuracy below
/// [`WATCH_RELATIVE`] of the old model's on the same rows, and the discordant rows tilted
/// the old model's way by at least [`WATCH_Z`] standard errors.
fn shown_worse(new: &SimModel, old: &SimModel, days: &[i64], facts: &Facts, world: &World) -> bool {
    let (mut rows, mut new_right, mut old_right, mut only_old, mut only_new) = (0, 0, 0, 0, 0);
    for d in days {
        if facts.no_window.contains(&(d + LABEL_LAG_DAYS)) {
            continue;
        }
        for row in world.rows(*d, ROWS_PER_DAY, 1) {
            let n = new.predict(row.ts_ms, row.x1, row.x2).0 == row.y;
            let o = old.predict(row.ts_ms, row.x1, row.x2).0 == row.y;
            rows += 1;
            new_right += usize::from(n);
            old_right += usize::from(o);
            only_old += usize::from(o && !n);
            only_new += usize::from(n && !o);
        }
    }
    let discordant = (only_old + only_new) as f64;
    rows > 0
        && (new_right as f64) < WATCH_RELATIVE * old_right as f64
        && discordant > 0.0
        && (only_old as f64 - only_new as f64) / discordant.sqrt() >= WATCH_Z
}

/// `limit` pushed back a day for every day from `d0` on whose window the upstream data
/// never wrote: a watch cannot judge a model on rows that do not exist, and the engine
/// extends it (`watch_extended`) until it has seen a window a day.
fn blind_extended(limit: DateTime<Utc>, d0: i64, facts: &Facts, world: &World) -> DateTime<Utc> {
    let mut extended = limit;
    loop {
        let blind = facts.no_window.range(d0..=world.day_of(extended)).count() as i64;
        let next = limit + chrono::Duration::days(blind);
        if next == extended {
            return extended;
        }
        extended = next;
    }
}

/// (7): each new version against the best of the three versions that served before it,
/// on the world's usual traffic.
fn never_progressively_worse(r: &Records, world: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut accuracy: HashMap<i64, f64> = HashMap::new();
    let mut usual = |id: i64| -> Option<f64> {
        if let Some(a) = accuracy.get(&id) {
            return Some(*a);
        }
        let (_, m) = r.models.get(&id)?;
        let a = world.usual_accuracy(m);
        accuracy.insert(id, a);
        Some(a)
    };
    for (i, c) in r.changes.iter().enumerate() {
        if c.rollback {
            continue;
        }
        let mut before: Vec<&Change> = Vec::new();
        for p in r.changes[..i].iter().rev() {
            if before.len() == 3 {
                break;
            }
            if p.version_id != c.version_id && !before.iter().any(|b| b.version_id == p.version_id)
            {
                before.push(p);
            }
        }
        let Some(acc) = usual(c.version_id) else {
            continue;
        };
        let best = before
            .iter()
            .filter_map(|p| usual(p.version_id).map(|a| (p.version, a)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((version, best)) = best
            && best - acc > WORSE_BY
        {
            out.push(Violation {
                promise: Promise::NeverProgressivelyWorse,
                at: c.at,
                detail: format!(
                    "v{} (accuracy {acc:.3} on the usual traffic) went into serving; v{version} before it had {best:.3}",
                    c.version
                ),
            });
        }
    }
    out
}

/// (2): the user's budgets (the defaults) over every rolling window, and the cooldown.
fn within_budgets(r: &Records) -> Vec<Violation> {
    let cfg = GuardConfig::default();
    let Some(first) = r.changes.first().map(|c| c.at) else {
        return Vec::new();
    };
    // Retrains of a live model: transitions into `training` once something served.
    let mut retrains: Vec<DateTime<Utc>> = r
        .transitions
        .values()
        .flatten()
        .filter(|t| t.to == CycleState::Training && t.at >= first)
        .map(|t| t.at)
        .collect();
    retrains.sort();
    let deploys: Vec<DateTime<Utc>> = r
        .changes
        .iter()
        .filter(|c| !c.rollback)
        .skip(1)
        .map(|c| c.at)
        .collect();
    let mut out = over(&retrains, &cfg.max_retrains, "retrains");
    out.extend(over(&deploys, &cfg.max_deploys, "deploys"));
    let all_deploys: Vec<DateTime<Utc>> = r
        .changes
        .iter()
        .filter(|c| !c.rollback)
        .map(|c| c.at)
        .collect();
    let cooldown = chrono::Duration::from_std(cfg.cooldown).unwrap_or_default();
    for (what, times) in [
        ("deploy", &all_deploys[1.min(all_deploys.len())..]),
        ("retrain", &retrains[..]),
    ] {
        for t in times {
            if let Some(last) = all_deploys.iter().filter(|d| *d < t).max()
                && *t - *last < cooldown
            {
                out.push(Violation {
                    promise: Promise::WithinBudgets,
                    at: *t,
                    detail: format!(
                        "{what} {} after the deploy at {} (cooldown {})",
                        humantime::format_duration((*t - *last).to_std().unwrap_or_default()),
                        last.format("%Y-%m-%d %H:%M"),
                        humantime::format_duration(cfg.cooldown)
                    ),
                });
            }
        }
    }
    out
}

fn over(times: &[DateTime<Utc>], budgets: &[Budget], what: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    for b in budgets {
        let window = chrono::Duration::from_std(b.window).unwrap_or_default();
        for t in times {
            let used = times
                .iter()
                .filter(|s| **s > *t - window && *s <= t)
                .count();
            if used > b.count {
                out.push(Violation {
                    promise: Promise::WithinBudgets,
                    at: *t,
                    detail: format!(
                        "{used} {what} in the {} before (budget {b})",
                        humantime::format_duration(b.window)
                    ),
                });
            }
        }
    }
    out
}

/// (3): an approval by someone allowed when they clicked, before the deploy, and no
/// rejection before it.
async fn approved_first(
    store: &Store,
    r: &Records,
    facts: &Facts,
) -> Result<Vec<Violation>, StoreError> {
    let mut out = Vec::new();
    for c in r.changes.iter().filter(|c| !c.rollback) {
        let Some((cycle, _)) = r.models.get(&c.version_id) else {
            continue;
        };
        let approvals = store.approvals(*cycle).await?;
        let approved = approvals.iter().any(|a| {
            a.decision == ApprovalDecision::Approve
                && a.at <= c.at
                && facts.approvers_at(a.at).contains(&a.approver)
        });
        let rejected = approvals
            .iter()
            .any(|a| a.decision == ApprovalDecision::Reject && a.at <= c.at);
        if !approved || rejected {
            let seen: Vec<String> = approvals
                .iter()
                .map(|a| {
                    format!(
                        "{:?} by {} at {}",
                        a.decision,
                        a.approver,
                        a.at.format("%Y-%m-%d %H:%M")
                    )
                })
                .collect();
            out.push(Violation {
                promise: Promise::ApprovedFirst,
                at: c.at,
                detail: format!(
                    "v{} (cycle {cycle}) went into serving with approvals [{}]",
                    c.version,
                    seen.join("; ")
                ),
            });
        }
    }
    Ok(out)
}

/// (4): one terminal transition per ended cycle, the last one; none for a cycle in flight.
fn ends_once(r: &Records) -> Vec<Violation> {
    let mut out = Vec::new();
    for c in &r.cycles {
        let ts = r.transitions.get(&c.id).map(Vec::as_slice).unwrap_or(&[]);
        let ends: Vec<usize> = ts
            .iter()
            .enumerate()
            .filter(|(_, t)| t.to.is_terminal())
            .map(|(i, _)| i)
            .collect();
        let fine = if c.state.is_terminal() {
            ends.len() == 1 && ends[0] + 1 == ts.len() && c.outcome.is_some()
        } else {
            ends.is_empty()
        };
        if !fine {
            let path: Vec<String> = ts.iter().map(|t| t.to.to_string()).collect();
            out.push(Violation {
                promise: Promise::EndsOnce,
                at: c.created_at,
                detail: format!(
                    "cycle {} is {} after [{}]",
                    c.id,
                    c.state,
                    path.join(" -> ")
                ),
            });
        }
    }
    out
}

/// (5): the holds the user's policy puts on the pipeline — the operator's freezes, the
/// freeze after a rollback, the breaker's pause after three failed cycles in a row — each
/// until the operator resumes; no new version goes into serving inside one.
fn nothing_while_held(r: &Records, facts: &Facts) -> Vec<Violation> {
    let mut holds: Vec<(DateTime<Utc>, DateTime<Utc>, String)> = Vec::new();
    for f in &facts.freezes {
        holds.push((*f, facts.next_resume(*f), "frozen by the operator".into()));
    }
    for c in r.changes.iter().filter(|c| c.rollback) {
        holds.push((
            c.at,
            facts.next_resume(c.at),
            format!("frozen after the rollback to v{}", c.version),
        ));
    }
    holds.extend(breaker_pauses(r, facts));
    let mut out = Vec::new();
    for c in r.changes.iter().filter(|c| !c.rollback) {
        if let Some((from, _, why)) = holds
            .iter()
            .find(|(from, to, _)| *from < c.at && c.at < *to)
        {
            out.push(Violation {
                promise: Promise::NothingWhileHeld,
                at: c.at,
                detail: format!(
                    "v{} went into serving while {why} (since {})",
                    c.version,
                    from.format("%Y-%m-%d %H:%M")
                ),
            });
        }
    }
    out
}

/// When the breaker (three failed cycles in a row, newest first by id) should have paused
/// the pipeline, until the next resume.
fn breaker_pauses(r: &Records, facts: &Facts) -> Vec<(DateTime<Utc>, DateTime<Utc>, String)> {
    let limit = GuardConfig::default().breaker_failures;
    let mut finished: Vec<&CycleRow> = r
        .cycles
        .iter()
        .filter(|c| c.finished_at.is_some())
        .collect();
    finished.sort_by_key(|c| (c.finished_at, c.id));
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>, String)> = Vec::new();
    for (i, c) in finished.iter().enumerate() {
        let Some(at) = c.finished_at else { continue };
        if c.outcome != Some(Outcome::Failed) || out.last().is_some_and(|(_, to, _)| at < *to) {
            continue;
        }
        let mut done: Vec<&&CycleRow> = finished[..=i].iter().collect();
        done.sort_by_key(|c| std::cmp::Reverse(c.id));
        let run = done
            .iter()
            .take_while(|c| c.outcome == Some(Outcome::Failed))
            .count();
        if run >= limit {
            out.push((
                at,
                facts.next_resume(at),
                format!("paused by the breaker ({run} failed cycles)"),
            ));
        }
    }
    out
}

/// (6): a scheduled (or caught-up) cycle within a minute of every 06:00.
fn checks_on_time(r: &Records, facts: &Facts, world: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    for day in 0..world.days {
        let fire = world.day_start(day) + chrono::Duration::hours(6);
        if fire >= facts.end {
            break;
        }
        let ran = r.cycles.iter().any(|c| {
            matches!(c.trigger, TriggerKind::Scheduled | TriggerKind::CatchUp)
                && c.created_at >= fire
                && c.created_at <= fire + chrono::Duration::seconds(TICK_SECONDS)
        });
        if !ran {
            let busy: Vec<String> = r
                .cycles
                .iter()
                .filter(|c| c.created_at < fire && c.finished_at.is_none_or(|f| f > fire))
                .map(|c| format!("cycle {} ({})", c.id, c.state))
                .collect();
            out.push(Violation {
                promise: Promise::ChecksOnTime,
                at: fire,
                detail: format!(
                    "no check started for the 06:00 run; in flight: [{}]",
                    busy.join(", ")
                ),
            });
        }
    }
    out
}

/// The run in order: the world's acts, the serving log and every transition.
pub async fn timeline(
    store: &Store,
    log: &[(DateTime<Utc>, String)],
    facts: &Facts,
) -> Result<String, StoreError> {
    let mut lines: Vec<(DateTime<Utc>, u8, String)> = log
        .iter()
        .map(|(t, s)| (*t, 0, format!("world   {s}")))
        .collect();
    for s in &facts.served {
        lines.push((s.at, 1, format!("serving v{} put in place", s.version)));
    }
    for c in store.cycles(Some("p"), i64::MAX).await? {
        for e in store.events(c.id).await? {
            lines.push((
                e.at,
                3,
                format!("cycle {:>3} event {}: {}", c.id, e.kind.as_str(), e.message),
            ));
        }
        for t in store.transitions(c.id).await? {
            let from = t.from.map(|f| f.to_string()).unwrap_or_else(|| "-".into());
            lines.push((
                t.at,
                2,
                format!("cycle {:>3} {from} -> {}: {}", c.id, t.to, t.reason),
            ));
        }
    }
    lines.sort_by_key(|a| (a.0, a.1));
    Ok(lines
        .into_iter()
        .map(|(t, _, s)| format!("{}  {s}\n", t.format("%Y-%m-%d %H:%M:%S")))
        .collect())
}
