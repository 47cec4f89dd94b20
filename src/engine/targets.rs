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
use crate::deploy::{self, DeployTarget, Placement};
use crate::store::{DeployKind, ModelVersion, MoveRow};

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

/// On start: every move a crash left open, except a deploy whose cycle is still deploying
/// (its step takes the move up again under the same id), is undone — the store's champion
/// is put back through every target and the move closed — so the serving system and the
/// store agree before anything else moves.
pub async fn settle_open_moves(shared: &Shared, runtime: &super::Runtime) -> Result<(), StepError> {
    for mv in shared.store.open_moves().await? {
        if let Some(cycle) = mv.cycle
            && mv.kind == DeployKind::Deploy
            && shared
                .store
                .cycle(cycle)
                .await?
                .is_some_and(|c| c.state == crate::cycle::CycleState::Deploying)
        {
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
        let moving = shared.store.version(mv.version_id).await?;
        if let (Some(champion), Some(moving)) = (champion, moving) {
            warn!(
                pipeline = mv.pipeline,
                r#move = mv.id,
                champion = champion.version,
                "a champion move was interrupted; putting the store's champion back in place"
            );
            let targets = parts.targets.clone();
            let state_dir = runtime.config.daemon.state_dir.clone();
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
