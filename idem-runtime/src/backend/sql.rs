//! The protocol's statements in each dialect's words.
//!
//! PostgreSQL and SQLite share their text (`$n` parameters, `ON CONFLICT ... DO UPDATE ...
//! WHERE`, `RETURNING`) but for the database's clock. MySQL's text binds the same values in the
//! same order, with `?` parameters: derived from the shared text where only the parameters
//! differ, written in its own words where it lacks a construct (see [`super::mysql`]).
//! [`super::shared`] implements them once for every backend.

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

/// Concatenates SQL text in one dialect's words (`postgres`, `sqlite` or `mysql`), writing
/// `NOW` as that dialect's clock in Unix milliseconds, `LOCK` as what locks the rows a claim
/// selects, `INT64` as what a `CAST` names a 64-bit integer (`BIGINT`, MySQL's `SIGNED`), and
/// `P1` … `P9` as the statement's parameters: `idem_now_ms()` on PostgreSQL (a migration
/// defines it on `statement_timestamp()`), `julianday('now')` on SQLite (whose database
/// lives on the application's own host), `CURRENT_TIMESTAMP(3)` on MySQL (whose sessions idem
/// sets to UTC); `FOR UPDATE SKIP LOCKED` on PostgreSQL and MySQL, nothing on SQLite, whose
/// one writer is the lock; `$1` … on PostgreSQL and SQLite, `?` on MySQL, which binds by
/// position (each parameter comes once, in order).
macro_rules! sql_with_now {
    ($dialect:ident; $($part:tt)*) => {
        concat!($($crate::backend::sql_with_now!(@part $dialect $part)),*)
    };
    (@part $dialect:ident NOW) => { $crate::backend::sql_with_now!(@now $dialect) };
    (@part $dialect:ident LOCK) => { $crate::backend::sql_with_now!(@lock $dialect) };
    (@part $dialect:ident INT64) => { $crate::backend::sql_with_now!(@int64 $dialect) };
    (@part $dialect:ident P1) => { $crate::backend::sql_with_now!(@param $dialect "$1") };
    (@part $dialect:ident P2) => { $crate::backend::sql_with_now!(@param $dialect "$2") };
    (@part $dialect:ident P3) => { $crate::backend::sql_with_now!(@param $dialect "$3") };
    (@part $dialect:ident P4) => { $crate::backend::sql_with_now!(@param $dialect "$4") };
    (@part $dialect:ident P5) => { $crate::backend::sql_with_now!(@param $dialect "$5") };
    (@part $dialect:ident P6) => { $crate::backend::sql_with_now!(@param $dialect "$6") };
    (@part $dialect:ident P7) => { $crate::backend::sql_with_now!(@param $dialect "$7") };
    (@part $dialect:ident P8) => { $crate::backend::sql_with_now!(@param $dialect "$8") };
    (@part $dialect:ident P9) => { $crate::backend::sql_with_now!(@param $dialect "$9") };
    (@part $dialect:ident $text:literal) => { $text };
    (@now postgres) => { "idem_now_ms()" };
    (@now sqlite) => { "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)" };
    (@now mysql) => { "CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)" };
    (@lock postgres) => { "FOR UPDATE SKIP LOCKED" };
    (@lock sqlite) => { "" };
    (@lock mysql) => { "FOR UPDATE SKIP LOCKED" };
    (@int64 mysql) => { "SIGNED" };
    (@int64 $dialect:ident) => { "BIGINT" };
    (@param mysql $numbered:literal) => { "?" };
    (@param $dialect:ident $numbered:literal) => { $numbered };
}

/// A [`DialectSql`] from one text for every dialect, or from PostgreSQL's and SQLite's shared
/// text and MySQL's where MySQL says it in other words, or from three texts where PostgreSQL
/// needs its own (a plan that stays on an index as the table grows); in each, `NOW` is the
/// database's clock, `LOCK` the claim's row lock and `P1` … the parameters ([`sql_with_now`]).
macro_rules! dialect_sql {
    ([$($every:tt)*]) => {
        $crate::backend::dialect_sql!([$($every)*], mysql: [$($every)*])
    };
    ([$($shared:tt)*], mysql: [$($mysql:tt)*]) => {
        $crate::backend::dialect_sql!(
            postgres: [$($shared)*], sqlite: [$($shared)*], mysql: [$($mysql)*]
        )
    };
    (postgres: [$($postgres:tt)*], sqlite: [$($sqlite:tt)*], mysql: [$($mysql:tt)*]) => {
        $crate::backend::DialectSql {
            #[cfg(feature = "postgres")]
            postgres: $crate::backend::sql_with_now!(postgres; $($postgres)*),
            #[cfg(feature = "sqlite")]
            sqlite: $crate::backend::sql_with_now!(sqlite; $($sqlite)*),
            #[cfg(feature = "mysql")]
            mysql: $crate::backend::sql_with_now!(mysql; $($mysql)*),
        }
    };
}

