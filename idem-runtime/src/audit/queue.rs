//! The audit rows of outcomes that changed nothing (replays, mismatches, failures, conflicts),
//! queued so that one writer inserts them in batches after the answers went out: a replay
//! costs one read on its request path, and a burst of replays costs one commit per batch.
//!
//! The queue is bounded and drains oldest first. When it is full (the database is slower than
//! the replays, or down), a request writes its own row before it is answered rather than lose
//! it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::AuditRecord;
use crate::Operation;

/// The most rows one statement inserts (well under both backends' parameter limits).
pub(crate) const MAX_BATCH: usize = 500;

#[derive(Debug, Clone)]
pub(crate) struct AuditQueue(Arc<State>);

#[derive(Debug)]
struct State {
    /// The most rows waiting; past it, requests write their own.
    capacity: usize,
    /// Rows waiting, oldest first, and whether a writer is draining them.
    queue: Mutex<(VecDeque<AuditRecord>, bool)>,
    /// The operations of the batch the writer is inserting, to count if it is abandoned.
    writing: Mutex<Vec<&'static Operation>>,
    /// Rows queued or being written.
    pending: AtomicUsize,
    /// Woken when `pending` drops to zero.
    idle: Notify,
}

/// What became of a row offered to the queue.
pub(crate) enum Queued {
    /// Queued; no writer runs, the caller must start one.
    StartWriter,
    /// Queued; the running writer takes it.
    Taken,
    /// The queue is full: the caller writes the row itself.
    Full(Box<AuditRecord>),
}

impl AuditQueue {
    /// An empty queue that holds at most `capacity` rows.
    pub(crate) fn new(capacity: usize) -> Self {
        Self(Arc::new(State {
            capacity,
            queue: Mutex::default(),
            writing: Mutex::default(),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
        }))
    }

    /// Offers a row to the queue.
    pub(crate) fn push(&self, record: AuditRecord) -> Queued {
        let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.0.len() >= self.0.capacity {
            return Queued::Full(Box::new(record));
        }
        self.0.pending.fetch_add(1, Ordering::SeqCst);
        queue.0.push_back(record);
        if std::mem::replace(&mut queue.1, true) {
            Queued::Taken
        } else {
            Queued::StartWriter
        }
    }

    /// The next batch for the writer, oldest rows first, or `None` when the queue is empty and
    /// the writer stops.
    pub(crate) fn next_batch(&self) -> Option<Vec<AuditRecord>> {
        let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.0.is_empty() {
            queue.1 = false;
            return None;
        }
        let take = queue.0.len().min(MAX_BATCH);
        let batch: Vec<AuditRecord> = queue.0.drain(..take).collect();
        *self
            .0
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            batch.iter().map(|record| record.operation).collect();
        Some(batch)
    }

    /// `rows` were written (or given up on).
    pub(crate) fn done(&self, rows: usize) {
        self.0
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        // Saturating: rows abandoned at shutdown are no longer counted.
        let before = self
            .0
            .pending
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |pending| {
                Some(pending.saturating_sub(rows))
            })
            .unwrap_or_default();
        if before <= rows {
            self.0.idle.notify_waiters();
        }
    }

    /// Rows queued or being written.
    pub(crate) fn pending(&self) -> usize {
        self.0.pending.load(Ordering::SeqCst)
    }

    /// Gives up on every row queued or being written (the process is exiting and the database
    /// does not take them): the operations of those rows, to count as lost.
    pub(crate) fn abandon(&self) -> Vec<&'static Operation> {
        let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lost: Vec<&'static Operation> = self
            .0
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        lost.extend(queue.0.drain(..).map(|record| record.operation));
        self.0.pending.store(0, Ordering::SeqCst);
        self.0.idle.notify_waiters();
        lost
    }

    /// Resolves when no row is queued or being written.
    pub(crate) async fn drained(&self) {
        loop {
            let idle = self.0.idle.notified();
            if self.pending() == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::audit::WriteOutcome;
    use crate::{Fingerprint, OperationClass, TenantId};

    static OPERATION: Operation = Operation::__new(
        "createPayment",
        OperationClass::Financial,
        None,
        file!(),
        line!(),
    );

    fn row(n: u128) -> AuditRecord {
        AuditRecord {
            id: Uuid::from_u128(n),
            operation: &OPERATION,
            tenant: TenantId::new("acme").unwrap(),
            user: None,
            key_hash: String::new(),
            entity_id: Uuid::nil(),
            fingerprint: Fingerprint::of_request("createPayment", "POST", "/", "", b""),
            outcome: WriteOutcome::Replayed,
            status: Some(200),
            attempts: 0,
            duration_ms: 0.0,
            request_id: None,
            now_ms: 0,
        }
    }

    #[test]
    fn drains_oldest_first_in_bounded_batches() {
        let queue = AuditQueue::new(10_000);
        assert!(matches!(queue.push(row(0)), Queued::StartWriter));
        for n in 1..(MAX_BATCH as u128 + 10) {
            assert!(matches!(queue.push(row(n)), Queued::Taken));
        }
        let first = queue.next_batch().unwrap();
        assert_eq!(first.len(), MAX_BATCH);
        assert_eq!(first[0].id, Uuid::from_u128(0));
        assert_eq!(
            first[MAX_BATCH - 1].id,
            Uuid::from_u128(MAX_BATCH as u128 - 1)
        );
        let rest = queue.next_batch().unwrap();
        assert_eq!(rest.len(), 10);
        assert_eq!(rest[0].id, Uuid::from_u128(MAX_BATCH as u128));
        assert!(queue.next_batch().is_none());
        assert!(
            matches!(queue.push(row(99)), Queued::StartWriter),
            "the writer stopped"
        );
    }

    #[test]
    fn a_full_queue_hands_the_row_back() {
        let queue = AuditQueue::new(2);
        queue.push(row(1));
        queue.push(row(2));
        let Queued::Full(back) = queue.push(row(3)) else {
            panic!("the queue holds two rows");
        };
        assert_eq!(back.id, Uuid::from_u128(3));
        assert_eq!(queue.pending(), 2, "a row handed back is not counted");
    }

    #[test]
    fn abandoning_counts_the_queued_rows_and_the_batch_being_written() {
        let queue = AuditQueue::new(10_000);
        for n in 0..(MAX_BATCH as u128 + 3) {
            queue.push(row(n));
        }
        let writing = queue.next_batch().unwrap();
        assert_eq!(writing.len(), MAX_BATCH);
        assert_eq!(queue.abandon().len(), MAX_BATCH + 3);
        assert_eq!(queue.pending(), 0);
        assert!(queue.next_batch().is_none());
    }
}
