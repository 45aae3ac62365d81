//! The audit rows of outcomes that changed nothing (replays, mismatches, failures, conflicts),
//! queued so that one writer inserts them in batches after the answers went out: a replay
//! costs one read on its request path, and a burst of replays costs one commit per batch.
//!
//! The queue is bounded and drains oldest first. When it is full (the database is slower than
//! the replays, or down), a request writes its own row before it is answered rather than lose
//! it. A repeat of a queued row's outcome (a client replaying one key again and again) joins
//! that row, counted, instead of queuing another; the writer lingers for the coalescing window
//! after each batch, so a flood of one key's replays writes at most one row per window.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::AuditRecord;
use super::record::RepeatKey;
use crate::Operation;

/// The most rows one statement inserts (well under both backends' parameter limits).
pub(crate) const MAX_BATCH: usize = 500;

#[derive(Debug, Clone)]
pub(crate) struct AuditQueue(Arc<State>);

#[derive(Debug)]
struct State {
    /// The most rows waiting; past it, requests write their own.
    capacity: usize,
    waiting: Mutex<Waiting>,
    /// The operations of the outcomes of the batch the writer is inserting, to count if it is
    /// abandoned.
    writing: Mutex<Vec<&'static Operation>>,
    /// Rows queued or being written.
    pending: AtomicUsize,
    /// Woken when `pending` drops to zero.
    idle: Notify,
    /// Callers waiting for the queue to drain: the writer does not linger for them.
    flushing: AtomicUsize,
    /// Cuts the writer's lingering short when a flush begins.
    hurry: Notify,
}

/// The rows waiting for the writer.
#[derive(Debug, Default)]
struct Waiting {
    /// Oldest first.
    rows: VecDeque<AuditRecord>,
    /// The place in the sequence of all queued rows of `rows`' front.
    front: u64,
    /// The place of each waiting row that repeats may join, by what they share with it.
    repeatable: HashMap<RepeatKey, u64>,
    /// Whether a writer is draining the rows.
    writer: bool,
}

/// What became of a row offered to the queue.
pub(crate) enum Queued {
    /// Queued; no writer runs, the caller must start one.
    StartWriter,
    /// Queued, or counted in a waiting row it repeats; the running writer takes it.
    Taken,
    /// The queue is full: the caller writes the row itself.
    Full(Box<AuditRecord>),
}

