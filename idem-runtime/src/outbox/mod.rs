//! The transactional outbox: events recorded with a write, delivered after its commit.
//!
//! A write records events with [`WriteContext::record_event`](crate::WriteContext::record_event)
//! in its own transaction, so they exist exactly when the write committed; a replay runs no body
//! and records nothing. An [`OutboxDispatcher`] delivers them at least once: an event is marked
//! delivered only after its handler succeeded, so a process killed in between delivers it again
//! on restart, and handlers dedupe on [`OutboxEvent::event_id`]. An event that keeps failing is
//! parked, never lost and never in the way of the others.

mod backlog;
mod dispatcher;

use std::str::FromStr;
use std::time::Duration;

use uuid::Uuid;

use crate::backend::EventRow;
use crate::{StoreError, TenantId};

pub use dispatcher::{DispatchReport, OutboxDispatcher};

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
        let (event_id, tenant, operation, entity_id, topic, payload, ..) = row;
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

/// The error a handler reports; the event is delivered again after a backoff, and parked
/// after the dispatcher's attempt limit.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// An event that was parked: it is not delivered again until it is
/// [requeued](OutboxDispatcher::requeue).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParkedEvent {
    /// The event's id, as stored (text, so that an undecodable row can be named too).
    pub event_id: String,
    /// The tenant of the write that recorded it.
    pub tenant: String,
    /// The operation that recorded it.
    pub operation: String,
    /// Its topic.
    pub topic: String,
    /// How many deliveries failed.
    pub attempts: u32,
    /// Why the last one failed.
    pub last_error: Option<String>,
    /// When the write recorded it, in Unix milliseconds.
    pub recorded_at_ms: i64,
    /// When it was parked, in Unix milliseconds.
    pub parked_at_ms: i64,
}

/// The outbox's backlog, as the dispatcher's gauges report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxBacklog {
    /// Events not delivered yet and not parked.
    pub pending: u64,
    /// Parked events.
    pub parked: u64,
    /// How long the oldest pending event has waited.
    pub oldest_pending_age: Option<Duration>,
}
