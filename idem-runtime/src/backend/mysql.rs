//! MySQL 8 and MariaDB 10.6+ (InnoDB): the same protocol in MySQL's words.
//!
//! What differs from PostgreSQL, and how the protocol meets it:
//!
//! - Parameters are `?`, bound in the order they appear, and there is no `RETURNING` on
//!   `UPDATE` (none at all on MySQL): each statement here is written for its own bind order.
//! - There is no `ON CONFLICT ... DO UPDATE ... WHERE`. The claim is `INSERT ... ON DUPLICATE
//!   KEY UPDATE` whose first assignment takes the row over only if it expired and hands the
//!   row's `attempt_id` to `LAST_INSERT_ID(expr)`, which the server returns with the result: the
//!   attempt's own id means it holds the key, another id a committed twin's (MySQL and MariaDB
//!   alike; neither's `RETURNING` serves here). The other assignments follow the first, since
//!   MySQL assigns left to right and later expressions read the new values.
//! - A write transaction runs at READ COMMITTED, as on PostgreSQL: no gap or next-key locks on
//!   the keys' unique index between twins of different keys, and the read after a lost claim
//!   sees the winner's commit. A twin's uncommitted row makes the claim wait, at most
//!   `innodb_lock_wait_timeout` (the lock timeout, in whole seconds): error 1205 is a twin in
//!   flight; a deadlock (1213) is rolled back by the server and retried.
//! - The database's clock is `UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3))`, in UTC: every connection
//!   idem opens sets `time_zone = '+00:00'`.
//! - DDL commits implicitly: each migration is idempotent per table, and the migrator records
//!   each one only after it ran.

use std::error::Error as StdError;
use std::str::FromStr;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, MySql, Pool, Transaction};
use uuid::Uuid;

use super::*;
use crate::audit::sql::{CLOSE_AUDIT_MAINTENANCE, Placeholders, append_audit_rows, bind_audit};

/// The database's clock in Unix milliseconds.
macro_rules! now_ms {
    () => {
        "CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)"
    };
}

const FIND_RECORD: &str = concat!(
    "SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = ? AND operation = ? AND idempotency_key = ? AND created_at_ms > ",
    now_ms!(),
    " - ?"
);

/// Binds tenant, operation, key, fingerprint, entity id, attempt id, then the retention (ms).
const CLAIM: &str = concat!(
    "INSERT INTO idempotency_keys
    (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms)
VALUES (?, ?, ?, ?, ?, ?, ",
    now_ms!(),
    ")
ON DUPLICATE KEY UPDATE
    attempt_id = LAST_INSERT_ID(IF(created_at_ms <= ",
    now_ms!(),
    " - ?, VALUES(attempt_id), attempt_id)),
    fingerprint = IF(attempt_id = VALUES(attempt_id), VALUES(fingerprint), fingerprint),
    entity_id = IF(attempt_id = VALUES(attempt_id), VALUES(entity_id), entity_id),
    response_status = IF(attempt_id = VALUES(attempt_id), NULL, response_status),
    response_headers = IF(attempt_id = VALUES(attempt_id), NULL, response_headers),
    response_body = IF(attempt_id = VALUES(attempt_id), NULL, response_body),
    created_at_ms = IF(attempt_id = VALUES(attempt_id), VALUES(created_at_ms), created_at_ms)"
);

const STORE_RESPONSE: &str = "\
UPDATE idempotency_keys
SET response_status = ?, response_headers = ?, response_body = ?
WHERE tenant_id = ? AND operation = ? AND idempotency_key = ?";

const APPLIED_MIGRATIONS: &str = "SELECT version FROM _idem_migrations WHERE success";

const RECORD_EVENT: &str = "\
INSERT INTO idem_outbox (event_id, tenant_id, operation, entity_id, topic, payload, created_at_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)";

const DUE_EVENTS: &str = "\
SELECT event_id, tenant_id, operation, entity_id, topic, payload, attempts
FROM idem_outbox
WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= ?
ORDER BY next_attempt_at_ms, created_at_ms, event_id
LIMIT ?";

/// Binds the error, the next attempt's instant, the failures that park, now, the event id.
/// `parked_at_ms` is assigned before `attempts`, since MySQL's later assignments would read the
/// incremented count.
const RECORD_DELIVERY_FAILURE: &str = "\
UPDATE idem_outbox
SET last_error = ?,
    next_attempt_at_ms = ?,
    parked_at_ms = CASE WHEN attempts + 1 >= ? THEN ? ELSE NULL END,
    attempts = attempts + 1
WHERE event_id = ? AND delivered_at_ms IS NULL AND parked_at_ms IS NULL";

const PARKED_AT: &str = "SELECT parked_at_ms FROM idem_outbox WHERE event_id = ?";

const PARKED_EVENTS: &str = "\
SELECT event_id, tenant_id, operation, topic, attempts, last_error, created_at_ms, parked_at_ms
FROM idem_outbox
WHERE parked_at_ms IS NOT NULL
ORDER BY parked_at_ms, event_id
LIMIT ?";

const REQUEUE_PARKED: &str = "\
UPDATE idem_outbox SET parked_at_ms = NULL, attempts = 0, next_attempt_at_ms = 0
WHERE event_id = ? AND parked_at_ms IS NOT NULL";

/// `SUM` of integers is a DECIMAL on MySQL: cast back to a BIGINT.
const OUTBOX_BACKLOG: &str = "\
SELECT
    CAST(COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 1 ELSE 0 END), 0) AS SIGNED),
    CAST(COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 0 ELSE 1 END), 0) AS SIGNED),
    MIN(CASE WHEN parked_at_ms IS NULL THEN created_at_ms END)
