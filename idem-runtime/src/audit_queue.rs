//! The audit rows of outcomes that changed nothing (replays, mismatches, failures, conflicts),
//! queued so that one writer inserts them in batches after the answers went out: a replay
//! costs one read on its request path, and a burst of replays costs one commit per batch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::backend::AuditRecord;

/// The most rows one statement inserts (well under both backends' parameter limits).
pub(crate) const MAX_BATCH: usize = 500;

#[derive(Debug, Clone, Default)]
pub(crate) struct AuditQueue(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// Rows waiting, and whether a writer is draining them.
    queue: Mutex<(Vec<AuditRecord>, bool)>,
    /// Rows queued or being written.
    pending: AtomicUsize,
    /// Woken when `pending` drops to zero.
    idle: Notify,
}

impl AuditQueue {
    /// Queues a row; `true` when the caller must start a writer (none is running).
    pub(crate) fn push(&self, record: AuditRecord) -> bool {
        self.0.pending.fetch_add(1, Ordering::SeqCst);
        let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.0.push(record);
        !std::mem::replace(&mut queue.1, true)
    }

    /// The next batch for the writer, or `None` when the queue is empty and the writer stops.
    pub(crate) fn next_batch(&self) -> Option<Vec<AuditRecord>> {
        let mut queue = self.0.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.0.is_empty() {
            queue.1 = false;
            return None;
        }
        let rest = queue.0.len().saturating_sub(MAX_BATCH);
        Some(queue.0.split_off(rest))
    }

    /// `rows` were written (or given up on).
    pub(crate) fn done(&self, rows: usize) {
        if self.0.pending.fetch_sub(rows, Ordering::SeqCst) == rows {
            self.0.idle.notify_waiters();
        }
    }

    /// Resolves when no row is queued or being written.
    pub(crate) async fn drained(&self) {
        loop {
            let idle = self.0.idle.notified();
            if self.0.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}
