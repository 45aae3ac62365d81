//! One attempt of a write: `BEGIN`, claim the key, run the body, store the response, append
//! the audit row, `COMMIT`. Any failure rolls back, so the key is free again.

use std::any::Any;
use std::error::Error as StdError;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, LocalBoxFuture};
use sqlx::Transaction;
use sqlx::error::DatabaseError;
use tokio::time::Instant;
use uuid::Uuid;

use crate::audit::{AuditRecord, WriteOutcome};
use crate::backend::{Claim, KeyRecord, KeyScope, Statements};
use crate::context;
use crate::{
    Backend, ErrorChain, Fingerprint, IdempotencyStore, Operation, Outcome, StoreError,
    StoredResponse, WriteContext, WriteError, WriteRequest,
};

/// The boxed future a body returns: `Send` for [`IdempotencyStore::execute`], not for
/// [`IdempotencyStore::execute_local`]. One protocol serves both.
pub(crate) trait BodyFuture {
    type Future<'c, E: 'c>: Future<Output = Result<StoredResponse, E>> + 'c;
}

pub(crate) enum Sendable {}

impl BodyFuture for Sendable {
    type Future<'c, E: 'c> = BoxFuture<'c, Result<StoredResponse, E>>;
}

pub(crate) enum Local {}

impl BodyFuture for Local {
    type Future<'c, E: 'c> = LocalBoxFuture<'c, Result<StoredResponse, E>>;
}

/// What every attempt of one call shares.
pub(crate) struct Call<'a> {
    pub(crate) operation: &'static Operation,
    pub(crate) request: WriteRequest<'a>,
    pub(crate) scope: KeyScope<'a>,
    pub(crate) entity_id: Uuid,
    pub(crate) key_hash: String,
    pub(crate) started: Instant,
}

impl Call<'_> {
    pub(crate) fn audit_record(
        &self,
        outcome: WriteOutcome,
        status: Option<u16>,
        attempts: u32,
    ) -> AuditRecord {
        let now = std::time::Instant::now();
        AuditRecord {
            id: Uuid::from_u128(fastrand::u128(..)),
            operation: self.operation,
            tenant: self.request.tenant().clone(),
            user: self.request.user().map(str::to_owned),
            key_hash: self.key_hash.clone(),
            entity_id: self.entity_id,
            fingerprint: *self.request.fingerprint(),
            outcome,
            status,
            attempts,
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            request_id: self.request.request_id().map(str::to_owned),
            at: now,
            first_at: now,
            repeats: 1,
        }
    }
}

/// Why one attempt did not produce an outcome.
pub(crate) enum AttemptFailure<E> {
    /// A transient failure: a fresh attempt may succeed.
    Transient(Transient<E>),
    /// Final: no further attempt.
    Final(WriteError<E>),
}

/// A transient failure, kept to report if it was the last attempt.
pub(crate) enum Transient<E> {
    Store(sqlx::Error),
    Handler(E),
}

impl<DB: Backend> IdempotencyStore<DB> {
    /// The answer to a twin that waited past the lock timeout.
    pub(crate) fn in_flight_outcome(&self) -> Outcome {
        Outcome::InFlight {
            retry_after: self.config.retry_after(),
        }
    }

