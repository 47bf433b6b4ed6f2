//! The controller's storage: one SQL schema on SQLite (embedded default) or PostgreSQL
//! (production), through sqlx's Any driver.
//!
//! **Tenant scoping lives here.** Every method that reads or changes staff-visible rows takes a
//! [`Scope`] (or a [`Staff`], which carries one) and applies it in its SQL, so a handler cannot
//! forget it: another tenant's object is [`DbError::NotFound`], exactly like a missing one.
//! Every change writes its audit row in the same transaction, bumps the `generation` of each
//! router whose desired state it affects, and, once committed, wakes the agents concerned
//! through [`AgentSignals`].
//!
//! Layout: [`sql`] (a small query builder with `$n` placeholders that both databases accept),
//! one file per table family (`tenants`, `tokens`, `agents`, `routers`, `plans`,
//! `subscribers`, `jobs`, `audit`, `drift`), and `hub` (the [`HubStore`](crate::hub::HubStore)
//! implementation the agent hub uses).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Row as _, Transaction};
use tikfleet_clock::SharedClock;
use tikfleet_shared::{AgentId, TenantId, UnixMillis};

use crate::crypto::{AtRestKey, CryptoError};
use crate::hub::AgentSignals;

pub mod agents;
pub mod alerts;
pub mod audit;
pub mod backups;
pub mod credentials;
pub mod drift;
pub mod health;
mod hub;
pub mod jobs;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod plans;
pub mod restore;
pub mod routers;
pub(crate) mod sql;
pub mod subscribers;
pub mod tenants;
pub mod tokens;

pub use page::{Page, PageRequest};

use sql::Sql;

/// Whose rows a call may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant (admin tokens).
    Admin,
    /// One tenant's rows only.
    Tenant(TenantId),
    /// No rows at all (a token whose tenant is missing).
    Nothing,
}

impl Scope {
    /// Appends ` AND <column> = <tenant>` (or a false condition) to a query's WHERE clause.
    pub(crate) fn filter(&self, q: &mut Sql, column: &str) {
        match self {
            Self::Admin => {}
            Self::Tenant(tenant) => {
                q.push(" AND ")
                    .push(column)
                    .push(" = ")
                    .bind(tenant.to_string());
            }
            Self::Nothing => {
                q.push(" AND 1 = 0");
            }
        }
    }

    /// Whether this scope may see `tenant`'s rows.
    #[must_use]
    pub fn allows(&self, tenant: TenantId) -> bool {
        match self {
            Self::Admin => true,
            Self::Tenant(t) => *t == tenant,
            Self::Nothing => false,
        }
    }

    /// The tenant a new tenant-owned object goes to: the scope's own tenant, or for admins
    /// the one they name. A tenant outside the scope is `NotFound`.
    ///
    /// # Errors
    /// An admin named no tenant, or the named tenant is not this scope's.
    pub fn tenant_for_create(&self, requested: Option<TenantId>) -> Result<TenantId, DbError> {
        match (self, requested) {
            (Self::Admin, Some(t)) => Ok(t),
            (Self::Admin, None) => Err(DbError::Invalid(
                "tenant_id is required when an admin token creates this object".into(),
            )),
            (Self::Tenant(own), None) => Ok(*own),
            (Self::Tenant(own), Some(t)) if t == *own => Ok(t),
            _ => Err(DbError::NotFound("tenant")),
        }
    }
}

/// A staff member making a change: what they may touch and the name audit rows record.
#[derive(Clone, Debug)]
pub struct Staff {
    /// What the change may touch.
    pub scope: Scope,
    /// The actor recorded in the audit log (the token's name).
    pub actor: String,
}

/// Why a refused enrollment or key rotation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No such enrollment token.
    TokenUnknown,
    /// The enrollment token was already used.
    TokenUsed,
    /// The enrollment token expired.
    TokenExpired,
    /// The agent was revoked.
    AgentRevoked,
    /// The named key is not a current key of the agent.
    KeyUnknown,
    /// The signature's time is more than five minutes away from the controller's.
    SignatureStale,
    /// The signature does not verify.
    SignatureInvalid,
}

