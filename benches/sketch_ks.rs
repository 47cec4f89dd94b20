//! The sketched KS test's error rates: a reference of N values of N(0, 1) summarised by a
//! KLL sketch of rank error ε, then DAYS quiet days (N more values of N(0, 1) each) and DAYS
//! shifted days (N(SHIFT, 1)), each sketched and tested against the reference by the check's
//! own code (`drift::detect_profiles`, α = 0.05, no correction, no effect gate). Prints one
//! JSON line: false alarms and catches, with the exact KS critical value beside the widened
//! one for scale. Days run on all cores; each draws from its own seed.
//!
//! ```sh
//! cargo bench --bench sketch_ks -- [N] [DAYS] [SHIFT] [EPSILON]   # 10000000 200 0.05 0.001
//! ```

use std::time::Instant;

use rand::SeedableRng;
use rand_distr::Distribution;
use rayon::prelude::*;
use retraind::drift::{DriftConfig, detect_profiles};
use retraind::profile::{Expectation, Options, Profile, ProfileBuilder};
use retraind::stats::Correction;

/// The profile of `n` draws of N(shift, 1), streamed in batches as a file would be.
fn profile(n: usize, shift: f64, seed: u64, options: Options) -> Profile {
    let mut b = ProfileBuilder::new(
        Vec::new(),
        &["x".to_string()],
        &[],
        options,
        &Expectation::default(),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut batch = vec![0.0; 1 << 16];
    let mut left = n;
    while left > 0 {
        let len = left.min(batch.len());
        for v in &mut batch[..len] {
            let z: f64 = rand_distr::StandardNormal.sample(&mut rng);
            *v = z + shift;
        }
        b.numerical[0].1.push(&batch[..len]);
        b.add_rows(len as u64);
        left -= len;
    }
    b.finish()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize, default: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (n, days, shift, epsilon) = (
        arg(0, 1e7) as usize,
        arg(1, 200.0) as usize,
        arg(2, 0.05),
        arg(3, 0.001),
    );
    let options = Options {
        epsilon,
        exact_limit: 0,
    };
    let config = DriftConfig {
        correction: Correction::None,
        min_effect_numerical: 0.0,
        ..DriftConfig::default()
    };
    let start = Instant::now();
    let reference = profile(n, 0.0, 1, options);
    let alarms = |shift: f64, seed0: u64| -> (usize, f64) {
        let ds: Vec<(bool, f64, f64)> = (0..days)
            .into_par_iter()
            .map(|day| {
                let current = profile(n, shift, seed0 + day as u64, options);
                let f = &detect_profiles(&reference, &current, &config, 50).features[0];
                (f.drifted, f.statistic, f.rank_error.unwrap_or(0.0))
            })
            .collect();
        let widened = ds.iter().map(|d| d.2).fold(0.0, f64::max);
        (ds.iter().filter(|d| d.0).count(), widened)
    };
    let (false_alarms, rank_error) = alarms(0.0, 1_000);
    let (caught, _) = alarms(shift, 100_000);
    let critical = 1.358 * (2.0 / n as f64).sqrt();
    println!(
        "{}",
        serde_json::json!({
            "rows_per_day": n,
            "days": days,
            "epsilon": epsilon,
            "shift_sd": shift,
            "quiet_false_alarms": false_alarms,
            "false_alarm_rate": false_alarms as f64 / days as f64,
            "shifted_caught": caught,
            "catch_rate": caught as f64 / days as f64,
            "ks_critical_exact": critical,
            "widened_by": rank_error,
            "seconds": start.elapsed().as_secs_f64(),
        })
    );
}
