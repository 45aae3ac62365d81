//! The application's idempotency settings, shared by every protected handler.

use std::sync::Arc;

use idem_runtime::{Backend, IdempotencyStore};

use crate::tenant::{TenantResolver, Tenants};

/// What status a replay answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplayStatus {
    /// A replayed `201 Created` answers `200 OK` (nothing was created this time); any other
    /// stored status is replayed as it was. The default.
    #[default]
    Ok,
    /// Every replay answers the stored status.
    Original,
}

/// The idempotency settings of one application: the store, how tenants are resolved, and the
/// HTTP choices. Cheap to clone; [`ProtectedRoutes`](crate::ProtectedRoutes) carries it into
/// every worker.
pub struct Idempotency<DB: Backend> {
    pub(crate) store: IdempotencyStore<DB>,
    pub(crate) tenants: Tenants,
    pub(crate) replay_status: ReplayStatus,
    pub(crate) created_status: bool,
    pub(crate) body_limit: usize,
}

impl<DB: Backend> Clone for Idempotency<DB> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            tenants: self.tenants.clone(),
            replay_status: self.replay_status,
            created_status: self.created_status,
            body_limit: self.body_limit,
        }
    }
}

impl<DB: Backend> Idempotency<DB> {
    /// Settings with the defaults: replays of `201` answer `200`, a new write by `POST` that the
    /// handler answered `200 OK` answers `201 Created`, and bodies up to 256 KiB.
    pub fn new(store: IdempotencyStore<DB>, tenants: impl TenantResolver) -> Self {
        Self {
            store,
            tenants: Tenants(Arc::new(tenants)),
            replay_status: ReplayStatus::default(),
            created_status: true,
            body_limit: 256 * 1024,
        }
    }

    /// How replays choose their status.
    pub fn with_replay_status(mut self, replay_status: ReplayStatus) -> Self {
        self.replay_status = replay_status;
        self
    }

    /// Whether a new write by `POST` that the handler answered `200 OK` answers
    /// `201 Created` (the default), or keeps the handler's status. Other methods always keep
    /// it: a `PUT` that replaces settings created nothing.
    pub fn with_created_status(mut self, created_status: bool) -> Self {
        self.created_status = created_status;
        self
    }

    /// The largest request body a protected handler reads, in bytes; larger ones are answered
    /// `413` before any work.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The store the protected handlers write through.
    pub fn store(&self) -> &IdempotencyStore<DB> {
        &self.store
    }
}
