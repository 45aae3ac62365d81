//! Default-deny for mutations: a request that could change state (any method but `GET`,
//! `HEAD`, `OPTIONS` and `TRACE`) reaches a handler only through a protected route or a
//! declared exemption.
//!
//! The compiler checks the handlers that carry an attribute; it cannot see a plain
//! `web::post().to(handler)` added to the `App`. The [`MutationGate`] middleware, built by
//! [`VerifiedRoutes::mutation_gate`](crate::VerifiedRoutes::mutation_gate), sees every request:
//! a mutation whose method and route pattern are neither a mounted protected operation's nor
//! declared with [`unprotected_mutation!`](crate::unprotected_mutation) is answered `405`
//! problem+json (`#unprotected-mutation`) and logged as an error, and no handler runs.
//! Protected handlers refuse to run when the gate is not installed, so it cannot be forgotten.
//!
//! The gate sees the request before actix-web routes it, so it knows the path's pattern (the
//! first resource of the `App` whose path matches, as `HttpRequest::match_pattern` finds it)
//! but not which methods the application's other resources serve: a mutation on a path that
//! is only read (`DELETE` on a `GET` route) gets the same `405`. Mount the protected routes at
//! the root of the `App` (not in a `web::scope`): their patterns are matched as declared.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::HttpMessage;
use actix_web::body::EitherBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use actix_web::http::Method;
use futures_util::future::{LocalBoxFuture, Ready, ready};
use linkme::distributed_slice;

use crate::problem::{Problem, ProblemKind};

/// A mutating route that the application serves without idem, declared with
/// [`unprotected_mutation!`](crate::unprotected_mutation) and the reason it needs no key. The
/// declarations are gathered at link time; [`ProtectedRoutes::verify`](crate::ProtectedRoutes)
/// lists them at startup and [`exemptions`] returns them, for a reviewed snapshot.
#[derive(Debug)]
pub struct Exemption {
    method: &'static str,
    path: &'static str,
    reason: &'static str,
    file: &'static str,
    line: u32,
}

impl Exemption {
    /// Not public API: what `unprotected_mutation!` expands to. Refuses, at compile time, a
    /// path that does not start with `/` and an empty reason.
    #[doc(hidden)]
    pub const fn __new(
        method: &'static str,
        path: &'static str,
        reason: &'static str,
        file: &'static str,
        line: u32,
    ) -> Self {
        assert!(
            !path.is_empty() && path.as_bytes()[0] == b'/',
            "an exempt route's path starts with `/`, such as \"/api/companies\""
        );
        assert!(
            !reason.is_empty(),
            "say why this mutation needs no Idempotency-Key: reason = \"...\""
        );
        Self {
            method,
            path,
            reason,
            file,
            line,
        }
    }

    /// The route's method: `POST`, `PUT`, `PATCH` or `DELETE`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The route's pattern, as mounted in the `App` (`/api/companies`).
    pub fn path(&self) -> &'static str {
        self.path
    }

    /// Why the route needs no `Idempotency-Key`.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// Where it is declared: `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

impl fmt::Display for Exemption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (declared at {}): {}",
            self.method,
            self.path,
            self.location(),
            self.reason
        )
    }
}

/// Not public API: the link-time list of exemptions.
#[doc(hidden)]
#[distributed_slice]
pub static UNPROTECTED_MUTATIONS: [Exemption];

/// Every declared exemption of the program, in no particular order.
pub fn exemptions() -> impl Iterator<Item = &'static Exemption> + Clone {
    UNPROTECTED_MUTATIONS.iter()
}

/// Declares a mutating route that the application serves without idem, and why: the only way
/// past the [`MutationGate`]. The declaration is listed at startup and by [`exemptions`].
///
/// ```
/// idem_actix::unprotected_mutation!(
///     POST "/api/sessions",
///     reason = "signs in: creates no record a retry could duplicate"
/// );
/// assert!(idem_actix::exemptions().any(|exemption| exemption.path() == "/api/sessions"));
/// ```
#[macro_export]
macro_rules! unprotected_mutation {
    ($method:ident $path:literal, reason = $reason:literal $(,)?) => {
        const _: () = {
            #[$crate::__private::linkme::distributed_slice(
                $crate::__private::UNPROTECTED_MUTATIONS
            )]
            #[linkme(crate = $crate::__private::linkme)]
            static EXEMPTION: $crate::Exemption = $crate::Exemption::__new(
                $crate::__mutation_method!($method),
                $path,
                $reason,
                ::core::file!(),
                ::core::line!(),
            );
        };
    };
}

/// Not public API: the method of an exemption, or an error naming the ones there are.
#[doc(hidden)]
#[macro_export]
macro_rules! __mutation_method {
    (POST) => {
        "POST"
    };
    (PUT) => {
        "PUT"
    };
    (PATCH) => {
        "PATCH"
    };
    (DELETE) => {
        "DELETE"
    };
    ($other:ident) => {
        ::core::compile_error!(::core::concat!(
            "`",
            ::core::stringify!($other),
            "` is not a mutating method: an exemption names POST, PUT, PATCH or DELETE"
        ))
    };
}