    /// One attempt, on `conn` (the connection the replay fast path already used).
    pub(crate) async fn attempt<K, F, E>(
        &self,
        call: &Call<'_>,
        attempt: u32,
        conn: &mut DB::Connection,
        body: &mut F,
    ) -> Result<Outcome, AttemptFailure<E>>
    where
        K: BodyFuture,
        F: for<'c, 'r> FnMut(&'c mut WriteContext<'r, DB>) -> K::Future<'c, E>,
        E: StdError + 'static,
    {
        let store_failure = |error| self.classify(error);
        let statements = self.config.statements();
        let fingerprint = call.request.fingerprint();
        let mut tx = match DB::begin_write(
            conn,
            statements,
            self.config.lock_timeout(),
            call.scope.tenant,
        )
        .await
        {
            Ok(tx) => tx,
            // SQLite waits for its one writer at `BEGIN`, as long as the lock timeout.
            Err(sqlx::Error::Database(error)) if DB::is_lock_timeout(error.as_ref()) => {
                return Ok(self.in_flight_outcome());
            }
            Err(error) => return Err(store_failure(error)),
        };
        // Positive: MySQL hands it back through LAST_INSERT_ID, which is unsigned and 0 when unset.
        let attempt_id = fastrand::i64(1..);
        let claim = Claim {
            scope: &call.scope,
            fingerprint,
            entity_id: call.entity_id,
            attempt_id,
            retention_ms: self.retention_ms(call.operation),
        };
        match DB::claim(&mut tx, statements, &claim).await {
            Ok(true) => {}
            Ok(false) => {
                // Read in the claim's transaction: its statements see the winner's commit.
                let record = DB::find_record(&mut tx, statements, &call.scope).await;
                rollback(tx, statements).await;
                return match record.map_err(store_failure)? {
                    Some(record) => Ok(replay_or_mismatch(record, fingerprint)),
                    // The winner's row expired or was purged in between: claim again.
                    None => Err(AttemptFailure::Transient(Transient::Store(
                        sqlx::Error::RowNotFound,
                    ))),
                };
            }
            Err(sqlx::Error::Database(error)) if DB::is_lock_timeout(error.as_ref()) => {
                rollback(tx, statements).await;
                return Ok(self.in_flight_outcome());
            }
            Err(error) => {
                rollback(tx, statements).await;
                return Err(store_failure(error));
            }
        }

        let mut context = context::claimed(
            tx,
            call.operation,
            &call.scope,
            call.entity_id,
            attempt,
            attempt_id,
            statements,
        );
        let write_timeout = self.config.write_timeout();
        let result = tokio::time::timeout(
            write_timeout,
            AssertUnwindSafe(body(&mut context)).catch_unwind(),
        )
        .await;
        let (mut tx, events) = context.finish();
        let Ok(result) = result else {
            // The body was dropped mid-way: its statements roll back with the transaction.
            rollback(tx, statements).await;
            tracing::error!(
                timeout_ms = write_timeout.as_millis(),
                "a write ran past the write timeout; rolled back"
            );
            return Err(AttemptFailure::Final(WriteError::TimedOut {
                after: write_timeout,
            }));
        };
        let response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                // Only the write's own connection is idem's to judge: an error that merely
                // wraps an I/O error (a payment gateway's) is the handler's own answer while
                // the connection still rolls back.
                let connection_answered = rollback(tx, statements).await;
                if !connection_answered && is_connection_lost::<DB>(&error) {
                    tracing::warn!(error = %ErrorChain(&error), "the database connection was lost during a write");
                    return Err(AttemptFailure::Final(
                        StoreError::ConnectionLost {
                            detail: ErrorChain(&error).to_string(),
                        }
                        .into(),
                    ));
                }
                return Err(if self.is_transient_chain(&error) {
                    AttemptFailure::Transient(Transient::Handler(error))
                } else {
                    AttemptFailure::Final(WriteError::Handler(error))
                });
            }
            Err(panic) => {
                rollback(tx, statements).await;
                let message = panic_message(panic.as_ref());
                tracing::error!(%message, "a write panicked; rolled back");
                return Err(AttemptFailure::Final(WriteError::Panicked { message }));
            }
        };

        let audit = call.audit_record(WriteOutcome::New, Some(response.status), attempt);
        let recorded = match DB::end_write(&mut tx, statements).await {
            Ok(()) => DB::record_write(&mut tx, statements, &call.scope, &response, &audit).await,
            Err(error) => Err(error),
        };
        if let Err(error) = recorded {
            rollback(tx, statements).await;
            if is_aborted_transaction(&error) {
                tracing::error!(error = %ErrorChain(&error), "a write's body answered after a failed statement aborted its transaction; rolled back");
                return Err(AttemptFailure::Final(WriteError::BodyAbortedTransaction));
            }
            return Err(store_failure(error));
        }
        let committed = Outcome::New {
            response,
            attempts: attempt,
            events,
        };
        match tx.commit().await {
            Ok(()) => {
                if events > 0 {
                    self.outbox_signal.notify_waiters();
                }
                Ok(committed)
            }
            Err(error) => {
                self.settle_ambiguous_commit(call, attempt_id, committed, error)
                    .await
            }
        }
    }

    /// COMMIT failed: it may or may not have landed. The key's row says which; a row with this
    /// attempt's id means it did (and `committed` is the answer), so the request is never taken
    /// for its own duplicate. The row is read again until the acquire timeout (a failover
    /// takes seconds); if it still cannot be read, the outcome is unknown, and said so.
    async fn settle_ambiguous_commit<E>(
        &self,
        call: &Call<'_>,
        attempt_id: i64,
        committed: Outcome,
        commit_error: sqlx::Error,
    ) -> Result<Outcome, AttemptFailure<E>> {
        let deadline = Instant::now() + self.config.acquire_timeout();
        let mut wait = Duration::from_millis(50);
        loop {
            match self.find_record_anew(&call.scope).await {
                Ok(Some(record)) if record.attempt_id == attempt_id => {
                    self.outbox_signal.notify_waiters();
                    return Ok(committed);
                }
                Ok(Some(record)) => {
                    return Ok(replay_or_mismatch(record, call.request.fingerprint()));
                }
                // Nothing committed: the attempt can be made again.
                Ok(None) => return Err(self.classify(commit_error)),
                Err(error) if Instant::now() + wait >= deadline => {
                    tracing::error!(commit = %ErrorChain(&commit_error), read = %ErrorChain(&error), "a write's COMMIT got no answer and its outcome could not be read back: it may have committed");
                    return Err(AttemptFailure::Final(
                        StoreError::OutcomeUnknown {
                            commit: commit_error,
                        }
                        .into(),
                    ));
                }
                Err(_) => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn classify<E>(&self, error: sqlx::Error) -> AttemptFailure<E> {
        match &error {
            sqlx::Error::Database(db) if DB::is_transient(db.as_ref()) => {
                AttemptFailure::Transient(Transient::Store(error))
            }
            _ => AttemptFailure::Final(StoreError::from(error).into()),
        }
    }

    /// Whether the body's error was caused by a transient database failure: the first
    /// [`database_error`] of its `source()` chain.
    fn is_transient_chain(&self, error: &(dyn StdError + 'static)) -> bool {
        causes(error)
            .find_map(database_error::<DB>)
            .is_some_and(DB::is_transient)
    }
}

/// PostgreSQL's `in_failed_sql_transaction`: a statement of the transaction failed before, and
/// the server refuses every later one until the transaction ends.
fn is_aborted_transaction(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("25P02"))
}

/// An error and its `source()` chain, outermost first.
fn causes<'e>(
    error: &'e (dyn StdError + 'static),
) -> impl Iterator<Item = &'e (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&cause| cause.source())
}

