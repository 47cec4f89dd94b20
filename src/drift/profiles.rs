//! Drift between two profiles ([`crate::profile`]): the same tests and the same rule as
//! [`super::detect`], from summaries instead of rows. A numerical feature whose values both
//! sides kept is tested exactly, by the same code as rows. Otherwise Kolmogorov–Smirnov runs
//! on the sketches as Apache DataSketches' KS test does: D is the largest gap between the two
//! CDFs (evaluated on both sides' quantiles), and the threshold is widened by both sides'
//! rank errors ε — the p-value is that of D − ε, so the correction across features and the
//! effect gate apply unchanged and a feature drifts only when D passes the critical value
//! plus ε. The effect size is the Wasserstein distance between the quantile functions. PSI
//! and Jensen–Shannon use the current side's exact counts on the reference's bins when the
//! reader knew them. Category counts are exact.
//!
//! Pure: must not do I/O.

use std::collections::BTreeMap;

use super::Measured;
use super::{
    Categories, DriftConfig, DriftReport, FeatureDrift, Multivariate, categorical_counted,
    conclude, histogram_over, normalised, numerical_skeleton, numerical_sorted, pooled,
};
use crate::profile::{CategoricalProfile, Cdf, NumericalProfile, Profile, Summary, Values};
use crate::stats;

/// Quantiles per side on which sketched CDFs are compared (D is then at most 1/GRID below
/// the sketches' own).
const GRID: usize = 4096;

/// Compare the current profile with the reference's, feature by feature.
pub fn detect_profiles(
    reference: &Profile,
    current: &Profile,
    config: &DriftConfig,
    min_rows: usize,
) -> DriftReport {
    let pairs: Vec<(&str, &Summary, &Summary)> = reference
        .features
        .iter()
        .filter_map(|f| Some((f.name.as_str(), &f.summary, current.feature(&f.name)?)))
        .collect();
    // Numerical features first, as the check of rows orders them.
    let (mut ordered, categories): (Vec<_>, Vec<_>) = pairs
        .iter()
        .partition(|(_, r, _)| matches!(r, Summary::Numerical(_)));
    ordered.extend(categories);
    let measure = |(name, r, c): &&(&str, &Summary, &Summary)| match (r, c) {
        (Summary::Numerical(r), Summary::Numerical(c)) => Some(numerical(name, r, c, config)),
        (Summary::Categorical(r), Summary::Categorical(c)) => Some(categorical(name, r, c, config)),
        // A feature whose kind changed: the quality gate reports it.
        _ => None,
    };
    let features = crate::par::filter_map(&ordered, ordered.len() > 1, measure);
    let insufficient_data = reference.rows < min_rows as u64 || current.rows < min_rows as u64;
    let multivariate = config.multivariate.map(|_| {
        Multivariate::Failed(
            "the data reconstruction error needs the rows, and this check read summaries; \
             raise check.memory_budget to test it"
                .to_string(),
        )
    });
    conclude(features, insufficient_data, multivariate, config)
}

fn numerical(
    name: &str,
    r: &NumericalProfile,
    c: &NumericalProfile,
    config: &DriftConfig,
) -> FeatureDrift {
    let missing_current = (c.missing + c.infinite) as usize;
    if let (Values::Exact(a), Values::Exact(b)) = (&r.values, &c.values) {
        return numerical_sorted(name, a, b, missing_current, config);
    }
    let (a, b) = (r.cdf(), c.cdf());
    let (n, m) = (r.count as usize, c.count as usize);
    let rank_error = a.epsilon() + b.epsilon();
    let measured = Measured {
        d: ks_statistic(&a, &b),
        p_value: |d: f64| stats::ks_p_value((d - rank_error).max(0.0), n, m),
        normalised_wasserstein: normalised(quantile_wasserstein(&a, &b), r.std_dev()),
        binned: &|| binned(r, c, &a, &b, config.bins),
    };
    let mut f = numerical_skeleton(name, config, (n, m, missing_current));
    f.rank_error = Some(rank_error);
    f.histogram = match (r.range, c.range) {
        (Some((lo_a, hi_a)), Some((lo_b, hi_b))) => {
            histogram_over((lo_a.min(lo_b), hi_a.max(hi_b)), &|edges| {
                (counts_on(&a, edges, n), counts_on(&b, edges, m))
            })
        }
        _ => None,
    };
    measured.apply(&mut f, config);
    f
}

