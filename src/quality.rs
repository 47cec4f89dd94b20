//! The data quality gate, run before drift: does the current window look like data the
//! reference could have produced, column by column? Pure; the engine stores the findings
//! and a failure blocks retraining on bad data (the cycle ends `skipped`, outcome
//! `quality_failed`, with the findings as its reason).
//!
//! Checks: columns missing from, added to, or retyped in the current window (by type class:
//! numeric, text, boolean, other — so an integer column read as float is not "retyped");
//! the increase of the null rate per feature; infinite values; the share of numerical values
//! outside the reference's range; the current row count relative to the reference's.
//! Missing and retyped feature columns are also refused when the window is loaded, with the
//! file and column named.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::data::{Fingerprint, Table};
use crate::profile::{CategoricalProfile, NumericalProfile, Profile, Summary};
use crate::validate::Checker;

/// Thresholds of the gate (`[pipeline.quality]`).
#[derive(Debug, Clone, PartialEq)]
pub struct QualityConfig {
    /// Columns in the current window that the reference lacks fail the gate unless allowed.
    pub allow_added_columns: bool,
    /// Fail when a feature's null share grows by more than this (absolute).
    pub max_null_rate_increase: f64,
    /// Warn when more than this share of a numerical feature's values lies outside the
    /// reference's [min, max].
    pub max_out_of_range_share: f64,
    /// Warn when the current window has fewer rows than this share of the reference's
    /// (0 disables: a reference that is a training set is naturally larger).
    pub min_row_ratio: f64,
}

/// `[pipeline.quality]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawQuality {
    pub allow_added_columns: Option<bool>,
    pub max_null_rate_increase: Option<f64>,
    pub max_out_of_range_share: Option<f64>,
    pub min_row_ratio: Option<f64>,
}

impl QualityConfig {
    /// Validate `raw` (the checker is at `pipeline[i].quality`).
    pub fn from_raw(raw: RawQuality, c: &mut Checker) -> QualityConfig {
        let d = QualityConfig::default();
        QualityConfig {
            allow_added_columns: raw.allow_added_columns.unwrap_or(d.allow_added_columns),
            max_null_rate_increase: c.fraction(
                "max_null_rate_increase",
                raw.max_null_rate_increase,
                d.max_null_rate_increase,
                false,
            ),
            max_out_of_range_share: c.fraction(
                "max_out_of_range_share",
                raw.max_out_of_range_share,
                d.max_out_of_range_share,
                false,
            ),
            min_row_ratio: c.fraction("min_row_ratio", raw.min_row_ratio, d.min_row_ratio, false),
        }
    }
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            allow_added_columns: false,
            max_null_rate_increase: 0.1,
            max_out_of_range_share: 0.2,
            min_row_ratio: 0.0,
        }
    }
}

/// Which check produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    MissingColumn,
    AddedColumn,
    RetypedColumn,
    NullRate,
    NonFinite,
    OutOfRange,
    RowCount,
}

impl Check {
    pub const ALL: [Check; 7] = [
        Check::MissingColumn,
        Check::AddedColumn,
        Check::RetypedColumn,
        Check::NullRate,
        Check::NonFinite,
        Check::OutOfRange,
        Check::RowCount,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::MissingColumn => "missing_column",
            Check::AddedColumn => "added_column",
            Check::RetypedColumn => "retyped_column",
            Check::NullRate => "null_rate",
            Check::NonFinite => "non_finite",
            Check::OutOfRange => "out_of_range",
            Check::RowCount => "row_count",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Blocks retraining.
    Fail,
    /// Reported only.
    Warn,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub check: Check,
    pub column: Option<String>,
    pub severity: Severity,
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The gate's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    pub passed: bool,
    pub findings: Vec<Finding>,
}

impl QualityReport {
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Fail)
    }
}

fn type_class(dtype: &str) -> &'static str {
    match dtype {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "f32" | "f64" => {
            "numeric"
        }
        "str" | "cat" => "text",
        "bool" => "boolean",
        "null" => "null",
        _ => "other",
    }
}

/// Run every check on the two windows.
pub fn check(
    reference: (&Fingerprint, &Table),
    current: (&Fingerprint, &Table),
    ignore: &[String],
    config: &QualityConfig,
) -> QualityReport {
    let facts = table_facts(reference.1, current.1);
    let rows = (reference.1.rows, current.1.rows);
    gate((reference.0, current.0), rows, &facts, ignore, config)
}

