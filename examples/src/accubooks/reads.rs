//! The read endpoints: every kind of record, as a JSON array of the company's rows, so a client
//! can see that a retry did not write twice; the company's settings, a singleton, as an object.

use actix_web::web::{self, ServiceConfig};
use idem_actix::{IdempotencyStore, Tenant};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, FromRow};

use crate::accubooks::error::ApiError;
use crate::accubooks::sql::{Sql, sql};

/// A customer.
#[derive(Serialize, FromRow)]
pub struct Customer {
    id: String,
    name: String,
    email: Option<String>,
}

/// An invoice, without its lines.
#[derive(Serialize, FromRow)]
pub struct Invoice {
    id: String,
    customer_id: String,
    currency: String,
    status: String,
    total_cents: i64,
    paid_cents: i64,
}

/// One line of an invoice.
#[derive(Serialize, FromRow)]
pub struct InvoiceLine {
    id: String,
    invoice_id: String,
    position: i64,
    description: String,
    quantity: i64,
    unit_price_cents: i64,
    amount_cents: i64,
}

/// A payment.
#[derive(Serialize, FromRow)]
pub struct Payment {
    id: String,
    invoice_id: String,
    amount_cents: i64,
    currency: String,
}

/// An employee.
#[derive(Serialize, FromRow)]
pub struct Employee {
    id: String,
    name: String,
    monthly_salary_cents: i64,
    currency: String,
}

/// A payroll run.
#[derive(Serialize, FromRow)]
pub struct PayrollRun {
    id: String,
    period: String,
    currency: String,
    total_cents: i64,
}

/// A bank transaction.
#[derive(Serialize, FromRow)]
pub struct BankTransaction {
    id: String,
    amount_cents: i64,
    currency: String,
    description: String,
    status: String,
}

/// An inventory item.
#[derive(Serialize, FromRow)]
pub struct InventoryItem {
    id: String,
    sku: String,
    name: String,
    quantity: i64,
}

/// A stock adjustment.
#[derive(Serialize, FromRow)]
pub struct InventoryAdjustment {
    id: String,
    item_id: String,
    delta: i64,
    reason: String,
}

/// The company's settings.
#[derive(Serialize, FromRow)]
pub struct CompanySettings {
    currency: String,
    invoice_prefix: String,
    payment_terms_days: i64,
}

/// A user.
#[derive(Serialize, FromRow)]
pub struct User {
    id: String,
    email: String,
}

/// An access grant.
#[derive(Serialize, FromRow)]
pub struct AccessGrant {
    id: String,
    user_id: String,
    role: String,
}

/// A workflow that ran.
#[derive(Serialize, FromRow)]
pub struct WorkflowRun {
    event_id: String,
    workflow: String,
    subject_id: String,
}

/// The rows of `sql` for the tenant, read in a transaction of the tenant's (on PostgreSQL,
/// row-level security then shows it only its own rows, whatever `sql` says).
async fn list<T>(
    store: &IdempotencyStore<Any>,
    tenant: Tenant,
    sql: &'static Sql,
) -> Result<web::Json<Vec<T>>, ApiError>
where
    T: for<'r> FromRow<'r, AnyRow> + Send + Unpin,
{
    let mut tx = store.begin_for(&tenant.0).await?;
    let rows = sqlx::query_as::<_, T>(sql.on(&tx))
        .persistent(!store.config().transaction_pooling())
        .bind(tenant.0.as_str())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(web::Json(rows))
}

/// Defines [`configure`], which mounts `GET {path}` (the rows of `$sql`, whose `$1` is the
/// company id) for each line, and [`PATHS`], the paths it mounts.
macro_rules! reads {
    ($($path:literal => $record:ty, $sql:literal;)*) => {
        /// Mounts every read endpoint, and `GET /api/company/settings`.
        pub fn configure(config: &mut ServiceConfig) {
            $(
                config.route(
                    $path,
                    web::get().to(|store: web::Data<IdempotencyStore<Any>>, tenant: Tenant| async move {
                        list::<$record>(&store, tenant, sql!($sql)).await
                    }),
                );
            )*
            config.route(SETTINGS, web::get().to(settings));
        }

        /// The paths of the read endpoints.
        pub const PATHS: &[&str] = &[$($path,)* SETTINGS];
    };
}

/// The company's settings: a singleton, answered as one object.
const SETTINGS: &str = "/api/company/settings";

/// `GET /api/company/settings`: the settings object, or `404` before the first
/// `PUT /api/company/settings` (AccuBooks assumes no defaults for a company's currency).
async fn settings(
    store: web::Data<IdempotencyStore<Any>>,
    tenant: Tenant,
) -> Result<web::Json<CompanySettings>, ApiError> {
    let mut tx = store.begin_for(&tenant.0).await?;
    let settings = sqlx::query_as::<_, CompanySettings>(sql!("SELECT currency, invoice_prefix, payment_terms_days FROM company_settings WHERE company_id = $1").on(&tx))
    .persistent(!store.config().transaction_pooling())
    .bind(tenant.0.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    settings.map(web::Json).ok_or(ApiError::NotFound(
        "company settings (set them with PUT /api/company/settings)",
    ))
}

reads! {
    "/api/customers" => Customer,
        "SELECT id, name, email FROM customers WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/invoices" => Invoice,
        "SELECT id, customer_id, currency, status, total_cents, paid_cents FROM invoices WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/invoice-lines" => InvoiceLine,
        "SELECT l.id, l.invoice_id, l.position, l.description, l.quantity, l.unit_price_cents, l.amount_cents
         FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE i.company_id = $1 ORDER BY l.invoice_id, l.position";
    "/api/payments" => Payment,
        "SELECT id, invoice_id, amount_cents, currency FROM payments WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/employees" => Employee,
        "SELECT id, name, monthly_salary_cents, currency FROM employees WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/payroll-runs" => PayrollRun,
        "SELECT id, period, currency, total_cents FROM payroll_runs WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/bank-transactions" => BankTransaction,
        "SELECT id, amount_cents, currency, description, status FROM bank_transactions WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/inventory" => InventoryItem,
        "SELECT id, sku, name, quantity FROM inventory_items WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/inventory-adjustments" => InventoryAdjustment,
        "SELECT id, item_id, delta, reason FROM inventory_adjustments WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/users" => User,
        "SELECT id, email FROM users WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/access-grants" => AccessGrant,
        "SELECT id, user_id, role FROM access_grants WHERE company_id = $1 ORDER BY created_at_ms, id";
    "/api/workflow-runs" => WorkflowRun,
        "SELECT event_id, workflow, subject_id FROM workflow_runs WHERE company_id = $1 ORDER BY ran_at_ms, event_id";
}
