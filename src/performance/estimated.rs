//! The degradation rule on an estimate instead of labels: when the labels of a window have
//! not arrived, the champion's metric is estimated from its own probabilities (CBPE, see
//! [`crate::estimate`]) with a band of ±3 standard errors, and the champion counts as
//! degraded only when the whole band is past the threshold — for a metric where higher is
//! better, when the band's *upper* edge is below `relative_threshold × baseline`. The band
//! plays the part the significance test plays on labels: a small window's estimate is wide
//! and cannot cry wolf.
//!
//! Which metrics can be estimated ([`Metric::estimable`]) is stated here for the config's
//! validation; `estimate::CbpeMetric::of` maps them (a test holds the two together). Pure:
//! no I/O, no config assembly.

use serde::{Deserialize, Serialize};

use super::{Assessment, Baseline, Metric, Rule, Status, Test, past, threshold};

/// An estimate behind an assessment: the method, its band, the rows it is over, the model
/// version it estimated and — once the window's labels exist — the realised value beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimated {
    /// `cbpe`.
    pub method: String,
    pub lower: f64,
    pub upper: f64,
    /// Rows of the window the estimate is over.
    pub rows: usize,
    /// The realised value on the window's labelled rows, when there were `min_labels` of
    /// them (at the check, or later when they arrived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realised: Option<f64>,
    /// The store id of the model version estimated (set by the engine), which scores the
    /// window again when its labels arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<i64>,
}

impl Estimated {
    /// How far the estimate was from the realised value (estimate − realised), once known.
    pub fn error(&self, estimate: f64) -> Option<f64> {
        self.realised.map(|r| estimate - r)
    }
}

impl Metric {
    /// Whether CBPE estimates this metric (see `estimate::CbpeMetric::of`). Weighted F1 has
    /// no CBPE estimate (NannyML's F1 is the positive class's, or a macro average);
    /// regression metrics need DLE, which the daemon does not run.
    pub fn estimable(self) -> bool {
        matches!(
            self,
            Metric::Accuracy | Metric::Precision | Metric::Recall | Metric::RocAuc
        )
    }
}

/// The value and band of an estimate, as [`assess_estimate`] takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

/// Assess an estimated value against a baseline: degraded when the band's edge nearest the
/// baseline is past the threshold. `rows`: the window's rows; `realised`: the labelled
/// value, when known (reported beside, never used for the verdict).
pub fn assess_estimate(
    rule: &Rule,
    band: Band,
    rows: usize,
    baseline: Option<Baseline>,
    realised: Option<f64>,
) -> Assessment {
    let metric = rule.metric;
    let estimated = Estimated {
        method: "cbpe".into(),
        lower: band.lower,
        upper: band.upper,
        rows,
        realised,
        version_id: None,
    };
    let Some(base) = baseline else {
        return Assessment {
            current: Some(band.value),
            estimated: Some(estimated),
            ..Assessment::unknown(
                metric,
                0,
                format!(
                    "estimated {} {:.4} on {rows} rows, but no baseline: the champion has no stored evaluation of it",
                    metric.name(),
                    band.value
                ),
            )
        };
    };
    let limit = threshold(rule, base.value);
    // The edge of the band nearest the baseline: the most favourable reading.
    let edge = if metric.higher_is_better() {
        band.upper
    } else {
        band.lower
    };
    let degraded = past(rule, edge, limit);
    let status = if degraded {
        Status::Degraded
    } else {
        Status::Healthy
    };
    let verdict = match status {
        Status::Degraded => "degraded: the whole band is past the threshold",
        _ if past(rule, band.value, limit) => {
            "past the threshold, but the band reaches back over it: not degraded"
        }
        _ => "healthy",
    };
    let detail = format!(
        "estimated {} {:.4} (band {:.4} – {:.4}, CBPE on {rows} rows without labels) vs baseline {:.4} (threshold {:.4}){}: {verdict}",
        metric.name(),
        band.value,
        band.lower,
        band.upper,
        base.value,
        limit,
        realised.map_or(String::new(), |r| format!("; realised {r:.4}")),
    );
    Assessment {
        metric,
        status,
        current: Some(band.value),
        baseline: Some(base.value),
        threshold: Some(limit),
        labels: 0,
        test: Test::Estimated,
        p_value: None,
        detail,
        estimated: Some(estimated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        Rule::defaults(Metric::Accuracy)
    }

    fn base() -> Option<Baseline> {
        Some(Baseline {
            value: 0.90,
            n: Some(200),
        })
    }

    /// Threshold 0.855 (0.95 × 0.90): only a band wholly below it is degraded.
    #[test]
    fn degraded_only_when_the_band_is_wholly_past_the_threshold() {
        let below = Band {
            value: 0.80,
            lower: 0.77,
            upper: 0.83,
        };
        let a = assess_estimate(&rule(), below, 400, base(), None);
        assert_eq!(a.status, Status::Degraded, "{}", a.detail);
        assert!((a.threshold.unwrap() - 0.855).abs() < 1e-12);
        assert!(
            a.detail.starts_with("estimated accuracy 0.8000"),
            "{}",
            a.detail
        );
        let straddling = Band {
            value: 0.84,
            lower: 0.80,
            upper: 0.88,
        };
        let a = assess_estimate(&rule(), straddling, 400, base(), Some(0.85));
        assert_eq!(a.status, Status::Healthy, "{}", a.detail);
        assert!(a.detail.contains("band reaches back"), "{}", a.detail);
        assert!(a.detail.contains("realised 0.8500"), "{}", a.detail);
        assert_eq!(a.estimated.as_ref().unwrap().error(0.84), Some(0.84 - 0.85));
    }

    #[test]
    fn an_error_metric_is_degraded_when_the_lower_edge_is_above_the_threshold() {
        let rule = Rule::defaults(Metric::Rmse);
        let b = Some(Baseline {
            value: 10.0,
            n: None,
        });
        // Threshold 10 / 0.95 = 10.526.
        let wide = Band {
            value: 11.0,
            lower: 10.4,
            upper: 11.6,
        };
        assert_eq!(
            assess_estimate(&rule, wide, 50, b, None).status,
            Status::Healthy
        );
        let narrow = Band {
            value: 11.0,
            lower: 10.6,
            upper: 11.4,
        };
        assert_eq!(
            assess_estimate(&rule, narrow, 50, b, None).status,
            Status::Degraded
        );
    }

    #[test]
    fn no_baseline_is_unknown_never_healthy() {
        let band = Band {
            value: 0.5,
            lower: 0.4,
            upper: 0.6,
        };
        let a = assess_estimate(&rule(), band, 10, None, None);
        assert_eq!(a.status, Status::Unknown);
        assert_eq!(a.current, Some(0.5));
    }
}
