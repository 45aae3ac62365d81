//! The SQL of the write protocol, once per database.
//!
//! The statements are the same text on PostgreSQL and SQLite (both accept `$n` parameters,
//! `ON CONFLICT ... DO UPDATE ... WHERE` and `RETURNING`); what differs is how a write
//! transaction begins, which errors are worth retrying, and the migrations.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::error::DatabaseError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgDatabaseError, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Any, AssertSqlSafe, Connection as _, Pool, Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::observe::WriteOutcome;
use crate::{Fingerprint, IdempotencyKey, Operation, StoreConfig, StoredResponse, TenantId};

/// A database the write protocol runs on: [`Postgres`] or [`Sqlite`].
///
/// The trait is sealed: the protocol's correctness depends on each backend's locking, so a new
/// backend belongs in this crate, with its tests.
pub trait Backend: sealed::Protocol {}

impl Backend for Postgres {}
impl Backend for Sqlite {}
/// [`Any`] picks PostgreSQL or SQLite from the URL at run time, for an application whose
/// handlers run on either (the AnyConnection's types: integers, text, bytes).
impl Backend for Any {}

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
    /// A row older than this (by the database's clock) is expired and may be claimed again.
    pub retention_ms: i64,
}

/// What [`WriteContext::record_event`](crate::WriteContext::record_event) inserts.
pub struct OutboxRecord<'a> {
    pub event_id: Uuid,
    pub tenant: &'a TenantId,
    pub operation: &'static str,
    pub entity_id: Uuid,
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub now_ms: i64,
}

/// One row of the audit log, owned so it can be written after the request has been answered.
#[derive(Debug)]
pub struct AuditRecord {
    pub id: Uuid,
    pub operation: &'static Operation,
    pub tenant: TenantId,
    pub user: Option<String>,
    pub key_hash: String,
    pub entity_id: Uuid,
    pub fingerprint: Fingerprint,
    pub outcome: WriteOutcome,
    pub status: Option<u16>,
    pub attempts: u32,
    pub duration_ms: f64,
    pub request_id: Option<String>,
    pub now_ms: i64,
}

/// A committed key row.
pub struct KeyRecord {
    pub fingerprint: Vec<u8>,
    pub attempt_id: i64,
    pub response: StoredResponse,
}

/// The raw row of a committed key; the response columns are never NULL once committed.
type RecordRow = (Vec<u8>, i64, Option<i32>, Option<String>, Option<Vec<u8>>);

/// A statement that reads the database's clock, in each dialect's words. Expiry and takeover
/// are decided by the one clock that every application node shares, never by a node's own.
pub struct DialectSql {
    postgres: &'static str,
    sqlite: &'static str,
}

impl DialectSql {
    fn get(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => self.postgres,
            Dialect::Sqlite => self.sqlite,
        }
    }
}

/// Concatenates SQL text, writing `NOW` as the given dialect's clock in Unix milliseconds.
macro_rules! sql_with_now {
    ($now:literal; $($part:tt)*) => { concat!($(sql_with_now!(@part $now $part)),*) };
    (@part $now:literal NOW) => { $now };
    (@part $now:literal $text:literal) => { $text };
}

/// A [`DialectSql`] from SQL text in which `NOW` is the database's clock: `idem_now_ms()` on
/// PostgreSQL (a migration defines it on `clock_timestamp()`), `julianday('now')` on SQLite
/// (whose database lives on the application's own host).
macro_rules! dialect_sql {
    ($($part:tt)*) => {
        DialectSql {
            postgres: sql_with_now!("idem_now_ms()"; $($part)*),
            sqlite: sql_with_now!("CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"; $($part)*),
        }
    };
}

/// The committed record of a key, unless it is older than the retention (`$4`, in ms).
const FIND_RECORD: DialectSql = dialect_sql!("\
SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3 AND created_at_ms > " NOW " - $4");