/// Run every check on two windows' profiles (a check that read summaries, not rows).
pub fn check_profiles(
    reference: (&Fingerprint, &Profile),
    current: (&Fingerprint, &Profile),
    ignore: &[String],
    config: &QualityConfig,
) -> QualityReport {
    let facts = profile_facts(reference.1, current.1);
    let rows = (reference.1.rows as usize, current.1.rows as usize);
    gate((reference.0, current.0), rows, &facts, ignore, config)
}

fn gate(
    (ref_fp, cur_fp): (&Fingerprint, &Fingerprint),
    (ref_rows, cur_rows): (usize, usize),
    facts: &[Facts],
    ignore: &[String],
    config: &QualityConfig,
) -> QualityReport {
    let mut f = Findings(Vec::new());
    let skip = |c: &str| ignore.iter().any(|i| i == c);
    schema(&mut f, ref_fp, cur_fp, &skip, config);
    numerical_values(&mut f, facts, config);
    null_rates(&mut f, facts, config);
    let ratio = share(cur_rows, ref_rows);
    if config.min_row_ratio > 0.0 && ratio < config.min_row_ratio {
        f.add(
            Check::RowCount,
            None,
            Severity::Warn,
            (ratio, config.min_row_ratio),
            format!(
                "the current window has {cur_rows} rows, {:.0}% of the reference's {ref_rows}",
                ratio * 100.0,
            ),
        );
    }
    let findings = f.0;
    QualityReport {
        passed: findings.iter().all(|f| f.severity != Severity::Fail),
        findings,
    }
}

/// What the gate needs to know of one feature in both windows, from rows or profiles.
struct Facts {
    name: String,
    /// Null shares (NaN for numerical values, the empty string for categories), reference
    /// and current.
    nulls: (f64, f64),
    numerical: Option<Values>,
}

/// A numerical feature's current infinities, the reference's finite range, and the share
/// of the current finite values outside it.
struct Values {
    infinite: usize,
    range: Option<(f64, f64)>,
    outside: f64,
}

fn table_facts(ref_t: &Table, cur_t: &Table) -> Vec<Facts> {
    let mut facts = Vec::new();
    for (name, r) in &ref_t.numerical {
        let Some(c) = cur_t.numerical(name) else {
            continue;
        };
        let nulls = |v: &[f64]| share(v.iter().filter(|x| x.is_nan()).count(), v.len());
        let finite = || r.iter().copied().filter(|v| v.is_finite());
        let (lo, hi) = (
            finite().fold(f64::INFINITY, f64::min),
            finite().fold(f64::NEG_INFINITY, f64::max),
        );
        let present: Vec<f64> = c.iter().copied().filter(|v| v.is_finite()).collect();
        facts.push(Facts {
            name: name.clone(),
            nulls: (nulls(r), nulls(c)),
            numerical: Some(Values {
                infinite: c.iter().filter(|v| v.is_infinite()).count(),
                range: (lo <= hi).then_some((lo, hi)),
                outside: share(
                    present.iter().filter(|v| **v < lo || **v > hi).count(),
                    present.len(),
                ),
            }),
        });
    }
    for (name, r) in &ref_t.categorical {
        let Some(c) = cur_t.categorical(name) else {
            continue;
        };
        let nulls = |v: &[String]| share(v.iter().filter(|x| x.is_empty()).count(), v.len());
        facts.push(Facts {
            name: name.clone(),
            nulls: (nulls(r), nulls(c)),
            numerical: None,
        });
    }
    facts
}

