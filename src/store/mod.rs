//! The store: every durable fact the daemon keeps — pipelines, cycles and their state
//! transitions, the append-only event log, reports, model versions and aliases, approvals and
//! guard state — in SQLite (default, WAL mode) or PostgreSQL, chosen by URL.
//!
//! One SQL dialect serves both (sqlx's `Any` driver, `$N` placeholders, integers as BIGINT,
//! timestamps as Unix milliseconds, JSON as TEXT); only the DDL differs, so each backend has
//! its own embedded migration set. State changes are compare-and-set on the current state
//! inside a transaction that also appends the transition row: two writers can never both move
//! a cycle, and the one-active-cycle-per-pipeline rule is a unique partial index, not a lock
//! in memory.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};

use crate::approval::ApprovalDecision;
use crate::cycle::{CycleState, Outcome, TriggerKind, UnknownState};
use crate::guards::Hold;

mod config;
pub use config::{RawStore, StoreConfig, redact_url};

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

/// The current holder of the leader lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub holder: String,
    pub token: i64,
    pub expires_at: DateTime<Utc>,
}

/// A pipeline row.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRow {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_scheduled_at: Option<DateTime<Utc>>,
}

/// A cycle row.
#[derive(Debug, Clone, Serialize)]
pub struct CycleRow {
    pub id: i64,
    pub pipeline: String,
    pub trigger: TriggerKind,
    /// The cycle's day (YYYY-MM-DD in the pipeline's timezone); `{date}` in data paths.
    pub cycle_date: String,
    pub state: CycleState,
    pub outcome: Option<Outcome>,
    /// Why the cycle is where it is (the last transition's reason).
    pub reason: Option<String>,
    pub inputs: Option<serde_json::Value>,
    pub decision: Option<serde_json::Value>,
    pub candidate_version: Option<i64>,
    pub gate: Option<serde_json::Value>,
    pub deadline_at: Option<DateTime<Utc>>,
    /// How many times a restart resumed this cycle.
    pub resumes: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// One persisted state transition.
#[derive(Debug, Clone, Serialize)]
pub struct TransitionRow {
    pub from: Option<CycleState>,
    pub to: CycleState,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A registered model version.
#[derive(Debug, Clone, Serialize)]
pub struct ModelVersion {
    pub id: i64,
    pub pipeline: String,
    pub version: i64,
    pub cycle_id: i64,
    pub path: String,
    pub metrics: serde_json::Value,
    pub lineage: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The JSON documents of a model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionJson {
    Metrics,
    Lineage,
}

/// A recorded approval decision.
#[derive(Debug, Clone, Serialize)]
pub struct ApprovalRow {
    pub approver: String,
    pub channel: String,
    pub decision: ApprovalDecision,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// How a champion moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployKind {
    Deploy,
    Rollback,
}

impl DeployKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployKind::Deploy => "deploy",
            DeployKind::Rollback => "rollback",
        }
    }
}

impl FromStr for DeployKind {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deploy" => Ok(DeployKind::Deploy),
            "rollback" => Ok(DeployKind::Rollback),
            other => Err(UnknownState(other.to_string())),
        }
    }
}

/// A champion move to record.
#[derive(Debug, Clone)]
pub struct ChampionMove<'a> {
    pub pipeline: &'a str,
    pub version_id: i64,
    pub kind: DeployKind,
    pub cycle: Option<i64>,
    pub actor: &'a str,
    pub reason: &'a str,
}

/// A recorded champion move.
#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub id: i64,
    pub kind: DeployKind,
    pub version_id: i64,
    /// The version number (per pipeline) of `version_id`.
    pub version: i64,
    pub from_version_id: Option<i64>,
    pub cycle_id: Option<i64>,
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The `guard_state` pipeline name of holds that cover every pipeline.
pub const GLOBAL: &str = "*";

/// Which hold a `guard_state` row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    Frozen,
    Paused,
}

impl HoldKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Frozen => "frozen",
            HoldKind::Paused => "paused",
        }
    }
}

/// The holds on a pipeline.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    pub global: Option<Hold>,
    pub frozen: Option<Hold>,
    pub paused: Option<Hold>,
}

/// What a trigger produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "result", content = "cycle", rename_all = "snake_case")]
pub enum CreateOutcome {
    Created(i64),
    /// The pipeline already has a cycle in flight; this is its id.
    AlreadyRunning(i64),
}