/// Inserts the key row, or takes over one older than the retention (`$7`, in ms). On a live
/// twin's uncommitted row it waits for the twin (the unique index serializes them); on a
/// committed live row it returns no row.
const CLAIM: DialectSql = dialect_sql!("\
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

const STORE_RESPONSE: &str = "\
UPDATE idempotency_keys
SET response_status = $4, response_headers = $5, response_body = $6
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3";

/// `INSERT INTO` the audit log with its column list, in the order [`bind_audit!`] binds.
macro_rules! insert_audit {
    () => {
        "INSERT INTO idempotent_write_audit_log
    (id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint, outcome, status,
     failure, attempts, duration_ms, request_id, created_at_ms) "
    };
}

/// [`STORE_RESPONSE`] and [`APPEND_AUDIT`] in one statement, for PostgreSQL.
const RECORD_WRITE_TOGETHER: &str = concat!(
    "WITH stored AS (
    UPDATE idempotency_keys
    SET response_status = $4, response_headers = $5, response_body = $6
    WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3
    RETURNING 1
)
",
    insert_audit!(),
    "SELECT $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21 FROM stored"
);

const APPLIED_MIGRATIONS: &str = "SELECT version FROM _idem_migrations WHERE success";

const RECORD_EVENT: &str = "\
INSERT INTO idem_outbox (event_id, tenant_id, operation, entity_id, topic, payload, created_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// The oldest events due for delivery: neither delivered, parked, nor backing off.
const DUE_EVENTS: &str = "\
SELECT event_id, tenant_id, operation, entity_id, topic, payload, attempts
FROM idem_outbox
WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= $1
ORDER BY next_attempt_at_ms, created_at_ms, event_id
LIMIT $2";

/// Counts a failed delivery, schedules the next one, and parks the event once it has failed
/// `$4` times (`SET` reads the row's old `attempts`); returns `parked_at_ms`.
const RECORD_DELIVERY_FAILURE: &str = "\
UPDATE idem_outbox
SET attempts = attempts + 1,
    last_error = $2,
    next_attempt_at_ms = $3,
    parked_at_ms = CASE WHEN attempts + 1 >= $4 THEN $5 ELSE NULL END
WHERE event_id = $1 AND delivered_at_ms IS NULL AND parked_at_ms IS NULL
RETURNING parked_at_ms";

const PARKED_EVENTS: &str = "\
SELECT event_id, tenant_id, operation, topic, attempts, last_error, created_at_ms, parked_at_ms
FROM idem_outbox
WHERE parked_at_ms IS NOT NULL
ORDER BY parked_at_ms, event_id
LIMIT $1";

const REQUEUE_PARKED: &str = "\
UPDATE idem_outbox SET parked_at_ms = NULL, attempts = 0, next_attempt_at_ms = 0
WHERE event_id = $1 AND parked_at_ms IS NOT NULL";

/// Pending and parked events, and when the oldest pending one was recorded.
const OUTBOX_BACKLOG: &str = "\
SELECT
    COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 1 ELSE 0 END), 0),
    COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 0 ELSE 1 END), 0),
    MIN(CASE WHEN parked_at_ms IS NULL THEN created_at_ms END)
FROM idem_outbox
WHERE delivered_at_ms IS NULL";

/// One bounded batch of delivered events past their retention.
const PURGE_DELIVERED: &str = "\
DELETE FROM idem_outbox WHERE event_id IN (
    SELECT event_id FROM idem_outbox
    WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < $1
    LIMIT $2
)";

const MARK_DELIVERED: &str =
    "UPDATE idem_outbox SET delivered_at_ms = $2 WHERE event_id = $1 AND delivered_at_ms IS NULL";

const APPEND_AUDIT: &str = concat!(
    insert_audit!(),
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
);

/// The columns of [`insert_audit!`], which [`bind_audit!`] binds.
const AUDIT_COLUMNS: usize = 15;

/// [`APPEND_AUDIT`] for `rows` rows. The placeholders are numbered by hand: every backend,
/// `Any` on PostgreSQL included, reads `$n` (a `QueryBuilder<Any>` writes `?`, which
/// PostgreSQL refuses).
fn append_audit_rows(rows: usize) -> AssertSqlSafe<String> {
    let mut sql = String::from(insert_audit!());
    sql.push_str("VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..AUDIT_COLUMNS {
            let separator = if column == 0 { "" } else { ", " };
            let _ = write!(sql, "{separator}${}", row * AUDIT_COLUMNS + column + 1);
        }
        sql.push(')');
    }
    AssertSqlSafe(sql)
}

/// PostgreSQL: the owner's function purges one batch, never younger than the retention floor
/// (`idempotent_write_audit_settings`).
const PURGE_AUDIT_AS_OWNER: &str = "SELECT idempotent_write_audit_purge($1, $2)";

