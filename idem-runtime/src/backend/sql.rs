//! The statements every database shares, and the macro that implements them once per
//! database (only the types differ).

use super::Dialect;
use crate::audit::sql::Placeholders;

/// A statement that reads the database's clock, in each dialect's words. Expiry and takeover
/// are decided by the one clock that every application node shares, never by a node's own.
pub(crate) struct DialectSql {
    pub(crate) postgres: &'static str,
    pub(crate) sqlite: &'static str,
}

impl DialectSql {
    pub(crate) fn get(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => self.postgres,
            Dialect::Sqlite => self.sqlite,
        }
    }
}

/// Concatenates SQL text, writing `NOW` as the given dialect's clock in Unix milliseconds.
macro_rules! sql_with_now {
    ($now:literal; $($part:tt)*) => { concat!($($crate::backend::sql_with_now!(@part $now $part)),*) };
    (@part $now:literal NOW) => { $now };
    (@part $now:literal $text:literal) => { $text };
}

/// A [`DialectSql`] from SQL text in which `NOW` is the database's clock: `idem_now_ms()` on
/// PostgreSQL (a migration defines it on `clock_timestamp()`), `julianday('now')` on SQLite
/// (whose database lives on the application's own host).
macro_rules! dialect_sql {
    ($($part:tt)*) => {
        $crate::backend::DialectSql {
            postgres: $crate::backend::sql_with_now!("idem_now_ms()"; $($part)*),
            sqlite: $crate::backend::sql_with_now!("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"; $($part)*),
        }
    };
}

/// The committed record of a key, unless it is older than the retention (`$4`, in ms).
pub(crate) const FIND_RECORD: DialectSql = dialect_sql!("\
SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3 AND created_at_ms > " NOW " - $4");

/// Inserts the key row, or takes over one older than the retention (`$7`, in ms). On a live
/// twin's uncommitted row it waits for the twin (the unique index serializes them); on a
/// committed live row it returns no row.
pub(crate) const CLAIM: DialectSql = dialect_sql!("\
INSERT INTO idempotency_keys
    (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, " NOW ")
ON CONFLICT (tenant_id, operation, idempotency_key) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    entity_id = excluded.entity_id,
    attempt_id = excluded.attempt_id,
    created_at_ms = excluded.created_at_ms,
    response_status = NULL,
    response_headers = NULL,
    response_body = NULL
WHERE idempotency_keys.created_at_ms <= " NOW " - $7
RETURNING attempt_id");

#[cfg(feature = "sqlite")]
pub(crate) const STORE_RESPONSE: &str = "\
UPDATE idempotency_keys
SET response_status = $4, response_headers = $5, response_body = $6
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3";

pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _idem_migrations WHERE success";

pub(crate) const RECORD_EVENT: &str = "\
INSERT INTO idem_outbox (event_id, tenant_id, operation, entity_id, topic, payload, created_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The oldest events due for delivery: neither delivered, parked, nor backing off.
pub(crate) const DUE_EVENTS: &str = "\
SELECT event_id, tenant_id, operation, entity_id, topic, payload, attempts
FROM idem_outbox
WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= $1
ORDER BY next_attempt_at_ms, created_at_ms, event_id
LIMIT $2";

/// Counts a failed delivery, schedules the next one, and parks the event once it has failed
/// `$4` times (`SET` reads the row's old `attempts`); returns `parked_at_ms`.
pub(crate) const RECORD_DELIVERY_FAILURE: &str = "\
UPDATE idem_outbox
SET attempts = attempts + 1,
    last_error = $2,
    next_attempt_at_ms = $3,
    parked_at_ms = CASE WHEN attempts + 1 >= $4 THEN $5 ELSE NULL END
WHERE event_id = $1 AND delivered_at_ms IS NULL AND parked_at_ms IS NULL
RETURNING parked_at_ms";

pub(crate) const PARKED_EVENTS: &str = "\
SELECT event_id, tenant_id, operation, topic, attempts, last_error, created_at_ms, parked_at_ms
FROM idem_outbox
WHERE parked_at_ms IS NOT NULL
ORDER BY parked_at_ms, event_id
LIMIT $1";

pub(crate) const REQUEUE_PARKED: &str = "\
UPDATE idem_outbox SET parked_at_ms = NULL, attempts = 0, next_attempt_at_ms = 0
WHERE event_id = $1 AND parked_at_ms IS NOT NULL";

/// Pending and parked events, and when the oldest pending one was recorded.
pub(crate) const OUTBOX_BACKLOG: &str = "\
SELECT
    COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 0 ELSE 1 END), 0),
    MIN(CASE WHEN parked_at_ms IS NULL THEN created_at_ms END)
FROM idem_outbox
WHERE delivered_at_ms IS NULL";

/// One bounded batch of delivered events past their retention.
pub(crate) const PURGE_DELIVERED: &str = "\
DELETE FROM idem_outbox WHERE event_id IN (
    SELECT event_id FROM idem_outbox
    WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < $1
    LIMIT $2
)";

