//! AccuBooks: a small multi-tenant bookkeeping API whose mutations are exactly-once.
//!
//! A company is created with `POST /api/companies`, which returns its API token; every other
//! call carries `Authorization: Bearer <token>`, and the company comes from the token. The
//! mutations are protected operations of idem (financial: `createPayment`, `createInvoice`,
//! `finalizeInvoice`, `executePayroll`, `reconcileLedger`, `importBankTransaction`; high-risk:
//! `adjustInventory`, `createCustomer`, `createEmployee`, `triggerWorkflow`,
//! `updateCompanySettings`, `grantUserAccess`, `createInventoryItem`, `createUser`); every kind
//! of record can be read back with a `GET`. Workflows (sending an invoice, a receipt, a payroll
//! report) run after the commit, only for new writes, through idem's outbox.
//!
//! It runs on a SQLite file, on PostgreSQL, or on MySQL or MariaDB, chosen by the database URL,
//! through sqlx's `Any` driver: one set of handlers serves the three ([`sql`] writes each
//! statement once), on one schema in two dialects (MySQL's own, for its keys and foreign keys).

mod admin;
mod auth;
mod banking;
pub mod error;
mod inventory;
mod money;
mod payroll;
mod reads;
mod routes;
mod sales;
pub mod sql;
mod workflows;
pub mod writes;

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::Method;
use actix_web::web::{self, ServiceConfig};
use idem_actix::health::Health;
use idem_actix::prometheus::{PrometheusHandle, metrics_service};
use idem_actix::{
    Idempotency, IdempotencyStore, MutationGate, Operation, ProtectedRoutes, StartupError,
    StoreConfig, StoreError, VerifiedRoutes,
};
use idem_actix::{Maintenance, OutboxDispatcher};
use sqlx::Any;
use sqlx::migrate::MigrateError;

use error::ApiError;
use routes::RouteTable;

pub use workflows::WORKFLOWS;

