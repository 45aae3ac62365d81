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
//! The rules by which the gate decides, and their limits, are [`MutationGate`]'s.

use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::HttpMessage;
use actix_web::body::EitherBody;
use actix_web::dev::{
    ResourceDef, ResourceMap, Service, ServiceRequest, ServiceResponse, Transform, forward_ready,
};
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

/// The safe methods, which the gate lets through to any route: the start of every `Allow`.
const SAFE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// The mutations the gate lets through: the protected operations' routes and the declared
/// exemptions, by method and pattern.
#[derive(Debug, Default)]
pub(crate) struct AllowedMutations {
    /// `(method, pattern)` of each protected operation, and the operation's name, which is
    /// also the name of the resource that idem mounts for it.
    protected: HashMap<(Method, String), &'static str>,
    /// The declared exemptions, with their pattern compiled the way the router compiles it.
    exempt: Vec<(Method, ResourceDef)>,
}

impl AllowedMutations {
    pub(crate) fn protect(&mut self, method: &str, path: &str, operation: &'static str) {
        self.protected
            .insert((mutation_method(method), path.to_owned()), operation);
    }

    pub(crate) fn exempt(&mut self, method: &str, path: &str) {
        self.exempt
            .push((mutation_method(method), ResourceDef::new(path)));
    }

    /// What the gate does with a request: decided on the path the router will route, as the
    /// application's resource map resolves it.
    fn decide(&self, method: &Method, resources: &ResourceMap, path: &str) -> Decision {
        if !is_mutation(method) {
            return Decision::Pass;
        }
        let Some(pattern) = resources.match_pattern(path) else {
            return if self.exempts_path(method, path) {
                Decision::Pass
            } else {
                Decision::Refuse(Refusal::NotRouted)
            };
        };
        let key = (method.clone(), pattern);
        let protected = self.protected.contains_key(&key);
        let (_, pattern) = key;
        if protected {
            // The router runs the first resource that matches: it must be one of idem's.
            return match resources.match_name(path) {
                Some(name) if self.is_protected_resource(name) => Decision::Protected(pattern),
                _ => Decision::Refuse(Refusal::Shadowed { pattern }),
            };
        }
        if self.exempt.iter().any(|(exempt_method, def)| {
            exempt_method == method && def.pattern() == Some(pattern.as_str())
        }) {
            return Decision::Pass;
        }
        let allow = self.allow_on_pattern(&pattern);
        Decision::Refuse(Refusal::NotDeclared { pattern, allow })
    }

    fn is_protected_resource(&self, name: &str) -> bool {
        self.protected.values().any(|operation| *operation == name)
    }

    fn exempts_path(&self, method: &Method, path: &str) -> bool {
        self.exempt
            .iter()
            .any(|(exempt_method, def)| exempt_method == method && def.is_match(path))
    }

    /// `Allow` for a pattern: the safe methods and the mutations declared on it.
    fn allow_on_pattern(&self, pattern: &str) -> String {
        let protected = self
            .protected
            .keys()
            .filter(|(_, path)| path == pattern)
            .map(|(method, _)| method);
        let exempt = self
            .exempt
            .iter()
            .filter(|(_, def)| def.pattern() == Some(pattern))
            .map(|(method, _)| method);
        allow(protected.chain(exempt))
    }
}

/// A declared route's method, which the macros and `unprotected_mutation!` have checked.
fn mutation_method(method: &str) -> Method {
    Method::from_bytes(method.as_bytes())
        .expect("a declared route's method is POST, PUT, PATCH or DELETE")
}

/// The `Allow` header's value: the safe methods, then these, each once, in a stable order.
fn allow<'a>(mutations: impl Iterator<Item = &'a Method>) -> String {
    let mut mutations: Vec<&str> = mutations.map(Method::as_str).collect();
    mutations.sort_unstable();
    mutations.dedup();
    SAFE_METHODS
        .into_iter()
        .chain(mutations)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The gate's decision on one request.
#[derive(Debug, PartialEq)]
enum Decision {
    /// Not a mutation, or a declared exemption.
    Pass,
    /// A protected operation's route: its pattern, to check afterwards who answered.
    Protected(String),
    Refuse(Refusal),
}

/// Why a mutation was refused.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// The method is neither protected nor exempt on this pattern.
    NotDeclared { pattern: String, allow: String },
    /// Another resource, mounted before idem's, would answer this protected route.
    Shadowed { pattern: String },
    /// No resource places the path, and no exemption matches it.
    NotRouted,
}

