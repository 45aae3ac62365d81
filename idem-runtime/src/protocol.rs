//! The exactly-once write protocol: claim the key, run the body, store the response, commit.
//!
//! This module holds the API and the loop around the attempts: the replay fast path, the
//! coalescing of twins, the retries, and what every write leaves for operators. One attempt,
//! from `BEGIN` to `COMMIT`, is in [`crate::attempt`].

use std::error::Error as StdError;

use futures_util::future::{BoxFuture, LocalBoxFuture};
use tokio::time::{Instant, sleep, timeout_at};
use tracing::Instrument;
use tracing::field::Empty;

use crate::attempt::{
    AttemptFailure, BodyFuture, Call, Local, Sendable, Transient, replay_or_mismatch,
};
use crate::audit::{Failure, WriteOutcome};
use crate::backend::{KeyRecord, KeyScope, Statements};
use crate::in_flight::{Turn, leader_finished};
use crate::observe::{record_metrics, sha256_hex};
use crate::operation::{is_registered, registry_verdict};
use crate::{
    Backend, ErrorChain, IdempotencyStore, Operation, Outcome, RegisteredOperation, StoreError,
    StoredResponse, WriteContext, WriteError, WriteRequest, entity_id,
};

impl<DB: Backend> IdempotencyStore<DB> {
    /// Runs `body` exactly once for the request's (tenant, operation, key).
    ///
    /// - A committed record with the same fingerprint is replayed without a write transaction
    ///   ([`Outcome::Replayed`]); with another fingerprint, refused ([`Outcome::FingerprintMismatch`]).
    /// - Otherwise the key is claimed in a new transaction, the body runs on it, the response is
    ///   stored, the audit row is appended and all of it commits together ([`Outcome::New`]).
    /// - A twin in this process waits for the first without holding a connection; a twin in
    ///   another process waits on the key's row. Either waits at most the lock timeout, then
    ///   gets [`Outcome::InFlight`].
    /// - If the body returns an error, panics or is cancelled (its future dropped), the
    ///   transaction rolls back and the key is free again.
    /// - Serialization failures, deadlocks and busy errors, of the protocol's own statements or
    ///   found in the body error's `source()` chain as a [`sqlx::Error`], roll back and retry
    ///   the whole attempt, body included, under the store's [`RetryPolicy`](crate::RetryPolicy).
    ///   The body is therefore `FnMut`: it must be safe to run again on a fresh transaction.
    /// - The body's future borrows only the [`WriteContext`], so the body owns what it uses:
    ///   move owned values in and clone them per attempt, rather than borrowing from the caller
    ///   (a borrow fails with "borrowed data escapes" or a `'static` requirement):
    ///
    ///   ```text
    ///   let month = month.to_owned();
    ///   store.execute(CloseMonth, request, move |write| {
    ///       let month = month.clone();
    ///       Box::pin(async move { /* statements on write.tx() using month */ })
    ///   })
    ///   ```
    /// - Nothing runs while the program's registry is invalid (two operations share a name):
    ///   every call fails with [`StoreError::Registry`]. The check runs once per process.
    /// - Every call is observed: a tracing span `idem.write`, the metrics of
    ///   [`METRIC_NAMES`](crate::METRIC_NAMES), and a row of `idempotent_write_audit_log`
    ///   (in the write's transaction for a new write, after it for any other outcome).
    ///
    /// The returned future does not name `Op`, so an operation that is not registered is one
    /// compile error, at the argument.
    pub fn execute<'a, Op, F, E>(
        &'a self,
        _operation: Op,
        request: WriteRequest<'a>,
        body: F,
    ) -> BoxFuture<'a, Result<Outcome, WriteError<E>>>
    where
        Op: RegisteredOperation,
        F: for<'c, 'r> FnMut(
                &'c mut WriteContext<'r, DB>,
            ) -> BoxFuture<'c, Result<StoredResponse, E>>
            + Send
            + 'a,
        E: StdError + Send + 'static,
    {
        Box::pin(self.run::<Sendable, _, _>(Op::OPERATION, request, body))
    }

    /// [`Self::execute`] for a body whose future is not `Send`, such as an actix-web handler
    /// that holds an `HttpRequest`. Everything else is the same.
    pub fn execute_local<'a, Op, F, E>(
        &'a self,
        _operation: Op,
        request: WriteRequest<'a>,
        body: F,
    ) -> LocalBoxFuture<'a, Result<Outcome, WriteError<E>>>
    where
        Op: RegisteredOperation,
        F: for<'c, 'r> FnMut(
                &'c mut WriteContext<'r, DB>,
            ) -> LocalBoxFuture<'c, Result<StoredResponse, E>>
            + 'a,
        E: StdError + 'static,
    {
        Box::pin(self.run::<Local, _, _>(Op::OPERATION, request, body))
    }

    /// The protocol behind [`Self::execute`] and [`Self::execute_local`], observed.
    async fn run<K, F, E>(
        &self,
        operation: &'static Operation,
        request: WriteRequest<'_>,
        body: F,
    ) -> Result<Outcome, WriteError<E>>
    where
        K: BodyFuture,
        F: for<'c, 'r> FnMut(&'c mut WriteContext<'r, DB>) -> K::Future<'c, E>,
        E: StdError + 'static,
    {
        if !is_registered(operation) {
            // Not an operation of this program: nothing runs, and nothing is recorded under a
            // name the registries do not vouch for.
            tracing::error!(
                operation = operation.name(),
                "refused: the operation is not in the linked registries"
            );
            return Err(StoreError::Unregistered {
                operation: operation.name(),
            }
            .into());
        }
        let (tenant, key) = (request.tenant(), request.key());
        let call = Call {
            operation,
            request,
            scope: KeyScope {
                tenant,
                operation: operation.name(),
                key,
            },
            entity_id: entity_id(tenant, operation.name(), key),
            key_hash: sha256_hex(key.as_str().as_bytes()),
            started: Instant::now(),
        };
        let span = tracing::info_span!(
            "idem.write",
            operation = operation.name(),
            class = operation.class().as_str(),
            tenant_hash = %sha256_hex(tenant.as_str().as_bytes()),
            key_hash = %call.key_hash,
            outcome = Empty,
            replayed = Empty,
            attempts = Empty,
            duration_ms = Empty,
        );
        let mut attempts = 0;
        let result = self
            .write::<K, F, E>(&call, &mut attempts, body)
            .instrument(span.clone())
            .await;

        let elapsed = call.started.elapsed();
        let (outcome, status, events) = match &result {
            Ok(Outcome::New {
                response, events, ..
            }) => (WriteOutcome::New, Some(response.status), *events),
            Ok(Outcome::Replayed { response }) => {
                (WriteOutcome::Replayed, Some(response.status), 0)
            }
            Ok(Outcome::FingerprintMismatch { .. }) => (WriteOutcome::Mismatch, None, 0),
            Ok(Outcome::InFlight { .. }) => (WriteOutcome::Conflict, None, 0),
            Err(WriteError::Handler(_)) => (WriteOutcome::Failed(Failure::Handler), None, 0),
            Err(WriteError::Panicked { .. }) => (WriteOutcome::Failed(Failure::Panic), None, 0),
            Err(WriteError::TimedOut { .. }) => (WriteOutcome::Failed(Failure::Timeout), None, 0),
            Err(WriteError::BodyAbortedTransaction) => {
                (WriteOutcome::Failed(Failure::Handler), None, 0)
            }
            Err(WriteError::Store(StoreError::OutcomeUnknown { .. })) => {
                (WriteOutcome::Failed(Failure::Unknown), None, 0)
            }
            Err(WriteError::Store(_)) => (WriteOutcome::Failed(Failure::Store), None, 0),
        };
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        span.record("outcome", outcome.as_str());
        span.record("replayed", outcome == WriteOutcome::Replayed);
        span.record("attempts", attempts);
        span.record("duration_ms", duration_ms);
        record_metrics(operation, outcome, events, elapsed);
        if outcome != WriteOutcome::New {
            // The new write's row committed with it. Every other outcome changed nothing, so its
            // row is written off the request's path (see `IdempotencyStore::flush_audit`).
            self.audit_after_answer(call.audit_record(outcome, status, attempts))
                .await;
        }
        result
    }

    /// The key's committed record on the read replica, if there is one and it has it. A replica
    /// that fails, or does not answer within the replica timeout, is passed over: the primary
    /// answers instead.
    async fn replica_record(&self, call: &Call<'_>) -> Option<KeyRecord> {
        let replica = self.replica.as_ref()?;
        let bound = self.config.replica_timeout();
        match tokio::time::timeout(bound, self.find_record_on(replica, &call.scope)).await {
            Ok(Ok(record)) => record,
            Ok(Err(error)) => {
                tracing::warn!(error = %ErrorChain(&error), "the read replica failed; the primary answers");
                None
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = bound.as_millis(),
                    "the read replica did not answer in time; the primary answers"
                );
                None
            }
        }
    }

    /// Replays, waits for a twin, or leads the claim and retries it.
    async fn write<K, F, E>(
        &self,
        call: &Call<'_>,
        attempts: &mut u32,
        mut body: F,
    ) -> Result<Outcome, WriteError<E>>
    where
        K: BodyFuture,
        F: for<'c, 'r> FnMut(&'c mut WriteContext<'r, DB>) -> K::Future<'c, E>,
        E: StdError + 'static,
    {
        registry_verdict().map_err(|error| StoreError::Registry(error.clone()))?;
        if let Some(record) = self.replica_record(call).await {
            return Ok(replay_or_mismatch(record, call.request.fingerprint()));
        }
        let deadline = Instant::now() + self.config.lock_timeout();
        // One connection serves the replay fast path and then, for a new write, its attempts:
        // a pool round trip saved. A follower gives it back while it waits, and reads the
        // leader's record once it finished. Behind a transaction pooler, where a read needs a
        // transaction of its own, a key no one in this process was writing is claimed without
        // reading first: the claim finds a committed record as well.
        let mut read_first = self.config.statements() == Statements::Prepared;
        let (leadership, mut conn) = loop {
            let mut conn = self.acquire_for_write().await.map_err(StoreError::from)?;
            if read_first {
                let record = self
                    .read_record(&mut conn, &call.scope)
                    .await
                    .map_err(StoreError::from)?;
                if let Some(record) = record {
                    return Ok(replay_or_mismatch(record, call.request.fingerprint()));
                }
            }
            match self.in_flight.lead_or_follow(call.entity_id) {
                Turn::Lead(leadership) => break (leadership, conn),
                Turn::Follow(leader) => {
                    drop(conn);
                    match timeout_at(deadline, leader_finished(leader)).await {
                        Err(_) => return Ok(self.in_flight_outcome()),
                        Ok(Some(record)) => {
                            let record = KeyRecord::clone(&record);
                            return Ok(replay_or_mismatch(record, call.request.fingerprint()));
                        }
                        // The leader rolled back: read, then lead or follow again.
                        Ok(None) => read_first = true,
                    }
                }
            }
        };

        loop {
            *attempts += 1;
            let attempt = self.attempt::<K, F, E>(call, *attempts, &mut conn, &mut body);
            let failure = match attempt.await {
                Ok(outcome) => {
                    if let Outcome::New { response, .. } | Outcome::Replayed { response } = &outcome
                    {
                        leadership.settled(KeyRecord {
                            fingerprint: call.request.fingerprint().to_stored(),
                            attempt_id: 0,
                            response: response.clone(),
                        });
                    }
                    return Ok(outcome);
                }
                Err(AttemptFailure::Final(error)) => return Err(error),
                Err(AttemptFailure::Transient(failure)) => failure,
            };
            if *attempts >= self.config.retry().max_attempts() {
                return Err(match failure {
                    Transient::Store(last) => StoreError::RetriesExhausted {
                        attempts: *attempts,
                        last,
                    }
                    .into(),
                    Transient::Handler(error) => WriteError::Handler(error),
                });
            }
            tracing::debug!(attempt = *attempts, "retrying a transient failure");
            sleep(self.config.retry().backoff(*attempts)).await;
        }
    }
}