/// Why AccuBooks could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The database could not be opened, or idem's schema migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// AccuBooks' own schema could not be migrated.
    #[error("migrating the AccuBooks schema failed")]
    Migrate(#[from] MigrateError),
    /// The protected routes and the registry disagree.
    #[error(transparent)]
    Startup(#[from] StartupError),
}

/// Applies idem's migrations and AccuBooks' own through `store`, which reaches `database_url`.
async fn migrate(store: &IdempotencyStore<Any>, database_url: &str) -> Result<(), OpenError> {
    store.migrate().await?;
    let pool = store.pool();
    if database_url.starts_with("mysql:") || database_url.starts_with("mariadb:") {
        return Ok(sqlx::migrate!("./migrations/accubooks-mysql")
            .run(pool)
            .await?);
    }
    sqlx::migrate!("./migrations/accubooks").run(pool).await?;
    if !database_url.starts_with("sqlite:") {
        // Row-level security, PostgreSQL's own: tracked apart, since SQLite has none.
        let mut postgres_only = sqlx::migrate!("./migrations/accubooks-postgres");
        postgres_only.dangerous_set_table_name("_accubooks_postgres_migrations");
        postgres_only.run(pool).await?;
    }
    Ok(())
}

/// An AccuBooks service on one database, ready to mount into an actix-web `App`.
#[derive(Clone)]
pub struct AccuBooks {
    store: IdempotencyStore<Any>,
    routes: VerifiedRoutes<Any>,
    health: Health<Any>,
    metrics: Option<PrometheusHandle>,
}

/// The routes outside the protected operations and the reads.
const OTHER_ROUTES: [(&str, &str); 4] = [
    ("POST", "/api/companies"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
];

impl AccuBooks {
    /// Opens the database (`sqlite://accubooks.db`, `postgres://user@host/db`,
    /// `mysql://user@host/db`), applies idem's
    /// migrations and AccuBooks' own, and runs idem's startup check.
    pub async fn open(database_url: &str, config: StoreConfig) -> Result<Self, OpenError> {
        let store = IdempotencyStore::<Any>::connect(database_url, config).await?;
        migrate(&store, database_url).await?;
        Self::serve_from(store).await
    }

    /// AccuBooks on PostgreSQL behind a transaction pooler (PgBouncer's `pool_mode =
    /// transaction`): migrated on `database_url`, the database itself, and served through
    /// `pooler_url` with [`StoreConfig::with_transaction_pooling`].
    pub async fn open_through_pooler(
        database_url: &str,
        pooler_url: &str,
        config: StoreConfig,
    ) -> Result<Self, OpenError> {
        let direct = IdempotencyStore::<Any>::connect(database_url, config.clone()).await?;
        migrate(&direct, database_url).await?;
        direct.pool().close().await;
        let config = config.with_transaction_pooling(true);
        Self::serve_from(IdempotencyStore::<Any>::connect(pooler_url, config).await?).await
    }

    /// Mounts the operations on `store` (migrated) and runs idem's startup check.
    async fn serve_from(store: IdempotencyStore<Any>) -> Result<Self, OpenError> {
        let idem = Idempotency::new(store.clone(), auth::BearerTokens::new(&store))
            .with_body_limit(error::BODY_LIMIT);
        let routes = ProtectedRoutes::new(idem)
            .financial(sales::create_invoice)
            .financial(sales::finalize_invoice)
            .financial(sales::create_payment)
            .financial(payroll::execute_payroll)
            .financial(banking::import_bank_transaction)
            .financial(banking::reconcile_ledger)
            .high_risk(sales::create_customer)
            .high_risk(payroll::create_employee)
            .high_risk(inventory::create_inventory_item)
            .high_risk(inventory::adjust_inventory)
            .high_risk(workflows::trigger_workflow)
            .high_risk(admin::update_company_settings)
            .high_risk(admin::create_user)
            .high_risk(admin::grant_user_access)
            .verify()
            .await?;
        Ok(Self {
            store,
            health: Health::new(&routes),
            routes,
            metrics: None,
        })
    }

    /// Serves `GET /metrics` from this Prometheus recorder
    /// ([`install_recorder`](idem_actix::prometheus::install_recorder)).
    pub fn with_metrics(mut self, metrics: PrometheusHandle) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The default-deny gate of the API: wrap the `App` with it.
    pub fn mutation_gate(&self) -> MutationGate {
        self.routes.mutation_gate()
    }

    /// Mounts the whole API:
    /// `App::new().wrap(accubooks.mutation_gate()).configure(|config| accubooks.configure(config))`.
    pub fn configure(&self, config: &mut ServiceConfig) {
        config.app_data(web::Data::new(self.store.pool().clone()));
        config.app_data(web::Data::new(self.store.clone()));
        config.app_data(ApiError::json_config());
        config.route("/api/companies", web::post().to(auth::create_company));
        self.routes.configure(config);
        self.health.configure(config);
        reads::configure(config);
        if let Some(metrics) = &self.metrics {
            config.service(metrics_service(metrics.clone()));
        }
        self.route_table().configure(config);
    }

    /// Every route mounted by [`Self::configure`], for the answers to requests none takes.
    fn route_table(&self) -> RouteTable {
        let protected = self.operations().filter_map(|operation| {
            let route = operation.route()?;
            Some((
                Method::from_bytes(route.method.as_bytes()).ok()?,
                route.path,
            ))
        });
        let reads = reads::PATHS.iter().map(|path| (Method::GET, *path));
        let others = OTHER_ROUTES
            .iter()
            .filter(|(_, path)| *path != "/metrics" || self.metrics.is_some())
            .filter_map(|(method, path)| {
                Some((Method::from_bytes(method.as_bytes()).ok()?, *path))
            });
        RouteTable::new(protected.chain(reads).chain(others))
    }

    /// The dispatcher that runs the workflows the writes started; run it on a task of its own.
    pub fn workflows(&self) -> OutboxDispatcher<Any> {
        workflows::dispatcher(self.store.clone())
    }

    /// The retention task: expired keys, delivered workflow events and audit rows past their
    /// retention, on idem's defaults (hourly; 24 h, 7 days and 90 days).
    pub fn maintenance(&self) -> Maintenance<Any> {
        Maintenance::new(self.store.clone())
    }

    /// The probes `GET /healthz` and `GET /readyz`; tell it when shutdown starts.
    pub fn health(&self) -> &Health<Any> {
        &self.health
    }

    /// The protected operations, in mounting order.
    pub fn operations(&self) -> impl Iterator<Item = &'static Operation> + '_ {
        self.routes.operations()
    }

    /// The idempotency store (its pool reaches AccuBooks' tables too).
    pub fn store(&self) -> &IdempotencyStore<Any> {
        &self.store
    }
}

/// The longest SKU or email: an indexed text column's length on MySQL, said the same way on
/// every database.
pub(crate) const MAX_INDEXED_CHARS: usize = 255;

/// `Err` (a `422` naming `what`) when `text` is longer than [`MAX_INDEXED_CHARS`].
pub(crate) fn indexable<'a>(what: &str, text: &'a str) -> Result<&'a str, ApiError> {
    if text.chars().count() > MAX_INDEXED_CHARS {
        return Err(ApiError::invalid(format!(
            "{what} is at most {MAX_INDEXED_CHARS} characters"
        )));
    }
    Ok(text)
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}
