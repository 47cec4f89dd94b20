//! The vocabulary every configuration section validates with: a [`Problem`] names the key at
//! fault and the fix, and a [`Checker`] collects problems while a section turns its raw TOML
//! values into typed ones, so one pass reports every mistake at once (ripgrep's and vector's
//! way). Each section's raw shape, defaults and checks live beside the module that uses the
//! section (`drift`, `gate`, `guards` …); [`crate::config`] only parses the file and
//! assembles the sections.
//!
//! This module is pure: it must not read files, the environment or the network. Checks that
//! look at the file system (a CA file exists, a working directory is a directory) are in
//! [`files`], which policy modules never import.

pub mod files;

use std::fmt;
use std::time::Duration;

/// One problem found in a configuration, with the key path at fault and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `pipeline[0].schedule`.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects problems while raw values become typed ones. A checker is opened at a section
/// (`pipeline[0].drift`); the keys its methods take are relative to it.
pub struct Checker<'a> {
    problems: &'a mut Vec<Problem>,
    prefix: String,
}

/// The longest duration any setting accepts.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl<'a> Checker<'a> {
    /// A checker at the top of the file.
    pub fn new(problems: &'a mut Vec<Problem>) -> Checker<'a> {
        Checker {
            problems,
            prefix: String::new(),
        }
    }

    /// A checker for the sub-section `name` (`drift`, `train.burn`, `derived[0]`).
    pub fn section(&mut self, name: &str) -> Checker<'_> {
        let prefix = self.key(name);
        Checker {
            problems: self.problems,
            prefix,
        }
    }

    /// The full path of `key` (`""`: the section itself). An index (`[0]`) attaches without
    /// a dot.
    pub fn key(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty()) {
            (_, true) => self.prefix.clone(),
            (true, false) => key.to_string(),
            (false, false) if key.starts_with('[') => format!("{}{key}", self.prefix),
            (false, false) => format!("{}.{key}", self.prefix),
        }
    }

    /// Record a problem at `key` (relative to this section).
    pub fn problem(&mut self, key: &str, message: impl Into<String>) {
        let path = self.key(key);
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    /// How many problems were found so far (in the whole file).
    pub fn count(&self) -> usize {
        self.problems.len()
    }

    /// A duration written like "30s", "15m" or "72h", at most ten years.
    pub fn duration(&mut self, key: &str, raw: &Option<String>, default: Duration) -> Duration {
        let Some(text) = raw.as_deref() else {
            return default;
        };
        let default = show_duration(default);
        match humantime::parse_duration(text) {
            Ok(d) if d <= LONGEST => d,
            Ok(_) => {
                self.problem(key, format!("duration `{text}` is longer than 10 years; use a value such as \"{default}\""));
                Duration::ZERO
            }
            Err(e) => {
                self.problem(
                    key,
                    format!("`{text}` is not a duration ({e}); write it like \"30s\", \"15m\" or \"72h\""),
                );
                Duration::ZERO
            }
        }
    }

    /// A share: `0 <= x <= 1`, or `0 < x <= 1` when `lo_open`.
    pub fn fraction(&mut self, key: &str, raw: Option<f64>, default: f64, lo_open: bool) -> f64 {
        let v = raw.unwrap_or(default);
        let ok = v.is_finite() && v <= 1.0 && if lo_open { v > 0.0 } else { v >= 0.0 };
        if !ok {
            let range = if lo_open { "0 < x <= 1" } else { "0 <= x <= 1" };
            self.problem(
                key,
                format!("{v} is out of range; use a number with {range} (default {default})"),
            );
        }
        v
    }

    /// A number `>= 0`; the default replaces a bad value.
    pub fn non_negative(&mut self, key: &str, raw: Option<f64>, default: f64) -> f64 {
        let v = raw.unwrap_or(default);
        if !(v.is_finite() && v >= 0.0) {
            self.problem(
                key,
                format!("{v} is out of range; use a number >= 0 (default {default})"),
            );
            return default;
        }
        v
    }

    /// A number `> 0`; the default replaces a bad value.
    pub fn positive_number(&mut self, key: &str, raw: Option<f64>, default: f64) -> f64 {
        let v = raw.unwrap_or(default);
        if !(v.is_finite() && v > 0.0) {
            self.problem(
                key,
                format!("{v} is out of range; use a number > 0 (default {default})"),
            );
            return default;
        }
        v
    }

    /// A whole number from 1 to `max`; the default replaces a bad value.
    pub fn positive(&mut self, key: &str, raw: Option<i64>, default: usize, max: i64) -> usize {
        let v = raw.unwrap_or(default as i64);
        if v < 1 || v > max {
            self.problem(
                key,
                format!(
                    "{v} is out of range; use a whole number from 1 to {max} (default {default})"
                ),
            );
            return default;
        }
        v as usize
    }

    /// A number `<= 1` (an R² floor); `None` when absent or out of range.
    pub fn at_most_one(&mut self, key: &str, raw: Option<f64>, default: f64) -> Option<f64> {
        let v = raw?;
        if !(v.is_finite() && v <= 1.0) {
            self.problem(
                key,
                format!("{v} is out of range; use a number <= 1 (default {default})"),
            );
            return None;
        }
        Some(v)
    }

    /// An `http://` or `https://` URL (`what` completes "is not an http(s):// URL").
    pub fn url(&mut self, key: &str, url: &str, what: &str) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.problem(key, format!("`{url}` is not an http(s):// URL{what}"));
        }
    }

    /// One of a closed set of words: `parse` maps a word to its value, `hint` says what is
    /// accepted; absent means `default`.
    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        raw: Option<&str>,
        default: T,
        parse: impl Fn(&str) -> Option<T>,
        hint: impl Fn(&str) -> String,
    ) -> T {
        match raw {
            None => default,
            Some(word) => parse(word).unwrap_or_else(|| {
                self.problem(key, hint(word));
                default
            }),
        }
    }

    /// A value parsed by `FromStr` whose error is the whole message.
    pub fn parsed<T: std::str::FromStr>(&mut self, key: &str, raw: Option<&str>, default: T) -> T
    where
        T::Err: fmt::Display,
    {
        match raw.map(str::parse::<T>) {
            None => default,
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                self.problem(key, e.to_string());
                default
            }
        }
    }
}

