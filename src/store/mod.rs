//! The store: every durable fact the daemon keeps — pipelines, cycles and their state
//! transitions, the append-only event log, reports, model versions and aliases, approvals and
//! guard state — in SQLite (default, WAL mode) or PostgreSQL, chosen by URL.
//!
//! One SQL dialect serves both (sqlx's `Any` driver, `$N` placeholders, integers as BIGINT,
//! timestamps as Unix milliseconds, JSON as TEXT); only the DDL differs, so each backend has
//! its own embedded migration set. State changes are compare-and-set on the current state
//! inside a transaction that also appends the transition row: two writers can never both move
//! a cycle, and the one-active-cycle-per-pipeline rule is a unique partial index, not a lock
//! in memory. A cycle watching its deploy stays in flight but leaves that index, so the next
//! scheduled check starts on time (the `watching` guard keeps it from training meanwhile).

use std::time::Duration;

use serde::Serialize;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;

use crate::cycle::{CycleState, UnknownState};

mod approvals;
mod config;
mod cycles;
mod events;
mod holds;
mod lease;
mod overview;
mod rows;
mod versions;

pub use crate::approval::{ApprovalRow, Recorded};
pub use config::{RawStore, StoreConfig, redact_url};
pub use overview::{CheckGlance, Snapshot};
pub use rows::*;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

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
    #[error("cannot apply store migrations: {0} (was the database written by a newer retraind?)")]
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
}

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Set while this process holds the leader lease: (holder, token). Every state
    /// transition and champion move checks it inside its transaction, so a leader that lost
    /// the lease cannot write.
    fence: std::sync::Arc<std::sync::RwLock<Option<(String, i64)>>>,
}

impl Store {
    /// Connect, create the SQLite file (and its folder) if needed, switch SQLite to WAL, and
    /// apply the embedded migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let mut connect_url = url.to_string();
        if backend == Backend::Sqlite {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            if let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            if !connect_url.contains('?') {
                connect_url.push_str("?mode=rwc");
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&connect_url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact_url(url),
                source,
            })?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store {
            pool,
            backend,
            fence: Default::default(),
        };
        store.migrator().run(&store.pool).await?;
        Ok(store)
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Readiness: the database answers and every embedded migration is applied.
    pub async fn ready(&self) -> Result<(), StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
                .fetch_one(&self.pool)
                .await?;
        let expected = self.migrator().iter().count() as i64;
        if applied < expected {
            return Err(StoreError::NotFound {
                what: "applied migration set, found",
                name: format!("{applied} of {expected}"),
            });
        }
        Ok(())
    }

    /// Close the pool (on shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
