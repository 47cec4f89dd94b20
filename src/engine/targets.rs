//! Putting a version in place through a pipeline's deploy targets, for a deploy and for a
//! rollback alike, one move at a time: the move is opened in the store before any target
//! runs ([`Store::begin_move`](crate::store::Store::begin_move)) and closed by the alias move
//! or, when a target fails, by putting the champion back. After a crash, a move left open by
//! a cycle no longer deploying is undone on start ([`settle_open_moves`]), so the serving
//! system and the store's champion agree.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{error, warn};

use super::{Shared, StepError};
use crate::cycle::CycleState;
use crate::deploy::{self, DeployTarget, Placement};
use crate::store::{ChampionMove, DeployKind, ModelVersion, MoveRow};

/// Open (or take up) the move of `version` into place and run every target, in order. When
/// one fails, the targets that already ran are pointed back at `fallback` (the champion in
/// place) and the move is closed as undone, so nothing outside the store names a version
/// the store does not. Returns the open move, for the alias move to close.
pub async fn put_in_place(
    shared: &Shared,
    targets: Vec<Arc<dyn DeployTarget>>,
    state_dir: PathBuf,
    (kind, cycle): (DeployKind, Option<i64>),
    version: &ModelVersion,
    fallback: Option<ModelVersion>,
) -> Result<MoveRow, StepError> {
    let mv = shared
        .store
        .begin_move(&version.pipeline, kind, version.id, cycle, shared.now())
        .await?;
    let delivery = deploy::delivery_id(version, mv.id);
    let v = version.clone();
    let placed = Shared::blocking(move || {
        let placement = Placement {
            delivery: &delivery,
            version: &v,
            replacing: fallback.as_ref(),
        };
        for (i, t) in targets.iter().enumerate() {
            if let Err(e) = t.deploy(&state_dir, &placement) {
                let kept = match &fallback {
                    Some(f) => {
                        put_back(&targets[..i], &state_dir, &delivery, f, Some(&v));
                        format!("the champion stays v{}", f.version)
                    }
                    None => "there is no champion".to_string(),
                };
                return Ok(Err(format!("{e}; {kept}")));
            }
        }
        Ok(Ok(()))
    })
    .await?;
    match placed {
        Ok(()) => Ok(mv),
        Err(why) => {
            shared.store.undo_move(mv.id, shared.now()).await?;
            Err(StepError::Invalid(why))
        }
    }
}

/// Point `targets` back at `champion` under the move's undo id.
fn put_back(
    targets: &[Arc<dyn DeployTarget>],
    state_dir: &std::path::Path,
    delivery: &str,
    champion: &ModelVersion,
    replacing: Option<&ModelVersion>,
) {
    let undo = format!("{delivery}-undo");
    let placement = Placement {
        delivery: &undo,
        version: champion,
        replacing,
    };
    for t in targets {
        if let Err(r) = t.deploy(state_dir, &placement) {
            error!(pipeline = champion.pipeline, target = t.name(), error = %r, "cannot put the champion back in place");
        }
    }
}

/// On start, settle every move a crash left open, before anything else moves, so that the
/// serving system and the store agree: a deploy whose cycle is still deploying, and the
/// watch's rollback of a cycle still watching, are left to their step, which takes the move
/// up under the same delivery id; a rollback by hand is completed under its delivery id (the
/// person asked for it; the request died with the daemon); any other move is undone — the
/// store's champion put back through every target.
pub async fn settle_open_moves(shared: &Shared, runtime: &super::Runtime) -> Result<(), StepError> {
    for mv in shared.store.open_moves().await? {
        let owner = match mv.cycle {
            Some(c) => shared.store.cycle(c).await?.map(|c| c.state),
            None => None,
        };
        let taken_up = matches!(
            (mv.kind, owner),
            (DeployKind::Deploy, Some(CycleState::Deploying))
                | (DeployKind::Rollback, Some(CycleState::Watching))
        );
        if taken_up {
            continue;
        }
        let Some(parts) = runtime.parts(&mv.pipeline) else {
            warn!(
                pipeline = mv.pipeline,
                r#move = mv.id,
                "an open move of a pipeline no longer configured is closed without touching its targets"
            );
            shared.store.undo_move(mv.id, shared.now()).await?;
            continue;
        };
        let champion = shared.store.alias(&mv.pipeline, "champion").await?;
        let Some(moving) = shared.store.version(mv.version_id).await? else {
            shared.store.undo_move(mv.id, shared.now()).await?;
            continue;
        };
        let state_dir = runtime.config.daemon.state_dir.clone();
        if mv.kind == DeployKind::Rollback && mv.cycle.is_none() {
            complete_rollback(shared, &parts.targets, state_dir, &mv, &moving, champion).await?;
            continue;
        }
        if let Some(champion) = champion {
            warn!(
                pipeline = mv.pipeline,
                r#move = mv.id,
                champion = champion.version,
                "a champion move was interrupted; putting the store's champion back in place"
            );
            let targets = parts.targets.clone();
            let delivery = deploy::delivery_id(&moving, mv.id);
            Shared::blocking(move || {
                put_back(&targets, &state_dir, &delivery, &champion, Some(&moving));
                Ok(())
            })
            .await?;
        }
        shared.store.undo_move(mv.id, shared.now()).await?;
    }
    Ok(())
}

/// Finish a rollback by hand that a crash interrupted: its targets again under the same
/// delivery id, then the alias move that closes it (or, when a target fails, the undo).
async fn complete_rollback(
    shared: &Shared,
    targets: &[Arc<dyn DeployTarget>],
    state_dir: PathBuf,
    mv: &MoveRow,
    moving: &ModelVersion,
    champion: Option<ModelVersion>,
) -> Result<(), StepError> {
    warn!(
        pipeline = mv.pipeline,
        r#move = mv.id,
        version = moving.version,
        "completing a rollback a restart interrupted, under its delivery id"
    );
    let placed = put_in_place(
        shared,
        targets.to_vec(),
        state_dir,
        (mv.kind, mv.cycle),
        moving,
        champion,
    )
    .await;
    if let Err(e) = placed {
        error!(pipeline = mv.pipeline, r#move = mv.id, error = %e, "the interrupted rollback cannot be completed; the champion stays");
        return Ok(());
    }
    let done = ChampionMove {
        pipeline: &mv.pipeline,
        version_id: moving.id,
        kind: mv.kind,
        cycle: mv.cycle,
        actor: "retraind",
        reason: "a rollback by hand, completed after a restart interrupted it",
        move_id: mv.id,
    };
    if shared.store.promote(&done, shared.now()).await? {
        let why = format!(
            "rolled back to v{} (a rollback by hand, completed after a restart)",
            moving.version
        );
        shared
            .event(
                &mv.pipeline,
                None,
                crate::records::EventKind::Rollback,
                &why,
            )
            .await?;
    }
    Ok(())
}
