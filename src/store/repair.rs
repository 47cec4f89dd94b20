//! Rows an older release wrote that a migration cannot take as they are. Migration 0004
//! fills each report's plotted figures from its body with PostgreSQL's `body::jsonb`, which
//! refuses a body holding `\u0000` (a category value with a NUL byte) or one that is not
//! JSON at all; one such row used to stop the daemon from starting, blaming "a newer
//! retraind". Before the migrations run, such bodies get a leading space — JSON readers skip
//! it, so the report reads exactly as before, but 0004's `WHERE left(body, 1) = '{'` passes
//! over it — and after they ran, their figures are filled here from the body as this
//! release reads it. Every row skipped this way is named in the log.

use sqlx::Row;
use tracing::warn;

use super::*;

/// The version of the migration whose casts the repair protects.
const REPORT_SUMMARY: i64 = 4;

/// Before the migrations: on PostgreSQL, when migration 0004 is still to run, set the bodies
/// it cannot cast aside. The cycles whose reports were set aside.
pub(super) async fn before_migrations(
    pool: &sqlx::AnyPool,
    backend: Backend,
) -> Result<Vec<i64>, StoreError> {
    if backend != Backend::Postgres || !pending(pool, REPORT_SUMMARY).await? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query("SELECT cycle_id, body FROM reports WHERE left(body, 1) = '{'")
        .fetch_all(pool)
        .await?;
    let mut set_aside = Vec::new();
    for r in &rows {
        let (cycle, body): (i64, String) = (r.try_get("cycle_id")?, r.try_get("body")?);
        if let Some(why) = not_jsonb(&body) {
            warn!(
                cycle,
                why,
                "the stored report of this cycle cannot be read by PostgreSQL's jsonb; migration 0004 skips it and retraind fills its figures"
            );
            sqlx::query("UPDATE reports SET body = ' ' || body WHERE cycle_id = $1")
                .bind(cycle)
                .execute(pool)
                .await?;
            set_aside.push(cycle);
        }
    }
    Ok(set_aside)
}

/// After the migrations: fill the figures of the reports set aside, from their bodies.
pub(super) async fn after_migrations(store: &Store, set_aside: &[i64]) -> Result<(), StoreError> {
    for &cycle in set_aside {
        let body: Option<String> =
            sqlx::query_scalar("SELECT body FROM reports WHERE cycle_id = $1")
                .bind(cycle)
                .fetch_optional(&store.pool)
                .await?;
        let Some(v) = body.and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok()) else {
            warn!(
                cycle,
                "the stored report of this cycle is not JSON; its figures stay empty"
            );
            continue;
        };
        let s = figures(&v);
        sqlx::query(
            "UPDATE reports SET drift_share = CAST($1 AS DOUBLE PRECISION), \
             metric_value = CAST($2 AS DOUBLE PRECISION), metric_estimated = $3, \
             metric_realised = CAST($4 AS DOUBLE PRECISION) WHERE cycle_id = $5",
        )
        .bind(s.drift_share.map(|v| v.to_string()))
        .bind(s.metric.map(|v| v.to_string()))
        .bind(i64::from(s.estimated))
        .bind(s.realised.map(|v| v.to_string()))
        .bind(cycle)
        .execute(&store.pool)
        .await?;
    }
    Ok(())
}

/// The figures migration 0004 reads from a body, read the same way (the same paths, a
/// number or nothing).
fn figures(v: &serde_json::Value) -> ReportSummary {
    let number = |path: &str| v.pointer(path).and_then(serde_json::Value::as_f64);
    ReportSummary {
        dataset_drift: false, // its own column, written with the report
        drift_share: number("/drift/dataset/drifted_share"),
        metric: number("/performance/current"),
        estimated: v
            .pointer("/performance/estimated")
            .is_some_and(|e| e.is_object()),
        realised: number("/performance/estimated/realised"),
    }
}

/// Whether migration `version` is still to run on a store that has run earlier ones.
async fn pending(pool: &sqlx::AnyPool, version: i64) -> Result<bool, StoreError> {
    let table: Option<String> =
        sqlx::query_scalar("SELECT CAST(to_regclass('_sqlx_migrations') AS TEXT)")
            .fetch_one(pool)
            .await?;
    if table.is_none() {
        return Ok(false);
    }
    let (applied, earlier): (i64, i64) = {
        let r = sqlx::query(
            "SELECT COUNT(*) FILTER (WHERE version = $1) AS applied, \
             COUNT(*) FILTER (WHERE version < $1) AS earlier FROM _sqlx_migrations",
        )
        .bind(version)
        .fetch_one(pool)
        .await?;
        (r.try_get("applied")?, r.try_get("earlier")?)
    };
    Ok(applied == 0 && earlier > 0)
}

/// Why PostgreSQL's `jsonb` would refuse `body`, if it would: not JSON, or a string (or
/// key) holding U+0000, which `jsonb` cannot store.
fn not_jsonb(body: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Value>(body) {
        Err(e) => Some(format!("not JSON: {e}")),
        Ok(v) if holds_nul(&v) => Some("a text holds \\u0000".to_string()),
        Ok(_) => None,
    }
}

fn holds_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(holds_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::not_jsonb;

    #[test]
    fn bodies_jsonb_refuses_are_found() {
        assert_eq!(
            not_jsonb(r#"{"a":"x\u0000y"}"#).as_deref(),
            Some("a text holds \\u0000")
        );
        assert_eq!(
            not_jsonb(r#"{"x\u0000":1}"#).as_deref(),
            Some("a text holds \\u0000")
        );
        assert!(not_jsonb(r#"{"a": [1, {"b": "c"#).is_some_and(|w| w.starts_with("not JSON")));
        // An escaped backslash before `u0000` is plain text.
        assert_eq!(not_jsonb(r#"{"a":"\\u0000"}"#), None);
        assert_eq!(
            not_jsonb(r#"{"drift":{"dataset":{"drifted_share":0.5}}}"#),
            None
        );
    }
}
