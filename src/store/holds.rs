//! Freezes and the circuit breaker's pause, per pipeline or for all.

use sqlx::Row;

use super::*;
use crate::guards::Hold;

impl Store {
    /// Put a hold (freeze or breaker pause) on a pipeline, or on all (`GLOBAL`). Keeps the
    /// first hold if one is already on record.
    pub async fn set_hold(
        &self,
        pipeline: &str,
        kind: HoldKind,
        hold: &Hold,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO guard_state (pipeline, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pipeline, key) DO NOTHING",
        )
        .bind(pipeline)
        .bind(kind.as_str())
        .bind(serde_json::to_string(hold).unwrap_or_default())
        .bind(millis(hold.at))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Lift the holds on a pipeline (or on all, `GLOBAL`); how many were lifted.
    pub async fn clear_holds(&self, pipeline: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM guard_state WHERE pipeline = $1 AND key IN ('frozen', 'paused')",
        )
        .bind(pipeline)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The holds on record for a pipeline (its own, and the global one).
    pub async fn holds(&self, pipeline: &str) -> Result<Holds, StoreError> {
        let rows = sqlx::query(
            "SELECT pipeline, key, value FROM guard_state WHERE pipeline IN ($1, $2) AND key IN ('frozen', 'paused')",
        )
        .bind(pipeline)
        .bind(GLOBAL)
        .fetch_all(&self.pool)
        .await?;
        let mut holds = Holds::default();
        for r in &rows {
            holds.note(
                &r.try_get::<String, _>("pipeline")?,
                &r.try_get::<String, _>("key")?,
                &r.try_get::<String, _>("value")?,
            );
        }
        Ok(holds)
    }
}

impl Holds {
    /// Take in one `guard_state` row (`who` is the pipeline or `GLOBAL`).
    pub(super) fn note(&mut self, who: &str, key: &str, value: &str) {
        let hold: Option<Hold> = serde_json::from_str(value).ok();
        match (who == GLOBAL, key) {
            (true, _) => self.global = hold,
            (false, "frozen") => self.frozen = hold,
            (false, _) => self.paused = hold,
        }
    }
}
