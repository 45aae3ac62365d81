//! The bare twins: each operation's write without idem, in a transaction of its own, and
//! the routes that serve them (declared exempt from the mutation gate).

use super::*;

idem_actix::unprotected_mutation!(
    POST "/bare/customers",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/bare/invoices",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/bare/payments",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/bare/inventory/{item_id}/adjustments",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/middleware/customers",
    reason = "the benchmark's rival: the same write behind another crate's idempotency middleware"
);

/// A bare twin: `request`'s statements in one transaction of its own, without a key, under a
/// fresh entity id, answered `201`. On SQLite the transaction takes the write lock up front
/// (`BEGIN IMMEDIATE`), as idem's writes do: a deferred transaction that reads before it writes
/// fails with `SQLITE_BUSY` when another writer committed first.
async fn bare(
    pool: &Pool<Any>,
    tenant: &Tenant,
    request: &impl Write,
) -> Result<HttpResponse, ApiError> {
    let mut tx = if pool.connect_options().database_url.scheme() == "sqlite" {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    };
    let written = request
        .write(&mut tx, tenant.0.as_str(), Uuid::new_v4())
        .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(written))
}

/// The bare twin of an operation whose request is its JSON body (`createCustomer`,
/// `createInvoice`, `createPayment`).
pub(crate) async fn create_bare<Request: Write + DeserializeOwned>(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    request: web::Json<Request>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, &tenant, &*request).await
}

/// The bare twin of `adjustInventory`, whose item comes from the path.
pub(crate) async fn adjust_inventory_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    item_id: web::Path<String>,
    adjustment: web::Json<NewAdjustment>,
) -> Result<HttpResponse, ApiError> {
    let adjustment = InventoryAdjustment {
        item_id: &item_id,
        adjustment: &adjustment,
    };
    bare(&pool, &tenant, &adjustment).await
}
