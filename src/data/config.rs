//! `[pipeline.data]`: where the reference and the daily window are, and which columns play
//! which role — raw shape, defaults (here and nowhere else) and validation.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::{Location, RawS3, S3Config, SourceError};
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[pipeline.data]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawData {
    pub reference: Option<String>,
    pub reference_source: Option<String>,
    pub reference_window: Option<Vec<String>>,
    pub current: Option<String>,
    pub target: Option<String>,
    pub prediction: Option<String>,
    pub timestamp: Option<String>,
    #[serde(default)]
    pub s3: RawS3,
    pub numerical: Option<Vec<String>>,
    pub categorical: Option<Vec<String>>,
    pub ignore: Option<Vec<String>>,
    pub min_rows: Option<i64>,
    pub spark: Option<crate::spark::config::RawSpark>,
}

/// Which data the current window is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceSource {
    /// The rows the current champion was trained on (kept in its version directory); the
    /// `data.reference` location until a champion exists.
    Champion,
    /// Always the `data.reference` location (optionally cut to `reference_window`).
    Fixed,
}

/// A pipeline's data.
#[derive(Debug, Clone)]
pub struct DataConfig {
    /// Reference location: a path, a glob, an http(s):// URL or s3://bucket/key.
    pub reference: Location,
    pub reference_source: ReferenceSource,
    /// Keep only reference rows with `from <= timestamp < to` (ms since the epoch).
    pub reference_window: Option<(i64, i64)>,
    /// Location template; `{date}` is replaced by the cycle's day (YYYY-MM-DD, pipeline
    /// timezone) before it is read as a path, glob or URL.
    pub current: String,
    pub target: String,
    pub prediction: Option<String>,
    pub timestamp: Option<String>,
    pub numerical: Option<Vec<String>>,
    pub categorical: Option<Vec<String>>,
    pub ignore: Vec<String>,
    /// Below this many rows in either window the check answers "insufficient data".
    pub min_rows: usize,
    pub s3: S3Config,
    /// The current window in Spark instead of `current` (`[pipeline.data.spark]`).
    pub spark: Option<crate::spark::SparkConfig>,
}

/// The defaults of the settings that have one.
const TARGET: &str = "target";
const MIN_ROWS: usize = 50;

impl DataConfig {
    /// The current-window location for one cycle day.
    pub fn current_location(&self, date: &str) -> Result<Location, SourceError> {
        Location::parse(&self.current.replace("{date}", date), Path::new("/"))
    }

    /// The role settings as the data module takes them.
    pub fn role_spec(&self) -> super::RoleSpec<'_> {
        super::RoleSpec {
            numerical: self.numerical.as_deref(),
            categorical: self.categorical.as_deref(),
            target: &self.target,
            prediction: self.prediction.as_deref(),
            timestamp: self.timestamp.as_deref(),
            ignore: &self.ignore,
        }
    }

    /// Validate `raw` (the checker is at `pipeline[i].data`).
    pub fn from_raw(raw: RawData, files: Files, c: &mut Checker) -> DataConfig {
        let reference_source = c.choice(
            "reference_source",
            raw.reference_source.as_deref(),
            ReferenceSource::Champion,
            |w| match w {
                "champion" => Some(ReferenceSource::Champion),
                "fixed" => Some(ReferenceSource::Fixed),
                _ => None,
            },
            |w| format!("`{w}` is not a reference source; use \"champion\" (the champion's training rows, default) or \"fixed\" (data.reference)"),
        );
        DataConfig {
            reference: reference(c, &raw.reference, files.base),
            reference_source,
            reference_window: reference_window(c, &raw.reference_window, raw.timestamp.is_some()),
            current: match (&raw.spark, raw.current) {
                (Some(_), None) => String::new(),
                (Some(_), Some(_)) => {
                    c.problem(
                        "current",
                        "set either data.current or [pipeline.data.spark], not both",
                    );
                    String::new()
                }
                (None, raw) => current(c, raw, files.base),
            },
            spark: raw.spark.and_then(|s| {
                crate::spark::SparkConfig::from_raw(s, files, &mut c.section("spark"))
            }),
            target: raw.target.unwrap_or_else(|| TARGET.to_string()),
            prediction: raw.prediction,
            timestamp: raw.timestamp,
            s3: S3Config::from_raw(raw.s3, files, &mut c.section("s3")),
            numerical: raw.numerical,
            categorical: raw.categorical,
            ignore: raw.ignore.unwrap_or_default(),
            min_rows: c.positive("min_rows", raw.min_rows, MIN_ROWS, i64::from(u32::MAX)),
        }
    }
}

/// `data.reference`: required, and a local one must match a file now.
fn reference(c: &mut Checker, raw: &Option<String>, base: &Path) -> Location {
    match raw.as_deref().map(|r| Location::parse(r, base)) {
        Some(Ok(loc)) => {
            if !loc.exists_locally() {
                c.problem("reference", format!("{} matches no file; point it at the reference data (CSV, Parquet or NDJSON: a path, a glob, an http(s):// URL or s3://bucket/key)", loc.describe()));
            }
            loc
        }
        Some(Err(e)) => {
            c.problem("reference", e.to_string());
            Location::File(PathBuf::new())
        }
        None => {
            c.problem(
                "reference",
                "missing; set the location of the reference data set",
            );
            Location::File(PathBuf::new())
        }
    }
}

/// `data.reference_window = [from, to]`, earlier first; it needs `data.timestamp`.
fn reference_window(
    c: &mut Checker,
    raw: &Option<Vec<String>>,
    has_timestamp: bool,
) -> Option<(i64, i64)> {
    match raw.as_deref()? {
        [from, to] => match (super::parse_timestamp(from), super::parse_timestamp(to)) {
            (Some(f), Some(t)) if f < t => {
                if !has_timestamp {
                    c.problem(
                        "reference_window",
                        "needs data.timestamp, the column with each row's time",
                    );
                }
                Some((f, t))
            }
            _ => {
                c.problem("reference_window", format!("[\"{from}\", \"{to}\"] is not a window; write two times, earlier first, e.g. [\"2026-01-01\", \"2026-02-01\"]"));
                None
            }
        },
        other => {
            c.problem(
                "reference_window",
                format!("has {} entries; write [from, to]", other.len()),
            );
            None
        }
    }
}

/// `data.current`: a location template; a local one's folder must exist (unless templated).
fn current(c: &mut Checker, raw: Option<String>, base: &Path) -> String {
    let Some(t) = raw else {
        c.problem(
            "current",
            "missing; set the current-window path, e.g. \"data/current/{date}.csv\"",
        );
        return String::new();
    };
    match Location::parse(&t, base) {
        Ok(Location::File(path)) => {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if !dir.to_string_lossy().contains('{') && !dir.is_dir() {
                c.problem(
                    "current",
                    format!(
                        "directory {} does not exist; create it or fix the path template",
                        dir.display()
                    ),
                );
            }
            path.to_string_lossy().into_owned()
        }
        Ok(Location::Glob(g)) => g,
        Ok(_) => t,
        Err(e) => {
            c.problem("current", e.to_string());
            String::new()
        }
    }
}
