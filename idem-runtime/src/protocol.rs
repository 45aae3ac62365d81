//! The exactly-once write protocol: claim the key, run the body, store the response, commit.

use std::any::Any;
use std::error::Error as StdError;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, LocalBoxFuture};
use sqlx::Transaction;
use sqlx::error::DatabaseError;
use tokio::time::{Instant, sleep, timeout_at};
use uuid::Uuid;

use crate::backend::{Claim, KeyRecord, KeyScope, OutboxRecord};
use crate::in_flight::{Turn, leader_finished};
use crate::store::now_ms;
use crate::{
    Backend, Fingerprint, IdempotencyKey, IdempotencyStore, Operation, RegisteredOperation,
    StoreError, StoredResponse, TenantId, WriteError, entity_id,
};

/// How one call of [`IdempotencyStore::execute`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body ran and its write, the key and the response committed together.
    New {
        /// The body's response, as stored.
        response: StoredResponse,
        /// How many attempts the write took; more than 1 when transient failures were retried.
        attempts: u32,
        /// How many outbox events the write recorded.
        events: u32,
    },
    /// The key was already used with the same fingerprint: this is the stored response, and
    /// nothing ran.
    Replayed {
        /// The response stored by the write that used the key first.
        response: StoredResponse,
    },
    /// The key was already used with a different fingerprint: nothing ran.
    FingerprintMismatch,
    /// A twin with the same key is still running past the lock timeout: nothing ran.
    InFlight {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
}

/// What the body of a write receives: its open transaction and the ids of the write.
///
/// Only [`IdempotencyStore::execute`] creates one, after the key is claimed in the same
/// transaction, so a statement run through [`WriteContext::tx`] commits exactly when the key
/// and the stored response do.
pub struct WriteContext<'r, DB: Backend> {
    tx: Transaction<'static, DB>,
    operation: &'static Operation,
    tenant: &'r TenantId,
    key: &'r IdempotencyKey,
    entity_id: Uuid,
    attempt: u32,
    events: u32,
}

impl<DB: Backend> WriteContext<'_, DB> {
    /// Records an event in the write's transaction, for an
    /// [`OutboxDispatcher`](crate::OutboxDispatcher) to deliver after the commit: at least once,
    /// only if the write commits, never for a replay. Returns the event's id, UUID v5 of
    /// `{topic}:{n}` (the write's `n`th event) under the write's entity id, so every attempt
    /// of one write records the same ids and a handler can dedupe on them.
    pub async fn record_event(
        &mut self,
        topic: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<Uuid, sqlx::Error> {
        self.events += 1;
        let event_id = Uuid::new_v5(
            &self.entity_id,
            format!("{topic}:{}", self.events).as_bytes(),
        );
        let record = OutboxRecord {
            event_id,
            tenant: self.tenant,
            operation: self.operation.name(),
            entity_id: self.entity_id,
            topic,
            payload: payload.as_ref(),
            now_ms: now_ms(),
        };
        DB::record_event(&mut self.tx, &record).await?;
        Ok(event_id)
    }

    /// The write's open transaction: run every statement of the write on it.
    pub fn tx(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }

    /// The deterministic id of the entity this write creates (see [`entity_id`]).
    pub fn entity_id(&self) -> Uuid {
        self.entity_id
    }

    /// The operation being written.
    pub fn operation(&self) -> &'static Operation {
        self.operation
    }

    /// The tenant the write belongs to.
    pub fn tenant(&self) -> &TenantId {
        self.tenant
    }

    /// The write's idempotency key.
    pub fn key(&self) -> &IdempotencyKey {
        self.key
    }

    /// Which attempt this is, from 1; above 1 after a transient failure was retried.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// The boxed future a body returns: `Send` for [`IdempotencyStore::execute`], not for
/// [`IdempotencyStore::execute_local`]. One protocol serves both.
trait BodyFuture {
    type Future<'c, E: 'c>: Future<Output = Result<StoredResponse, E>> + 'c;
}

enum Sendable {}

impl BodyFuture for Sendable {
    type Future<'c, E: 'c> = BoxFuture<'c, Result<StoredResponse, E>>;
}

enum Local {}

impl BodyFuture for Local {
    type Future<'c, E: 'c> = LocalBoxFuture<'c, Result<StoredResponse, E>>;
}

/// Why one attempt did not produce an outcome.
enum AttemptFailure<E> {
    /// A transient failure: a fresh attempt may succeed.
    Transient(Transient<E>),
    /// Final: no further attempt.
    Final(WriteError<E>),
}

/// A transient failure, kept to report if it was the last attempt.
enum Transient<E> {
    Store(sqlx::Error),
    Handler(E),
}

