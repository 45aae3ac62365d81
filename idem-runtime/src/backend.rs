//! The SQL of the write protocol, once per database.
//!
//! The statements are the same text on PostgreSQL and SQLite (both accept `$n` parameters,
//! `ON CONFLICT ... DO UPDATE ... WHERE` and `RETURNING`); what differs is how a write
//! transaction begins, which errors are worth retrying, and the migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgDatabaseError, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Pool, Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::{Fingerprint, IdempotencyKey, StoreConfig, StoredResponse, TenantId};

/// A database the write protocol runs on: [`Postgres`] or [`Sqlite`].
///
/// The trait is sealed: the protocol's correctness depends on each backend's locking, so a new
/// backend belongs in this crate, with its tests.
pub trait Backend: sealed::Protocol {}

impl Backend for Postgres {}
impl Backend for Sqlite {}

/// The row that names one key: the scope every statement of the protocol filters on.
pub struct KeyScope<'a> {
    pub tenant: &'a TenantId,
    pub operation: &'static str,
    pub key: &'a IdempotencyKey,
}

/// What a claim inserts.
pub struct Claim<'a> {
    pub scope: &'a KeyScope<'a>,
    pub fingerprint: &'a Fingerprint,
    pub entity_id: Uuid,
    /// Tells this attempt's row from a twin's after an ambiguous commit.
    pub attempt_id: i64,
    pub now_ms: i64,
    /// A row created at or before this instant is expired and may be claimed again.
    pub expired_at_or_before_ms: i64,
}

/// A committed key row.
pub struct KeyRecord {
    pub fingerprint: Vec<u8>,
    pub attempt_id: i64,
    pub response: StoredResponse,
}

/// The raw row of a committed key; the response columns are never NULL once committed.
type RecordRow = (Vec<u8>, i64, Option<i32>, Option<String>, Option<Vec<u8>>);

const FIND_RECORD: &str = "\
SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3 AND created_at_ms > $4";

/// Inserts the key row, or takes over an expired one. On a live twin's uncommitted row it
/// waits for the twin (the unique index serializes them); on a committed live row it returns
/// no row.
const CLAIM: &str = "\
INSERT INTO idempotency_keys
    (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant_id, operation, idempotency_key) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    entity_id = excluded.entity_id,
    attempt_id = excluded.attempt_id,
    created_at_ms = excluded.created_at_ms,
    response_status = NULL,
    response_headers = NULL,
    response_body = NULL
WHERE idempotency_keys.created_at_ms <= $8
RETURNING attempt_id";

const STORE_RESPONSE: &str = "\
UPDATE idempotency_keys
SET response_status = $4, response_headers = $5, response_body = $6
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3";

const APPLIED_MIGRATIONS: &str = "SELECT version FROM _idem_migrations WHERE success";

const PURGE_EXPIRED: &str = "DELETE FROM idempotency_keys WHERE created_at_ms <= $1";

pub(crate) mod sealed {
    use std::future::Future;

    use super::*;

    /// The backend-specific half of the protocol. Sealed: not nameable outside this crate.
    pub trait Protocol: sqlx::Database {
        /// The driver's own error type, as it appears in an error's `source()` chain.
        type DriverError: DatabaseError;

        /// Applies this backend's schema migrations, tracked in their own table
        /// ([`MIGRATIONS_TABLE`]) so they never mix with the application's.
        fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), MigrateError>> + Send;

        /// The versions of this backend's migrations.
        fn migration_versions() -> Vec<i64>;

        /// The versions recorded as applied; none when the table does not exist yet.
        fn applied_migrations(
            pool: &Pool<Self>,
        ) -> impl Future<Output = Result<Vec<i64>, sqlx::Error>> + Send;

        /// A pool configured for the protocol: for SQLite, WAL and a busy timeout.
        fn connect(
            url: &str,
            config: &StoreConfig,
        ) -> impl Future<Output = Result<Pool<Self>, sqlx::Error>> + Send;

