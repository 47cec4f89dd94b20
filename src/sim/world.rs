//! The simulated world one pipeline serves: a binary label that depends on two features
//! through a boundary that moves (concept drift), a feature whose mean moves (covariate
//! drift), both in episodes; labels that arrive [`LABEL_LAG_DAYS`] days after the rows;
//! and the truth any model can be held to — its accuracy on each day's traffic.
//!
//! Everything is drawn from the seed, day by day, so a seed is one reproducible world.

use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};
use polars::prelude::{Column, DataFrame, ParquetCompression, ParquetWriter};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::fakes::SimModel;

/// Days between a row and its label.
pub const LABEL_LAG_DAYS: i64 = 3;
/// Rows of traffic a day (and labelled rows a day, once their labels arrived).
pub const ROWS_PER_DAY: usize = 150;
/// Share of labels the world flips (no model can do better than 1 - this).
pub const LABEL_NOISE: f64 = 0.03;

/// How the world is on one day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Regime {
    /// Mean of `x1`.
    pub mu: f64,
    /// `y = 1` when `x1 + x2 > boundary` (before label noise).
    pub boundary: f64,
}

impl Regime {
    const BASE: Regime = Regime {
        mu: 0.0,
        boundary: 0.0,
    };
}

/// One row of traffic.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub ts_ms: i64,
    pub x1: f64,
    pub x2: f64,
    pub y: u8,
}

/// A drift episode: from `start` for `days` days the world is `regime`.
#[derive(Debug, Clone, Copy)]
pub struct Episode {
    pub start: i64,
    pub days: i64,
    pub regime: Regime,
}

pub struct World {
    seed: u64,
    pub start: DateTime<Utc>,
    pub days: i64,
    pub episodes: Vec<Episode>,
}

impl World {
    /// The world of `seed`: two to four drift episodes of 4–25 days in `days` days.
    pub fn new(seed: u64, start: DateTime<Utc>, days: i64) -> World {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5EED_0001);
        let mut episodes = Vec::new();
        for _ in 0..rng.random_range(2..=4) {
            let shift = rng.random_range(0.6..1.6) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
            episodes.push(Episode {
                start: rng.random_range(10..days.max(11)),
                days: rng.random_range(4..=25),
                regime: Regime {
                    mu: shift,
                    boundary: shift * rng.random_range(0.3..0.9),
                },
            });
        }
        episodes.sort_by_key(|e| e.start);
        World {
            seed,
            start,
            days,
            episodes,
        }
    }

    /// The regime of day `day` (0 = the first simulated day).
    pub fn regime(&self, day: i64) -> Regime {
        self.episodes
            .iter()
            .rev()
            .find(|e| day >= e.start && day < e.start + e.days)
            .map(|e| e.regime)
            .unwrap_or(Regime::BASE)
    }

    pub fn day_start(&self, day: i64) -> DateTime<Utc> {
        self.start + chrono::Duration::days(day)
    }

    /// The day of instant `at`.
    pub fn day_of(&self, at: DateTime<Utc>) -> i64 {
        (at - self.start).num_days()
    }

    /// `n` rows of day `day` from stream `stream` (each stream its own draw).
    pub fn rows(&self, day: i64, n: usize, stream: u64) -> Vec<Row> {
        let r = self.regime(day);
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.seed ^ (day as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream,
        );
        let t0 = self.day_start(day).timestamp_millis();
        (0..n)
            .map(|_| {
                let x1 = r.mu + rng.sample::<f64, _>(StandardNormal);
                let x2 = 0.5 * rng.sample::<f64, _>(StandardNormal);
                let mut y = u8::from(x1 + x2 > r.boundary);
                if rng.random_bool(LABEL_NOISE) {
                    y = 1 - y;
                }
                Row {
                    ts_ms: t0 + rng.random_range(0..86_400_000),
                    x1,
                    x2,
                    y,
                }
            })
            .collect()
    }

    /// The day's window as the pipeline reads it (`data/<date>.parquet`): the day's rows
    /// without labels, and the rows of [`LABEL_LAG_DAYS`] days ago whose labels have arrived.
    pub fn write_window(&self, dir: &Path, day: i64) -> io::Result<()> {
        let mut rows: Vec<(Row, bool)> = self
            .rows(day, ROWS_PER_DAY, 1)
            .into_iter()
            .map(|r| (r, false))
            .collect();
        rows.extend(
            self.rows(day - LABEL_LAG_DAYS, ROWS_PER_DAY, 1)
                .into_iter()
                .map(|r| (r, true)),
        );
        let date = self.day_start(day).format("%Y-%m-%d");
        write(&dir.join(format!("data/{date}.parquet")), &rows)
    }

    /// The first reference: labelled rows of the two weeks before day 0.
    pub fn write_reference(&self, dir: &Path) -> io::Result<()> {
        let rows: Vec<(Row, bool)> = (-14..0)
            .flat_map(|day| self.rows(day, 60, 2))
            .map(|r| (r, true))
            .collect();
        write(&dir.join("data/reference.parquet"), &rows)
    }

    /// The golden set: a fixed labelled sample of the base regime.
    pub fn write_golden(&self, dir: &Path) -> io::Result<()> {
        let rows: Vec<(Row, bool)> = self
            .rows(-100, 400, 3)
            .into_iter()
            .map(|r| (r, true))
            .collect();
        write(&dir.join("data/golden.parquet"), &rows)
    }

    /// `model`'s accuracy on the world's usual traffic (outside drift episodes; 2,000 rows).
    pub fn usual_accuracy(&self, model: &SimModel) -> f64 {
        share_right(model, &self.rows(-200, 2000, 5))
    }

    /// `model`'s accuracy on day `day`'s traffic (a fixed sample of 2,000 rows).
    pub fn accuracy(&self, model: &SimModel, day: i64) -> f64 {
        share_right(model, &self.rows(day, 2000, 4))
    }
}

/// The share of `rows` that `model` gets right.
fn share_right(model: &SimModel, rows: &[Row]) -> f64 {
    let right = rows
        .iter()
        .filter(|r| model.predict(r.ts_ms, r.x1, r.x2).0 == r.y)
        .count();
    right as f64 / rows.len() as f64
}

/// Write `rows` (with their label where the flag says it arrived) as Parquet.
fn write(path: &Path, rows: &[(Row, bool)]) -> io::Result<()> {
    let columns = vec![
        // Epoch seconds: how the pipeline reads an integer timestamp.
        Column::new(
            "ts".into(),
            rows.iter()
                .map(|(r, _)| r.ts_ms / 1000)
                .collect::<Vec<i64>>(),
        ),
        Column::new(
            "x1".into(),
            rows.iter().map(|(r, _)| r.x1).collect::<Vec<f64>>(),
        ),
        Column::new(
            "x2".into(),
            rows.iter().map(|(r, _)| r.x2).collect::<Vec<f64>>(),
        ),
        Column::new(
            "y".into(),
            rows.iter()
                .map(|(r, labelled)| labelled.then_some(i64::from(r.y)))
                .collect::<Vec<Option<i64>>>(),
        ),
    ];
    let mut df = DataFrame::new_infer_height(columns).map_err(io::Error::other)?;
    let file = std::fs::File::create(path)?;
    // Uncompressed: a few KB a day, and (de)compression was 5 % of a seed's time.
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Uncompressed)
        .finish(&mut df)
        .map(|_| ())
        .map_err(io::Error::other)
}
