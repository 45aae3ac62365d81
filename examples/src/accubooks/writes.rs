//! The statements of the operations that create an entity, apart from the handler that runs
//! them: the protected handler runs them on its write context's transaction, the benchmark's
//! bare twin on one of its own, so the two compare the very same writes.

use std::future::Future;

use actix_web::HttpResponse;
use idem_actix::WriteContext;
use serde_json::Value;
use sqlx::{Any, AnyConnection};
use uuid::Uuid;

use crate::accubooks::error::ApiError;

pub use super::inventory::{InventoryAdjustment, NewAdjustment};
pub use super::sales::{NewCustomer, NewInvoice, NewPayment};

/// A request whose statements create one entity, written on any transaction.
pub trait Write {
    /// Runs the statements for `company`, creating the entity `id`, and returns the answer's
    /// body. An invalid request is an [`ApiError`] before any statement runs.
    fn write(
        &self,
        tx: &mut AnyConnection,
        company: &str,
        id: Uuid,
    ) -> impl Future<Output = Result<Value, ApiError>>;
}

/// Writes `request` in a protected handler's transaction, under the write's tenant and
/// deterministic entity id, and returns the answer's body.
pub(crate) async fn written(
    write: &mut WriteContext<'_, Any>,
    request: &impl Write,
) -> Result<Value, ApiError> {
    let (id, company) = (write.entity_id(), write.tenant().to_string());
    request.write(write.tx(), &company, id).await
}

/// [`written`], answered `201 Created`: the whole body of a handler that only creates.
pub(crate) async fn created(
    write: &mut WriteContext<'_, Any>,
    request: &impl Write,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Created().json(written(write, request).await?))
}