        /// Begins the write transaction of one attempt.
        fn begin_write(
            pool: &Pool<Self>,
            lock_timeout: Duration,
        ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

        fn find_record(
            pool: &Pool<Self>,
            scope: &KeyScope<'_>,
            expired_at_or_before_ms: i64,
        ) -> impl Future<Output = Result<Option<KeyRecord>, sqlx::Error>> + Send;

        /// `true` when this attempt now holds the key.
        fn claim(
            tx: &mut Transaction<'static, Self>,
            claim: &Claim<'_>,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        fn store_response(
            tx: &mut Transaction<'static, Self>,
            scope: &KeyScope<'_>,
            response: &StoredResponse,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        fn purge_expired(
            pool: &Pool<Self>,
            expired_at_or_before_ms: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

        /// A failure that a fresh attempt of the same transaction may not meet again.
        fn is_transient(error: &dyn DatabaseError) -> bool;

        /// The wait for a twin's claim outlasted the lock timeout.
        fn is_lock_timeout(error: &dyn DatabaseError) -> bool;
    }
}

/// The table that records which of idem's migrations ran.
pub const MIGRATIONS_TABLE: &str = "_idem_migrations";

fn with_own_table(mut migrator: Migrator) -> Migrator {
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

fn decode_record(row: RecordRow) -> Result<KeyRecord, sqlx::Error> {
    let (fingerprint, attempt_id, status, headers, body) = row;
    let (Some(status), Some(headers), Some(body)) = (status, headers, body) else {
        return Err(sqlx::Error::Protocol(
            "a committed idempotency key has no stored response".into(),
        ));
    };
    let status = u16::try_from(status).map_err(|_| {
        sqlx::Error::Protocol(format!("stored status {status} is not an HTTP status"))
    })?;
    let headers = serde_json::from_str(&headers).map_err(|e| sqlx::Error::Decode(e.into()))?;
    Ok(KeyRecord {
        fingerprint,
        attempt_id,
        response: StoredResponse {
            status,
            headers,
            body,
        },
    })
}

/// The same statements on each backend; only the types differ.
macro_rules! shared_statements {
    () => {
        async fn find_record(
            pool: &Pool<Self>,
            scope: &KeyScope<'_>,
            expired_at_or_before_ms: i64,
        ) -> Result<Option<KeyRecord>, sqlx::Error> {
            sqlx::query_as::<_, RecordRow>(FIND_RECORD)
                .bind(scope.tenant.as_str())
                .bind(scope.operation)
                .bind(scope.key.as_str())
                .bind(expired_at_or_before_ms)
                .fetch_optional(pool)
                .await?
                .map(decode_record)
                .transpose()
        }

        async fn claim(
            tx: &mut Transaction<'static, Self>,
            claim: &Claim<'_>,
        ) -> Result<bool, sqlx::Error> {
            let claimed = sqlx::query_scalar::<_, i64>(CLAIM)
                .bind(claim.scope.tenant.as_str())
                .bind(claim.scope.operation)
                .bind(claim.scope.key.as_str())
                .bind(&claim.fingerprint.as_bytes()[..])
                .bind(claim.entity_id)
                .bind(claim.attempt_id)
                .bind(claim.now_ms)
                .bind(claim.expired_at_or_before_ms)
                .fetch_optional(&mut **tx)
                .await?;
            Ok(claimed.is_some())
        }

        async fn store_response(
            tx: &mut Transaction<'static, Self>,
            scope: &KeyScope<'_>,
            response: &StoredResponse,
        ) -> Result<(), sqlx::Error> {
            let headers = serde_json::to_string(&response.headers)
                .map_err(|e| sqlx::Error::Encode(e.into()))?;
            sqlx::query(STORE_RESPONSE)
                .bind(scope.tenant.as_str())
                .bind(scope.operation)
                .bind(scope.key.as_str())
                .bind(i32::from(response.status))
                .bind(headers)
                .bind(&response.body[..])
                .execute(&mut **tx)
                .await?;
            Ok(())
        }

        async fn applied_migrations(pool: &Pool<Self>) -> Result<Vec<i64>, sqlx::Error> {
            match sqlx::query_scalar::<_, i64>(APPLIED_MIGRATIONS)
                .fetch_all(pool)
                .await
            {
                // The table does not exist: nothing was applied.
                Err(sqlx::Error::Database(_)) => Ok(Vec::new()),
                applied => applied,
            }
        }

        async fn purge_expired(
            pool: &Pool<Self>,
            expired_at_or_before_ms: i64,
        ) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(PURGE_EXPIRED)
                .bind(expired_at_or_before_ms)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        }
    };
}

impl sealed::Protocol for Postgres {
    type DriverError = PgDatabaseError;

    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        with_own_table(sqlx::migrate!("./migrations/postgres"))
            .run(pool)
            .await
    }

    fn migration_versions() -> Vec<i64> {
        sqlx::migrate!("./migrations/postgres")
            .iter()
            .map(|migration| migration.version)
            .collect()
    }

    async fn connect(url: &str, _config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        PgPoolOptions::new().connect(url).await
    }

    async fn begin_write(
        pool: &Pool<Self>,
        lock_timeout: Duration,
    ) -> Result<Transaction<'static, Self>, sqlx::Error> {
        // One round trip: the lock timeout bounds the wait on a twin's claim (and any other
        // lock wait of this transaction), and vanishes with the transaction.
        let begin = format!(
            "BEGIN; SET LOCAL lock_timeout = {}",
            lock_timeout.as_millis().max(1)
        );
        pool.begin_with(AssertSqlSafe(begin)).await
    }

    shared_statements!();

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // serialization_failure, deadlock_detected
        matches!(error.code().as_deref(), Some("40001" | "40P01"))
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        // lock_not_available
        error.code().as_deref() == Some("55P03")
    }
}

impl sealed::Protocol for Sqlite {
    type DriverError = SqliteError;

    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        with_own_table(sqlx::migrate!("./migrations/sqlite"))
            .run(pool)
            .await
    }

    fn migration_versions() -> Vec<i64> {
        sqlx::migrate!("./migrations/sqlite")
            .iter()
            .map(|migration| migration.version)
            .collect()
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(config.lock_timeout())
            .foreign_keys(true);
        SqlitePoolOptions::new().connect_with(options).await
    }

    async fn begin_write(
        pool: &Pool<Self>,
        _lock_timeout: Duration,
    ) -> Result<Transaction<'static, Self>, sqlx::Error> {
        // IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so the
        // transaction never has to upgrade a read lock, which SQLite answers with SQLITE_BUSY
        // at once instead of waiting.
        pool.begin_with("BEGIN IMMEDIATE").await
    }

    shared_statements!();

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // The primary result code of an extended one is its low byte: SQLITE_BUSY, SQLITE_LOCKED.
        let primary = error
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .map(|code| code & 0xff);
        matches!(primary, Some(5 | 6))
    }

    fn is_lock_timeout(_error: &dyn DatabaseError) -> bool {
        // One writer at a time: a claim never waits on its twin's row, only on the write lock,
        // and a busy write lock is transient.
        false
    }
}