impl AuditQueue {
    /// An empty queue that holds at most `capacity` rows.
    pub(crate) fn new(capacity: usize) -> Self {
        Self(Arc::new(State {
            capacity,
            waiting: Mutex::default(),
            writing: Mutex::default(),
            pending: AtomicUsize::new(0),
            idle: Notify::new(),
            flushing: AtomicUsize::new(0),
            hurry: Notify::new(),
        }))
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.0
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a row to the queue: a repeat of a waiting row joins it.
    pub(crate) fn push(&self, record: AuditRecord) -> Queued {
        let mut waiting = self.waiting();
        let repeat_key = record.repeat_key();
        if let Some(&place) = repeat_key
            .as_ref()
            .and_then(|key| waiting.repeatable.get(key))
        {
            let index = usize::try_from(place - waiting.front).expect("a waiting row's place");
            waiting.rows[index].absorb(&record);
            return Queued::Taken;
        }
        if waiting.rows.len() >= self.0.capacity {
            return Queued::Full(Box::new(record));
        }
        if let Some(key) = repeat_key {
            let place = waiting.front + waiting.rows.len() as u64;
            waiting.repeatable.insert(key, place);
        }
        self.0.pending.fetch_add(1, Ordering::SeqCst);
        waiting.rows.push_back(record);
        if std::mem::replace(&mut waiting.writer, true) {
            Queued::Taken
        } else {
            Queued::StartWriter
        }
    }

    /// The next batch for the writer, oldest rows first, or `None` when the queue is empty and
    /// the writer stops.
    pub(crate) fn next_batch(&self) -> Option<Vec<AuditRecord>> {
        let mut waiting = self.waiting();
        if waiting.rows.is_empty() {
            waiting.writer = false;
            return None;
        }
        let take = waiting.rows.len().min(MAX_BATCH);
        let batch: Vec<AuditRecord> = waiting.rows.drain(..take).collect();
        waiting.forget_places(batch.len());
        *self
            .0
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            batch.iter().flat_map(AuditRecord::outcomes).collect();
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

    /// The writer's pause after a batch, so that repeats gather in the rows that wait: `window`,
    /// or until a flush begins (at once while one waits).
    pub(crate) async fn linger(&self, window: Duration) {
        if window.is_zero() || self.0.flushing.load(Ordering::SeqCst) > 0 {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(window) => {}
            () = self.0.hurry.notified() => {}
        }
    }

    /// Rows queued or being written.
    pub(crate) fn pending(&self) -> usize {
        self.0.pending.load(Ordering::SeqCst)
    }

    /// Gives up on every row queued or being written (the process is exiting and the database
    /// does not take them): the operation of each outcome they stand for, to count as lost.
    pub(crate) fn abandon(&self) -> Vec<&'static Operation> {
        let mut waiting = self.waiting();
        let mut lost: Vec<&'static Operation> = self
            .0
            .writing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        let abandoned: Vec<AuditRecord> = waiting.rows.drain(..).collect();
        waiting.forget_places(abandoned.len());
        lost.extend(abandoned.iter().flat_map(AuditRecord::outcomes));
        self.0.pending.store(0, Ordering::SeqCst);
        self.0.idle.notify_waiters();
        lost
    }

    /// Resolves when no row is queued or being written; meanwhile the writer does not linger.
    pub(crate) async fn drained(&self) {
        let _flushing = Flushing::begin(&self.0);
        loop {
            let idle = self.0.idle.notified();
            if self.pending() == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Waiting {
    /// `rows` rows left the front of the queue: repeats no longer join them.
    fn forget_places(&mut self, rows: usize) {
        self.front += rows as u64;
        let front = self.front;
        self.repeatable.retain(|_, place| *place >= front);
    }
}

/// A flush in progress, for as long as it lives (a flush given up at its bound is dropped).
struct Flushing<'a>(&'a State);

impl<'a> Flushing<'a> {
    fn begin(state: &'a State) -> Self {
        state.flushing.fetch_add(1, Ordering::SeqCst);
        // A permit, should the writer not be lingering yet.
        state.hurry.notify_one();
        Self(state)
    }
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        self.0.flushing.fetch_sub(1, Ordering::SeqCst);
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

    /// The replay of key `n`: rows of distinct keys never share a row.
    fn row(n: u128) -> AuditRecord {
        let now = std::time::Instant::now();
        AuditRecord {
            id: Uuid::from_u128(n),
            operation: &OPERATION,
            tenant: TenantId::new("acme").unwrap(),
            user: None,
            key_hash: n.to_string(),
            entity_id: Uuid::nil(),
            fingerprint: Fingerprint::of_request("createPayment", "POST", "/", "", b""),
            outcome: WriteOutcome::Replayed,
            status: Some(200),
            attempts: 0,
            duration_ms: 0.0,
            request_id: None,
            at: now,
            first_at: now,
            repeats: 1,
        }
    }

    /// The `n`th repeat of one key's replay.
    fn repeat(n: u128) -> AuditRecord {
        AuditRecord {
            id: Uuid::from_u128(n),
            key_hash: "k".to_owned(),
            ..row(n)
        }
    }

    #[test]
    fn repeats_join_the_waiting_row_and_are_counted() {
        let queue = AuditQueue::new(10_000);
        let first = repeat(1);
        let first_at = first.first_at;
        assert!(matches!(queue.push(first), Queued::StartWriter));
        assert!(matches!(queue.push(repeat(2)), Queued::Taken));
        let last = repeat(3);
        let last_at = last.at;
        assert!(matches!(queue.push(last), Queued::Taken));
        let other_status = AuditRecord {
            status: Some(201),
            ..repeat(4)
        };
        queue.push(other_status);
        for n in 5..7 {
            let failure = AuditRecord {
                outcome: WriteOutcome::Failed(crate::audit::Failure::Handler),
                ..repeat(n)
            };
            queue.push(failure);
        }
        assert_eq!(
            queue.pending(),
            4,
            "one replay row, another status, two failures"
        );
        let batch = queue.next_batch().unwrap();
        assert_eq!(
            batch.iter().map(|row| row.repeats).collect::<Vec<_>>(),
            [3, 1, 1, 1]
        );
        assert_eq!(batch[0].id, Uuid::from_u128(1), "the first request's row");
        assert_eq!((batch[0].first_at, batch[0].at), (first_at, last_at));

        assert!(matches!(queue.push(repeat(7)), Queued::Taken));
        let after = queue.next_batch().unwrap();
        assert_eq!(
            (after.len(), after[0].repeats),
            (1, 1),
            "a repeat after its row left starts a row of its own"
        );
    }

    #[test]
    fn abandoned_rows_take_no_more_repeats() {
        let queue = AuditQueue::new(10_000);
        queue.push(repeat(1));
        assert_eq!(queue.abandon().len(), 1);
        queue.push(repeat(2));
        assert_eq!(queue.pending(), 1);
        assert_eq!(queue.next_batch().unwrap()[0].id, Uuid::from_u128(2));
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
