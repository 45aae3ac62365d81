//! What can go wrong in the store itself, and in one write.

use crate::RegistryError;

/// A failure of the idempotency store, not of the write's own logic.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement of the protocol.
    #[error("the idempotency store's database failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the store's schema migrations failed.
    #[error("applying idem's migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The program's registry of operations is invalid (two operations share a name), so no
    /// write runs: see [`verify_registry`](crate::verify_registry).
    #[error("no write runs while the registry of operations is invalid: {0}")]
    Registry(RegistryError),
    /// Every attempt met a transient failure (serialization failure, deadlock, busy database).
    #[error(
        "the write met a transient database failure on each of its {attempts} attempts: {last}"
    )]
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's failure.
        last: sqlx::Error,
    },
}

/// Why one write produced no [`Outcome`](crate::Outcome). In every case nothing of the write
/// was committed and the key is free for a retry.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<E> {
    /// The write's body returned an error; its transaction was rolled back.
    #[error("the write was refused: {0}")]
    Handler(E),
    /// The write's body panicked; its transaction was rolled back.
    #[error("the write panicked: {message}")]
    Panicked {
        /// The panic's message, when it had one.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
