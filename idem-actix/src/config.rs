//! The application's idempotency settings, shared by every protected handler.

use std::sync::Arc;
use std::time::Duration;

use idem_runtime::{Backend, IdempotencyStore};
use tokio::sync::Semaphore;

use crate::tenant::{TenantResolver, Tenants};

/// The default bound on the request bodies being read at once, across requests: 64 MiB.
const DEFAULT_BUFFERED_BODIES: usize = 64 * 1024 * 1024;

/// The default bound on a stored answer's body: 1 MiB.
const DEFAULT_ANSWER_LIMIT: usize = 1024 * 1024;

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
    pub(crate) body_timeout: Duration,
    /// The largest answer body stored for replays, in bytes.
    pub(crate) answer_limit: usize,
    /// The bytes of request bodies being read, across requests, as permits.
    pub(crate) buffered_bodies: Arc<Semaphore>,
}

impl<DB: Backend> Clone for Idempotency<DB> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            tenants: self.tenants.clone(),
            replay_status: self.replay_status,
            created_status: self.created_status,
            body_limit: self.body_limit,
            body_timeout: self.body_timeout,
            answer_limit: self.answer_limit,
            buffered_bodies: self.buffered_bodies.clone(),
        }
    }
}

impl<DB: Backend> Idempotency<DB> {
    /// Settings with the defaults: replays of `201` answer `200`, a new write by `POST` that the
    /// handler answered `200 OK` answers `201 Created`, bodies up to 256 KiB read within 10 s,
    /// at most 64 MiB of bodies being read at once, and answers up to 1 MiB stored.
    pub fn new(store: IdempotencyStore<DB>, tenants: impl TenantResolver) -> Self {
        Self {
            store,
            tenants: Tenants(Arc::new(tenants)),
            replay_status: ReplayStatus::default(),
            created_status: true,
            body_limit: 256 * 1024,
            body_timeout: Duration::from_secs(10),
            answer_limit: DEFAULT_ANSWER_LIMIT,
            buffered_bodies: Arc::new(Semaphore::new(DEFAULT_BUFFERED_BODIES)),
        }
    }

    /// How replays choose their status.
    pub fn with_replay_status(mut self, replay_status: ReplayStatus) -> Self {
        self.replay_status = replay_status;
        self
    }

    /// Whether a new write by `POST` that the handler answered `200 OK` answers
    /// `201 Created` (the default), or keeps the handler's status. Other methods keep it: a
    /// `PUT` that replaces settings created nothing. An operation says otherwise for itself
    /// with its attribute's `created = false` (a cancel by `POST`) or `created = true` (a `PUT`
    /// that creates).
    pub fn with_created_status(mut self, created_status: bool) -> Self {
        self.created_status = created_status;
        self
    }

    /// The largest request body a protected handler reads, in bytes; larger ones are answered
    /// `413` before any work (at once when `Content-Length` says so, before reading a byte).
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// The largest answer body a protected handler may give, in bytes (default 1 MiB): the
    /// answer is stored in the key's row and replayed from there, so its size is the row's. A
    /// larger answer rolls the write back and is answered `500` `#write-failed`, naming both
    /// sizes: nothing was written, and the key is free. Answer with a reference to a large
    /// document (its id, a URL) rather than the document.
    pub fn with_answer_limit(mut self, bytes: usize) -> Self {
        self.answer_limit = bytes;
        self
    }

    /// How long a protected handler waits for the whole request body (default 10 s); a client
    /// that sends it slower is answered `408` (`#body-timeout`) and nothing is written, so slow
    /// clients cannot hold buffers and connections open.
    pub fn with_body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The most bytes of request bodies that protected handlers hold while they read them,
    /// across all requests of the process (default 64 MiB); past it a request is answered `503`
    /// (`#server-busy`) with `Retry-After`, and nothing is written.
    pub fn with_buffered_bodies_limit(mut self, bytes: usize) -> Self {
        self.buffered_bodies = Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)));
        self
    }

    /// The store the protected handlers write through.
    pub fn store(&self) -> &IdempotencyStore<DB> {
        &self.store
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::*;

    struct NoTenants;

    impl TenantResolver for NoTenants {
        async fn resolve(
            &self,
            _: &actix_web::HttpRequest,
        ) -> Result<idem_runtime::TenantId, crate::TenantRejection> {
            Err(crate::TenantRejection::new("none"))
        }
    }

    /// The HTTP defaults the documents promise: replays of `201` answer `200`, `POST` answers
    /// `201`, bodies up to 256 KiB within 10 s, 64 MiB of bodies being read at once.
    #[tokio::test]
    async fn the_defaults_are_the_documented_ones() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new().connect_lazy("sqlite::memory:");
        let store = IdempotencyStore::new(pool.unwrap(), Default::default());
        let idem = Idempotency::new(store, NoTenants);
        assert_eq!(idem.replay_status, ReplayStatus::Ok);
        assert!(idem.created_status);
        assert_eq!(idem.body_limit, 256 * 1024);
        assert_eq!(idem.body_timeout, Duration::from_secs(10));
        assert_eq!(idem.buffered_bodies.available_permits(), 64 * 1024 * 1024);
    }
}
