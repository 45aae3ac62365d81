//! What the body of a write receives.

use sqlx::Transaction;
use uuid::Uuid;

use crate::backend::{KeyScope, OutboxRecord, Statements};
use crate::{Backend, IdempotencyKey, Operation, TenantId};

/// What the body of a write receives: its open transaction and the ids of the write.
///
/// Only [`IdempotencyStore::execute`](crate::IdempotencyStore::execute) creates one, after the
/// key is claimed in the same transaction, so a statement run through [`WriteContext::tx`]
/// commits exactly when the key and the stored response do.
pub struct WriteContext<'r, DB: Backend> {
    tx: Transaction<'r, DB>,
    operation: &'static Operation,
    tenant: &'r TenantId,
    key: &'r IdempotencyKey,
    entity_id: Uuid,
    attempt: u32,
    /// The id of this attempt's claim of the key, which tells its committed write apart.
    claim_id: i64,
    events: u32,
    statements: Statements,
}

/// The context of an attempt whose key was claimed on `tx`. A free function, not an
/// associated one, so that the compiler never suggests it to code outside this crate that
/// tries to build a context by hand.
pub(crate) fn claimed<'r, DB: Backend>(
    tx: Transaction<'r, DB>,
    operation: &'static Operation,
    scope: &KeyScope<'r>,
    entity_id: Uuid,
    attempt: u32,
    claim_id: i64,
    statements: Statements,
) -> WriteContext<'r, DB> {
    WriteContext {
        tx,
        operation,
        tenant: scope.tenant,
        key: scope.key,
        entity_id,
        attempt,
        claim_id,
        events: 0,
        statements,
    }
}

impl<'r, DB: Backend> WriteContext<'r, DB> {
    /// The transaction back, and how many events the body recorded.
    pub(crate) fn finish(self) -> (Transaction<'r, DB>, u32) {
        (self.tx, self.events)
    }

    /// Records an event in the write's transaction, for an
    /// [`OutboxDispatcher`](crate::OutboxDispatcher) to deliver after the commit: at least once,
    /// only if the write commits, never for a replay. The events of one write are delivered in
    /// the order it recorded them. Returns the event's id, UUID v5 of `{topic}:{n}:{claim}`
    /// (the write's `n`th event, and the id of the attempt that holds the key) under the
    /// write's entity id: unique per committed write, so a key reused after it expired records
    /// new ids, and stored with the event, so every redelivery carries the same id and a
    /// handler can dedupe on it.
    pub async fn record_event(
        &mut self,
        topic: &str,
        payload: impl AsRef<[u8]>,
    ) -> Result<Uuid, sqlx::Error> {
        self.events += 1;
        let name = format!("{topic}:{}:{}", self.events, self.claim_id);
        let event_id = Uuid::new_v5(&self.entity_id, name.as_bytes());
        let record = OutboxRecord {
            event_id,
            tenant: self.tenant,
            operation: self.operation.name(),
            entity_id: self.entity_id,
            topic,
            payload: payload.as_ref(),
            sequence: i32::try_from(self.events).unwrap_or(i32::MAX),
        };
        DB::record_event(&mut self.tx, self.statements, &record).await?;
        Ok(event_id)
    }

    /// The write's open transaction: run every statement of the write on it.
    pub fn tx(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }

    /// The deterministic id of the entity this write creates (see
    /// [`entity_id`](crate::entity_id)).
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
