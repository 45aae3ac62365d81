//! What can go wrong in the store itself, and in one write.

use crate::RegistryError;

/// A failure of the idempotency store, not of the write's own logic. Each variant's message
/// says what failed; its cause is its [`source`](std::error::Error::source), printed once by a
/// reporter that walks the chain (as `anyhow` and `tracing`'s error fields do).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or failed a statement of the protocol.
    #[error("the idempotency store's database failed")]
    Database(#[source] sqlx::Error),
    /// Applying the store's schema migrations failed.
    #[error("applying idem's migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// [`IdempotencyStore::migrate`](crate::IdempotencyStore::migrate) on a store configured
    /// [`with_transaction_pooling`](crate::StoreConfig::with_transaction_pooling): the
    /// migrations hold a session-level lock and prepare statements, which a transaction pooler
    /// does not keep on one server. Nothing was applied.
    #[error(
        "idem's migrations need a direct connection, not a transaction pooler: migrate through a store connected to the database itself, without with_transaction_pooling"
    )]
    MigrationsNeedADirectConnection,
    /// The program's registry of operations is invalid (two operations share a name), so no
    /// write runs: see [`verify_registry`](crate::verify_registry).
    #[error("no write runs while the registry of operations is invalid")]
    Registry(#[source] RegistryError),
    /// The operation is not an entry of the linked registries (its `RegisteredOperation` was
    /// written by hand, or it borrowed another operation's entry): nothing runs.
    #[error(
        "operation `{operation}` is not in the registries: declare it with operation! or annotate its handler"
    )]
    Unregistered {
        /// The name the operation gave.
        operation: &'static str,
    },
    /// The database connection was lost while the body ran (the server crashed, restarted or
    /// dropped it): the transaction is gone with it, and nothing was written.
    #[error("the database connection was lost during the write, and nothing was written: {detail}")]
    ConnectionLost {
        /// The body's error, with its causes.
        detail: String,
    },
    /// The connection failed during `COMMIT`, and the key's row could not be read back within
    /// the acquire timeout to settle whether the write landed: it may have committed. A retry
    /// with the same key replays the write if it did and runs it if it did not; never say
    /// "nothing was written" of this one.
    #[error(
        "the write's COMMIT got no answer and its outcome could not be read back: it may have committed"
    )]
    OutcomeUnknown {
        /// The `COMMIT`'s failure.
        #[source]
        commit: sqlx::Error,
    },
    /// Every attempt met a transient failure (serialization failure, deadlock, busy database).
    #[error("the write met a transient database failure on each of its {attempts} attempts")]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's failure.
        #[source]
        last: sqlx::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    /// Wraps a database failure, saying in plain words what sqlx reports by a symptom alone: a
    /// server that closes the connection before answering PostgreSQL's TLS request (a proxy
    /// with no healthy server behind it, a server shutting down) reads as a bare "unexpected
    /// end of file".
    fn from(error: sqlx::Error) -> Self {
        Self::Database(match error {
            sqlx::Error::Io(io) if is_unanswered_request(&io) => {
                sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before answering: is the database, or the proxy's server behind it, up?",
                ))
            }
            error => error,
        })
    }
}

/// sqlx's error when the connection closes before the server answers its TLS request: an
/// end of file with nothing more to say. One that closes in the middle of a message carries
/// sqlx's "expected to read N bytes, got M bytes at EOF" instead, and is left as it is.
fn is_unanswered_request(error: &std::io::Error) -> bool {
    error.kind() == std::io::ErrorKind::UnexpectedEof && error.get_ref().is_none()
}

/// Why one write produced no [`Outcome`](crate::Outcome). In every case nothing of the write
/// was committed and the key is free for a retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError<E> {
    /// The write's body returned an error; its transaction was rolled back.
    #[error("the write was refused")]
    Handler(#[source] E),
    /// The write's body panicked; its transaction was rolled back.
    #[error("the write panicked: {message}")]
    Panicked {
        /// The panic's message, when it had one.
        message: String,
    },
    /// The write's body ran past the store's write timeout
    /// ([`StoreConfig::with_write_timeout`](crate::StoreConfig::with_write_timeout)); it was
    /// cancelled and its transaction rolled back.
    #[error("the write ran longer than {after:?} and was rolled back")]
    TimedOut {
        /// The write timeout.
        after: std::time::Duration,
    },
    /// The write's body answered, but a statement of its own had failed and it did not return
    /// the error: PostgreSQL aborts the transaction at a failed statement and refuses every
    /// later one (SQLSTATE `25P02`), so the write could not be stored, and its transaction was
    /// rolled back. The body's own failure, not the store's: running it again fails the same
    /// way until the handler returns its database errors (or runs the risky statement under a
    /// savepoint of its own). SQLite and MySQL do not abort a transaction at a failed
    /// statement: there the body's answer commits with the statements that succeeded.
    #[error(
        "the write's body answered after one of its statements failed and aborted the transaction; nothing was written"
    )]
    BodyAbortedTransaction,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Displays an error with its causes, each once: `the idempotency store's database failed:
/// pool timed out while waiting for an open connection`. For logs and for a `main` that prints
/// the error it returns.
///
/// ```
/// use idem_runtime::{ErrorChain, StoreError};
///
/// let error = StoreError::from(sqlx::Error::PoolTimedOut);
/// assert_eq!(
///     ErrorChain(&error).to_string(),
///     "the idempotency store's database failed: pool timed out while waiting for an open connection"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    /// A cause that its outer error already printed (sqlx's errors end their message with
    /// their source's) is not printed again.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut printed = self.0.to_string();
        write!(f, "{printed}")?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !printed.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            printed = text;
            cause = error.source();
        }
        Ok(())
    }
}

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_cause_its_outer_error_already_printed_is_printed_once() {
        let error = StoreError::from(sqlx::Error::Configuration("bad sslmode".into()));
        let chain = ErrorChain(&error).to_string();
        assert_eq!(
            chain,
            "the idempotency store's database failed: error with configuration: bad sslmode"
        );
        assert_eq!(chain.matches("bad sslmode").count(), 1, "{chain}");
    }

    fn chain(error: &(dyn std::error::Error + 'static)) -> String {
        ErrorChain(error).to_string()
    }

    #[test]
    fn each_cause_is_printed_once() {
        let timed_out = StoreError::from(sqlx::Error::PoolTimedOut);
        let text = chain(&timed_out);
        assert_eq!(text.matches("pool timed out").count(), 1, "{text}");
        let exhausted = StoreError::RetriesExhausted {
            attempts: 3,
            last: sqlx::Error::PoolTimedOut,
        };
        assert!(
            exhausted.source().is_some(),
            "the last failure is the source"
        );
        assert_eq!(chain(&exhausted).matches("pool timed out").count(), 1);
        let refused: WriteError<std::io::Error> =
            WriteError::Handler(std::io::Error::other("card declined"));
        assert_eq!(chain(&refused), "the write was refused: card declined");
    }

    /// Only the bare end of file of an unanswered request is explained; an end of file in the
    /// middle of a message (a connection lost during a query) keeps sqlx's own words.
    #[test]
    fn an_end_of_file_mid_message_is_not_taken_for_an_unanswered_request() {
        let mid_message = StoreError::from(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "expected to read 5 bytes, got 0 bytes at EOF",
        )));
        let text = chain(&mid_message);
        assert!(text.contains("expected to read 5 bytes"), "{text}");
        assert!(!text.contains("before answering"), "{text}");
        let unanswered =
            StoreError::from(sqlx::Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        assert!(chain(&unanswered).contains("before answering"));
    }
}
