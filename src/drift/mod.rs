//! The drift check: which method tests each feature, the per-feature verdict, and the
//! dataset rule. Pure; the statistics themselves are in [`crate::stats`].
//!
//! A feature's method is its per-feature override, else the pipeline's `drift.method`, else
//! `auto`: Kolmogorov–Smirnov for numerical features, chi-square for categorical ones (a
//! two-proportion Z-test when the feature has exactly two categories). Tests drift when
//! their p-value, corrected across the features tested (Benjamini–Hochberg by default), is
//! below `alpha` *and* their effect size reaches a minimum — normalised Wasserstein for
//! numerical features, Jensen–Shannon for categorical ones — because p-values alone alarm on
//! noise in small windows and on trivia in large ones. Distance methods (PSI, Wasserstein,
//! Jensen–Shannon) drift when the distance reaches their threshold. The dataset drifts when
//! the share of drifted features reaches `drift_share` (0 = any), or a critical feature
//! drifts; below `min_rows` the answer is "insufficient data", neither drift nor silence.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::data::Table;
use crate::stats::{self, Correction, PMethod};

mod config;
mod profiles;
pub mod reconstruction;
pub use config::{DriftConfig, MultivariateConfig, RawDrift};
pub use profiles::detect_profiles;

/// A drift method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// KS for numerical, chi-square for categorical (Z-test if binary).
    Auto,
    Ks,
    ChiSquare,
    ZTest,
    Psi,
    Wasserstein,
    JensenShannon,
}

