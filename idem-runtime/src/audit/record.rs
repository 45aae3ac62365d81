//! One row of the audit log, and how the write it records ended.

use std::time::Instant;

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
    /// When the outcome happened: the last of them, for a row that stands for repeats.
    pub at: Instant,
    /// When the first of the outcomes this row stands for happened.
    pub first_at: Instant,
    /// How many outcomes this row stands for ([`AuditRecord::absorb`]).
    pub repeats: u32,
}

impl AuditRecord {
    /// What a repeat of this row's outcome shares with it, so that one row may stand for both:
    /// the key, operation, tenant, user, request fingerprint, outcome and status of a replay,
    /// mismatch or conflict (outcomes that ran nothing). `None` for a new write or a failure,
    /// each its own row.
    pub(crate) fn repeat_key(&self) -> Option<RepeatKey> {
        self.outcome.repeats_coalesce().then(|| RepeatKey {
            operation: self.operation.name(),
            tenant: self.tenant.clone(),
            user: self.user.clone(),
            key_hash: self.key_hash.clone(),
            fingerprint: self.fingerprint,
            outcome: self.outcome.as_str(),
            status: self.status,
        })
    }

    /// The operation once per outcome this row stands for: what the lost-rows counter counts
    /// when the row cannot be written.
    pub(crate) fn outcomes(&self) -> impl Iterator<Item = &'static Operation> {
        std::iter::repeat_n(
            self.operation,
            usize::try_from(self.repeats).unwrap_or(usize::MAX),
        )
    }

    /// Makes this row stand for `repeat` too (the same [`Self::repeat_key`]): counted, and its
    /// time the last one's; the first request's id and duration stay.
    pub(crate) fn absorb(&mut self, repeat: &Self) {
        self.repeats = self.repeats.saturating_add(repeat.repeats);
        self.at = self.at.max(repeat.at);
        self.first_at = self.first_at.min(repeat.first_at);
    }
}

/// What identifies an outcome that its repeats may share a row with ([`AuditRecord::repeat_key`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct RepeatKey {
    operation: &'static str,
    tenant: TenantId,
    user: Option<String>,
    key_hash: String,
    fingerprint: Fingerprint,
    outcome: &'static str,
    status: Option<u16>,
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

    /// Whether repeats of this outcome may share a row: those that ran nothing.
    const fn repeats_coalesce(self) -> bool {
        matches!(self, Self::Replayed | Self::Mismatch | Self::Conflict)
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
