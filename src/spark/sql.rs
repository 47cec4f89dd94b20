//! The summary queries Spark runs, and their results read back into a [`Profile`]. One scan
//! gives, per numerical feature, the counts of finite, missing and infinite values, mean,
//! population variance, range, quantiles at evenly spaced ranks (`percentile_approx`, whose
//! accuracy A means a rank error of 1/A) and exact counts on the reference's bins and
//! outside its range; per categorical feature the present and missing counts. A second scan
//! counts the categories (the most frequent [`MAX_CATEGORIES`] per feature).
//!
//! Pure: must not talk to Spark (that is `wire`'s); it only writes SQL text and reads
//! tables.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::profile::{
    Binned, Binning, CategoricalProfile, Expectation, FeatureProfile, MAX_CATEGORIES,
    NumericalProfile, Profile, QuantileTable, Summary, Values,
};

/// The features Spark summarises, by kind.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    pub numerical: &'a [String],
    pub categorical: &'a [String],
}

/// What Spark reads: a table (or view) by name, or the rows of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relation {
    Table(String),
    Query(String),
}

impl Relation {
    /// The relation as a `FROM` item.
    fn as_from_item(&self) -> String {
        match self {
            Relation::Table(t) => t.clone(),
            Relation::Query(q) => format!("({q}) AS src"),
        }
    }

    /// For messages: the table name, or the query's first line.
    pub fn describe(&self) -> String {
        match self {
            Relation::Table(t) => format!("table {t}"),
            Relation::Query(q) => {
                let line = q.lines().next().unwrap_or_default();
                let short: String = line.chars().take(80).collect();
                format!(
                    "query `{short}{}`",
                    if short.len() < q.len() { " …" } else { "" }
                )
            }
        }
    }
}

/// How finely the quantiles are asked for: the table has `steps + 1` entries and Spark's
/// accuracy is `accuracy`, so answers are within 1/accuracy + 1/(2·steps) of their rank.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolution {
    pub steps: usize,
    pub accuracy: u64,
}

impl Resolution {
    /// Half the rank error `epsilon` to the table's steps, half to Spark's accuracy.
    pub fn for_epsilon(epsilon: f64) -> Resolution {
        let epsilon = epsilon.clamp(1e-5, 0.1);
        Resolution {
            steps: (1.0 / epsilon).ceil() as usize,
            accuracy: (2.0 / epsilon).ceil() as u64,
        }
    }
}

/// A backtick-quoted identifier.
fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A double literal that reads back to the same bits.
fn double(x: f64) -> String {
    format!("CAST('{x:?}' AS DOUBLE)")
}

/// The query for the relation's schema (no rows).
pub fn schema_query(relation: &Relation) -> String {
    format!("SELECT * FROM {} LIMIT 0", relation.as_from_item())
}

/// The one-scan query of every feature's counts, moments, quantiles and bin counts.
pub fn numbers_query(
    relation: &Relation,
    roles: Columns<'_>,
    expect: &Expectation,
    resolution: Resolution,
) -> String {
    let mut project = Vec::new();
    let mut select = vec!["count(*) AS n_rows".to_string()];
    let ranks = (0..=resolution.steps)
        .map(|i| format!("{:?}D", i as f64 / resolution.steps as f64))
        .collect::<Vec<_>>()
        .join(", ");
    for (i, name) in roles.numerical.iter().enumerate() {
        let raw = format!("r{i}");
        project.push(format!("CAST({} AS DOUBLE) AS {raw}", ident(name)));
        let finite = format!(
            "CASE WHEN isnan({raw}) OR abs({raw}) = double('Infinity') THEN NULL ELSE {raw} END"
        );
        project.push(format!("{finite} AS f{i}"));
        let f = format!("f{i}");
        select.extend([
            format!("count({f}) AS count{i}"),
            format!("count_if({raw} IS NULL OR isnan({raw})) AS missing{i}"),
            format!("count_if(abs({raw}) = double('Infinity')) AS infinite{i}"),
            format!("avg({f}) AS mean{i}"),
            format!("var_pop({f}) AS var{i}"),
            format!("min({f}) AS min{i}"),
            format!("max({f}) AS max{i}"),
            format!(
                "percentile_approx({f}, array({ranks}), {}) AS quantiles{i}",
                resolution.accuracy
            ),
        ]);
        if let Some(b) = expect.0.get(name) {
            select.push(format!("{} AS bins{i}", bin_counts(&f, b)));
            let (lo, hi) = b.range;
            select.push(format!(
                "count_if({f} < {} OR {f} > {}) AS outside{i}",
                double(lo),
                double(hi)
            ));
        }
    }
    for (j, name) in roles.categorical.iter().enumerate() {
        project.push(format!("CAST({} AS STRING) AS k{j}", ident(name)));
        select.extend([
            format!("count(k{j}) AS present{j}"),
            format!("count_if(k{j} IS NULL) AS absent{j}"),
        ]);
    }
    let inner = if project.is_empty() {
        format!("SELECT 1 AS one FROM {}", relation.as_from_item())
    } else {
        format!(
            "SELECT {} FROM {}",
            project.join(", "),
            relation.as_from_item()
        )
    };
    format!("SELECT {} FROM ({inner}) AS v", select.join(",\n  "))
}

