//! Champion moves, one at a time per pipeline. A move is opened before any deploy target
//! runs and closed in the transaction that moves the aliases ([`Store::promote`]) or when
//! its targets are put back; a unique index lets only one move be open per pipeline, so a
//! deploy step, the watch's rollback and a rollback by hand — on this daemon or another one
//! sharing the store — can never interleave. The move's id names its deliveries.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;

/// A champion move, open or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MoveRow {
    pub id: i64,
    pub pipeline: String,
    pub kind: DeployKind,
    pub version_id: i64,
    /// The champion when the move began (none for a pipeline's first deploy).
    pub from_version_id: Option<i64>,
    /// The cycle that moves (a deploy step or its watch), none for a rollback by hand.
    pub cycle: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<MoveOutcome>,
}

/// How a move ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveOutcome {
    /// The aliases moved: the version is the champion.
    Done,
    /// The targets were put back to the champion; the aliases never moved.
    Undone,
}

impl MoveOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveOutcome::Done => "done",
            MoveOutcome::Undone => "undone",
        }
    }
}

impl FromStr for MoveOutcome {
    type Err = crate::cycle::UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "done" => Ok(MoveOutcome::Done),
            "undone" => Ok(MoveOutcome::Undone),
            other => Err(crate::cycle::UnknownState(other.to_string())),
        }
    }
}

const MOVE_COLUMNS: &str =
    "id, pipeline, kind, version_id, from_version_id, cycle_id, started_at, finished_at, outcome";

fn move_from_row(row: &sqlx::any::AnyRow) -> Result<MoveRow, StoreError> {
    let outcome: Option<String> = row.try_get("outcome")?;
    Ok(MoveRow {
        id: row.try_get("id")?,
        pipeline: row.try_get("pipeline")?,
        kind: DeployKind::from_str(&row.try_get::<String, _>("kind")?)?,
        version_id: row.try_get("version_id")?,
        from_version_id: row.try_get("from_version_id")?,
        cycle: row.try_get("cycle_id")?,
        started_at: from_millis(row.try_get("started_at")?),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis),
        outcome: outcome.map(|o| MoveOutcome::from_str(&o)).transpose()?,
    })
}

impl Store {
    /// Open a move of `pipeline`'s champion to `version_id`, or take up the same move left
    /// open by an earlier try (same kind, version and cycle: a retry or a restart, which
    /// must deliver under the same id). Another open move refuses with `MoveInProgress`.
    pub async fn begin_move(
        &self,
        pipeline: &str,
        kind: DeployKind,
        version_id: i64,
        cycle: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<MoveRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx, now).await?;
        if let Some(open) = open_move_in(&mut tx, pipeline).await? {
            if open.kind == kind && open.version_id == version_id && open.cycle == cycle {
                return Ok(open);
            }
            return Err(in_progress(&open));
        }
        let from: Option<i64> = sqlx::query_scalar(
            "SELECT version_id FROM aliases WHERE pipeline = $1 AND alias = 'champion'",
        )
        .bind(pipeline)
        .fetch_optional(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO moves (pipeline, kind, version_id, from_version_id, cycle_id, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(pipeline)
        .bind(kind.as_str())
        .bind(version_id)
        .bind(from)
        .bind(cycle)
        .bind(millis(now))
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            // Another daemon opened one between our read and our insert.
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return Err(match self.open_move(pipeline).await? {
                    Some(open) => in_progress(&open),
                    None => StoreError::Query(e),
                });
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        Ok(MoveRow {
            id,
            pipeline: pipeline.to_string(),
            kind,
            version_id,
            from_version_id: from,
            cycle,
            started_at: now,
            finished_at: None,
            outcome: None,
        })
    }

    /// The pipeline's open move, if one is.
    pub async fn open_move(&self, pipeline: &str) -> Result<Option<MoveRow>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        open_move_in(&mut conn, pipeline).await
    }

    /// Every open move (what a crash left behind, read on start).
    pub async fn open_moves(&self) -> Result<Vec<MoveRow>, StoreError> {
        let sql = format!("SELECT {MOVE_COLUMNS} FROM moves WHERE finished_at IS NULL ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(move_from_row).collect()
    }

    /// A pipeline's moves, newest first.
    pub async fn moves(&self, pipeline: &str, limit: i64) -> Result<Vec<MoveRow>, StoreError> {
        let sql = format!(
            "SELECT {MOVE_COLUMNS} FROM moves WHERE pipeline = $1 ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(move_from_row).collect()
    }

    /// Close a move whose targets were put back to the champion: the aliases never moved.
    pub async fn undo_move(&self, id: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.check_fence(&mut tx, now).await?;
        close_move_in(&mut tx, id, MoveOutcome::Undone, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The pipeline's open move, on `conn` (a transaction or not).
async fn open_move_in(
    conn: &mut sqlx::AnyConnection,
    pipeline: &str,
) -> Result<Option<MoveRow>, StoreError> {
    let sql =
        format!("SELECT {MOVE_COLUMNS} FROM moves WHERE pipeline = $1 AND finished_at IS NULL");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(pipeline)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(move_from_row).transpose()
}

/// Close move `id` (if still open) with `outcome`, inside `tx`.
pub(super) async fn close_move_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: i64,
    outcome: MoveOutcome,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE moves SET finished_at = $1, outcome = $2 WHERE id = $3 AND finished_at IS NULL",
    )
    .bind(millis(now))
    .bind(outcome.as_str())
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn in_progress(open: &MoveRow) -> StoreError {
    StoreError::MoveInProgress {
        pipeline: open.pipeline.clone(),
        id: open.id,
        kind: open.kind,
        cycle: open.cycle,
    }
}
