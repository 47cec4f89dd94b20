//! Telling people and the metrics what the guards did: a guard's block (an event and a
//! counter), a notice through every channel (best effort), the frozen gauge, and the
//! circuit breaker that pauses a pipeline after consecutive failed cycles.

use std::sync::Arc;

use tracing::{error, warn};

use super::{Shared, history};
use crate::approval::{ApprovalChannel, Notice};
use crate::config::{Config, Pipeline};
use crate::guards::{self, Block, Hold};
use crate::records::EventKind;
use crate::store::{HoldKind, StoreError};

/// Count and record a guard's block (event + metric).
pub async fn blocked(
    shared: &Shared,
    pipeline: &str,
    cycle: Option<i64>,
    b: &Block,
) -> Result<(), StoreError> {
    shared
        .metrics
        .guard_blocks
        .with_label_values(&[pipeline, b.guard.as_str()])
        .inc();
    warn!(
        pipeline,
        cycle,
        guard = b.guard.as_str(),
        reason = b.reason,
        "runaway guard blocked an action"
    );
    shared
        .event(pipeline, cycle, EventKind::GuardBlock, &b.to_string())
        .await
}

/// Tell every channel (best effort; failures are logged and stored as events).
pub async fn notify_all(shared: &Shared, channels: &[Arc<dyn ApprovalChannel>], notice: Notice) {
    for channel in channels {
        if let Err(e) = channel.notify(&notice).await {
            warn!(pipeline = notice.pipeline, channel = channel.name(), error = %e, "notice not delivered");
            let _ = shared
                .event(
                    &notice.pipeline,
                    notice.cycle,
                    EventKind::NoticeFailed,
                    &e.to_string(),
                )
                .await;
        }
    }
}

/// Export `retraind_pipeline_frozen` from the holds on record.
pub async fn refresh_holds(shared: &Shared, config: &Config) -> Result<(), StoreError> {
    for p in &config.pipelines {
        let h = shared.store.holds(&p.name).await?;
        let held = h.global.is_some() || h.frozen.is_some() || h.paused.is_some();
        shared
            .metrics
            .pipeline_frozen
            .with_label_values(&[&p.name])
            .set(i64::from(held));
    }
    Ok(())
}

/// After a failed cycle: pause the pipeline if the failures are consecutive enough.
pub async fn trip_breaker(
    shared: &Shared,
    config: &Config,
    p: &Pipeline,
    channels: &[Arc<dyn ApprovalChannel>],
    cycle: i64,
) -> Result<(), StoreError> {
    let pipeline = p.name.as_str();
    let h = history::read(shared, pipeline, &p.guards).await?;
    let Some(reason) = guards::breaker_trips(&h, &p.guards) else {
        return Ok(());
    };
    let hold = Hold {
        by: "circuit_breaker".into(),
        reason: reason.clone(),
        at: shared.now(),
    };
    if !shared
        .store
        .set_hold(pipeline, HoldKind::Paused, &hold)
        .await?
    {
        return Ok(());
    }
    error!(
        pipeline,
        cycle, reason, "circuit breaker: pipeline paused until `retraind resume` lifts it"
    );
    shared
        .event(pipeline, Some(cycle), EventKind::Paused, &reason)
        .await?;
    let notice = Notice {
        pipeline: pipeline.to_string(),
        cycle: Some(cycle),
        kind: "paused",
        text: format!(
            "retraind: `{pipeline}` paused by the circuit breaker: {reason}. Fix the cause, then run `retraind resume {pipeline} --actor \"$(whoami)\"`."
        ),
        at: shared.now(),
        slack_channel: p.approval.slack_channel.clone(),
    };
    notify_all(shared, channels, notice).await;
    refresh_holds(shared, config).await
}
