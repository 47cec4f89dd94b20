//! Probability calibration as NannyML 0.13.1 does it before estimating performance: an
//! isotonic regression of the label on the score (scikit-learn's `IsotonicRegression`,
//! increasing, clipped), kept only when it lowers the expected calibration error measured
//! on ten stratified shuffle splits of the reference (`random_state = 42`, fit on 90 %,
//! measure on 10 %), and skipped when the reference has one class or a ROC AUC above 0.999.
//!
//! Pure: must not do I/O or know column names; the order-sensitive pieces come from
//! [`super::numpy`] so the calibrate-or-not decision is NannyML's.

use super::numpy::{RandomState, argsort};

/// A fitted isotonic regression: knots `x` (ascending) and their fitted values `y`;
/// scores outside `[x₀, x_last]` are clipped into it, others interpolated linearly.
#[derive(Debug, Clone, PartialEq)]
pub struct Isotonic {
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

impl Isotonic {
    /// Fit `labels` (0 or 1) on `scores`: equal scores merged into their mean label,
    /// pool-adjacent-violators, interior knots equal to both neighbours dropped.
    pub fn fit(scores: &[f64], labels: &[f64]) -> Isotonic {
        let mut points: Vec<(f64, f64)> =
            scores.iter().copied().zip(labels.iter().copied()).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let (mut ux, mut sums, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for (x, y) in points {
            if ux.last() == Some(&x) {
                *sums.last_mut().unwrap_or(&mut 0.0) += y;
                *weights.last_mut().unwrap_or(&mut 0.0) += 1.0;
            } else {
                ux.push(x);
                sums.push(y);
                weights.push(1.0);
            }
        }
        // Blocks of (value, weight, points), merged while a block is not above the previous.
        let mut blocks: Vec<(f64, f64, usize)> = Vec::with_capacity(ux.len());
        for (s, w) in sums.iter().zip(&weights) {
            blocks.push((s / w, *w, 1));
            while blocks.len() > 1 && blocks[blocks.len() - 2].0 >= blocks[blocks.len() - 1].0 {
                let (bv, bw, bc) = blocks.pop().unwrap_or((0.0, 0.0, 0));
                if let Some(a) = blocks.last_mut() {
                    a.0 = (a.0 * a.1 + bv * bw) / (a.1 + bw);
                    a.1 += bw;
                    a.2 += bc;
                }
            }
        }
        let fitted: Vec<f64> = blocks
            .iter()
            .flat_map(|(v, _, c)| std::iter::repeat_n(*v, *c))
            .collect();
        let keep = |i: usize| {
            i == 0
                || i + 1 == fitted.len()
                || fitted[i] != fitted[i - 1]
                || fitted[i] != fitted[i + 1]
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..fitted.len() {
            if keep(i) {
                x.push(ux[i]);
                y.push(fitted[i]);
            }
        }
        Isotonic { x, y }
    }

    /// The calibrated value of `score` (scipy's `interp1d` after clipping).
    pub fn apply(&self, score: f64) -> f64 {
        let n = self.x.len();
        if n == 0 {
            return score;
        }
        if n == 1 {
            return self.y[0];
        }
        let q = score.clamp(self.x[0], self.x[n - 1]);
        let j = self.x.partition_point(|&k| k < q).clamp(1, n - 1);
        let lo = j - 1;
        let slope = (self.y[j] - self.y[lo]) / (self.x[j] - self.x[lo]);
        slope * (q - self.x[lo]) + self.y[lo]
    }
}

/// The calibration decision and the two errors it compared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub calibrate: bool,
    /// Why not, when the early exits decided: one class, or a ROC AUC above 0.999.
    pub skipped: Option<&'static str>,
    /// Expected calibration error of the raw and of the calibrated scores on the splits.
    pub ece_before: Option<f64>,
    pub ece_after: Option<f64>,
}

/// NannyML's `needs_calibration(y_true, y_pred_proba, IsotonicCalibrator())` for one binary
/// target (`labels` 0/1).
pub fn needs_calibration(labels: &[f64], scores: &[f64]) -> Decision {
    let skip = |why| Decision {
        calibrate: false,
        skipped: Some(why),
        ece_before: None,
        ece_after: None,
    };
    let positive: Vec<bool> = labels.iter().map(|y| *y == 1.0).collect();
    let Some(auc) = crate::performance::roc_auc(&positive, scores) else {
        return skip("the reference has one class");
    };
    if auc > 0.999 {
        return skip("the reference ROC AUC is above 0.999");
    }
    let (mut y, mut p, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for (train, test) in stratified_shuffle_split(labels, 10, 0.1, 42) {
        let xs: Vec<f64> = train.iter().map(|&i| scores[i]).collect();
        let ys: Vec<f64> = train.iter().map(|&i| labels[i]).collect();
        let iso = Isotonic::fit(&xs, &ys);
        for &i in &test {
            y.push(labels[i]);
            p.push(scores[i]);
            c.push(iso.apply(scores[i]));
        }
    }
    let edges = bin_edges(p.len(), 10);
    let before = ece(&y, &p, &edges);
    let after = ece(&y, &c, &edges);
    Decision {
        calibrate: before > after,
        skipped: None,
        ece_before: Some(before),
        ece_after: Some(after),
    }
}

/// NannyML's `_get_bin_index_edges(n, bins)`: equal-count bins, the last one absorbing the
/// remainder.
fn bin_edges(n: usize, bins: usize) -> Vec<(usize, usize)> {
    let bins = if n <= 2 * bins { n / 2 } else { bins }.max(1);
    let width = (n / bins).max(1);
    let mut edges: Vec<usize> = (0..=n).step_by(width).collect();
    if let Some(last) = edges.last_mut() {
        *last = n;
    }
    edges.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Expected calibration error of `scores` for `labels` on the bins `edges` of the scores
/// sorted by numpy's argsort.
fn ece(labels: &[f64], scores: &[f64], edges: &[(usize, usize)]) -> f64 {
    let order = argsort(scores);
    let n = scores.len() as f64;
    edges
        .iter()
        .map(|&(l, r)| {
            let width = (r - l) as f64;
            let mean_p: f64 = order[l..r].iter().map(|&i| scores[i]).sum::<f64>() / width;
            let mean_y: f64 = order[l..r].iter().map(|&i| labels[i]).sum::<f64>() / width;
            width / n * (mean_p - mean_y).abs()
        })
        .sum()
}

/// scikit-learn's `_approximate_mode(class_counts, n_draws, rng)`.
fn approximate_mode(counts: &[usize], draws: usize, rng: &mut RandomState) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    let continuous: Vec<f64> = counts
        .iter()
        .map(|&c| c as f64 / total as f64 * draws as f64)
        .collect();
    let mut floored: Vec<usize> = continuous.iter().map(|c| c.floor() as usize).collect();
    let mut need = draws.saturating_sub(floored.iter().sum());
    if need > 0 {
        let remainder: Vec<f64> = continuous
            .iter()
            .zip(&floored)
            .map(|(c, f)| c - *f as f64)
            .collect();
        let mut values = remainder.clone();
        values.sort_by(|a, b| b.total_cmp(a));
        values.dedup();
        for value in values {
            let inds: Vec<usize> = (0..remainder.len())
                .filter(|&i| remainder[i] == value)
                .collect();
            let add = inds.len().min(need);
            for i in rng.choose(&inds, add) {
                floored[i] += 1;
            }
            need -= add;
            if need == 0 {
                break;
            }
        }
    }
    floored
}

/// scikit-learn's `StratifiedShuffleSplit(n_splits, test_size, random_state).split(_, y)`:
/// the (train, test) row indices of each split, in scikit-learn's order.
pub fn stratified_shuffle_split(
    labels: &[f64],
    splits: usize,
    test_size: f64,
    seed: u32,
) -> Vec<(Vec<usize>, Vec<usize>)> {
    let n = labels.len();
    let n_test = (test_size * n as f64).ceil() as usize;
    let n_train = n - n_test;
    let mut classes: Vec<f64> = labels.to_vec();
    classes.sort_by(f64::total_cmp);
    classes.dedup();
    let indices: Vec<Vec<usize>> = classes
        .iter()
        .map(|c| (0..n).filter(|&i| labels[i] == *c).collect())
        .collect();
    let counts: Vec<usize> = indices.iter().map(Vec::len).collect();
    let mut rng = RandomState::new(seed);
    let mut out = Vec::with_capacity(splits);
    for _ in 0..splits {
        let n_i = approximate_mode(&counts, n_train, &mut rng);
        let left: Vec<usize> = counts.iter().zip(&n_i).map(|(c, k)| c - k).collect();
        let t_i = approximate_mode(&left, n_test, &mut rng);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for (k, class) in indices.iter().enumerate() {
            let picked: Vec<usize> = rng
                .permutation(counts[k])
                .into_iter()
                .map(|p| class[p])
                .collect();
            train.extend_from_slice(&picked[..n_i[k]]);
            test.extend_from_slice(&picked[n_i[k]..n_i[k] + t_i[k]]);
        }
        rng.shuffle(&mut train);
        rng.shuffle(&mut test);
        out.push((train, test));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isotonic_pools_violators_and_interpolates() {
        let iso = Isotonic::fit(
            &[0.1, 0.2, 0.2, 0.3, 0.4, 0.5],
            &[0.0, 1.0, 0.0, 0.0, 1.0, 1.0],
        );
        // 0.2 → mean 0.5, then 0.3 → 0 violates: pooled to (0.5·2 + 0)/3 = 1/3.
        assert_eq!(iso.x, vec![0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(iso.y, vec![0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0, 1.0]);
        assert_eq!(iso.apply(-1.0), 0.0);
        assert_eq!(iso.apply(0.45), 1.0);
        assert!((iso.apply(0.35) - (1.0 / 3.0 + 0.5 * (2.0 / 3.0))).abs() < 1e-15);
    }

    #[test]
    fn bins_match_nannyml() {
        assert_eq!(bin_edges(25, 10).len(), 12);
        assert_eq!(bin_edges(25, 10)[11], (22, 25));
        assert_eq!(
            bin_edges(16, 10),
            vec![
                (0, 2),
                (2, 4),
                (4, 6),
                (6, 8),
                (8, 10),
                (10, 12),
                (12, 14),
                (14, 16)
            ]
        );
    }

    #[test]
    fn one_class_or_a_near_perfect_ranking_is_never_calibrated() {
        let d = needs_calibration(&[1.0; 30], &[0.5; 30]);
        assert_eq!(
            (d.calibrate, d.skipped),
            (false, Some("the reference has one class"))
        );
        let labels: Vec<f64> = (0..40).map(|i| f64::from(u8::from(i >= 20))).collect();
        let scores: Vec<f64> = (0..40).map(|i| i as f64 / 40.0).collect();
        let d = needs_calibration(&labels, &scores);
        assert_eq!(d.skipped, Some("the reference ROC AUC is above 0.999"));
    }
}