impl<DB: Backend> IdempotencyStore<DB> {
    /// Runs `body` exactly once for (`tenant`, operation, `key`).
    ///
    /// - A committed record with the same fingerprint is replayed without a write transaction
    ///   ([`Outcome::Replayed`]); with another fingerprint, refused ([`Outcome::FingerprintMismatch`]).
    /// - Otherwise the key is claimed in a new transaction, the body runs on it, the response is
    ///   stored and all of it commits together ([`Outcome::New`]).
    /// - A twin in this process waits for the first without holding a connection; a twin in
    ///   another process waits on the key's row. Either waits at most the lock timeout, then
    ///   gets [`Outcome::InFlight`].
    /// - If the body returns an error, panics or is cancelled (its future dropped), the
    ///   transaction rolls back and the key is free again.
    /// - Serialization failures, deadlocks and busy errors, of the protocol's own statements or
    ///   found in the body error's `source()` chain as a [`sqlx::Error`], roll back and retry
    ///   the whole attempt, body included, under the store's [`RetryPolicy`](crate::RetryPolicy).
    ///   The body is therefore `FnMut`: it must be safe to run again on a fresh transaction.
    pub async fn execute<Op, F, E>(
        &self,
        operation: Op,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        body: F,
    ) -> Result<Outcome, WriteError<E>>
    where
        Op: RegisteredOperation,
        F: for<'c, 'r> FnMut(
                &'c mut WriteContext<'r, DB>,
            ) -> BoxFuture<'c, Result<StoredResponse, E>>
            + Send,
        E: StdError + Send + 'static,
    {
        self.run::<Sendable, _, _, _>(operation, tenant, key, fingerprint, body)
            .await
    }

    /// [`Self::execute`] for a body whose future is not `Send`, such as an actix-web handler
    /// that holds an `HttpRequest`. Everything else is the same.
    pub async fn execute_local<Op, F, E>(
        &self,
        operation: Op,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        body: F,
    ) -> Result<Outcome, WriteError<E>>
    where
        Op: RegisteredOperation,
        F: for<'c, 'r> FnMut(
            &'c mut WriteContext<'r, DB>,
        ) -> LocalBoxFuture<'c, Result<StoredResponse, E>>,
        E: StdError + 'static,
    {
        self.run::<Local, _, _, _>(operation, tenant, key, fingerprint, body)
            .await
    }

    /// The protocol behind [`Self::execute`] and [`Self::execute_local`].
    async fn run<K, Op, F, E>(
        &self,
        _operation: Op,
        tenant: &TenantId,
        key: &IdempotencyKey,
        fingerprint: Fingerprint,
        mut body: F,
    ) -> Result<Outcome, WriteError<E>>
    where
        K: BodyFuture,
        Op: RegisteredOperation,
        F: for<'c, 'r> FnMut(&'c mut WriteContext<'r, DB>) -> K::Future<'c, E>,
        E: StdError + 'static,
    {
        let operation = Op::OPERATION;
        let scope = KeyScope {
            tenant,
            operation: operation.name(),
            key,
        };
        let entity_id = entity_id(tenant, operation.name(), key);
        let deadline = Instant::now() + self.config.lock_timeout();

        let _leadership = loop {
            if let Some(record) = self.find_record(&scope).await.map_err(StoreError::from)? {
                return Ok(replay_or_mismatch(record, &fingerprint));
            }
            match self.in_flight.lead_or_follow(entity_id) {
                Turn::Lead(leadership) => break leadership,
                Turn::Follow(leader) => {
                    if timeout_at(deadline, leader_finished(leader)).await.is_err() {
                        return Ok(self.in_flight_outcome());
                    }
                }
            }
        };

        let mut attempt = 1;
        loop {
            let failure = match self
                .attempt::<K, F, E>(
                    operation,
                    &scope,
                    &fingerprint,
                    entity_id,
                    attempt,
                    &mut body,
                )
                .await
            {
                Ok(outcome) => return Ok(outcome),
                Err(AttemptFailure::Final(error)) => return Err(error),
                Err(AttemptFailure::Transient(failure)) => failure,
            };
            if attempt >= self.config.retry().max_attempts() {
                return Err(match failure {
                    Transient::Store(last) => StoreError::RetriesExhausted {
                        attempts: attempt,
                        last,
                    }
                    .into(),
                    Transient::Handler(error) => WriteError::Handler(error),
                });
            }
            tracing::debug!(
                operation = operation.name(),
                attempt,
                "retrying a transient failure"
            );
            sleep(self.config.retry().backoff(attempt)).await;
            attempt += 1;
        }
    }