impl Refusal {
    fn problem(&self, method: &Method, path: &str) -> Problem {
        match self {
            Self::NotDeclared { pattern, allow } => Problem::new(
                ProblemKind::UnprotectedMutation,
                format!(
                    "{method} on {pattern} is neither a protected operation nor a declared exemption: no handler ran and nothing was written"
                ),
            )
            .allow(allow.clone()),
            Self::Shadowed { pattern } => Problem::new(
                ProblemKind::NotConfigured,
                format!(
                    "another resource matching {pattern} is mounted before the protected route {method} {pattern}, and would answer in its place: no handler ran and nothing was written"
                ),
            ),
            Self::NotRouted => Problem::new(
                ProblemKind::MutationNotRouted,
                format!(
                    "no protected operation or declared exemption serves {method} {path}: no handler ran and nothing was written"
                ),
            ),
        }
    }

    fn log(&self, method: &Method, path: &str) {
        match self {
            Self::NotDeclared { pattern, .. } => tracing::error!(
                %method,
                route = %pattern,
                "refused an unprotected mutation: protect its handler with #[financial_mutation] or #[high_risk_mutation], or declare it with unprotected_mutation!"
            ),
            Self::Shadowed { pattern } => tracing::error!(
                %method,
                route = %pattern,
                "refused a protected route's mutation that another resource, mounted before it, would answer: mount the protected routes first"
            ),
            Self::NotRouted => tracing::warn!(
                %method,
                %path,
                "refused a mutation that no protected operation or exemption serves"
            ),
        }
    }
}

/// The default-deny middleware: `App::new().wrap(routes.mutation_gate())`. A mutation (any
/// method but `GET`, `HEAD`, `OPTIONS` and `TRACE`) reaches a handler only when the path the
/// router will route places it on a mounted protected operation or on a route declared with
/// [`unprotected_mutation!`](crate::unprotected_mutation); any other is refused with
/// problem+json and logged, and no handler runs.
///
/// The gate sees the request before actix-web routes it, and decides on what the router will
/// route: the percent-decoded path that actix-web matches (so `/api/%63ompanies` is
/// `/api/companies`), resolved against the application's resources as the router resolves it
/// (the first resource, in registration order, whose pattern matches, scopes included). It
/// fails closed:
///
/// - a mutation on a pattern where its method is neither protected nor exempt is answered `405`
///   (`#unprotected-mutation`), with `Allow` listing what the gate lets through there;
/// - a mutation on a protected operation's pattern is let through only when the first resource
///   that matches is one of idem's own; when another resource with a matching pattern is
///   registered before the protected routes, it would answer instead, and the gate refuses
///   (`500`, `#not-configured`: mount the protected routes first);
/// - a mutation that no resource places (the router's `404`, a `default_service`, a path that
///   only `NormalizePath` inside the gate would repair, a scope whose prefix another scope
///   shadows) is answered `404` (`#mutation-not-routed`), unless an exemption's pattern matches
///   its path.
///
/// What the gate cannot see, it cannot judge: guards. The router skips a resource whose guard
/// refuses the request and tries the next one; the gate does not run guards. So an exemption or
/// a protected pattern must not sit in front of another resource that a guard would choose for
/// the same path: idem's own resources carry only their method guard, and mount them at the
/// root of the `App`, before the application's own resources. A mutation that a protected
/// pattern admitted but that another handler answered is logged as an error after the fact.
/// Wrap `NormalizePath` outside the gate (`.wrap(routes.mutation_gate()).wrap(NormalizePath…)`,
/// the last `wrap` runs first), so that the gate judges the path the router will see.
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
        // The path as the router will match it: percent-decoded, but for `%`, `/` and `+`.
        let decision = self.allowed.decide(
            request.method(),
            request.resource_map(),
            request.match_info().as_str(),
        );
        let pattern = match decision {
            Decision::Pass => None,
            Decision::Protected(pattern) => Some(pattern),
            Decision::Refuse(refusal) => {
                let path = request.match_info().as_str();
                refusal.log(request.method(), path);
                let problem = refusal.problem(request.method(), path);
                let response = request.into_response(problem.to_response());
                return Box::pin(ready(Ok(response.map_into_right_body())));
            }
        };
        let service = self.service.clone();
        Box::pin(async move {
            let method = request.method().clone();
            let response = service.call(request).await?;
            // A guard the gate cannot run sent the request to another resource: the
            // compiler and the gate could not tell them apart.
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
