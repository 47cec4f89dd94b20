//! One numerical column's distribution when its values are too many to keep: Apache
//! DataSketches' KLL quantile sketch, sized for a stated rank error ε, mergeable, and stored
//! in DataSketches' own binary format (so any DataSketches library, Java, C++ or Python, can
//! read a profile's sketches). [`Cdf`] answers the two questions the drift tests ask of
//! either form — the share of values at or below x, and the value at a rank — with the rank
//! error of its answers (0 for exact values).
//!
//! Pure: must not do I/O. KLL compacts with random coin flips (the library's own generator),
//! so two sketches of the same stream may differ within ε.

use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch, SortedView};

/// The rank error a sketch is sized for unless the configuration says otherwise.
pub const DEFAULT_EPSILON: f64 = 0.001;

/// The smallest and largest rank error a sketch can be sized for (k = 65,535 and k = 8).
pub const EPSILON_RANGE: (f64, f64) = (0.000_05, 0.25);

/// A KLL sketch of finite doubles.
#[derive(Debug, Clone, PartialEq)]
pub struct Sketch(KllSketch<KllFloat<f64>>);

/// A sketch's bytes did not parse.
#[derive(Debug, thiserror::Error)]
#[error("not a DataSketches KLL sketch of doubles: {0}")]
pub struct BadSketch(String);

impl BadSketch {
    pub fn new(why: &str) -> BadSketch {
        BadSketch(why.to_string())
    }
}

impl Sketch {
    /// An empty sketch whose rank error is at most `epsilon` (with 99% confidence, as
    /// DataSketches states it): k from DataSketches' fitted curve ε = 2.296 / k^0.9723.
    pub fn with_epsilon(epsilon: f64) -> Sketch {
        let eps = epsilon.clamp(EPSILON_RANGE.0, EPSILON_RANGE.1);
        let k = (2.296 / eps).powf(1.0 / 0.9723).ceil().clamp(8.0, 65_535.0) as u16;
        match KllSketch::new(k) {
            Ok(s) => Sketch(s),
            // k is clamped into the library's range above.
            Err(_) => Sketch(KllSketch::default()),
        }
    }

    /// Add the finite values of a batch (NaN and infinities are the caller's to count).
    pub fn extend(&mut self, values: impl IntoIterator<Item = f64>) {
        for v in values {
            if let Ok(item) = KllFloat::<f64>::new(v) {
                self.0.update(item);
            }
        }
    }

    /// Fold another sketch in (its values are then part of this one's stream).
    pub fn merge(&mut self, other: &Sketch) -> Result<(), BadSketch> {
        self.0.merge(&other.0).map_err(|e| BadSketch(e.to_string()))
    }

    /// Values seen.
    pub fn n(&self) -> u64 {
        self.0.n()
    }

    /// The rank error of this sketch's answers (of the smallest k merged into it).
    pub fn epsilon(&self) -> f64 {
        if self.0.is_estimation_mode() {
            self.0.normalized_rank_error()
        } else {
            // Nothing compacted yet: every value is retained, the answers are exact.
            0.0
        }
    }

    /// DataSketches' serialised form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Sketch, BadSketch> {
        KllSketch::deserialize(bytes)
            .map(Sketch)
            .map_err(|e| BadSketch(e.to_string()))
    }

    fn view(&self) -> SortedView<KllFloat<f64>> {
        self.0.sorted_view()
    }
}

