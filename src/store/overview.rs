//! A pipeline at a glance in one round trip: its champion and previous versions, its newest
//! cycle in flight and newest finished cycle, and its holds (own and global), read by one
//! `UNION ALL` query whose branches fill the columns the row readers already know.

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
           NULL AS version, NULL AS cycle_id, NULL AS path, NULL AS metrics, NULL AS lineage \
         FROM cycles WHERE id IN ( \
           SELECT MAX(id) FROM cycles WHERE pipeline = $1 AND state IN ({terminal}) \
           UNION ALL SELECT MAX(id) FROM cycles WHERE pipeline = $1 AND state NOT IN ({terminal})) \
         UNION ALL \
         SELECT 'alias', a.alias, v.id, v.pipeline, {none}, NULL, NULL, NULL, NULL, NULL, NULL, \
           v.created_at, NULL, NULL, v.version, v.cycle_id, v.path, v.metrics, v.lineage \
         FROM aliases a JOIN model_versions v ON v.id = a.version_id WHERE a.pipeline = $1 \
         UNION ALL \
         SELECT 'hold', key, NULL, pipeline, NULL, NULL, NULL, NULL, value, NULL, NULL, NULL, NULL, NULL, \
           NULL, NULL, NULL, NULL, {none} \
         FROM guard_state WHERE pipeline IN ($1, $2) AND key IN ('frozen', 'paused')"
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