    async fn attempt<K, F, E>(
        &self,
        operation: &'static Operation,
        scope: &KeyScope<'_>,
        fingerprint: &Fingerprint,
        entity_id: Uuid,
        attempt: u32,
        body: &mut F,
    ) -> Result<Outcome, AttemptFailure<E>>
    where
        K: BodyFuture,
        F: for<'c, 'r> FnMut(&'c mut WriteContext<'r, DB>) -> K::Future<'c, E>,
        E: StdError + 'static,
    {
        let store_failure = |error| self.classify(error);
        let mut tx = DB::begin_write(&self.pool, self.config.lock_timeout())
            .await
            .map_err(store_failure)?;
        let attempt_id = fastrand::i64(..);
        let claim = Claim {
            scope,
            fingerprint,
            entity_id,
            attempt_id,
            now_ms: now_ms(),
            expired_at_or_before_ms: self.expired_at_or_before_ms(),
        };
        match DB::claim(&mut tx, &claim).await {
            Ok(true) => {}
            Ok(false) => {
                rollback(tx).await;
                return match self.find_record(scope).await.map_err(store_failure)? {
                    Some(record) => Ok(replay_or_mismatch(record, fingerprint)),
                    // The winner's row expired or was purged in between: claim again.
                    None => Err(AttemptFailure::Transient(Transient::Store(
                        sqlx::Error::RowNotFound,
                    ))),
                };
            }
            Err(sqlx::Error::Database(error)) if DB::is_lock_timeout(error.as_ref()) => {
                rollback(tx).await;
                return Ok(self.in_flight_outcome());
            }
            Err(error) => {
                rollback(tx).await;
                return Err(store_failure(error));
            }
        }

        let mut context = WriteContext {
            tx,
            operation,
            tenant: scope.tenant,
            key: scope.key,
            entity_id,
            attempt,
            events: 0,
        };
        let result = AssertUnwindSafe(body(&mut context)).catch_unwind().await;
        let WriteContext { mut tx, events, .. } = context;
        let response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => {
                rollback(tx).await;
                return Err(if self.is_transient_chain(&error) {
                    AttemptFailure::Transient(Transient::Handler(error))
                } else {
                    AttemptFailure::Final(WriteError::Handler(error))
                });
            }
            Err(panic) => {
                rollback(tx).await;
                let message = panic_message(panic.as_ref());
                tracing::error!(operation = operation.name(), %message, "a write panicked; rolled back");
                return Err(AttemptFailure::Final(WriteError::Panicked { message }));
            }
        };

        if let Err(error) = DB::store_response(&mut tx, scope, &response).await {
            rollback(tx).await;
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
                self.settle_ambiguous_commit(scope, fingerprint, attempt_id, committed, error)
                    .await
            }
        }
    }

    /// COMMIT failed: it may or may not have landed. The key's row says which; a row with this
    /// attempt's id means it did (and `committed` is the answer), so the request is never taken
    /// for its own duplicate.
    async fn settle_ambiguous_commit<E>(
        &self,
        scope: &KeyScope<'_>,
        fingerprint: &Fingerprint,
        attempt_id: i64,
        committed: Outcome,
        commit_error: sqlx::Error,
    ) -> Result<Outcome, AttemptFailure<E>> {
        match self.find_record(scope).await {
            Ok(Some(record)) if record.attempt_id == attempt_id => {
                self.outbox_signal.notify_waiters();
                Ok(committed)
            }
            Ok(Some(record)) => Ok(replay_or_mismatch(record, fingerprint)),
            // Nothing committed: the attempt can be made again.
            Ok(None) => Err(self.classify(commit_error)),
            Err(_) => Err(AttemptFailure::Final(
                StoreError::Database(commit_error).into(),
            )),
        }
    }

    fn in_flight_outcome(&self) -> Outcome {
        Outcome::InFlight {
            retry_after: self.config.retry_after(),
        }
    }

    fn classify<E>(&self, error: sqlx::Error) -> AttemptFailure<E> {
        match &error {
            sqlx::Error::Database(db) if DB::is_transient(db.as_ref()) => {
                AttemptFailure::Transient(Transient::Store(error))
            }
            _ => AttemptFailure::Final(StoreError::Database(error).into()),
        }
    }

    /// Whether the body's error was caused by a transient database failure found anywhere in
    /// its `source()` chain: as a [`sqlx::Error`], as the boxed database error that
    /// `sqlx::Error` gives as its source (all an `#[error(transparent)]` wrapper exposes), or
    /// as the driver's own error type.
    fn is_transient_chain(&self, error: &(dyn StdError + 'static)) -> bool {
        let mut cause = Some(error);
        while let Some(error) = cause {
            let database_error = if let Some(sqlx::Error::Database(db)) = error.downcast_ref() {
                Some(db.as_ref())
            } else if let Some(db) = error.downcast_ref::<Box<dyn DatabaseError>>() {
                Some(db.as_ref())
            } else {
                DB::driver_error(error)
            };
            if let Some(db) = database_error {
                return DB::is_transient(db);
            }
            cause = error.source();
        }
        false
    }
}

fn replay_or_mismatch(record: KeyRecord, fingerprint: &Fingerprint) -> Outcome {
    if record.fingerprint == fingerprint.as_bytes() {
        Outcome::Replayed {
            response: record.response,
        }
    } else {
        Outcome::FingerprintMismatch
    }
}

/// Rolls back explicitly so the key is free before the answer goes out. If the connection is
/// gone, the server has rolled back already.
async fn rollback<DB: Backend>(tx: Transaction<'static, DB>) {
    if let Err(error) = tx.rollback().await {
        tracing::warn!(%error, "rollback failed; the database rolls back on disconnect");
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