/// `array(count of bin 0, …)` for bins (edges[i-1], edges[i]] of the finite column `f`.
fn bin_counts(f: &str, b: &Binning) -> String {
    let e: Vec<String> = b.edges.iter().map(|x| double(*x)).collect();
    let mut bins = Vec::with_capacity(e.len() + 1);
    for k in 0..=e.len() {
        let cond = match (k.checked_sub(1).map(|p| &e[p]), e.get(k)) {
            (None, Some(hi)) => format!("{f} <= {hi}"),
            (Some(lo), Some(hi)) => format!("{f} > {lo} AND {f} <= {hi}"),
            (Some(lo), None) => format!("{f} > {lo}"),
            (None, None) => format!("{f} IS NOT NULL"),
        };
        bins.push(format!("count_if({cond})"));
    }
    format!("array({})", bins.join(", "))
}

/// The query counting each categorical feature's categories: rows (feature index, value,
/// count), the most frequent [`MAX_CATEGORIES`] per feature. None without categorical features.
pub fn categories_query(relation: &Relation, roles: Columns<'_>) -> Option<String> {
    if roles.categorical.is_empty() {
        return None;
    }
    let pairs = roles
        .categorical
        .iter()
        .enumerate()
        .map(|(j, name)| format!("{j}, CAST({} AS STRING)", ident(name)))
        .collect::<Vec<_>>()
        .join(", ");
    Some(format!(
        "SELECT feature, value, n FROM (\
           SELECT feature, value, n, row_number() OVER (PARTITION BY feature ORDER BY n DESC, value) AS rank FROM (\
             SELECT feature, value, count(*) AS n FROM (\
               SELECT stack({}, {pairs}) AS (feature, value) FROM {}\
             ) AS s WHERE value IS NOT NULL GROUP BY feature, value\
           ) AS c\
         ) AS r WHERE rank <= {MAX_CATEGORIES}",
        roles.categorical.len(),
        relation.as_from_item()
    ))
}

/// A result that is not what the query asked for.
#[derive(Debug, thiserror::Error)]
#[error("Spark's summary has no usable `{column}`: {message}")]
pub struct BadSummary {
    pub column: String,
    pub message: String,
}

fn bad(column: &str, message: impl ToString) -> BadSummary {
    BadSummary {
        column: column.to_string(),
        message: message.to_string(),
    }
}

/// The schema as the local readers name types (polars dtypes).
pub fn schema_of(frame: &DataFrame) -> Vec<(String, String)> {
    frame
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().to_string()))
        .collect()
}

