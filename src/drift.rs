//! Drift statistics and the drift decision: per-feature tests, multiple-testing correction
//! across features, effect sizes, and the dataset rule. Pure functions on slices; no I/O.
//!
//! Numerical features: two-sample Kolmogorov–Smirnov (statistic exact; p-value from the
//! asymptotic Kolmogorov distribution with Stephens' small-sample correction) and the
//! Wasserstein-1 distance divided by the reference standard deviation as the effect size.
//! Categorical features: chi-square on the 2×k table of category counts (statrs for the
//! distribution) and the Jensen–Shannon distance (base 2) as the effect size. A feature
//! drifts when its corrected p-value is below `alpha` *and* its effect reaches the minimum:
//! significance alone alarms on noise in small windows and on trivia in large ones.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use crate::config::{Correction, DriftConfig};
use crate::data::Table;

/// Result of one feature's test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureDrift {
    pub feature: String,
    /// "numerical" or "categorical".
    pub kind: String,
    /// Test used: "ks" or "chi_square".
    pub method: String,
    pub statistic: f64,
    pub p_value: f64,
    /// p-value after the correction across features.
    pub p_adjusted: f64,
    /// Effect-size measure: "wasserstein_norm" or "jensen_shannon".
    pub effect_method: String,
    pub effect: f64,
    pub drifted: bool,
    pub reference_rows: usize,
    pub current_rows: usize,
    /// Rows dropped from the test because the value was missing.
    pub missing_current: usize,
    /// Categories in the current window that the reference never had.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unseen_categories: Vec<String>,
}

/// The drift part of a cycle's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftReport {
    pub features: Vec<FeatureDrift>,
    pub drifted_features: usize,
    pub share_drifted: f64,
    pub dataset_drift: bool,
    /// Fewer rows than `min_rows` in either window: no conclusion either way.
    pub insufficient_data: bool,
    pub correction: Correction,
    pub alpha: f64,
}

