//! `[pipeline.data.spark]`: the day's window read in Spark — raw shape, defaults and
//! validation.
//!
//! ```toml
//! [pipeline.data.spark]
//! endpoint = "sc://spark.lake:15002/;use_ssl=true"
//! token_file = "/run/credentials/retraind.service/spark-token"   # or token_env
//! current_query = "SELECT * FROM lake.churn WHERE day = '{date}'" # or current_table
//! timeout = "30m"
//! epsilon = 0.001
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{Endpoint, Relation, SparkSource};
use crate::secret::SecretSource;
use crate::validate::Checker;
use crate::validate::files::Files;

/// `[pipeline.data.spark]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawSpark {
    pub endpoint: Option<String>,
    pub token_file: Option<String>,
    pub token_env: Option<String>,
    pub current_table: Option<String>,
    pub current_query: Option<String>,
    pub timeout: Option<String>,
    pub epsilon: Option<f64>,
}

/// The current window in Spark.
#[derive(Debug, Clone, PartialEq)]
pub struct SparkConfig {
    pub endpoint: Endpoint,
    pub token: Option<SecretSource>,
    /// Table name or query; `{date}` is replaced by the cycle's day.
    pub current: Relation,
    pub timeout: Duration,
    /// Rank error of the quantiles Spark computes.
    pub epsilon: f64,
}

const TIMEOUT: Duration = Duration::from_secs(30 * 60);

impl SparkConfig {
    /// Validate `raw` (the checker is at `pipeline[i].data.spark`); every problem is collected.
    pub fn from_raw(raw: RawSpark, files: Files, c: &mut Checker) -> Option<SparkConfig> {
        let endpoint = match raw.endpoint.as_deref().map(Endpoint::parse) {
            Some(Ok(e)) => Some(e),
            Some(Err(message)) => {
                c.problem("endpoint", message);
                None
            }
            None => {
                c.problem(
                    "endpoint",
                    "missing; set the Spark Connect address, e.g. \"sc://spark.lake:15002\"",
                );
                None
            }
        };
        let token = files.secret(
            c,
            "token",
            &raw.token_file,
            &raw.token_env,
            Some("spark-token"),
        );
        let current = match (raw.current_table, raw.current_query) {
            (Some(t), None) if valid_table(&t) => Some(Relation::Table(t)),
            (Some(t), None) => {
                c.problem("current_table", format!("`{t}` is not a table name (letters, digits, _, dots, backticks and {{date}}); use current_query for anything else"));
                None
            }
            (None, Some(q)) if !q.trim().is_empty() => Some(Relation::Query(q)),
            (Some(_), Some(_)) => {
                c.problem(
                    "current_table",
                    "set either current_table or current_query, not both",
                );
                None
            }
            _ => {
                c.problem("current_query", "missing; set current_table (a table name) or current_query (SQL, with {date} for the cycle's day)");
                None
            }
        };
        let timeout = c.duration("timeout", &raw.timeout, TIMEOUT);
        let epsilon = c.fraction(
            "epsilon",
            raw.epsilon,
            crate::profile::sketch::DEFAULT_EPSILON,
            true,
        );
        if !(1e-5..=0.1).contains(&epsilon) {
            c.problem("epsilon", format!("{epsilon} is outside [0.00001, 0.1]; the default 0.001 asks Spark for 1,001 quantiles per feature"));
        }
        Some(SparkConfig {
            endpoint: endpoint?,
            token,
            current: current?,
            timeout,
            epsilon,
        })
    }

    /// Where the window of `date` (YYYY-MM-DD) is.
    pub fn current_source(&self, date: &str) -> SparkSource {
        let relation = match &self.current {
            Relation::Table(t) => Relation::Table(t.replace("{date}", date)),
            Relation::Query(q) => Relation::Query(q.replace("{date}", date)),
        };
        SparkSource {
            endpoint: self.endpoint.clone(),
            relation,
            timeout: self.timeout,
        }
    }
}

/// A (possibly qualified, possibly backticked) table name.
fn valid_table(t: &str) -> bool {
    !t.is_empty()
        && t.replace("{date}", "d")
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '`' | '-'))
}