/// What storage calls fail with.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No such object (or another tenant's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The change conflicts with stored state (duplicate name, object in use).
    #[error("{0}")]
    Conflict(String),
    /// A value or reference is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The caller's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request is well formed but cannot be carried out as asked (a drift item whose
    /// router value tikfleet cannot take); the message says what to do instead.
    #[error("{0}")]
    Unprocessable(String),
    /// An enrollment or key rotation was refused.
    #[error("refused: {0:?}")]
    Refused(Refusal),
    /// A stored value does not decode.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// Encryption at rest failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The database failed.
    #[error("database error: {0}")]
    Sql(#[source] sqlx::Error),
    /// Migrating the schema failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl DbError {
    /// Whether retrying later can help (the database was busy or unreachable).
    #[must_use]
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            Self::Sql(
                sqlx::Error::PoolTimedOut
                    | sqlx::Error::Io(_)
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        if is_unique_violation(&e) {
            Self::Conflict("an object with this name already exists".into())
        } else {
            Self::Sql(e)
        }
    }
}

/// Whether `e` is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Maps a unique violation to a conflict with `message`, anything else as usual.
pub(crate) fn unique_as(message: impl Into<String>) -> impl FnOnce(sqlx::Error) -> DbError {
    move |e| {
        if is_unique_violation(&e) {
            DbError::Conflict(message.into())
        } else {
            DbError::from(e)
        }
    }
}

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite (embedded).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The controller's database. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    key: AtRestKey,
    clock: SharedClock,
    signals: AgentSignals,
    /// Wakes the notification sender after a commit that queued notifications.
    notifications_queued: tokio::sync::Notify,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.inner.backend)
            .finish_non_exhaustive()
    }
}

/// The SQLite URL of the database file in `data_dir` (created if missing).
#[must_use]
pub fn sqlite_url(data_dir: &std::path::Path) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        data_dir.join("controller.db").display()
    )
}