/// Points at which both CDFs are compared: every value of a small exact side, else the
/// side's quantiles at GRID ranks.
fn grid(a: &Cdf<'_>, b: &Cdf<'_>) -> Vec<f64> {
    let mut points = Vec::new();
    for side in [a, b] {
        match side {
            Cdf::Exact(v) if v.len() <= 2 * GRID => points.extend_from_slice(v),
            _ => points.extend((0..=GRID).filter_map(|i| side.quantile(i as f64 / GRID as f64))),
        }
    }
    points.sort_unstable_by(f64::total_cmp);
    points.dedup();
    points
}

/// The largest gap between the two CDFs.
fn ks_statistic(a: &Cdf<'_>, b: &Cdf<'_>) -> f64 {
    grid(a, b)
        .into_iter()
        .map(|x| (a.rank(x) - b.rank(x)).abs())
        .fold(0.0, f64::max)
}

/// Wasserstein-1 as the mean gap between the quantile functions, at GRID mid-ranks.
fn quantile_wasserstein(a: &Cdf<'_>, b: &Cdf<'_>) -> f64 {
    let gaps = (0..GRID).filter_map(|i| {
        let u = (i as f64 + 0.5) / GRID as f64;
        Some((a.quantile(u)? - b.quantile(u)?).abs())
    });
    gaps.sum::<f64>() / GRID as f64
}

/// Counts of `n` values per bin of `edges`, from the CDF.
fn counts_on(cdf: &Cdf<'_>, edges: &[f64], n: usize) -> Vec<f64> {
    let mut counts = Vec::with_capacity(edges.len() + 1);
    let mut below = 0.0;
    for e in edges {
        let at = cdf.rank(*e) * n as f64;
        counts.push(at - below);
        below = at;
    }
    counts.push(n as f64 - below);
    counts
}

/// Both sides' counts on the reference's bins: exact values counted, the current side's
/// counts from its reader when it knew these bins, else from the sketch.
fn binned(
    r: &NumericalProfile,
    c: &NumericalProfile,
    a: &Cdf<'_>,
    b: &Cdf<'_>,
    bins: usize,
) -> super::BinCounts {
    let Some(binning) = r.binning(bins) else {
        return (Vec::new(), Vec::new());
    };
    let edges = &binning.edges;
    let count = |p: &NumericalProfile, cdf: &Cdf<'_>| match &p.values {
        Values::Exact(v) => stats::bin_counts(v, edges),
        Values::Sketch(_) | Values::Quantiles(_) => counts_on(cdf, edges, p.count as usize),
    };
    let current = match &c.binned {
        Some(known) if &known.edges == edges => known.counts.iter().map(|&k| k as f64).collect(),
        _ => count(c, b),
    };
    (count(r, a), current)
}

