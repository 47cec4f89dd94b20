//! One file per step of the loop. Each takes the [`StepContext`] of its cycle and returns a
//! [`StepResult`] — the transition out of its state with the typed records to store — which
//! the driver persists. A step never moves the cycle itself, so a crash between its side
//! effect and the driver's write re-runs the step, which is written to be safe to re-run.

pub mod approve;
pub mod check;
pub mod decide;
pub mod deploy;
pub mod evaluate;
mod golden;
pub mod load;
pub mod train;
pub mod watch;

use super::{StepContext, StepError};
use crate::cycle::CycleState;
use crate::store::{CycleUpdate, NewVersion};

/// Move the cycle to `to`, recording `reason` and the columns in `update`.
#[derive(Debug, Clone)]
pub struct Transition {
    pub to: CycleState,
    pub reason: String,
    pub update: CycleUpdate,
}

/// What a step asks the driver to persist.
#[derive(Debug)]
pub enum StepResult {
    Advance(Box<Transition>),
    /// Register the trained version and move to `trained`, in one transaction.
    Register(Box<NewVersion>, String),
    /// Nothing to write: the store already holds the step's result (a version registered
    /// before a crash); the driver reads the cycle again.
    Unchanged,
}

/// Run the step of the cycle's state.
pub async fn run(ctx: &StepContext) -> Result<StepResult, StepError> {
    match ctx.cycle.state {
        CycleState::Scheduled => Ok(ctx.to(
            CycleState::Loading,
            "loading inputs",
            CycleUpdate::default(),
        )),
        CycleState::Loading => load::run(ctx).await,
        CycleState::Checking => check::run(ctx).await,
        CycleState::Decided => decide::run(ctx).await,
        CycleState::Training => train::run(ctx).await,
        CycleState::Trained => Ok(ctx.to(
            CycleState::Evaluating,
            "evaluating the candidate",
            CycleUpdate::default(),
        )),
        CycleState::Evaluating => evaluate::run(ctx).await,
        CycleState::AwaitingApproval => approve::run(ctx).await,
        CycleState::Deploying => deploy::run(ctx).await,
        CycleState::Watching => watch::run(ctx).await,
        terminal => Err(StepError::Invalid(format!("cycle is already {terminal}"))),
    }
}