/// SQLite: the maintenance transaction opens its horizon (the triggers let rows older than it
/// go), deletes one batch, and closes it.
const OPEN_AUDIT_MAINTENANCE: DialectSql = dialect_sql!(
    "INSERT INTO idempotent_write_audit_maintenance (horizon_ms) VALUES (" NOW " - $1)"
);
const PURGE_AUDIT_BATCH: &str = "\
DELETE FROM idempotent_write_audit_log WHERE id IN (
    SELECT id FROM idempotent_write_audit_log
    WHERE created_at_ms < (SELECT MAX(horizon_ms) FROM idempotent_write_audit_maintenance)
    ORDER BY created_at_ms
    LIMIT $1
)";
const CLOSE_AUDIT_MAINTENANCE: &str = "DELETE FROM idempotent_write_audit_maintenance";

/// An outbox row as stored (ids as text), and its failed deliveries so far.
pub type EventRow = (String, String, String, String, String, Vec<u8>, i32);

/// A parked outbox row as stored: event id, tenant, operation, topic, attempts, last error,
/// recorded and parked instants.
pub type ParkedRow = (
    String,
    String,
    String,
    String,
    i32,
    Option<String>,
    i64,
    i64,
);

/// A failed delivery, as [`sealed::Protocol::record_delivery_failure`] writes it.
pub struct DeliveryFailure<'a> {
    pub event_id: &'a str,
    pub error: &'a str,
    pub next_attempt_at_ms: i64,
    /// The event is parked when this is its failed attempts' count; 0 parks it at once.
    pub park_after: i32,
    pub now_ms: i64,
}

/// One bounded batch (`$2` rows) of keys older than the retention (`$1`, in ms).
const PURGE_EXPIRED: DialectSql = dialect_sql!("\
DELETE FROM idempotency_keys WHERE (tenant_id, operation, idempotency_key) IN (
    SELECT tenant_id, operation, idempotency_key FROM idempotency_keys
    WHERE created_at_ms <= " NOW " - $1
    LIMIT $2
)");

pub(crate) mod sealed {
    use std::future::Future;

    use super::*;

    /// The backend-specific half of the protocol. Sealed: not nameable outside this crate.
    pub trait Protocol: sqlx::Database {
        /// Applies this backend's schema migrations, tracked in their own table
        /// ([`MIGRATIONS_TABLE`]) so they never mix with the application's.
        fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), MigrateError>> + Send;