impl Method {
    pub const ALL: [Method; 7] = [
        Method::Auto,
        Method::Ks,
        Method::ChiSquare,
        Method::ZTest,
        Method::Psi,
        Method::Wasserstein,
        Method::JensenShannon,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Auto => "auto",
            Method::Ks => "ks",
            Method::ChiSquare => "chi_square",
            Method::ZTest => "z_test",
            Method::Psi => "psi",
            Method::Wasserstein => "wasserstein",
            Method::JensenShannon => "jensen_shannon",
        }
    }

    /// Statistical tests give p-values; the others are distances with a threshold.
    pub fn is_test(self) -> bool {
        matches!(self, Method::Ks | Method::ChiSquare | Method::ZTest)
    }

    /// Whether the method applies to a feature of this kind.
    pub fn fits(self, kind: FeatureKind) -> bool {
        match self {
            Method::Ks | Method::Wasserstein => kind == FeatureKind::Numerical,
            Method::ChiSquare | Method::ZTest => kind == FeatureKind::Categorical,
            Method::Auto | Method::Psi | Method::JensenShannon => true,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method name that is not one.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{0}` is not a drift method; use auto, ks, chi_square (chi2), z_test, psi, wasserstein or jensen_shannon (js)"
)]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Method::Auto,
            "ks" => Method::Ks,
            "chi_square" | "chi2" => Method::ChiSquare,
            "z_test" | "z" => Method::ZTest,
            "psi" => Method::Psi,
            "wasserstein" => Method::Wasserstein,
            "jensen_shannon" | "js" => Method::JensenShannon,
            other => return Err(UnknownMethod(other.to_string())),
        })
    }
}

/// Whether a feature is numerical or categorical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureKind {
    Numerical,
    Categorical,
}

impl FeatureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeatureKind::Numerical => "numerical",
            FeatureKind::Categorical => "categorical",
        }
    }
}

/// The effect size that accompanies a test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub method: Method,
    pub value: f64,
    pub minimum: f64,
}

/// Result of one feature's check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub name: String,
    pub kind: FeatureKind,
    pub method: Method,
    /// D for KS, χ² for chi-square, z for the Z-test, the distance for distance methods.
    pub statistic: f64,
    /// None for distance methods.
    pub p_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_method: Option<PMethod>,
    /// p-value after the correction across the tested features.
    pub p_adjusted: Option<f64>,
    /// `alpha` for tests, the distance threshold for distance methods.
    pub threshold: f64,
    /// Effect size (tests only).
    pub effect: Option<Effect>,
    pub drifted: bool,
    pub reference_rows: usize,
    pub current_rows: usize,
    /// Current rows left out because the value was missing (or not finite).
    pub missing_current: usize,
    /// Categories in the current window that the reference never had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen_categories: Vec<String>,
    /// Both distributions as shares per bin (numerical) or per category, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Histogram>,
    /// Set when a side was summarised by a quantile sketch: the bound on the KS statistic's
    /// error (both sides' rank errors), by which the test's threshold was widened. None:
    /// exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_error: Option<f64>,
}

/// Shares of the reference and the current window per bin or category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Bins of the numerical histograms in reports.
pub const HISTOGRAM_BINS: usize = 20;

fn shares(counts: &[f64]) -> Vec<f64> {
    let total: f64 = counts.iter().sum();
    counts
        .iter()
        .map(|c| if total > 0.0 { c / total } else { 0.0 })
        .collect()
}

/// Equal-width bins over the range both sorted samples cover.
fn numerical_histogram(a: &[f64], b: &[f64]) -> Option<Histogram> {
    let range = (a.first()?.min(*b.first()?), a.last()?.max(*b.last()?));
    histogram_over(range, &|edges| {
        (stats::bin_counts(a, edges), stats::bin_counts(b, edges))
    })
}

/// Both sides' counts on a set of bins (reference, current).
type BinCounts = (Vec<f64>, Vec<f64>);

/// Equal-width bins over `(lo, hi)`, with both sides' counts on the inner edges.
fn histogram_over((lo, hi): (f64, f64), counts: &dyn Fn(&[f64]) -> BinCounts) -> Option<Histogram> {
    let width = (hi - lo) / HISTOGRAM_BINS as f64;
    if width.is_nan() || width <= 0.0 {
        return None;
    }
    let edges: Vec<f64> = (1..HISTOGRAM_BINS).map(|i| lo + width * i as f64).collect();
    let labels = (0..HISTOGRAM_BINS)
        .map(|i| format!("{:.3}", lo + width * (i as f64 + 0.5)))
        .collect();
    let (reference, current) = counts(&edges);
    Some(Histogram {
        labels,
        reference: shares(&reference),
        current: shares(&current),
    })
}

impl FeatureDrift {
    /// The number a dashboard plots: the effect size of a test, or the distance.
    pub fn score(&self) -> (Method, f64) {
        match &self.effect {
            Some(e) => (e.method, e.value),
            None => (self.method, self.statistic),
        }
    }

    /// One line for logs and decisions.
    pub fn describe(&self) -> String {
        let (m, v) = self.score();
        match self.p_adjusted {
            Some(p) => format!("{} ({m} {v:.3}, {} p_adj {p:.2e})", self.name, self.method),
            None => format!("{} ({m} {v:.3} >= {})", self.name, self.threshold),
        }
    }
}

/// The dataset-level verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetDrift {
    pub drifted: bool,
    pub drifted_features: usize,
    pub drifted_share: f64,
    pub correction: Correction,
    /// Critical features that drifted (any one makes the dataset drift).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub critical_drifted: Vec<String>,
}

/// The drift part of a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub features: Vec<FeatureDrift>,
    pub dataset: DatasetDrift,
    /// Fewer rows than `min_rows` in either window: no conclusion either way.
    pub insufficient_data: bool,
    pub alpha: f64,
    /// The data reconstruction error, when `multivariate = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multivariate: Option<Multivariate>,
}

/// The multivariate test's outcome in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Multivariate {
    Measured(reconstruction::MultivariateDrift),
    /// It could not be computed (fewer than two features, a column missing): why. The
    /// per-feature tests still decide.
    Failed(String),
}

impl Multivariate {
    /// The measured result, when it drifted.
    pub fn drifted(&self) -> Option<&reconstruction::MultivariateDrift> {
        match self {
            Multivariate::Measured(m) if m.drifted => Some(m),
            _ => None,
        }
    }
}

impl DriftReport {
    pub fn dataset_drift(&self) -> bool {
        self.dataset.drifted
    }
}

/// The check step's contract: compare a current window with the reference.
pub trait Detector: Send + Sync {
    fn detect(
        &self,
        reference: &Table,
        current: &Table,
        config: &DriftConfig,
        min_rows: usize,
    ) -> DriftReport;

    /// The same from the two sides' profiles (a stored reference profile).
    fn detect_profiles(
        &self,
        reference: &crate::profile::Profile,
        current: &crate::profile::Profile,
        config: &DriftConfig,
        min_rows: usize,
    ) -> DriftReport {
        detect_profiles(reference, current, config, min_rows)
    }
}

/// The statistical detector of this module.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatisticalDetector;

