//! What the state directory keeps, so the disk never fills: `[daemon.retention]` and the
//! rule that picks what may go. A model version is kept while anything may still need its
//! files — the champion, `previous`, a cycle's candidate in flight, the version of an open
//! move — and so are the newest `keep_versions` of each pipeline; every other version's
//! directory (its model and its copy of the training rows) is collected. Downloaded inputs
//! and report files are kept for `keep_for` after they were last written, and an input an
//! in-flight cycle read is always kept. Pure: the caller lists what exists and deletes.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::validate::Checker;

/// `[daemon.retention]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawRetention {
    pub keep_versions: Option<i64>,
    pub keep_for: Option<String>,
}

/// What the state directory keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// The newest versions of each pipeline kept whatever else holds them.
    pub keep_versions: usize,
    /// How long downloaded inputs and report files stay after they were written.
    pub keep_for: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_versions: 10,
            keep_for: Duration::from_secs(90 * 86_400),
        }
    }
}

impl RetentionConfig {
    /// Validate `raw` (the checker is at `daemon.retention`).
    pub fn from_raw(raw: RawRetention, c: &mut Checker) -> RetentionConfig {
        let d = RetentionConfig::default();
        let keep_for = c.duration("keep_for", &raw.keep_for, d.keep_for);
        if keep_for < Duration::from_secs(86_400) {
            c.problem(
                "keep_for",
                "must be at least 1d (default 90d): a day's inputs are read again by its steps",
            );
        }
        RetentionConfig {
            keep_versions: c.positive("keep_versions", raw.keep_versions, d.keep_versions, 10_000),
            keep_for,
        }
    }
}

/// Why a version is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Held {
    Champion,
    Previous,
    /// The candidate of a cycle in flight, or the version of an open move.
    InFlight,
    /// Among the newest `keep_versions`.
    Newest,
}

/// A registered version as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionFacts {
    pub id: i64,
    pub version: i64,
    /// Already collected: nothing left to delete.
    pub collected: bool,
}

/// The versions of one pipeline that must stay: what each alias, cycle and move names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    pub champion: Option<i64>,
    pub previous: Option<i64>,
    pub in_flight: BTreeSet<i64>,
}

/// Why each version is held, or none when it may be collected.
pub fn held(v: &VersionFacts, pinned: &Pinned, newest: &BTreeSet<i64>) -> Option<Held> {
    if pinned.champion == Some(v.id) {
        Some(Held::Champion)
    } else if pinned.previous == Some(v.id) {
        Some(Held::Previous)
    } else if pinned.in_flight.contains(&v.id) {
        Some(Held::InFlight)
    } else if newest.contains(&v.id) {
        Some(Held::Newest)
    } else {
        None
    }
}

/// The ids of the versions to collect: every version held by nothing and not collected yet.
pub fn to_collect(versions: &[VersionFacts], pinned: &Pinned, keep_versions: usize) -> Vec<i64> {
    let mut by_number: Vec<&VersionFacts> = versions.iter().collect();
    by_number.sort_by_key(|v| std::cmp::Reverse(v.version));
    let newest: BTreeSet<i64> = by_number.iter().take(keep_versions).map(|v| v.id).collect();
    let mut out: Vec<i64> = versions
        .iter()
        .filter(|v| !v.collected && held(v, pinned, &newest).is_none())
        .map(|v| v.id)
        .collect();
    out.sort_unstable();
    out
}

/// Whether a file last written at `written` is past `keep_for` at `now`.
pub fn expired(written: DateTime<Utc>, now: DateTime<Utc>, keep_for: Duration) -> bool {
    (now - written).to_std().is_ok_and(|age| age > keep_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(n: i64) -> Vec<VersionFacts> {
        (1..=n)
            .map(|v| VersionFacts {
                id: 100 + v,
                version: v,
                collected: false,
            })
            .collect()
    }

    #[test]
    fn aliases_in_flight_and_the_newest_are_kept_the_rest_collected() {
        let vs = versions(20);
        let pinned = Pinned {
            champion: Some(103),
            previous: Some(101),
            in_flight: BTreeSet::from([105]),
        };
        // Newest 3: v18, v19, v20.
        let gone = to_collect(&vs, &pinned, 3);
        let expect: Vec<i64> = (1..=20)
            .filter(|v| ![1, 3, 5, 18, 19, 20].contains(v))
            .map(|v| 100 + v)
            .collect();
        assert_eq!(gone, expect);
        // Already collected ones are not collected twice.
        let mut vs = vs;
        vs[1].collected = true;
        assert!(!to_collect(&vs, &pinned, 3).contains(&102));
        let newest = BTreeSet::from([120]);
        assert_eq!(held(&vs[2], &pinned, &newest), Some(Held::Champion));
        assert_eq!(held(&vs[19], &pinned, &newest), Some(Held::Newest));
        assert_eq!(held(&vs[9], &pinned, &newest), None);
    }

    #[test]
    fn files_expire_after_keep_for() {
        let now = Utc::now();
        let day = Duration::from_secs(86_400);
        assert!(!expired(now - chrono::Duration::hours(23), now, day));
        assert!(expired(now - chrono::Duration::hours(25), now, day));
        // A clock that went back never deletes.
        assert!(!expired(now + chrono::Duration::hours(25), now, day));
    }

    #[test]
    fn the_section_is_validated_with_its_key_paths() {
        let mut problems = Vec::new();
        let mut c = Checker::new(&mut problems);
        let mut r = c.section("daemon.retention");
        let raw = RawRetention {
            keep_versions: Some(0),
            keep_for: Some("2h".into()),
        };
        RetentionConfig::from_raw(raw, &mut r);
        let keys: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            keys,
            [
                "daemon.retention.keep_for",
                "daemon.retention.keep_versions"
            ]
        );
        let mut problems = Vec::new();
        let mut c = Checker::new(&mut problems);
        let d = RetentionConfig::from_raw(RawRetention::default(), &mut c);
        assert_eq!((d, problems.len()), (RetentionConfig::default(), 0));
    }
}