/// Whether a request with this method may change state: anything but the safe methods.
pub(crate) fn is_mutation(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Set on each request the gate let through; protected handlers refuse to run without it.
#[derive(Clone, Copy)]
pub(crate) struct GatePassed;

/// Set on each response that a protected route answered.
#[derive(Clone, Copy)]
pub(crate) struct ServedByIdem;

/// The routes a mutation may take, by method and pattern.
#[derive(Debug, Default)]
pub(crate) struct AllowedMutations(HashMap<(Method, String), Route>);

impl AllowedMutations {
    pub(crate) fn protect(&mut self, method: &str, path: &str) {
        self.allow(method, path, Route::Protected);
    }

    pub(crate) fn exempt(&mut self, method: &str, path: &str) {
        self.allow(method, path, Route::Exempt);
    }

    fn allow(&mut self, method: &str, path: &str, route: Route) {
        let method = Method::from_bytes(method.as_bytes())
            .expect("a declared route's method is POST, PUT, PATCH or DELETE");
        self.0.insert((method, path.to_owned()), route);
    }

    /// The route of a mutation with this method and pattern, and the pattern, handed back.
    fn route(&self, method: &Method, pattern: String) -> (Route, String) {
        let key = (method.clone(), pattern);
        let route = self.0.get(&key).copied().unwrap_or(Route::Refused);
        (route, key.1)
    }
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Protected,
    Exempt,
    Refused,
}

/// The default-deny middleware: `App::new().wrap(routes.mutation_gate())`. A mutation (any
/// method but `GET`, `HEAD`, `OPTIONS` and `TRACE`) whose method and route pattern are neither
/// a mounted protected operation's nor declared with
/// [`unprotected_mutation!`](crate::unprotected_mutation) is answered `405` problem+json
/// (`#unprotected-mutation`) and logged as an error, and no handler runs. Mount the protected
/// routes at the root of the `App`, not in a `web::scope`: their patterns are matched as
/// declared.
#[derive(Clone)]
pub struct MutationGate {
    allowed: Arc<AllowedMutations>,
}

impl MutationGate {
    pub(crate) fn new(allowed: Arc<AllowedMutations>) -> Self {
        Self { allowed }
    }
}

impl<S, B> Transform<S, ServiceRequest> for MutationGate
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = MutationGateService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(MutationGateService {
            service: Rc::new(service),
            allowed: self.allowed.clone(),
        }))
    }
}

/// The [`MutationGate`] around one worker's application.
pub struct MutationGateService<S> {
    service: Rc<S>,
    allowed: Arc<AllowedMutations>,
}

impl<S, B> Service<ServiceRequest> for MutationGateService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        request.extensions_mut().insert(GatePassed);
        // The pattern of the first resource whose path matches, found in the application's
        // resource map before routing; looked up for mutations only. A path no resource
        // matches is the router's 404.
        let route = if is_mutation(request.method()) {
            request
                .match_pattern()
                .map(|pattern| self.allowed.route(request.method(), pattern))
        } else {
            None
        };
        let pattern = match route {
            None | Some((Route::Exempt, _)) => None,
            Some((Route::Protected, pattern)) => Some(pattern),
            Some((Route::Refused, pattern)) => {
                tracing::error!(
                    method = %request.method(),
                    route = %pattern,
                    "refused an unprotected mutation: protect its handler with #[financial_mutation] or #[high_risk_mutation], or declare it with unprotected_mutation!"
                );
                let problem = Problem::new(
                    ProblemKind::UnprotectedMutation,
                    format!(
                        "{} is not a protected operation on {pattern}, and this server runs no unprotected mutation: nothing was written",
                        request.method()
                    ),
                );
                let response = request.into_response(problem.to_response());
                return Box::pin(ready(Ok(response.map_into_right_body())));
            }
        };
        let service = self.service.clone();
        Box::pin(async move {
            let method = request.method().clone();
            let response = service.call(request).await?;
            // Another resource with the same pattern, registered before the protected one,
            // answered in its place: the compiler and the gate could not tell them apart.
            if let Some(pattern) = pattern
                && response
                    .response()
                    .extensions()
                    .get::<ServedByIdem>()
                    .is_none()
            {
                tracing::error!(
                    %method,
                    route = %pattern,
                    status = response.status().as_u16(),
                    "a mutation on a protected route was answered by another handler: remove the other route, or mount it after the protected routes"
                );
            }
            Ok(response.map_into_left_body())
        })
    }
}

/// The answer of a protected handler when the gate is not installed.
pub(crate) fn gate_not_installed() -> Problem {
    Problem::new(
        ProblemKind::NotConfigured,
        "the mutation gate is not installed and nothing was written: wrap the App with VerifiedRoutes::mutation_gate()",
    )
}