FROM idem_outbox
WHERE delivered_at_ms IS NULL";

const PURGE_DELIVERED: &str = "\
DELETE FROM idem_outbox WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < ? LIMIT ?";

/// How these statements write their parameters.
const PLACEHOLDERS: Placeholders = Placeholders::Positional;

const MARK_DELIVERED: &str =
    "UPDATE idem_outbox SET delivered_at_ms = ? WHERE event_id = ? AND delivered_at_ms IS NULL";

const PURGE_EXPIRED: &str = concat!(
    "DELETE FROM idempotency_keys WHERE created_at_ms <= ",
    now_ms!(),
    " - ? LIMIT ?"
);

const OPEN_AUDIT_MAINTENANCE: &str = concat!(
    "INSERT INTO idempotent_write_audit_maintenance (horizon_ms) VALUES (",
    now_ms!(),
    " - ?)"
);

const PURGE_AUDIT_BATCH: &str = "\
DELETE FROM idempotent_write_audit_log
WHERE created_at_ms < (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance)
ORDER BY created_at_ms
LIMIT ?";

/// idem's migrations for MySQL, tracked in their own table.
fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/mysql");
    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
    migrator
}

/// One round trip: the lock timeout (whole seconds, at least one) bounds the wait on a twin's
/// claim, and the transaction runs at READ COMMITTED.
fn mysql_begin(lock_timeout: Duration) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "SET SESSION innodb_lock_wait_timeout = {}; \
         SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION",
        lock_timeout.as_millis().div_ceil(1000).max(1)
    ))
}

/// The MySQL error number of a database error, if it is MySQL's.
fn error_number(error: &dyn DatabaseError) -> Option<u16> {
    error
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
}

fn hyphenated(id: Uuid) -> String {
    id.hyphenated().to_string()
}