pub(crate) const MARK_DELIVERED: &str =
    "UPDATE idem_outbox SET delivered_at_ms = $1 WHERE event_id = $2 AND delivered_at_ms IS NULL";

/// How these statements write their parameters.
pub(crate) const PLACEHOLDERS: Placeholders = Placeholders::Numbered;

/// One bounded batch (`$2` rows) of keys older than the retention (`$1`, in ms).
pub(crate) const PURGE_EXPIRED: DialectSql = dialect_sql!("\
DELETE FROM idempotency_keys WHERE (tenant_id, operation, idempotency_key) IN (
    SELECT tenant_id, operation, idempotency_key FROM idempotency_keys
    WHERE created_at_ms <= " NOW " - $1
    LIMIT $2
)");

/// PostgreSQL's `undefined_table`, or SQLite's "no such table".
pub(crate) fn is_missing_table(error: &dyn sqlx::error::DatabaseError) -> bool {
    error.code().as_deref() == Some("42P01") || error.message().starts_with("no such table")
}

/// Binds the key's scope and the response, in the parameter order of [`STORE_RESPONSE`].
macro_rules! bind_response {
    ($query:expr, $scope:expr, $response:expr) => {{
        let (scope, response) = ($scope, $response);
        serde_json::to_string(&response.headers)
            .map_err(|e| sqlx::Error::Encode(e.into()))
            .map(|headers| {
                $query
                    .bind(scope.tenant.as_str())
                    .bind(scope.operation)
                    .bind(scope.key.as_str())
                    .bind(i32::from(response.status))
                    .bind(headers)
                    .bind(response.body.as_slice())
            })
    }};
}

/// The same statements on each backend; only the types differ.
macro_rules! shared_statements {
    () => {
        async fn find_record(
            conn: &mut Self::Connection,
            statements: Statements,
            scope: &KeyScope<'_>,
            retention_ms: i64,
        ) -> Result<Option<KeyRecord>, sqlx::Error> {
            sqlx::query_as::<_, RecordRow>(FIND_RECORD.get(Self::dialect(conn)))
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
            let claimed = sqlx::query_scalar::<_, i64>(CLAIM.get(Self::dialect(tx)))
                .persistent(statements.persistent())
                .bind(claim.scope.tenant.as_str())
                .bind(claim.scope.operation)
                .bind(claim.scope.key.as_str())
                .bind(claim.fingerprint.to_stored())
                .bind(
                    &*claim
                        .entity_id
                        .hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer()),
                )
                .bind(claim.attempt_id)
                .bind(claim.retention_ms)
                .fetch_optional(&mut **tx)
                .await?;
            Ok(claimed.is_some())
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
                // The table does not exist: nothing was applied. Any other failure (no
                // permission, no connection) is reported as what it is.
                Err(sqlx::Error::Database(error)) if is_missing_table(error.as_ref()) => {
                    Ok(Vec::new())
                }
                applied => applied,
            }
        }

        async fn record_event(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            event: &OutboxRecord<'_>,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(RECORD_EVENT)
                .persistent(statements.persistent())
                .bind(
                    &*event
                        .event_id
                        .hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer()),
                )
                .bind(event.tenant.as_str())
                .bind(event.operation)
                .bind(
                    &*event
                        .entity_id
                        .hyphenated()
                        .encode_lower(&mut Uuid::encode_buffer()),
                )
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
                sqlx::query_scalar(RECORD_DELIVERY_FAILURE)
                    .persistent(statements.persistent())
                    .bind(failure.event_id)
                    .bind(failure.error)
                    .bind(failure.next_attempt_at_ms)
                    .bind(failure.park_after)
                    .bind(failure.now_ms)
                    .fetch_optional(conn)
                    .await?
            });
            Ok(matches!(parked, Some(Some(_))))
        }

        async fn purge_audit(
            pool: &Pool<Self>,
            statements: Statements,
            older_than_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            if Self::pool_dialect(pool) == Dialect::Postgres {
                let purged: i64 = in_session!(pool, statements, |conn| {
                    sqlx::query_scalar(PURGE_AUDIT_AS_OWNER)
                        .persistent(statements.persistent())
                        .bind(older_than_ms)
                        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                        .fetch_one(conn)
                        .await?
                });
                return Ok(u64::try_from(purged).unwrap_or(0));
            }
            let mut tx = pool.begin().await?;
            sqlx::query(OPEN_AUDIT_MAINTENANCE.get(Dialect::Sqlite))
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

        async fn purge_expired(
            pool: &Pool<Self>,
            statements: Statements,
            retention_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(PURGE_EXPIRED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(retention_ms)
                    .bind(limit)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected())
        }
    };
}

pub(crate) use {bind_response, dialect_sql, shared_statements, sql_with_now};
