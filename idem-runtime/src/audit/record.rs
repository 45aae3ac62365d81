//! One row of the audit log, and how the write it records ended.

use uuid::Uuid;

use crate::{Fingerprint, Operation, TenantId};

/// One row of the audit log, owned so it can be written after the request has been answered.
#[derive(Debug)]
pub struct AuditRecord {
    pub id: Uuid,
    pub operation: &'static Operation,
    pub tenant: TenantId,
    pub user: Option<String>,
    pub key_hash: String,
    pub entity_id: Uuid,
    pub fingerprint: Fingerprint,
    pub outcome: WriteOutcome,
    pub status: Option<u16>,
    pub attempts: u32,
    pub duration_ms: f64,
    pub request_id: Option<String>,
    pub now_ms: i64,
}

/// How one write ended, as the audit log, the metrics and the span name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The body ran and committed.
    New,
    /// The stored response was replayed.
    Replayed,
    /// The key was used with another request.
    Mismatch,
    /// Nothing committed: the handler refused, panicked, or the store failed.
    Failed(Failure),
    /// A twin held the key past the lock timeout.
    Conflict,
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The handler returned an error.
    Handler,
    /// The handler panicked.
    Panic,
    /// The store failed.
    Store,
    /// The body ran past the write timeout.
    Timeout,
    /// The `COMMIT` got no answer and the outcome could not be read back: it may have
    /// committed (then the key's `new` row exists too).
    Unknown,
}

impl WriteOutcome {
    /// The outcome's label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Replayed => "replayed",
            Self::Mismatch => "mismatch",
            Self::Failed(_) => "failed",
            Self::Conflict => "conflict",
        }
    }

    /// The failure's label, for a failed write.
    pub const fn failure(self) -> Option<&'static str> {
        match self {
            Self::Failed(Failure::Handler) => Some("handler"),
            Self::Failed(Failure::Panic) => Some("panic"),
            Self::Failed(Failure::Timeout) => Some("timeout"),
            Self::Failed(Failure::Unknown) => Some("unknown"),
            Self::Failed(Failure::Store) => Some("store"),
            _ => None,
        }
    }
}
