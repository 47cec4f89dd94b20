//! The real engine through simulated years (`retraind::sim`): every promise holds with the
//! brakes on; the brakes off break them.

use retraind::sim::{self, Options};

#[test]
fn one_seed_smoke() {
    let started = std::time::Instant::now();
    let run = sim::run_seed(1, &Options::default()).unwrap();
    eprintln!("{}", run.timeline);
    eprintln!("{:?} in {:?}", run.stats, started.elapsed());
    for v in &run.violations {
        eprintln!("{v}");
    }
}
