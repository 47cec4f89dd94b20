//! A profile: what the drift check and the quality gate need to know of one side's data,
//! without its rows. Per numerical feature: the counts of finite, missing and infinite
//! values, mean and variance (Chan's pairwise update, so batches and part files combine
//! exactly), the range, and the distribution itself — the sorted values while there are at
//! most `exact_limit` of them, beyond that a KLL sketch with a stated rank error
//! ([`sketch`]); and, when the other side's bin edges were known while reading, exact counts
//! per bin and outside the other side's range. Per categorical feature: exact counts per
//! category. Plus the row count and the schema. Profiles merge: the profile of many part
//! files is the merge of theirs.
//!
//! A reference profile is what a model version keeps instead of re-reading its training
//! rows every day; a current window is profiled the same way when it does not fit in memory.
//!
//! Pure: must not do I/O (reading files into a profile is `data::stream`'s) and must not
//! know the drift rule (that is `drift`'s, which reads profiles).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod codec;
pub mod sketch;

pub use sketch::{Cdf, Sketch};

/// The profile format this build writes and reads.
pub const FORMAT: u32 = 1;

/// Values per numerical feature kept exactly (sorted) in a profile; beyond, a sketch.
pub const DEFAULT_EXACT_LIMIT: usize = 100_000;

/// Distinct categories counted per feature; later new ones are counted together as
/// [`CategoricalProfile::other`].
pub const MAX_CATEGORIES: usize = 100_000;

/// How a profile is built.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Rank error of the sketches.
    pub epsilon: f64,
    /// Values per numerical feature kept exactly.
    pub exact_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            epsilon: sketch::DEFAULT_EPSILON,
            exact_limit: DEFAULT_EXACT_LIMIT,
        }
    }
}

/// One side's data, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: u32,
    pub rows: u64,
    /// Column names and types, in file order.
    pub schema: Vec<(String, String)>,
    /// The features, numerical first, each in the order given when building.
    pub features: Vec<FeatureProfile>,
}

/// One feature's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    pub name: String,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Summary {
    Numerical(NumericalProfile),
    Categorical(CategoricalProfile),
}

/// A numerical feature's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericalProfile {
    /// Finite values.
    pub count: u64,
    /// Empty cells and NaN.
    pub missing: u64,
    pub infinite: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest and largest finite value; None without finite values.
    pub range: Option<(f64, f64)>,
    pub values: Values,
    /// Exact counts on the other side's bins, when they were known while reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binned: Option<Binned>,
}

/// The finite values of a numerical feature: all of them, or a sketch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Values {
    /// Sorted ascending (stored as base64 of little-endian doubles).
    Exact(#[serde(with = "codec::doubles")] Vec<f64>),
    /// DataSketches' KLL bytes, base64.
    Sketch(#[serde(with = "codec::sketch")] Sketch),
    /// Quantiles at evenly spaced ranks, computed elsewhere (Spark's `percentile_approx`).
    Quantiles(QuantileTable),
}

/// The quantiles of `n` finite values at ranks 0, 1/(m-1), …, 1 (the first is the minimum,
/// the last the maximum), each within `rank_error` of its rank. Answers read from it are off
/// by at most [`QuantileTable::epsilon`]: the quantiles' own error plus half a step of the
/// table. Does not merge: the values it summarises are gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileTable {
    pub n: u64,
    pub rank_error: f64,
    #[serde(with = "codec::doubles")]
    pub quantiles: Vec<f64>,
}

impl QuantileTable {
    /// Bound on the rank error of answers from this table.
    pub fn epsilon(&self) -> f64 {
        let steps = self.quantiles.len().saturating_sub(1).max(1) as f64;
        self.rank_error + 0.5 / steps
    }
}

/// Bins and a range of the other side, with this side's exact counts on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binned {
    /// The other side's bin edges: bin i holds (edges[i-1], edges[i]].
    pub edges: Vec<f64>,
    /// Counts per bin (edges.len() + 1 bins).
    pub counts: Vec<u64>,
    /// The other side's [min, max], and this side's finite values outside it.
    pub range: (f64, f64),
    pub outside: u64,
}

