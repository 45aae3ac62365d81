//! The idempotency store: a pool, its settings, its schema and its maintenance.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::Notify;

use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Pool};

use crate::audit::AuditQueue;
use crate::backend::{KeyRecord, KeyScope, PostgresCheck, Statements};
use crate::clock::millis;
use crate::in_flight::InFlightClaims;
use crate::{Backend, Operation, StoreConfig, StoreError, TenantId};

/// The write protocol's handle on one database: cheap to clone, shared by every handler.
///
/// ```
/// use idem_runtime::{IdempotencyStore, StoreConfig};
/// use sqlx::Sqlite;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), idem_runtime::StoreError> {
/// # let dir = std::env::temp_dir().join(format!("idem-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let url = format!("sqlite://{}", dir.join("store.db").display());
/// let store = IdempotencyStore::<Sqlite>::connect(&url, StoreConfig::default()).await?;
/// store.migrate().await?;
/// let purged = store.purge_expired().await?;
/// assert_eq!(purged, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct IdempotencyStore<DB: Backend> {
    pub(crate) pool: Pool<DB>,
    /// A read replica that serves replays, if the application gave one.
    pub(crate) replica: Option<Pool<DB>>,
    pub(crate) config: StoreConfig,
    pub(crate) in_flight: InFlightClaims,
    /// Wakes this process's outbox dispatchers when a write with events commits.
    pub(crate) outbox_signal: Arc<Notify>,
    /// Audit rows written after their request was answered.
    pub(crate) audit_queue: AuditQueue,
    /// Where the store's own tasks (the audit writer) run: the runtime the store was created
    /// on, which outlives the request workers that an HTTP server stops at shutdown.
    pub(crate) background: Handle,
}

impl<DB: Backend> Clone for IdempotencyStore<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            replica: self.replica.clone(),
            config: self.config.clone(),
            in_flight: self.in_flight.clone(),
            outbox_signal: self.outbox_signal.clone(),
            audit_queue: self.audit_queue.clone(),
            background: self.background.clone(),
        }
    }
}