/// The committed record of a key: tenant, operation, key; a row past its own expiry is no
/// record.
pub(crate) const FIND_RECORD: DialectSql = dialect_sql!(
    ["SELECT fingerprint, attempt_id, response_status, response_headers, response_body
FROM idempotency_keys
WHERE tenant_id = " P1 " AND operation = " P2 " AND idempotency_key = " P3 " AND expires_at_ms > " NOW]
);

/// Inserts the key row (tenant, operation, key, fingerprint, entity id, attempt id, then the
/// operation's retention in ms, which sets the row's own expiry), or takes over one past its
/// expiry. On a live twin's uncommitted row it waits for the twin (the unique index serializes
/// them).
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
    (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms,
     expires_at_ms)
VALUES ($1, $2, $3, $4, $5, $6, " NOW ", " NOW " + $7)
ON CONFLICT (tenant_id, operation, idempotency_key) DO UPDATE SET
    fingerprint = excluded.fingerprint,
    entity_id = excluded.entity_id,
    attempt_id = excluded.attempt_id,
    created_at_ms = excluded.created_at_ms,
    expires_at_ms = excluded.expires_at_ms,
    response_status = NULL,
    response_headers = NULL,
    response_body = NULL
WHERE idempotency_keys.expires_at_ms <= " NOW "
RETURNING attempt_id"],
    mysql: ["INSERT INTO idempotency_keys
    (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id, created_at_ms,
     expires_at_ms)
VALUES (?, ?, ?, ?, ?, ?, " NOW ", " NOW " + ?)
ON DUPLICATE KEY UPDATE
    attempt_id = LAST_INSERT_ID(IF(expires_at_ms <= " NOW ", VALUES(attempt_id), attempt_id)),
    fingerprint = IF(attempt_id = VALUES(attempt_id), VALUES(fingerprint), fingerprint),
    entity_id = IF(attempt_id = VALUES(attempt_id), VALUES(entity_id), entity_id),
    response_status = IF(attempt_id = VALUES(attempt_id), NULL, response_status),
    response_headers = IF(attempt_id = VALUES(attempt_id), NULL, response_headers),
    response_body = IF(attempt_id = VALUES(attempt_id), NULL, response_body),
    created_at_ms = IF(attempt_id = VALUES(attempt_id), VALUES(created_at_ms), created_at_ms),
    expires_at_ms = IF(attempt_id = VALUES(attempt_id), VALUES(expires_at_ms), expires_at_ms)"]
);

/// Stores the response (status, headers, body) on the key row (tenant, operation, key).
pub(crate) const STORE_RESPONSE: DialectSql = dialect_sql!(
    ["UPDATE idempotency_keys
SET response_status = " P1 ", response_headers = " P2 ", response_body = " P3 "
WHERE tenant_id = " P4 " AND operation = " P5 " AND idempotency_key = " P6]
);

/// The database's clock, in Unix milliseconds.
pub(crate) const DATABASE_CLOCK: DialectSql = dialect_sql!(["SELECT " NOW]);

pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _idem_migrations WHERE success";

/// Records an event (id, tenant, operation, entity id, topic, payload, its place among the
/// write's events), at the database's clock.
pub(crate) const RECORD_EVENT: DialectSql = dialect_sql!(
    ["INSERT INTO idem_outbox
    (event_id, tenant_id, operation, entity_id, topic, payload, sequence_in_write, created_at_ms)
VALUES (" P1 ", " P2 ", " P3 ", " P4 ", " P5 ", " P6 ", " P7 ", " NOW ")"]
);

/// Claims up to `$2` of the oldest due events (neither delivered, parked, nor backing off or
/// claimed by a dispatcher) for a lease of `$1` ms, by moving their next attempt past it, and
/// returns them. `FOR UPDATE SKIP LOCKED` lets concurrent dispatchers claim disjoint batches
/// without waiting on each other; SQLite's single writer serializes them. PostgreSQL finds the
/// claimed rows by their ids (`= ANY(ARRAY(…))`, an index lookup whatever the table's size:
/// `IN (…)` lets its generic plan hash-join a scan of the whole table). MySQL has no
/// `UPDATE … RETURNING`: its text only selects and locks the due rows (bound to the limit
/// alone), and [`mysql_lease_events`] leases them in the same transaction.
pub(crate) const CLAIM_EVENTS: DialectSql = dialect_sql!(
    postgres: ["UPDATE idem_outbox SET next_attempt_at_ms = " NOW " + $1
WHERE event_id = ANY(ARRAY(
    SELECT event_id FROM idem_outbox
    WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= " NOW "
    ORDER BY next_attempt_at_ms, created_at_ms, sequence_in_write, event_id
    LIMIT $2 " LOCK "
))
RETURNING event_id, tenant_id, operation, entity_id, topic, payload, attempts, created_at_ms,
    sequence_in_write"],
    sqlite: ["UPDATE idem_outbox SET next_attempt_at_ms = " NOW " + $1
WHERE event_id IN (
    SELECT event_id FROM idem_outbox
    WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= " NOW "
    ORDER BY next_attempt_at_ms, created_at_ms, sequence_in_write, event_id
    LIMIT $2
)
RETURNING event_id, tenant_id, operation, entity_id, topic, payload, attempts, created_at_ms,
    sequence_in_write"],
    mysql: ["SELECT event_id, tenant_id, operation, entity_id, topic, payload, attempts, created_at_ms,
    sequence_in_write
FROM idem_outbox
WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL AND next_attempt_at_ms <= " NOW "
ORDER BY next_attempt_at_ms, created_at_ms, sequence_in_write, event_id
LIMIT ? " LOCK]
);

/// Begins MySQL's claim at READ COMMITTED: its locking read then locks the due rows alone. At
/// InnoDB's default REPEATABLE READ it would also lock the gaps of the due-events index it
/// scanned, and two dispatchers' leases, which move their rows in that index, would each wait to
/// insert into the other's gaps: a deadlock.
#[cfg(feature = "mysql")]
pub(crate) const MYSQL_CLAIM_BEGIN: &str =
    "SET TRANSACTION ISOLATION LEVEL READ COMMITTED; START TRANSACTION";

/// MySQL's second half of [`CLAIM_EVENTS`]: the lease (ms), then the ids of `count` events.
#[cfg(feature = "mysql")]
pub(crate) fn mysql_lease_events(count: usize) -> String {
    const LEASE: &str = sql_with_now!(mysql;
        "UPDATE idem_outbox SET next_attempt_at_ms = " NOW " + ? WHERE event_id IN (");
    format!("{LEASE}{})", vec!["?"; count].join(", "))
}

/// Makes an event due again after `$1` ms, without counting an attempt: a claimed event not
/// delivered in this pass (the dispatcher stopped, or an earlier event of its write failed).
pub(crate) const DEFER_EVENT: DialectSql = dialect_sql!(
    ["UPDATE idem_outbox SET next_attempt_at_ms = " NOW " + " P1 "
WHERE event_id = " P2 " AND delivered_at_ms IS NULL AND parked_at_ms IS NULL"]
);

/// Counts a failed delivery (error, backoff in ms), and parks the event once it has failed
/// `park_after` times; then the event id. `SET` reads the row's old `attempts` on PostgreSQL
/// and SQLite; MySQL's later assignments would read the new count, so it assigns
/// `parked_at_ms` first.
pub(crate) const RECORD_DELIVERY_FAILURE: DialectSql = dialect_sql!(
    ["UPDATE idem_outbox
SET attempts = attempts + 1,
    last_error = $1,
    next_attempt_at_ms = " NOW " + $2,
    parked_at_ms = CASE WHEN attempts + 1 >= $3 THEN " NOW " ELSE NULL END
WHERE event_id = $4 AND delivered_at_ms IS NULL AND parked_at_ms IS NULL"],
    mysql: ["UPDATE idem_outbox
SET last_error = ?,
    next_attempt_at_ms = " NOW " + ?,
    parked_at_ms = CASE WHEN attempts + 1 >= ? THEN " NOW " ELSE NULL END,
    attempts = attempts + 1
WHERE event_id = ? AND delivered_at_ms IS NULL AND parked_at_ms IS NULL"]
);

pub(crate) const PARKED_AT: DialectSql = dialect_sql!(
    ["SELECT parked_at_ms FROM idem_outbox WHERE event_id = " P1]
);

pub(crate) const PARKED_EVENTS: DialectSql = dialect_sql!(
    ["SELECT event_id, tenant_id, operation, topic, attempts, last_error, created_at_ms, parked_at_ms
FROM idem_outbox
WHERE parked_at_ms IS NOT NULL
ORDER BY parked_at_ms, event_id
LIMIT " P1]
);

pub(crate) const REQUEUE_PARKED: DialectSql = dialect_sql!(
    ["UPDATE idem_outbox SET parked_at_ms = NULL, attempts = 0, next_attempt_at_ms = 0
WHERE event_id = " P1 " AND parked_at_ms IS NOT NULL"]
);

/// Pending and parked events, and the age in ms of the oldest pending one, by the database's
/// clock: each from its partial index on PostgreSQL and SQLite (the delivered events, most of
/// the table, are not read). MySQL has no partial indexes; its `SUM` of integers is a DECIMAL,
/// cast back to a BIGINT.
pub(crate) const OUTBOX_BACKLOG: DialectSql = dialect_sql!(
    ["SELECT
    (SELECT COUNT(*) FROM idem_outbox WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL),
    (SELECT COUNT(*) FROM idem_outbox WHERE parked_at_ms IS NOT NULL AND delivered_at_ms IS NULL),
    " NOW " - (SELECT MIN(created_at_ms) FROM idem_outbox
        WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL)"],
    mysql: ["SELECT
    CAST(COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 1 ELSE 0 END), 0) AS SIGNED),
    CAST(COALESCE(SUM(CASE WHEN parked_at_ms IS NULL THEN 0 ELSE 1 END), 0) AS SIGNED),
    " NOW " - MIN(CASE WHEN parked_at_ms IS NULL THEN created_at_ms END)
FROM idem_outbox
WHERE delivered_at_ms IS NULL"]
);

/// One bounded batch (the limit) of events delivered longer ago than the retention (ms), the
/// oldest first. PostgreSQL deletes them by id (see [`CLAIM_EVENTS`]).
pub(crate) const PURGE_DELIVERED: DialectSql = dialect_sql!(
    postgres: ["DELETE FROM idem_outbox WHERE event_id = ANY(ARRAY(
    SELECT event_id FROM idem_outbox
    WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < " NOW " - $1
    ORDER BY delivered_at_ms
    LIMIT $2
))"],
    sqlite: ["DELETE FROM idem_outbox WHERE event_id IN (
    SELECT event_id FROM idem_outbox
    WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < " NOW " - $1
    ORDER BY delivered_at_ms
    LIMIT $2
)"],
    mysql: ["DELETE FROM idem_outbox WHERE delivered_at_ms IS NOT NULL AND delivered_at_ms < " NOW " - ?
ORDER BY delivered_at_ms LIMIT ?"]
);

/// Marks an event delivered, at the database's clock, unless it was marked or parked
/// meanwhile (a dispatcher that took it over after this one's lease ran out).
pub(crate) const MARK_DELIVERED: DialectSql = dialect_sql!(
    ["UPDATE idem_outbox SET delivered_at_ms = " NOW "
WHERE event_id = " P1 " AND delivered_at_ms IS NULL AND parked_at_ms IS NULL"]
);

/// One bounded batch (the limit) of keys past their own expiry, the longest expired first.
/// The outer condition is checked again on a row a claim took over meanwhile (READ COMMITTED
/// re-reads a row it waited for): a key claimed again after the batch was chosen is live, and
/// stays. PostgreSQL finds the rows by their `ctid` (see [`CLAIM_EVENTS`]; a row taken over
/// has a new one, so it is not deleted either), SQLite by their primary key. The check's unary
/// `+` keeps it off the expiry index: where the statistics believe few keys expired (analysed
/// before a mass of keys expired), the planner would otherwise walk every expired key through
/// that index and keep the batch's, so each batch would cost the whole backlog.
pub(crate) const PURGE_EXPIRED: DialectSql = dialect_sql!(
    postgres: ["DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM idempotency_keys
    WHERE expires_at_ms <= " NOW "
    ORDER BY expires_at_ms
    LIMIT $1
)) AND +expires_at_ms <= " NOW],
    sqlite: ["DELETE FROM idempotency_keys WHERE (tenant_id, operation, idempotency_key) IN (
    SELECT tenant_id, operation, idempotency_key FROM idempotency_keys
    WHERE expires_at_ms <= " NOW "
    ORDER BY expires_at_ms
    LIMIT $1
) AND +expires_at_ms <= " NOW],
    mysql: ["DELETE FROM idempotency_keys WHERE expires_at_ms <= " NOW " ORDER BY expires_at_ms LIMIT ?"]
);

/// MySQL: the session's lock wait timeout as it was before the write began (see
/// `mysql::mysql_begin`), and the saved value forgotten.
#[cfg(feature = "mysql")]
pub(crate) const MYSQL_END_WRITE: &str = "SET SESSION innodb_lock_wait_timeout = CAST(@idem_lock_wait AS UNSIGNED), @idem_lock_wait = NULL";

/// A startup check that only PostgreSQL can make, each finding a sentence that names its fix.
#[derive(Debug, Clone, Copy)]
pub enum PostgresCheck {
    /// Why the policies of row-level security on the tables of the search path do not apply to
    /// the current role, if they do not.
    RowSecurity,
    /// Why a write this primary acknowledged could be lost when a standby is promoted.
    Replication,
}

#[cfg(feature = "postgres")]
impl PostgresCheck {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Self::RowSecurity => ROW_SECURITY_BYPASSES,
            Self::Replication => REPLICATION_RISKS,
        }
    }
}

/// A primary with standbys whose commits do not wait for one of them: promoting a standby can
/// lose what the primary acknowledged. Rows of `pg_stat_replication` are visible to every role
/// (their details are not). Nothing on a server without standbys, which has no failover to
/// lose writes to, nor on a standby.
#[cfg(feature = "postgres")]
const REPLICATION_RISKS: &str = "SELECT 'this primary streams to ' || s.standbys
    || ' standby(s) asynchronously (synchronous_standby_names is empty): promoting one can lose writes already acknowledged; name a synchronous standby (Patroni: synchronous_mode: true)'
FROM (SELECT COUNT(*) AS standbys FROM pg_stat_replication) s
WHERE s.standbys > 0 AND current_setting('synchronous_standby_names') = ''
UNION ALL
SELECT 'synchronous_commit is ' || current_setting('synchronous_commit')
    || ', so a commit does not wait for the synchronous standby and promoting it can lose writes already acknowledged: set synchronous_commit to on'
WHERE current_setting('synchronous_standby_names') <> ''
  AND current_setting('synchronous_commit') IN ('off', 'local')";

/// PostgreSQL only: why the policies of row-level security on the tables of the search path do
/// not apply to the current role, if they do not. A superuser and a `BYPASSRLS` role pass every
/// policy; a table's owner passes its policies unless the table `FORCE`s them.
#[cfg(feature = "postgres")]
const ROW_SECURITY_BYPASSES: &str = "SELECT 'the role ' || quote_ident(r.rolname)
    || CASE WHEN r.rolsuper THEN ' is a superuser' ELSE ' has BYPASSRLS' END
    || ', so no row-level security policy applies to it: serve as a role with NOSUPERUSER NOBYPASSRLS'
FROM pg_roles r
WHERE r.rolname = current_user AND (r.rolsuper OR r.rolbypassrls)
  AND EXISTS (SELECT 1 FROM pg_class c WHERE c.relrowsecurity AND pg_table_is_visible(c.oid))
UNION ALL
SELECT 'the role ' || quote_ident(r.rolname) || ' owns ' || c.oid::regclass::text
    || ', whose row-level security policies do not apply to its owner: ALTER TABLE '
    || c.oid::regclass::text || ' FORCE ROW LEVEL SECURITY'
FROM pg_class c, pg_roles r
WHERE r.rolname = current_user AND NOT r.rolsuper AND NOT r.rolbypassrls
  AND c.relrowsecurity AND NOT c.relforcerowsecurity AND c.relkind IN ('r', 'p')
  AND pg_table_is_visible(c.oid) AND pg_has_role(c.relowner, 'USAGE')";

/// PostgreSQL's `undefined_table`, MySQL's `ER_NO_SUCH_TABLE`, or SQLite's "no such table".
pub(crate) fn is_missing_table(error: &dyn sqlx::error::DatabaseError) -> bool {
    matches!(error.code().as_deref(), Some("42P01" | "42S02"))
        || error.message().starts_with("no such table")
}

pub(crate) use {dialect_sql, sql_with_now};