/// A categorical feature's summary.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CategoricalProfile {
    pub counts: BTreeMap<String, u64>,
    /// Empty cells.
    pub missing: u64,
    /// Values of categories beyond the first [`MAX_CATEGORIES`].
    #[serde(default)]
    pub other: u64,
}

/// What is known of the other side while reading this one: its bins and range per
/// numerical feature, so this side's counts on them are exact whatever its size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expectation(pub BTreeMap<String, Binning>);

/// A feature's bin edges and range.
#[derive(Debug, Clone, PartialEq)]
pub struct Binning {
    pub edges: Vec<f64>,
    pub range: (f64, f64),
}

/// Two profiles that cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("feature `{0}` is numerical in one profile and categorical in the other")]
    Kind(String),
    #[error(
        "the profiles describe different features ({0} vs {1}); every part must have the same columns"
    )]
    Features(String, String),
    #[error("feature `{name}`: {source}")]
    Sketch {
        name: String,
        source: sketch::BadSketch,
    },
}

impl Profile {
    /// The feature called `name`.
    pub fn feature(&self, name: &str) -> Option<&Summary> {
        self.features
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.summary)
    }

    /// Bins of every numerical feature at its `bins` quantiles (exact values: numpy's linear
    /// interpolation as the exact check; a sketch: its quantiles), and its range: what the
    /// other side counts on while it is read.
    pub fn expectation(&self, bins: usize) -> Expectation {
        Expectation(
            self.features
                .iter()
                .filter_map(|f| match &f.summary {
                    Summary::Numerical(n) => Some((f.name.clone(), n.binning(bins)?)),
                    Summary::Categorical(_) => None,
                })
                .collect(),
        )
    }

    /// Fold `other` (a profile of more rows with the same columns) into this one.
    pub fn merge(&mut self, other: Profile, options: &Options) -> Result<(), MergeError> {
        let names = |p: &Profile| {
            p.features
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if names(self) != names(&other) {
            return Err(MergeError::Features(names(self), names(&other)));
        }
        for (mine, theirs) in self.features.iter_mut().zip(other.features) {
            match (&mut mine.summary, theirs.summary) {
                (Summary::Numerical(a), Summary::Numerical(b)) => {
                    a.merge(b, options).map_err(|source| MergeError::Sketch {
                        name: mine.name.clone(),
                        source,
                    })?
                }
                (Summary::Categorical(a), Summary::Categorical(b)) => a.merge(b),
                _ => return Err(MergeError::Kind(mine.name.clone())),
            }
        }
        self.rows += other.rows;
        Ok(())
    }
}

impl NumericalProfile {
    /// Sample standard deviation (ddof 1, as the exact check's effect size).
    pub fn std_dev(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2 / (self.count - 1) as f64).sqrt()
        }
    }

    /// The distribution as the drift tests query it.
    pub fn cdf(&self) -> Cdf<'_> {
        match &self.values {
            Values::Exact(v) => Cdf::exact(v),
            Values::Sketch(s) => Cdf::of_sketch(s),
            Values::Quantiles(t) => Cdf::Table(t),
        }
    }

    /// Whether the values are kept exactly.
    pub fn is_exact(&self) -> bool {
        matches!(self.values, Values::Exact(_))
    }

    /// The feature's bins at its `bins` quantiles, and its range.
    pub fn binning(&self, bins: usize) -> Option<Binning> {
        let range = self.range?;
        let edges = match &self.values {
            Values::Exact(v) => crate::stats::quantile_edges(v, bins),
            Values::Sketch(_) | Values::Quantiles(_) => {
                let cdf = self.cdf();
                let mut e: Vec<f64> = (1..bins)
                    .filter_map(|k| cdf.quantile(k as f64 / bins as f64))
                    .collect();
                e.dedup();
                e
            }
        };
        Some(Binning { edges, range })
    }

    fn merge(
        &mut self,
        other: NumericalProfile,
        options: &Options,
    ) -> Result<(), sketch::BadSketch> {
        let (a, b) = (self.moments(), other.moments());
        let m = a.combine(&b);
        (self.count, self.mean, self.m2, self.range) = (m.count, m.mean, m.m2, m.range());
        self.missing += other.missing;
        self.infinite += other.infinite;
        self.binned = match (self.binned.take(), other.binned) {
            (Some(mut x), Some(y)) if x.edges == y.edges && x.range == y.range => {
                x.outside += y.outside;
                x.counts.iter_mut().zip(y.counts).for_each(|(c, d)| *c += d);
                Some(x)
            }
            _ => None,
        };
        let mine = std::mem::replace(&mut self.values, Values::Exact(Vec::new()));
        self.values = match (mine, other.values) {
            (Values::Exact(x), Values::Exact(y)) if x.len() + y.len() <= options.exact_limit => {
                let mut all = x;
                all.extend(y);
                all.sort_unstable_by(f64::total_cmp);
                Values::Exact(all)
            }
            (x, y) => {
                let mut s = into_sketch(x, options.epsilon)?;
                s.merge(&into_sketch(y, options.epsilon)?)?;
                Values::Sketch(s)
            }
        };
        Ok(())
    }

    fn moments(&self) -> Moments {
        let (min, max) = self.range.unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
        Moments {
            count: self.count,
            mean: self.mean,
            m2: self.m2,
            min,
            max,
        }
    }
}