/// The database's own error, if `cause` is one: as a [`sqlx::Error`], as the boxed database
/// error that `sqlx::Error` gives as its source (all an `#[error(transparent)]` wrapper
/// exposes), or as the driver's own error type.
fn database_error<'e, DB: Backend>(
    cause: &'e (dyn StdError + 'static),
) -> Option<&'e dyn DatabaseError> {
    if let Some(sqlx::Error::Database(db)) = cause.downcast_ref() {
        Some(db.as_ref())
    } else if let Some(db) = cause.downcast_ref::<Box<dyn DatabaseError>>() {
        Some(db.as_ref())
    } else {
        DB::driver_error(cause)
    }
}

/// Whether an error's `source()` chain shows the database connection lost: an I/O error, a
/// pool that could not hand out a connection, or the server's own word (SQLSTATE class `08`,
/// connection exception, or `57P`, the server shutting down, crashed or starting).
pub(crate) fn is_connection_lost<DB: Backend>(error: &(dyn StdError + 'static)) -> bool {
    for cause in causes(error) {
        let lost = cause.is::<std::io::Error>()
            || matches!(
                cause.downcast_ref::<sqlx::Error>(),
                Some(
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                )
            );
        if lost {
            return true;
        }
        if let Some(code) = database_error::<DB>(cause).and_then(|db| db.code()) {
            return code.starts_with("08") || code.starts_with("57P");
        }
    }
    false
}

pub(crate) fn replay_or_mismatch(record: KeyRecord, fingerprint: &Fingerprint) -> Outcome {
    if fingerprint.matches_stored(&record.fingerprint) {
        Outcome::Replayed {
            response: record.response,
        }
    } else {
        Outcome::FingerprintMismatch {
            differing: fingerprint.differing_parts(&record.fingerprint),
        }
    }
}

/// Rolls back explicitly so the key is free before the answer goes out (after undoing what the
/// write left on the session: `Backend::end_write`). If the connection is gone, the server has
/// rolled back already. `true` when the connection answered the rollback.
async fn rollback<DB: Backend>(mut tx: Transaction<'_, DB>, statements: Statements) -> bool {
    if let Err(error) = DB::end_write(&mut tx, statements).await {
        tracing::warn!(%error, "undoing the write's session state failed");
    }
    match tx.rollback().await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "rollback failed; the database rolls back on disconnect");
            false
        }
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
