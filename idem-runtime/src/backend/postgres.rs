//! PostgreSQL: a write transaction bounds its lock waits with `lock_timeout`; serialization
//! failures and deadlocks are retried; the response and the audit row are one statement.

use std::error::Error as StdError;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgDatabaseError, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, Pool, Postgres, Transaction};
use uuid::Uuid;

use super::sql::*;
use super::*;
use crate::audit::sql::*;

/// One round trip: the lock timeout bounds the wait on a twin's claim (and any other lock wait
/// of the transaction), and vanishes with the transaction.
pub(super) fn postgres_begin(lock_timeout: Duration) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "BEGIN; SET LOCAL lock_timeout = {}",
        lock_timeout.as_millis().max(1)
    ))
}

impl sealed::Protocol for Postgres {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        Dialect::Postgres.migrator().run(pool).await
    }

    fn migration_versions(_pool: &Pool<Self>) -> Vec<i64> {
        Dialect::Postgres.migration_versions()
    }

    async fn connect(url: &str, _config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        PgPoolOptions::new().connect(url).await
    }

    fn dialect(_conn: &Self::Connection) -> Dialect {
        Dialect::Postgres
    }

    fn pool_dialect(_pool: &Pool<Self>) -> Dialect {
        Dialect::Postgres
    }

    async fn begin_write(
        conn: &mut Self::Connection,
        lock_timeout: Duration,
    ) -> Result<Transaction<'_, Self>, sqlx::Error> {
        conn.begin_with(postgres_begin(lock_timeout)).await
    }

    shared_statements!();

    async fn record_write(
        tx: &mut Transaction<'_, Self>,
        scope: &KeyScope<'_>,
        response: &StoredResponse,
        audit: &AuditRecord,
    ) -> Result<(), sqlx::Error> {
        record_write_together!(tx, scope, response, audit)
    }

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        error
            .downcast_ref::<PgDatabaseError>()
            .map(|error| error as &dyn DatabaseError)
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // serialization_failure, deadlock_detected
        matches!(error.code().as_deref(), Some("40001" | "40P01"))
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        // lock_not_available
        error.code().as_deref() == Some("55P03")
    }
}