/// The one-row result of [`numbers_query`] and the rows of [`categories_query`], as a profile.
pub fn profile_of(
    schema: Vec<(String, String)>,
    roles: Columns<'_>,
    expect: &Expectation,
    resolution: Resolution,
    numbers: &DataFrame,
    categories: Option<&DataFrame>,
) -> Result<Profile, BadSummary> {
    let row = Row1(numbers);
    let mut features = Vec::new();
    for (i, name) in roles.numerical.iter().enumerate() {
        features.push(FeatureProfile {
            name: name.clone(),
            summary: Summary::Numerical(numerical(&row, i, expect.0.get(name), resolution)?),
        });
    }
    let mut counted = match categories {
        Some(frame) => categories_of(frame, roles.categorical.len())?,
        None => Vec::new(),
    };
    for (j, name) in roles.categorical.iter().enumerate() {
        let counts = counted.get_mut(j).map(std::mem::take).unwrap_or_default();
        let present = row.u64(&format!("present{j}"))?;
        let kept: u64 = counts.values().sum();
        features.push(FeatureProfile {
            name: name.clone(),
            summary: Summary::Categorical(CategoricalProfile {
                counts,
                missing: row.u64(&format!("absent{j}"))?,
                other: present.saturating_sub(kept),
            }),
        });
    }
    Ok(Profile {
        format: crate::profile::FORMAT,
        rows: row.u64("n_rows")?,
        schema,
        features,
    })
}

fn numerical(
    row: &Row1<'_>,
    i: usize,
    binning: Option<&Binning>,
    resolution: Resolution,
) -> Result<NumericalProfile, BadSummary> {
    let count = row.u64(&format!("count{i}"))?;
    let range = match (row.f64(&format!("min{i}"))?, row.f64(&format!("max{i}"))?) {
        (Some(lo), Some(hi)) if count > 0 => Some((lo, hi)),
        _ => None,
    };
    let quantiles = row.doubles(&format!("quantiles{i}"))?;
    let binned = match binning {
        Some(b) => {
            let counts = row.longs(&format!("bins{i}"))?;
            if counts.len() != b.edges.len() + 1 {
                return Err(bad(&format!("bins{i}"), "a count per bin was expected"));
            }
            Some(Binned {
                edges: b.edges.clone(),
                counts,
                range: b.range,
                outside: row.u64(&format!("outside{i}"))?,
            })
        }
        None => None,
    };
    let variance = row.f64(&format!("var{i}"))?.unwrap_or(0.0);
    Ok(NumericalProfile {
        count,
        missing: row.u64(&format!("missing{i}"))?,
        infinite: row.u64(&format!("infinite{i}"))?,
        mean: row.f64(&format!("mean{i}"))?.unwrap_or(0.0),
        m2: variance * count as f64,
        range,
        values: Values::Quantiles(QuantileTable {
            n: count,
            rank_error: 1.0 / resolution.accuracy as f64,
            quantiles: if count == 0 { Vec::new() } else { quantiles },
        }),
        binned,
    })
}

/// Category counts per feature index from the rows of [`categories_query`].
fn categories_of(
    frame: &DataFrame,
    features: usize,
) -> Result<Vec<BTreeMap<String, u64>>, BadSummary> {
    let column = |name: &str| frame.column(name).map_err(|e| bad(name, e));
    let feature = column("feature")?
        .cast(&DataType::UInt64)
        .map_err(|e| bad("feature", e))?;
    let value = column("value")?
        .cast(&DataType::String)
        .map_err(|e| bad("value", e))?;
    let n = column("n")?
        .cast(&DataType::UInt64)
        .map_err(|e| bad("n", e))?;
    let (feature, value, n) = (
        feature.u64().map_err(|e| bad("feature", e))?,
        value.str().map_err(|e| bad("value", e))?,
        n.u64().map_err(|e| bad("n", e))?,
    );
    let mut out = vec![BTreeMap::new(); features];
    for ((f, v), c) in feature.iter().zip(value.iter()).zip(n.iter()) {
        let (Some(f), Some(v), Some(c)) = (f, v, c) else {
            continue;
        };
        let slot = out
            .get_mut(f as usize)
            .ok_or_else(|| bad("feature", format!("{f} is not a feature index")))?;
        slot.insert(v.to_string(), c);
    }
    Ok(out)
}

/// The single row of an aggregate result, read by column name.
struct Row1<'a>(&'a DataFrame);

