//! The route gate: protected handlers are mounted only through it, only in their own class,
//! and the application refuses to start when the registry and the mounts disagree.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use actix_web::web::ServiceConfig;
use idem_runtime::{Backend, Operation, RegisteredOperation, StoreError, registered_operations};

use crate::config::Idempotency;

/// Not public API: how an annotated handler adds its route to an application.
#[doc(hidden)]
pub trait Mount {
    /// The database the handler's write context runs on.
    type Database: Backend;

    /// Adds the handler's resource to `config`.
    fn mount(config: &mut ServiceConfig);
}

/// A handler annotated with `#[financial_mutation]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a financial mutation",
    label = "expected a handler annotated with #[financial_mutation]",
    note = "annotate the handler with #[financial_mutation(\"operationName\", post = \"/path\")]; a #[high_risk_mutation] handler is mounted with `.high_risk(...)`"
)]
pub trait FinancialMutation: RegisteredOperation + Mount + 'static {}

/// A handler annotated with `#[high_risk_mutation]`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a high-risk mutation",
    label = "expected a handler annotated with #[high_risk_mutation]",
    note = "annotate the handler with #[high_risk_mutation(\"operationName\", post = \"/path\")]; a #[financial_mutation] handler is mounted with `.financial(...)`"
)]
pub trait HighRiskMutation: RegisteredOperation + Mount + 'static {}

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
///     actix_web::App::new().configure(move |config| routes.configure(config))
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
    pub fn financial<M: FinancialMutation<Database = DB>>(mut self, _handler: M) -> Self {
        self.mounts.push(Mounted {
            operation: M::OPERATION,
            mount: M::mount,
        });
        self
    }

    /// Mounts a `#[high_risk_mutation]` handler.
    pub fn high_risk<M: HighRiskMutation<Database = DB>>(mut self, _handler: M) -> Self {
        self.mounts.push(Mounted {
            operation: M::OPERATION,
            mount: M::mount,
        });
        self
    }

    /// The startup check: every registered HTTP operation is mounted exactly once, no two
    /// handlers claim one operation name, the registry is not empty, and the store's schema is
    /// migrated. Lists every problem it finds.
    pub async fn verify(self) -> Result<VerifiedRoutes<DB>, StartupError> {
        let mut problems = check_registry(registered_operations(), &self.mounts);
        match self.idem.store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => {}
            Ok(pending) => problems.push(StartupProblem::NotMigrated { pending }),
            Err(error) => problems.push(StartupProblem::Store(error)),
        }
        if !problems.is_empty() {
            return Err(StartupError { problems });
        }
        Ok(VerifiedRoutes {
            idem: self.idem,
            mounts: self.mounts.into(),
        })
    }
}

fn check_registry(
    registry: impl Iterator<Item = &'static Operation>,
    mounts: &[Mounted],
) -> Vec<StartupProblem> {
    let mut problems = Vec::new();
    let mut by_name: BTreeMap<&str, Vec<&'static Operation>> = BTreeMap::new();
    for operation in registry {
        by_name.entry(operation.name()).or_default().push(operation);
    }
    if by_name.is_empty() {
        problems.push(StartupProblem::EmptyRegistry);
    }
    for (name, declared) in &by_name {
        if declared.len() > 1 {
            problems.push(StartupProblem::DuplicateName {
                operation: name.to_string(),
                locations: declared.iter().map(|op| location(op)).collect(),
            });
            continue;
        }
        let operation = declared[0];
        if operation.route().is_none() {
            continue;
        }
        match mounts
            .iter()
            .filter(|m| m.operation.name() == *name)
            .count()
        {
            0 => problems.push(StartupProblem::NotMounted {
                operation: name.to_string(),
                location: location(operation),
            }),
            1 => {}
            times => problems.push(StartupProblem::MountedMoreThanOnce {
                operation: name.to_string(),
                times,
            }),
        }
    }
    problems
}

fn location(operation: &Operation) -> String {
    format!("{}:{}", operation.file(), operation.line())
}

/// The protected routes after the startup check: cheap to clone into each worker.
pub struct VerifiedRoutes<DB: Backend> {
    idem: Idempotency<DB>,
    mounts: Arc<[Mounted]>,
}

