//! Bank transactions and their reconciliation.

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use serde::Deserialize;
use serde_json::json;
use sqlx::Any;

use crate::accubooks::error::ApiError;
use crate::accubooks::sql::sql;
use crate::accubooks::{money, now_ms};

/// What `POST /api/bank-transactions` takes: a line of a bank statement.
#[derive(Deserialize)]
pub struct NewBankTransaction {
    /// Positive for money in, negative for money out.
    amount_cents: i64,
    currency: String,
    description: String,
}

/// Imports one bank statement line, unreconciled.
#[financial_mutation("importBankTransaction", post = "/api/bank-transactions")]
pub async fn import_bank_transaction(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    transaction: web::Json<NewBankTransaction>,
) -> Result<HttpResponse, ApiError> {
    let currency = money::currency(&transaction.currency)?;
    money::non_zero("amount_cents", transaction.amount_cents)?;
    let (id, company) = (write.entity_id().to_string(), write.tenant().to_string());
    sqlx::query(sql!("INSERT INTO bank_transactions (id, company_id, amount_cents, currency, description, status, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, 'unreconciled', $6)").on(write.tx()))
    .bind(&id)
    .bind(&company)
    .bind(transaction.amount_cents)
    .bind(currency)
    .bind(transaction.description.trim())
    .bind(now_ms())
    .execute(write.tx())
    .await?;
    Ok(HttpResponse::Created().json(json!({
        "id": id, "amount_cents": transaction.amount_cents, "currency": currency, "status": "unreconciled",
    })))
}

/// Marks a bank transaction reconciled with the ledger; a reconciled one cannot be again.
#[financial_mutation("reconcileLedger", post = "/api/bank-transactions/{id}/reconcile")]
pub async fn reconcile_ledger(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    transaction_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let company = write.tenant().to_string();
    let reconciled = sqlx::query(
        sql!(
            "UPDATE bank_transactions SET status = 'reconciled', reconciled_at_ms = $1
         WHERE id = $2 AND company_id = $3 AND status = 'unreconciled'"
        )
        .on(write.tx()),
    )
    .bind(now_ms())
    .bind(transaction_id.as_str())
    .bind(&company)
    .execute(write.tx())
    .await?;
    if reconciled.rows_affected() == 0 {
        let exists: Option<String> = sqlx::query_scalar(
            sql!("SELECT id FROM bank_transactions WHERE id = $1 AND company_id = $2")
                .on(write.tx()),
        )
        .bind(transaction_id.as_str())
        .bind(&company)
        .fetch_optional(write.tx())
        .await?;
        exists.ok_or(ApiError::NotFound("bank transaction"))?;
        return Err(ApiError::conflict(format!(
            "bank transaction {transaction_id} is already reconciled"
        )));
    }
    Ok(HttpResponse::Ok().json(json!({ "id": transaction_id.as_str(), "status": "reconciled" })))
}