fn categorical(
    name: &str,
    r: &CategoricalProfile,
    c: &CategoricalProfile,
    config: &DriftConfig,
) -> FeatureDrift {
    let mut counts: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (k, v) in &r.counts {
        counts.entry(k).or_default().0 += *v as f64;
    }
    for (k, v) in &c.counts {
        counts.entry(k).or_default().1 += *v as f64;
    }
    if r.other + c.other > 0 {
        let other = counts.entry("(other)").or_default();
        other.0 += r.other as f64;
        other.1 += c.other as f64;
    }
    let cats: Categories = pooled(counts);
    categorical_counted(name, cats, (c.present() + c.missing) as usize, config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Expectation, Options, ProfileBuilder};

    use crate::profile::normal_draws as normal;

    type Columns = (Vec<(String, Vec<f64>)>, Vec<(String, Vec<String>)>);

    fn columns(shift: f64, n: usize, seed: u64) -> Columns {
        let cats = (0..n)
            .map(|i| {
                if shift > 0.2 && i % 5 == 0 {
                    "a"
                } else {
                    ["a", "b", "c"][i % 3]
                }
                .into()
            })
            .collect();
        (
            vec![
                ("x".into(), normal(n, shift, seed)),
                ("y".into(), normal(n, 0.0, seed + 1)),
            ],
            vec![("seg".into(), cats)],
        )
    }

    fn profile(c: &Columns, options: Options, expect: &Expectation) -> Profile {
        ProfileBuilder::of_columns(Vec::new(), &c.0, &c.1, options, expect)
    }

    fn rows(c: &Columns) -> crate::data::Table {
        crate::data::Table::from_columns(c.0.clone(), c.1.clone())
    }

    /// Profiles that kept every value give the report of the rows, number for number.
    #[test]
    fn exact_profiles_give_the_report_of_the_rows() {
        let (r, c) = (columns(0.0, 3000, 1), columns(0.3, 2000, 9));
        let config = DriftConfig::default();
        let want = super::super::detect(&rows(&r), &rows(&c), &config, 50);
        let options = Options::default();
        let (pr, pc) = (
            profile(&r, options, &Expectation::default()),
            profile(&c, options, &Expectation::default()),
        );
        let got = detect_profiles(&pr, &pc, &config, 50);
        assert_eq!(got, want);
        assert!(got.features[0].drifted && got.features[2].drifted && !got.features[1].drifted);
    }

    /// Sketched (200,000 rows a side, exact values kept only up to 1,000): the statistic is
    /// within the rank error of the exact one, the verdicts are the exact check's, PSI on the
    /// reference's bins is counted exactly for the current side.
    #[test]
    fn sketched_profiles_reach_the_exact_verdicts() {
        let options = Options {
            exact_limit: 1000,
            ..Options::default()
        };
        let config = DriftConfig {
            min_effect_numerical: 0.0,
            ..DriftConfig::default()
        };
        let r = columns(0.0, 200_000, 3);
        let pr = profile(&r, options, &Expectation::default());
        let expect = pr.expectation(config.bins);
        for (shift, seed) in [(0.0, 11), (0.05, 12), (0.25, 13)] {
            let c = columns(shift, 200_000, seed);
            let exact = super::super::detect(&rows(&r), &rows(&c), &config, 50);
            let pc = profile(&c, options, &expect);
            let sketched = detect_profiles(&pr, &pc, &config, 50);
            for (e, s) in exact.features.iter().zip(&sketched.features) {
                assert_eq!(
                    (e.name.as_str(), e.drifted),
                    (s.name.as_str(), s.drifted),
                    "{shift}"
                );
                if e.kind == crate::drift::FeatureKind::Numerical {
                    let eps = s.rank_error.unwrap();
                    assert!(eps > 0.0 && eps <= 0.002, "{eps}");
                    assert!((e.statistic - s.statistic).abs() <= eps, "{e:?} {s:?}");
                    let (ew, sw) = (e.effect.as_ref().unwrap(), s.effect.as_ref().unwrap());
                    assert!((ew.value - sw.value).abs() < 0.005, "{ew:?} {sw:?}");
                    if shift == 0.0 {
                        // Widened by ε: a quiet day's D (~0.003 here) is mostly sketch noise.
                        let (ep, sp) = (e.p_value.unwrap(), s.p_value.unwrap());
                        assert!(sp > ep.max(0.9), "exact p {ep}, sketched p {sp}");
                    }
                } else {
                    assert_eq!(e.statistic, s.statistic);
                }
            }
        }
        let psi = DriftConfig {
            method: crate::drift::Method::Psi,
            ..config
        };
        let c = columns(0.25, 200_000, 13);
        let exact = super::super::detect(&rows(&r), &rows(&c), &psi, 50);
        let sketched = detect_profiles(&pr, &profile(&c, options, &pr.expectation(10)), &psi, 50);
        let (e, s) = (exact.features[0].statistic, sketched.features[0].statistic);
        assert!((e - s).abs() < 0.002, "PSI exact {e} sketched {s}");
    }
}
