//! The append-only event log and the stored reports of the checks.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;
use crate::records::EventKind;

impl Store {
    /// Append to the event log.
    pub async fn event(
        &self,
        pipeline: &str,
        cycle: Option<i64>,
        kind: EventKind,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO events (at, pipeline, cycle_id, kind, message) VALUES ($1, $2, $3, $4, $5)")
            .bind(millis(now))
            .bind(pipeline)
            .bind(cycle)
            .bind(kind.as_str())
            .bind(clean_text(message).into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Events of a cycle, oldest first.
    pub async fn events(&self, cycle: i64) -> Result<Vec<EventRow>, StoreError> {
        let rows =
            sqlx::query("SELECT at, kind, message FROM events WHERE cycle_id = $1 ORDER BY id")
                .bind(cycle)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    at: from_millis(r.try_get("at")?),
                    kind: EventKind::from(r.try_get::<String, _>("kind")?.as_str()),
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    /// When events of `kind` happened for a pipeline since `since` (guard budgets).
    pub async fn event_times(
        &self,
        pipeline: &str,
        kind: &EventKind,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT at FROM events WHERE pipeline = $1 AND kind = $2 AND at >= $3 ORDER BY id",
        )
        .bind(pipeline)
        .bind(kind.as_str())
        .bind(millis(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(from_millis).collect())
    }

    /// How many events of `kind` a cycle has (watch checks that failed, for example).
    pub async fn count_events(&self, cycle: i64, kind: &EventKind) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE cycle_id = $1 AND kind = $2")
                .bind(cycle)
                .bind(kind.as_str())
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Store (or replace, on a resumed check) the report of a cycle.
    pub async fn save_report(
        &self,
        cycle: i64,
        pipeline: &str,
        summary: &ReportSummary,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM reports WHERE cycle_id = $1")
            .bind(cycle)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO reports (cycle_id, pipeline, created_at, dataset_drift, body, \
             drift_share, metric_value, metric_estimated, metric_realised) \
             VALUES ($1, $2, $3, $4, $5, CAST($6 AS DOUBLE PRECISION), \
             CAST($7 AS DOUBLE PRECISION), $8, CAST($9 AS DOUBLE PRECISION))",
        )
        .bind(cycle)
        .bind(pipeline)
        .bind(millis(now))
        .bind(i64::from(summary.dataset_drift))
        .bind(body.to_string())
        // Optional floats travel as text: through sqlx's Any driver a NULL and a number in
        // the same parameter of a statement PostgreSQL has prepared do not agree on type.
        .bind(summary.drift_share.map(|v| v.to_string()))
        .bind(summary.metric.map(|v| v.to_string()))
        .bind(i64::from(summary.estimated))
        .bind(summary.realised.map(|v| v.to_string()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether each of the `n` checks of `pipeline` before `cycle` found dataset drift,
    /// newest first (fewer if the pipeline has fewer checks).
    pub async fn previous_drift(
        &self,
        pipeline: &str,
        cycle: i64,
        n: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let rows = sqlx::query(
            "SELECT dataset_drift FROM reports WHERE pipeline = $1 AND cycle_id < $2 ORDER BY cycle_id DESC LIMIT $3",
        )
        .bind(pipeline)
        .bind(cycle)
        .bind(n)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("dataset_drift")? == 1))
            .collect()
    }

    /// The newest `limit` checks of a pipeline with their plotted figures, newest first.
    pub async fn report_points(
        &self,
        pipeline: &str,
        limit: i64,
    ) -> Result<Vec<ReportPoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.cycle_id, c.cycle_date, r.created_at, r.dataset_drift, r.drift_share, \
             r.metric_value, r.metric_estimated, r.metric_realised \
             FROM reports r JOIN cycles c ON c.id = r.cycle_id \
             WHERE r.pipeline = $1 ORDER BY r.cycle_id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ReportPoint {
                    cycle: r.try_get("cycle_id")?,
                    date: r.try_get("cycle_date")?,
                    at: from_millis(r.try_get("created_at")?),
                    dataset_drift: r.try_get::<i64, _>("dataset_drift")? == 1,
                    drift_share: r.try_get("drift_share")?,
                    metric: r.try_get("metric_value")?,
                    estimated: r.try_get::<i64, _>("metric_estimated")? == 1,
                    realised: r.try_get("metric_realised")?,
                })
            })
            .collect()
    }

    pub async fn report(&self, cycle: i64) -> Result<Option<serde_json::Value>, StoreError> {
        let row = sqlx::query("SELECT body FROM reports WHERE cycle_id = $1")
            .bind(cycle)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<String, _>("body"))
            .transpose()?
            .and_then(|b| serde_json::from_str(&b).ok()))
    }

    /// When the last check of a pipeline finished (its newest report).
    pub async fn last_check_at(&self, pipeline: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        let at: Option<i64> =
            sqlx::query_scalar("SELECT MAX(created_at) FROM reports WHERE pipeline = $1")
                .bind(pipeline)
                .fetch_one(&self.pool)
                .await?;
        Ok(at.map(from_millis))
    }
}