impl Row1<'_> {
    fn get(&self, name: &str) -> Result<AnyValue<'_>, BadSummary> {
        if self.0.height() != 1 {
            return Err(bad(
                name,
                format!("{} rows came back, not 1", self.0.height()),
            ));
        }
        self.0
            .column(name)
            .and_then(|c| c.get(0))
            .map_err(|e| bad(name, e))
    }

    fn u64(&self, name: &str) -> Result<u64, BadSummary> {
        match self.get(name)? {
            AnyValue::Null => Ok(0),
            v => v
                .extract::<u64>()
                .ok_or_else(|| bad(name, format!("{v} is not a count"))),
        }
    }

    fn f64(&self, name: &str) -> Result<Option<f64>, BadSummary> {
        match self.get(name)? {
            AnyValue::Null => Ok(None),
            v => v
                .extract::<f64>()
                .map(Some)
                .ok_or_else(|| bad(name, format!("{v} is not a number"))),
        }
    }

    fn list(&self, name: &str, dtype: &DataType) -> Result<Series, BadSummary> {
        match self.get(name)? {
            AnyValue::Null => Ok(Series::new_empty(name.into(), dtype)),
            AnyValue::List(s) => s.cast(dtype).map_err(|e| bad(name, e)),
            v => Err(bad(name, format!("{v} is not an array"))),
        }
    }

    fn doubles(&self, name: &str) -> Result<Vec<f64>, BadSummary> {
        let s = self.list(name, &DataType::Float64)?;
        let ca = s.f64().map_err(|e| bad(name, e))?;
        ca.iter()
            .map(|v| v.ok_or_else(|| bad(name, "a quantile is null")))
            .collect()
    }

    fn longs(&self, name: &str) -> Result<Vec<u64>, BadSummary> {
        let s = self.list(name, &DataType::UInt64)?;
        let ca = s.u64().map_err(|e| bad(name, e))?;
        Ok(ca.iter().map(Option::unwrap_or_default).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NUMERICAL: [&str; 2] = ["x", "we`ird"];

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    /// Identifiers are quoted (a backtick doubled), edges are written so they read back to
    /// the same double, and the bins follow the profile's (lo, hi] rule.
    #[test]
    fn queries_quote_names_and_keep_edges_exact() {
        let (numerical, categorical) = (names(&NUMERICAL), names(&["c"]));
        let roles = || Columns {
            numerical: &numerical,
            categorical: &categorical,
        };
        let mut expect = Expectation::default();
        expect.0.insert(
            "x".into(),
            Binning {
                edges: vec![0.1, 1e-300],
                range: (-1.5, 2.0),
            },
        );
        let q = numbers_query(
            &Relation::Table("db.events".into()),
            roles(),
            &expect,
            Resolution::for_epsilon(0.001),
        );
        assert!(q.contains("CAST(`we``ird` AS DOUBLE) AS r1"), "{q}");
        assert!(q.contains("array(count_if(f0 <= CAST('0.1' AS DOUBLE)), count_if(f0 > CAST('0.1' AS DOUBLE) AND f0 <= CAST('1e-300' AS DOUBLE)), count_if(f0 > CAST('1e-300' AS DOUBLE))) AS bins0"), "{q}");
        assert!(
            q.contains("percentile_approx(f1, array(0.0D, 0.001D,"),
            "{q}"
        );
        assert!(q.contains(", 2000) AS quantiles1"), "{q}");
        assert!(!q.contains("bins1"), "{q}");
        assert!(q.ends_with("FROM db.events) AS v"), "{q}");
        let c = categories_query(&Relation::Query("SELECT * FROM t".into()), roles()).unwrap();
        assert!(c.contains("stack(1, 0, CAST(`c` AS STRING))"), "{c}");
        assert!(c.contains("FROM (SELECT * FROM t) AS src"), "{c}");
    }

    /// ε = 0.001 asks for 1,001 quantiles at accuracy 2,000: answers within 0.001.
    #[test]
    fn the_rank_error_is_split_between_the_table_and_spark() {
        let r = Resolution::for_epsilon(0.001);
        assert_eq!((r.steps, r.accuracy), (1000, 2000));
        let table = QuantileTable {
            n: 10,
            rank_error: 1.0 / r.accuracy as f64,
            quantiles: vec![0.0; r.steps + 1],
        };
        assert!((table.epsilon() - 0.001).abs() < 1e-15);
    }
}
