//! What people (and the scheduler) ask of the engine: start a cycle, decide on a candidate,
//! freeze or resume automation, roll a champion back. One file per action; each checks what
//! it must (the pipeline exists, this daemon leads, the approver is listed) and records what
//! it did in the store, the event log and the metrics.

pub mod decide;
pub mod freeze;
pub mod rollback;
pub mod trigger;

use super::{Engine, EngineError};

impl Engine {
    /// The refusal a standby gives, naming the leader.
    pub(crate) async fn not_leader(&self) -> EngineError {
        let who = match self.store().lease().await {
            Ok(Some(l)) => l.holder,
            _ => "unknown".to_string(),
        };
        EngineError::NotLeader(who)
    }
}
