//! retraind: a continuous-training daemon. It checks on a schedule whether a production
//! model's data has drifted or its accuracy has degraded, retrains it when the evidence says
//! so, and guards every deploy with an evaluation gate, a human approval and a watch window.
//! See ARCHITECTURE.md for the map of these modules.
#![forbid(unsafe_code)]

/// `println!` for command output: a closed stdout (`retraind history | head -1`) ends the
/// command quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// `print!` with the same rule as [`out!`].
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

pub mod approval;
pub mod artifacts;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod cycle;
pub mod daemon;
pub mod data;
pub mod decision;
pub mod demo;
pub mod deploy;
pub mod drift;
pub mod engine;
pub mod estimate;
pub mod gate;
pub mod guards;
pub mod http;
pub mod kolmogorov;
pub mod metrics;
pub mod mlflow;
pub mod nan;
pub mod notify;
pub mod par;
pub mod performance;
pub mod profile;
pub mod progress;
pub mod promql;
pub mod quality;
pub mod records;
pub mod report;
pub mod retention;

pub mod schedule;
pub mod scheduler;
pub mod secret;
pub mod server;
pub mod signal;
pub mod signing;
pub mod sim;
pub mod source;
pub mod spark;
pub mod splits;
pub mod stats;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod train;
pub mod validate;
