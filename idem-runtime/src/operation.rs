//! Registered operations and the link-time registries that list them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use linkme::distributed_slice;

/// How much is at stake when an operation runs twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationClass {
    /// Moves or books money: payments, invoices, payroll, reconciliation.
    Financial,
    /// Changes state that is costly to undo: inventory, customers, employees, settings, access.
    HighRisk,
}

impl OperationClass {
    /// The class as it appears in metrics, logs and the registry listing.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Financial => "financial",
            Self::HighRisk => "high_risk",
        }
    }
}

impl fmt::Display for OperationClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an HTTP operation is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The HTTP method, upper case (`POST`).
    pub method: &'static str,
    /// The route template (`/api/invoices/{id}/finalize`).
    pub path: &'static str,
}

/// One protected operation, as the annotation that declared it describes it.
///
/// Values exist only in the registries: `#[financial_mutation]` and `#[high_risk_mutation]`
/// create them, and the write protocol accepts only operations reached through
/// [`RegisteredOperation`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    name: &'static str,
    class: OperationClass,
    route: Option<Route>,
    file: &'static str,
    line: u32,
    retention: Option<Duration>,
}

impl Operation {
    #[doc(hidden)]
    pub const fn __new(
        name: &'static str,
        class: OperationClass,
        route: Option<Route>,
        file: &'static str,
        line: u32,
    ) -> Self {
        assert!(
            is_operation_name(name),
            "an operation name is camelCase: a lowercase ASCII letter, then ASCII letters and digits"
        );
        Self {
            name,
            class,
            route,
            file,
            line,
            retention: None,
        }
    }

    #[doc(hidden)]
    pub const fn __retained_for(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }

    /// How long this operation's keys replay, when it asks for longer than the store's
    /// retention (`operation! { … retention = … }`, for a job whose reruns come late).
    pub const fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// The operation's unique name, camelCase (`createPayment`).
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The operation's class.
    pub const fn class(&self) -> OperationClass {
        self.class
    }

    /// The HTTP route, for an operation served by a handler; `None` for a job or a command.
    pub const fn route(&self) -> Option<Route> {
        self.route
    }

    /// The source file of the annotated function.
    pub const fn file(&self) -> &'static str {
        self.file
    }

    /// The line of the annotated function.
    pub const fn line(&self) -> u32 {
        self.line
    }

    /// Where the operation is declared, as `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Whether `name` is a valid operation name: camelCase ASCII, as the macros require.
pub const fn is_operation_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_lowercase() {
        return false;
    }
    let mut i = 1;
    while i < bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            return false;
        }
        i += 1;
    }
    true
}

/// A type that stands for one registered operation.
///
/// `#[financial_mutation]`, `#[high_risk_mutation]` and [`operation!`](crate::operation)
/// implement it for the type they generate, together with the registry entry, so the write
/// protocol can only be called for an operation the registries know. A hand-written
/// implementation does not compile (it lacks the hidden [`Registered`] mark the macros add),
/// and the protocol refuses any operation whose entry is not in the linked registries
/// ([`StoreError::Unregistered`](crate::StoreError::Unregistered)), whatever the compiler missed.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a registered operation",
    label = "not declared with operation!, #[financial_mutation] or #[high_risk_mutation]",
    note = "a job declares its operation with `operation! {{ financial CloseMonth = \"closeMonth\"; }}` and passes `CloseMonth`; an HTTP handler's operation is declared by #[financial_mutation(\"operationName\", ...)] or #[high_risk_mutation(...)]: both register the operation and implement this trait"
)]
pub trait RegisteredOperation: Registered {
    /// The registry entry of this operation.
    const OPERATION: &'static Operation;
}

/// The mark that only idem's macros put on an operation's type. Not public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not declared as an operation: only #[financial_mutation], #[high_risk_mutation] and operation! create one",
    label = "implemented by hand",
    note = "remove this implementation, and declare the operation with operation! {{ financial {Self} = \"operationName\"; }} (a job) or annotate its handler: the macro registers it and implements RegisteredOperation"
)]
pub trait Registered {}

/// Whether `operation` is an entry of the linked registries (the very entry, not one of the
/// same name): its address lies on an element of one of the two slices, a check whose cost
/// does not grow with the number of operations, run on every write.
pub(crate) fn is_registered(operation: &'static Operation) -> bool {
    is_entry_of(&FINANCIAL_MUTATIONS, operation) || is_entry_of(&HIGH_RISK_MUTATIONS, operation)
}

/// Whether `operation` is one of `registry`'s elements, by address.
fn is_entry_of(registry: &[Operation], operation: &Operation) -> bool {
    let range = registry.as_ptr_range();
    let entry: *const Operation = operation;
    range.contains(&entry)
        && (entry.addr() - range.start.addr()).is_multiple_of(std::mem::size_of::<Operation>())
}

