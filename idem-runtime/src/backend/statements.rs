//! How the protocol's statements reach the database: as named prepared statements on the
//! connection, or, behind a transaction pooler, unnamed and inside transactions only.
//!
//! A transaction pooler (PgBouncer's `pool_mode = transaction`) hands each transaction to
//! whichever server connection is free, and between transactions gives it to another client.
//! A named prepared statement then outlives the server it was prepared on, and sqlx's unnamed
//! statement is prepared in one round trip and bound in the next (a `Sync` apart), which the
//! pooler may send to two servers unless a transaction holds them together.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};

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

pub(crate) use in_session;
