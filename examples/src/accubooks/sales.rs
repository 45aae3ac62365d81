//! Customers, invoices and payments.

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation, high_risk_mutation};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::{Any, AnyConnection};
use uuid::Uuid;

use crate::accubooks::error::ApiError;
use crate::accubooks::sql::sql;
use crate::accubooks::writes::{Write, created, written};
use crate::accubooks::{money, now_ms, workflows};

/// What `POST /api/customers` takes.
#[derive(Deserialize)]
pub struct NewCustomer {
    name: String,
    email: Option<String>,
}

/// Adds a customer.
#[high_risk_mutation("createCustomer", post = "/api/customers")]
pub async fn create_customer(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    customer: web::Json<NewCustomer>,
) -> Result<HttpResponse, ApiError> {
    created(write, &*customer).await
}

impl Write for NewCustomer {
    async fn write(
        &self,
        tx: &mut AnyConnection,
        company: &str,
        id: Uuid,
    ) -> Result<Value, ApiError> {
        let name = self.name.trim();
        if name.is_empty() {
            return Err(ApiError::invalid("a customer needs a name"));
        }
        let id = id.to_string();
        sqlx::query(sql!("INSERT INTO customers (id, company_id, name, email, created_at_ms) VALUES ($1, $2, $3, $4, $5)").on(tx))
        .bind(&id)
        .bind(company)
        .bind(name)
        .bind(self.email.as_deref())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        Ok(json!({ "id": id, "name": name, "email": self.email }))
    }
}

#[derive(Deserialize)]
pub struct NewLine {
    description: String,
    quantity: i64,
    unit_price_cents: i64,
}

/// What `POST /api/invoices` takes.
#[derive(Deserialize)]
pub struct NewInvoice {
    customer_id: String,
    currency: String,
    lines: Vec<NewLine>,
}

/// Drafts an invoice with its lines; its total is the sum of the lines.
#[financial_mutation("createInvoice", post = "/api/invoices")]
pub async fn create_invoice(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    invoice: web::Json<NewInvoice>,
) -> Result<HttpResponse, ApiError> {
    created(write, &*invoice).await
}