/// A duration as people write it in the config: "30s", "15m", "72h".
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 {
        format!("{}ms", d.as_millis())
    } else if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) && s < 3600 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// A size as people write it: "2GiB", "512 MiB", "1.5G" (binary units: K, M, G, T with or
/// without "iB"), "500MB" (decimal with "B"), or plain bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 2GiB, 512MiB or 1000000"))?;
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}`; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
            ));
        }
    };
    Ok((value * factor).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_people_write_them() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes(" 512 MiB "), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("500MB"), Ok(500_000_000));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").unwrap_err().contains("not a size"));
        assert!(
            parse_bytes("2 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn sections_prefix_their_keys_and_every_problem_is_kept() {
        let mut problems = Vec::new();
        let mut top = Checker::new(&mut problems);
        let mut p = top.section("pipeline[0]");
        let mut drift = p.section("drift");
        assert_eq!(drift.fraction("alpha", Some(-0.5), 0.05, true), -0.5);
        let mut burn = p.section("train.burn");
        burn.section("derived[1]").problem("", "needs a name");
        assert_eq!(burn.key("hidden[2]"), "pipeline[0].train.burn.hidden[2]");
        assert_eq!(top.section("pipeline").key("[3]"), "pipeline[3]");
        top.problem("daemon.lease_ttl", "too short");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pipeline[0].drift.alpha",
                "pipeline[0].train.burn.derived[1]",
                "daemon.lease_ttl"
            ]
        );
        assert!(problems[0].message.contains("0 < x <= 1 (default 0.05)"));
    }

    #[test]
    fn durations_name_their_limits_and_defaults() {
        let mut problems = Vec::new();
        let mut c = Checker::new(&mut problems);
        let day = Duration::from_secs(86400);
        assert_eq!(c.duration("a", &None, day), day);
        assert_eq!(
            c.duration("b", &Some("90m".into()), day),
            Duration::from_secs(5400)
        );
        assert_eq!(
            c.duration("c", &Some("11 years".into()), day),
            Duration::ZERO
        );
        assert_eq!(c.duration("d", &Some("soon".into()), day), Duration::ZERO);
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].message.contains("such as \"24h\""),
            "{}",
            problems[0]
        );
        assert!(problems[1].message.contains("\"30s\", \"15m\" or \"72h\""));
        let shown: Vec<String> = [0, 1, 30, 60, 300, 3600, 72 * 3600, 90]
            .map(|s| show_duration(Duration::from_secs(s)))
            .to_vec();
        assert_eq!(shown, ["0s", "1s", "30s", "1m", "5m", "1h", "72h", "90s"]);
    }
}
