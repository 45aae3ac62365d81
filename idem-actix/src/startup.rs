//! The startup check's findings: what must hold before an application serves (the registry
//! and the mounts agree, the exemptions name no protected route, the schema is migrated), each
//! a [`StartupProblem`] that says what to do, all of them in one [`StartupError`].

use idem_runtime::{Operation, RegistryError, StoreError, registry_errors};

use crate::mutation_gate::Exemption;

/// Every disagreement between the registry, the exemptions and the operations `mounted`.
pub(crate) fn startup_problems(
    registry: impl Iterator<Item = &'static Operation> + Clone,
    exemptions: impl Iterator<Item = &'static Exemption>,
    mounted: &[&'static Operation],
) -> Vec<StartupProblem> {
    let mut problems = check_registry(registry, mounted);
    problems.extend(check_exemptions(exemptions, mounted));
    problems
}

/// What the exemptions get wrong: one that names a mounted protected route, one declared twice.
fn check_exemptions(
    exemptions: impl Iterator<Item = &'static Exemption>,
    mounted: &[&'static Operation],
) -> Vec<StartupProblem> {
    let mut problems = Vec::new();
    let mut seen: Vec<&Exemption> = Vec::new();
    for exemption in exemptions {
        let same_route =
            |method: &str, path: &str| method == exemption.method() && path == exemption.path();
        if let Some(operation) = mounted.iter().find(|operation| {
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

/// What the registry and the mounts disagree on: an empty registry, a name declared twice, an
/// HTTP operation mounted never or more than once.
fn check_registry(
    registry: impl Iterator<Item = &'static Operation> + Clone,
    mounted: &[&'static Operation],
) -> Vec<StartupProblem> {
    let mut problems: Vec<StartupProblem> = registry_errors(registry.clone())
        .into_iter()
        .map(StartupProblem::Registry)
        .collect();
    for operation in registry.filter(|op| op.route().is_some()) {
        let name = operation.name();
        match mounted
            .iter()
            .filter(|mounted| mounted.name() == name)
            .count()
        {
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
    pub(crate) fn new(problems: Vec<StartupProblem>) -> Self {
        Self { problems }
    }

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

    #[test]
    fn two_declarations_of_one_name_are_refused_with_both_locations() {
        let problems = check_registry([&PAYMENT, &PAYMENT_AGAIN].into_iter(), &[&PAYMENT]);
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
        let problems = check_registry([&PAYMENT, &NIGHTLY_JOB].into_iter(), &[&PAYMENT]);
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
        let problems = check_exemptions([&PAYMENT_EXEMPT].into_iter(), &[&PAYMENT]);
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
        let problems = check_exemptions([&SIGN_UP, &SIGN_UP_AGAIN].into_iter(), &[&PAYMENT]);
        assert!(
            matches!(problems.as_slice(), [StartupProblem::ExemptionDeclaredTwice { exemption }] if exemption.contains("e.rs:5")),
            "{problems:?}"
        );
        assert!(check_exemptions([&SIGN_UP].into_iter(), &[&PAYMENT]).is_empty());
    }
}
