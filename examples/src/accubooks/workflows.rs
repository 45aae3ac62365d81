//! Workflows: started by writes through idem's outbox, run after the commit by a dispatcher.

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, IdempotencyStore, WriteContext, high_risk_mutation};
use idem_actix::{OutboxDispatcher, OutboxEvent};
use serde_json::json;
use sqlx::Any;

use crate::accubooks::error::ApiError;
use crate::accubooks::now_ms;
use crate::accubooks::sql::sql;

/// Sends a finalized invoice to its customer.
pub const SEND_INVOICE: &str = "send_invoice";
/// Sends a receipt for a settled invoice.
pub const RECEIPT: &str = "receipt";
/// Reports a payroll run to the accountant.
pub const PAYROLL_REPORT: &str = "payroll_report";
/// Closes the books of a month.
pub const MONTH_END_CLOSE: &str = "month_end_close";

/// Every workflow AccuBooks knows.
pub const WORKFLOWS: [&str; 4] = [SEND_INVOICE, RECEIPT, PAYROLL_REPORT, MONTH_END_CLOSE];

/// Records that `workflow` should run for `subject` once this write commits.
pub async fn start(
    write: &mut WriteContext<'_, Any>,
    workflow: &str,
    subject: &str,
) -> Result<(), ApiError> {
    write.record_event(workflow, subject).await?;
    Ok(())
}

/// Starts a workflow by hand: `POST /api/workflows/{name}/trigger`.
#[high_risk_mutation("triggerWorkflow", post = "/api/workflows/{name}/trigger")]
pub async fn trigger_workflow(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let Some(workflow) = WORKFLOWS.iter().find(|known| **known == name.as_str()) else {
        return Err(ApiError::invalid(format!(
            "unknown workflow {name:?}: one of {}",
            WORKFLOWS.join(", ")
        )));
    };
    let (id, company) = (write.entity_id().to_string(), write.tenant().to_string());
    sqlx::query(sql!("INSERT INTO workflow_requests (id, company_id, workflow, created_at_ms) VALUES ($1, $2, $3, $4)").on(write.tx()))
        .bind(&id)
        .bind(&company)
        .bind(*workflow)
        .bind(now_ms())
        .execute(write.tx())
        .await?;
    start(write, workflow, &id).await?;
    Ok(HttpResponse::Accepted().json(json!({ "id": id, "workflow": workflow })))
}

/// The dispatcher that runs the workflows: each run is recorded under its event id, so a
/// redelivered event never runs twice.
pub fn dispatcher(store: IdempotencyStore<Any>) -> OutboxDispatcher<Any> {
    WORKFLOWS.iter().fold(
        OutboxDispatcher::new(store.clone()),
        |dispatcher, workflow| {
            let store = store.clone();
            dispatcher.on(workflow, move |event| run(store.clone(), event))
        },
    )
}

/// Runs one workflow, recorded in the event's company's own transaction.
async fn run(
    store: IdempotencyStore<Any>,
    event: OutboxEvent,
) -> Result<(), idem_actix::HandlerError> {
    let mut tx = store.begin_for(&event.tenant).await?;
    let subject = String::from_utf8(event.payload)?;
    tracing::info!(workflow = %event.topic, %subject, event = %event.event_id, "running workflow");
    sqlx::query(
        sql!("INSERT INTO workflow_runs (event_id, company_id, workflow, subject_id, ran_at_ms)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (event_id) DO NOTHING",
        mysql: "INSERT INTO workflow_runs (event_id, company_id, workflow, subject_id, ran_at_ms)
         VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE event_id = event_id")
        .on(&tx),
    )
    .persistent(!store.config().transaction_pooling())
    .bind(event.event_id.to_string())
    .bind(event.tenant.as_str())
    .bind(&event.topic)
    .bind(subject)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
