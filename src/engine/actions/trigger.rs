//! Start a cycle of a pipeline now (the schedule, a catch-up, the API, the demo), unless one
//! is in flight.

use chrono::{DateTime, Utc};
use tracing::info;

use crate::cycle::{CycleState, TriggerKind};
use crate::engine::{Engine, EngineError};
use crate::store::CreateOutcome;

impl Engine {
    /// Start a cycle of `pipeline` now, unless one is in flight. `date` is the cycle's day
    /// (`{date}` in data paths); it defaults to today in the pipeline's timezone.
    pub async fn trigger(
        &self,
        pipeline: &str,
        kind: TriggerKind,
        date: Option<String>,
        fired_at: Option<DateTime<Utc>>,
    ) -> Result<CreateOutcome, EngineError> {
        let shared = self.shared();
        if shared.shutdown.is_cancelled() {
            return Err(EngineError::ShuttingDown);
        }
        if !self.is_leader() {
            return Err(self.not_leader().await);
        }
        let config = self.config().await;
        let p = config
            .pipeline(pipeline)
            .ok_or_else(|| EngineError::UnknownPipeline(pipeline.to_string()))?;
        let now = shared.now();
        let date = date.unwrap_or_else(|| p.schedule.local_date(fired_at.unwrap_or(now)));
        shared.store.ensure_pipeline(pipeline, now).await?;
        let outcome = shared
            .store
            .create_cycle(pipeline, kind, &date, fired_at, now)
            .await?;
        match outcome {
            CreateOutcome::Created(id) => {
                info!(
                    pipeline,
                    cycle = id,
                    trigger = kind.as_str(),
                    date,
                    "cycle started"
                );
                shared.metrics.set_state(pipeline, CycleState::Scheduled);
                self.spawn_drive(id);
            }
            CreateOutcome::AlreadyRunning(id) => {
                info!(
                    pipeline,
                    cycle = id,
                    trigger = kind.as_str(),
                    "cycle already in flight; trigger ignored"
                );
            }
        }
        Ok(outcome)
    }
}
