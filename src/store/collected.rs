//! Which versions' files retention collected. The rows stay (lineage, history and the
//! console still tell their story); only their directories are gone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;

/// Reports written before parameter `$n`, not collected yet, of cycles no longer in flight.
fn old_reports(n: usize) -> String {
    format!(
        "created_at < ${n} AND body NOT LIKE '{{\"collected_at\"%' \
         AND cycle_id NOT IN (SELECT id FROM cycles WHERE active <> 0)"
    )
}

impl Store {
    /// Replace the bodies of reports written before `before` by `{"collected_at": now}`,
    /// keeping their plotted figures; reports of cycles in flight are kept. How many.
    pub async fn collect_reports(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let stub = serde_json::json!({
            crate::records::REPORT_COLLECTED: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let r = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE reports SET body = $1 WHERE {}",
            old_reports(2)
        )))
        .bind(stub.to_string())
        .bind(millis(before))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// How many reports' bodies were written before `before` and are not collected yet.
    pub async fn reports_before(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM reports WHERE {}",
            old_reports(1)
        )))
        .bind(millis(before))
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// When each collected version of `pipeline` was collected, by version id.
    pub async fn collected(
        &self,
        pipeline: &str,
    ) -> Result<BTreeMap<i64, DateTime<Utc>>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, collected_at FROM model_versions WHERE pipeline = $1 AND collected_at IS NOT NULL",
        )
        .bind(pipeline)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, from_millis(r.try_get("collected_at")?))))
            .collect()
    }

    /// When version `id`'s files were collected, if they were.
    pub async fn collected_at(&self, id: i64) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<Option<i64>> =
            sqlx::query_scalar("SELECT collected_at FROM model_versions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(at.flatten().map(from_millis))
    }

    /// Record that version `id`'s files are being collected, before they are deleted (the
    /// store never names as kept what is gone). Checked again in the statement: false, and
    /// nothing marked, when an alias, an open move or a cycle in flight holds it after all.
    pub async fn mark_collected(&self, id: i64, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE model_versions SET collected_at = $1 WHERE id = $2 AND collected_at IS NULL \
             AND NOT EXISTS (SELECT 1 FROM aliases a WHERE a.version_id = $2) \
             AND NOT EXISTS (SELECT 1 FROM moves m WHERE m.version_id = $2 AND m.finished_at IS NULL) \
             AND NOT EXISTS (SELECT 1 FROM cycles c WHERE c.candidate_version = $2 AND c.active <> 0)",
        )
        .bind(millis(now))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
