//! Inventory items and stock adjustments.

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, high_risk_mutation};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{Any, AnyConnection};
use uuid::Uuid;

use crate::accubooks::error::ApiError;
use crate::accubooks::money;
use crate::accubooks::sql::sql;
use crate::accubooks::writes::{Write, created};
use crate::accubooks::{indexable, now_ms};

/// What `POST /api/inventory` takes.
#[derive(Deserialize)]
pub struct NewItem {
    sku: String,
    name: String,
}

/// Adds an item with no stock; stock arrives through adjustments.
#[high_risk_mutation("createInventoryItem", post = "/api/inventory")]
pub async fn create_inventory_item(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    item: web::Json<NewItem>,
) -> Result<HttpResponse, ApiError> {
    let (sku, name) = (item.sku.trim(), item.name.trim());
    if sku.is_empty() || name.is_empty() {
        return Err(ApiError::invalid("an item needs a sku and a name"));
    }
    let sku = indexable("sku", sku)?;
    let (id, company) = (write.entity_id().to_string(), write.tenant().to_string());
    let taken: Option<String> = sqlx::query_scalar(
        sql!("SELECT id FROM inventory_items WHERE company_id = $1 AND sku = $2").on(write.tx()),
    )
    .bind(&company)
    .bind(sku)
    .fetch_optional(write.tx())
    .await?;
    if let Some(taken) = taken {
        return Err(ApiError::conflict(format!(
            "sku {sku} is already item {taken}"
        )));
    }
    sqlx::query(
        sql!(
            "INSERT INTO inventory_items (id, company_id, sku, name, quantity, created_at_ms)
         VALUES ($1, $2, $3, $4, 0, $5)"
        )
        .on(write.tx()),
    )
    .bind(&id)
    .bind(&company)
    .bind(sku)
    .bind(name)
    .bind(now_ms())
    .execute(write.tx())
    .await?;
    Ok(HttpResponse::Created().json(json!({ "id": id, "sku": sku, "name": name, "quantity": 0 })))
}

/// What `POST /api/inventory/{item_id}/adjustments` takes.
#[derive(Deserialize)]
pub struct NewAdjustment {
    delta: i64,
    reason: String,
}

/// Adds or removes stock; stock never goes below zero.
#[high_risk_mutation("adjustInventory", post = "/api/inventory/{item_id}/adjustments")]
pub async fn adjust_inventory(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    item_id: web::Path<String>,
    adjustment: web::Json<NewAdjustment>,
) -> Result<HttpResponse, ApiError> {
    let adjustment = InventoryAdjustment {
        item_id: &item_id,
        adjustment: &adjustment,
    };
    created(write, &adjustment).await
}

/// An adjustment of one inventory item's stock: the item from the path, the change from the body.
pub struct InventoryAdjustment<'a> {
    /// The item whose stock changes.
    pub item_id: &'a str,
    /// The change.
    pub adjustment: &'a NewAdjustment,
}

impl Write for InventoryAdjustment<'_> {
    async fn write(
        &self,
        tx: &mut AnyConnection,
        company: &str,
        id: Uuid,
    ) -> Result<Value, ApiError> {
        let Self {
            item_id,
            adjustment,
        } = *self;
        if adjustment.delta == 0
            || !(-money::MAX_QUANTITY..=money::MAX_QUANTITY).contains(&adjustment.delta)
            || adjustment.reason.trim().is_empty()
        {
            return Err(ApiError::invalid(format!(
                "an adjustment has a reason and a non-zero delta between -{0} and {0}",
                money::MAX_QUANTITY
            )));
        }
        let id = id.to_string();
        // One conditional statement: concurrent withdrawals cannot take stock below zero together.
        let applied = sqlx::query(
            sql!(
                "UPDATE inventory_items SET quantity = quantity + $1
             WHERE id = $2 AND company_id = $3 AND quantity + $4 BETWEEN 0 AND $5"
            )
            .on(tx),
        )
        .bind(adjustment.delta)
        .bind(item_id)
        .bind(company)
        .bind(adjustment.delta)
        .bind(money::MAX_STOCK)
        .execute(&mut *tx)
        .await?;
        let quantity: Option<i64> = sqlx::query_scalar(
            sql!("SELECT quantity FROM inventory_items WHERE id = $1 AND company_id = $2").on(tx),
        )
        .bind(item_id)
        .bind(company)
        .fetch_optional(&mut *tx)
        .await?;
        let quantity = quantity.ok_or(ApiError::NotFound("inventory item"))?;
        if applied.rows_affected() == 0 {
            return Err(ApiError::invalid(if adjustment.delta < 0 {
                format!(
                    "delta: removing {} would take the stock of {quantity} below zero",
                    adjustment.delta.unsigned_abs()
                )
            } else {
                format!(
                    "delta: adding {} would take the stock of {quantity} above {}",
                    adjustment.delta,
                    money::MAX_STOCK
                )
            }));
        }
        sqlx::query(sql!("INSERT INTO inventory_adjustments (id, company_id, item_id, delta, reason, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)").on(tx))
        .bind(&id)
        .bind(company)
        .bind(item_id)
        .bind(adjustment.delta)
        .bind(adjustment.reason.trim())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        Ok(json!({
            "id": id, "item_id": item_id, "delta": adjustment.delta, "quantity": quantity,
        }))
    }
}