impl<DB: Backend> IdempotencyStore<DB> {
    /// A store on a pool the application already has. On SQLite, give the pool a busy timeout,
    /// WAL mode and `synchronous = FULL`, as [`IdempotencyStore::connect`] does.
    ///
    /// The store's background work (the audit writer) runs on the Tokio runtime this is called
    /// on: create the store in `main` (as `#[actix_web::main]` or `#[tokio::main]` run it), not
    /// on a worker that the HTTP server stops at shutdown.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn new(pool: Pool<DB>, config: StoreConfig) -> Self {
        let audit_queue = AuditQueue::new(config.audit_queue_limit());
        Self {
            pool,
            replica: None,
            config,
            in_flight: InFlightClaims::default(),
            outbox_signal: Arc::default(),
            audit_queue,
            background: Handle::current(),
        }
    }

    /// Opens a pool configured for the protocol: `postgres://user@host/db` or
    /// `sqlite://path` (the SQLite file is created if missing, in WAL mode, with a busy timeout
    /// equal to the lock timeout).
    pub async fn connect(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        let pool = DB::connect(url, &config).await?;
        Ok(Self::new(pool, config))
    }

    /// Applies idem's schema migrations. They are tracked in their own table, `_idem_migrations`,
    /// so they never mix with the application's own sqlx migrations.
    ///
    /// A store behind a transaction pooler refuses
    /// ([`StoreError::MigrationsNeedADirectConnection`]): connect another to the database
    /// itself for this.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if self.config.transaction_pooling() {
            return Err(StoreError::MigrationsNeedADirectConnection);
        }
        DB::migrate(&self.pool).await?;
        Ok(())
    }

    /// The database's clock, in Unix milliseconds: the one clock that every expiry, retention
    /// horizon and audit time is measured by, whichever node asks.
    pub async fn database_clock_ms(&self) -> Result<i64, StoreError> {
        Ok(DB::database_clock(&self.pool, self.config.statements()).await?)
    }

    /// The versions of idem's migrations not yet applied to this database; empty when the
    /// schema is current. The startup gate refuses to start otherwise.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>, StoreError> {
        let applied = DB::applied_migrations(&self.pool, self.config.statements()).await?;
        Ok(DB::migration_versions(&self.pool)
            .into_iter()
            .filter(|version| !applied.contains(version))
            .collect())
    }

    /// Why row-level security would not hold for the role this store connects as, one sentence
    /// per reason, each naming the fix; empty when it holds, and always on SQLite and MySQL,
    /// which have none. On PostgreSQL a superuser or `BYPASSRLS` role passes every policy, and
    /// the owner of a table passes its policies unless the table `FORCE`s them: the policies
    /// are then silently off. Looks only when tables of the search path have policies.
    /// idem-actix's `ProtectedRoutes::verify` logs each reason as a warning at startup.
    pub async fn row_level_security_bypasses(&self) -> Result<Vec<String>, StoreError> {
        self.postgres_findings(PostgresCheck::RowSecurity).await
    }

    /// Why a write this store's primary acknowledged could be lost when a standby is promoted,
    /// one sentence per reason, each naming the fix; empty when it cannot, and always on
    /// SQLite and MySQL. On PostgreSQL: the primary streams to standbys while
    /// `synchronous_standby_names` is empty (no commit waits for a standby), or names one while
    /// `synchronous_commit` is `off` or `local`. Exactly-once holds either way (a lost write's
    /// retry writes it again, once), but "never lost" needs a synchronous standby: see
    /// SCALING.md, "When the primary fails over". idem-actix's `ProtectedRoutes::verify` logs
    /// each reason as a warning at startup.
    pub async fn replication_risks(&self) -> Result<Vec<String>, StoreError> {
        self.postgres_findings(PostgresCheck::Replication).await
    }

    async fn postgres_findings(&self, check: PostgresCheck) -> Result<Vec<String>, StoreError> {
        Ok(DB::postgres_findings(&self.pool, self.config.statements(), check).await?)
    }

    /// Deletes the keys past their own expiry and returns how many, at the configured
    /// [`PurgePace`](crate::PurgePace). Each key row carries its expiry, set at its claim from its
    /// operation's retention, so a purge run by any binary removes only what has expired,
    /// whatever operations that binary registers. Expired keys already stopped replaying when
    /// they expired (by the database's clock); this only reclaims their rows. [`Maintenance`](crate::Maintenance)
    /// runs it on a schedule.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        let purged = self
            .config
            .purge_pace()
            .purge(&mut || false, |rows| {
                DB::purge_expired(&self.pool, self.config.statements(), rows)
            })
            .await?;
        tracing::info!(purged, "purged expired idempotency keys");
        Ok(purged)
    }

    /// A transaction for `tenant`'s own statements outside a protected write: the reads of its
    /// records, an outbox handler's writes. On PostgreSQL it carries the tenant as
    /// `idem.tenant_id`, as every write transaction does, so that row-level security policies on
    /// `current_setting('idem.tenant_id', true)` let it see that tenant's rows and no other's
    /// (docs/production.md, "Tenant isolation by the database"). On SQLite it is a plain transaction.
    ///
    /// ```
    /// # use idem_runtime::{IdempotencyStore, StoreConfig, TenantId};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("idem-tenant-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// # let url = format!("sqlite://{}", dir.join("tenant.db").display());
    /// let store = IdempotencyStore::<sqlx::Sqlite>::connect(&url, StoreConfig::default()).await?;
    /// let tenant = TenantId::new("acme")?;
    /// let mut tx = store.begin_for(&tenant).await?;
    /// let one: i64 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *tx).await?;
    /// tx.commit().await?;
    /// assert_eq!(one, 1);
    /// # Ok(()) }
    /// ```
    pub async fn begin_for(
        &self,
        tenant: &TenantId,
    ) -> Result<sqlx::Transaction<'static, DB>, StoreError> {
        Ok(DB::begin_for(&self.pool, self.config.statements(), tenant).await?)
    }

    /// Serves replays from a read replica (a streaming standby of the same database): a
    /// committed record found there is replayed, or refused as a mismatch, without touching the
    /// primary. A record not found there (a new key, or one the replica has not received yet)
    /// and any failure of the replica fall through to the primary's claim, which stays the
    /// only authority on whether a write runs: replication lag can cost a round trip, never a
    /// second write.
    pub fn with_replica(mut self, replica: Pool<DB>) -> Self {
        self.replica = Some(replica);
        self
    }

    /// The read replica, if the store has one.
    pub fn replica(&self) -> Option<&Pool<DB>> {
        self.replica.as_ref()
    }

    /// The pool the store writes through.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The store's settings.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// A pooled connection for a write. Behind a transaction pooler, one whose statement cache
    /// is not empty is closed instead: a write dropped mid-body (its request gone) left there the
    /// names of statements prepared on a server connection it no longer holds, and a body that
    /// reused one would run whatever another client prepared under that name.
    pub(crate) async fn acquire_for_write(&self) -> Result<PoolConnection<DB>, sqlx::Error> {
        loop {
            let conn = self.pool.acquire().await?;
            if self.config.statements() == Statements::Prepared
                || conn.cached_statements_size() == 0
            {
                return Ok(conn);
            }
            tracing::warn!("a pooled connection holds statements of an abandoned write; closed");
            conn.close().await?;
        }
    }

    /// The committed, unexpired record of a key, read on a fresh connection (after a failure
    /// that may have broken the one at hand).
    pub(crate) async fn find_record_anew(
        &self,
        scope: &KeyScope<'_>,
    ) -> Result<Option<KeyRecord>, sqlx::Error> {
        self.find_record_on(&self.pool, scope).await
    }

    /// The committed, unexpired record of a key, read on `pool` (the store's, or its replica)
    /// outside a write.
    pub(crate) async fn find_record_on(
        &self,
        pool: &Pool<DB>,
        scope: &KeyScope<'_>,
    ) -> Result<Option<KeyRecord>, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        self.read_record(&mut conn, scope).await
    }

    /// The committed, unexpired record of a key, read on `conn` outside a write: on its own, or
    /// behind a transaction pooler in a transaction of its own.
    pub(crate) async fn read_record(
        &self,
        conn: &mut DB::Connection,
        scope: &KeyScope<'_>,
    ) -> Result<Option<KeyRecord>, sqlx::Error> {
        let statements = self.config.statements();
        if statements == Statements::Prepared {
            return DB::find_record(conn, statements, scope).await;
        }
        let mut tx = conn.begin().await?;
        let record = DB::find_record(&mut tx, statements, scope).await?;
        tx.commit().await?;
        Ok(record)
    }

    /// How long a key of `operation` lives after its claim, by the database's clock: the
    /// store's retention, or the operation's own when it is longer. Set on the row at the
    /// claim.
    pub(crate) fn retention_ms(&self, operation: &Operation) -> i64 {
        let retention = operation
            .retention()
            .map_or(self.config.retention(), |own| {
                own.max(self.config.retention())
            });
        millis(retention)
    }
}
