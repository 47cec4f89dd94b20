//! Building a profile batch by batch: one accumulator per feature, fed column slices of
//! whatever size the reader produces. An accumulator holds at most `exact_limit` values plus
//! one sketch, whatever the number of rows: the values are kept until the next batch would
//! pass the limit, then they go into a sketch and every later value follows them there.
//!
//! Pure: must not do I/O; the reader that feeds it is `data::stream`.

use std::collections::HashMap;

use super::{
    Binned, Binning, CategoricalProfile, Expectation, FeatureProfile, MAX_CATEGORIES, Moments,
    NumericalProfile, Options, Profile, Sketch, Summary, Values,
};

/// A numerical feature being profiled.
#[derive(Debug, Clone)]
pub struct NumericalAccumulator {
    options: Options,
    /// The finite values while there are at most `exact_limit`.
    exact: Option<Vec<f64>>,
    sketch: Option<Sketch>,
    moments: Moments,
    missing: u64,
    infinite: u64,
    binned: Option<Binned>,
}

impl NumericalAccumulator {
    /// `binning`: the other side's bins and range, to count this side on exactly.
    pub fn new(options: Options, binning: Option<&Binning>) -> NumericalAccumulator {
        NumericalAccumulator {
            options,
            exact: (options.exact_limit > 0).then(Vec::new),
            sketch: (options.exact_limit == 0).then(|| Sketch::with_epsilon(options.epsilon)),
            moments: Moments::EMPTY,
            missing: 0,
            infinite: 0,
            binned: binning.map(|b| Binned {
                edges: b.edges.clone(),
                counts: vec![0; b.edges.len() + 1],
                range: b.range,
                outside: 0,
            }),
        }
    }

    /// Add a batch of values (NaN: missing).
    pub fn push(&mut self, batch: &[f64]) {
        let batch_moments = Moments::of(batch);
        self.moments = self.moments.combine(&batch_moments);
        self.missing += batch.iter().filter(|v| v.is_nan()).count() as u64;
        self.infinite += batch.iter().filter(|v| v.is_infinite()).count() as u64;
        let finite = || batch.iter().copied().filter(|v| v.is_finite());
        let fits = self.exact.as_ref().is_some_and(|e| {
            e.len() as u64 + batch_moments.count <= self.options.exact_limit as u64
        });
        match (&mut self.exact, &mut self.sketch) {
            (Some(values), _) if fits => values.extend(finite()),
            (exact, sketch) => {
                // Values kept exactly are counted on the bins once, sorted, at the end;
                // values that go into the sketch are counted as they pass.
                let s = sketch.get_or_insert_with(|| Sketch::with_epsilon(self.options.epsilon));
                if let Some(values) = exact.take() {
                    if let Some(b) = &mut self.binned {
                        b.count(values.iter().copied());
                    }
                    s.extend(values);
                }
                if let Some(b) = &mut self.binned {
                    b.count(finite());
                }
                s.extend(finite());
            }
        }
    }

    /// Exact values held.
    fn held(&self) -> usize {
        self.exact.as_ref().map_or(0, Vec::len)
    }

    /// The feature's summary.
    pub fn finish(self) -> NumericalProfile {
        let mut binned = self.binned;
        let values = match (self.exact, self.sketch) {
            (Some(v), _) => {
                let sorted = crate::stats::sorted_finite(&v);
                if let Some(b) = &mut binned {
                    b.count_sorted(&sorted);
                }
                Values::Exact(sorted)
            }
            (None, Some(s)) => Values::Sketch(s),
            (None, None) => Values::Exact(Vec::new()),
        };
        NumericalProfile {
            count: self.moments.count,
            missing: self.missing,
            infinite: self.infinite,
            mean: self.moments.mean,
            m2: self.moments.m2,
            range: self.moments.range(),
            values,
            binned,
        }
    }
}

impl Binned {
    /// Count values one by one.
    fn count(&mut self, values: impl Iterator<Item = f64>) {
        let (lo, hi) = self.range;
        for v in values {
            self.counts[self.edges.partition_point(|e| *e < v)] += 1;
            self.outside += u64::from(v < lo || v > hi);
        }
    }

    /// Count sorted values by searching the edges, not the values one by one.
    fn count_sorted(&mut self, sorted: &[f64]) {
        let counts = crate::stats::bin_counts(sorted, &self.edges);
        for (c, n) in self.counts.iter_mut().zip(counts) {
            *c += n as u64;
        }
        let (lo, hi) = self.range;
        let below = sorted.partition_point(|v| *v < lo);
        let above = sorted.len() - sorted.partition_point(|v| *v <= hi);
        self.outside += (below + above) as u64;
    }
}

