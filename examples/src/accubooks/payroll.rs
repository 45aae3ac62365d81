//! Employees and payroll runs.

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation, high_risk_mutation};
use serde::Deserialize;
use serde_json::json;
use sqlx::Any;
use uuid::Uuid;

use crate::accubooks::error::ApiError;
use crate::accubooks::sql::sql;
use crate::accubooks::{money, now_ms, workflows};

/// What `POST /api/employees` takes.
#[derive(Deserialize)]
pub struct NewEmployee {
    name: String,
    monthly_salary_cents: i64,
    currency: String,
}

/// Hires an employee.
#[high_risk_mutation("createEmployee", post = "/api/employees")]
pub async fn create_employee(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    employee: web::Json<NewEmployee>,
) -> Result<HttpResponse, ApiError> {
    let name = employee.name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("an employee needs a name"));
    }
    let salary = money::positive("monthly_salary_cents", employee.monthly_salary_cents)?;
    let currency = money::currency(&employee.currency)?;
    let (id, company) = (write.entity_id().to_string(), write.tenant().to_string());
    sqlx::query(sql!("INSERT INTO employees (id, company_id, name, monthly_salary_cents, currency, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)").on(write.tx()))
    .bind(&id)
    .bind(&company)
    .bind(name)
    .bind(salary)
    .bind(currency)
    .bind(now_ms())
    .execute(write.tx())
    .await?;
    Ok(HttpResponse::Created().json(json!({
        "id": id, "name": name, "monthly_salary_cents": salary, "currency": currency,
    })))
}

/// What `POST /api/payroll-runs` takes.
#[derive(Deserialize)]
pub struct NewPayrollRun {
    /// The month paid, `YYYY-MM`.
    period: String,
    currency: String,
}

/// Pays every employee of one currency their monthly salary for a period, once per period.
#[financial_mutation("executePayroll", post = "/api/payroll-runs")]
pub async fn execute_payroll(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    run: web::Json<NewPayrollRun>,
) -> Result<HttpResponse, ApiError> {
    let currency = money::currency(&run.currency)?;
    if !is_period(&run.period) {
        return Err(ApiError::invalid(format!(
            "period {:?} is not a month such as \"2026-11\"",
            run.period
        )));
    }
    let (id, company) = (write.entity_id(), write.tenant().to_string());
    let already: Option<String> = sqlx::query_scalar(
        sql!("SELECT id FROM payroll_runs WHERE company_id = $1 AND period = $2 AND currency = $3")
            .on(write.tx()),
    )
    .bind(&company)
    .bind(&run.period)
    .bind(currency)
    .fetch_optional(write.tx())
    .await?;
    if let Some(already) = already {
        return Err(ApiError::conflict(format!(
            "{} was already paid by payroll run {already}",
            run.period
        )));
    }
    let employees: Vec<(String, i64)> = sqlx::query_as(sql!("SELECT id, monthly_salary_cents FROM employees WHERE company_id = $1 AND currency = $2 ORDER BY id").on(write.tx()))
    .bind(&company)
    .bind(currency)
    .fetch_all(write.tx())
    .await?;
    if employees.is_empty() {
        return Err(ApiError::invalid(format!(
            "no employee is paid in {currency}"
        )));
    }
    let total = employees.iter().try_fold(0, |total, (_, salary)| {
        money::add("total_cents", total, *salary)
    })?;
    sqlx::query(sql!("INSERT INTO payroll_runs (id, company_id, period, currency, total_cents, created_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)").on(write.tx()))
    .bind(id.to_string())
    .bind(&company)
    .bind(&run.period)
    .bind(currency)
    .bind(total)
    .bind(now_ms())
    .execute(write.tx())
    .await?;
    for (employee, salary) in &employees {
        let line = Uuid::new_v5(&id, employee.as_bytes());
        sqlx::query(sql!("INSERT INTO payroll_lines (id, run_id, employee_id, amount_cents) VALUES ($1, $2, $3, $4)").on(write.tx()))
            .bind(line.to_string())
            .bind(id.to_string())
            .bind(employee)
            .bind(*salary)
            .execute(write.tx())
            .await?;
    }
    workflows::start(write, workflows::PAYROLL_REPORT, &id.to_string()).await?;
    Ok(HttpResponse::Created().json(json!({
        "id": id, "period": run.period, "currency": currency,
        "employees": employees.len(), "total_cents": total,
    })))
}

fn is_period(period: &str) -> bool {
    let bytes = period.as_bytes();
    bytes.len() == 7
        && bytes[4] == b'-'
        && bytes[..4].iter().chain(&bytes[5..]).all(u8::is_ascii_digit)
        && matches!(
            &period[5..],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        )
}
