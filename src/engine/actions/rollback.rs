//! Move a champion back — by hand (`retraind rollback`, the API) or by the post-deploy
//! watch — through the deploy targets first; the aliases move only once they all succeeded.

use tracing::warn;

use crate::approval::Notice;
use crate::engine::{Engine, EngineError, Runtime, Shared, StepError, mirror, notices, targets};
use crate::records::EventKind;
use crate::store::{ChampionMove, DeployKind, ModelVersion};

/// Why a rollback happened (the `reason` label of `retraind_rollbacks_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollbackCause {
    /// `retraind rollback` / the API.
    Manual,
    /// The post-deploy watch of this cycle saw the live metric fail `failure_limit` times.
    Watch(i64),
}

impl RollbackCause {
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackCause::Manual => "manual",
            RollbackCause::Watch(_) => "watch",
        }
    }
}

impl Engine {
    /// Move the champion of `pipeline` back: to version number `to`, or to `previous`.
    pub async fn rollback(
        &self,
        pipeline: &str,
        to: Option<i64>,
        actor: &str,
        reason: &str,
        cause: RollbackCause,
    ) -> Result<ModelVersion, EngineError> {
        if !self.is_leader() {
            return Err(self.not_leader().await);
        }
        let runtime = self.runtime().await;
        roll_back(self.shared(), &runtime, pipeline, to, actor, reason, cause).await
    }
}

/// The version a rollback restores: version number `to`, or `previous`.
async fn target(
    shared: &Shared,
    pipeline: &str,
    to: Option<i64>,
) -> Result<ModelVersion, EngineError> {
    Ok(match to {
        Some(n) => shared
            .store
            .versions(pipeline)
            .await?
            .into_iter()
            .find(|v| v.version == n)
            .ok_or(EngineError::UnknownVersion {
                pipeline: pipeline.to_string(),
                version: n,
            })?,
        None => shared
            .store
            .alias(pipeline, "previous")
            .await?
            .ok_or_else(|| EngineError::NoPrevious(pipeline.to_string()))?,
    })
}

/// Roll back (the engine's action and the watch step share it).
pub async fn roll_back(
    shared: &Shared,
    runtime: &Runtime,
    pipeline: &str,
    to: Option<i64>,
    actor: &str,
    reason: &str,
    cause: RollbackCause,
) -> Result<ModelVersion, EngineError> {
    let (Some(p), Some(parts)) = (runtime.config.pipeline(pipeline), runtime.parts(pipeline))
    else {
        return Err(EngineError::UnknownPipeline(pipeline.to_string()));
    };
    let store = &shared.store;
    let champion = store
        .alias(pipeline, "champion")
        .await?
        .ok_or_else(|| EngineError::NoChampion(pipeline.to_string()))?;
    let target = target(shared, pipeline, to).await?;
    if let Some(at) = store.collected_at(target.id).await? {
        return Err(EngineError::Collected {
            pipeline: pipeline.to_string(),
            version: target.version,
            at: at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
    }
    if target.id == champion.id {
        return Err(EngineError::AlreadyChampion {
            pipeline: pipeline.to_string(),
            version: target.version,
        });
    }
    let cycle = match cause {
        RollbackCause::Manual => None,
        RollbackCause::Watch(cycle) => Some(cycle),
    };
    let mv = targets::put_in_place(
        shared,
        parts.targets.clone(),
        runtime.config.daemon.state_dir.clone(),
        (DeployKind::Rollback, cycle),
        &target,
        Some(champion.clone()),
    )
    .await
    .map_err(|e| match e {
        StepError::Store(e) => EngineError::Store(e),
        e => EngineError::Deploy(e.to_string()),
    })?;
    let why = format!("v{} -> v{}: {reason}", champion.version, target.version);
    let moved = store
        .promote(
            &ChampionMove {
                pipeline,
                version_id: target.id,
                kind: DeployKind::Rollback,
                cycle,
                actor,
                reason: &why,
                move_id: mv.id,
            },
            shared.now(),
        )
        .await?;
    if moved {
        shared
            .metrics
            .rollbacks_total
            .with_label_values(&[pipeline, cause.as_str()])
            .inc();
        shared
            .metrics
            .champion_version
            .with_label_values(&[pipeline])
            .set(target.version);
        shared
            .event(
                pipeline,
                None,
                EventKind::Rollback,
                &format!("rolled back by {actor} ({}): {why}", cause.as_str()),
            )
            .await?;
        warn!(
            pipeline,
            actor,
            cause = cause.as_str(),
            from = champion.version,
            to = target.version,
            reason,
            "rolled back"
        );
        let notice = Notice {
            pipeline: pipeline.to_string(),
            cycle: None,
            kind: "rollback",
            text: format!("retraind: `{pipeline}` rolled back by {actor}, {why}"),
            at: shared.now(),
            slack_channel: p.approval.slack_channel.clone(),
        };
        notices::notify_all(shared, &parts.channels, notice).await;
    }
    if let Some(m) = &p.mlflow {
        mirror::aliases(shared, pipeline, None, m).await;
    }
    shared.wake();
    Ok(target)
}