impl Detector for StatisticalDetector {
    fn detect(
        &self,
        reference: &Table,
        current: &Table,
        config: &DriftConfig,
        min_rows: usize,
    ) -> DriftReport {
        detect(reference, current, config, min_rows)
    }
}

fn method_for(name: &str, kind: FeatureKind, config: &DriftConfig, categories: usize) -> Method {
    let chosen = config.methods.get(name).copied().unwrap_or(config.method);
    let chosen = if chosen.fits(kind) {
        chosen
    } else {
        Method::Auto
    };
    match (chosen, kind) {
        (Method::Auto, FeatureKind::Numerical) => Method::Ks,
        (Method::Auto, FeatureKind::Categorical) if categories == 2 => Method::ZTest,
        (Method::Auto, FeatureKind::Categorical) => Method::ChiSquare,
        (m, _) => m,
    }
}

fn distance_threshold(method: Method, config: &DriftConfig) -> f64 {
    match method {
        Method::Psi => config.psi_threshold,
        Method::Wasserstein => config.wasserstein_threshold,
        _ => config.jensen_shannon_threshold,
    }
}

fn numerical_feature(
    name: &str,
    reference: &[f64],
    current: &[f64],
    config: &DriftConfig,
) -> FeatureDrift {
    let a = stats::sorted_finite(reference);
    let b = stats::sorted_finite(current);
    numerical_sorted(name, &a, &b, current.len() - b.len(), config)
}

/// A numerical feature's test on both sides' sorted finite values.
fn numerical_sorted(
    name: &str,
    a: &[f64],
    b: &[f64],
    missing_current: usize,
    config: &DriftConfig,
) -> FeatureDrift {
    let (d, w) = stats::ks_and_wasserstein(a, b);
    let measured = Measured {
        d,
        p_value: |d| stats::ks_p_value(d, a.len(), b.len()),
        normalised_wasserstein: normalised(w, stats::std_dev(a)),
        binned: &|| {
            let edges = stats::quantile_edges(a, config.bins);
            (stats::bin_counts(a, &edges), stats::bin_counts(b, &edges))
        },
    };
    let mut f = numerical_skeleton(name, config, (a.len(), b.len(), missing_current));
    f.histogram = numerical_histogram(a, b);
    measured.apply(&mut f, config);
    f
}

/// A distance in units of the reference's standard deviation (infinite for a constant
/// reference that moved).
fn normalised(w: f64, sd: f64) -> f64 {
    if sd > 0.0 {
        w / sd
    } else if w > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}

/// A numerical feature's result before it is measured: the method, rows and threshold.
fn numerical_skeleton(
    name: &str,
    config: &DriftConfig,
    (reference_rows, current_rows, missing_current): (usize, usize, usize),
) -> FeatureDrift {
    let method = method_for(name, FeatureKind::Numerical, config, 0);
    FeatureDrift {
        name: name.to_string(),
        kind: FeatureKind::Numerical,
        method,
        statistic: 0.0,
        p_value: None,
        p_method: None,
        p_adjusted: None,
        threshold: distance_threshold(method, config),
        effect: None,
        drifted: false,
        reference_rows,
        current_rows,
        missing_current,
        unseen_categories: Vec::new(),
        histogram: None,
        rank_error: None,
    }
}

/// What a numerical comparison measured, exactly or from sketches: the KS statistic (as
/// tested: a sketched one is already lowered by its rank error), its p-value, the
/// normalised Wasserstein distance, and the counts on the reference's bins.
struct Measured<'a, P: Fn(f64) -> (f64, PMethod)> {
    d: f64,
    p_value: P,
    normalised_wasserstein: f64,
    binned: &'a dyn Fn() -> BinCounts,
}

impl<P: Fn(f64) -> (f64, PMethod)> Measured<'_, P> {
    /// Fill in the feature's statistic, p-value and effect by its method.
    fn apply(&self, f: &mut FeatureDrift, config: &DriftConfig) {
        match f.method {
            Method::Psi => {
                let (r, c) = (self.binned)();
                f.statistic = stats::psi(&r, &c);
            }
            Method::JensenShannon => {
                let (r, c) = (self.binned)();
                f.statistic = stats::jensen_shannon(&r, &c);
            }
            Method::Wasserstein => f.statistic = self.normalised_wasserstein,
            _ => {
                let (p, pm) = (self.p_value)(self.d);
                f.statistic = self.d;
                f.p_value = Some(p);
                f.p_method = Some(pm);
                f.threshold = config.alpha;
                f.effect = Some(Effect {
                    method: Method::Wasserstein,
                    value: self.normalised_wasserstein,
                    minimum: config.min_effect_numerical,
                });
            }
        }
    }
}