impl<DB: Backend> Clone for VerifiedRoutes<DB> {
    fn clone(&self) -> Self {
        Self {
            idem: self.idem.clone(),
            mounts: self.mounts.clone(),
        }
    }
}

impl<DB: Backend> VerifiedRoutes<DB> {
    /// Adds the settings and every protected route to an application:
    /// `App::new().configure(|config| routes.configure(config))`.
    pub fn configure(&self, config: &mut ServiceConfig) {
        config.app_data(self.idem.clone());
        config.app_data(self.idem.tenants.clone());
        for mounted in self.mounts.iter() {
            (mounted.mount)(config);
        }
    }

    /// The mounted operations, in mounting order.
    pub fn operations(&self) -> impl Iterator<Item = &'static Operation> + '_ {
        self.mounts.iter().map(|mounted| mounted.operation)
    }
}

/// One disagreement between the registry, the mounts and the database.
#[derive(Debug)]
pub enum StartupProblem {
    /// No operation is registered: the crate that declares the handlers was not linked
    /// (name one of its items, or `use that_crate as _;`).
    EmptyRegistry,
    /// A registered operation has no mounted route.
    NotMounted {
        /// The operation's name.
        operation: String,
        /// Where it is declared.
        location: String,
    },
    /// A registered operation is mounted more than once.
    MountedMoreThanOnce {
        /// The operation's name.
        operation: String,
        /// How many times it is mounted.
        times: usize,
    },
    /// Two handlers declare one operation name.
    DuplicateName {
        /// The name.
        operation: String,
        /// Where each declaration is.
        locations: Vec<String>,
    },
    /// Some of idem's migrations have not been applied.
    NotMigrated {
        /// The versions still to apply.
        pending: Vec<i64>,
    },
    /// The store could not be checked.
    Store(StoreError),
}

impl fmt::Display for StartupProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyRegistry => f.write_str(
                "no protected operation is registered: the crate that declares the annotated handlers is not linked; name one of its items or add `use that_crate as _;`",
            ),
            Self::NotMounted { operation, location } => write!(
                f,
                "operation `{operation}` (declared at {location}) is registered but not mounted: add it to ProtectedRoutes with .financial(...) or .high_risk(...)"
            ),
            Self::MountedMoreThanOnce { operation, times } => write!(
                f,
                "operation `{operation}` is mounted {times} times: mount it once"
            ),
            Self::DuplicateName {
                operation,
                locations,
            } => write!(
                f,
                "operation name `{operation}` is declared by more than one handler ({}): give each operation its own name",
                locations.join(", ")
            ),
            Self::NotMigrated { pending } => write!(
                f,
                "the idempotency schema is not migrated (pending versions {pending:?}): call IdempotencyStore::migrate before starting"
            ),
            Self::Store(error) => write!(f, "the idempotency store could not be checked: {error}"),
        }
    }
}

/// The application must not start: the registry, the mounts or the database disagree.
#[derive(Debug)]
pub struct StartupError {
    problems: Vec<StartupProblem>,
}

impl StartupError {
    /// Every problem found.
    pub fn problems(&self) -> &[StartupProblem] {
        &self.problems
    }
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refusing to start, {} problem(s):", self.problems.len())?;
        for problem in &self.problems {
            write!(f, "\n  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StartupError {}

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
            StartupProblem::DuplicateName {
                operation,
                locations,
            },
        ] = problems.as_slice()
        else {
            panic!("{problems:?}");
        };
        assert_eq!(operation, "createPayment");
        assert_eq!(locations, &["a.rs:1", "b.rs:2"]);
    }

    #[test]
    fn an_empty_registry_is_refused() {
        let problems = check_registry(std::iter::empty(), &[]);
        assert!(matches!(
            problems.as_slice(),
            [StartupProblem::EmptyRegistry]
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
        assert!(
            text.starts_with("refusing to start, 1 problem(s):"),
            "{text}"
        );
        assert!(
            text.contains("`createPayment` (declared at a.rs:1) is registered but not mounted"),
            "{text}"
        );
    }
}
