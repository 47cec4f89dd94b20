//! `deploying`: put the approved version in place through the pipeline's targets, then move
//! `champion` (and `previous`) in one store transaction with the deployment record, and
//! start the watch window. Targets first, aliases after: the store never names a champion
//! that was not put in place; after a crash past the alias move nothing runs twice.

use super::StepResult;
use crate::approval::ApprovalDecision;
use crate::cycle::CycleState;
use crate::engine::{StepContext, StepError, mirror, targets};
use crate::records::EventKind;
use crate::store::{ChampionMove, CycleUpdate, DeployKind};

pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    let version = ctx.candidate().await?;
    let champion = ctx.champion().await?;
    let already = champion.as_ref().is_some_and(|v| v.id == version.id);
    let mv = match already {
        false => Some(
            targets::put_in_place(
                &ctx.shared,
                ctx.parts.targets.clone(),
                ctx.state_dir().to_path_buf(),
                (DeployKind::Deploy, Some(ctx.cycle.id)),
                &version,
                champion.clone(),
            )
            .await?,
        ),
        true => None,
    };
    let approvers: Vec<String> = ctx
        .store()
        .approvals(ctx.cycle.id)
        .await?
        .into_iter()
        .filter(|a| a.decision == ApprovalDecision::Approve)
        .map(|a| a.approver)
        .collect();
    let moved = match &mv {
        Some(mv) => {
            ctx.store()
                .promote(
                    &ChampionMove {
                        pipeline: &ctx.cycle.pipeline,
                        version_id: version.id,
                        kind: DeployKind::Deploy,
                        cycle: Some(ctx.cycle.id),
                        actor: &approvers.join(", "),
                        reason: &format!("cycle {} approved", ctx.cycle.id),
                        move_id: mv.id,
                    },
                    ctx.now(),
                )
                .await?
        }
        None => false,
    };
    let pipeline = ctx.cycle.pipeline.as_str();
    if moved {
        ctx.metrics()
            .deploys_total
            .with_label_values(&[pipeline])
            .inc();
        ctx.event(
            EventKind::Deployed,
            &format!(
                "v{} deployed (approved by {})",
                version.version,
                approvers.join(", ")
            ),
        )
        .await?;
    }
    ctx.metrics()
        .champion_version
        .with_label_values(&[pipeline])
        .set(version.version);
    if let Some(m) = &ctx.pipeline.mlflow {
        mirror::aliases(&ctx.shared, pipeline, Some(ctx.cycle.id), m).await;
    }
    let watch_until =
        ctx.now() + chrono::Duration::from_std(ctx.pipeline.deploy.watch).unwrap_or_default();
    let reason = format!(
        "champion -> v{}{}; watching until {}",
        version.version,
        if moved { "" } else { " (already promoted)" },
        watch_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    let update = CycleUpdate {
        deadline_at: Some(Some(watch_until)),
        ..CycleUpdate::default()
    };
    Ok(ctx.to(CycleState::Watching, reason, update))
}

#[cfg(test)]
mod tests {
    use crate::cycle::CycleState;
    use crate::engine::testkit::Kit;

    /// An approved first model is put in place (the `current` link) and becomes the
    /// champion with a deployment record; the step starts the watch window.
    #[tokio::test]
    async fn an_approved_version_goes_in_place_and_becomes_champion() {
        let kit = Kit::new().await;
        kit.write_today(Kit::NORMAL, 1000);
        let ctx = kit.run_until(CycleState::Deploying).await;
        let (to, reason, update) = kit.advanced(super::run(&ctx).await.unwrap());
        assert_eq!(to, CycleState::Watching);
        assert!(
            reason.starts_with("champion -> v1; watching until "),
            "{reason}"
        );
        assert!(update.deadline_at.is_some());
        let champion = kit.store().alias("p", "champion").await.unwrap().unwrap();
        assert_eq!(champion.version, 1);
        let link = kit.state_dir().join("models/p/current");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            std::path::PathBuf::from(&champion.path)
        );
        let deployments = kit.store().deployments("p", 10).await.unwrap();
        assert_eq!(
            (deployments.len(), deployments[0].actor.as_str()),
            (1, "auto")
        );
    }
}
