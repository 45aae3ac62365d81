//! How the protocol's statements reach the database: as named prepared statements on the
//! connection, or, behind a transaction pooler, unnamed and inside transactions only.
//!
//! A transaction pooler (PgBouncer's `pool_mode = transaction`) hands each transaction to
//! whichever server connection is free, and between transactions gives it to another client.
//! A named prepared statement then outlives the server it was prepared on, and sqlx's unnamed
//! statement is prepared in one round trip and bound in the next (a `Sync` apart), which the
//! pooler may send to two servers unless a transaction holds them together.

use std::ops::{Deref, DerefMut};

use sqlx::database::HasStatementCache;
use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Database, Pool, Transaction};

/// How the protocol sends its statements (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statements {
    /// Named prepared statements, cached per connection: parsed once, then one round trip each.
    Prepared,
    /// Unnamed statements, only inside transactions, and nothing named left on the server
    /// when a transaction ends: for a transaction pooler.
    Unnamed,
}

impl Statements {
    /// Whether a statement may be prepared under a name and cached on the connection.
    pub(crate) fn persistent(self) -> bool {
        self == Self::Prepared
    }
}

/// A connection for statements outside a write: the pool's own, or, behind a transaction
/// pooler, a transaction of its own, the one unit the pooler keeps on one server.
pub(crate) enum Session<DB: Database> {
    Direct(PoolConnection<DB>),
    Pooled(Transaction<'static, DB>),
}

impl<DB: Database> Session<DB> {
    pub(crate) async fn open(pool: &Pool<DB>, statements: Statements) -> Result<Self, sqlx::Error> {
        Ok(match statements {
            Statements::Prepared => Self::Direct(pool.acquire().await?),
            Statements::Unnamed => Self::Pooled(pool.begin().await?),
        })
    }

    /// Ends the session: commits its transaction, if it has one.
    pub(crate) async fn close(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Direct(_) => Ok(()),
            Self::Pooled(tx) => tx.commit().await,
        }
    }
}

impl<DB: Database> Deref for Session<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        match self {
            Self::Direct(conn) => conn,
            Self::Pooled(tx) => tx,
        }
    }
}

impl<DB: Database> DerefMut for Session<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        match self {
            Self::Direct(conn) => conn,
            Self::Pooled(tx) => tx,
        }
    }
}

/// Behind a transaction pooler, closes the named statements that the transaction's own queries
/// prepared (sqlx prepares a query under a name unless it is `.persistent(false)`), on the
/// server connection that holds them, before the transaction ends and the pooler lets that
/// server go to another client.
pub(crate) async fn close_named_statements<DB: Database + HasStatementCache>(
    conn: &mut DB::Connection,
    statements: Statements,
) -> Result<(), sqlx::Error> {
    if statements == Statements::Unnamed && conn.cached_statements_size() > 0 {
        conn.clear_cached_statements().await?;
    }
    Ok(())
}

/// Runs `$body` on a [`Session`] of `$pool`, with `$conn` its connection, and
/// closes the session (behind a transaction pooler, commits its transaction).
macro_rules! in_session {
    ($pool:expr, $statements:expr, |$conn:ident| $body:expr) => {{
        let mut session = Session::open($pool, $statements).await?;
        let $conn = &mut *session;
        let result = $body;
        session.close().await?;
        result
    }};
}

/// The statements on the pool that every database writes the same way, with only its own SQL:
/// the constants of the same names in scope where the macro is used (`DUE_EVENTS`,
/// `PARKED_EVENTS`, `REQUEUE_PARKED`, `OUTBOX_BACKLOG`, `PURGE_DELIVERED`, `MARK_DELIVERED`,
/// and `PLACEHOLDERS` for the audit batch), bound in the same order.
macro_rules! pool_statements {
    () => {
        async fn due_events(
            pool: &Pool<Self>,
            statements: Statements,
            now_ms: i64,
            limit: i64,
        ) -> Result<Vec<EventRow>, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as::<_, EventRow>(DUE_EVENTS)
                    .persistent(statements.persistent())
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(conn)
                    .await?
            }))
        }
        async fn parked_events(
            pool: &Pool<Self>,
            statements: Statements,
            limit: i64,
        ) -> Result<Vec<ParkedRow>, sqlx::Error> {
            Ok(in_session!(pool, statements, |conn| {
                sqlx::query_as::<_, ParkedRow>(PARKED_EVENTS)
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
                sqlx::query(REQUEUE_PARKED)
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
                sqlx::query_as(OUTBOX_BACKLOG)
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
                sqlx::query(PURGE_DELIVERED)
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
                sqlx::query(MARK_DELIVERED)
                    .persistent(statements.persistent())
                    .bind(now_ms)
                    .bind(event_id)
                    .execute(conn)
                    .await?
            });
            Ok(done.rows_affected() == 1)
        }
        async fn append_audit_batch(
            pool: &Pool<Self>,
            statements: Statements,
            records: &[AuditRecord],
        ) -> Result<(), sqlx::Error> {
            in_session!(pool, statements, |conn| {
                // One text per batch size: not worth a prepared statement each.
                let mut insert =
                    sqlx::query(append_audit_rows(records.len(), PLACEHOLDERS)).persistent(false);
                for record in records {
                    insert = bind_audit!(insert, record);
                }
                insert.execute(conn).await?
            });
            Ok(())
        }
    };
}

pub(crate) use {in_session, pool_statements};
