//! `[pipeline.drift]`: its raw TOML shape, its defaults (here and nowhere else) and its
//! validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Method;
use crate::stats::Correction;
use crate::validate::Checker;

/// `[pipeline.drift]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawDrift {
    pub alpha: Option<f64>,
    pub correction: Option<String>,
    pub min_effect_numerical: Option<f64>,
    pub min_effect_categorical: Option<f64>,
    pub drift_share: Option<f64>,
    pub method: Option<String>,
    pub methods: Option<BTreeMap<String, String>>,
    pub psi_threshold: Option<f64>,
    pub wasserstein_threshold: Option<f64>,
    pub jensen_shannon_threshold: Option<f64>,
    pub bins: Option<i64>,
    pub critical_features: Option<Vec<String>>,
    pub consecutive: Option<i64>,
    pub multivariate: Option<bool>,
    pub multivariate_variance: Option<f64>,
    pub multivariate_chunk_size: Option<i64>,
}

/// How features are tested and when the dataset drifts.
#[derive(Debug, Clone)]
pub struct DriftConfig {
    pub alpha: f64,
    pub correction: Correction,
    pub min_effect_numerical: f64,
    pub min_effect_categorical: f64,
    /// Share of drifted features for dataset drift; 0 means "any feature".
    pub drift_share: f64,
    /// Method for every feature unless overridden in `methods`.
    pub method: Method,
    /// Per-feature method overrides.
    pub methods: BTreeMap<String, Method>,
    pub psi_threshold: f64,
    pub wasserstein_threshold: f64,
    pub jensen_shannon_threshold: f64,
    /// Quantile bins of the reference for PSI and Jensen–Shannon on numerical features.
    pub bins: usize,
    /// Any of these drifting makes the dataset drift.
    pub critical_features: Vec<String>,
    /// Retrain on drift only after this many consecutive checks found it (1 = at once).
    pub consecutive: usize,
    /// The data reconstruction error joins the dataset rule (`multivariate = true`).
    pub multivariate: Option<MultivariateConfig>,
}

/// `multivariate = true`: a change in how the features move together (the data
/// reconstruction error of the current window's chunks above the reference chunks' mean
/// + 3σ) makes the dataset drift, like a drifted feature does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultivariateConfig {
    /// Share of the reference's variance the kept principal components explain.
    pub variance: f64,
    /// Rows per chunk; `None`: the current window's rows, at most a fifth of the
    /// reference's (the thresholds need several reference chunks).
    pub chunk_size: Option<usize>,
}

impl MultivariateConfig {
    /// The fewest reference chunks the default chunk size leaves for the thresholds.
    pub const REFERENCE_CHUNKS: usize = 5;

    /// The chunk size for windows of `reference` and `current` rows.
    pub fn chunk_size(&self, reference: usize, current: usize) -> usize {
        self.chunk_size
            .unwrap_or_else(|| current.min(reference / Self::REFERENCE_CHUNKS))
            .max(1)
    }
}

impl Default for DriftConfig {
    fn default() -> Self {
        DriftConfig {
            alpha: 0.05,
            correction: Correction::BenjaminiHochberg,
            min_effect_numerical: 0.1,
            min_effect_categorical: 0.1,
            drift_share: 0.0,
            method: Method::Auto,
            methods: BTreeMap::new(),
            psi_threshold: 0.2,
            wasserstein_threshold: 0.1,
            jensen_shannon_threshold: 0.1,
            bins: 10,
            critical_features: Vec::new(),
            consecutive: 1,
            multivariate: None,
        }
    }
}

impl DriftConfig {
    /// Validate `raw` (the checker is at `pipeline[i].drift`); every problem is recorded.
    pub fn from_raw(raw: RawDrift, c: &mut Checker) -> DriftConfig {
        let d = DriftConfig::default();
        let method = c.parsed("method", raw.method.as_deref(), d.method);
        let multivariate = multivariate(&raw, c);
        let methods = raw
            .methods
            .unwrap_or_default()
            .into_iter()
            .map(|(feature, m)| {
                let parsed = c.parsed(&format!("methods.{feature}"), Some(&m), Method::Auto);
                (feature, parsed)
            })
            .collect();
        DriftConfig {
            alpha: c.fraction("alpha", raw.alpha, d.alpha, true),
            correction: c.parsed("correction", raw.correction.as_deref(), d.correction),
            min_effect_numerical: c.fraction(
                "min_effect_numerical",
                raw.min_effect_numerical,
                d.min_effect_numerical,
                false,
            ),
            min_effect_categorical: c.fraction(
                "min_effect_categorical",
                raw.min_effect_categorical,
                d.min_effect_categorical,
                false,
            ),
            drift_share: c.fraction("drift_share", raw.drift_share, d.drift_share, false),
            method,
            methods,
            psi_threshold: c.positive_number("psi_threshold", raw.psi_threshold, d.psi_threshold),
            wasserstein_threshold: c.positive_number(
                "wasserstein_threshold",
                raw.wasserstein_threshold,
                d.wasserstein_threshold,
            ),
            jensen_shannon_threshold: c.fraction(
                "jensen_shannon_threshold",
                raw.jensen_shannon_threshold,
                d.jensen_shannon_threshold,
                true,
            ),
            bins: c.positive("bins", raw.bins, d.bins, 1000).max(2),
            critical_features: raw.critical_features.unwrap_or_default(),
            consecutive: c.positive("consecutive", raw.consecutive, d.consecutive, 365),
            multivariate,
        }
    }
}

/// `multivariate`, `multivariate_variance`, `multivariate_chunk_size`: the latter two only
/// with the first.
fn multivariate(raw: &RawDrift, c: &mut Checker) -> Option<MultivariateConfig> {
    if raw.multivariate != Some(true) {
        for (key, set) in [
            ("multivariate_variance", raw.multivariate_variance.is_some()),
            (
                "multivariate_chunk_size",
                raw.multivariate_chunk_size.is_some(),
            ),
        ] {
            if set {
                c.problem(
                    key,
                    "has no effect without multivariate = true; set that too, or remove this key",
                );
            }
        }
        return None;
    }
    let variance = c.fraction(
        "multivariate_variance",
        raw.multivariate_variance,
        super::reconstruction::DEFAULT_VARIANCE,
        true,
    );
    if variance >= 1.0 {
        c.problem(
            "multivariate_variance",
            "1 keeps every component, so nothing is ever lost in the reconstruction; use a share below 1 (default 0.65)",
        );
    }
    let chunk_size = raw
        .multivariate_chunk_size
        .map(|n| c.positive("multivariate_chunk_size", Some(n), 1, i64::from(u32::MAX)));
    Some(MultivariateConfig {
        variance,
        chunk_size,
    })
}