impl Write for NewInvoice {
    async fn write(
        &self,
        tx: &mut AnyConnection,
        company: &str,
        id: Uuid,
    ) -> Result<Value, ApiError> {
        let currency = money::currency(&self.currency)?;
        if self.lines.is_empty() {
            return Err(ApiError::invalid("an invoice needs at least one line"));
        }
        let customer: Option<String> = sqlx::query_scalar(
            sql!("SELECT id FROM customers WHERE id = $1 AND company_id = $2").on(tx),
        )
        .bind(&self.customer_id)
        .bind(company)
        .fetch_optional(&mut *tx)
        .await?;
        customer.ok_or(ApiError::NotFound("customer"))?;

        let mut total: i64 = 0;
        let mut lines = Vec::with_capacity(self.lines.len());
        for (position, line) in self.lines.iter().enumerate() {
            if !(1..=money::MAX_QUANTITY).contains(&line.quantity)
                || !(0..=money::MAX_CENTS).contains(&line.unit_price_cents)
                || line.description.trim().is_empty()
            {
                return Err(ApiError::invalid(format!(
                    "line {position} needs a description, a quantity of 1 to {} and a unit price of 0 to {} cents",
                    money::MAX_QUANTITY,
                    money::MAX_CENTS
                )));
            }
            let amount = money::multiply(
                &format!("lines[{position}].amount_cents"),
                line.quantity,
                line.unit_price_cents,
            )?;
            total = money::add("total_cents", total, amount)?;
            lines.push((position, line, amount));
        }
        sqlx::query(sql!("INSERT INTO invoices (id, company_id, customer_id, currency, status, total_cents, paid_cents, created_at_ms)
             VALUES ($1, $2, $3, $4, 'draft', $5, 0, $6)").on(tx))
        .bind(id.to_string())
        .bind(company)
        .bind(&self.customer_id)
        .bind(currency)
        .bind(total)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for (position, line, amount) in &lines {
            // Line ids derive from the invoice's deterministic id, so they are deterministic too.
            let line_id = Uuid::new_v5(&id, format!("line:{position}").as_bytes());
            sqlx::query(sql!("INSERT INTO invoice_lines (id, invoice_id, position, description, quantity, unit_price_cents, amount_cents)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)").on(tx))
            .bind(line_id.to_string())
            .bind(id.to_string())
            .bind(i64::try_from(*position).unwrap_or(i64::MAX))
            .bind(line.description.trim())
            .bind(line.quantity)
            .bind(line.unit_price_cents)
            .bind(*amount)
            .execute(&mut *tx)
            .await?;
        }
        Ok(json!({
            "id": id, "customer_id": self.customer_id, "currency": currency,
            "status": "draft", "total_cents": total, "paid_cents": 0, "lines": lines.len(),
        }))
    }
}

/// Turns a draft invoice final, so it takes payments, and starts the `send_invoice` workflow.
#[financial_mutation("finalizeInvoice", post = "/api/invoices/{id}/finalize")]
pub async fn finalize_invoice(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    invoice_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let company = write.tenant().to_string();
    let finalized = sqlx::query(sql!("UPDATE invoices SET status = 'final' WHERE id = $1 AND company_id = $2 AND status = 'draft'").on(write.tx()))
    .bind(invoice_id.as_str())
    .bind(&company)
    .execute(write.tx())
    .await?;
    if finalized.rows_affected() == 0 {
        let status = invoice_status(write, &invoice_id, &company).await?;
        return Err(ApiError::conflict(format!(
            "invoice {invoice_id} is {status}: only a draft invoice can be finalized"
        )));
    }
    workflows::start(write, workflows::SEND_INVOICE, &invoice_id).await?;
    Ok(HttpResponse::Ok().json(json!({ "id": invoice_id.as_str(), "status": "final" })))
}

async fn invoice_status(
    write: &mut WriteContext<'_, Any>,
    invoice_id: &str,
    company: &str,
) -> Result<String, ApiError> {
    let status: Option<String> = sqlx::query_scalar(
        sql!("SELECT status FROM invoices WHERE id = $1 AND company_id = $2").on(write.tx()),
    )
    .bind(invoice_id)
    .bind(company)
    .fetch_optional(write.tx())
    .await?;
    status.ok_or(ApiError::NotFound("invoice"))
}

/// What `POST /api/payments` takes.
#[derive(Deserialize)]
pub struct NewPayment {
    invoice_id: String,
    amount_cents: i64,
}

/// Records a payment against a final invoice, never above its open balance. The payment that
/// settles the invoice marks it paid and starts the `receipt` workflow.
#[financial_mutation("createPayment", post = "/api/payments")]
pub async fn create_payment(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    payment: web::Json<NewPayment>,
) -> Result<HttpResponse, ApiError> {
    let created = written(write, &*payment).await?;
    if created["invoice_status"] == "paid" {
        workflows::start(write, workflows::RECEIPT, &payment.invoice_id).await?;
    }
    Ok(HttpResponse::Created().json(created))
}

impl Write for NewPayment {
    async fn write(
        &self,
        tx: &mut AnyConnection,
        company: &str,
        id: Uuid,
    ) -> Result<Value, ApiError> {
        let amount = money::positive("amount_cents", self.amount_cents)?;
        let id = id.to_string();
        // One conditional statement: two payments racing for the last open cents cannot both pass.
        // `status` is assigned first: MySQL's later assignments read the new `paid_cents`.
        let applied = sqlx::query(
            sql!(
                "UPDATE invoices
             SET status = CASE WHEN paid_cents + $1 = total_cents THEN 'paid' ELSE status END,
                 paid_cents = paid_cents + $2
             WHERE id = $3 AND company_id = $4 AND status = 'final' AND paid_cents + $5 <= total_cents"
            )
            .on(tx),
        )
        .bind(amount)
        .bind(amount)
        .bind(&self.invoice_id)
        .bind(company)
        .bind(amount)
        .execute(&mut *tx)
        .await?;
        let (status, currency, total, paid): (String, String, i64, i64) = sqlx::query_as(sql!("SELECT status, currency, total_cents, paid_cents FROM invoices WHERE id = $1 AND company_id = $2").on(tx))
        .bind(&self.invoice_id)
        .bind(company)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(ApiError::NotFound("invoice"))?;
        if applied.rows_affected() == 0 {
            return Err(match status.as_str() {
                "draft" => ApiError::conflict(
                    "the invoice is a draft: finalize it before it takes payments",
                ),
                "paid" => ApiError::conflict("the invoice is already paid"),
                _ => ApiError::invalid(format!(
                    "the payment of {amount} cents exceeds the open balance of {} cents",
                    total - paid
                )),
            });
        }
        sqlx::query(sql!("INSERT INTO payments (id, company_id, invoice_id, amount_cents, currency, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)").on(tx))
        .bind(&id)
        .bind(company)
        .bind(&self.invoice_id)
        .bind(amount)
        .bind(&currency)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        Ok(json!({
            "id": id, "invoice_id": self.invoice_id, "amount_cents": amount, "currency": currency,
            "invoice_status": status, "open_balance_cents": total - paid,
        }))
    }
}