        /// The versions of the migrations for this pool's database.
        fn migration_versions(pool: &Pool<Self>) -> Vec<i64>;

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
            conn: &mut Self::Connection,
            lock_timeout: Duration,
        ) -> impl Future<Output = Result<Transaction<'_, Self>, sqlx::Error>> + Send;

        /// Which SQL dialect a connection speaks.
        fn dialect(conn: &Self::Connection) -> Dialect;

        /// Which SQL dialect a pool's connections speak.
        fn pool_dialect(pool: &Pool<Self>) -> Dialect;

        /// The committed record of a key, unless it is older than the retention.
        fn find_record(
            conn: &mut Self::Connection,
            scope: &KeyScope<'_>,
            retention_ms: i64,
        ) -> impl Future<Output = Result<Option<KeyRecord>, sqlx::Error>> + Send;

        /// `true` when this attempt now holds the key.
        fn claim(
            tx: &mut Transaction<'_, Self>,
            claim: &Claim<'_>,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// Deletes up to `limit` keys older than the retention.
        fn purge_expired(
            pool: &Pool<Self>,
            retention_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

        /// Records an event in the write's transaction.
        fn record_event(
            tx: &mut Transaction<'_, Self>,
            event: &OutboxRecord<'_>,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// The oldest events due for delivery at `now_ms`.
        fn due_events(
            pool: &Pool<Self>,
            now_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<Vec<EventRow>, sqlx::Error>> + Send;

        /// Counts a failed delivery; `true` when the event is now parked.
        fn record_delivery_failure(
            pool: &Pool<Self>,
            failure: &DeliveryFailure<'_>,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// The parked events, oldest parked first.
        fn parked_events(
            pool: &Pool<Self>,
            limit: i64,
        ) -> impl Future<Output = Result<Vec<ParkedRow>, sqlx::Error>> + Send;

        /// Makes a parked event due again; `false` if it is not parked.
        fn requeue_parked(
            pool: &Pool<Self>,
            event_id: &str,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// Pending events, parked events, and the oldest pending event's recording instant.
        fn outbox_backlog(
            pool: &Pool<Self>,
        ) -> impl Future<Output = Result<(i64, i64, Option<i64>), sqlx::Error>> + Send;

        /// Deletes up to `limit` events delivered before `before_ms`.
        fn purge_delivered(
            pool: &Pool<Self>,
            before_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

        /// Marks an event delivered; `false` if another dispatcher did first.
        fn mark_delivered(
            pool: &Pool<Self>,
            event_id: &str,
            now_ms: i64,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// Stores the response on the claimed key row and appends the new write's audit row,
        /// in the write's transaction.
        fn record_write(
            tx: &mut Transaction<'_, Self>,
            scope: &KeyScope<'_>,
            response: &StoredResponse,
            audit: &AuditRecord,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// Appends audit rows on their own, after their writes rolled back or were not needed:
        /// one statement, one commit for the whole batch.
        fn append_audit_batch(
            pool: &Pool<Self>,
            records: &[AuditRecord],
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// Deletes up to `limit` audit rows older than `older_than_ms` (on PostgreSQL, never
        /// younger than the owner's retention floor): the one path the log's triggers let
        /// through.
        fn purge_audit(
            pool: &Pool<Self>,
            older_than_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

        /// The driver's own error, when `error` is one: what a `#[error(transparent)]`
        /// wrapper's `source()` chain can show instead of the [`sqlx::Error`].
        fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError>;

        /// A failure that a fresh attempt of the same transaction may not meet again.
        fn is_transient(error: &dyn DatabaseError) -> bool;

        /// The wait for a twin's claim outlasted the lock timeout.
        fn is_lock_timeout(error: &dyn DatabaseError) -> bool;
    }
}

/// The table that records which of idem's migrations ran.
pub const MIGRATIONS_TABLE: &str = "_idem_migrations";

/// One round trip: the lock timeout bounds the wait on a twin's claim (and any other lock wait
/// of the transaction), and vanishes with the transaction.
fn postgres_begin(lock_timeout: Duration) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "BEGIN; SET LOCAL lock_timeout = {}",
        lock_timeout.as_millis().max(1)
    ))
}

/// IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so the transaction
/// never has to upgrade a read lock, which SQLite answers with SQLITE_BUSY at once instead of
/// waiting.
const SQLITE_BEGIN: &str = "BEGIN IMMEDIATE";

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

/// Binds an audit row's fields ([`AUDIT_COLUMNS`] of them) in the column order of
/// [`insert_audit!`], after whatever `$query` has bound already.
macro_rules! bind_audit {
    ($query:expr, $record:expr) => {{
        let record = $record;
        $query
            .bind(record.id.to_string())
            .bind(record.operation.name())
            .bind(record.operation.class().as_str())
            .bind(record.tenant.as_str())
            .bind(record.user.as_deref())
            .bind(record.key_hash.as_str())
            .bind(record.entity_id.to_string())
            .bind(record.fingerprint.to_string())
            .bind(record.outcome.as_str())
            .bind(record.status.map(i32::from))
            .bind(record.outcome.failure())
            .bind(i32::try_from(record.attempts).unwrap_or(i32::MAX))
            .bind(record.duration_ms)
            .bind(record.request_id.as_deref())
            .bind(record.now_ms)
    }};
}

/// The response and the audit row of a new write as two statements (SQLite, where a statement
/// costs no round trip).
macro_rules! record_write_apart {
    ($tx:expr, $scope:expr, $response:expr, $audit:expr) => {{
        let (tx, scope, response, audit) = ($tx, $scope, $response, $audit);
        bind_response!(sqlx::query(STORE_RESPONSE), scope, response)?
            .execute(&mut **tx)
            .await?;
        bind_audit!(sqlx::query(APPEND_AUDIT), audit)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }};
}

/// The response and the audit row of a new write as one statement (PostgreSQL): a round trip
/// saved on every new write.
macro_rules! record_write_together {
    ($tx:expr, $scope:expr, $response:expr, $audit:expr) => {{
        let (tx, scope, response, audit) = ($tx, $scope, $response, $audit);
        let query = bind_response!(sqlx::query(RECORD_WRITE_TOGETHER), scope, response)?;
        bind_audit!(query, audit).execute(&mut **tx).await?;
        Ok(())
    }};
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
            scope: &KeyScope<'_>,
            retention_ms: i64,
        ) -> Result<Option<KeyRecord>, sqlx::Error> {
            sqlx::query_as::<_, RecordRow>(FIND_RECORD.get(Self::dialect(conn)))
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
            claim: &Claim<'_>,
        ) -> Result<bool, sqlx::Error> {
            let claimed = sqlx::query_scalar::<_, i64>(CLAIM.get(Self::dialect(tx)))
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

        async fn record_event(
            tx: &mut Transaction<'_, Self>,
            event: &OutboxRecord<'_>,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(RECORD_EVENT)
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

        async fn due_events(
            pool: &Pool<Self>,
            now_ms: i64,
            limit: i64,
        ) -> Result<Vec<EventRow>, sqlx::Error> {
            sqlx::query_as::<_, EventRow>(DUE_EVENTS)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(pool)
                .await
        }

        async fn record_delivery_failure(
            pool: &Pool<Self>,
            failure: &DeliveryFailure<'_>,
        ) -> Result<bool, sqlx::Error> {
            let parked: Option<Option<i64>> = sqlx::query_scalar(RECORD_DELIVERY_FAILURE)
                .bind(failure.event_id)
                .bind(failure.error)
                .bind(failure.next_attempt_at_ms)
                .bind(failure.park_after)
                .bind(failure.now_ms)
                .fetch_optional(pool)
                .await?;
            Ok(matches!(parked, Some(Some(_))))
        }

        async fn parked_events(
            pool: &Pool<Self>,
            limit: i64,
        ) -> Result<Vec<ParkedRow>, sqlx::Error> {
            sqlx::query_as::<_, ParkedRow>(PARKED_EVENTS)
                .bind(limit)
                .fetch_all(pool)
                .await
        }

        async fn requeue_parked(pool: &Pool<Self>, event_id: &str) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(REQUEUE_PARKED)
                .bind(event_id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn outbox_backlog(pool: &Pool<Self>) -> Result<(i64, i64, Option<i64>), sqlx::Error> {
            sqlx::query_as(OUTBOX_BACKLOG).fetch_one(pool).await
        }

        async fn purge_delivered(
            pool: &Pool<Self>,
            before_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(PURGE_DELIVERED)
                .bind(before_ms)
                .bind(limit)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        }

        async fn mark_delivered(
            pool: &Pool<Self>,
            event_id: &str,
            now_ms: i64,
        ) -> Result<bool, sqlx::Error> {
            let done = sqlx::query(MARK_DELIVERED)
                .bind(event_id)
                .bind(now_ms)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn append_audit_batch(
            pool: &Pool<Self>,
            records: &[AuditRecord],
        ) -> Result<(), sqlx::Error> {
            // One text per batch size: not worth a prepared statement each.
            let mut insert = sqlx::query(append_audit_rows(records.len())).persistent(false);
            for record in records {
                insert = bind_audit!(insert, record);
            }
            insert.execute(pool).await.map(drop)
        }

        async fn purge_audit(
            pool: &Pool<Self>,
            older_than_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            if Self::pool_dialect(pool) == Dialect::Postgres {
                let purged: i64 = sqlx::query_scalar(PURGE_AUDIT_AS_OWNER)
                    .bind(older_than_ms)
                    .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                    .fetch_one(pool)
                    .await?;
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
            retention_ms: i64,
            limit: i64,
        ) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(PURGE_EXPIRED.get(Self::pool_dialect(pool)))
                .bind(retention_ms)
                .bind(limit)
                .execute(pool)
                .await?;
            Ok(done.rows_affected())
        }
    };
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

impl sealed::Protocol for Sqlite {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        Dialect::Sqlite.migrator().run(pool).await
    }

    fn migration_versions(_pool: &Pool<Self>) -> Vec<i64> {
        Dialect::Sqlite.migration_versions()
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.sqlite_synchronous() {
                crate::SqliteSynchronous::Full => SqliteSynchronous::Full,
                crate::SqliteSynchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(config.lock_timeout())
            .foreign_keys(true);
        SqlitePoolOptions::new().connect_with(options).await
    }

    fn dialect(_conn: &Self::Connection) -> Dialect {
        Dialect::Sqlite
    }

    fn pool_dialect(_pool: &Pool<Self>) -> Dialect {
        Dialect::Sqlite
    }

    async fn begin_write(
        conn: &mut Self::Connection,
        _lock_timeout: Duration,
    ) -> Result<Transaction<'_, Self>, sqlx::Error> {
        conn.begin_with(SQLITE_BEGIN).await
    }

    shared_statements!();

    async fn record_write(
        tx: &mut Transaction<'_, Self>,
        scope: &KeyScope<'_>,
        response: &StoredResponse,
        audit: &AuditRecord,
    ) -> Result<(), sqlx::Error> {
        record_write_apart!(tx, scope, response, audit)
    }

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        error
            .downcast_ref::<SqliteError>()
            .map(|error| error as &dyn DatabaseError)
    }

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

/// Which database a pool reaches: fixed for [`Postgres`] and [`Sqlite`], read from the URL or
/// the connection for [`Any`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

impl Dialect {
    fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    fn of_pool(pool: &Pool<Any>) -> Self {
        Self::of_url(pool.connect_options().database_url.as_str())
    }

    fn of_connection(conn: &<Any as sqlx::Database>::Connection) -> Self {
        if conn.backend_name() == <Sqlite as sqlx::Database>::NAME {
            Self::Sqlite
        } else {
            Self::Postgres
        }
    }

    /// idem's migrations for this database (embedded once per dialect), tracked in their own
    /// table ([`MIGRATIONS_TABLE`]) so they never mix with the application's.
    fn migrator(self) -> Migrator {
        let mut migrator = match self {
            Self::Postgres => sqlx::migrate!("./migrations/postgres"),
            Self::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        };
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator
    }

    fn migration_versions(self) -> Vec<i64> {
        self.migrator()
            .iter()
            .map(|migration| migration.version)
            .collect()
    }
}

impl sealed::Protocol for Any {
    async fn migrate(pool: &Pool<Self>) -> Result<(), MigrateError> {
        Dialect::of_pool(pool).migrator().run(pool).await
    }

    fn migration_versions(pool: &Pool<Self>) -> Vec<i64> {
        Dialect::of_pool(pool).migration_versions()
    }

    async fn connect(url: &str, config: &StoreConfig) -> Result<Pool<Self>, sqlx::Error> {
        sqlx::any::install_default_drivers();
        if Dialect::of_url(url) == Dialect::Postgres {
            return AnyPoolOptions::new().connect(url).await;
        }
        // What `SqliteConnectOptions` sets for the SQLite backend, said in SQL.
        let synchronous = match config.sqlite_synchronous() {
            crate::SqliteSynchronous::Full => "FULL",
            crate::SqliteSynchronous::Normal => "NORMAL",
        };
        let pragmas = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {}",
            config.lock_timeout().as_millis()
        );
        let url = if url.contains("mode=") {
            url.to_owned()
        } else {
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}mode=rwc")
        };
        AnyPoolOptions::new()
            .after_connect(move |connection, _| {
                let pragmas = AssertSqlSafe(pragmas.clone());
                Box::pin(async move { sqlx::raw_sql(pragmas).execute(connection).await.map(drop) })
            })
            .connect(&url)
            .await
    }

    fn dialect(conn: &Self::Connection) -> Dialect {
        Dialect::of_connection(conn)
    }

    fn pool_dialect(pool: &Pool<Self>) -> Dialect {
        Dialect::of_pool(pool)
    }

    async fn begin_write(
        conn: &mut Self::Connection,
        lock_timeout: Duration,
    ) -> Result<Transaction<'_, Self>, sqlx::Error> {
        match Dialect::of_connection(conn) {
            Dialect::Sqlite => conn.begin_with(SQLITE_BEGIN).await,
            Dialect::Postgres => conn.begin_with(postgres_begin(lock_timeout)).await,
        }
    }

    shared_statements!();

    async fn record_write(
        tx: &mut Transaction<'_, Self>,
        scope: &KeyScope<'_>,
        response: &StoredResponse,
        audit: &AuditRecord,
    ) -> Result<(), sqlx::Error> {
        match Dialect::of_connection(tx) {
            Dialect::Sqlite => record_write_apart!(tx, scope, response, audit),
            Dialect::Postgres => record_write_together!(tx, scope, response, audit),
        }
    }

    fn driver_error<'e>(error: &'e (dyn StdError + 'static)) -> Option<&'e dyn DatabaseError> {
        Postgres::driver_error(error).or_else(|| Sqlite::driver_error(error))
    }

    fn is_transient(error: &dyn DatabaseError) -> bool {
        // The two code sets do not overlap: SQLSTATEs are five characters, SQLite's are numbers.
        Postgres::is_transient(error) || Sqlite::is_transient(error)
    }

    fn is_lock_timeout(error: &dyn DatabaseError) -> bool {
        Postgres::is_lock_timeout(error)
    }
}
