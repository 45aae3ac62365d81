//! The transactional outbox: events recorded with a write, delivered after its commit.
//!
//! A write records events with [`WriteContext::record_event`](crate::WriteContext::record_event)
//! in its own transaction, so they exist exactly when the write committed; a replay runs no body
//! and records nothing. An [`OutboxDispatcher`] delivers them at least once: an event is marked
//! delivered only after its handler succeeded, so a process killed in between delivers it again
//! on restart, and handlers dedupe on [`OutboxEvent::event_id`].

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::backend::EventRow;
use crate::store::now_ms;
use crate::{Backend, IdempotencyStore, StoreError, TenantId};

/// One recorded event, as its handler receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Deterministic: the same write always records the same ids. Dedupe on it.
    pub event_id: Uuid,
    /// The tenant of the write that recorded it.
    pub tenant: TenantId,
    /// The operation that recorded it.
    pub operation: String,
    /// The entity id of the write that recorded it.
    pub entity_id: Uuid,
    /// What kind of event it is (`send_invoice`).
    pub topic: String,
    /// The bytes the write recorded.
    pub payload: Vec<u8>,
}

impl OutboxEvent {
    fn from_row(row: EventRow) -> Result<Self, StoreError> {
        let (event_id, tenant, operation, entity_id, topic, payload) = row;
        let corrupt = |what: &str| {
            StoreError::Database(sqlx::Error::Protocol(format!(
                "an outbox row has an invalid {what}"
            )))
        };
        Ok(Self {
            event_id: Uuid::from_str(&event_id).map_err(|_| corrupt("event id"))?,
            tenant: TenantId::new(tenant).map_err(|_| corrupt("tenant"))?,
            operation,
            entity_id: Uuid::from_str(&entity_id).map_err(|_| corrupt("entity id"))?,
            topic,
            payload,
        })
    }
}

/// The error a handler reports; the event stays pending and is delivered again.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

type Handler =
    Arc<dyn Fn(OutboxEvent) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// What one [`OutboxDispatcher::dispatch_pending`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchReport {
    /// Events whose handler succeeded and that are now marked delivered.
    pub delivered: usize,
    /// Events whose handler failed; they stay pending.
    pub failed: usize,
    /// Events with no handler for their topic; they stay pending.
    pub unhandled: usize,
}

/// Delivers recorded events to handlers by topic, at least once.
///
/// ```
/// # use idem_runtime::{IdempotencyStore, OutboxDispatcher, StoreConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), idem_runtime::StoreError> {
/// # let dir = std::env::temp_dir().join(format!("idem-outbox-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let url = format!("sqlite://{}", dir.join("outbox.db").display());
/// let store = IdempotencyStore::<sqlx::Sqlite>::connect(&url, StoreConfig::default()).await?;
/// store.migrate().await?;
/// let dispatcher = OutboxDispatcher::new(store).on("send_invoice", |event| async move {
///     println!("sending invoice {} (event {})", event.entity_id, event.event_id);
///     Ok(())
/// });
/// let report = dispatcher.dispatch_pending().await?;
/// assert_eq!(report.delivered, 0);
/// # Ok(()) }
/// ```
pub struct OutboxDispatcher<DB: Backend> {
    store: IdempotencyStore<DB>,
    handlers: HashMap<String, Handler>,
    batch: i64,
}

impl<DB: Backend> OutboxDispatcher<DB> {
    /// A dispatcher with no handlers, delivering up to 100 events a pass.
    pub fn new(store: IdempotencyStore<DB>) -> Self {
        Self {
            store,
            handlers: HashMap::new(),
            batch: 100,
        }
    }

    /// Delivers events of `topic` to `handler`.
    pub fn on<F, Fut>(mut self, topic: &str, handler: F) -> Self
    where
        F: Fn(OutboxEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.insert(
            topic.to_owned(),
            Arc::new(move |event| Box::pin(handler(event))),
        );
        self
    }

    /// Delivers the pending events once, oldest first.
    pub async fn dispatch_pending(&self) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        for row in DB::pending_events(&self.store.pool, self.batch).await? {
            let event = OutboxEvent::from_row(row)?;
            let Some(handler) = self.handlers.get(&event.topic) else {
                report.unhandled += 1;
                continue;
            };
            let (event_id, topic) = (event.event_id, event.topic.clone());
            match handler(event).await {
                Ok(()) => {
                    let id = event_id.hyphenated().to_string();
                    DB::mark_delivered(&self.store.pool, &id, now_ms()).await?;
                    report.delivered += 1;
                }
                Err(error) => {
                    tracing::warn!(%event_id, %topic, %error, "outbox handler failed; the event stays pending");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Delivers forever: after each write that records events in this process, and every
    /// `poll` for events recorded elsewhere or left by a failed handler or a crash. Run it on a
    /// task of its own; it ends only if the store fails.
    pub async fn run(self, poll: Duration) -> StoreError {
        loop {
            let signal = self.store.outbox_signal.clone();
            let woken = signal.notified();
            if let Err(error) = self.dispatch_pending().await {
                return error;
            }
            let _ = tokio::time::timeout(poll, woken).await;
        }
    }
}
