//! The protocol's statements in each dialect's words, and the macro that implements them once
//! per database (only the types differ).
//!
//! PostgreSQL and SQLite share their text (`$n` parameters, `ON CONFLICT ... DO UPDATE ...
//! WHERE`, `RETURNING`) but for the database's clock. MySQL's text binds the same values in the
//! same order, with `?` parameters, and says what it lacks in its own words (see
//! [`super::mysql`]). Where the dialects differ in more than words, the statement's function
//! branches on the [`Dialect`] of the connection at hand, which is how [`Any`](sqlx::Any)
//! serves all three.

use super::Dialect;

/// One statement in each dialect's words. Expiry and takeover are decided by the one clock that
/// every application node shares, the database's, never by a node's own.
pub(crate) struct DialectSql {
    #[cfg(feature = "postgres")]
    pub(crate) postgres: &'static str,
    #[cfg(feature = "sqlite")]
    pub(crate) sqlite: &'static str,
    #[cfg(feature = "mysql")]
    pub(crate) mysql: &'static str,
}

impl DialectSql {
    pub(crate) fn get(&self, dialect: Dialect) -> &'static str {
        match dialect {
            #[cfg(feature = "postgres")]
            Dialect::Postgres => self.postgres,
            #[cfg(feature = "sqlite")]
            Dialect::Sqlite => self.sqlite,
            #[cfg(feature = "mysql")]
            Dialect::MySql => self.mysql,
        }
    }
}

/// Concatenates SQL text, writing `NOW` as the given dialect's clock in Unix milliseconds.
macro_rules! sql_with_now {
    ($now:literal; $($part:tt)*) => { concat!($($crate::backend::sql_with_now!(@part $now $part)),*) };
    (@part $now:literal NOW) => { $now };
    (@part $now:literal $text:literal) => { $text };
}

/// A [`DialectSql`] from PostgreSQL's and SQLite's shared text and MySQL's, in which `NOW` is
/// the database's clock: `idem_now_ms()` on PostgreSQL (a migration defines it on
/// `clock_timestamp()`), `julianday('now')` on SQLite (whose database lives on the
/// application's own host), `CURRENT_TIMESTAMP(3)` on MySQL (whose sessions idem sets to UTC).
macro_rules! dialect_sql {
    ([$($shared:tt)*], mysql: [$($mysql:tt)*]) => {
        $crate::backend::DialectSql {
            #[cfg(feature = "postgres")]
            postgres: $crate::backend::sql_with_now!("idem_now_ms()"; $($shared)*),
            #[cfg(feature = "sqlite")]
            sqlite: $crate::backend::sql_with_now!(
                "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"; $($shared)*
            ),
            #[cfg(feature = "mysql")]
            mysql: $crate::backend::sql_with_now!(
                "CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)"; $($mysql)*
            ),
        }
    };
    (shared: $shared:expr, mysql: $mysql:expr) => {
        $crate::backend::DialectSql {
            #[cfg(feature = "postgres")]
            postgres: $shared,
            #[cfg(feature = "sqlite")]
            sqlite: $shared,
            #[cfg(feature = "mysql")]
            mysql: $mysql,
        }
    };
}

/// The committed record of a key: tenant, operation, key, then the retention (ms); a row older
/// than the retention is no record.
pub(crate) const FIND_RECORD: DialectSql = dialect_sql!(
    ["SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3 AND created_at_ms > " NOW " - $4"],
    mysql: ["SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = ? AND operation = ? AND idempotency_key = ? AND created_at_ms > " NOW " - ?"]
);