impl sealed::Protocol for MySql {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        migrator().run(pool).await
    }

    fn migration_versions(_pool: &Pool<Self>) -> Vec<i64> {
        migrator()
            .iter()
            .map(|migration| migration.version)
            .collect()
    }

    async fn applied_migrations(
        pool: &Pool<Self>,
        statements: Statements,
    ) -> Result<Vec<i64>, sqlx::Error> {
        let applied = in_session!(pool, statements, |conn| {
            sqlx::query_scalar::<_, i64>(APPLIED_MIGRATIONS)
                .persistent(statements.persistent())
                .fetch_all(conn)
                .await
        });
        match applied {
            // ER_NO_SUCH_TABLE: nothing was applied.
            Err(sqlx::Error::Database(error)) if error_number(error.as_ref()) == Some(1146) => {
                Ok(Vec::new())
            }
            applied => applied,
        }
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        let options = MySqlConnectOptions::from_str(url)?.timezone(Some("+00:00".to_owned()));
        MySqlPoolOptions::new()
            .acquire_timeout(config.acquire_timeout())
            .connect_with(options)
            .await
    }

    async fn begin_write<'c>(
        conn: &'c mut Self::Connection,
        _statements: Statements,
        lock_timeout: Duration,
        _tenant: &TenantId,
    ) -> Result<Transaction<'c, Self>, sqlx::Error> {
        conn.begin_with(mysql_begin(lock_timeout)).await
    }

    async fn begin_for(
        pool: &Pool<Self>,
        _statements: Statements,
        _tenant: &TenantId,
    ) -> Result<Transaction<'static, Self>, sqlx::Error> {
        pool.begin().await
    }

    async fn find_record(
        conn: &mut Self::Connection,
        statements: Statements,
        scope: &KeyScope<'_>,
        retention_ms: i64,
    ) -> Result<Option<KeyRecord>, sqlx::Error> {
        sqlx::query_as::<_, RecordRow>(FIND_RECORD)
            .persistent(statements.persistent())
            .bind(scope.tenant.as_str())
            .bind(scope.operation)
            .bind(scope.key.as_str())
            .bind(retention_ms)
            .fetch_optional(conn)
            .await?
            .map(decode_record)
            .transpose()
    }

    async fn claim(
        tx: &mut Transaction<'_, Self>,
        statements: Statements,
        claim: &Claim<'_>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(CLAIM)
            .persistent(statements.persistent())
            .bind(claim.scope.tenant.as_str())
            .bind(claim.scope.operation)
            .bind(claim.scope.key.as_str())
            .bind(claim.fingerprint.to_stored())
            .bind(hyphenated(claim.entity_id))
            .bind(claim.attempt_id)
            .bind(claim.retention_ms)
            .execute(&mut **tx)
            .await?;
        // A fresh insert sets no LAST_INSERT_ID (the table has no AUTO_INCREMENT column); a
        // conflict sets it to the row's attempt id after the update: ours if it took over.
        let holder = done.last_insert_id();
        Ok(holder == 0 || holder == claim.attempt_id.cast_unsigned())
    }

    async fn purge_expired(
        pool: &Pool<Self>,
        statements: Statements,
        retention_ms: i64,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        let done = in_session!(pool, statements, |conn| {
            sqlx::query(PURGE_EXPIRED)
                .persistent(statements.persistent())
                .bind(retention_ms)
                .bind(limit)
                .execute(conn)
                .await?
        });
        Ok(done.rows_affected())
    }

    async fn record_event(
        tx: &mut Transaction<'_, Self>,
        statements: Statements,
        event: &OutboxRecord<'_>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(RECORD_EVENT)
            .persistent(statements.persistent())
            .bind(hyphenated(event.event_id))
            .bind(event.tenant.as_str())
            .bind(event.operation)
            .bind(hyphenated(event.entity_id))
            .bind(event.topic)
            .bind(event.payload)
            .bind(event.now_ms)
            .execute(&mut **tx)
            .await
            .map(drop)
    }

    pool_statements!();

    async fn record_delivery_failure(
        pool: &Pool<Self>,
        statements: Statements,
        failure: &DeliveryFailure<'_>,
    ) -> Result<bool, sqlx::Error> {
        let parked: Option<Option<i64>> = in_session!(pool, statements, |conn| {
            let done = sqlx::query(RECORD_DELIVERY_FAILURE)
                .persistent(statements.persistent())
                .bind(failure.error)
                .bind(failure.next_attempt_at_ms)
                .bind(failure.park_after)
                .bind(failure.now_ms)
                .bind(failure.event_id)
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                None
            } else {
                sqlx::query_scalar(PARKED_AT)
                    .persistent(statements.persistent())
                    .bind(failure.event_id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
        });
        Ok(matches!(parked, Some(Some(_))))
    }

    async fn record_write(
        tx: &mut Transaction<'_, Self>,
        statements: Statements,
        scope: &KeyScope<'_>,
        response: &StoredResponse,
        audit: &AuditRecord,
    ) -> Result<(), sqlx::Error> {
        let headers =
            serde_json::to_string(&response.headers).map_err(|e| sqlx::Error::Encode(e.into()))?;
        sqlx::query(STORE_RESPONSE)
            .persistent(statements.persistent())
            .bind(i32::from(response.status))
            .bind(headers)
            .bind(response.body.as_slice())
            .bind(scope.tenant.as_str())
            .bind(scope.operation)
            .bind(scope.key.as_str())
            .execute(&mut **tx)
            .await?;
        bind_audit!(
            sqlx::query(append_audit_rows(1, Placeholders::Positional)).persistent(false),
            audit
        )
        .execute(&mut **tx)
        .await
        .map(drop)
    }

    async fn purge_audit(
        pool: &Pool<Self>,
        _statements: Statements,
        older_than_ms: i64,
        limit: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query(OPEN_AUDIT_MAINTENANCE)
            .bind(older_than_ms)
            .execute(&mut *tx)
            .await?;
        let purged = sqlx::query(PURGE_AUDIT_BATCH)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(CLOSE_AUDIT_MAINTENANCE)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(purged)
    }

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        error
            .downcast_ref::<MySqlDatabaseError>()
            .map(|error| error as &dyn DatabaseError)
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // ER_LOCK_DEADLOCK (the server rolled the transaction back), and MariaDB's
        // ER_CHECKREAD ("record has changed since last read").
        matches!(error_number(error), Some(1213 | 1020))
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        // ER_LOCK_WAIT_TIMEOUT
        error_number(error) == Some(1205)
    }
}
