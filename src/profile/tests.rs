use super::*;

use super::normal_draws as normal;

fn profile_of(values: &[f64], cats: &[&str], options: Options, batch: usize) -> Profile {
    let mut b = ProfileBuilder::new(
        vec![("x".into(), "f64".into()), ("c".into(), "str".into())],
        &["x".to_string()],
        &["c".to_string()],
        options,
        &Expectation::default(),
    );
    for (chunk, cat_chunk) in values.chunks(batch).zip(cats.chunks(batch)) {
        b.add_rows(chunk.len() as u64);
        b.numerical[0].1.push(chunk);
        b.categorical[0].1.push(cat_chunk.iter().map(|c| Some(*c)));
    }
    b.finish()
}

fn numerical(p: &Profile) -> &NumericalProfile {
    match p.feature("x") {
        Some(Summary::Numerical(n)) => n,
        other => panic!("{other:?}"),
    }
}

/// The profile of two halves, merged, is the profile of the whole: counts, moments and
/// range exactly (to rounding), exact values equal, categories added.
#[test]
fn merged_halves_equal_the_whole() {
    let mut values = normal(10_000, 0.5, 1);
    values[3] = f64::NAN;
    values[7] = f64::INFINITY;
    let cats: Vec<&str> = (0..10_000).map(|i| ["a", "b", "", "c"][i % 4]).collect();
    let options = Options::default();
    let whole = profile_of(&values, &cats, options, 777);
    let mut merged = profile_of(&values[..4000], &cats[..4000], options, 1000);
    merged
        .merge(
            profile_of(&values[4000..], &cats[4000..], options, 333),
            &options,
        )
        .unwrap();
    assert_eq!(merged.rows, 10_000);
    let (w, m) = (numerical(&whole), numerical(&merged));
    assert_eq!((w.count, w.missing, w.infinite), (9998, 1, 1));
    assert_eq!((m.count, m.missing, m.infinite), (9998, 1, 1));
    assert!((w.mean - m.mean).abs() < 1e-12 && (w.m2 / m.m2 - 1.0).abs() < 1e-12);
    assert_eq!(w.range, m.range);
    assert_eq!(w.values, m.values);
    assert_eq!(whole.feature("c"), merged.feature("c"));
    match whole.feature("c") {
        Some(Summary::Categorical(c)) => {
            assert_eq!(c.missing, 2500);
            assert_eq!(c.counts.get("a"), Some(&2500));
        }
        other => panic!("{other:?}"),
    }
    // The variance is the data's.
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (mean, var) = crate::stats::mean_var(&finite, 1.0);
    assert!((w.mean - mean).abs() < 1e-12 && (w.std_dev() - var.sqrt()).abs() < 1e-12);
}

/// Past the exact limit the values go into a sketch (merging too), and the profile survives
/// its JSON form.
#[test]
fn past_the_limit_a_sketch_and_back_through_json() {
    let values = normal(50_000, 0.0, 2);
    let cats = vec!["a"; 50_000];
    let options = Options {
        exact_limit: 20_000,
        ..Options::default()
    };
    let p = profile_of(&values, &cats, options, 8192);
    let n = numerical(&p);
    assert!(!n.is_exact());
    assert_eq!(n.cdf().n(), 50_000);
    let json = serde_json::to_string(&p).unwrap();
    let back: Profile = serde_json::from_str(&json).unwrap();
    assert_same(&back, &p);
    let small = profile_of(&values[..15_000], &cats[..15_000], options, 8192);
    assert!(numerical(&small).is_exact());
    let mut merged = small.clone();
    merged
        .merge(
            profile_of(&values[15_000..30_000], &cats[..15_000], options, 8192),
            &options,
        )
        .unwrap();
    assert!(!numerical(&merged).is_exact(), "30,000 values > the limit");
    assert_eq!(numerical(&merged).cdf().n(), 30_000);
    let exact_json = serde_json::to_string(&small).unwrap();
    let back: Profile = serde_json::from_str(&exact_json).unwrap();
    assert_same(&back, &small);
    let broken = exact_json.replacen("\"exact\":\"", "\"exact\":\"AAAA", 1);
    assert!(serde_json::from_str::<Profile>(&broken).is_err());
}

/// The same profile after JSON: values, sketches and counts exactly; the moments to the last
/// bit or one below it (serde_json's float parsing is not always exact).
fn assert_same(a: &Profile, b: &Profile) {
    let (x, y) = (numerical(a), numerical(b));
    assert!(x.values == y.values, "values or sketch changed");
    assert_eq!(
        (x.count, x.missing, x.infinite, x.range),
        (y.count, y.missing, y.infinite, y.range)
    );
    assert!((x.mean - y.mean).abs() <= f64::EPSILON * y.mean.abs().max(1e-300));
    assert!((x.m2 - y.m2).abs() <= f64::EPSILON * y.m2.abs());
    assert_eq!(a.feature("c"), b.feature("c"));
    assert_eq!((a.rows, &a.schema), (b.rows, &b.schema));
}

/// Counts on the other side's bins are exact, as the exact check's.
#[test]
fn counts_on_the_other_sides_bins_are_exact() {
    let reference = normal(30_000, 0.0, 3);
    let current = normal(40_000, 0.3, 4);
    let options = Options {
        exact_limit: 1000,
        ..Options::default()
    };
    let r = profile_of(&reference, &vec!["a"; 30_000], Options::default(), 4096);
    let expect = r.expectation(10);
    let binning = &expect.0["x"];
    let sorted = crate::stats::sorted_finite(&current);
    let want: Vec<u64> = crate::stats::bin_counts(&sorted, &binning.edges)
        .iter()
        .map(|c| *c as u64)
        .collect();
    let outside = current
        .iter()
        .filter(|v| **v < binning.range.0 || **v > binning.range.1)
        .count();
    // Sketched past 1,000 values (counted as they pass), and kept exactly (counted at the end).
    for (options, exact) in [(options, false), (Options::default(), true)] {
        let mut acc = NumericalAccumulator::new(options, Some(binning));
        for c in current.chunks(999) {
            acc.push(c);
        }
        let got = acc.finish();
        assert_eq!(got.is_exact(), exact);
        let b = got.binned.as_ref().unwrap();
        assert_eq!(b.counts, want);
        assert_eq!(b.outside, outside as u64);
    }
    let exact_edges = crate::stats::quantile_edges(&crate::stats::sorted_finite(&reference), 10);
    assert_eq!(binning.edges, exact_edges);
}