/// Category counts of both windows, with categories rare in both pooled into one bin.
struct Categories {
    reference: Vec<f64>,
    current: Vec<f64>,
    /// Category names in the order of the counts; the pooled rare bin is "(rare)".
    labels: Vec<String>,
    unseen: Vec<String>,
    present: usize,
}

/// A category with fewer occurrences than this in both windows together is pooled with the
/// other rare ones, so the chi-square approximation holds.
pub const RARE_CATEGORY_COUNT: f64 = 5.0;

fn categories(reference: &[String], current: &[String]) -> Categories {
    let mut counts: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for v in reference.iter().filter(|v| !v.is_empty()) {
        counts.entry(v).or_default().0 += 1.0;
    }
    for v in current.iter().filter(|v| !v.is_empty()) {
        counts.entry(v).or_default().1 += 1.0;
    }
    pooled(counts)
}

/// Both windows' counts per category, the rare ones pooled.
fn pooled(counts: BTreeMap<&str, (f64, f64)>) -> Categories {
    let unseen = counts
        .iter()
        .filter(|(_, (r, _))| *r == 0.0)
        .map(|(k, _)| k.to_string())
        .collect();
    let (mut r, mut c, mut labels, mut rare) = (Vec::new(), Vec::new(), Vec::new(), (0.0, 0.0));
    for (name, (rc, cc)) in &counts {
        if rc + cc < RARE_CATEGORY_COUNT {
            rare.0 += rc;
            rare.1 += cc;
        } else {
            r.push(*rc);
            c.push(*cc);
            labels.push(name.to_string());
        }
    }
    if rare.0 + rare.1 > 0.0 {
        r.push(rare.0);
        c.push(rare.1);
        labels.push("(rare)".to_string());
    }
    let present = c.iter().sum::<f64>() as usize;
    Categories {
        reference: r,
        current: c,
        labels,
        unseen,
        present,
    }
}

fn categorical_feature(
    name: &str,
    reference: &[String],
    current: &[String],
    config: &DriftConfig,
) -> FeatureDrift {
    let cats = categories(reference, current);
    categorical_counted(name, cats, current.len(), config)
}

/// A categorical feature's test on both sides' counts; `current_len` counts the missing too.
fn categorical_counted(
    name: &str,
    cats: Categories,
    current_len: usize,
    config: &DriftConfig,
) -> FeatureDrift {
    let method = method_for(name, FeatureKind::Categorical, config, cats.reference.len());
    let mut f = FeatureDrift {
        name: name.to_string(),
        kind: FeatureKind::Categorical,
        method,
        statistic: 0.0,
        p_value: None,
        p_method: None,
        p_adjusted: None,
        threshold: distance_threshold(method, config),
        effect: None,
        drifted: false,
        reference_rows: cats.reference.iter().sum::<f64>() as usize,
        current_rows: cats.present,
        missing_current: current_len - cats.present,
        unseen_categories: cats.unseen,
        histogram: Some(Histogram {
            labels: cats.labels.clone(),
            reference: shares(&cats.reference),
            current: shares(&cats.current),
        }),
        rank_error: None,
    };
    let js = stats::jensen_shannon(&cats.reference, &cats.current);
    match method {
        Method::Psi => f.statistic = stats::psi(&cats.reference, &cats.current),
        Method::JensenShannon => f.statistic = js,
        _ => {
            let (chi2, p) = stats::chi_square(&cats.reference, &cats.current);
            // With two categories the pooled two-proportion z-test is the same test:
            // z² = χ², same p-value; report z with the sign of the current share's change.
            f.statistic = if method == Method::ZTest {
                let share =
                    |v: &[f64]| v.first().copied().unwrap_or(0.0) / v.iter().sum::<f64>().max(1.0);
                chi2.sqrt()
                    .copysign(share(&cats.current) - share(&cats.reference))
            } else {
                chi2
            };
            f.p_value = Some(p);
            f.threshold = config.alpha;
            f.effect = Some(Effect {
                method: Method::JensenShannon,
                value: js,
                minimum: config.min_effect_categorical,
            });
        }
    }
    f
}

