//! A gradient-boosted regression tree ensemble, small and deterministic: the nanny model of
//! DLE ([`super::dle`]). It follows LightGBM's defaults as NannyML uses them (100 trees,
//! learning rate 0.1, trees grown leaf-wise to 31 leaves, at least 20 rows per leaf, no
//! regularisation, squared loss, the first prediction the mean of the target), on
//! histograms of at most 255 bins per feature cut at the feature's quantiles. It is not a
//! port of LightGBM: bins, tie-breaks and float order differ, so its predictions are close
//! to LightGBM's, not equal.
//!
//! Missing values (NaN) go to the lowest bin and, when predicting, to the left of every
//! split. Pure: no I/O, no threads, no configuration.

use serde::{Deserialize, Serialize};

/// How the ensemble is grown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GbmParams {
    pub trees: usize,
    pub learning_rate: f64,
    pub leaves: usize,
    /// The fewest rows a leaf may hold.
    pub min_rows: usize,
    pub max_bins: usize,
}

impl Default for GbmParams {
    /// LightGBM's `LGBMRegressor()` defaults.
    fn default() -> Self {
        GbmParams {
            trees: 100,
            learning_rate: 0.1,
            leaves: 31,
            min_rows: 20,
            max_bins: 255,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Node {
    /// Rows with `value <= threshold` (or NaN) go left.
    Split {
        feature: usize,
        threshold: f64,
        left: usize,
        right: usize,
    },
    Leaf(f64),
}

/// A fitted ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gbm {
    init: f64,
    trees: Vec<Vec<Node>>,
}

/// A feature cut into bins: `edges[b]` is the largest value of bin `b`.
struct Binned {
    edges: Vec<f64>,
    codes: Vec<u16>,
}

fn bin(values: &[f64], max_bins: usize) -> Binned {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    sorted.sort_by(f64::total_cmp);
    sorted.dedup();
    let edges: Vec<f64> = if sorted.len() <= max_bins {
        // One bin per distinct value, cut half-way to the next.
        sorted
            .windows(2)
            .map(|w| w[0] + (w[1] - w[0]) / 2.0)
            .chain(std::iter::once(f64::INFINITY))
            .collect()
    } else {
        let mut all: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        all.sort_by(f64::total_cmp);
        let mut e: Vec<f64> = (1..max_bins)
            .map(|b| all[(b * all.len() / max_bins).min(all.len() - 1)])
            .collect();
        e.dedup();
        e.push(f64::INFINITY);
        e
    };
    let codes = values
        .iter()
        .map(|v| {
            if v.is_nan() {
                0
            } else {
                edges.partition_point(|e| e < v) as u16
            }
        })
        .collect();
    Binned { edges, codes }
}

/// The best split of one leaf: its gain, the feature, and the last bin that goes left.
#[derive(Debug, Clone, Copy)]
struct Split {
    gain: f64,
    feature: usize,
    bin: usize,
}

struct Leaf {
    rows: Vec<u32>,
    node: usize,
    best: Option<Split>,
}

impl Gbm {
    /// Fit on feature `columns` (each one value per row) to predict `target`.
    pub fn fit(columns: &[Vec<f64>], target: &[f64], params: &GbmParams) -> Gbm {
        let n = target.len();
        let init = if n == 0 {
            0.0
        } else {
            target.iter().sum::<f64>() / n as f64
        };
        let binned: Vec<Binned> = columns.iter().map(|c| bin(c, params.max_bins)).collect();
        let mut predicted = vec![init; n];
        let mut trees = Vec::with_capacity(params.trees);
        for _ in 0..params.trees {
            let gradient: Vec<f64> = predicted.iter().zip(target).map(|(p, y)| p - y).collect();
            let tree = grow(&binned, &gradient, params);
            for (i, p) in predicted.iter_mut().enumerate() {
                *p += walk_binned(&tree, &binned, i);
            }
            trees.push(tree);
        }
        Gbm { init, trees }
    }

    /// The prediction for one row of feature values (in the columns' order).
    pub fn predict(&self, row: &[f64]) -> f64 {
        self.init + self.trees.iter().map(|t| walk(t, row)).sum::<f64>()
    }

    /// Predictions for every row of feature `columns`.
    pub fn predict_columns(&self, columns: &[Vec<f64>]) -> Vec<f64> {
        let n = columns.first().map_or(0, Vec::len);
        let mut row = vec![0.0; columns.len()];
        (0..n)
            .map(|i| {
                for (v, c) in row.iter_mut().zip(columns) {
                    *v = c[i];
                }
                self.predict(&row)
            })
            .collect()
    }
}

fn walk(tree: &[Node], row: &[f64]) -> f64 {
    walk_by(tree, |feature, threshold| {
        let v = row[feature];
        v.is_nan() || v <= threshold
    })
}

/// The tree's output for training row `i`, by its bins (the same path as [`walk`]).
fn walk_binned(tree: &[Node], binned: &[Binned], i: usize) -> f64 {
    walk_by(tree, |feature, threshold| {
        let b = &binned[feature];
        b.edges[b.codes[i] as usize] <= threshold
    })
}

/// From the root to a leaf, going left where `left(feature, threshold)` says so.
fn walk_by(tree: &[Node], left: impl Fn(usize, f64) -> bool) -> f64 {
    let mut at = 0;
    loop {
        match &tree[at] {
            Node::Leaf(v) => return *v,
            Node::Split {
                feature,
                threshold,
                left: l,
                right: r,
            } => at = if left(*feature, *threshold) { *l } else { *r },
        }
    }
}

/// One tree, grown leaf-wise: always split the leaf whose best split gains most.
fn grow(binned: &[Binned], gradient: &[f64], params: &GbmParams) -> Vec<Node> {
    let all: Vec<u32> = (0..gradient.len() as u32).collect();
    let mut nodes = vec![Node::Leaf(0.0)];
    let mut leaves = vec![Leaf {
        best: best_split(binned, gradient, &all, params.min_rows),
        rows: all,
        node: 0,
    }];
    while leaves.len() < params.leaves {
        let Some((at, split)) = leaves
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.best.map(|s| (i, s)))
            .max_by(|a, b| a.1.gain.total_cmp(&b.1.gain))
        else {
            break;
        };
        let leaf = leaves.swap_remove(at);
        let codes = &binned[split.feature].codes;
        let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = leaf
            .rows
            .iter()
            .partition(|&&r| (codes[r as usize] as usize) <= split.bin);
        let (left, right) = (nodes.len(), nodes.len() + 1);
        nodes.push(Node::Leaf(0.0));
        nodes.push(Node::Leaf(0.0));
        nodes[leaf.node] = Node::Split {
            feature: split.feature,
            threshold: binned[split.feature].edges[split.bin],
            left,
            right,
        };
        for (rows, node) in [(left_rows, left), (right_rows, right)] {
            leaves.push(Leaf {
                best: best_split(binned, gradient, &rows, params.min_rows),
                rows,
                node,
            });
        }
    }
    for leaf in leaves {
        let sum: f64 = leaf.rows.iter().map(|&r| gradient[r as usize]).sum();
        let value = if leaf.rows.is_empty() {
            0.0
        } else {
            -sum / leaf.rows.len() as f64 * params.learning_rate
        };
        nodes[leaf.node] = Node::Leaf(value);
    }
    nodes
}

/// The split of `rows` with the largest gain in squared loss, `Σ²_L/n_L + Σ²_R/n_R − Σ²/n`,
/// leaving at least `min_rows` on each side; `None` when no split gains.
fn best_split(binned: &[Binned], gradient: &[f64], rows: &[u32], min_rows: usize) -> Option<Split> {
    let n = rows.len();
    if n < 2 * min_rows.max(1) {
        return None;
    }
    let total: f64 = rows.iter().map(|&r| gradient[r as usize]).sum();
    let parent = total * total / n as f64;
    let mut best: Option<Split> = None;
    for (feature, b) in binned.iter().enumerate() {
        let bins = b.edges.len();
        let mut sums = vec![0.0; bins];
        let mut counts = vec![0usize; bins];
        for &r in rows {
            let c = b.codes[r as usize] as usize;
            sums[c] += gradient[r as usize];
            counts[c] += 1;
        }
        let (mut left_sum, mut left_n) = (0.0, 0usize);
        for bin in 0..bins.saturating_sub(1) {
            left_sum += sums[bin];
            left_n += counts[bin];
            let right_n = n - left_n;
            if left_n < min_rows {
                continue;
            }
            if right_n < min_rows {
                break;
            }
            let right_sum = total - left_sum;
            let gain = left_sum * left_sum / left_n as f64 + right_sum * right_sum / right_n as f64
                - parent;
            if gain > 0.0 && best.is_none_or(|s| gain > s.gain) {
                best = Some(Split { gain, feature, bin });
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step and a line: the ensemble learns both, far better than the mean.
    #[test]
    fn it_learns_a_step_and_a_slope() {
        let x: Vec<f64> = (0..2000).map(|i| i as f64 / 100.0).collect();
        let z: Vec<f64> = (0..2000)
            .map(|i| ((i * 7919) % 2000) as f64 / 2000.0)
            .collect();
        let y: Vec<f64> = x
            .iter()
            .zip(&z)
            .map(|(a, b)| if *a > 10.0 { 5.0 } else { 0.0 } + 2.0 * b)
            .collect();
        let columns = vec![x.clone(), z.clone()];
        let g = Gbm::fit(&columns, &y, &GbmParams::default());
        let p = g.predict_columns(&columns);
        let mse = p.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / 2000.0;
        let mean = y.iter().sum::<f64>() / 2000.0;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 2000.0;
        assert!(mse < 0.01 * var, "mse {mse}, variance {var}");
        assert!((g.predict(&[15.0, 0.5]) - 6.0).abs() < 0.1);
        assert!(
            (g.predict(&[f64::NAN, 0.5]) - 1.0).abs() < 0.1,
            "NaN goes left"
        );
    }

    #[test]
    fn bins_cut_distinct_values_half_way_and_many_values_at_quantiles() {
        let b = bin(&[3.0, 1.0, 2.0, 1.0, f64::NAN], 255);
        assert_eq!(b.edges, vec![1.5, 2.5, f64::INFINITY]);
        assert_eq!(b.codes, vec![2, 0, 1, 0, 0]);
        let many: Vec<f64> = (0..10_000).map(f64::from).collect();
        let b = bin(&many, 255);
        assert_eq!(b.edges.len(), 255);
        assert_eq!(b.codes[0], 0);
        assert_eq!(b.codes[9999], 254);
    }
}
