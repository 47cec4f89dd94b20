//! Model versions, their aliases (`champion`, `previous`) and the deployments that moved them.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;
use crate::records::{Lineage, MlflowIds, ScoreKey, VersionMetrics};

impl Store {
    /// Register the trained model and move the cycle `training → trained` in one transaction,
    /// so a version exists exactly when the cycle says it does.
    pub async fn register_trained(
        &self,
        new: NewVersion,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ModelVersion, StoreError> {
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE pipeline = $1",
        )
        .bind(&new.pipeline)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO model_versions (pipeline, version, cycle_id, path, metrics, lineage, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&new.pipeline)
        .bind(next)
        .bind(new.cycle_id)
        .bind(&new.path)
        .bind(json_text(&new.metrics))
        .bind(json_text(&new.lineage))
        .bind(millis(now))
        .fetch_one(&mut *tx)
        .await?;
        let update = CycleUpdate {
            candidate_version: Some(id),
            ..CycleUpdate::default()
        };
        self.transition_in(
            &mut tx,
            new.cycle_id,
            CycleState::Training,
            CycleState::Trained,
            reason,
            update,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(ModelVersion {
            id,
            pipeline: new.pipeline,
            version: next,
            cycle_id: new.cycle_id,
            path: new.path,
            metrics: new.metrics,
            lineage: new.lineage,
            created_at: now,
        })
    }

    pub async fn version(&self, id: i64) -> Result<Option<ModelVersion>, StoreError> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    pub async fn version_for_cycle(&self, cycle: i64) -> Result<Option<ModelVersion>, StoreError> {
        let sql = format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE cycle_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(cycle)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    pub async fn versions(&self, pipeline: &str) -> Result<Vec<ModelVersion>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE pipeline = $1 ORDER BY version"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// The version an alias (`champion`, `previous`) points at.
    pub async fn alias(
        &self,
        pipeline: &str,
        alias: &str,
    ) -> Result<Option<ModelVersion>, StoreError> {
        let sql = format!(
            "SELECT {} FROM model_versions v JOIN aliases a ON a.version_id = v.id WHERE a.pipeline = $1 AND a.alias = $2",
            VERSION_COLUMNS
                .split(", ")
                .map(|c| format!("v.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline)
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Move `champion` to `version_id`, in one transaction with the `previous` alias, the
    /// deployment record and the close of the move that put it in place. A deploy makes the old champion `previous`; a rollback makes
    /// `previous` whatever preceded the restored version (so a second rollback never brings
    /// back the model just removed). Idempotent: if `champion` already points there, nothing
    /// changes and `false` is returned.
    pub async fn promote(
        &self,
        m: &ChampionMove<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let pipeline = m.pipeline;
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx, now).await?;
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT version_id FROM aliases WHERE pipeline = $1 AND alias = 'champion'",
        )
        .bind(pipeline)
        .fetch_optional(&mut *tx)
        .await?;
        if current == Some(m.version_id) {
            // Promoted by an earlier try whose answer was lost: the move is over.
            moves::close_move_in(&mut tx, m.move_id, MoveOutcome::Done, now).await?;
            tx.commit().await?;
            return Ok(false);
        }
        let previous = match m.kind {
            DeployKind::Deploy => current,
            DeployKind::Rollback => sqlx::query_scalar::<_, Option<i64>>(
                "SELECT from_version_id FROM deployments WHERE pipeline = $1 AND version_id = $2 AND kind = 'deploy' ORDER BY id DESC LIMIT 1",
            )
            .bind(pipeline)
            .bind(m.version_id)
            .fetch_optional(&mut *tx)
            .await?
            .flatten()
            .filter(|v| *v != m.version_id),
        };
        let upsert = "INSERT INTO aliases (pipeline, alias, version_id, updated_at) VALUES ($1, $2, $3, $4) \
                      ON CONFLICT (pipeline, alias) DO UPDATE SET version_id = excluded.version_id, updated_at = excluded.updated_at";
        match previous {
            Some(old) => {
                sqlx::query(upsert)
                    .bind(pipeline)
                    .bind("previous")
                    .bind(old)
                    .bind(millis(now))
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("DELETE FROM aliases WHERE pipeline = $1 AND alias = 'previous'")
                    .bind(pipeline)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(upsert)
            .bind(pipeline)
            .bind("champion")
            .bind(m.version_id)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO deployments (pipeline, kind, version_id, from_version_id, cycle_id, actor, reason, at, move_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(pipeline)
        .bind(m.kind.as_str())
        .bind(m.version_id)
        .bind(current)
        .bind(m.cycle)
        .bind(clean_text(m.actor).into_owned())
        .bind(clean_text(m.reason).into_owned())
        .bind(millis(now))
        .bind(m.move_id)
        .execute(&mut *tx)
        .await?;
        moves::close_move_in(&mut tx, m.move_id, MoveOutcome::Done, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Champion moves of a pipeline, newest first.
    pub async fn deployments(
        &self,
        pipeline: &str,
        limit: i64,
    ) -> Result<Vec<Deployment>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.kind, d.version_id, v.version, d.from_version_id, d.cycle_id, d.actor, d.reason, d.at \
             FROM deployments d JOIN model_versions v ON v.id = d.version_id \
             WHERE d.pipeline = $1 ORDER BY d.id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Deployment {
                    id: r.try_get("id")?,
                    kind: DeployKind::from_str(&r.try_get::<String, _>("kind")?)?,
                    version_id: r.try_get("version_id")?,
                    version: r.try_get("version")?,
                    from_version_id: r.try_get("from_version_id")?,
                    cycle_id: r.try_get("cycle_id")?,
                    actor: r.try_get("actor")?,
                    reason: r.try_get("reason")?,
                    at: from_millis(r.try_get("at")?),
                })
            })
            .collect()
    }

    /// Set one score of a model version (read-modify-write in one transaction).
    pub async fn set_version_score(
        &self,
        version_id: i64,
        key: &ScoreKey,
        value: f64,
    ) -> Result<(), StoreError> {
        self.update_version::<VersionMetrics>(version_id, "metrics", |m| m.set(key.clone(), value))
            .await
    }

    /// Record where a version is mirrored in MLflow (in its lineage).
    pub async fn set_version_mlflow(
        &self,
        version_id: i64,
        ids: &MlflowIds,
    ) -> Result<(), StoreError> {
        self.update_version::<Lineage>(version_id, "lineage", |l| l.mlflow = Some(ids.clone()))
            .await
    }

    /// Read-modify-write one JSON column of a model version in a transaction.
    async fn update_version<T: serde::de::DeserializeOwned + Serialize + Default>(
        &self,
        version_id: i64,
        column: &'static str,
        change: impl FnOnce(&mut T),
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let text: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {column} FROM model_versions WHERE id = $1"
        )))
        .bind(version_id)
        .fetch_optional(&mut *tx)
        .await?;
        // A document this release cannot read is left as it is, never overwritten.
        let mut doc: T = match text {
            Some(t) => serde_json::from_str(&t).map_err(|e| StoreError::Unreadable {
                what: format!("model version {version_id}'s {column}"),
                message: e.to_string(),
            })?,
            None => T::default(),
        };
        change(&mut doc);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE model_versions SET {column} = $1 WHERE id = $2"
        )))
        .bind(json_text(&doc))
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
