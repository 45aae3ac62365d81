//! The protected routes (the route gate): protected handlers are mounted only through them,
//! only in their own class, and the application refuses to start when the registry and the
//! mounts disagree.

use std::sync::Arc;

use actix_web::web::ServiceConfig;
use idem_runtime::{
    Backend, ErrorChain, IdempotencyStore, Operation, RegisteredOperation, RegistryError,
    StoreError, registered_operations, registry_errors,
};

use crate::config::Idempotency;
use crate::mutation_gate::{AllowedMutations, Exemption, MutationGate, exemptions};

/// Not public API: how an annotated handler, whose write context runs on `DB`, adds its route
/// to an application.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not write to the database of these routes",
    label = "its write context is not `WriteContext<'_, {DB}>`",
    note = "mount a handler in the ProtectedRoutes of the database its `&mut WriteContext<'_, DB>` names"
)]
pub trait Mount<DB: Backend> {
    /// Adds the handler's resource to `config`.
    fn mount(config: &mut ServiceConfig);
}

/// Implemented by no type: the bound a protected handler passed to `App::service` fails, with
/// the sentence it shows.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a protected handler is mounted through ProtectedRoutes, not `App::service`",
    label = "this route would skip the startup check",
    note = "add it with `ProtectedRoutes::financial(handler)` or `.high_risk(handler)`, then mount the verified routes: `App::new().wrap(routes.mutation_gate()).configure(|config| routes.configure(config))`"
)]
pub trait MountedThroughTheGate {}

/// A handler annotated with `#[financial_mutation]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a financial mutation on {DB}",
    label = "expected a handler annotated with #[financial_mutation] whose write context is `WriteContext<'_, {DB}>`",
    note = "annotate the handler with #[financial_mutation(\"operationName\", post = \"/path\")]; a #[high_risk_mutation] handler is mounted with `.high_risk(...)`"
)]
pub trait FinancialMutation<DB: Backend>: RegisteredOperation + Mount<DB> + 'static {}

/// A handler annotated with `#[high_risk_mutation]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a high-risk mutation on {DB}",
    label = "expected a handler annotated with #[high_risk_mutation] whose write context is `WriteContext<'_, {DB}>`",
    note = "annotate the handler with #[high_risk_mutation(\"operationName\", post = \"/path\")]; a #[financial_mutation] handler is mounted with `.financial(...)`"
)]
pub trait HighRiskMutation<DB: Backend>: RegisteredOperation + Mount<DB> + 'static {}

struct Mounted {
    operation: &'static Operation,
    mount: fn(&mut ServiceConfig),
}

/// The protected routes of an application, before the startup check.
///
/// ```no_run
/// # use idem_actix::*;
/// # async fn start(idem: Idempotency<sqlx::Sqlite>) -> Result<(), Box<dyn std::error::Error>> {
/// let routes = ProtectedRoutes::new(idem)
///     // .financial(create_payment)
///     // .high_risk(create_customer)
///     .verify()
///     .await?;
/// actix_web::HttpServer::new(move || {
///     let routes = routes.clone();
///     actix_web::App::new()
///         .wrap(routes.mutation_gate())
///         .configure(move |config| routes.configure(config))
/// });
/// # Ok(()) }
/// ```
pub struct ProtectedRoutes<DB: Backend> {
    idem: Idempotency<DB>,
    mounts: Vec<Mounted>,
}

impl<DB: Backend> ProtectedRoutes<DB> {
    /// No routes yet, on these settings.
    pub fn new(idem: Idempotency<DB>) -> Self {
        Self {
            idem,
            mounts: Vec::new(),
        }
    }

    /// Mounts a `#[financial_mutation]` handler.
    pub fn financial<M: FinancialMutation<DB>>(self, _handler: M) -> Self {
        self.with::<M>()
    }

    /// Mounts a `#[high_risk_mutation]` handler.
    pub fn high_risk<M: HighRiskMutation<DB>>(self, _handler: M) -> Self {
        self.with::<M>()
    }

    /// Adds a handler whose class the public methods checked.
    fn with<M: RegisteredOperation + Mount<DB>>(mut self) -> Self {
        self.mounts.push(Mounted {
            operation: M::OPERATION,
            mount: M::mount,
        });
        self
    }

