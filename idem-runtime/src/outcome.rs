//! How one call of the write protocol ended.

use std::time::Duration;

use crate::{RequestPart, StoredResponse};

/// How one call of [`IdempotencyStore::execute`](crate::IdempotencyStore::execute) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    FingerprintMismatch {
        /// The parts of the request that differed from the first one's (empty when the stored
        /// fingerprint does not say).
        differing: Vec<RequestPart>,
    },
    /// A twin with the same key is still running past the lock timeout: nothing ran.
    InFlight {
        /// How long the client should wait before retrying.
        retry_after: Duration,
    },
}
