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

use crate::cycle::CycleState;

mod approvals;
mod collected;
mod config;
mod cycles;
mod error;
mod events;
mod holds;
mod lease;
mod moves;
mod overview;
mod repair;
mod rows;
mod text;
mod versions;

pub use crate::approval::{ApprovalRow, Recorded};
pub use config::{RawStore, StoreConfig, redact_url};
pub use error::StoreError;
pub use moves::{MoveOutcome, MoveRow};
pub use overview::{CheckGlance, Snapshot};
pub use rows::*;
pub use text::clean_text;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

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
    /// One connection for the leader lease alone.
    lease_pool: AnyPool,
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
        let connect = |max: u32| {
            pool_options(backend, max)
                .connect_lazy(&connect_url)
                .map_err(|source| StoreError::Connect {
                    url: redact_url(url),
                    source,
                })
        };
        let pool = connect(max_connections)?;
        // The lease is renewed on a connection of its own: readers, however many, can
        // never make the leader miss its renewal.
        let lease_pool = connect(1)?;
        // Connect now, so a wrong URL or a database that is down fails the start.
        drop(pool.acquire().await.map_err(|source| StoreError::Connect {
            url: redact_url(url),
            source,
        })?);
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store {
            pool,
            lease_pool,
            backend,
            fence: Default::default(),
        };
        let set_aside = repair::before_migrations(&store.pool, backend).await?;
        store.migrator().run(&store.pool).await?;
        repair::after_migrations(&store, &set_aside).await?;
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

    /// Close the pools (on shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
        self.lease_pool.close().await;
    }
}

/// How the store's pools connect: SQLite waits up to 10 s for a lock and enforces foreign
/// keys; a connection is waited for up to 10 s.
fn pool_options(backend: Backend, max_connections: u32) -> AnyPoolOptions {
    AnyPoolOptions::new()
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
}
