//! The engine of idem: exactly-once writes over sqlx, on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! A client retries a payment because its request timed out; the retry must not charge twice.
//! [`IdempotencyStore::execute`] runs a write's body inside one database transaction that first
//! claims the client's [`IdempotencyKey`] for its [`TenantId`] and operation, then stores the
//! body's [`StoredResponse`] and commits it all together. A retry with the same key and the same
//! request [`Fingerprint`] gets the stored response back ([`Outcome::Replayed`]); with a
//! different request it is refused ([`Outcome::FingerprintMismatch`], naming what differed).
//!
//! This crate is framework-free. Applications use it through `idem-actix`, whose
//! `#[financial_mutation]` and `#[high_risk_mutation]` attributes register operations and call
//! [`IdempotencyStore::execute`] for them.
//!
//! ```
//! use idem_runtime::{Fingerprint, IdempotencyKey, IdempotencyStore, Outcome, StoreConfig,
//!                    StoredResponse, TenantId, WriteRequest};
//! use sqlx::Sqlite;
//! idem_runtime::operation! {
//!     /// Records a payment.
//!     financial CreatePayment = "createPayment";
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("idem-crate-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let url = format!("sqlite://{}", dir.join("payments.db").display());
//! let store = IdempotencyStore::<Sqlite>::connect(&url, StoreConfig::default()).await?;
//! store.migrate().await?;
//! sqlx::query("CREATE TABLE IF NOT EXISTS payments (id BLOB PRIMARY KEY, cents INTEGER)")
//!     .execute(store.pool())
//!     .await?;
//!
//! let tenant = TenantId::new("acme")?;
//! let key = IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324")?;
//! let body = br#"{"amount_cents":1250}"#;
//! let fingerprint = Fingerprint::of_request("createPayment", "POST", "/payments", "", body);
//!
//! for expected_new in [true, false] {
//!     // The second call is the client's retry.
//!     let outcome = store
//!         .execute(CreatePayment, WriteRequest::new(&tenant, &key, fingerprint), |write| {
//!             Box::pin(async move {
//!                 sqlx::query("INSERT INTO payments (id, cents) VALUES ($1, 1250)")
//!                     .bind(write.entity_id())
//!                     .execute(write.tx())
//!                     .await?;
//!                 Ok::<_, sqlx::Error>(StoredResponse::new(201, r#"{"status":"paid"}"#))
//!             })
//!         })
//!         .await?;
//!     assert_eq!(matches!(outcome, Outcome::New { .. }), expected_new);
//! }
//! let (payments,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM payments")
//!     .fetch_one(store.pool())
//!     .await?;
//! assert_eq!(payments, 1);
//! # Ok(()) }
//! ```

#[cfg(not(any(feature = "postgres", feature = "sqlite", feature = "mysql")))]
compile_error!(
    "idem needs a database: enable the feature `postgres`, `sqlite` (the default), `mysql` or `any` (PostgreSQL and SQLite, and MySQL with `mysql`)"
);

mod attempt;
mod audit;
mod backend;
mod canonical_json;
mod clock;
mod config;
mod context;
mod entity_id;
mod error;
mod fingerprint;
mod hex;
mod in_flight;
mod key;
mod maintenance;
mod observe;
mod operation;
mod outbox;
mod outcome;
mod positional;
mod protocol;
mod request;
mod response;
mod sql_types;
mod store;
mod tenant;

pub use audit::{AuditSeal, AuditVerification, BrokenSeal, SEAL_ROWS, SealFinding};
pub use backend::{Backend, MIGRATIONS_TABLE};
pub use config::{RetryPolicy, SqliteSynchronous, StoreConfig};
pub use context::WriteContext;
pub use entity_id::{ENTITY_ID_NAMESPACE, entity_id};
pub use error::{ErrorChain, StoreError, WriteError};
pub use fingerprint::{Fingerprint, RequestPart};
pub use key::{IdempotencyKey, KeyError, MAX_KEY_LEN};
pub use maintenance::{Maintenance, MaintenanceReport, PurgePace};
pub use observe::{
    AUDIT_ROWS_LOST_TOTAL, MAINTENANCE_ERRORS_TOTAL, MAINTENANCE_PURGED_ROWS_TOTAL, METRIC_NAMES,
    OUTBOX_DISPATCH_ERRORS_TOTAL, OUTBOX_EVENTS_PARKED, OUTBOX_EVENTS_PARKED_TOTAL,
    OUTBOX_EVENTS_PENDING, OUTBOX_OLDEST_PENDING_AGE_SECONDS, WORKFLOWS_TRIGGERED_TOTAL,
    WRITE_DURATION_MS, WRITES_FAILED_TOTAL, WRITES_REPLAYED_TOTAL, WRITES_TOTAL, register_metrics,
    sha256_hex,
};
pub use operation::{
    FINANCIAL_MUTATIONS, HIGH_RISK_MUTATIONS, Operation, OperationClass, RegisteredOperation,
    RegistryError, Route, is_operation_name, registered_operations, registry_errors,
    verify_registry,
};
pub use outbox::{
    DispatchReport, HandlerError, OutboxBacklog, OutboxDispatcher, OutboxEvent, ParkedEvent,
};
pub use outcome::Outcome;
pub use positional::positional;
pub use request::WriteRequest;
pub use response::StoredResponse;
pub use store::IdempotencyStore;
pub use tenant::{MAX_TENANT_ID_LEN, TenantId, TenantIdError};

/// Declares an operation that runs outside HTTP (a background job, a command-line tool) and
/// registers it in its class's registry, as `#[financial_mutation]` and `#[high_risk_mutation]`
/// do for handlers: the protocol then accepts it, and only it.
///
/// ```
/// idem_runtime::operation! {
///     /// Charges the late fees of overdue invoices, once per company and day.
///     pub financial ChargeLateFees = "chargeLateFees";
/// }
/// idem_runtime::operation! {
///     /// Recounts stock from a scanner upload.
///     high_risk RecountStock = "recountStock";
/// }
///
/// use idem_runtime::{OperationClass, RegisteredOperation};
/// assert_eq!(ChargeLateFees::OPERATION.name(), "chargeLateFees");
/// assert_eq!(RecountStock::OPERATION.class(), OperationClass::HighRisk);
/// assert!(ChargeLateFees::OPERATION.route().is_none());
/// ```
///
/// The name must be camelCase; anything else fails to compile. A job then writes with
/// [`IdempotencyStore::execute`], supplying the tenant, a key of its own choosing, for example
/// derived from what it processes (`late-fees:2026-11-29`), and [`Fingerprint::of_job`] of its
/// input, so a rerun is a replay.
///
/// A rerun replays while its key lives: the store's retention (24 h by default), after which
/// the body runs again. A job whose reruns may come later states its own, longer retention:
///
/// ```
/// use std::time::Duration;
///
/// idem_runtime::operation! {
///     /// Closes a quarter's books; a rerun weeks later must still be a replay.
///     pub financial CloseQuarter = "closeQuarter", retention = Duration::from_secs(400 * 24 * 3600);
/// }
/// use idem_runtime::RegisteredOperation;
/// assert_eq!(CloseQuarter::OPERATION.retention(), Some(Duration::from_secs(400 * 24 * 3600)));
/// ```
#[macro_export]
macro_rules! operation {
    ($(#[$attr:meta])* $vis:vis financial $ty:ident = $name:literal $(, retention = $retention:expr)?;) => {
        $crate::__operation!($(#[$attr])* $vis $ty, $name, FINANCIAL_MUTATIONS, Financial $(, $retention)?);
    };
    ($(#[$attr:meta])* $vis:vis high_risk $ty:ident = $name:literal $(, retention = $retention:expr)?;) => {
        $crate::__operation!($(#[$attr])* $vis $ty, $name, HIGH_RISK_MUTATIONS, HighRisk $(, $retention)?);
    };
}

/// Not public API: the paths that code generated by idem's macros names.
#[doc(hidden)]
pub mod __private {
    pub use linkme;

    #[cfg(feature = "sqlite")]
    pub use crate::backend::catalog::sqlite_statements;
    #[cfg(feature = "postgres")]
    pub use crate::backend::catalog::{postgres_generic_plans, postgres_statements};

    pub use crate::operation::Registered;

    /// Declares the unit type `$ty`, adds its [`Operation`](crate::Operation) to the registry
    /// `$slice` and implements [`RegisteredOperation`](crate::RegisteredOperation) for it.
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __operation {
        ($(#[$attr:meta])* $vis:vis $ty:ident, $name:literal, $slice:ident, $class:ident $(, $retention:expr)?) => {
            $(#[$attr])*
            #[derive(Clone, Copy, Debug, Default)]
            $vis struct $ty;
            const _: () = {
                #[$crate::__private::linkme::distributed_slice($crate::$slice)]
                #[linkme(crate = $crate::__private::linkme)]
                static OPERATION: $crate::Operation = $crate::Operation::__new(
                    $name,
                    $crate::OperationClass::$class,
                    ::core::option::Option::None,
                    ::core::file!(),
                    ::core::line!(),
                )$(.__retained_for($retention))?;
                impl $crate::__private::Registered for $ty {}
                impl $crate::RegisteredOperation for $ty {
                    const OPERATION: &'static $crate::Operation = &OPERATION;
                }
            };
        };
    }
}
