//! Pipelines, cycles and their compare-and-set transitions.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;
use crate::cycle::{Outcome, TriggerKind};

impl Store {
    /// Register a pipeline if the store does not know it yet.
    pub async fn ensure_pipeline(&self, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "INSERT INTO pipelines (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        sqlx::query(sql)
            .bind(name)
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn pipeline(&self, name: &str) -> Result<Option<PipelineRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, created_at, last_scheduled_at FROM pipelines WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PipelineRow {
                name: r.try_get("name")?,
                created_at: from_millis(r.try_get("created_at")?),
                last_scheduled_at: r
                    .try_get::<Option<i64>, _>("last_scheduled_at")?
                    .map(from_millis),
            })
        })
        .transpose()
    }

    /// Start a cycle unless the pipeline already has one in flight. A scheduled or catch-up
    /// trigger also records its fire time, in the same transaction, so it is taken once.
    pub async fn create_cycle(
        &self,
        pipeline: &str,
        trigger: TriggerKind,
        cycle_date: &str,
        fired_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO cycles (pipeline, trigger_kind, cycle_date, state, active, reason, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $6) RETURNING id",
        )
        .bind(pipeline)
        .bind(trigger.as_str())
        .bind(cycle_date)
        .bind(CycleState::Scheduled.as_str())
        .bind(format!("{} trigger", trigger.as_str()))
        .bind(millis(now))
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM cycles WHERE pipeline = $1 AND active = 1")
                        .bind(pipeline)
                        .fetch_optional(&self.pool)
                        .await?;
                return Ok(CreateOutcome::AlreadyRunning(id.unwrap_or_default()));
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query("INSERT INTO transitions (cycle_id, from_state, to_state, reason, at) VALUES ($1, NULL, $2, $3, $4)")
            .bind(id)
            .bind(CycleState::Scheduled.as_str())
            .bind(format!("{} trigger", trigger.as_str()))
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        if let Some(fired) = fired_at {
            sqlx::query("UPDATE pipelines SET last_scheduled_at = $1 WHERE name = $2")
                .bind(millis(fired))
                .bind(pipeline)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(CreateOutcome::Created(id))
    }

    pub async fn cycle(&self, id: i64) -> Result<Option<CycleRow>, StoreError> {
        let sql = format!("SELECT {CYCLE_COLUMNS} FROM cycles WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cycle_from_row).transpose()
    }

    /// Cycles still in flight (to resume on start).
    pub async fn active_cycles(&self) -> Result<Vec<CycleRow>, StoreError> {
        let sql = format!("SELECT {CYCLE_COLUMNS} FROM cycles WHERE active <> 0 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cycle_from_row).collect()
    }

    /// Newest first.
    pub async fn cycles(
        &self,
        pipeline: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CycleRow>, StoreError> {
        let sql = format!(
            "SELECT {CYCLE_COLUMNS} FROM cycles WHERE ($1 = '' OR pipeline = $1) ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cycle_from_row).collect()
    }

    /// A page of a pipeline's cycles, newest first, older than cycle `before` when given.
    pub async fn cycle_page(
        &self,
        pipeline: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<CycleRow>, StoreError> {
        let sql = format!(
            "SELECT {CYCLE_COLUMNS} FROM cycles WHERE pipeline = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cycle_from_row).collect()
    }

    pub async fn transitions(&self, cycle: i64) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, reason, at FROM transitions WHERE cycle_id = $1 ORDER BY id",
        )
        .bind(cycle)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_state")?;
                Ok(TransitionRow {
                    from: from.map(|f| CycleState::from_str(&f)).transpose()?,
                    to: CycleState::from_str(&r.try_get::<String, _>("to_state")?)?,
                    reason: r.try_get("reason")?,
                    at: from_millis(r.try_get("at")?),
                })
            })
            .collect()
    }

    /// Move a cycle `from → to` (compare-and-set), apply `update`, and append the transition
    /// row, in one transaction. Fails with `Conflict` if the cycle is no longer in `from`.
    pub async fn transition(
        &self,
        cycle: i64,
        from: CycleState,
        to: CycleState,
        reason: &str,
        update: CycleUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.transition_in(&mut tx, cycle, from, to, reason, update, now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn transition_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        cycle: i64,
        from: CycleState,
        to: CycleState,
        reason: &str,
        update: CycleUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !from.can_go_to(to) {
            return Err(StoreError::IllegalTransition { cycle, from, to });
        }
        self.check_fence(tx, now).await?;
        let (set_deadline, deadline) = match update.deadline_at {
            Some(d) => (1i64, d.map(millis)),
            None => (0i64, None),
        };
        let result = sqlx::query(
            "UPDATE cycles SET state = $1, active = $2, reason = $3, updated_at = $4, \
               finished_at = CASE WHEN $2 = 0 THEN $4 ELSE finished_at END, \
               outcome = COALESCE($5, outcome), inputs = COALESCE($6, inputs), \
               decision = COALESCE($7, decision), gate = COALESCE($8, gate), \
               candidate_version = COALESCE($9, candidate_version), \
               deadline_at = CASE WHEN $10 = 1 THEN $11 ELSE deadline_at END \
             WHERE id = $12 AND state = $13",
        )
        .bind(to.as_str())
        .bind(active_flag(to))
        .bind(clean_text(reason).into_owned())
        .bind(millis(now))
        .bind(update.outcome.map(|o| o.as_str()))
        .bind(update.inputs.as_ref().map(json_text))
        .bind(update.decision.as_ref().map(json_text))
        .bind(update.gate.as_ref().map(json_text))
        .bind(update.candidate_version)
        .bind(set_deadline)
        .bind(deadline)
        .bind(cycle)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                cycle,
                expected: from,
            });
        }
        sqlx::query("INSERT INTO transitions (cycle_id, from_state, to_state, reason, at) VALUES ($1, $2, $3, $4, $5)")
            .bind(cycle)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(clean_text(reason).into_owned())
            .bind(millis(now))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The pipeline's cycle watching its deploy, if one is.
    pub async fn watching(&self, pipeline: &str) -> Result<Option<CycleRow>, StoreError> {
        let sql = format!(
            "SELECT {CYCLE_COLUMNS} FROM cycles WHERE pipeline = $1 AND state = $2 AND active <> 0 ORDER BY id DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline)
            .bind(CycleState::Watching.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cycle_from_row).transpose()
    }

    /// Count a resume of an in-flight cycle after a restart.
    pub async fn mark_resumed(&self, cycle: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE cycles SET resumes = resumes + 1 WHERE id = $1")
            .bind(cycle)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Outcomes of a pipeline's newest finished cycles, newest first.
    pub async fn recent_outcomes(
        &self,
        pipeline: &str,
        limit: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT outcome FROM cycles WHERE pipeline = $1 AND active = 0 AND outcome IS NOT NULL ORDER BY id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|o| Outcome::from_str(o).map_err(StoreError::from))
            .collect()
    }

    /// Set a cycle's deadline (approval expiry) without changing its state.
    pub async fn set_deadline(
        &self,
        cycle: i64,
        deadline: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE cycles SET deadline_at = $1 WHERE id = $2")
            .bind(millis(deadline))
            .bind(cycle)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The `active` column: 0 ended; 1 in flight, the pipeline's one cycle (a unique index);
/// 2 watching its deploy — still driven, but out of the way of the next scheduled check.
fn active_flag(state: CycleState) -> i64 {
    if state.is_terminal() {
        0
    } else if state == CycleState::Watching {
        2
    } else {
        1
    }
}