/// Compare the current window with the reference, feature by feature.
pub fn detect(
    reference: &Table,
    current: &Table,
    config: &DriftConfig,
    min_rows: usize,
) -> DriftReport {
    // Features are independent: test them on all cores when there is enough to test (the
    // order of the result is the reference's column order either way).
    let columns = reference.numerical.len() + reference.categorical.len();
    let parallel = crate::par::worth((reference.rows + current.rows) * columns);
    let mut features: Vec<FeatureDrift> =
        crate::par::filter_map(&reference.numerical, parallel, |(name, r)| {
            current
                .numerical(name)
                .map(|c| numerical_feature(name, r, c, config))
        });
    features.extend(crate::par::filter_map(
        &reference.categorical,
        parallel,
        |(name, r)| {
            current
                .categorical(name)
                .map(|c| categorical_feature(name, r, c, config))
        },
    ));
    let insufficient_data = reference.rows < min_rows || current.rows < min_rows;
    let multivariate = config
        .multivariate
        .map(|m| multivariate(reference, current, &m));
    conclude(features, insufficient_data, multivariate, config)
}

/// The rule over the features' results: the correction across the tested ones, each
/// feature's verdict, the dataset's.
fn conclude(
    mut features: Vec<FeatureDrift>,
    insufficient_data: bool,
    multivariate: Option<Multivariate>,
    config: &DriftConfig,
) -> DriftReport {
    let tested: Vec<usize> = (0..features.len())
        .filter(|&i| features[i].p_value.is_some())
        .collect();
    let p: Vec<f64> = tested.iter().filter_map(|&i| features[i].p_value).collect();
    for (&i, adj) in tested.iter().zip(stats::adjust(&p, config.correction)) {
        features[i].p_adjusted = Some(adj);
    }
    for f in &mut features {
        f.drifted = !insufficient_data
            && match (f.p_adjusted, &f.effect) {
                (Some(p), Some(e)) => p < config.alpha && e.value >= e.minimum,
                (Some(p), None) => p < config.alpha,
                (None, _) => f.statistic >= f.threshold,
            };
    }
    let drifted = features.iter().filter(|f| f.drifted).count();
    let share = if features.is_empty() {
        0.0
    } else {
        drifted as f64 / features.len() as f64
    };
    let critical_drifted: Vec<String> = features
        .iter()
        .filter(|f| f.drifted && config.critical_features.contains(&f.name))
        .map(|f| f.name.clone())
        .collect();
    let multivariate_drifted =
        !insufficient_data && multivariate.as_ref().is_some_and(|m| m.drifted().is_some());
    let dataset = DatasetDrift {
        drifted: (drifted > 0 && share >= config.drift_share)
            || !critical_drifted.is_empty()
            || multivariate_drifted,
        drifted_features: drifted,
        drifted_share: share,
        correction: config.correction,
        critical_drifted,
    };
    DriftReport {
        features,
        dataset,
        insufficient_data,
        alpha: config.alpha,
        multivariate,
    }
}

