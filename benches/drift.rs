//! The drift check's compute, timed inside one process: `retraind check`'s own code
//! (`cli::run_check`: read both files within the memory budget, the quality gate, every
//! feature's test, the dataset rule) on the arguments given, as `retraind check` takes
//! them. Prints one JSON line: `compute_s` (from before the files are opened to the report),
//! the features tested and how many drifted.
//!
//! Run through `benches/drift_vs_peers.sh`, which times whole processes too and scipy's
//! `ks_2samp` loop on the same files in the same run:
//!
//! ```sh
//! cargo bench --bench drift -- --reference REF --current CUR --correction none
//! ```

use std::time::Instant;

use clap::Parser;
use retraind::cli::{CheckArgs, run_check};

#[derive(Parser)]
struct Bench {
    #[command(flatten)]
    check: CheckArgs,
}

fn main() {
    // `cargo bench` adds `--bench` for harnesses; it is not a check argument.
    let args = std::env::args().filter(|a| a != "--bench");
    let bench = Bench::parse_from(args);
    let start = Instant::now();
    let report = run_check(&bench.check, &retraind::cli::Quiet).unwrap_or_else(|e| {
        eprintln!("{e:#}");
        std::process::exit(1);
    });
    println!(
        "{}",
        serde_json::json!({
            "tool": "retraind",
            "compute_s": start.elapsed().as_secs_f64(),
            "features": report.features.len(),
            "reference_rows": report.reference.rows,
            "current_rows": report.current.rows,
            "drifted": report.dataset.drifted_features,
        })
    );
}
