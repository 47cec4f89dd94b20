//! Seeded, stratified splits of labelled rows: the gate's holdout and the burn trainer's
//! validation split. Both keep each class's share (a regressor's: each decile of the
//! target's), so a rare class is judged and learned from in proportion. Pure.

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::performance::Task;

/// A regressor's target holds a value that is not a number: the first one, and how many
/// rows have one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotNumeric {
    pub value: String,
    pub rows: usize,
}

/// The numeric target of a regressor; a non-numeric value is refused with the first such
/// value and how many rows have one.
pub fn numeric_target(target: &[String]) -> Result<Vec<f64>, NotNumeric> {
    let parse = |v: &String| v.trim().parse::<f64>().ok().filter(|x| x.is_finite());
    let values: Vec<Option<f64>> = target.iter().map(parse).collect();
    let bad = values.iter().filter(|v| v.is_none()).count();
    match target.iter().zip(&values).find(|(_, v)| v.is_none()) {
        Some((value, _)) => Err(NotNumeric {
            value: value.clone(),
            rows: bad,
        }),
        None => Ok(values.into_iter().flatten().collect()),
    }
}

/// What a split is stratified by, per row: the class, or for a regressor the target's
/// decile (one stratum for a target that is not all numbers, which a regressor refuses).
pub fn strata(target: &[String], task: Task) -> Vec<String> {
    match task {
        Task::Classification => target.to_vec(),
        Task::Regression => match numeric_target(target) {
            Ok(values) => deciles(&values),
            Err(_) => vec![String::new(); target.len()],
        },
    }
}

/// Strata for a numeric target: its decile (by rank), so the validation split covers the
/// whole range as a stratified split covers every class.
pub fn deciles(values: &[f64]) -> Vec<String> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut bins = vec![String::new(); values.len()];
    for (rank, &i) in order.iter().enumerate() {
        bins[i] = format!("{}", rank * 10 / values.len().max(1));
    }
    bins
}

/// Split row indices into (held out, rest): `round(rows × share)` rows held out, shared
/// among the strata in proportion to their size (largest remainders get the rounding), so
/// each stratum keeps its share and a small table still gets its whole held-out part. Seeded.
pub fn stratified_split(
    strata: &[String],
    share: f64,
    rng: &mut rand::rngs::StdRng,
) -> (Vec<usize>, Vec<usize>) {
    // One pass to group the rows (a target with many values costs no more than one with two).
    let mut groups: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, s) in strata.iter().enumerate() {
        groups.entry(s.as_str()).or_default().push(i);
    }
    let total = ((strata.len() as f64) * share).round() as usize;
    let ideal: Vec<f64> = groups
        .values()
        .map(|rows| rows.len() as f64 * share)
        .collect();
    let mut take: Vec<usize> = ideal.iter().map(|q| q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..ideal.len()).collect();
    // Largest remainder first; ties by size of the stratum, then by name order (stable).
    order.sort_by(|&a, &b| (ideal[b] - ideal[b].floor()).total_cmp(&(ideal[a] - ideal[a].floor())));
    let short = total.saturating_sub(take.iter().sum());
    for &k in order.iter().take(short) {
        take[k] += 1;
    }
    let (mut held, mut rest) = (Vec::new(), Vec::new());
    for (mut rows, k) in groups.into_values().zip(take) {
        rows.shuffle(rng);
        let k = k.min(rows.len());
        held.extend_from_slice(&rows[..k]);
        rest.extend_from_slice(&rows[k..]);
    }
    held.shuffle(rng);
    rest.shuffle(rng);
    (held, rest)
}

/// Split the labelled rows of a window into (holdout, rest) for the gate, stratified by
/// class (or by the target's decile for a regressor) and seeded by the cycle id, so every
/// step of a cycle (and every retry) sees the same split.
pub fn holdout_split(
    target: Option<&[String]>,
    rows: usize,
    share: f64,
    cycle: i64,
    task: Task,
) -> (Vec<usize>, Vec<usize>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(cycle as u64 ^ 0x5eed_5eed);
    let strata = match target {
        Some(target) => strata(target, task),
        None => vec![String::new(); rows],
    };
    stratified_split(&strata, share, &mut rng)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_keeps_each_class_share() {
        let target: Vec<String> = (0..1000)
            .map(|i| if i % 10 == 0 { "rare" } else { "common" }.to_string())
            .collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (valid, train) = stratified_split(&target, 0.2, &mut rng);
        assert_eq!(valid.len() + train.len(), 1000);
        let rare = valid.iter().filter(|&&i| target[i] == "rare").count();
        assert_eq!((valid.len(), rare), (200, 20));
        let mut all: Vec<usize> = valid.iter().chain(&train).copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn deciles_rank_the_target() {
        let v: Vec<f64> = (0..100).map(|i| ((i * 37) % 100) as f64).collect();
        let d = deciles(&v);
        for (x, bin) in v.iter().zip(&d) {
            assert_eq!(bin, &format!("{}", (*x as usize) / 10));
        }
    }

    /// A small table still gets its share held out (the rounding goes to the largest
    /// remainders, not to each stratum), and every row lands on one side.
    #[test]
    fn a_small_split_holds_out_its_share() {
        let ten: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (held, rest) = stratified_split(&ten, 0.3, &mut rng);
        assert_eq!((held.len(), rest.len()), (3, 7));
        let twenty: Vec<String> = (0..20).map(|i| (i / 2).to_string()).collect();
        let (held, rest) = stratified_split(&twenty, 0.3, &mut rng);
        assert_eq!(held.len(), 6);
        let mut all: Vec<usize> = held.into_iter().chain(rest).collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
    }

    /// The gate's holdout keeps each class's share (a 5 % class gets 5 % of the holdout) and
    /// is the same split for every step of a cycle; another cycle draws another one.
    #[test]
    fn the_holdout_is_stratified_and_seeded_by_the_cycle() {
        let target: Vec<String> = (0..2000)
            .map(|i| if i % 20 == 0 { "rare" } else { "common" }.to_string())
            .collect();
        let task = Task::Classification;
        let split = |cycle| holdout_split(Some(&target), 2000, 0.3, cycle, task);
        let (holdout, rest) = split(7);
        assert_eq!((holdout.len(), rest.len()), (600, 1400));
        let rare = holdout.iter().filter(|&&i| target[i] == "rare").count();
        assert_eq!(rare, 30);
        assert_eq!(split(7).0, holdout);
        assert_ne!(split(8).0, holdout);
        // A regressor's holdout spans the target's range: 10 % of it from each decile.
        let numbers: Vec<String> = (0..2000).map(|i| format!("{}", (i * 7) % 2000)).collect();
        let (holdout, _) = holdout_split(Some(&numbers), 2000, 0.3, 7, Task::Regression);
        let top = holdout
            .iter()
            .filter(|&&i| numbers[i].parse::<f64>().unwrap() >= 1800.0)
            .count();
        assert_eq!(top, 60);
    }
}