/// The data reconstruction error of `current`'s chunks against `reference`'s.
fn multivariate(reference: &Table, current: &Table, m: &MultivariateConfig) -> Multivariate {
    let size = m.chunk_size(reference.rows, current.rows);
    match reconstruction::Reconstruction::detect(reference, current, m.variance, size) {
        Ok(found) => Multivariate::Measured(found),
        Err(e) => Multivariate::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Table;

    fn table(numerical: Vec<(&str, Vec<f64>)>, categorical: Vec<(&str, Vec<&str>)>) -> Table {
        Table::from_columns(
            numerical
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            categorical
                .into_iter()
                .map(|(n, v)| (n.to_string(), v.into_iter().map(String::from).collect()))
                .collect(),
        )
    }

    fn config() -> DriftConfig {
        DriftConfig::default()
    }

    fn normal(n: usize, shift: f64, seed: u64) -> Vec<f64> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let d = Normal::new(shift, 1.0).unwrap();
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    #[test]
    fn auto_picks_ks_chi_square_and_z_test() {
        let r = table(
            vec![("x", normal(500, 0.0, 1))],
            vec![
                ("seg", ["a", "b", "c"].repeat(100)),
                ("flag", ["y", "n"].repeat(100)),
            ],
        );
        let report = detect(&r, &r, &config(), 50);
        let methods: Vec<Method> = report.features.iter().map(|f| f.method).collect();
        assert_eq!(methods, vec![Method::Ks, Method::ChiSquare, Method::ZTest]);
        assert!(!report.dataset.drifted);
        assert!(
            report
                .features
                .iter()
                .all(|f| f.p_adjusted == Some(1.0) || f.p_adjusted.unwrap() > 0.5)
        );
    }

    #[test]
    fn significance_and_size_are_both_required() {
        let r = table(vec![("x", normal(20_000, 0.0, 1))], vec![]);
        // Large windows: a 0.05σ shift is significant but too small to matter.
        let tiny = table(vec![("x", normal(20_000, 0.05, 2))], vec![]);
        let f = &detect(&r, &tiny, &config(), 50).features[0];
        assert!(f.p_adjusted.unwrap() < 0.05, "{f:?}");
        assert!(!f.drifted, "{f:?}");
        // A 0.5σ shift is both.
        let big = table(vec![("x", normal(20_000, 0.5, 3))], vec![]);
        let report = detect(&r, &big, &config(), 50);
        assert!(report.features[0].drifted && report.dataset.drifted);
    }

    #[test]
    fn distance_methods_use_their_thresholds_and_overrides_apply() {
        let r = table(
            vec![("x", normal(5000, 0.0, 1)), ("y", normal(5000, 0.0, 2))],
            vec![],
        );
        let c = table(
            vec![("x", normal(5000, 1.0, 3)), ("y", normal(5000, 0.0, 4))],
            vec![],
        );
        let mut cfg = config();
        cfg.method = Method::Psi;
        cfg.methods.insert("y".into(), Method::Wasserstein);
        let report = detect(&r, &c, &cfg, 50);
        let (x, y) = (&report.features[0], &report.features[1]);
        assert_eq!((x.method, y.method), (Method::Psi, Method::Wasserstein));
        assert!(
            x.p_value.is_none() && x.drifted && x.statistic > 0.2,
            "{x:?}"
        );
        assert!(!y.drifted && y.statistic < 0.1, "{y:?}");
        // A method that does not fit the kind falls back to auto.
        cfg.methods.insert("y".into(), Method::ChiSquare);
        assert_eq!(detect(&r, &c, &cfg, 50).features[1].method, Method::Ks);
    }

    #[test]
    fn critical_features_share_and_min_rows() {
        let r = table(
            vec![("x", normal(1000, 0.0, 1)), ("y", normal(1000, 0.0, 2))],
            vec![],
        );
        let c = table(
            vec![("x", normal(1000, 1.0, 3)), ("y", normal(1000, 0.0, 4))],
            vec![],
        );
        let mut cfg = config();
        cfg.drift_share = 0.75;
        assert!(!detect(&r, &c, &cfg, 50).dataset.drifted, "1 of 2 < 0.75");
        cfg.critical_features = vec!["x".into()];
        let report = detect(&r, &c, &cfg, 50);
        assert!(report.dataset.drifted);
        assert_eq!(report.dataset.critical_drifted, vec!["x".to_string()]);
        let report = detect(&r, &c, &cfg, 5000);
        assert!(report.insufficient_data && !report.dataset.drifted);
    }

    #[test]
    fn rare_categories_are_pooled_and_unseen_ones_reported() {
        let mut cur = ["a", "b"].repeat(50);
        cur.extend(["new", "rare1"]);
        let mut reference = ["a", "b"].repeat(50);
        reference.push("rare2");
        let f = &detect(
            &table(vec![], vec![("c", reference)]),
            &table(vec![], vec![("c", cur)]),
            &config(),
            10,
        )
        .features[0];
        assert_eq!(
            f.unseen_categories,
            vec!["new".to_string(), "rare1".to_string()]
        );
        // a, b and one pooled bin of the rare ones: three cells, chi-square.
        assert_eq!(f.method, Method::ChiSquare);
        assert_eq!(f.current_rows, 102);
    }

    #[test]
    fn method_names_parse() {
        for m in Method::ALL {
            assert_eq!(m.as_str().parse::<Method>().unwrap(), m);
        }
        assert_eq!("chi2".parse::<Method>().unwrap(), Method::ChiSquare);
        assert_eq!("js".parse::<Method>().unwrap(), Method::JensenShannon);
        assert!("t_test".parse::<Method>().is_err());
    }
}

/// The acceptance simulation of the drift rule: with the default config, quiet days rarely
/// trigger (the naive per-feature p < 0.05 rule fires on most of them), a real shift is
/// caught, and a real but negligible shift in a huge window is not.
#[cfg(test)]
mod simulation {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    const FEATURES: usize = 20;

    fn window(rows: usize, shift: &[f64], rng: &mut rand::rngs::StdRng) -> Table {
        let numerical = (0..FEATURES)
            .map(|f| {
                let values = (0..rows)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(rng);
                        z + shift[f]
                    })
                    .collect();
                (format!("f{f}"), values)
            })
            .collect();
        Table::from_columns(numerical, vec![])
    }

    fn naive(report: &DriftReport) -> bool {
        report
            .features
            .iter()
            .any(|f| f.p_value.is_some_and(|p| p < 0.05))
    }

    /// `k` of `n` days is consistent with a daily rate `rate`: within three standard
    /// deviations of `n · rate`.
    fn within_binomial(k: usize, n: usize, rate: f64) -> bool {
        let (mean, sd) = (n as f64 * rate, (n as f64 * rate * (1.0 - rate)).sqrt());
        (k as f64 - mean).abs() <= 3.0 * sd
    }

    #[test]
    fn quiet_days_rarely_trigger_and_real_shifts_do() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(500);
        let cfg = DriftConfig::default();
        // The correction alone, without the effect-size floor: what it is tested on.
        let bh_only = DriftConfig {
            min_effect_numerical: 0.0,
            min_effect_categorical: 0.0,
            ..DriftConfig::default()
        };
        let reference = window(10_000, &[0.0; FEATURES], &mut rng);
        let (mut ours, mut bh, mut theirs) = (0, 0, 0);
        let days = 500;
        for _ in 0..days {
            let current = window(10_000, &[0.0; FEATURES], &mut rng);
            let report = detect(&reference, &current, &cfg, 50);
            ours += usize::from(report.dataset.drifted);
            theirs += usize::from(naive(&report));
            bh += usize::from(detect(&reference, &current, &bh_only, 50).dataset.drifted);
        }
        eprintln!(
            "quiet days flagged: ours {ours}/{days}, BH alone {bh}/{days}, naive {theirs}/{days}"
        );
        // The default rule: the effect-size floor keeps every quiet day clean.
        assert_eq!(ours, 0, "quiet days flagged: {ours} of {days}");
        // Benjamini–Hochberg alone, all 20 nulls true: a day is flagged with probability
        // at most alpha (its FDR is then its family-wise error); KS p-values of continuous
        // data make it about alpha.
        assert!(
            bh as f64 <= days as f64 * bh_only.alpha + 3.0 * (days as f64 * 0.05 * 0.95).sqrt(),
            "BH alone flagged {bh} of {days} quiet days"
        );
        // The naive rule: 1 − 0.95^20 = 64.2 % of quiet days.
        let naive_rate = 1.0 - 0.95f64.powi(FEATURES as i32);
        assert!(
            within_binomial(theirs, days, naive_rate),
            "the naive rule fired on {theirs} of {days} quiet days; expected about {:.0}",
            naive_rate * days as f64
        );

        let mut shift = [0.0; FEATURES];
        shift[3] = 0.25;
        let (mut caught, shifted_days) = (0, 100);
        for _ in 0..shifted_days {
            let report = detect(&reference, &window(10_000, &shift, &mut rng), &cfg, 50);
            caught += usize::from(report.dataset.drifted && report.features[3].drifted);
        }
        eprintln!("0.25σ caught {caught}/{shifted_days}");
        assert_eq!(
            caught, shifted_days,
            "0.25σ shift caught on {caught} of {shifted_days} days"
        );
    }

    #[test]
    fn a_negligible_shift_in_a_huge_window_is_not_drift() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1_000_000);
        let reference = window(1_000_000, &[0.0; FEATURES], &mut rng);
        let current = window(1_000_000, &[0.01; FEATURES], &mut rng);
        let report = detect(&reference, &current, &DriftConfig::default(), 50);
        assert!(
            naive(&report),
            "0.01σ on 1M rows is significant for a p-value-only rule"
        );
        assert!(
            !report.dataset.drifted,
            "but it is not drift worth retraining on: {:?}",
            report.dataset
        );
    }
}