/// Two-sample KS statistic D = sup |F_ref(x) - F_cur(x)| on NaN-free, sorted samples.
pub fn ks_statistic(a_sorted: &[f64], b_sorted: &[f64]) -> f64 {
    let (n, m) = (a_sorted.len(), b_sorted.len());
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < n && j < m {
        let x = a_sorted[i].min(b_sorted[j]);
        while i < n && a_sorted[i] <= x {
            i += 1;
        }
        while j < m && b_sorted[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    d
}

/// Survival function of the Kolmogorov distribution, Q(λ) = 2 Σ (-1)^(k-1) exp(-2k²λ²).
pub fn kolmogorov_sf(lambda: f64) -> f64 {
    if lambda <= 0.0 {
        return 1.0;
    }
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if (k as i64) % 2 == 1 { term } else { -term };
        if term < 1e-16 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

/// Asymptotic two-sided p-value of a two-sample KS statistic with Stephens' correction.
pub fn ks_p_value(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let en = (n as f64 * m as f64 / (n + m) as f64).sqrt();
    kolmogorov_sf((en + 0.12 + 0.11 / en) * d)
}

/// Wasserstein-1 distance between two sorted samples (area between the empirical CDFs).
pub fn wasserstein(a_sorted: &[f64], b_sorted: &[f64]) -> f64 {
    let (n, m) = (a_sorted.len(), b_sorted.len());
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (mut i, mut j) = (0usize, 0usize);
    let mut prev = a_sorted[0].min(b_sorted[0]);
    let mut area = 0.0;
    while i < n || j < m {
        let next = match (a_sorted.get(i), b_sorted.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        area += (i as f64 / n as f64 - j as f64 / m as f64).abs() * (next - prev);
        prev = next;
        while i < n && a_sorted[i] <= next {
            i += 1;
        }
        while j < m && b_sorted[j] <= next {
            j += 1;
        }
    }
    area
}

fn std_dev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

fn sorted_finite(x: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// Chi-square test of homogeneity on a 2×k table of counts; returns (statistic, p-value).
/// Categories absent from both rows are dropped.
pub fn chi_square(reference: &[f64], current: &[f64]) -> (f64, f64) {
    let (nr, nc): (f64, f64) = (reference.iter().sum(), current.iter().sum());
    let total = nr + nc;
    let mut stat = 0.0;
    let mut k = 0usize;
    for (&r, &c) in reference.iter().zip(current) {
        let col = r + c;
        if col == 0.0 {
            continue;
        }
        k += 1;
        let (er, ec) = (nr * col / total, nc * col / total);
        stat += (r - er).powi(2) / er + (c - ec).powi(2) / ec;
    }
    if k < 2 || nr == 0.0 || nc == 0.0 {
        return (0.0, 1.0);
    }
    let p = ChiSquared::new((k - 1) as f64)
        .map(|d| d.sf(stat))
        .unwrap_or(1.0);
    (stat, p)
}

/// Jensen–Shannon distance (base 2, in [0, 1]) between two count vectors.
pub fn jensen_shannon(reference: &[f64], current: &[f64]) -> f64 {
    let (nr, nc): (f64, f64) = (reference.iter().sum(), current.iter().sum());
    if nr == 0.0 || nc == 0.0 {
        return 0.0;
    }
    let mut js = 0.0;
    for (&r, &c) in reference.iter().zip(current) {
        let (p, q) = (r / nr, c / nc);
        let m = (p + q) / 2.0;
        if p > 0.0 {
            js += 0.5 * p * (p / m).log2();
        }
        if q > 0.0 {
            js += 0.5 * q * (q / m).log2();
        }
    }
    js.max(0.0).sqrt()
}

/// Adjust p-values for testing several features at once.
pub fn adjust(p: &[f64], correction: Correction) -> Vec<f64> {
    let n = p.len();
    match correction {
        Correction::None => p.to_vec(),
        Correction::Bonferroni => p.iter().map(|v| (v * n as f64).min(1.0)).collect(),
        Correction::BenjaminiHochberg => {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
            let mut out = vec![0.0; n];
            let mut running = 1.0f64;
            for (rank, &i) in order.iter().enumerate().rev() {
                running = running.min(p[i] * n as f64 / (rank + 1) as f64);
                out[i] = running.min(1.0);
            }
            out
        }
    }
}

fn numerical_feature(name: &str, reference: &[f64], current: &[f64]) -> FeatureDrift {
    let a = sorted_finite(reference);
    let b = sorted_finite(current);
    let d = ks_statistic(&a, &b);
    let sd = std_dev(&a);
    let w = wasserstein(&a, &b);
    FeatureDrift {
        feature: name.to_string(),
        kind: "numerical".into(),
        method: "ks".into(),
        statistic: d,
        p_value: ks_p_value(d, a.len(), b.len()),
        p_adjusted: f64::NAN,
        effect_method: "wasserstein_norm".into(),
        effect: if sd > 0.0 {
            w / sd
        } else if w > 0.0 {
            f64::INFINITY
        } else {
            0.0
        },
        drifted: false,
        reference_rows: a.len(),
        current_rows: b.len(),
        missing_current: current.len() - b.len(),
        unseen_categories: Vec::new(),
    }
}

fn categorical_feature(name: &str, reference: &[String], current: &[String]) -> FeatureDrift {
    use std::collections::BTreeMap;
    let mut counts: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for v in reference.iter().filter(|v| !v.is_empty()) {
        counts.entry(v).or_default().0 += 1.0;
    }
    for v in current.iter().filter(|v| !v.is_empty()) {
        counts.entry(v).or_default().1 += 1.0;
    }
    let unseen = counts
        .iter()
        .filter(|(_, (r, _))| *r == 0.0)
        .map(|(k, _)| k.to_string())
        .collect();
    let r: Vec<f64> = counts.values().map(|c| c.0).collect();
    let c: Vec<f64> = counts.values().map(|c| c.1).collect();
    let (stat, p) = chi_square(&r, &c);
    let present = c.iter().sum::<f64>() as usize;
    FeatureDrift {
        feature: name.to_string(),
        kind: "categorical".into(),
        method: "chi_square".into(),
        statistic: stat,
        p_value: p,
        p_adjusted: f64::NAN,
        effect_method: "jensen_shannon".into(),
        effect: jensen_shannon(&r, &c),
        drifted: false,
        reference_rows: r.iter().sum::<f64>() as usize,
        current_rows: present,
        missing_current: current.len() - present,
        unseen_categories: unseen,
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
}

/// The statistical detector of this module (tests, correction, effect sizes).
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

/// Compare the current window with the reference, feature by feature.
pub fn detect(
    reference: &Table,
    current: &Table,
    config: &DriftConfig,
    min_rows: usize,
) -> DriftReport {
    let mut features = Vec::new();
    for (name, r) in &reference.numerical {
        if let Some(c) = current.numerical(name) {
            features.push(numerical_feature(name, r, c));
        }
    }
    for (name, r) in &reference.categorical {
        if let Some(c) = current.categorical(name) {
            features.push(categorical_feature(name, r, c));
        }
    }
    let insufficient_data = reference.rows < min_rows || current.rows < min_rows;
    let p: Vec<f64> = features.iter().map(|f| f.p_value).collect();
    for (f, adj) in features.iter_mut().zip(adjust(&p, config.correction)) {
        f.p_adjusted = adj;
        let min_effect = if f.kind == "numerical" {
            config.min_effect_numerical
        } else {
            config.min_effect_categorical
        };
        f.drifted = !insufficient_data && adj < config.alpha && f.effect >= min_effect;
    }
    let drifted = features.iter().filter(|f| f.drifted).count();
    let share = if features.is_empty() {
        0.0
    } else {
        drifted as f64 / features.len() as f64
    };
    let dataset_drift = drifted > 0 && share >= config.drift_share;
    DriftReport {
        features,
        drifted_features: drifted,
        share_drifted: share,
        dataset_drift,
        insufficient_data,
        correction: config.correction,
        alpha: config.alpha,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn ks_statistic_matches_scipy() {
        // scipy.stats.ks_2samp([1,2,3,4,5], [3,4,5,6,7,8]).statistic == 0.5 (at x = 5: 1 - 3/6)
        let d = ks_statistic(&[1., 2., 3., 4., 5.], &[3., 4., 5., 6., 7., 8.]);
        assert!(close(d, 0.5, 1e-12), "{d}");
        assert_eq!(ks_statistic(&[1., 2.], &[1., 2.]), 0.0);
        assert_eq!(ks_statistic(&[1., 2.], &[3., 4.]), 1.0);
    }

    #[test]
    fn kolmogorov_tail_values() {
        // Q(1.0) = 0.26999967, Q(1.36) ≈ 0.0494 (the classic 5% critical value).
        assert!(close(kolmogorov_sf(1.0), 0.269_999_67, 1e-7));
        assert!(close(kolmogorov_sf(1.358_1), 0.05, 1e-4));
        assert_eq!(kolmogorov_sf(0.0), 1.0);
    }

    #[test]
    fn wasserstein_matches_scipy() {
        // scipy.stats.wasserstein_distance([0,1,3], [5,6,8]) == 5.0
        assert!(close(wasserstein(&[0., 1., 3.], &[5., 6., 8.]), 5.0, 1e-12));
        // scipy.stats.wasserstein_distance([0,1], [0,1,2,3]) == 1.0 (0.25 + 0.5 + 0.25)
        assert!(close(wasserstein(&[0., 1.], &[0., 1., 2., 3.]), 1.0, 1e-12));
    }

    #[test]
    fn chi_square_matches_scipy() {
        // scipy.stats.chi2_contingency([[10, 20, 30], [20, 20, 20]], correction=False)
        // -> statistic 5.3333333, p 0.0694835
        let (s, p) = chi_square(&[10., 20., 30.], &[20., 20., 20.]);
        assert!(close(s, 5.333_333_333, 1e-6), "{s}");
        assert!(close(p, 0.069_483_5, 1e-6), "{p}");
    }

    #[test]
    fn jensen_shannon_bounds() {
        assert_eq!(jensen_shannon(&[1., 1.], &[1., 1.]), 0.0);
        assert!(close(jensen_shannon(&[1., 0.], &[0., 1.]), 1.0, 1e-12));
    }

    #[test]
    fn benjamini_hochberg_matches_statsmodels() {
        // statsmodels multipletests([0.01, 0.04, 0.03, 0.20], method="fdr_bh")[1]
        // -> [0.04, 0.05333333, 0.05333333, 0.2]
        let adj = adjust(&[0.01, 0.04, 0.03, 0.20], Correction::BenjaminiHochberg);
        let want = [0.04, 0.053_333_333, 0.053_333_333, 0.2];
        for (a, w) in adj.iter().zip(want) {
            assert!(close(*a, w, 1e-8), "{adj:?}");
        }
        assert_eq!(
            adjust(&[0.01, 0.5], Correction::Bonferroni),
            vec![0.02, 1.0]
        );
    }
}