    /// The startup check: every registered HTTP operation is mounted exactly once, no two
    /// handlers claim one operation name, the registry is not empty, no exemption
    /// ([`unprotected_mutation!`](crate::unprotected_mutation)) names a protected route or
    /// another exemption's, and the store's schema is migrated. Lists every problem it finds,
    /// and logs every exemption, so that the routes served without idem are in the startup log.
    /// Warns, without refusing to start, when row-level security does not hold for the serving
    /// role ([`IdempotencyStore::row_level_security_bypasses`](idem_runtime::IdempotencyStore::row_level_security_bypasses))
    /// and when a failover could lose acknowledged writes
    /// ([`IdempotencyStore::replication_risks`](idem_runtime::IdempotencyStore::replication_risks)).
    pub async fn verify(self) -> Result<VerifiedRoutes<DB>, StartupError> {
        let mut problems = check_registry(registered_operations(), &self.mounts);
        problems.extend(check_exemptions(exemptions(), &self.mounts));
        match self.idem.store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => {}
            Ok(pending) => problems.push(StartupProblem::NotMigrated { pending }),
            Err(error) => problems.push(StartupProblem::Store(error)),
        }
        if !problems.is_empty() {
            return Err(StartupError { problems });
        }
        match self.idem.store.row_level_security_bypasses().await {
            Ok(bypasses) => {
                for bypass in bypasses {
                    tracing::warn!(%bypass, "row-level security does not hold for the serving role");
                }
            }
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "could not check row-level security")
            }
        }
        match self.idem.store.replication_risks().await {
            Ok(risks) => {
                for risk in risks {
                    tracing::warn!(%risk, "a failover can lose acknowledged writes");
                }
            }
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), "could not check replication")
            }
        }
        idem_runtime::register_metrics();
        let mut allowed = AllowedMutations::default();
        for operation in self.mounts.iter().map(|mounted| mounted.operation) {
            if let Some(route) = operation.route() {
                allowed.protect(route.method, route.path, operation.name());
            }
        }
        for exemption in exemptions() {
            tracing::info!(%exemption, "mutation served without idem");
            allowed.exempt(exemption.method(), exemption.path());
        }
        Ok(VerifiedRoutes {
            idem: self.idem,
            mounts: self.mounts.into(),
            allowed: Arc::new(allowed),
        })
    }
}

fn check_exemptions(
    exemptions: impl Iterator<Item = &'static Exemption>,
    mounts: &[Mounted],
) -> Vec<StartupProblem> {
    let mut problems = Vec::new();
    let mut seen: Vec<&Exemption> = Vec::new();
    for exemption in exemptions {
        let same_route =
            |method: &str, path: &str| method == exemption.method() && path == exemption.path();
        if let Some(operation) = mounts.iter().map(|m| m.operation).find(|operation| {
            operation
                .route()
                .is_some_and(|route| same_route(route.method, route.path))
        }) {
            problems.push(StartupProblem::ExemptionOfProtectedRoute {
                exemption: exemption.to_string(),
                operation: operation.name().to_owned(),
            });
        }
        if seen
            .iter()
            .any(|other| same_route(other.method(), other.path()))
        {
            problems.push(StartupProblem::ExemptionDeclaredTwice {
                exemption: exemption.to_string(),
            });
        }
        seen.push(exemption);
    }
    problems
}

fn check_registry(
    registry: impl Iterator<Item = &'static Operation> + Clone,
    mounts: &[Mounted],
) -> Vec<StartupProblem> {
    let mut problems: Vec<StartupProblem> = registry_errors(registry.clone())
        .into_iter()
        .map(StartupProblem::Registry)
        .collect();
    for operation in registry.filter(|op| op.route().is_some()) {
        let name = operation.name();
        match mounts.iter().filter(|m| m.operation.name() == name).count() {
            0 => problems.push(StartupProblem::NotMounted {
                operation: name.to_owned(),
                location: operation.location(),
            }),
            1 => {}
            times => problems.push(StartupProblem::MountedMoreThanOnce {
                operation: name.to_owned(),
                times,
            }),
        }
    }
    problems
}