fn into_sketch(values: Values, epsilon: f64) -> Result<Sketch, sketch::BadSketch> {
    match values {
        Values::Sketch(s) => Ok(s),
        Values::Exact(v) => {
            let mut s = Sketch::with_epsilon(epsilon);
            s.extend(v);
            Ok(s)
        }
        Values::Quantiles(_) => Err(sketch::BadSketch::new(
            "a quantile table (computed by Spark) does not merge; summarise the union of the parts in Spark instead",
        )),
    }
}

impl CategoricalProfile {
    fn merge(&mut self, other: CategoricalProfile) {
        self.missing += other.missing;
        self.other += other.other;
        for (k, v) in other.counts {
            if let Some(c) = self.counts.get_mut(&k) {
                *c += v;
            } else if self.counts.len() < MAX_CATEGORIES {
                self.counts.insert(k, v);
            } else {
                self.other += v;
            }
        }
    }

    /// Values present (not missing).
    pub fn present(&self) -> u64 {
        self.counts.values().sum::<u64>() + self.other
    }
}

/// Count, mean, sum of squared deviations and range of finite values; combined by Chan et
/// al.'s pairwise formula, exact for any split of the data.
#[derive(Debug, Clone, Copy)]
struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Moments {
    const EMPTY: Moments = Moments {
        count: 0,
        mean: 0.0,
        m2: 0.0,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
    };

    /// The moments of the finite values of a batch (two passes: mean, then deviations).
    fn of(batch: &[f64]) -> Moments {
        let finite = || batch.iter().copied().filter(|v| v.is_finite());
        let (count, sum, min, max) = finite().fold(
            (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY),
            |(n, s, lo, hi), v| (n + 1, s + v, lo.min(v), hi.max(v)),
        );
        if count == 0 {
            return Moments::EMPTY;
        }
        let mean = sum / count as f64;
        let m2 = finite().map(|v| (v - mean) * (v - mean)).sum();
        Moments {
            count,
            mean,
            m2,
            min,
            max,
        }
    }

    fn combine(&self, other: &Moments) -> Moments {
        if other.count == 0 {
            return *self;
        }
        if self.count == 0 {
            return *other;
        }
        let n = (self.count + other.count) as f64;
        let delta = other.mean - self.mean;
        Moments {
            count: self.count + other.count,
            mean: self.mean + delta * other.count as f64 / n,
            m2: self.m2 + other.m2 + delta * delta * self.count as f64 * other.count as f64 / n,
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }

    fn range(&self) -> Option<(f64, f64)> {
        (self.count > 0).then_some((self.min, self.max))
    }
}

mod build;
pub use build::{CategoricalAccumulator, NumericalAccumulator, ProfileBuilder};

/// `n` draws of N(shift, 1) from `seed`, for the tests of profiles and of what reads them.
#[cfg(test)]
pub(crate) fn normal_draws(n: usize, shift: f64, seed: u64) -> Vec<f64> {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    rand_distr::StandardNormal
        .sample_iter(&mut rng)
        .take(n)
        .map(|v: f64| v + shift)
        .collect()
}

#[cfg(test)]
mod tests;
