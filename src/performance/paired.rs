//! The post-deploy watch's comparison of a new model with the one it replaced, on the same
//! labelled rows. Paired: the rows both models get right (or both wrong) — most of them —
//! say nothing about which is better, and an unpaired test of the two accuracies lets them
//! drown the difference (the simulator's seed 233: 4–6 points worse on 150 rows a day,
//! "not significant" for a whole watch). For accuracy, the exact one-sided McNemar test on
//! the rows where exactly one of the two is right, pooled over the distinct windows the
//! watch has seen (seed 747: the models disagree both ways, and a day's rows are too few).
//!
//! Pure: must not load models or read files.

use statrs::distribution::{Binomial, DiscreteCDF};

use super::{Assessment, Metric, Rule, Scored, Status, Test};

/// The two models' answers on the same labelled rows, counted: what the paired test needs,
/// and summable, so a watch pools the distinct windows it has seen (one day's 150 rows
/// rarely show a 5-point difference; a watch's worth of days does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Paired {
    pub rows: usize,
    pub new_right: usize,
    pub old_right: usize,
    /// Rows only the old (previous) model got right.
    pub only_old: usize,
    /// Rows only the new model got right.
    pub only_new: usize,
}

impl Paired {
    /// Count `new` against `old`, both scored on the same rows.
    pub fn count(new: &Scored, old: &Scored) -> Paired {
        let mut c = Paired::default();
        for ((label, n), o) in new.labels.iter().zip(&new.predicted).zip(&old.predicted) {
            let (old_ok, new_ok) = (o == label, n == label);
            c.rows += 1;
            c.new_right += usize::from(new_ok);
            c.old_right += usize::from(old_ok);
            c.only_old += usize::from(old_ok && !new_ok);
            c.only_new += usize::from(new_ok && !old_ok);
        }
        c
    }
}

/// Both windows' counts together.
impl std::ops::Add for Paired {
    type Output = Paired;

    fn add(self, other: Paired) -> Paired {
        Paired {
            rows: self.rows + other.rows,
            new_right: self.new_right + other.new_right,
            old_right: self.old_right + other.old_right,
            only_old: self.only_old + other.only_old,
            only_new: self.only_new + other.only_new,
        }
    }
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

/// The watch's verdict for accuracy on `pooled`, the two models' counts over `windows`
/// distinct windows of labelled rows: degraded when the new model's accuracy is below the
/// threshold set by the old model's on the same rows and the paired test says the old one
/// is better. Other metrics (and a check that could not judge) keep the assessment `a` of
/// today's window.
pub fn judge(rule: &Rule, a: Assessment, pooled: &Paired, windows: usize) -> Assessment {
    if rule.metric != Metric::Accuracy || a.current.is_none() || a.baseline.is_none() {
        return a;
    }
    if pooled.rows < rule.min_labels || pooled.rows == 0 {
        return a;
    }
    let current = pooled.new_right as f64 / pooled.rows as f64;
    let base = pooled.old_right as f64 / pooled.rows as f64;
    let limit = super::threshold(rule, base);
    let p = mcnemar_p(pooled.only_old, pooled.only_new);
    let beyond = current < limit;
    let status = if beyond && p < rule.alpha {
        Status::Degraded
    } else {
        Status::Healthy
    };
    let detail = format!(
        "accuracy {current:.4} on {} labels ({windows} window(s) of this watch) vs the previous model's {base:.4} on the same rows (threshold {limit:.4}; {} rows only the previous model got right, {} only this one; McNemar exact p = {}): {}",
        pooled.rows,
        pooled.only_old,
        pooled.only_new,
        crate::stats::p_value(p),
        match status {
            Status::Degraded => "degraded",
            _ if beyond => "below the threshold but not significant",
            _ => "healthy",
        }
    );
    Assessment {
        status,
        current: Some(current),
        baseline: Some(base),
        threshold: Some(limit),
        labels: pooled.rows,
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
        let c = Paired::count(&new, &old);
        let want = Paired {
            rows: 5,
            new_right: 3,
            old_right: 4,
            only_old: 2,
            only_new: 1,
        };
        assert_eq!(c, want);
        assert_eq!((c + c).only_old, 4);
    }

    fn rule() -> Rule {
        Rule {
            metric: Metric::Accuracy,
            relative_threshold: 0.97,
            alpha: 0.05,
            min_labels: 50,
            bootstrap_resamples: 0,
        }
    }

    /// Seed 747's shape: 5 points worse, the models disagreeing both ways. One day's 150
    /// rows (12 vs 5 discordant) cannot show it; three days pooled (36 vs 15) do.
    #[test]
    fn pooled_days_show_what_one_day_cannot() {
        let day = Paired {
            rows: 150,
            new_right: 128,
            old_right: 135,
            only_old: 12,
            only_new: 5,
        };
        let today = Assessment {
            current: Some(0.85),
            baseline: Some(0.9),
            ..Assessment::unknown(Metric::Accuracy, 150, "")
        };
        let one = judge(&rule(), today.clone(), &day, 1);
        assert_eq!(one.status, Status::Healthy, "{}", one.detail);
        assert!((one.p_value.unwrap() - 0.0717315673828125).abs() < 1e-12);
        let three = judge(&rule(), today, &(day + day + day), 3);
        assert_eq!(three.status, Status::Degraded, "{}", three.detail);
        assert_eq!(three.labels, 450);
        assert!((three.p_value.unwrap() - 0.0023006548558832662).abs() < 1e-12);
    }
}
