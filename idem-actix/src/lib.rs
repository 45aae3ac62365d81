//! Exactly-once mutations for actix-web, with the contract checked by the compiler.
//!
//! Annotate a handler with [`financial_mutation`] or [`high_risk_mutation`]: it must take the
//! client's [`IdempotencyKey`] and a [`WriteContext`], or it does not compile. At run time the
//! key is claimed, the handler's statements run on the context's transaction, and its answer is
//! stored and committed with them. A retry with the same key gets the stored answer back with
//! `Idempotent-Replayed: true`; the same key with another request gets `422`.
//!
//! ```no_run
//! use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
//! use idem_actix::{
//!     IdempotencyKey, Idempotency, IdempotencyStore, ProtectedRoutes, StoreConfig, TenantId,
//!     TenantRejection, TenantResolver, WriteContext, financial_mutation,
//! };
//! use sqlx::Sqlite;
//!
//! #[derive(serde::Deserialize)]
//! struct NewPayment {
//!     amount_cents: i64,
//! }
//!
//! /// Records a payment.
//! #[financial_mutation("createPayment", post = "/payments")]
//! async fn create_payment(
//!     _key: IdempotencyKey,
//!     write: &mut WriteContext<'_, Sqlite>,
//!     payment: web::Json<NewPayment>,
//! ) -> Result<HttpResponse, actix_web::Error> {
//!     let id = write.entity_id();
//!     sqlx::query("INSERT INTO payments (id, amount_cents) VALUES ($1, $2)")
//!         .bind(id)
//!         .bind(payment.amount_cents)
//!         .execute(write.tx())
//!         .await
//!         .map_err(actix_web::error::ErrorInternalServerError)?;
//!     Ok(HttpResponse::Created().json(serde_json::json!({ "id": id })))
//! }
//!
//! /// The tenant comes from the application's authentication; here, one fixed company.
//! struct OneCompany;
//!
//! impl TenantResolver for OneCompany {
//!     async fn resolve(&self, _: &HttpRequest) -> Result<TenantId, TenantRejection> {
//!         Ok(TenantId::new("acme").expect("a valid tenant id"))
//!     }
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let store = IdempotencyStore::<Sqlite>::connect("sqlite://payments.db", StoreConfig::default()).await?;
//!     store.migrate().await?;
//!     let routes = ProtectedRoutes::new(Idempotency::new(store, OneCompany))
//!         .financial(create_payment)
//!         .verify()
//!         .await?;
//!     HttpServer::new(move || {
//!         let routes = routes.clone();
//!         App::new()
//!             .wrap(routes.mutation_gate())
//!             .configure(move |config| routes.configure(config))
//!     })
//!     .bind("127.0.0.1:8080")?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```
//!
//! # The attributes
//!
//! `#[financial_mutation("name", METHOD = "/path", ...)]` and `#[high_risk_mutation(...)]`
//! take:
//! - the operation's name, camelCase and unique across both registries (`"createPayment"`);
//! - its route: one of `post`, `put`, `patch`, `delete` with the path (`post = "/payments"`,
//!   `post = "/invoices/{id}/finalize"`);
//! - optionally `ignore_in_fingerprint = ["client_sent_at"]`: top-level JSON fields of the body
//!   that do not make a retry another request (a client's own timestamp or trace id). With it,
//!   the body is fingerprinted as a JSON object without those fields, with its keys sorted.
//! - optionally `created = false`: the operation creates nothing (a cancel, a refund of an
//!   existing charge), so its `200 OK` stays `200` where the server turns a `POST`'s `200` into
//!   `201 Created` ([`Idempotency::with_created_status`]); `created = true` asks for the `201`
//!   on another method (a `PUT` that creates);
//! - optionally `crate = my_platform::idem`: the path to this crate where a facade re-exports it
//!   (as `#[serde(crate = ...)]` and linkme's `#[linkme(crate = ...)]`); the expansion then names
//!   nothing else of idem's.
//!
//! The handler is an `async fn` that takes an [`IdempotencyKey`], a
//! `&mut WriteContext<'_, DB>` (its transaction and the write's entity id) and any other
//! actix-web extractors, in any order (at most twelve besides the write context), under any
//! name: the key and the write context are recognised by type, so renamed imports and aliases
//! compile, and a different type of the same name does not. It returns anything actix-web can answer with; an `Err`
//! of a `Result` refuses the write (it rolls back and the key stays free), while an answer, even
//! with an error status such as a declined card's `402`, is the write's result: it commits and
//! is replayed to every retry. The expansion of one
//! handler is checked in at `idem-macros/tests/snapshots/create_payment.expanded.rs`: a unit
//! type named after the handler, its registry entry, and the route that runs the handler inside
//! the write protocol. Mount it with [`ProtectedRoutes`].
//!
//! The attribute's errors say what to write instead; `ui-tests/` holds one compile-fail case per
//! breach of the contract, checked on the toolchain pinned in `rust-toolchain.toml`.
//!
//! # Handler errors
//!
//! Return an error type of your own that implements [`actix_web::ResponseError`] and
//! [`std::error::Error`], and keep database errors as its `source()` (`#[from] sqlx::Error` or
//! `#[error(transparent)]` with `thiserror`): idem retries the whole attempt when that chain
//! holds a serialization failure, a deadlock or a busy database, and answers your error's own
//! response otherwise. Give your refusals problem types of your own, so a client tells your
//! validation `422` from idem's [`#key-reused`](problem) `422`.
//!
//! # Background jobs
//!
//! A job writes exactly once through the same protocol, from this crate's root alone: an
//! [`operation!`], a key of its choosing, [`Fingerprint::of_job`] of its input, and
//! [`IdempotencyStore::execute`]. The body owns what it uses (it may run again on a retry),
//! and a rerun replays while its key lives (the store's retention, or the operation's own,
//! `operation! { … retention = … }`).
//!
//! ```
//! use idem_actix::{
//!     Fingerprint, IdempotencyKey, IdempotencyStore, Outcome, StoreConfig, StoredResponse,
//!     TenantId, WriteRequest, operation,
//! };
//!
//! operation! {
//!     /// Charges the late fees of a month, once per company.
//!     pub financial ChargeLateFees = "chargeLateFees";
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("idem-actix-job-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let url = format!("sqlite://{}", dir.join("jobs.db").display());
//! let store = IdempotencyStore::<sqlx::Sqlite>::connect(&url, StoreConfig::default()).await?;
//! store.migrate().await?;
//! let (company, month) = (TenantId::new("acme")?, "2026-11".to_owned());
//! let key = IdempotencyKey::parse(&format!("late-fees:{month}"))?;
//! for rerun in [false, true] {
//!     let request = WriteRequest::new(&company, &key, Fingerprint::of_job("chargeLateFees", month.as_bytes()));
//!     let outcome = store
//!         .execute(ChargeLateFees, request, |write| {
//!             let tenant = write.tenant().clone();
//!             Box::pin(async move {
//!                 let _charged_for: &TenantId = &tenant; // the fee's statements go on write.tx()
//!                 Ok::<_, sqlx::Error>(StoredResponse::new(200, "charged"))
//!             })
//!         })
//!         .await?;
//!     assert_eq!(matches!(outcome, Outcome::Replayed { .. }), rerun);
//! }
//! # Ok(()) }
//! ```
//!
//! # Your own tenant resolution
//!
//! Implement [`TenantResolver`] with an `async fn` over the application's own authentication;
//! [`TenantRejection::new`] answers `401` with a `WWW-Authenticate` challenge,
//! [`TenantRejection::unavailable`] answers `503` when the credentials could not be checked, and
//! [`TenantResolver::user`] names the caller in the audit log. The example at the top of this
//! page has the smallest resolver; docs/handlers.md has one over an API-key table.

mod answer;
mod config;
mod failure;
pub mod health;
mod key;
mod lifecycle;
mod mutation_gate;
mod param;
pub mod problem;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod protected_routes;
mod replay;
mod serve;
mod startup;
mod tenant;

pub use config::{Idempotency, ReplayStatus};
pub use failure::HandlerFailure;
pub use idem_macros::{financial_mutation, high_risk_mutation};
/// The engine's API, from this one root: the [`IdempotencyKey`] a protected handler takes and a
/// job chooses, jobs (`operation!`, [`WriteRequest`], [`verify_registry`]), the outbox,
/// maintenance, fingerprints, metrics.
pub use idem_runtime::{
    AUDIT_ROWS_LOST_TOTAL, AuditSeal, AuditVerification, Backend, BrokenSeal, DispatchReport,
    ENTITY_ID_NAMESPACE, ErrorChain, FINANCIAL_MUTATIONS, Fingerprint, HIGH_RISK_MUTATIONS,
    HandlerError, IdempotencyKey, IdempotencyStore, KeyError, MAINTENANCE_ERRORS_TOTAL,
    MAINTENANCE_PURGED_ROWS_TOTAL, MAX_KEY_LEN, MAX_TENANT_ID_LEN, METRIC_NAMES, MIGRATIONS_TABLE,
    Maintenance, MaintenanceReport, OUTBOX_DISPATCH_ERRORS_TOTAL, OUTBOX_EVENTS_PARKED,
    OUTBOX_EVENTS_PARKED_TOTAL, OUTBOX_EVENTS_PENDING, OUTBOX_OLDEST_PENDING_AGE_SECONDS,
    Operation, OperationClass, OutboxBacklog, OutboxDispatcher, OutboxEvent, Outcome, ParkedEvent,
    PurgePace, RegisteredOperation, RegistryError, RequestPart, RetryPolicy, Route, SEAL_ROWS,
    SealFinding, SqliteSynchronous, StoreConfig, StoreError, StoredResponse, TenantId,
    TenantIdError, WORKFLOWS_TRIGGERED_TOTAL, WRITE_DURATION_MS, WRITES_FAILED_TOTAL,
    WRITES_REPLAYED_TOTAL, WRITES_TOTAL, WriteContext, WriteError, WriteRequest, entity_id,
    operation, positional, register_metrics, registered_operations, sha256_hex, verify_registry,
};
pub use key::IDEMPOTENCY_KEY;
pub use lifecycle::{Lifecycle, LifecycleError, Stopped};
pub use mutation_gate::{Exemption, MutationGate, MutationGateService, exemptions};
pub use protected_routes::{FinancialMutation, HighRiskMutation, ProtectedRoutes, VerifiedRoutes};
pub use replay::{IDEMPOTENT_REPLAYED, REPLAYED_HEADERS};
pub use startup::{StartupError, StartupProblem};
pub use tenant::{Tenant, TenantRejection, TenantResolver};

/// sqlx, which the handlers use for their statements.
pub use sqlx;

/// Not public API: the paths that `#[financial_mutation]` and `#[high_risk_mutation]` expand to.
#[doc(hidden)]
pub mod __private {
    pub use actix_web;
    pub use idem_runtime::__private::Registered;
    pub use idem_runtime::{
        FINANCIAL_MUTATIONS, HIGH_RISK_MUTATIONS, Operation, OperationClass, RegisteredOperation,
        Route,
    };
    pub use linkme;

    pub use crate::answer::{
        AnswerKind, AnswerTag, AnsweredKind, AnsweredTag, CauseKind, CauseTag, NoRefusal,
        ResultKind, ResultTag, respond,
    };
    pub use crate::param::{
        ExtractorParamKind, KeyParamKind, ParamCheck, PoolParamKind, WriteTarget, takes_the_key,
    };
    pub use idem_runtime::{Backend, IdempotencyKey};

    pub use crate::protected_routes::MountedThroughTheGate;

    /// The database of a handler's write context, `&mut WriteContext<'_, DB>` under any name.
    pub type Database<W> = <W as WriteTarget>::Database;
    pub use crate::mutation_gate::UNPROTECTED_MUTATIONS;
    pub use crate::protected_routes::Mount;
    pub use crate::serve::serve;
}