/// The protected routes after the startup check: cheap to clone into each worker.
pub struct VerifiedRoutes<DB: Backend> {
    idem: Idempotency<DB>,
    mounts: Arc<[Mounted]>,
    allowed: Arc<AllowedMutations>,
}

impl<DB: Backend> Clone for VerifiedRoutes<DB> {
    fn clone(&self) -> Self {
        Self {
            idem: self.idem.clone(),
            mounts: self.mounts.clone(),
            allowed: self.allowed.clone(),
        }
    }
}

impl<DB: Backend> VerifiedRoutes<DB> {
    /// Adds the settings and every protected route to an application:
    /// `App::new().wrap(routes.mutation_gate()).configure(|config| routes.configure(config))`.
    pub fn configure(&self, config: &mut ServiceConfig) {
        config.app_data(self.idem.clone());
        config.app_data(self.idem.tenants.clone());
        for mounted in self.mounts.iter() {
            (mounted.mount)(config);
        }
    }

    /// The default-deny middleware of the application: a mutation reaches a handler only
    /// through these protected routes or a declared
    /// [exemption](crate::unprotected_mutation). Wrap the whole `App` with it; a protected
    /// route refuses to run without it (`500`, `#not-configured`).
    pub fn mutation_gate(&self) -> MutationGate {
        MutationGate::new(self.allowed.clone())
    }

    /// The routes served without idem, as declared with
    /// [`unprotected_mutation!`](crate::unprotected_mutation).
    pub fn exemptions(&self) -> impl Iterator<Item = &'static Exemption> + Clone {
        exemptions()
    }

    /// The store the routes write through.
    pub fn store(&self) -> &IdempotencyStore<DB> {
        &self.idem.store
    }

    /// The mounted operations, in mounting order.
    pub fn operations(&self) -> impl Iterator<Item = &'static Operation> + '_ {
        self.mounts.iter().map(|mounted| mounted.operation)
    }
}

/// One disagreement between the registry, the mounts and the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupProblem {
    /// The registry is empty, or two handlers declare one operation name.
    #[error(transparent)]
    Registry(RegistryError),
    /// A registered operation has no mounted route.
    #[error(
        "operation `{operation}` (declared at {location}) is registered but not mounted: add it to ProtectedRoutes with .financial(...) or .high_risk(...)"
    )]
    NotMounted {
        /// The operation's name.
        operation: String,
        /// Where it is declared.
        location: String,
    },
    /// A registered operation is mounted more than once.
    #[error("operation `{operation}` is mounted {times} times: mount it once")]
    MountedMoreThanOnce {
        /// The operation's name.
        operation: String,
        /// How many times it is mounted.
        times: usize,
    },
    /// An exemption names the route of a mounted protected operation.
    #[error(
        "the exemption {exemption} names the route of the protected operation `{operation}`: remove the unprotected_mutation! declaration"
    )]
    ExemptionOfProtectedRoute {
        /// The exemption, with its reason and location.
        exemption: String,
        /// The protected operation on that route.
        operation: String,
    },
    /// Two exemptions name one route.
    #[error("the route of the exemption {exemption} is declared exempt twice: keep one")]
    ExemptionDeclaredTwice {
        /// The second declaration.
        exemption: String,
    },
    /// Some of idem's migrations have not been applied.
    #[error(
        "the idempotency schema is not migrated (pending versions {pending:?}): call IdempotencyStore::migrate before starting"
    )]
    NotMigrated {
        /// The versions still to apply.
        pending: Vec<i64>,
    },
    /// The store could not be checked. The message carries the store's causes: a startup
    /// problem is read in a list, where a `source()` chain would not be printed.
    #[error("the idempotency store could not be checked: {}", idem_runtime::ErrorChain(.0))]
    Store(StoreError),
}

/// The application must not start: the registry, the mounts or the database disagree. It
/// prints as the list of its problems, one per line, each saying what to do, in `Debug` too,
/// so that `fn main() -> Result<(), StartupError>` (or a boxed error) reads the same.
#[derive(thiserror::Error)]
#[error("refusing to start, {} problem(s):{}", problems.len(), problems.iter().map(|problem| format!("\n  - {problem}")).collect::<String>())]
pub struct StartupError {
    problems: Vec<StartupProblem>,
}

