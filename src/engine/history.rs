//! What the runaway guards are told about a pipeline: its recent retrains and deploys, the
//! outcomes of its newest cycles and the holds on it, read from the store.

use crate::guards::{self, GuardConfig};
use crate::records::EventKind;
use crate::store::{DeployKind, StoreError};

use super::Shared;

/// The pipeline's history over the longest window any of its guards looks at.
pub async fn read(
    shared: &Shared,
    pipeline: &str,
    cfg: &GuardConfig,
) -> Result<guards::History, StoreError> {
    let store = &shared.store;
    let longest = cfg
        .max_retrains
        .iter()
        .chain(&cfg.max_deploys)
        .map(|b| b.window)
        .chain([cfg.cooldown])
        .max()
        .unwrap_or_default();
    let since = shared.now() - chrono::Duration::from_std(longest).unwrap_or_default();
    let deploys = store
        .deployments(pipeline, 1000)
        .await?
        .into_iter()
        .filter(|d| d.kind == DeployKind::Deploy && d.at >= since)
        .map(|d| d.at)
        .collect();
    let holds = store.holds(pipeline).await?;
    let watching = match store.watching(pipeline).await? {
        Some(c) => {
            let version = match c.candidate_version {
                Some(id) => store.version(id).await?.map(|v| v.version).unwrap_or(0),
                None => 0,
            };
            c.deadline_at.map(|until| (version, until))
        }
        None => None,
    };
    Ok(guards::History {
        retrains: store
            .event_times(pipeline, &EventKind::RetrainStarted, since)
            .await?,
        deploys,
        recent_outcomes: store
            .recent_outcomes(pipeline, cfg.breaker_failures.max(1) as i64)
            .await?,
        global_freeze: holds.global,
        freeze: holds.frozen,
        paused: holds.paused,
        watching,
    })
}
