//! One request to write: whose, with which key, and what exactly.

use crate::{Fingerprint, IdempotencyKey, TenantId};

/// The identity of one write request, as [`IdempotencyStore::execute`](crate::IdempotencyStore::execute)
/// takes it: the tenant and key that scope it, the fingerprint that tells a retry from another
/// request, and, for the audit log, who sent it and the request id that joins it to the logs.
///
/// ```
/// use idem_runtime::{Fingerprint, IdempotencyKey, TenantId, WriteRequest};
///
/// let tenant = TenantId::new("acme")?;
/// let key = IdempotencyKey::parse("k-1")?;
/// let fingerprint = Fingerprint::of_request("createPayment", "POST", "/payments", "", b"{}");
/// let request = WriteRequest::new(&tenant, &key, fingerprint)
///     .with_user("ada@acme.example")
///     .with_request_id("req-7f3a");
/// assert_eq!(request.user(), Some("ada@acme.example"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct WriteRequest<'a> {
    tenant: &'a TenantId,
    key: &'a IdempotencyKey,
    fingerprint: Fingerprint,
    user: Option<&'a str>,
    request_id: Option<&'a str>,
}

impl<'a> WriteRequest<'a> {
    /// A request of `tenant` with `key`, fingerprinted as `fingerprint`.
    pub fn new(tenant: &'a TenantId, key: &'a IdempotencyKey, fingerprint: Fingerprint) -> Self {
        Self {
            tenant,
            key,
            fingerprint,
            user: None,
            request_id: None,
        }
    }

    /// Names the user who sent it, for the audit log.
    pub fn with_user(mut self, user: &'a str) -> Self {
        self.user = Some(user);
        self
    }

    /// Names the request, for the audit log and to join it with other logs.
    pub fn with_request_id(mut self, request_id: &'a str) -> Self {
        self.request_id = Some(request_id);
        self
    }

    /// The tenant.
    pub fn tenant(&self) -> &'a TenantId {
        self.tenant
    }

    /// The idempotency key.
    pub fn key(&self) -> &'a IdempotencyKey {
        self.key
    }

    /// The request's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The user who sent it, if known.
    pub fn user(&self) -> Option<&'a str> {
        self.user
    }

    /// The request id, if known.
    pub fn request_id(&self) -> Option<&'a str> {
        self.request_id
    }
}