fn profile_facts(reference: &Profile, current: &Profile) -> Vec<Facts> {
    let mut numerical = Vec::new();
    let mut categorical = Vec::new();
    for feature in &reference.features {
        match (&feature.summary, current.feature(&feature.name)) {
            (Summary::Numerical(r), Some(Summary::Numerical(c))) => {
                let all = |p: &NumericalProfile| (p.count + p.missing + p.infinite) as usize;
                numerical.push(Facts {
                    name: feature.name.clone(),
                    nulls: (
                        share(r.missing as usize, all(r)),
                        share(c.missing as usize, all(c)),
                    ),
                    numerical: Some(Values {
                        infinite: c.infinite as usize,
                        range: r.range,
                        outside: r.range.map_or(0.0, |range| outside(c, range)),
                    }),
                });
            }
            (Summary::Categorical(r), Some(Summary::Categorical(c))) => {
                let all = |p: &CategoricalProfile| (p.present() + p.missing) as usize;
                categorical.push(Facts {
                    name: feature.name.clone(),
                    nulls: (
                        share(r.missing as usize, all(r)),
                        share(c.missing as usize, all(c)),
                    ),
                    numerical: None,
                });
            }
            _ => {}
        }
    }
    numerical.extend(categorical);
    numerical
}

/// The share of a profile's finite values outside `(lo, hi)`: counted while it was read
/// when the reader knew the range, else from its values (approximately, from a sketch).
fn outside(p: &NumericalProfile, (lo, hi): (f64, f64)) -> f64 {
    match &p.binned {
        Some(b) if b.range == (lo, hi) => share(b.outside as usize, p.count as usize),
        _ => {
            let cdf = p.cdf();
            (cdf.rank(lo.next_down()) + 1.0 - cdf.rank(hi)).clamp(0.0, 1.0)
        }
    }
}

/// The findings of one check, in order.
struct Findings(Vec<Finding>);

impl Findings {
    /// A finding with its (value, threshold).
    fn add(
        &mut self,
        check: Check,
        column: Option<&str>,
        severity: Severity,
        (value, threshold): (f64, f64),
        message: String,
    ) {
        self.0.push(Finding {
            check,
            column: column.map(str::to_string),
            severity,
            value,
            threshold,
            message,
        });
    }
}

/// `count / total`, 0 for an empty total.
fn share(count: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        count as f64 / total as f64
    }
}

/// Columns missing from, retyped in, or added to the current window.
fn schema(
    f: &mut Findings,
    ref_fp: &Fingerprint,
    cur_fp: &Fingerprint,
    skip: &dyn Fn(&str) -> bool,
    config: &QualityConfig,
) {
    for (name, dtype) in ref_fp.schema.iter().filter(|(n, _)| !skip(n)) {
        match cur_fp.schema.iter().find(|(n, _)| n == name) {
            None => f.add(
                Check::MissingColumn,
                Some(name),
                Severity::Fail,
                (1.0, 0.0),
                format!("column `{name}` is missing from the current window"),
            ),
            Some((_, cur_type)) => {
                let (a, b) = (type_class(dtype), type_class(cur_type));
                // An all-null column reads as type null: that is a null-rate problem, not a type.
                if a != b && a != "null" && b != "null" {
                    f.add(
                        Check::RetypedColumn,
                        Some(name),
                        Severity::Fail,
                        (1.0, 0.0),
                        format!("column `{name}` changed type from {dtype} to {cur_type}"),
                    );
                }
            }
        }
    }
    for (name, _) in cur_fp.schema.iter().filter(|(n, _)| !skip(n)) {
        if !ref_fp.schema.iter().any(|(n, _)| n == name) {
            let severity = if config.allow_added_columns {
                Severity::Warn
            } else {
                Severity::Fail
            };
            f.add(
                Check::AddedColumn,
                Some(name),
                severity,
                (1.0, 0.0),
                format!(
                    "column `{name}` is new in the current window (set quality.allow_added_columns or data.ignore)"
                ),
            );
        }
    }
}

/// Infinite values, and values outside the reference's range, per numerical feature.
fn numerical_values(f: &mut Findings, facts: &[Facts], config: &QualityConfig) {
    for (name, v) in facts
        .iter()
        .filter_map(|x| Some((&x.name, x.numerical.as_ref()?)))
    {
        if v.infinite > 0 {
            f.add(
                Check::NonFinite,
                Some(name),
                Severity::Fail,
                (v.infinite as f64, 0.0),
                format!(
                    "`{name}` has {} infinite value(s) in the current window",
                    v.infinite
                ),
            );
        }
        let Some((lo, hi)) = v.range else {
            continue;
        };
        if v.outside > config.max_out_of_range_share {
            f.add(
                Check::OutOfRange,
                Some(name),
                Severity::Warn,
                (v.outside, config.max_out_of_range_share),
                format!(
                    "{:.1}% of `{name}` lies outside the reference range [{lo}, {hi}]",
                    v.outside * 100.0
                ),
            );
        }
    }
}