/// A categorical feature being profiled.
#[derive(Debug, Clone, Default)]
pub struct CategoricalAccumulator {
    counts: HashMap<String, u64>,
    missing: u64,
    other: u64,
}

impl CategoricalAccumulator {
    /// Add a batch of values (None or empty: missing).
    pub fn push<'a>(&mut self, batch: impl IntoIterator<Item = Option<&'a str>>) {
        for v in batch {
            match v {
                None | Some("") => self.missing += 1,
                Some(v) => {
                    if let Some(c) = self.counts.get_mut(v) {
                        *c += 1;
                    } else if self.counts.len() < MAX_CATEGORIES {
                        self.counts.insert(v.to_string(), 1);
                    } else {
                        self.other += 1;
                    }
                }
            }
        }
    }

    pub fn finish(self) -> CategoricalProfile {
        CategoricalProfile {
            counts: self.counts.into_iter().collect(),
            missing: self.missing,
            other: self.other,
        }
    }
}

/// A profile being built: the row count, the schema and one accumulator per feature.
#[derive(Debug, Clone)]
pub struct ProfileBuilder {
    rows: u64,
    schema: Vec<(String, String)>,
    /// Public so a reader can feed the features on several cores at once.
    pub numerical: Vec<(String, NumericalAccumulator)>,
    pub categorical: Vec<(String, CategoricalAccumulator)>,
}

impl ProfileBuilder {
    pub fn new(
        schema: Vec<(String, String)>,
        numerical: &[String],
        categorical: &[String],
        options: Options,
        expect: &Expectation,
    ) -> ProfileBuilder {
        ProfileBuilder {
            rows: 0,
            schema,
            numerical: numerical
                .iter()
                .map(|n| {
                    let acc = NumericalAccumulator::new(options, expect.0.get(n));
                    (n.clone(), acc)
                })
                .collect(),
            categorical: categorical
                .iter()
                .map(|n| (n.clone(), CategoricalAccumulator::default()))
                .collect(),
        }
    }

    /// The profile of columns already in memory (a table's), as one batch.
    pub fn of_columns(
        schema: Vec<(String, String)>,
        numerical: &[(String, Vec<f64>)],
        categorical: &[(String, Vec<String>)],
        options: Options,
        expect: &Expectation,
    ) -> Profile {
        fn names<T>(cols: &[(String, T)]) -> Vec<String> {
            cols.iter().map(|(n, _)| n.clone()).collect()
        }
        let mut b = ProfileBuilder::new(
            schema,
            &names(numerical),
            &names(categorical),
            options,
            expect,
        );
        let rows = numerical
            .first()
            .map(|(_, v)| v.len())
            .or_else(|| categorical.first().map(|(_, v)| v.len()))
            .unwrap_or(0);
        b.add_rows(rows as u64);
        for ((_, acc), (_, values)) in b.numerical.iter_mut().zip(numerical) {
            acc.push(values);
        }
        for ((_, acc), (_, values)) in b.categorical.iter_mut().zip(categorical) {
            acc.push(values.iter().map(|v| Some(v.as_str())));
        }
        b.finish()
    }

    /// Count the rows of a batch (its columns are pushed to the accumulators).
    pub fn add_rows(&mut self, rows: u64) {
        self.rows += rows;
    }

    pub fn finish(self) -> Profile {
        // Sorting the exact values is most of the work: one feature per core.
        let held = self.numerical.iter().map(|(_, a)| a.held()).sum();
        let numerical =
            crate::par::try_map(self.numerical, crate::par::worth(held), |(name, a)| {
                Ok::<_, std::convert::Infallible>(FeatureProfile {
                    name,
                    summary: Summary::Numerical(a.finish()),
                })
            });
        let numerical = match numerical {
            Ok(n) => n.into_iter(),
            Err(never) => match never {},
        };
        let categorical = self
            .categorical
            .into_iter()
            .map(|(name, a)| FeatureProfile {
                name,
                summary: Summary::Categorical(a.finish()),
            });
        Profile {
            format: super::FORMAT,
            rows: self.rows,
            schema: self.schema,
            features: numerical.chain(categorical).collect(),
        }
    }
}