/// Every operation declared with `#[financial_mutation]`, collected at link time.
#[distributed_slice]
pub static FINANCIAL_MUTATIONS: [Operation];

/// Every operation declared with `#[high_risk_mutation]`, collected at link time.
#[distributed_slice]
pub static HIGH_RISK_MUTATIONS: [Operation];

/// Every registered operation, financial first, each registry in link order.
pub fn registered_operations() -> impl Iterator<Item = &'static Operation> + Clone {
    FINANCIAL_MUTATIONS.iter().chain(HIGH_RISK_MUTATIONS.iter())
}

/// What only the whole program can get wrong about its registries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No operation is registered: the crate that declares them was not linked.
    #[error(
        "no protected operation is registered: the crate that declares them is not linked; name one of its items or add `use that_crate as _;`"
    )]
    Empty,
    /// Two declarations share one operation name.
    #[error("operation name `{name}` is declared more than once ({}): give each operation its own name", .locations.join(", "))]
    DuplicateName {
        /// The name.
        name: &'static str,
        /// Where each declaration is, as `file:line`.
        locations: Vec<String>,
    },
}

/// Checks the registries of this program: not empty, and no name declared twice. The startup
/// gate of `idem-actix` runs it for servers; a job or a command calls it at startup.
///
/// ```
/// idem_runtime::operation! {
///     financial CloseMonth = "closeMonth";
/// }
/// assert_eq!(idem_runtime::verify_registry(), Ok(()));
/// ```
pub fn verify_registry() -> Result<(), RegistryError> {
    match registry_errors(registered_operations()).into_iter().next() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// [`verify_registry`], run once per process and remembered. Every write consults it, so a
/// program that never ran the check (a job, a command) still cannot write under a name that two
/// operations share, where one operation's keys would replay the other's answers.
pub(crate) fn registry_verdict() -> Result<(), &'static RegistryError> {
    static VERDICT: OnceLock<Result<(), RegistryError>> = OnceLock::new();
    VERDICT.get_or_init(verify_registry).as_ref().map(|_| ())
}

/// Every problem of a registry, for checks that report them all.
pub fn registry_errors(
    operations: impl IntoIterator<Item = &'static Operation>,
) -> Vec<RegistryError> {
    let mut by_name: BTreeMap<&'static str, Vec<&'static Operation>> = BTreeMap::new();
    for operation in operations {
        by_name.entry(operation.name()).or_default().push(operation);
    }
    if by_name.is_empty() {
        return vec![RegistryError::Empty];
    }
    by_name
        .into_iter()
        .filter(|(_, declared)| declared.len() > 1)
        .map(|(name, declared)| RegistryError::DuplicateName {
            name,
            locations: declared.iter().map(|op| op.location()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    static FIRST: Operation =
        Operation::__new("payOut", OperationClass::Financial, None, "a.rs", 1);
    static SECOND: Operation =
        Operation::__new("payOut", OperationClass::HighRisk, None, "b.rs", 2);
    static OTHER: Operation = Operation::__new("payIn", OperationClass::Financial, None, "c.rs", 3);

    #[test]
    fn a_name_declared_twice_is_reported_with_both_locations() {
        assert_eq!(
            registry_errors([&FIRST, &OTHER, &SECOND]),
            [RegistryError::DuplicateName {
                name: "payOut",
                locations: vec!["a.rs:1".to_owned(), "b.rs:2".to_owned()],
            }]
        );
        assert!(registry_errors([&FIRST, &OTHER]).is_empty());
    }

    /// Each element of a registry is one of its entries, by address; an operation of the same
    /// name elsewhere, or past the slice's end, is not.
    #[test]
    fn an_entry_is_known_by_its_address() {
        static REGISTRY: [Operation; 3] = [
            Operation::__new("payOut", OperationClass::Financial, None, "r.rs", 1),
            Operation::__new("payIn", OperationClass::Financial, None, "r.rs", 2),
            Operation::__new("refund", OperationClass::HighRisk, None, "r.rs", 3),
        ];
        for entry in &REGISTRY {
            assert!(is_entry_of(&REGISTRY, entry), "{}", entry.name());
        }
        assert!(!is_entry_of(&REGISTRY, &FIRST), "same name, another entry");
        assert!(!is_entry_of(&REGISTRY[..2], &REGISTRY[2]), "past the end");
        assert!(!is_entry_of(&[], &OTHER));
    }

    #[test]
    fn an_empty_registry_is_reported() {
        assert_eq!(registry_errors([]), [RegistryError::Empty]);
    }

    #[test]
    fn operation_names_are_camel_case() {
        for good in ["createPayment", "x", "grantUserAccess2"] {
            assert!(is_operation_name(good), "{good}");
        }
        for bad in [
            "",
            "CreatePayment",
            "create_payment",
            "create-payment",
            "2fa",
            "café",
        ] {
            assert!(!is_operation_name(bad), "{bad}");
        }
    }
}
