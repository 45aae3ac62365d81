//! The outbox as an operator sees it: its backlog, the parked events, and requeuing them.

use std::time::Duration;

use super::{OutboxBacklog, OutboxDispatcher, ParkedEvent};
use crate::{Backend, StoreError};

impl<DB: Backend> OutboxDispatcher<DB> {
    /// The parked events, oldest parked first (at most 1000).
    pub async fn parked(&self) -> Result<Vec<ParkedEvent>, StoreError> {
        let rows =
            DB::parked_events(&self.store.pool, self.store.config.statements(), 1000).await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    event_id,
                    tenant,
                    operation,
                    topic,
                    attempts,
                    last_error,
                    recorded_at_ms,
                    parked_at_ms,
                )| {
                    ParkedEvent {
                        event_id,
                        tenant,
                        operation,
                        topic,
                        attempts: u32::try_from(attempts).unwrap_or(0),
                        last_error,
                        recorded_at_ms,
                        parked_at_ms,
                    }
                },
            )
            .collect())
    }

    /// Makes a parked event due again, with a fresh attempt count (after its handler was
    /// fixed, say); `false` when no parked event has this id.
    pub async fn requeue(&self, event_id: &str) -> Result<bool, StoreError> {
        let requeued =
            DB::requeue_parked(&self.store.pool, self.store.config.statements(), event_id).await?;
        if requeued {
            tracing::info!(%event_id, "a parked outbox event is requeued");
            self.store.outbox_signal.notify_waiters();
        }
        Ok(requeued)
    }

    /// The backlog: pending and parked events, and the oldest pending event's age. The
    /// dispatcher's [`run`](Self::run) reports it as gauges.
    pub async fn backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let (pending, parked, oldest_age_ms) =
            DB::outbox_backlog(&self.store.pool, self.store.config.statements()).await?;
        Ok(OutboxBacklog {
            pending: u64::try_from(pending).unwrap_or(0),
            parked: u64::try_from(parked).unwrap_or(0),
            oldest_pending_age: oldest_age_ms
                .map(|age_ms| Duration::from_millis(u64::try_from(age_ms).unwrap_or(0))),
        })
    }
}