/// Column updates that ride along with a transition.
#[derive(Debug, Default, Clone)]
pub struct CycleUpdate {
    pub outcome: Option<Outcome>,
    pub inputs: Option<serde_json::Value>,
    pub decision: Option<serde_json::Value>,
    pub gate: Option<serde_json::Value>,
    pub candidate_version: Option<i64>,
    /// `Some(None)` clears the deadline.
    pub deadline_at: Option<Option<DateTime<Utc>>>,
}

impl CycleUpdate {
    /// An update that records how the cycle ended.
    pub fn outcome(outcome: Outcome) -> CycleUpdate {
        CycleUpdate {
            outcome: Some(outcome),
            ..CycleUpdate::default()
        }
    }
}

/// A new model version to register.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub pipeline: String,
    pub cycle_id: i64,
    pub path: String,
    pub metrics: serde_json::Value,
    pub lineage: serde_json::Value,
}

/// Whether an approval decision was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// The same approver already decided this cycle; the first decision stands.
    Duplicate,
    /// The cycle already has its decision (a rejection or enough approvals), or no longer
    /// awaits one; nothing was recorded.
    Settled,
}

pub fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn json_col(row: &AnyRow, col: &str) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let text: Option<String> = row.try_get(col)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn cycle_from_row(row: &AnyRow) -> Result<CycleRow, StoreError> {
    let outcome: Option<String> = row.try_get("outcome")?;
    Ok(CycleRow {
        id: row.try_get("id")?,
        pipeline: row.try_get("pipeline")?,
        trigger: TriggerKind::from_str(&row.try_get::<String, _>("trigger_kind")?)?,
        cycle_date: row.try_get("cycle_date")?,
        state: CycleState::from_str(&row.try_get::<String, _>("state")?)?,
        outcome: outcome.map(|o| Outcome::from_str(&o)).transpose()?,
        reason: row.try_get("reason")?,
        inputs: json_col(row, "inputs")?,
        decision: json_col(row, "decision")?,
        candidate_version: row.try_get("candidate_version")?,
        gate: json_col(row, "gate")?,
        deadline_at: row
            .try_get::<Option<i64>, _>("deadline_at")?
            .map(from_millis),
        resumes: row.try_get("resumes")?,
        created_at: from_millis(row.try_get("created_at")?),
        updated_at: from_millis(row.try_get("updated_at")?),
        finished_at: row
            .try_get::<Option<i64>, _>("finished_at")?
            .map(from_millis),
    })
}

fn version_from_row(row: &AnyRow) -> Result<ModelVersion, StoreError> {
    Ok(ModelVersion {
        id: row.try_get("id")?,
        pipeline: row.try_get("pipeline")?,
        version: row.try_get("version")?,
        cycle_id: row.try_get("cycle_id")?,
        path: row.try_get("path")?,
        metrics: json_col(row, "metrics")?.unwrap_or_default(),
        lineage: json_col(row, "lineage")?.unwrap_or_default(),
        created_at: from_millis(row.try_get("created_at")?),
    })
}