/// The null rate per feature (NaN for numerical values, the empty string for categories)
/// grown past `max_null_rate_increase`.
fn null_rates(f: &mut Findings, facts: &[Facts], config: &QualityConfig) {
    for Facts {
        name,
        nulls: (r_null, c_null),
        ..
    } in facts
    {
        if c_null - r_null > config.max_null_rate_increase {
            f.add(
                Check::NullRate,
                Some(name),
                Severity::Fail,
                (c_null - r_null, config.max_null_rate_increase),
                format!(
                    "`{name}` is empty in {:.1}% of current rows vs {:.1}% in the reference",
                    c_null * 100.0,
                    r_null * 100.0
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(schema: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            path: "x".into(),
            blake3: String::new(),
            bytes: 0,
            rows: 0,
            schema: schema
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            files: vec![],
        }
    }

    fn table(x: Vec<f64>, seg: Vec<&str>) -> Table {
        Table::from_columns(
            vec![("x".into(), x)],
            vec![("seg".into(), seg.into_iter().map(String::from).collect())],
        )
    }

    #[test]
    fn clean_windows_pass() {
        let s = fp(&[("x", "f64"), ("seg", "str")]);
        let t = table(vec![1.0, 2.0, 3.0, 4.0], vec!["a", "b", "a", "b"]);
        let r = check(
            (&s, &t),
            (&fp(&[("x", "i64"), ("seg", "str")]), &t),
            &[],
            &QualityConfig::default(),
        );
        assert!(r.passed && r.findings.is_empty(), "{r:?}");
    }

    #[test]
    fn schema_changes_nulls_and_infinities_fail() {
        let s = fp(&[("x", "f64"), ("seg", "str"), ("gone", "i64")]);
        let c = fp(&[("x", "str"), ("seg", "str"), ("extra", "f64")]);
        let r_t = table(vec![1.0, 2.0, 3.0, 4.0], vec!["a", "b", "a", "b"]);
        let c_t = table(
            vec![f64::NAN, f64::INFINITY, 3.0, 100.0],
            vec!["", "", "a", "b"],
        );
        let r = check((&s, &r_t), (&c, &c_t), &[], &QualityConfig::default());
        assert!(!r.passed);
        let got: Vec<(Check, Severity)> =
            r.findings.iter().map(|f| (f.check, f.severity)).collect();
        for want in [
            (Check::MissingColumn, Severity::Fail),
            (Check::RetypedColumn, Severity::Fail),
            (Check::AddedColumn, Severity::Fail),
            (Check::NullRate, Severity::Fail),
            (Check::NonFinite, Severity::Fail),
            (Check::OutOfRange, Severity::Warn),
        ] {
            assert!(got.contains(&want), "{want:?} missing from {got:?}");
        }
        let msg = r
            .findings
            .iter()
            .find(|f| f.check == Check::RetypedColumn)
            .unwrap()
            .to_string();
        assert_eq!(msg, "column `x` changed type from f64 to str");
        // Ignored and allowed columns are not findings.
        let cfg = QualityConfig {
            allow_added_columns: true,
            ..QualityConfig::default()
        };
        let r = check((&s, &r_t), (&c, &c_t), &["gone".into()], &cfg);
        assert!(r.findings.iter().all(|f| f.check != Check::MissingColumn));
        assert_eq!(
            r.findings
                .iter()
                .find(|f| f.check == Check::AddedColumn)
                .unwrap()
                .severity,
            Severity::Warn
        );
    }

    #[test]
    fn row_count_check_is_off_by_default() {
        let s = fp(&[("x", "f64"), ("seg", "str")]);
        let big = table(vec![1.0; 100], vec!["a"; 100]);
        let small = table(vec![1.0; 10], vec!["a"; 10]);
        assert!(
            check((&s, &big), (&s, &small), &[], &QualityConfig::default())
                .findings
                .is_empty()
        );
        let cfg = QualityConfig {
            min_row_ratio: 0.5,
            ..QualityConfig::default()
        };
        let r = check((&s, &big), (&s, &small), &[], &cfg);
        assert_eq!(r.findings[0].check, Check::RowCount);
        assert!(r.passed, "row count only warns");
    }
}
