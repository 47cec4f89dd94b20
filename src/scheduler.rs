//! The scheduler: fires each pipeline's cron schedule, and catches up once on start for a
//! fire time the daemon missed while it was down.
//!
//! One background loop serves every pipeline. It re-reads the configuration on every tick
//! (so a SIGHUP reload takes effect), sleeps until the earliest next fire time in short
//! slices (so wall-clock jumps and suspends are noticed within 30 s), and asks the engine to
//! start a cycle. Fire times are recorded in the store with the cycle, in one transaction, so
//! a fire time is taken exactly once even across restarts.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cycle::TriggerKind;
use crate::engine::Engine;

/// Longest single sleep on the wall clock, so the loop re-checks the time and the config
/// often enough.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Start one cycle for every pipeline whose last scheduled fire time was missed.
pub async fn catch_up(engine: &Engine, now: DateTime<Utc>) -> usize {
    let config = engine.config().await;
    let mut started = 0;
    for p in config.pipelines.iter().filter(|p| p.catch_up) {
        let row = match engine.store().pipeline(&p.name).await {
            Ok(Some(row)) => row,
            Ok(None) => continue,
            Err(e) => {
                warn!(pipeline = p.name, error = %e, "cannot read pipeline state for catch-up");
                continue;
            }
        };
        if let Some(missed) = p
            .schedule
            .missed_run(now, row.last_scheduled_at, row.created_at)
        {
            info!(pipeline = p.name, missed = %missed, "daemon was down at the scheduled time; catching up once");
            match engine
                .trigger(&p.name, TriggerKind::CatchUp, None, Some(missed))
                .await
            {
                Ok(_) => started += 1,
                Err(e) => warn!(pipeline = p.name, error = %e, "catch-up trigger failed"),
            }
        }
    }
    started
}

/// Run the schedule loop until `shutdown` is cancelled.
pub async fn run(engine: Engine, shutdown: CancellationToken) {
    // Fire times at or before this instant were handled by catch-up (or are in the past).
    let mut last_tick: HashMap<String, DateTime<Utc>> = HashMap::new();
    let clock = engine.shared().clock.clone();
    let started = clock.now();
    loop {
        let config = engine.config().await;
        let now = clock.now();
        let mut earliest: Option<DateTime<Utc>> = None;
        for p in &config.pipelines {
            let after = *last_tick.entry(p.name.clone()).or_insert(started);
            let Some(next) = p.schedule.next_after(after) else {
                continue;
            };
            if next <= now {
                last_tick.insert(p.name.clone(), next);
                match engine
                    .trigger(&p.name, TriggerKind::Scheduled, None, Some(next))
                    .await
                {
                    Ok(outcome) => {
                        info!(pipeline = p.name, fire = %next, ?outcome, "schedule fired")
                    }
                    Err(e) => warn!(pipeline = p.name, error = %e, "scheduled trigger failed"),
                }
                let upcoming = p.schedule.next_after(next);
                set_next(&engine, &p.name, upcoming);
                earliest = min_opt(earliest, upcoming);
            } else {
                set_next(&engine, &p.name, Some(next));
                earliest = min_opt(earliest, Some(next));
            }
        }
        let wait = earliest
            .and_then(|t| (t - clock.now()).to_std().ok())
            .unwrap_or(Duration::ZERO)
            .min(clock.slice(MAX_SLEEP));
        // Wakeable: a reload wakes the loop to read the new schedules.
        tokio::select! {
            _ = clock.sleep(wait.max(Duration::from_millis(10)), true) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

fn set_next(engine: &Engine, pipeline: &str, next: Option<DateTime<Utc>>) {
    if let Some(t) = next {
        engine
            .metrics()
            .next_scheduled_check
            .with_label_values(&[pipeline])
            .set(t.timestamp() as f64);
    }
}

fn min_opt(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}
