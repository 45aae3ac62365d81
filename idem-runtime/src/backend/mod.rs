//! The SQL of the write protocol, once per database: a new database is a new file here, and a
//! new column of [`sql`].
//!
//! [`sql`] holds the statements, each in every dialect's words (PostgreSQL and SQLite share
//! theirs but for the clock; MySQL binds the same values in the same order), [`shared`]
//! implements them once for every backend, and [`dialect`] tells the databases apart. What differs beyond words
//! (how a write transaction begins, which errors are worth retrying, the connection's settings,
//! the migrations) is in each database's own file, which implements the sealed
//! [`sealed::Protocol`]. `Any` dispatches on the dialect of the connection at hand.

#[cfg(feature = "any")]
mod any;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub(crate) mod catalog;
mod dialect;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
mod postgres_url;
mod shared;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod statements;

use std::error::Error as StdError;
use std::time::Duration;

use sqlx::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::{Pool, Transaction};
use uuid::Uuid;

pub(crate) use dialect::Dialect;
pub(crate) use shared::{bind_response, shared_statements};
pub(crate) use sql::PostgresCheck;
pub(crate) use sql::{DialectSql, dialect_sql, sql_with_now};
pub(crate) use statements::{Session, Statements, in_session};

use crate::audit::{AuditRecord, AuditSeal, SealRow, SealedRow};
use crate::{Fingerprint, IdempotencyKey, StoreConfig, StoredResponse, TenantId};

/// A database the write protocol runs on: [`Postgres`](sqlx::Postgres),
/// [`Sqlite`](sqlx::Sqlite), [`MySql`](sqlx::MySql) (MySQL and MariaDB), or
/// [`Any`](sqlx::Any) (PostgreSQL, SQLite, and MySQL with the feature `mysql`, chosen by the URL).
///
/// The trait is sealed: the protocol's correctness depends on each backend's locking, so a new
/// backend belongs in this crate, with its tests.
pub trait Backend: sealed::Protocol {}

/// PostgreSQL (feature `postgres`).
#[cfg(feature = "postgres")]
impl Backend for sqlx::Postgres {}
/// SQLite (feature `sqlite`, on by default).
#[cfg(feature = "sqlite")]
impl Backend for sqlx::Sqlite {}
/// MySQL 8 and MariaDB 10.6 or later, on InnoDB (feature `mysql`).
#[cfg(feature = "mysql")]
impl Backend for sqlx::MySql {}
/// [`sqlx::Any`] picks PostgreSQL or SQLite (and MySQL or MariaDB, with the feature `mysql`)
/// from the URL at run time, for an application whose handlers run on either (the
/// AnyConnection's types: integers, text, bytes; feature `any`).
#[cfg(feature = "any")]
impl Backend for sqlx::Any {}

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
    /// Tells this attempt's row from a twin's after an ambiguous commit. Positive.
    pub attempt_id: i64,
    /// The operation's retention: the row expires this long after the claim, by the
    /// database's clock, and may then be claimed again.
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
    /// 1 for the write's first event, 2 for its second, …: the order of delivery.
    pub sequence: i32,
}

/// A committed key row.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub fingerprint: Vec<u8>,
    pub attempt_id: i64,
    pub response: StoredResponse,
}

/// The raw row of a committed key; the response columns are never NULL once committed.
pub type RecordRow = (Vec<u8>, i64, Option<i32>, Option<String>, Option<Vec<u8>>);

pub(crate) fn decode_record(row: RecordRow) -> Result<KeyRecord, sqlx::Error> {
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

/// An outbox row as stored (ids as text: event, tenant, operation, entity, then topic and
/// payload), its failed deliveries so far, when it was recorded, and its place among its
/// write's events.
pub type EventRow = (
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i32,
    i64,
    i32,
);

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
    /// How long until the next delivery, by the database's clock.
    pub backoff_ms: i64,
    /// The event is parked when this is its failed attempts' count; 0 parks it at once.
    pub park_after: i32,
}

/// Which dialect of the statements of [`sql`] a database's connections speak: one for each
/// database, the connection's own for `Any`.
pub(crate) trait SqlDialect: sqlx::Database {
    /// The dialect a connection speaks.
    fn dialect(conn: &Self::Connection) -> Dialect;

    /// The dialect a pool's connections speak.
    fn pool_dialect(pool: &Pool<Self>) -> Dialect;

    /// The `LAST_INSERT_ID()` that MySQL returns with a statement's result; none elsewhere.
    #[cfg(feature = "mysql")]
    fn last_insert_id(_result: &Self::QueryResult) -> Option<u64> {
        None
    }
}

pub(crate) mod sealed {
    use std::future::Future;

    use super::*;

    /// The backend-specific half of the protocol. Sealed: not nameable outside this crate.
    ///
    /// Every function that sends a statement is told how ([`Statements`]): a function on the
    /// pool opens a [`Session`] for it, which behind a transaction pooler is a transaction.
    pub trait Protocol: sqlx::Database + sqlx::database::HasStatementCache {
        /// Applies this backend's schema migrations, tracked in their own table
        /// ([`MIGRATIONS_TABLE`]) so they never mix with the application's.
        fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), MigrateError>> + Send;

        /// The versions of the migrations for this pool's database.
        fn migration_versions(pool: &Pool<Self>) -> Vec<i64>;

