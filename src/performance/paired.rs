//! The post-deploy watch's comparison of a new model with the one it replaced, on the same
//! labelled rows. Paired: the rows both models get right (or both wrong) — most of them —
//! say nothing about which is better, and an unpaired test of the two accuracies lets them
//! drown the difference (the simulator's seed 233: 4–6 points worse on 150 rows a day,
//! "not significant" for a whole watch). For accuracy, the exact one-sided McNemar test on
//! the rows where exactly one of the two is right.
//!
//! Pure: must not load models or read files.

use statrs::distribution::{Binomial, DiscreteCDF};

use super::{Assessment, Metric, Rule, Scored, Status, Test};

/// The rows where exactly one model is right: `(only_old, only_new)`.
pub fn discordant(new: &Scored, old: &Scored) -> (usize, usize) {
    let mut counts = (0, 0);
    for ((label, n), o) in new.labels.iter().zip(&new.predicted).zip(&old.predicted) {
        match (o == label, n == label) {
            (true, false) => counts.0 += 1,
            (false, true) => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// P(X ≥ `only_old`) for X ~ Binomial(`only_old + only_new`, ½): the chance of at least this
/// many of the discordant rows going the old model's way if both were equally good.
pub fn mcnemar_p(only_old: usize, only_new: usize) -> f64 {
    let n = (only_old + only_new) as u64;
    if only_old == 0 || n == 0 {
        return 1.0;
    }
    Binomial::new(0.5, n)
        .map(|b| b.sf(only_old as u64 - 1))
        .unwrap_or(1.0)
}

/// The watch's verdict on `new` against `old`, both scored on the same rows: degraded when
/// the accuracy is below the threshold and the paired test says the old model is better.
/// Other metrics keep the unpaired assessment `a`.
pub fn judge(rule: &Rule, a: Assessment, new: &Scored, old: &Scored) -> Assessment {
    let (Some(current), Some(base), Some(limit)) = (a.current, a.baseline, a.threshold) else {
        return a;
    };
    if rule.metric != Metric::Accuracy || a.status == Status::InsufficientLabels {
        return a;
    }
    let (only_old, only_new) = discordant(new, old);
    let p = mcnemar_p(only_old, only_new);
    let beyond = current < limit;
    let status = if beyond && p < rule.alpha {
        Status::Degraded
    } else {
        Status::Healthy
    };
    let detail = format!(
        "accuracy {current:.4} on {} labels vs the previous model's {base:.4} on the same rows (threshold {limit:.4}; {only_old} rows only the previous model got right, {only_new} only this one; McNemar exact p = {p:.3e}): {}",
        a.labels,
        match status {
            Status::Degraded => "degraded",
            _ if beyond => "below the threshold but not significant",
            _ => "healthy",
        }
    );
    Assessment {
        status,
        test: Test::McNemar,
        p_value: Some(p),
        detail,
        ..a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(labels: &[&str], predicted: &[&str]) -> Scored {
        Scored {
            labels: labels.iter().map(|s| s.to_string()).collect(),
            predicted: predicted.iter().map(|s| s.to_string()).collect(),
            positive_scores: None,
            positive: None,
        }
    }

    /// Exact McNemar p-values: scipy.stats.binomtest(k, n, 0.5, alternative="greater").
    #[test]
    fn mcnemar_p_is_the_binomial_tail() {
        assert_eq!(mcnemar_p(0, 5), 1.0);
        assert!((mcnemar_p(9, 1) - 0.0107421875).abs() < 1e-15);
        assert!((mcnemar_p(5, 5) - 0.623046875).abs() < 1e-12);
        assert!((mcnemar_p(3, 0) - 0.125).abs() < 1e-15);
    }

    #[test]
    fn discordant_rows_count_each_way() {
        let labels = ["1", "0", "1", "0", "1"];
        let new = scored(&labels, &["1", "1", "0", "0", "1"]);
        let old = scored(&labels, &["1", "0", "1", "1", "1"]);
        assert_eq!(discordant(&new, &old), (2, 1));
    }
}
