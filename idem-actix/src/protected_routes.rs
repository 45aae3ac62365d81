//! The protected routes (the route gate): protected handlers are mounted only through them,
//! only in their own class, and the application refuses to start when the registry and the
//! mounts disagree.

use std::sync::Arc;

use actix_web::web::ServiceConfig;
use idem_runtime::{
    Backend, ErrorChain, IdempotencyStore, Operation, RegisteredOperation, registered_operations,
};

use crate::config::Idempotency;
use crate::mutation_gate::{AllowedMutations, Exemption, MutationGate, exemptions};
use crate::startup::{StartupError, StartupProblem, startup_problems};

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
        let mounted: Vec<&'static Operation> = self
            .mounts
            .iter()
            .map(|mounted| mounted.operation)
            .collect();
        let mut problems = startup_problems(registered_operations(), exemptions(), &mounted);
        match self.idem.store.pending_migrations().await {
            Ok(pending) if pending.is_empty() => {}
            Ok(pending) => problems.push(StartupProblem::NotMigrated { pending }),
            Err(error) => problems.push(StartupProblem::Store(error)),
        }
        if !problems.is_empty() {
            return Err(StartupError::new(problems));
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
