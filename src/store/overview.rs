//! A pipeline at a glance in one round trip: its champion and previous versions, its newest
//! cycle in flight and newest finished cycle, its holds (own and global) and its newest
//! check, read by one `UNION ALL` query whose branches fill the columns the row readers
//! already know (the check's drift flag rides in `resumes`, its share in `drift_share`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;
use crate::cycle::CycleState;

/// What `status` and the console's overview show of one pipeline.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub champion: Option<ModelVersion>,
    pub previous: Option<ModelVersion>,
    /// The newest cycle not yet in a terminal state.
    pub active: Option<CycleRow>,
    /// The newest cycle in a terminal state.
    pub last: Option<CycleRow>,
    pub holds: Holds,
    /// The newest check's report, in figures.
    pub last_check: Option<CheckGlance>,
}

/// A check at a glance: which cycle, when, whether the dataset drifted and how much.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CheckGlance {
    pub cycle: i64,
    pub at: DateTime<Utc>,
    pub dataset_drift: bool,
    pub drift_share: Option<f64>,
}

/// `state IN (…)` of the terminal states.
fn terminal_states() -> String {
    CycleState::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn snapshot_sql() -> String {
    let terminal = terminal_states();
    let none = "NULL, NULL, NULL, NULL, NULL";
    format!(
        "SELECT 'cycle' AS part, '' AS tag, {CYCLE_COLUMNS}, \
           NULL AS version, NULL AS cycle_id, NULL AS path, NULL AS metrics, NULL AS lineage, \
           CAST(NULL AS DOUBLE PRECISION) AS drift_share \
         FROM cycles WHERE id IN ( \
           SELECT MAX(id) FROM cycles WHERE pipeline = $1 AND state IN ({terminal}) \
           UNION ALL SELECT MAX(id) FROM cycles WHERE pipeline = $1 AND state NOT IN ({terminal})) \
         UNION ALL \
         SELECT 'alias', a.alias, v.id, v.pipeline, {none}, NULL, NULL, NULL, NULL, NULL, NULL, \
           v.created_at, NULL, NULL, v.version, v.cycle_id, v.path, v.metrics, v.lineage, NULL \
         FROM aliases a JOIN model_versions v ON v.id = a.version_id WHERE a.pipeline = $1 \
         UNION ALL \
         SELECT 'hold', key, NULL, pipeline, NULL, NULL, NULL, NULL, value, NULL, NULL, NULL, NULL, NULL, \
           NULL, NULL, NULL, NULL, {none}, NULL \
         FROM guard_state WHERE pipeline IN ($1, $2) AND key IN ('frozen', 'paused') \
         UNION ALL \
         SELECT 'check', '', cycle_id, pipeline, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
           NULL, NULL, dataset_drift, created_at, NULL, NULL, {none}, drift_share \
         FROM reports WHERE cycle_id = (SELECT MAX(cycle_id) FROM reports WHERE pipeline = $1)"
    )
}

impl Store {
    /// One pipeline at a glance, in one query.
    pub async fn snapshot(&self, pipeline: &str) -> Result<Snapshot, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(snapshot_sql()))
            .bind(pipeline)
            .bind(GLOBAL)
            .fetch_all(&self.pool)
            .await?;
        let mut s = Snapshot::default();
        for r in &rows {
            let tag: String = r.try_get("tag")?;
            match r.try_get::<String, _>("part")?.as_str() {
                "cycle" => {
                    let c = cycle_from_row(r)?;
                    match c.state.is_terminal() {
                        true => s.last = Some(c),
                        false => s.active = Some(c),
                    }
                }
                "alias" => {
                    let v = version_from_row(r)?;
                    match tag.as_str() {
                        "champion" => s.champion = Some(v),
                        "previous" => s.previous = Some(v),
                        _ => {}
                    }
                }
                "check" => {
                    s.last_check = Some(CheckGlance {
                        cycle: r.try_get("id")?,
                        at: from_millis(r.try_get("created_at")?),
                        dataset_drift: r.try_get::<i64, _>("resumes")? == 1,
                        drift_share: r.try_get("drift_share")?,
                    })
                }
                _ => s.holds.note(
                    &r.try_get::<String, _>("pipeline")?,
                    &tag,
                    &r.try_get::<String, _>("reason")?,
                ),
            }
        }
        Ok(s)
    }
}
