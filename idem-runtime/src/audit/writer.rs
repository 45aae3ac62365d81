//! The audit writer: the rows of outcomes that changed nothing, written after their answers
//! from the store's own runtime; the flush at shutdown; the retention purge.

use std::time::Duration;

use sqlx::error::ErrorKind;

use super::{AuditRecord, Queued};
use crate::clock::millis;
use crate::observe::record_lost_audit_rows;
use crate::{Backend, IdempotencyStore, StoreError};

impl<DB: Backend> IdempotencyStore<DB> {
    /// Queues the audit row of an outcome that changed nothing, and starts the writer that
    /// inserts the queue in batches if none is running; when the queue is full, writes the row
    /// now, before the answer, rather than lose it.
    pub(crate) async fn audit_after_answer(&self, record: AuditRecord) {
        match self.audit_queue.push(record) {
            Queued::Taken => {}
            Queued::StartWriter => {
                let store = self.clone();
                self.background
                    .spawn(async move { store.write_audit_queue().await });
            }
            Queued::Full(record) => {
                tracing::warn!("the audit queue is full: this request writes its own audit row");
                self.append_audit_rows(std::slice::from_ref(&record)).await;
            }
        }
    }

    /// Inserts the queued audit rows, a batch at a time, until the queue is empty, lingering
    /// for the coalescing window after each batch.
    async fn write_audit_queue(&self) {
        while let Some(batch) = self.audit_queue.next_batch() {
            self.append_audit_rows(&batch).await;
            self.audit_queue.done(batch.len());
            self.audit_queue
                .linger(self.config.audit_coalescing_window())
                .await;
        }
    }

    /// Inserts audit rows in one statement, retrying a busy database (on SQLite, the writer a
    /// conflict was about) under the retry policy; rows it cannot write are logged and counted.
    ///
    /// A connection that fails on its own I/O is tried again on another: a pooled connection
    /// opened by a request's worker dies with that worker's runtime (at shutdown, "a Tokio
    /// context … is being shutdown"), and the pool discards it; at worst every pooled
    /// connection is such a one, so as many tries as the pool holds, plus one, reach a new
    /// connection on the writer's own runtime.
    ///
    /// A connection that fails after sending the insert leaves its outcome unknown: the batch
    /// may have committed (the server's answer was what got lost). The insert is one
    /// statement, so all its rows landed or none did, and each row's id is its own (a UUID):
    /// when the next try then meets a unique violation, the rows are there, and nothing is
    /// lost or counted lost.
    async fn append_audit_rows(&self, rows: &[AuditRecord]) {
        let broken_connections = self.pool.options().get_max_connections() + 1;
        let mut broken = 0;
        loop {
            let append = self
                .config
                .retry()
                .run_statement::<DB, _, _>("an audit batch", || {
                    DB::append_audit_batch(&self.pool, self.config.statements(), rows)
                });
            match append.await {
                Err(sqlx::Error::Database(error))
                    if broken > 0 && error.kind() == ErrorKind::UniqueViolation =>
                {
                    tracing::debug!(
                        rows = rows.len(),
                        "an audit batch whose answer was lost had committed"
                    );
                    return;
                }
                Err(sqlx::Error::Io(error)) if broken < broken_connections => {
                    broken += 1;
                    tracing::debug!(%error, "an audit batch met a broken connection; trying another");
                }
                Err(error) => {
                    tracing::error!(rows = rows.len(), %error, "audit rows could not be written");
                    record_lost_audit_rows(rows.iter().flat_map(AuditRecord::outcomes));
                    return;
                }
                Ok(()) => return,
            }
        }
    }

    /// Deletes the audit rows older than `age`, and returns how many: the one path that the
    /// log's triggers let through (they refuse any other UPDATE or DELETE). On PostgreSQL it
    /// runs as the owner's `idempotent_write_audit_purge`, which never deletes rows younger
    /// than the owner's floor (`idempotent_write_audit_settings.min_retention_ms`, 90 days
    /// unless the owner changes it), whatever `age` says. Logged at WARN, since it destroys
    /// evidence: archive the rows first if the law asks you to keep them longer.
    pub async fn purge_audit_older_than(&self, age: Duration) -> Result<u64, StoreError> {
        let older_than_ms = millis(age);
        let purged = self
            .config
            .purge_pace()
            .purge(&mut || false, |rows| {
                DB::purge_audit(&self.pool, self.config.statements(), older_than_ms, rows)
            })
            .await?;
        tracing::warn!(
            purged,
            older_than_ms,
            "audit log maintenance: deleted rows older than the horizon"
        );
        Ok(purged)
    }

    /// Waits until every audit row that this store writes after answering (replays,
    /// mismatches, failures, conflicts: the outcomes that changed nothing) is written. Call it
    /// at shutdown, after the server stopped, so no row is lost with the process.
    pub async fn flush_audit(&self) {
        self.audit_queue.drained().await;
    }

    /// [`Self::flush_audit`] for at most `bound`, for a process that must exit in bounded time
    /// even when its database is unreachable: the rows still unwritten then are given up,
    /// logged and counted in `idempotent_write_audit_rows_lost_total`, one per outcome (a row
    /// standing for repeats counts each). Returns how many outcomes.
    pub async fn flush_audit_within(&self, bound: Duration) -> usize {
        if tokio::time::timeout(bound, self.flush_audit())
            .await
            .is_ok()
        {
            return 0;
        }
        let lost = self.audit_queue.abandon();
        tracing::error!(
            rows = lost.len(),
            bound_ms = bound.as_millis(),
            "audit rows could not be written before shutdown; they are lost"
        );
        let count = lost.len();
        record_lost_audit_rows(lost);
        count
    }
}