const CYCLE_COLUMNS: &str = "id, pipeline, trigger_kind, cycle_date, state, outcome, reason, inputs, decision, candidate_version, gate, deadline_at, resumes, created_at, updated_at, finished_at";
const VERSION_COLUMNS: &str = "id, pipeline, version, cycle_id, path, metrics, lineage, created_at";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
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

    /// Register a pipeline if the store does not know it yet.
    pub async fn ensure_pipeline(&self, name: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        let sql = "INSERT INTO pipelines (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";
        sqlx::query(sql)
            .bind(name)
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn pipeline(&self, name: &str) -> Result<Option<PipelineRow>, StoreError> {
        let row = sqlx::query(
            "SELECT name, created_at, last_scheduled_at FROM pipelines WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PipelineRow {
                name: r.try_get("name")?,
                created_at: from_millis(r.try_get("created_at")?),
                last_scheduled_at: r
                    .try_get::<Option<i64>, _>("last_scheduled_at")?
                    .map(from_millis),
            })
        })
        .transpose()
    }

    /// Start a cycle unless the pipeline already has one in flight. A scheduled or catch-up
    /// trigger also records its fire time, in the same transaction, so it is taken once.
    pub async fn create_cycle(
        &self,
        pipeline: &str,
        trigger: TriggerKind,
        cycle_date: &str,
        fired_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<CreateOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO cycles (pipeline, trigger_kind, cycle_date, state, active, reason, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 1, $5, $6, $6) RETURNING id",
        )
        .bind(pipeline)
        .bind(trigger.as_str())
        .bind(cycle_date)
        .bind(CycleState::Scheduled.as_str())
        .bind(format!("{} trigger", trigger.as_str()))
        .bind(millis(now))
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                let id: Option<i64> =
                    sqlx::query_scalar("SELECT id FROM cycles WHERE pipeline = $1 AND active = 1")
                        .bind(pipeline)
                        .fetch_optional(&self.pool)
                        .await?;
                return Ok(CreateOutcome::AlreadyRunning(id.unwrap_or_default()));
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query("INSERT INTO transitions (cycle_id, from_state, to_state, reason, at) VALUES ($1, NULL, $2, $3, $4)")
            .bind(id)
            .bind(CycleState::Scheduled.as_str())
            .bind(format!("{} trigger", trigger.as_str()))
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
        if let Some(fired) = fired_at {
            sqlx::query("UPDATE pipelines SET last_scheduled_at = $1 WHERE name = $2")
                .bind(millis(fired))
                .bind(pipeline)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(CreateOutcome::Created(id))
    }

    pub async fn cycle(&self, id: i64) -> Result<Option<CycleRow>, StoreError> {
        let sql = format!("SELECT {CYCLE_COLUMNS} FROM cycles WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(cycle_from_row).transpose()
    }

    /// Cycles still in flight (to resume on start).
    pub async fn active_cycles(&self) -> Result<Vec<CycleRow>, StoreError> {
        let sql = format!("SELECT {CYCLE_COLUMNS} FROM cycles WHERE active = 1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cycle_from_row).collect()
    }

    /// Newest first.
    pub async fn cycles(
        &self,
        pipeline: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CycleRow>, StoreError> {
        let sql = format!(
            "SELECT {CYCLE_COLUMNS} FROM cycles WHERE ($1 = '' OR pipeline = $1) ORDER BY id DESC LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(pipeline.unwrap_or(""))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(cycle_from_row).collect()
    }

    pub async fn transitions(&self, cycle: i64) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, reason, at FROM transitions WHERE cycle_id = $1 ORDER BY id",
        )
        .bind(cycle)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_state")?;
                Ok(TransitionRow {
                    from: from.map(|f| CycleState::from_str(&f)).transpose()?,
                    to: CycleState::from_str(&r.try_get::<String, _>("to_state")?)?,
                    reason: r.try_get("reason")?,
                    at: from_millis(r.try_get("at")?),
                })
            })
            .collect()
    }

    /// Move a cycle `from → to` (compare-and-set), apply `update`, and append the transition
    /// row, in one transaction. Fails with `Conflict` if the cycle is no longer in `from`.
    pub async fn transition(
        &self,
        cycle: i64,
        from: CycleState,
        to: CycleState,
        reason: &str,
        update: CycleUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        self.transition_in(&mut tx, cycle, from, to, reason, update, now)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn transition_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        cycle: i64,
        from: CycleState,
        to: CycleState,
        reason: &str,
        update: CycleUpdate,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !from.can_go_to(to) {
            return Err(StoreError::IllegalTransition { cycle, from, to });
        }
        self.check_fence(tx, now).await?;
        let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
        let (set_deadline, deadline) = match update.deadline_at {
            Some(d) => (1i64, d.map(millis)),
            None => (0i64, None),
        };
        let done = to.is_terminal();
        let result = sqlx::query(
            "UPDATE cycles SET state = $1, active = $2, reason = $3, updated_at = $4, \
               finished_at = CASE WHEN $2 = 0 THEN $4 ELSE finished_at END, \
               outcome = COALESCE($5, outcome), inputs = COALESCE($6, inputs), \
               decision = COALESCE($7, decision), gate = COALESCE($8, gate), \
               candidate_version = COALESCE($9, candidate_version), \
               deadline_at = CASE WHEN $10 = 1 THEN $11 ELSE deadline_at END \
             WHERE id = $12 AND state = $13",
        )
        .bind(to.as_str())
        .bind(if done { 0i64 } else { 1i64 })
        .bind(reason)
        .bind(millis(now))
        .bind(update.outcome.map(|o| o.as_str()))
        .bind(json(&update.inputs))
        .bind(json(&update.decision))
        .bind(json(&update.gate))
        .bind(update.candidate_version)
        .bind(set_deadline)
        .bind(deadline)
        .bind(cycle)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await?;
        if result.rows_affected() != 1 {
            return Err(StoreError::Conflict {
                cycle,
                expected: from,
            });
        }
        sqlx::query("INSERT INTO transitions (cycle_id, from_state, to_state, reason, at) VALUES ($1, $2, $3, $4, $5)")
            .bind(cycle)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(reason)
            .bind(millis(now))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Count a resume of an in-flight cycle after a restart.
    pub async fn mark_resumed(&self, cycle: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE cycles SET resumes = resumes + 1 WHERE id = $1")
            .bind(cycle)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Append to the event log.
    pub async fn event(
        &self,
        pipeline: &str,
        cycle: Option<i64>,
        kind: &str,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO events (at, pipeline, cycle_id, kind, message) VALUES ($1, $2, $3, $4, $5)")
            .bind(millis(now))
            .bind(pipeline)
            .bind(cycle)
            .bind(kind)
            .bind(message)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Events of a cycle, oldest first, as (at, kind, message).
    pub async fn events(
        &self,
        cycle: i64,
    ) -> Result<Vec<(DateTime<Utc>, String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT at, kind, message FROM events WHERE cycle_id = $1 ORDER BY id")
                .bind(cycle)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    from_millis(r.try_get("at")?),
                    r.try_get("kind")?,
                    r.try_get("message")?,
                ))
            })
            .collect()
    }

    /// Store (or replace, on a resumed check) the report of a cycle.
    pub async fn save_report(
        &self,
        cycle: i64,
        pipeline: &str,
        dataset_drift: bool,
        body: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM reports WHERE cycle_id = $1")
            .bind(cycle)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO reports (cycle_id, pipeline, created_at, dataset_drift, body) VALUES ($1, $2, $3, $4, $5)")
            .bind(cycle)
            .bind(pipeline)
            .bind(millis(now))
            .bind(i64::from(dataset_drift))
            .bind(body.to_string())
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
        .bind(new.metrics.to_string())
        .bind(new.lineage.to_string())
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

    /// Move `champion` to `version_id`, in one transaction with the `previous` alias and the
    /// deployment record. A deploy makes the old champion `previous`; a rollback makes
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
            "INSERT INTO deployments (pipeline, kind, version_id, from_version_id, cycle_id, actor, reason, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(pipeline)
        .bind(m.kind.as_str())
        .bind(m.version_id)
        .bind(current)
        .bind(m.cycle)
        .bind(m.actor)
        .bind(m.reason)
        .bind(millis(now))
        .execute(&mut *tx)
        .await?;
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

    /// When events of `kind` happened for a pipeline since `since` (guard budgets).
    pub async fn event_times(
        &self,
        pipeline: &str,
        kind: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let rows: Vec<i64> = sqlx::query_scalar(
            "SELECT at FROM events WHERE pipeline = $1 AND kind = $2 AND at >= $3 ORDER BY id",
        )
        .bind(pipeline)
        .bind(kind)
        .bind(millis(since))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(from_millis).collect())
    }

    /// How many events of `kind` a cycle has (watch checks that failed, for example).
    pub async fn count_events(&self, cycle: i64, kind: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE cycle_id = $1 AND kind = $2")
                .bind(cycle)
                .bind(kind)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Outcomes of a pipeline's newest finished cycles, newest first.
    pub async fn recent_outcomes(
        &self,
        pipeline: &str,
        limit: i64,
    ) -> Result<Vec<Outcome>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT outcome FROM cycles WHERE pipeline = $1 AND active = 0 AND outcome IS NOT NULL ORDER BY id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|o| Outcome::from_str(o).map_err(StoreError::from))
            .collect()
    }

    /// Put a hold (freeze or breaker pause) on a pipeline, or on all (`GLOBAL`). Keeps the
    /// first hold if one is already on record.
    pub async fn set_hold(
        &self,
        pipeline: &str,
        kind: HoldKind,
        hold: &Hold,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO guard_state (pipeline, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (pipeline, key) DO NOTHING",
        )
        .bind(pipeline)
        .bind(kind.as_str())
        .bind(serde_json::to_string(hold).unwrap_or_default())
        .bind(millis(hold.at))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Lift the holds on a pipeline (or on all, `GLOBAL`); how many were lifted.
    pub async fn clear_holds(&self, pipeline: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM guard_state WHERE pipeline = $1 AND key IN ('frozen', 'paused')",
        )
        .bind(pipeline)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The holds on record for a pipeline (its own, and the global one).
    pub async fn holds(&self, pipeline: &str) -> Result<Holds, StoreError> {
        let rows = sqlx::query(
            "SELECT pipeline, key, value FROM guard_state WHERE pipeline IN ($1, $2) AND key IN ('frozen', 'paused')",
        )
        .bind(pipeline)
        .bind(GLOBAL)
        .fetch_all(&self.pool)
        .await?;
        let mut holds = Holds::default();
        for r in &rows {
            let who: String = r.try_get("pipeline")?;
            let key: String = r.try_get("key")?;
            let value: String = r.try_get("value")?;
            let hold: Option<Hold> = serde_json::from_str(&value).ok();
            match (who == GLOBAL, key.as_str()) {
                (true, _) => holds.global = hold,
                (false, "frozen") => holds.frozen = hold,
                (false, _) => holds.paused = hold,
            }
        }
        Ok(holds)
    }

    /// Remember the id of an accepted signed request; false if it was seen before (a replay).
    pub async fn remember_request(
        &self,
        channel: &str,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // Ids older than a day are past every timestamp window: forget them.
        sqlx::query("DELETE FROM seen_requests WHERE at < $1")
            .bind(millis(now) - 86_400_000)
            .execute(&self.pool)
            .await?;
        let r = sqlx::query(
            "INSERT INTO seen_requests (channel, id, at) VALUES ($1, $2, $3) ON CONFLICT (channel, id) DO NOTHING",
        )
        .bind(channel)
        .bind(id)
        .bind(millis(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Fence this store's writes on a lease (`None`: no fencing, a single daemon).
    pub fn set_fence(&self, fence: Option<(String, i64)>) {
        if let Ok(mut f) = self.fence.write() {
            *f = fence;
        }
    }

    /// Inside a write transaction: fail unless the fence (if set) still holds the lease.
    async fn check_fence(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = self.fence.read().ok().and_then(|f| f.clone());
        let Some((holder, token)) = fence else {
            return Ok(());
        };
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM leader_lease WHERE name = 'leader' AND holder = $1 AND token = $2 AND expires_at > $3",
        )
        .bind(&holder)
        .bind(token)
        .bind(millis(now))
        .fetch_one(&mut **tx)
        .await?;
        if held == 0 {
            return Err(StoreError::Fenced { holder, token });
        }
        Ok(())
    }

    /// Take or renew the leader lease for `me` until `now + ttl`. Returns the fencing token
    /// while `me` holds it; `None` while another holder's lease is live. The token grows by
    /// one with every change of holder (compare-and-set on the old token, so two takers
    /// cannot both win).
    pub async fn acquire_lease(
        &self,
        me: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let until = millis(now) + ttl.as_millis() as i64;
        let current = self.lease().await?;
        let taken = match current {
            None => sqlx::query(
                "INSERT INTO leader_lease (name, holder, token, expires_at) VALUES ('leader', $1, 1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(me)
            .bind(until)
            .execute(&self.pool)
            .await?
            .rows_affected()
                == 1,
            Some(l) if l.holder == me || l.expires_at <= now => {
                let next = if l.holder == me { l.token } else { l.token + 1 };
                sqlx::query(
                    "UPDATE leader_lease SET holder = $1, token = $2, expires_at = $3 WHERE name = 'leader' AND token = $4 AND holder = $5",
                )
                .bind(me)
                .bind(next)
                .bind(until)
                .bind(l.token)
                .bind(&l.holder)
                .execute(&self.pool)
                .await?
                .rows_affected()
                    == 1
            }
            Some(_) => false,
        };
        if !taken {
            return Ok(None);
        }
        Ok(self
            .lease()
            .await?
            .filter(|l| l.holder == me)
            .map(|l| l.token))
    }

    /// Give the lease up (clean shutdown), so a standby takes over at once.
    pub async fn release_lease(&self, me: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE leader_lease SET expires_at = 0 WHERE name = 'leader' AND holder = $1")
            .bind(me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Who holds the lease (possibly expired).
    pub async fn lease(&self) -> Result<Option<Lease>, StoreError> {
        let row =
            sqlx::query("SELECT holder, token, expires_at FROM leader_lease WHERE name = 'leader'")
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(Lease {
                holder: r.try_get("holder")?,
                token: r.try_get("token")?,
                expires_at: from_millis(r.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    /// Record an approval decision, atomically with the cycle's other decisions: a second
    /// decision by the same approver is a no-op (`Duplicate`), and once the cycle is settled
    /// (a rejection, or `required` approvals) no further decision is recorded (`Settled`).
    /// The cycle row is locked first, so two concurrent decisions are serialized on both
    /// backends.
    pub async fn record_approval(
        &self,
        cycle: i64,
        approval: &ApprovalRow,
        required: usize,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query(
            "UPDATE cycles SET updated_at = updated_at WHERE id = $1 AND state = 'awaiting_approval'",
        )
        .bind(cycle)
        .execute(&mut *tx)
        .await?;
        if locked.rows_affected() != 1 {
            return Ok(Recorded::Settled);
        }
        let rows = sqlx::query("SELECT approver, decision FROM approvals WHERE cycle_id = $1")
            .bind(cycle)
            .fetch_all(&mut *tx)
            .await?;
        let mut approvals = 0;
        for r in &rows {
            let approver: String = r.try_get("approver")?;
            let decision: String = r.try_get("decision")?;
            if approver == approval.approver {
                return Ok(Recorded::Duplicate);
            }
            match decision.as_str() {
                "reject" => return Ok(Recorded::Settled),
                _ => approvals += 1,
            }
        }
        if approvals >= required {
            return Ok(Recorded::Settled);
        }
        sqlx::query(
            "INSERT INTO approvals (cycle_id, approver, channel, decision, reason, at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(cycle)
        .bind(&approval.approver)
        .bind(&approval.channel)
        .bind(approval.decision.as_str())
        .bind(&approval.reason)
        .bind(millis(approval.at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Recorded::New)
    }

    pub async fn approvals(&self, cycle: i64) -> Result<Vec<ApprovalRow>, StoreError> {
        let rows = sqlx::query("SELECT approver, channel, decision, reason, at FROM approvals WHERE cycle_id = $1 ORDER BY id")
            .bind(cycle)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApprovalRow {
                    approver: r.try_get("approver")?,
                    channel: r.try_get("channel")?,
                    decision: ApprovalDecision::from_str(&r.try_get::<String, _>("decision")?)?,
                    reason: r.try_get("reason")?,
                    at: from_millis(r.try_get("at")?),
                })
            })
            .collect()
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

    /// Set a cycle's deadline (approval expiry) without changing its state.
    pub async fn set_deadline(
        &self,
        cycle: i64,
        deadline: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE cycles SET deadline_at = $1 WHERE id = $2")
            .bind(millis(deadline))
            .bind(cycle)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Set one metric of a model version (read-modify-write in one transaction).
    pub async fn set_version_metric(
        &self,
        version_id: i64,
        key: &str,
        value: f64,
    ) -> Result<(), StoreError> {
        self.set_version_field(
            version_id,
            VersionJson::Metrics,
            key,
            serde_json::json!(value),
        )
        .await
    }

    /// Set one key of a model version's metrics or lineage document.
    pub async fn set_version_field(
        &self,
        version_id: i64,
        column: VersionJson,
        key: &str,
        value: serde_json::Value,
    ) -> Result<(), StoreError> {
        let column = match column {
            VersionJson::Metrics => "metrics",
            VersionJson::Lineage => "lineage",
        };
        let mut tx = self.pool.begin().await?;
        let text: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {column} FROM model_versions WHERE id = $1"
        )))
        .bind(version_id)
        .fetch_optional(&mut *tx)
        .await?;
        let mut doc: serde_json::Value = text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_else(|| serde_json::json!({}));
        doc[key] = value;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE model_versions SET {column} = $1 WHERE id = $2"
        )))
        .bind(doc.to_string())
        .bind(version_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
