//! The kill switch: freeze one pipeline or all (no retrain, no deploy) until `resume`, which
//! also lifts the freeze of an automatic rollback and the circuit breaker's pause.

use tracing::{info, warn};

use crate::approval::Notice;
use crate::engine::{Engine, EngineError, notices};
use crate::guards::Hold;
use crate::records::EventKind;
use crate::store::{GLOBAL, HoldKind};

impl Engine {
    /// The pipeline a hold is about (`None`: every pipeline).
    async fn hold_target(&self, pipeline: Option<&str>) -> Result<String, EngineError> {
        let config = self.config().await;
        match pipeline {
            Some(name) => config
                .pipeline(name)
                .map(|p| p.name.clone())
                .ok_or_else(|| EngineError::UnknownPipeline(name.to_string())),
            None => Ok(GLOBAL.to_string()),
        }
    }

    /// `retraind freeze [pipeline]`: stop retrains and deploys until `resume`. True when
    /// the freeze is new.
    pub async fn freeze(
        &self,
        pipeline: Option<&str>,
        actor: &str,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let target = self.hold_target(pipeline).await?;
        let shared = self.shared();
        let hold = Hold {
            by: actor.to_string(),
            reason: reason.to_string(),
            at: shared.now(),
        };
        let new = shared
            .store
            .set_hold(&target, HoldKind::Frozen, &hold)
            .await?;
        let runtime = self.runtime().await;
        if new {
            shared
                .event(
                    &target,
                    None,
                    EventKind::Frozen,
                    &format!("frozen by {actor}: {reason}"),
                )
                .await?;
            warn!(pipeline = target, actor, reason, "automation frozen");
            let notice = Notice {
                pipeline: target.clone(),
                cycle: None,
                kind: "frozen",
                text: format!(
                    "retraind: `{target}` frozen by {actor}: {reason}. Run `retraind resume{} --actor \"$(whoami)\"` to lift.",
                    pipeline.map(|p| format!(" {p}")).unwrap_or_default()
                ),
                at: shared.now(),
                slack_channel: runtime
                    .config
                    .pipeline(&target)
                    .and_then(|p| p.approval.slack_channel.clone()),
            };
            notices::notify_all(shared, &runtime.channels, notice).await;
        }
        notices::refresh_holds(shared, &runtime.config).await?;
        Ok(new)
    }

    /// `retraind resume [pipeline]`: lift a freeze and the circuit breaker's pause; how many
    /// holds were lifted.
    pub async fn resume(&self, pipeline: Option<&str>, actor: &str) -> Result<u64, EngineError> {
        let target = self.hold_target(pipeline).await?;
        let shared = self.shared();
        let lifted = shared.store.clear_holds(&target).await?;
        if lifted > 0 {
            shared
                .event(
                    &target,
                    None,
                    EventKind::ResumedAutomation,
                    &format!("resumed by {actor}"),
                )
                .await?;
            info!(pipeline = target, actor, "automation resumed");
        }
        let config = self.config().await;
        notices::refresh_holds(shared, &config).await?;
        Ok(lifted)
    }
}
