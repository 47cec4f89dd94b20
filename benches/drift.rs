//! Drift check benchmark: load a reference and a current file and run the per-feature tests
//! and the dataset rule, as the check step does. Prints one JSON line with the timings.
//!
//! Run through `benches/drift_vs_peers.sh`, which generates the files and times scipy's
//! `ks_2samp` loop (and Evidently, with `--evidently`) on the same files in the same run:
//!
//! ```sh
//! cargo bench --bench drift -- REFERENCE CURRENT
//! ```

use std::path::PathBuf;
use std::time::Instant;

use retraind::data;
use retraind::drift::DriftConfig;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let [reference, current] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench drift -- REFERENCE CURRENT");
        std::process::exit(2);
    };
    let (reference, current) = (
        data::Input::file(&PathBuf::from(reference)),
        data::Input::file(&PathBuf::from(current)),
    );
    let start = Instant::now();
    let fail = |e: retraind::data::DataError| -> ! {
        eprintln!("{e}");
        std::process::exit(1);
    };
    let spec = data::RoleSpec {
        numerical: None,
        categorical: Some(&[]),
        target: "target",
        ignore: &[],
        ..data::RoleSpec::default()
    };
    // As `retraind check` does.
    let (_, r, c) = data::load_pair(&reference, &current, &spec).unwrap_or_else(|e| fail(e));
    let loaded = start.elapsed();
    let config = DriftConfig::default();
    let tested = Instant::now();
    let report = retraind::drift::detect(&r, &c, &config, 50);
    let test_s = tested.elapsed().as_secs_f64();
    println!(
        "{{\"tool\":\"retraind\",\"features\":{},\"reference_rows\":{},\"current_rows\":{},\"load_s\":{:.3},\"test_s\":{:.3},\"total_s\":{:.3},\"drifted\":{}}}",
        report.features.len(),
        r.rows,
        c.rows,
        loaded.as_secs_f64(),
        test_s,
        start.elapsed().as_secs_f64(),
        report.dataset.drifted_features
    );
}