impl std::fmt::Debug for StartupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl StartupError {
    /// Every problem found.
    pub fn problems(&self) -> &[StartupProblem] {
        &self.problems
    }
}

#[cfg(test)]
mod tests {
    use idem_runtime::{OperationClass, Route};

    use super::*;

    const ROUTE: Option<Route> = Some(Route {
        method: "POST",
        path: "/payments",
    });
    static PAYMENT: Operation =
        Operation::__new("createPayment", OperationClass::Financial, ROUTE, "a.rs", 1);
    static PAYMENT_AGAIN: Operation =
        Operation::__new("createPayment", OperationClass::HighRisk, ROUTE, "b.rs", 2);
    static NIGHTLY_JOB: Operation =
        Operation::__new("runPayroll", OperationClass::Financial, None, "c.rs", 3);

    fn mounted(operation: &'static Operation) -> Mounted {
        Mounted {
            operation,
            mount: |_| {},
        }
    }

    #[test]
    fn two_declarations_of_one_name_are_refused_with_both_locations() {
        let problems = check_registry([&PAYMENT, &PAYMENT_AGAIN].into_iter(), &[mounted(&PAYMENT)]);
        let [
            StartupProblem::Registry(RegistryError::DuplicateName { name, locations }),
            ..,
        ] = problems.as_slice()
        else {
            panic!("{problems:?}");
        };
        assert_eq!(*name, "createPayment");
        assert_eq!(locations, &["a.rs:1", "b.rs:2"]);
    }

    #[test]
    fn an_empty_registry_is_refused() {
        let problems = check_registry(std::iter::empty(), &[]);
        assert!(matches!(
            problems.as_slice(),
            [StartupProblem::Registry(RegistryError::Empty)]
        ));
        assert!(problems[0].to_string().contains("not linked"));
    }

    #[test]
    fn operations_without_a_route_need_no_mount() {
        let problems = check_registry([&PAYMENT, &NIGHTLY_JOB].into_iter(), &[mounted(&PAYMENT)]);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn the_error_lists_every_problem() {
        let error = StartupError {
            problems: check_registry([&PAYMENT].into_iter(), &[]),
        };
        let text = error.to_string();
        assert_eq!(
            format!("{error:?}"),
            text,
            "the `?` path prints the same list"
        );
        assert!(
            text.starts_with("refusing to start, 1 problem(s):"),
            "{text}"
        );
        assert!(
            text.contains("`createPayment` (declared at a.rs:1) is registered but not mounted"),
            "{text}"
        );
    }

    static SIGN_UP: Exemption =
        Exemption::__new("POST", "/sign-up", "creates the tenant", "d.rs", 4);
    static SIGN_UP_AGAIN: Exemption =
        Exemption::__new("POST", "/sign-up", "creates the tenant", "e.rs", 5);
    static PAYMENT_EXEMPT: Exemption =
        Exemption::__new("POST", "/payments", "no reason is good enough", "f.rs", 6);

    #[test]
    fn an_exemption_of_a_protected_route_is_refused() {
        let problems = check_exemptions([&PAYMENT_EXEMPT].into_iter(), &[mounted(&PAYMENT)]);
        let [
            StartupProblem::ExemptionOfProtectedRoute {
                operation,
                exemption,
            },
        ] = problems.as_slice()
        else {
            panic!("{problems:?}");
        };
        assert_eq!(operation, "createPayment");
        assert!(
            exemption.contains("POST /payments (declared at f.rs:6)"),
            "{exemption}"
        );
    }

    #[test]
    fn an_exemption_declared_twice_is_refused_and_distinct_ones_pass() {
        let problems =
            check_exemptions([&SIGN_UP, &SIGN_UP_AGAIN].into_iter(), &[mounted(&PAYMENT)]);
        assert!(
            matches!(problems.as_slice(), [StartupProblem::ExemptionDeclaredTwice { exemption }] if exemption.contains("e.rs:5")),
            "{problems:?}"
        );
        assert!(check_exemptions([&SIGN_UP].into_iter(), &[mounted(&PAYMENT)]).is_empty());
    }
}
