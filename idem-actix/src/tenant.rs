//! Which tenant a request belongs to: the application's authentication decides.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use idem_runtime::TenantId;

use crate::problem::{Problem, ProblemKind};

/// Resolves the tenant of a request, from the application's own authentication (a session, a
/// bearer token looked up in a table, a verified JWT claim). Never from a header the client
/// chooses freely: the tenant scopes every key, so a forged tenant would read another tenant's
/// stored responses.
///
/// Write `resolve` as an `async fn`; it runs on the request's worker, so its future need not
/// be `Send`.
///
/// ```
/// use actix_web::HttpRequest;
/// use idem_actix::{TenantId, TenantRejection, TenantResolver};
///
/// /// Every request belongs to one tenant: a single-company deployment.
/// struct SingleCompany(TenantId);
///
/// impl TenantResolver for SingleCompany {
///     async fn resolve(&self, _: &HttpRequest) -> Result<TenantId, TenantRejection> {
///         Ok(self.0.clone())
///     }
/// }
/// ```
pub trait TenantResolver: Send + Sync + 'static {
    /// The tenant of `request`, or why there is none.
    fn resolve(
        &self,
        request: &HttpRequest,
    ) -> impl Future<Output = Result<TenantId, TenantRejection>>;

    /// The user who sent `request`, for the audit log; `None` (the default) when the
    /// application authenticates tenants, not users. Called after [`Self::resolve`], so a
    /// resolver can keep what it found in the request's extensions.
    fn user(&self, request: &HttpRequest) -> Option<String> {
        let _ = request;
        None
    }
}

/// [`TenantResolver`] behind a pointer: its future boxed, for the app data.
pub(crate) trait DynTenantResolver: Send + Sync {
    fn resolve<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> LocalBoxFuture<'a, Result<TenantId, TenantRejection>>;

    fn user(&self, request: &HttpRequest) -> Option<String>;
}

impl<T: TenantResolver> DynTenantResolver for T {
    fn resolve<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> LocalBoxFuture<'a, Result<TenantId, TenantRejection>> {
        Box::pin(TenantResolver::resolve(self, request))
    }

    fn user(&self, request: &HttpRequest) -> Option<String> {
        TenantResolver::user(self, request)
    }
}

/// Why a request has no tenant.
///
/// [`TenantRejection::new`]: the request is not authenticated, answered `401` with a
/// `WWW-Authenticate` challenge (RFC 9110 requires one; `Bearer` unless
/// [`TenantRejection::with_challenge`] names another). [`TenantRejection::unavailable`]: the
/// application could not check the credentials (its database is down), answered `503` with
/// `Retry-After`: the server's failure, never the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct TenantRejection {
    detail: String,
    /// The `WWW-Authenticate` challenge of a `401`; `None` for a `503`.
    challenge: Option<String>,
}

impl TenantRejection {
    /// The request is not authenticated: `401`, with a sentence for the client and the
    /// challenge `Bearer`.
    pub fn new(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            challenge: Some("Bearer".to_owned()),
        }
    }

    /// The credentials could not be checked (the server's failure): `503` with `Retry-After`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            challenge: None,
        }
    }

    /// The `WWW-Authenticate` challenge of this `401` (`Bearer realm="api",
    /// error="invalid_token"`, RFC 6750).
    pub fn with_challenge(mut self, challenge: impl Into<String>) -> Self {
        if self.challenge.is_some() {
            self.challenge = Some(challenge.into());
        }
        self
    }

    /// The sentence for the client.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    fn into_problem(self) -> Problem {
        match self.challenge {
            Some(challenge) => {
                Problem::new(ProblemKind::TenantUnresolved, self.detail).challenge(challenge)
            }
            None => Problem::new(ProblemKind::TenantUnavailable, self.detail)
                .retry_after(Duration::from_secs(1)),
        }
    }
}

/// The resolver as app data, so [`Tenant`] finds it.
#[derive(Clone)]
pub(crate) struct Tenants(pub(crate) Arc<dyn DynTenantResolver>);

impl Tenants {
    pub(crate) async fn resolve(&self, request: &HttpRequest) -> Result<TenantId, Problem> {
        self.0
            .resolve(request)
            .await
            .map_err(TenantRejection::into_problem)
    }
}

/// The tenant of a request, as the application's [`TenantResolver`] names it. Read handlers
/// take it to scope their queries; protected handlers get it from their write context.
///
/// ```
/// use actix_web::{HttpResponse, web};
/// use idem_actix::Tenant;
///
/// /// Lists the requesting company's payments: a read, scoped by the tenant idem resolved
/// /// (a request whose credentials resolve to no tenant is refused before this runs).
/// async fn list_payments(Tenant(tenant): Tenant) -> HttpResponse {
///     HttpResponse::Ok().body(format!("the payments of {}", tenant.as_str()))
/// }
///
/// let route = web::get().to(list_payments);
/// # drop(route);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub TenantId);

impl FromRequest for Tenant {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        let request = request.clone();
        Box::pin(async move {
            let tenants = request
                .app_data::<Tenants>()
                .cloned()
                .ok_or_else(not_configured)?;
            tenants.resolve(&request).await.map(Tenant)
        })
    }
}

pub(crate) fn not_configured() -> Problem {
    Problem::new(
        ProblemKind::NotConfigured,
        "the application mounts no protected routes: call VerifiedRoutes::configure in the App factory",
    )
}