/// A column's cumulative distribution, exact or from a sketch.
pub enum Cdf<'a> {
    /// Sorted finite values.
    Exact(&'a [f64]),
    Sketch {
        view: SortedView<KllFloat<f64>>,
        epsilon: f64,
        n: u64,
    },
    /// Quantiles at evenly spaced ranks.
    Table(&'a super::QuantileTable),
}

impl<'a> Cdf<'a> {
    pub fn exact(sorted: &'a [f64]) -> Cdf<'a> {
        Cdf::Exact(sorted)
    }

    pub fn of_sketch(sketch: &Sketch) -> Cdf<'static> {
        Cdf::Sketch {
            view: sketch.view(),
            epsilon: sketch.epsilon(),
            n: sketch.n(),
        }
    }

    /// Values described.
    pub fn n(&self) -> u64 {
        match self {
            Cdf::Exact(v) => v.len() as u64,
            Cdf::Sketch { n, .. } => *n,
            Cdf::Table(t) => t.n,
        }
    }

    /// Bound on the error of [`Cdf::rank`].
    pub fn epsilon(&self) -> f64 {
        match self {
            Cdf::Exact(_) => 0.0,
            Cdf::Sketch { epsilon, .. } => *epsilon,
            Cdf::Table(t) => t.epsilon(),
        }
    }

    /// Share of values at or below `x`.
    pub fn rank(&self, x: f64) -> f64 {
        match self {
            Cdf::Exact([]) => 0.0,
            Cdf::Exact(v) => v.partition_point(|a| *a <= x) as f64 / v.len() as f64,
            Cdf::Sketch { view, .. } => match KllFloat::<f64>::new(x) {
                Ok(item) => view.rank(&item, SearchCriteria::Inclusive).unwrap_or(0.0),
                Err(_) => 0.0,
            },
            Cdf::Table(t) => table_rank(&t.quantiles, x),
        }
    }

    /// The value at rank `q` in [0, 1] (the smallest value whose rank reaches q); None when
    /// there are no values.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let q = q.clamp(0.0, 1.0);
        match self {
            Cdf::Exact(v) => {
                let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
                v.get(i).copied()
            }
            Cdf::Sketch { view, .. } => view
                .quantile(q, SearchCriteria::Inclusive)
                .ok()
                .flatten()
                .map(KllFloat::into_inner),
            Cdf::Table(t) => {
                let steps = t.quantiles.len().checked_sub(1)?;
                t.quantiles
                    .get((q * steps as f64).round() as usize)
                    .copied()
            }
        }
    }
}

/// Rank of `x` from quantiles at ranks i/(m-1): below the first 0, at or above the last 1,
/// else the middle of the step it falls in (the true rank lies within the step).
fn table_rank(quantiles: &[f64], x: f64) -> f64 {
    let m = quantiles.len();
    let k = quantiles.partition_point(|q| *q <= x);
    match k {
        0 => 0.0,
        _ if k >= m => 1.0,
        _ => (k as f64 - 0.5) / (m - 1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(n: usize, seed: u64) -> Vec<f64> {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        rand_distr::StandardNormal
            .sample_iter(&mut rng)
            .take(n)
            .collect()
    }

    /// A sketch sized for ε = 0.001 answers ranks of a million values within ε, survives its
    /// byte form, and merging two halves' sketches describes the whole.
    #[test]
    fn ranks_within_epsilon_through_bytes_and_merge() {
        let values = normal(1_000_000, 7);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let (mut a, mut b) = (
            Sketch::with_epsilon(DEFAULT_EPSILON),
            Sketch::with_epsilon(DEFAULT_EPSILON),
        );
        a.extend(values[..500_000].iter().copied());
        b.extend(values[500_000..].iter().copied());
        a.merge(&b).unwrap();
        let a = Sketch::from_bytes(&a.to_bytes()).unwrap();
        assert_eq!(a.n(), 1_000_000);
        let eps = a.epsilon();
        assert!(eps > 0.0 && eps <= DEFAULT_EPSILON, "{eps}");
        let (cdf, exact) = (Cdf::of_sketch(&a), Cdf::exact(&sorted));
        let worst = (-30..=30)
            .map(|i| i as f64 / 10.0)
            .map(|x| (cdf.rank(x) - exact.rank(x)).abs())
            .fold(0.0, f64::max);
        assert!(worst <= eps, "worst rank error {worst} > {eps}");
        assert!(worst > 0.0, "a compacted sketch is not exact");
        let median = cdf.quantile(0.5).unwrap();
        assert!((exact.rank(median) - 0.5).abs() <= eps, "{median}");
        assert!(Sketch::from_bytes(b"nonsense").is_err());
    }

    #[test]
    fn exact_quantiles_and_ranks() {
        let v = [1.0, 2.0, 2.0, 3.0];
        let c = Cdf::exact(&v);
        assert_eq!(c.rank(2.0), 0.75);
        assert_eq!(c.rank(0.0), 0.0);
        assert_eq!(c.quantile(0.5), Some(2.0));
        assert_eq!(c.quantile(0.0), Some(1.0));
        assert_eq!(c.quantile(1.0), Some(3.0));
        assert_eq!(Cdf::exact(&[]).quantile(0.5), None);
    }
}
