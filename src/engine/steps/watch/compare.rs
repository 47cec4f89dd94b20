//! The watch's comparison of the new champion with the model it replaced, both scored on
//! the same labelled rows of the current window; for accuracy the two models' answers are
//! counted ([`Paired`]) and pooled over every distinct daily window the watch has seen, so
//! that a difference too small for one day's rows is found over the watch
//! ([`crate::performance::paired`]).
//!
//! A window with the bytes the new model was trained and evaluated on is no evidence about
//! it (a model that fits its training days and fails on newer ones looks perfect there: the
//! simulator's seeds 351, 1263 and 2019 of 2,500), so it is never judged or pooled
//! ([`trained_on`]).
//!
//! Past windows are read once per process and kept in a [`Pool`] by the watch loop (a
//! restarted daemon reads them again); windows with the same bytes (a `data.current` without
//! `{date}`) count once. This assumes each date's window holds that date's rows, as the
//! watch's one-window-per-day rule does.
//!
//! Runs inside a blocking section: must not touch the store or await.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::data::{self, DataConfig, Roles, Table};
use crate::engine::{ModelLoader, StepError};
use crate::performance::paired::{self, Paired};
use crate::performance::{Assessment, Baseline, PerformanceConfig, Scored};
use crate::schedule::Schedule;
use crate::source;
use crate::store::ModelVersion;

/// One window's counts, with the hash of its bytes (to count a window once).
#[derive(Debug, Clone)]
pub struct Window {
    blake3: String,
    counts: Paired,
}

/// The past windows of one watch, by local date; `None`: unreadable or no labelled rows.
#[derive(Debug, Default)]
pub struct Pool {
    days: BTreeMap<String, Option<Window>>,
}

impl Pool {
    /// The local dates from the watch's start up to (not including) `today` not read yet.
    pub fn missing(
        &self,
        schedule: &Schedule,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Vec<String> {
        let today = schedule.local_date(now);
        let mut dates = BTreeSet::new();
        let mut t = started;
        // Half-day steps: no local date is skipped across a daylight-saving change.
        while t < now {
            dates.insert(schedule.local_date(t));
            t += chrono::Duration::hours(12);
        }
        dates
            .into_iter()
            .filter(|d| *d < today && !self.days.contains_key(d))
            .collect()
    }

    /// Today's assessment, judged for accuracy on today's counts and every distinct past
    /// window's but the one the model was `trained_on`; the past windows just read join the
    /// pool.
    pub fn judge(
        &mut self,
        perf: &PerformanceConfig,
        c: Compared,
        trained_on: Option<&str>,
    ) -> Assessment {
        self.days.extend(c.past);
        let mut seen = BTreeSet::from([c.today.blake3.clone()]);
        let mut pooled = c.today.counts;
        for w in self.days.values().flatten() {
            if Some(w.blake3.as_str()) != trained_on && seen.insert(w.blake3.clone()) {
                pooled = pooled + w.counts;
            }
        }
        paired::judge(&perf.rule, c.assessment, &pooled, seen.len())
    }
}

/// The hash of the current window `version` was trained (and its holdout cut) from, when
/// it was trained on the current window's labelled rows.
pub fn trained_on(version: &ModelVersion) -> Option<String> {
    let lineage = &version.lineage;
    (lineage.training_data.source == "current")
        .then(|| lineage.inputs.as_ref().map(|i| i.current.blake3.clone()))
        .flatten()
        .filter(|b| !b.is_empty())
}

/// What one check found: today's assessment (unpooled), today's counts, past windows read.
pub struct Compared {
    assessment: Assessment,
    today: Window,
    past: Vec<(String, Option<Window>)>,
}

/// Where the current windows are and how to read them.
pub struct Reader {
    pub data: DataConfig,
    pub roles: Roles,
    pub cache: std::path::PathBuf,
}

impl Reader {
    /// The labelled rows of `date`'s window (`None`: none labelled yet).
    pub fn labelled(&self, date: &str) -> Result<Option<Table>, StepError> {
        Ok(self.window(date)?.labelled())
    }

    /// Every row of `date`'s window, labelled or not.
    pub fn window(&self, date: &str) -> Result<Table, StepError> {
        let location = self.data.current_location(date)?;
        let input = source::resolve(&location, &self.cache, &self.data.s3)?;
        Ok(data::load(&input, &self.roles, false)?)
    }
}

/// `champion` against `previous` on today's labelled `rows` (the previous model's metric on
/// them is the baseline), and the counts of the past `dates`' windows.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    perf: &PerformanceConfig,
    models: &dyn ModelLoader,
    champion: &ModelVersion,
    previous: &ModelVersion,
    rows: &Table,
    reader: &Reader,
    dates: Vec<String>,
    seed: u64,
) -> Result<Compared, StepError> {
    let positive = perf.positive_class.as_deref();
    let (new_model, old_model) = (
        models.load(Path::new(&champion.path))?,
        models.load(Path::new(&previous.path))?,
    );
    let score_both = |rows: &Table| -> Result<(Scored, Scored), StepError> {
        Ok((
            crate::train::score(&*new_model, rows, positive)?,
            crate::train::score(&*old_model, rows, positive)?,
        ))
    };
    let (new, old) = score_both(rows)?;
    let baseline = crate::performance::compute(perf.rule.metric, &old, None)
        .ok()
        .map(|v| v.value)
        .filter(|v| v.is_finite())
        .map(|value| Baseline {
            value,
            n: Some(old.labels.len()),
        });
    let assessment = crate::performance::assess(&perf.rule, &new, baseline, seed);
    let today = Window {
        blake3: rows.fingerprint.blake3.clone(),
        counts: Paired::count(&new, &old),
    };
    let past = dates
        .into_iter()
        .map(|date| {
            let window = reader.labelled(&date).ok().flatten().and_then(|t| {
                let (new, old) = score_both(&t).ok()?;
                Some(Window {
                    blake3: t.fingerprint.blake3.clone(),
                    counts: Paired::count(&new, &old),
                })
            });
            (date, window)
        })
        .collect();
    Ok(Compared {
        assessment,
        today,
        past,
    })
}
