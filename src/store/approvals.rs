//! Approval decisions (one per approver, stopped once settled) and the ids of signed requests already seen.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;
use crate::approval::ApprovalDecision;

impl Store {
    /// Record an approval decision if `admit` (the approval rule, given the decisions
    /// already recorded) says so. The cycle row is locked first, so two concurrent decisions
    /// are serialised on both backends; a cycle no longer awaiting approval records nothing
    /// (`Settled`). `signed`, the id of the signed request carrying the decision, is
    /// remembered in the same transaction: seen before, nothing is recorded (`Replayed`);
    /// a transaction that fails remembers nothing, so the sender's retry is taken.
    pub async fn record_approval(
        &self,
        cycle: i64,
        approval: &ApprovalRow,
        signed: Option<&str>,
        admit: impl FnOnce(&[ApprovalRow]) -> Recorded,
    ) -> Result<Recorded, StoreError> {
        if signed.is_some() {
            forget_old_requests(&self.pool, approval.at).await?;
        }
        let mut tx = self.pool.begin().await?;
        if let Some(id) = signed
            && !remember_in(&mut tx, &approval.channel, id, approval.at).await?
        {
            return Ok(Recorded::Replayed);
        }
        let locked = sqlx::query(
            "UPDATE cycles SET updated_at = updated_at WHERE id = $1 AND state = 'awaiting_approval'",
        )
        .bind(cycle)
        .execute(&mut *tx)
        .await?;
        if locked.rows_affected() != 1 {
            return Ok(Recorded::Settled);
        }
        let recorded = approvals_in(&mut tx, cycle).await?;
        let verdict = admit(&recorded);
        if verdict != Recorded::New {
            return Ok(verdict);
        }
        sqlx::query(
            "INSERT INTO approvals (cycle_id, approver, channel, decision, reason, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(cycle)
        .bind(clean_text(&approval.approver).into_owned())
        .bind(clean_text(&approval.channel).into_owned())
        .bind(approval.decision.as_str())
        .bind(clean_text(&approval.reason).into_owned())
        .bind(millis(approval.at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Recorded::New)
    }

    pub async fn approvals(&self, cycle: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        approvals_in(&mut conn, cycle).await
    }
}

impl Store {
    /// Whether a signed request with this id was recorded with its decision.
    pub async fn seen_request(&self, channel: &str, id: &str) -> Result<bool, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM seen_requests WHERE channel = $1 AND id = $2")
                .bind(channel)
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
        Ok(n > 0)
    }
}

/// Forget signed request ids older than a day: they are past every timestamp window.
async fn forget_old_requests(pool: &sqlx::AnyPool, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM seen_requests WHERE at < $1")
        .bind(millis(now) - 86_400_000)
        .execute(pool)
        .await?;
    Ok(())
}

/// Remember the id of a signed request inside `tx`; false if it was seen before (a replay).
async fn remember_in(
    tx: &mut sqlx::AnyConnection,
    channel: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let r = sqlx::query(
        "INSERT INTO seen_requests (channel, id, at) VALUES ($1, $2, $3) ON CONFLICT (channel, id) DO NOTHING",
    )
    .bind(channel)
    .bind(id)
    .bind(millis(now))
    .execute(&mut *tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The decisions recorded for a cycle, oldest first, on `conn` (a transaction or not).
async fn approvals_in(
    conn: &mut sqlx::AnyConnection,
    cycle: i64,
) -> Result<Vec<ApprovalRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT approver, channel, decision, reason, at FROM approvals WHERE cycle_id = $1 ORDER BY id",
    )
    .bind(cycle)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ApprovalRow {
                approver: r.try_get("approver")?,
                channel: r.try_get("channel")?,
                decision: ApprovalDecision::from_str(&r.try_get::<String, _>("decision")?)?,
                reason: r.try_get("reason")?,
                at: from_millis(r.try_get("at")?),
            })
        })
        .collect()
}
