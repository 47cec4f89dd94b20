//! What went wrong in the store, and whether waiting can fix it. Every store error is
//! classified here, once: **transient** errors (the database is unreachable, busy, shutting
//! down, or aborted the transaction to resolve a conflict between writers) may succeed if the
//! same statement is tried again later; every other error is **permanent** (the statement or
//! its data is wrong: classes 22 and 23, 42, an unreadable row, an illegal transition, a lost
//! lease) and repeating it can only repeat the failure. Callers decide what to do with the
//! class; this module never retries, sleeps or logs.

use super::DeployKind;
use crate::cycle::{CycleState, UnknownState};

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the store at {url}: {source} (check store.url and that the database is reachable)"
    )]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot create the store directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot apply store migrations: {}{}", .0, newer_hint(.0))]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("cycle {cycle} is no longer in state {expected}: another worker moved it")]
    Conflict { cycle: i64, expected: CycleState },
    #[error("illegal transition {from} -> {to} for cycle {cycle}")]
    IllegalTransition {
        cycle: i64,
        from: CycleState,
        to: CycleState,
    },
    #[error(transparent)]
    Corrupt(#[from] UnknownState),
    #[error("{what} cannot be read by this release ({message}); it was left unchanged")]
    Unreadable { what: String, message: String },
    #[error("no {what} `{name}` in the store")]
    NotFound { what: &'static str, name: String },
    #[error(
        "fenced: this instance ({holder}) no longer holds the leader lease (token {token}); another daemon leads now"
    )]
    Fenced { holder: String, token: i64 },
    #[error(
        "pipeline `{pipeline}` has a champion move in progress (move {id}: {} {}); one move at a time — try again when it ends",
        kind.as_str(),
        cycle.map_or_else(|| "by hand".to_string(), |c| format!("by cycle {c}"))
    )]
    MoveInProgress {
        pipeline: String,
        id: i64,
        kind: DeployKind,
        cycle: Option<i64>,
    },
}

impl StoreError {
    /// Whether the same call may succeed later without anything changing but time: the
    /// database was unreachable, busy or shutting down, or aborted a transaction to settle
    /// a race between writers. Exhaustive on purpose: a new kind of error must be
    /// classified here before it compiles.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Connect { source: e, .. } | StoreError::Query(e) => sqlx_is_transient(e),
            // Another move of the pipeline ends within seconds.
            StoreError::MoveInProgress { .. } => true,
            StoreError::Directory { .. }
            | StoreError::Migrate(_)
            | StoreError::Conflict { .. }
            | StoreError::IllegalTransition { .. }
            | StoreError::Corrupt(_)
            | StoreError::Unreadable { .. }
            | StoreError::NotFound { .. }
            | StoreError::Fenced { .. } => false,
        }
    }

    /// The SQLSTATE (PostgreSQL) or extended result code (SQLite) of a database error.
    pub fn code(&self) -> Option<String> {
        match self {
            StoreError::Query(e) | StoreError::Connect { source: e, .. } => e
                .as_database_error()
                .and_then(|d| d.code().map(|c| c.into_owned())),
            _ => None,
        }
    }
}

/// A migration the store has applied and this release does not know: a newer release wrote
/// the store.
fn newer_hint(e: &sqlx::migrate::MigrateError) -> &'static str {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(_) => {
            " (the database was written by a newer retraind: run that release, or restore a backup)"
        }
        _ => "",
    }
}

/// Whether a sqlx error is one that waiting can fix.
fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| code_is_transient(&c)),
        // The protocol broke mid-conversation (a connection cut in the middle of a message).
        sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// Whether a database error code means "try again later". PostgreSQL's SQLSTATEs are five
/// characters: class 08 (connection exception), 40001 (serialization failure), 40P01
/// (deadlock), 53 (insufficient resources: disk full, out of memory, too many connections),
/// 55P03 (lock not available), 57P01–57P05 (admin or crash shutdown, cannot connect now,
/// idle session timeout), 57014 (statement cancelled by a timeout) and 58 (system error).
/// SQLite's are integers whose low byte is the primary code: 5 SQLITE_BUSY, 6 SQLITE_LOCKED,
/// 10 SQLITE_IOERR, 13 SQLITE_FULL, 14 SQLITE_CANTOPEN.
pub fn code_is_transient(code: &str) -> bool {
    if code.len() == 5 {
        let class = &code[..2];
        return matches!(class, "08" | "53" | "58")
            || matches!(
                code,
                "40001" | "40P01" | "55P03" | "57014" | "57P01" | "57P02" | "57P03" | "57P05"
            );
    }
    match code.parse::<i64>() {
        Ok(n) => matches!(n & 0xff, 5 | 6 | 10 | 13 | 14),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_codes_are_classified_by_sqlstate() {
        for transient in [
            "08006", "08001", "40001", "40P01", "53100", "53300", "55P03", "57014", "57P01",
            "57P03", "58030",
        ] {
            assert!(code_is_transient(transient), "{transient}");
        }
        for permanent in [
            "22021", "22P02", "22003", "23505", "23503", "23514", "42601", "42P01", "P0001",
            "XX000", "25P02",
        ] {
            assert!(!code_is_transient(permanent), "{permanent}");
        }
    }

    #[test]
    fn sqlite_codes_are_classified_by_primary_code() {
        // BUSY, BUSY_SNAPSHOT (517), LOCKED, LOCKED_SHAREDCACHE (262), IOERR_WRITE (778), FULL.
        for transient in ["5", "517", "6", "262", "778", "13", "14"] {
            assert!(code_is_transient(transient), "{transient}");
        }
        // CONSTRAINT_UNIQUE (2067), CONSTRAINT_TRIGGER (1811), MISMATCH, TOOBIG, ERROR.
        for permanent in ["2067", "1811", "19", "20", "18", "1"] {
            assert!(!code_is_transient(permanent), "{permanent}");
        }
    }

    #[test]
    fn errors_without_a_code_are_classified_by_kind() {
        assert!(StoreError::Query(sqlx::Error::PoolTimedOut).is_transient());
        assert!(
            StoreError::Query(sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into()))
                .is_transient()
        );
        assert!(!StoreError::Query(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::Query(sqlx::Error::ColumnNotFound("x".into())).is_transient());
        assert!(
            !StoreError::IllegalTransition {
                cycle: 1,
                from: CycleState::Completed,
                to: CycleState::Training
            }
            .is_transient()
        );
        assert!(
            !StoreError::Fenced {
                holder: "a".into(),
                token: 1
            }
            .is_transient()
        );
    }
}