fn migrator() -> Migrator {
    // Built by hand (instead of `sqlx::migrate!`, which needs sqlx's macros) from the same
    // files, embedded at compile time.
    Migrator {
        migrations: Cow::Owned(vec![
            Migration::new(
                1,
                Cow::Borrowed("init"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0001_init.sql")),
                false,
            ),
            Migration::new(
                2,
                Cow::Borrowed("job delivery"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0002_job_delivery.sql")),
                false,
            ),
            Migration::new(
                3,
                Cow::Borrowed("hub indexes"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0003_hub_indexes.sql")),
                false,
            ),
            Migration::new(
                4,
                Cow::Borrowed("drift"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0004_drift.sql")),
                false,
            ),
            Migration::new(
                5,
                Cow::Borrowed("lifecycle"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0005_lifecycle.sql")),
                false,
            ),
            Migration::new(
                6,
                Cow::Borrowed("health"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0006_health.sql")),
                false,
            ),
            Migration::new(
                7,
                Cow::Borrowed("backups"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0007_backups.sql")),
                false,
            ),
            Migration::new(
                8,
                Cow::Borrowed("credentials"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0008_credentials.sql")),
                false,
            ),
            Migration::new(
                9,
                Cow::Borrowed("alerts"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0009_alerts.sql")),
                false,
            ),
            Migration::new(
                10,
                Cow::Borrowed("backup settings"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0010_backup_settings.sql")),
                false,
            ),
            Migration::new(
                11,
                Cow::Borrowed("agent host"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0011_agent_host.sql")),
                false,
            ),
            Migration::new(
                12,
                Cow::Borrowed("health_late"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0012_health_late.sql")),
                false,
            ),
            Migration::new(
                13,
                Cow::Borrowed("reboot_marks"),
                MigrationType::Simple,
                Cow::Borrowed(include_str!("../../migrations/0013_reboot_marks.sql")),
                false,
            ),
        ]),
        ..Migrator::DEFAULT
    }
}

impl Db {
    /// Opens (and migrates) the database at `url`: `sqlite://path?mode=rwc` or
    /// `postgres://user@host/db`. A fresh [`AgentSignals`] is created; see
    /// [`open_with_signals`](Self::open_with_signals).
    ///
    /// # Errors
    /// The URL is not a supported database, it cannot be reached, or migrating failed.
    pub async fn open(url: &str, key: AtRestKey, clock: SharedClock) -> Result<Self, DbError> {
        Self::open_with_signals(url, key, clock, AgentSignals::default()).await
    }

    /// Opens the database; committed changes wake agents through `signals`.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub async fn open_with_signals(
        url: &str,
        key: AtRestKey,
        clock: SharedClock,
        signals: AgentSignals,
    ) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::Invalid(
                "the database URL must start with sqlite: or postgres:".into(),
            ));
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            });
        let pool = options.connect(url).await?;
        migrator().run(&pool).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                key,
                clock,
                signals,
                notifications_queued: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Which database this is.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The signals committed changes are announced on.
    #[must_use]
    pub fn signals(&self) -> &AgentSignals {
        &self.inner.signals
    }

    /// What the notification sender waits on besides its clock: signalled (with
    /// [`wake_notifier`](Self::wake_notifier)) after a commit that queued notifications.
    #[must_use]
    pub fn notifications_queued(&self) -> &tokio::sync::Notify {
        &self.inner.notifications_queued
    }

    /// Wakes the notification sender; call it after committing a transaction that queued
    /// notices or alerts ([`notify::queue_notice`], [`notify::queue_alert`]). A wake while
    /// the sender is busy is kept for its next wait, so none is lost.
    pub fn wake_notifier(&self) {
        self.inner.notifications_queued.notify_one();
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    pub(crate) fn key(&self) -> &AtRestKey {
        &self.inner.key
    }

    pub(crate) fn now(&self) -> UnixMillis {
        self.inner.clock.now()
    }

    /// Starts a write transaction. On SQLite it takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so a transaction that reads before it writes cannot fail to upgrade.
    pub(crate) async fn begin(&self) -> Result<Transaction<'static, Any>, DbError> {
        Ok(match self.inner.backend {
            Backend::Sqlite => self.inner.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.inner.pool.begin().await?,
        })
    }

    /// Wakes the sessions of `agents` after a commit.
    pub(crate) fn notify(&self, agents: impl IntoIterator<Item = AgentId>) {
        let mut seen = std::collections::BTreeSet::new();
        for agent in agents {
            if seen.insert(agent) {
                self.inner.signals.changed(agent);
            }
        }
    }
}

/// Reading columns of a row with errors that name the column.
pub(crate) trait RowExt {
    fn text(&self, column: &str) -> Result<String, DbError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, DbError>;
    fn int(&self, column: &str) -> Result<i64, DbError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, DbError>;
    fn parse<T: std::str::FromStr>(&self, column: &str) -> Result<T, DbError>;
    fn opt_parse<T: std::str::FromStr>(&self, column: &str) -> Result<Option<T>, DbError>;
    fn uint(&self, column: &str) -> Result<u64, DbError> {
        let v = self.int(column)?;
        u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{column} is negative")))
    }
    fn millis(&self, column: &str) -> Result<UnixMillis, DbError> {
        self.int(column).map(UnixMillis)
    }
    fn opt_millis(&self, column: &str) -> Result<Option<UnixMillis>, DbError> {
        self.opt_int(column).map(|v| v.map(UnixMillis))
    }
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> DbError {
    DbError::Corrupt(format!("column {column}: {e}"))
}

impl RowExt for AnyRow {
    fn text(&self, column: &str) -> Result<String, DbError> {
        self.try_get::<String, _>(column)
            .map_err(|e| corrupt(column, e))
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, DbError> {
        self.try_get::<Option<String>, _>(column)
            .map_err(|e| corrupt(column, e))
    }
    fn int(&self, column: &str) -> Result<i64, DbError> {
        self.try_get::<i64, _>(column)
            .map_err(|e| corrupt(column, e))
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, DbError> {
        self.try_get::<Option<i64>, _>(column)
            .map_err(|e| corrupt(column, e))
    }
    fn parse<T: std::str::FromStr>(&self, column: &str) -> Result<T, DbError> {
        self.text(column)?
            .parse()
            .map_err(|_| corrupt(column, "unparsable value"))
    }
    fn opt_parse<T: std::str::FromStr>(&self, column: &str) -> Result<Option<T>, DbError> {
        self.opt_text(column)?
            .map(|t| t.parse().map_err(|_| corrupt(column, "unparsable value")))
            .transpose()
    }
}

/// Converts a count or port to the database's integer.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Inserts a staff audit row inside `tx`.
pub(crate) async fn audit_staff(
    tx: &mut Transaction<'static, Any>,
    at: UnixMillis,
    tenant: Option<TenantId>,
    router: Option<tikfleet_shared::RouterId>,
    actor: &str,
    action: &str,
    params: &tikfleet_shared::record::AuditParams,
) -> Result<(), DbError> {
    let params = serde_json::to_string(params).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let mut q = Sql::new(
        "INSERT INTO audit (id, tenant_id, router_id, at, actor, action, params, status) VALUES (",
    );
    q.bind(uuid::Uuid::now_v7().to_string())
        .push(", ")
        .bind(tenant.map(|t| t.to_string()))
        .push(", ")
        .bind(router.map(|r| r.to_string()))
        .push(", ")
        .bind(at.as_millis())
        .push(", ")
        .bind(actor.to_owned())
        .push(", ")
        .bind(action.to_owned())
        .push(", ")
        .bind(params)
        .push(", 'succeeded')");
    q.execute(&mut **tx).await?;
    Ok(())
}