/// Inserts the key row (tenant, operation, key, fingerprint, entity id, attempt id), or takes
/// over one older than the retention (the last value, in ms). On a live twin's uncommitted row
/// it waits for the twin (the unique index serializes them).
///
/// PostgreSQL and SQLite return the row's `attempt_id` when this attempt holds the key, no row
/// on a committed live one. MySQL has no `ON CONFLICT ... WHERE`: the first assignment of `ON
/// DUPLICATE KEY UPDATE` takes the row over only if it expired, and hands the row's
/// `attempt_id` to `LAST_INSERT_ID(expr)`, which the server returns with the result (this
/// attempt's id: it holds the key; another: a committed twin's; a fresh insert sets none). The
/// other assignments follow the first, since MySQL assigns left to right and later expressions
/// read the new values.
pub(crate) const CLAIM: DialectSql = dialect_sql!(
    ["INSERT INTO idempotency_keys
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
RETURNING attempt_id"],
    mysql: ["INSERT INTO idempotency_keys
    (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms)
VALUES (?, ?, ?, ?, ?, ?, " NOW ")
ON DUPLICATE KEY UPDATE
    attempt_id = LAST_INSERT_ID(IF(created_at_ms <= " NOW " - ?, VALUES(attempt_id), attempt_id)),
    fingerprint = IF(attempt_id = VALUES(attempt_id), VALUES(fingerprint), fingerprint),
    entity_id = IF(attempt_id = VALUES(attempt_id), VALUES(entity_id), entity_id),
    response_status = IF(attempt_id = VALUES(attempt_id), NULL, response_status),
    response_headers = IF(attempt_id = VALUES(attempt_id), NULL, response_headers),
    response_body = IF(attempt_id = VALUES(attempt_id), NULL, response_body),
    created_at_ms = IF(attempt_id = VALUES(attempt_id), VALUES(created_at_ms), created_at_ms)"]
);

/// Stores the response (status, headers, body) on the key row (tenant, operation, key).
pub(crate) const STORE_RESPONSE: DialectSql = dialect_sql!(
    ["UPDATE idempotency_keys
SET response_status = $1, response_headers = $2, response_body = $3
WHERE tenant_id = $4 AND operation = $5 AND idempotency_key = $6"],
    mysql: ["UPDATE idempotency_keys
SET response_status = ?, response_headers = ?, response_body = ?
WHERE tenant_id = ? AND operation = ? AND idempotency_key = ?"]
);

pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _idem_migrations WHERE success";

pub(crate) const RECORD_EVENT: DialectSql = dialect_sql!(
    ["INSERT INTO idem_outbox (event_id, tenant_id, operation, entity_id, topic, payload, created_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7)"],
    mysql: ["INSERT INTO idem_outbox (event_id, tenant_id, operation, entity_id, topic, payload, created_at_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)"]
);

/// The oldest events due for delivery at an instant: neither delivered, parked, nor backing off.
pub(crate) const DUE_EVENTS: DialectSql = dialect_sql!(
    ["SELECT event_id, tenant_id, operation, entity_id, topic, payload, attempts
FROM idem_outbox
WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= $1
ORDER BY next_attempt_at_ms, created_at_ms, event_id
LIMIT $2"],
    mysql: ["SELECT event_id, tenant_id, operation, entity_id, topic, payload, attempts
FROM idem_outbox
WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= ?
ORDER BY next_attempt_at_ms, created_at_ms, event_id
LIMIT ?"]
);

/// Counts a failed delivery (error, next attempt's instant), and parks the event at `now` once
/// it has failed `park_after` times; then the event id. `SET` reads the row's old `attempts` on
/// PostgreSQL and SQLite; MySQL's later assignments would read the new count, so it assigns
/// `parked_at_ms` first.
pub(crate) const RECORD_DELIVERY_FAILURE: DialectSql = dialect_sql!(
    ["UPDATE idem_outbox
SET attempts = attempts + 1,
    last_error = $1,
    next_attempt_at_ms = $2,
    parked_at_ms = CASE WHEN attempts + 1 >= $3 THEN $4 ELSE NULL END
WHERE event_id = $5 AND delivered_at_ms IS NULL AND parked_at_ms IS NULL"],
    mysql: ["UPDATE idem_outbox
SET last_error = ?,
    next_attempt_at_ms = ?,
    parked_at_ms = CASE WHEN attempts + 1 >= ? THEN ? ELSE NULL END,
    attempts = attempts + 1
WHERE event_id = ? AND delivered_at_ms IS NULL AND parked_at_ms IS NULL"]
);

pub(crate) const PARKED_AT: DialectSql = dialect_sql!(
    ["SELECT parked_at_ms FROM idem_outbox WHERE event_id = $1"],
    mysql: ["SELECT parked_at_ms FROM idem_outbox WHERE event_id = ?"]
);

pub(crate) const PARKED_EVENTS: DialectSql = dialect_sql!(
    ["SELECT event_id, tenant_id, operation, topic, attempts, last_error, created_at_ms, parked_at_ms
FROM idem_outbox
WHERE parked_at_ms IS NOT NULL
ORDER BY parked_at_ms, event_id
LIMIT $1"],
    mysql: ["SELECT event_id, tenant_id, operation, topic, attempts, last_error, created_at_ms, parked_at_ms
FROM idem_outbox
WHERE parked_at_ms IS NOT NULL
ORDER BY parked_at_ms, event_id
LIMIT ?"]
);

pub(crate) const REQUEUE_PARKED: DialectSql = dialect_sql!(
    ["UPDATE idem_outbox SET parked_at_ms = NULL, attempts = 0, next_attempt_at_ms = 0
WHERE event_id = $1 AND parked_at_ms IS NOT NULL"],
    mysql: ["UPDATE idem_outbox SET parked_at_ms = NULL, attempts = 0, next_attempt_at_ms = 0
WHERE event_id = ? AND parked_at_ms IS NOT NULL"]
);

/// Pending and parked events, and when the oldest pending one was recorded. `SUM` of integers
/// is a DECIMAL on MySQL: cast back to a BIGINT.
pub(crate) const OUTBOX_BACKLOG: DialectSql = dialect_sql!(
    ["SELECT
    COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 0 ELSE 1 END), 0),
    MIN(CASE WHEN parked_at_ms IS NULL THEN created_at_ms END)
FROM idem_outbox
WHERE delivered_at_ms IS NULL"],
    mysql: ["SELECT
    CAST(COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 1 ELSE 0 END), 0) AS SIGNED),
    CAST(COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 0 ELSE 1 END), 0) AS SIGNED),
    MIN(CASE WHEN parked_at_ms IS NULL THEN created_at_ms END)
FROM idem_outbox
WHERE delivered_at_ms IS NULL"]
);

/// One bounded batch of delivered events past their retention.
pub(crate) const PURGE_DELIVERED: DialectSql = dialect_sql!(
    ["DELETE FROM idem_outbox WHERE event_id IN (
    SELECT event_id FROM idem_outbox
    WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < $1
    LIMIT $2
)"],
    mysql: ["DELETE FROM idem_outbox WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < ? LIMIT ?"]
);

/// Marks an event delivered at an instant, unless a dispatcher did first.
pub(crate) const MARK_DELIVERED: DialectSql = dialect_sql!(
    ["UPDATE idem_outbox SET delivered_at_ms = $1 WHERE event_id = $2 AND delivered_at_ms IS NULL"],
    mysql: ["UPDATE idem_outbox SET delivered_at_ms = ? WHERE event_id = ? AND delivered_at_ms IS NULL"]
);

/// One bounded batch (the limit) of keys older than the retention (ms).
pub(crate) const PURGE_EXPIRED: DialectSql = dialect_sql!(
    ["DELETE FROM idempotency_keys WHERE (tenant_id, operation, idempotency_key) IN (
    SELECT tenant_id, operation, idempotency_key FROM idempotency_keys
    WHERE created_at_ms <= " NOW " - $1
    LIMIT $2
)"],
    mysql: ["DELETE FROM idempotency_keys WHERE created_at_ms <= " NOW " - ? LIMIT ?"]
);

/// PostgreSQL's `undefined_table`, MySQL's `ER_NO_SUCH_TABLE`, or SQLite's "no such table".
pub(crate) fn is_missing_table(error: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(error.code().as_deref(), Some("42P01" | "42S02"))
        || error.message().starts_with("no such table")
}

/// Binds the response and the key's scope, in the parameter order of [`STORE_RESPONSE`].
macro_rules! bind_response {
    ($query:expr, $scope:expr, $response:expr) => {{
        let (scope, response) = ($scope, $response);
        serde_json::to_string(&response.headers)
            .map_err(|e| sqlx::Error::Encode(e.into()))
            .map(|headers| {
                $query
                    .bind(i32::from(response.status))
                    .bind(headers)
                    .bind(response.body.as_slice())
                    .bind(scope.tenant.as_str())
                    .bind(scope.operation)
                    .bind(scope.key.as_str())
            })
    }};
}

/// The protocol's statements on every backend, each in the dialect of the connection at hand
/// ([`SqlDialect`](super::SqlDialect)); only the types differ.
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
            let dialect = Self::dialect(tx);
            let mut entity_id = Uuid::encode_buffer();
            let query = sqlx::query(CLAIM.get(dialect))
                .persistent(statements.persistent())
                .bind(claim.scope.tenant.as_str())
                .bind(claim.scope.operation)
                .bind(claim.scope.key.as_str())
                .bind(claim.fingerprint.to_stored())
                .bind(&*claim.entity_id.hyphenated().encode_lower(&mut entity_id))
                .bind(claim.attempt_id)
                .bind(claim.retention_ms);
            #[cfg(feature = "mysql")]
            if dialect == Dialect::MySql {
                let done = query.execute(&mut **tx).await?;
                return match Self::last_insert_id(&done) {
                    // No AUTO_INCREMENT column: a fresh insert sets none (0); a conflict sets
                    // the row's attempt id after the update, ours if this attempt took it over.
                    Some(holder) => Ok(holder == 0 || holder == claim.attempt_id.cast_unsigned()),
                    None => Err(sqlx::Error::Protocol(
                        "MySQL answered the claim without its LAST_INSERT_ID".into(),
                    )),
                };
            }
            Ok(query.fetch_optional(&mut **tx).await?.is_some())
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
            let (mut event_id, mut entity_id) = (Uuid::encode_buffer(), Uuid::encode_buffer());
            sqlx::query(RECORD_EVENT.get(Self::dialect(tx)))
                .persistent(statements.persistent())
                .bind(&*event.event_id.hyphenated().encode_lower(&mut event_id))
                .bind(event.tenant.as_str())
                .bind(event.operation)
                .bind(&*event.entity_id.hyphenated().encode_lower(&mut entity_id))
                .bind(event.topic)
                .bind(event.payload)
                .bind(event.now_ms)
                .execute(&mut **tx)
                .await
                .map(drop)
        }

        async fn due_events(
            pool: &Pool<Self>,
            statements: Statements,
            now_ms: i64,
            limit: i64,
        ) -> Result<Vec<EventRow>, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as::<_, EventRow>(DUE_EVENTS.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(conn)
                    .await?
            }))
        }

        async fn record_delivery_failure(
            pool: &Pool<Self>,
            statements: Statements,
            failure: &DeliveryFailure<'_>,
        ) -> Result<bool, sqlx::Error> {
            // Two statements (MySQL has no `RETURNING`): a failure is the rare path.
            let dialect = Self::pool_dialect(pool);
            let parked: Option<Option<i64>> = in_session!(pool, statements, |conn| {
                let done = sqlx::query(RECORD_DELIVERY_FAILURE.get(dialect))
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
                    sqlx::query_scalar(PARKED_AT.get(dialect))
                        .persistent(statements.persistent())
                        .bind(failure.event_id)
                        .fetch_optional(&mut *conn)
                        .await?
                }
            });
            Ok(matches!(parked, Some(Some(_))))
        }

        async fn parked_events(
            pool: &Pool<Self>,
            statements: Statements,
            limit: i64,
        ) -> Result<Vec<ParkedRow>, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as::<_, ParkedRow>(PARKED_EVENTS.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(limit)
                    .fetch_all(conn)
                    .await?
            }))
        }

        async fn requeue_parked(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
        ) -> Result<bool, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(REQUEUE_PARKED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(event_id)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected() == 1)
        }

        async fn outbox_backlog(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> Result<(i64, i64, Option<i64>), sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as(OUTBOX_BACKLOG.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .fetch_one(conn)
                    .await?
            }))
        }

        async fn purge_delivered(
            pool: &Pool<Self>,
            statements: Statements,
            before_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(PURGE_DELIVERED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(before_ms)
                    .bind(limit)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected())
        }

        async fn mark_delivered(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
            now_ms: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = in_session!(pool, statements, |conn| {
                sqlx::query(MARK_DELIVERED.get(Self::pool_dialect(pool)))
                    .persistent(statements.persistent())
                    .bind(now_ms)
                    .bind(event_id)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected() == 1)
        }

        async fn record_write(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            scope: &KeyScope<'_>,
            response: &StoredResponse,
            audit: &AuditRecord,
        ) -> Result<(), sqlx::Error> {
            let dialect = Self::dialect(tx);
            let persistent = statements.persistent();
            #[cfg(feature = "postgres")]
            if dialect == Dialect::Postgres {
                // One statement: a round trip saved on every new write.
                let query = sqlx::query(RECORD_WRITE_TOGETHER).persistent(persistent);
                let query = bind_response!(query, scope, response)?;
                bind_audit!(query, audit).execute(&mut **tx).await?;
                return Ok(());
            }
            // Two statements where a statement costs no round trip (SQLite) or the dialect
            // cannot say it in one (MySQL).
            let store = sqlx::query(STORE_RESPONSE.get(dialect)).persistent(persistent);
            bind_response!(store, scope, response)?
                .execute(&mut **tx)
                .await?;
            bind_audit!(
                sqlx::query(APPEND_AUDIT.get(dialect)).persistent(persistent),
                audit
            )
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        async fn append_audit_batch(
            pool: &Pool<Self>,
            statements: Statements,
            records: &[AuditRecord],
        ) -> Result<(), sqlx::Error> {
            let dialect = Self::pool_dialect(pool);
            in_session!(pool, statements, |conn| {
                // One text per batch size: not worth a prepared statement each.
                let mut insert =
                    sqlx::query(append_audit_rows(records.len(), dialect)).persistent(false);
                for record in records {
                    insert = bind_audit!(insert, record);
                }
                insert.execute(conn).await?
            });
            Ok(())
        }

        async fn purge_audit(
            pool: &Pool<Self>,
            statements: Statements,
            older_than_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let dialect = Self::pool_dialect(pool);
            #[cfg(feature = "postgres")]
            if dialect == Dialect::Postgres {
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
            // The maintenance transaction opens its horizon (the log's triggers let rows older
            // than it go), deletes one batch, and closes it.
            let mut tx = pool.begin().await?;
            sqlx::query(OPEN_AUDIT_MAINTENANCE.get(dialect))
                .persistent(statements.persistent())
                .bind(older_than_ms)
                .execute(&mut *tx)
                .await?;
            let purged = sqlx::query(PURGE_AUDIT_BATCH.get(dialect))
                .persistent(statements.persistent())
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query(CLOSE_AUDIT_MAINTENANCE)
                .persistent(statements.persistent())
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
