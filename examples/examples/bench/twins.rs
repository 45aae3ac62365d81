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

/// A bare twin: `write` in one transaction of its own, without a key, answered `201`. On
/// SQLite the transaction takes the write lock up front (`BEGIN IMMEDIATE`), as idem's writes
/// do: a deferred transaction that reads before it writes fails with `SQLITE_BUSY` when another
/// writer committed first.
pub(crate) async fn bare(
    pool: &Pool<Any>,
    write: impl AsyncFnOnce(&mut AnyConnection) -> Result<Value, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let mut tx = if pool.connect_options().database_url.scheme() == "sqlite" {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    };
    let written = write(&mut tx).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(written))
}

/// The bare twins: each runs the protected operation's own statements
/// (`idem_examples::accubooks::writes`) through [`bare`].
pub(crate) async fn create_customer_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    customer: web::Json<NewCustomer>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_customer(tx, tenant.0.as_str(), Uuid::new_v4(), &customer).await
    })
    .await
}

pub(crate) async fn create_invoice_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    invoice: web::Json<NewInvoice>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_invoice(tx, tenant.0.as_str(), Uuid::new_v4(), &invoice).await
    })
    .await
}

pub(crate) async fn create_payment_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    payment: web::Json<NewPayment>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_payment(tx, tenant.0.as_str(), Uuid::new_v4(), &payment).await
    })
    .await
}

pub(crate) async fn adjust_inventory_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    item_id: web::Path<String>,
    adjustment: web::Json<NewAdjustment>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_adjustment(tx, tenant.0.as_str(), Uuid::new_v4(), &item_id, &adjustment).await
    })
    .await
}