        /// The versions recorded as applied; none when the table does not exist yet.
        fn applied_migrations(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> impl Future<Output = Result<Vec<i64>, sqlx::Error>> + Send;

        /// A pool configured for the protocol: for SQLite, WAL and a busy timeout.
        fn connect(
            url: &str,
            config: &StoreConfig,
        ) -> impl Future<Output = Result<Pool<Self>, sqlx::Error>> + Send;

        /// Begins the write transaction of one attempt, for `tenant` (on PostgreSQL, its
        /// `idem.tenant_id` setting, which row-level security policies read).
        fn begin_write<'c>(
            conn: &'c mut Self::Connection,
            statements: Statements,
            lock_timeout: Duration,
            tenant: &TenantId,
        ) -> impl Future<Output = Result<Transaction<'c, Self>, sqlx::Error>> + Send;

        /// Begins a transaction for `tenant`'s own statements (reads, outbox handlers), with the
        /// same setting as a write's.
        fn begin_for(
            pool: &Pool<Self>,
            statements: Statements,
            tenant: &TenantId,
        ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send;

        /// What `check` finds wrong on PostgreSQL, one sentence per finding, each naming the
        /// fix; nothing elsewhere.
        fn postgres_findings(
            pool: &Pool<Self>,
            statements: Statements,
            check: PostgresCheck,
        ) -> impl Future<Output = Result<Vec<String>, sqlx::Error>> + Send;

        /// Undoes, before a write's transaction ends (committed or rolled back), what the write
        /// left on the server session that outlives the transaction: on MySQL the session's
        /// lock wait timeout, set back to what it was; behind a transaction pooler every named
        /// statement the body prepared (PostgreSQL's `DEALLOCATE ALL`: sqlx names statements
        /// even in a pool that caches none), before the pooler lends the server to another
        /// client.
        fn end_write(
            conn: &mut Self::Connection,
            statements: Statements,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// The committed record of a key, unless it is past its own expiry.
        fn find_record(
            conn: &mut Self::Connection,
            statements: Statements,
            scope: &KeyScope<'_>,
        ) -> impl Future<Output = Result<Option<KeyRecord>, sqlx::Error>> + Send;

        /// `true` when this attempt now holds the key.
        fn claim(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            claim: &Claim<'_>,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// Deletes up to `limit` keys past their own expiry.
        fn purge_expired(
            pool: &Pool<Self>,
            statements: Statements,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

        /// Records an event in the write's transaction.
        fn record_event(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            event: &OutboxRecord<'_>,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// Claims up to `limit` of the oldest due events for `lease_ms`: no other dispatcher
        /// sees them until they are delivered, failed, deferred, or the lease runs out.
        fn claim_events(
            pool: &Pool<Self>,
            statements: Statements,
            lease_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<Vec<EventRow>, sqlx::Error>> + Send;

        /// Makes a claimed event due again after `delay_ms`, without counting an attempt.
        fn defer_event(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
            delay_ms: i64,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// Counts a failed delivery; `true` when the event is now parked.
        fn record_delivery_failure(
            pool: &Pool<Self>,
            statements: Statements,
            failure: &DeliveryFailure<'_>,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// The parked events, oldest parked first.
        fn parked_events(
            pool: &Pool<Self>,
            statements: Statements,
            limit: i64,
        ) -> impl Future<Output = Result<Vec<ParkedRow>, sqlx::Error>> + Send;

        /// Makes a parked event due again; `false` if it is not parked.
        fn requeue_parked(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// Pending events, parked events, and the oldest pending event's age in ms (the
        /// database's clock).
        fn outbox_backlog(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> impl Future<Output = Result<(i64, i64, Option<i64>), sqlx::Error>> + Send;

        /// Deletes up to `limit` events delivered longer than `retention_ms` ago, by the
        /// database's clock.
        fn purge_delivered(
            pool: &Pool<Self>,
            statements: Statements,
            retention_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

        /// Marks an event delivered; `false` if another dispatcher marked or parked it first.
        fn mark_delivered(
            pool: &Pool<Self>,
            statements: Statements,
            event_id: &str,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// Stores the response on the claimed key row and appends the new write's audit row,
        /// in the write's transaction.
        fn record_write(
            tx: &mut Transaction<'_, Self>,
            statements: Statements,
            scope: &KeyScope<'_>,
            response: &StoredResponse,
            audit: &AuditRecord,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// Appends audit rows on their own, after their writes rolled back or were not needed:
        /// one statement, one commit for the whole batch.
        fn append_audit_batch(
            pool: &Pool<Self>,
            statements: Statements,
            records: &[AuditRecord],
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

        /// Deletes up to `limit` audit rows older than `older_than_ms` (on PostgreSQL, never
        /// younger than the owner's retention floor): the one path the log's triggers let
        /// through.
        fn purge_audit(
            pool: &Pool<Self>,
            statements: Statements,
            older_than_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

        /// The database's clock, in Unix milliseconds.
        fn database_clock(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send;

        /// The audit rows with `after < seq <= through`, oldest first, at most `limit`, each
        /// with whether it was inserted more than `settle_ms` ago.
        fn audit_rows(
            pool: &Pool<Self>,
            statements: Statements,
            after: i64,
            through: i64,
            settle_ms: i64,
            limit: i64,
        ) -> impl Future<Output = Result<Vec<(SealedRow, bool)>, sqlx::Error>> + Send;

        /// The audit log's seals in order, or only the latest.
        fn audit_seals(
            pool: &Pool<Self>,
            statements: Statements,
            latest_only: bool,
        ) -> impl Future<Output = Result<Vec<SealRow>, sqlx::Error>> + Send;

        /// Inserts a seal; `false` when another instance inserted one with its number first.
        fn record_seal(
            pool: &Pool<Self>,
            statements: Statements,
            seal: &AuditSeal,
        ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

        /// The `seq` of the oldest audit row; none when the log is empty.
        fn oldest_audit_seq(
            pool: &Pool<Self>,
            statements: Statements,
        ) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;

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
