//! The case of each operation: its path, a valid body, a body with another request, a
//! business-rule refusal and its corrected request, and what a write leaves in the database.

use super::*;

/// One operation's scenario: the refused request, the corrected one (a new write), another
/// request for the 422, the rows it writes and the workflows it starts.
pub(crate) struct Case {
    pub(crate) refused: Call,
    pub(crate) refused_status: StatusCode,
    pub(crate) ok: Call,
    pub(crate) other: Call,
    pub(crate) rows: &'static str,
    pub(crate) workflows: i64,
    /// What company B gets for the `ok` request with A's key: its own write, or a refusal
    /// because the records the request names are A's (404) or B lacks what it needs (422).
    pub(crate) cross_tenant: StatusCode,
}

pub(crate) async fn customer(app: &TestApp) -> String {
    app.create(&app.a, post("/api/customers", json!({ "name": "Globex" })))
        .await
}

pub(crate) async fn invoice(app: &TestApp, customer: &str, cents: i64) -> String {
    let lines = json!([{ "description": "Consulting", "quantity": 1, "unit_price_cents": cents }]);
    let body = json!({ "customer_id": customer, "currency": "EUR", "lines": lines });
    app.create(&app.a, post("/api/invoices", body)).await
}

pub(crate) async fn final_invoice(app: &TestApp, cents: i64) -> String {
    let invoice = invoice(app, &customer(app).await, cents).await;
    app.create(
        &app.a,
        post(format!("/api/invoices/{invoice}/finalize"), json!({})),
    )
    .await;
    invoice
}

pub(crate) async fn bank_transaction(app: &TestApp) -> String {
    let body = json!({ "amount_cents": 5000, "currency": "EUR", "description": "wire" });
    app.create(&app.a, post("/api/bank-transactions", body))
        .await
}

pub(crate) async fn case(app: &TestApp, operation: Op) -> Case {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match operation {
        Op::CreateCustomer => Case {
            refused: post("/api/customers", json!({ "name": " " })),
            refused_status: unprocessable,
            ok: post("/api/customers", json!({ "name": "Initech" })),
            other: post("/api/customers", json!({ "name": "Umbrella" })),
            rows: "SELECT COUNT(*) FROM customers WHERE company_id = $1",
            workflows: 0,
            cross_tenant: StatusCode::CREATED,
        },
        Op::CreateInvoice => {
            let customer = customer(app).await;
            let lines =
                json!([{ "description": "Audit", "quantity": 3, "unit_price_cents": 1500 }]);
            Case {
                refused: post(
                    "/api/invoices",
                    json!({ "customer_id": customer, "currency": "EUR", "lines": [] }),
                ),
                refused_status: unprocessable,
                ok: post(
                    "/api/invoices",
                    json!({ "customer_id": customer, "currency": "EUR", "lines": lines }),
                ),
                other: post(
                    "/api/invoices",
                    json!({ "customer_id": customer, "currency": "USD", "lines": lines }),
                ),
                rows: "SELECT COUNT(*) FROM invoices WHERE company_id = $1 AND currency = 'EUR' AND total_cents = 4500",
                workflows: 0,
                cross_tenant: StatusCode::NOT_FOUND,
            }
        }
        Op::FinalizeInvoice => {
            let customer = customer(app).await;
            let already_final = final_invoice(app, 100).await;
            let draft = invoice(app, &customer, 200).await;
            let another_draft = invoice(app, &customer, 300).await;
            Case {
                refused: post(format!("/api/invoices/{already_final}/finalize"), json!({})),
                refused_status: StatusCode::CONFLICT,
                ok: post(format!("/api/invoices/{draft}/finalize"), json!({})),
                other: post(format!("/api/invoices/{another_draft}/finalize"), json!({})),
                rows: "SELECT COUNT(*) FROM invoices WHERE company_id = $1 AND status = 'final' AND total_cents = 200",
                workflows: 1,
                cross_tenant: StatusCode::NOT_FOUND,
            }
        }
        Op::CreatePayment => {
            let invoice = final_invoice(app, 10_000).await;
            Case {
                refused: post(
                    "/api/payments",
                    json!({ "invoice_id": invoice, "amount_cents": 10_001 }),
                ),
                refused_status: unprocessable,
                ok: post(
                    "/api/payments",
                    json!({ "invoice_id": invoice, "amount_cents": 10_000 }),
                ),
                other: post(
                    "/api/payments",
                    json!({ "invoice_id": invoice, "amount_cents": 9_999 }),
                ),
                rows: "SELECT COUNT(*) FROM payments WHERE company_id = $1",
                workflows: 1,
                cross_tenant: StatusCode::NOT_FOUND,
            }
        }
        Op::CreateEmployee => Case {
            refused: post(
                "/api/employees",
                json!({ "name": "Ada", "monthly_salary_cents": -1, "currency": "EUR" }),
            ),
            refused_status: unprocessable,
            ok: post(
                "/api/employees",
                json!({ "name": "Ada", "monthly_salary_cents": 500_000, "currency": "EUR" }),
            ),
            other: post(
                "/api/employees",
                json!({ "name": "Ada", "monthly_salary_cents": 600_000, "currency": "EUR" }),
            ),
            rows: "SELECT COUNT(*) FROM employees WHERE company_id = $1",
            workflows: 0,
            cross_tenant: StatusCode::CREATED,
        },
        Op::ExecutePayroll => {
            let employee =
                json!({ "name": "Grace", "monthly_salary_cents": 400_000, "currency": "EUR" });
            app.create(&app.a, post("/api/employees", employee)).await;
            Case {
                refused: post(
                    "/api/payroll-runs",
                    json!({ "period": "2026-13", "currency": "EUR" }),
                ),
                refused_status: unprocessable,
                ok: post(
                    "/api/payroll-runs",
                    json!({ "period": "2026-11", "currency": "EUR" }),
                ),
                other: post(
                    "/api/payroll-runs",
                    json!({ "period": "2026-12", "currency": "EUR" }),
                ),
                rows: "SELECT COUNT(*) FROM payroll_runs WHERE company_id = $1",
                workflows: 1,
                cross_tenant: StatusCode::UNPROCESSABLE_ENTITY,
            }
        }
        Op::ImportBankTransaction => Case {
            refused: post(
                "/api/bank-transactions",
                json!({ "amount_cents": 0, "currency": "EUR", "description": "x" }),
            ),
            refused_status: unprocessable,
            ok: post(
                "/api/bank-transactions",
                json!({ "amount_cents": -2500, "currency": "EUR", "description": "rent" }),
            ),
            other: post(
                "/api/bank-transactions",
                json!({ "amount_cents": -2600, "currency": "EUR", "description": "rent" }),
            ),
            rows: "SELECT COUNT(*) FROM bank_transactions WHERE company_id = $1",
            workflows: 0,
            cross_tenant: StatusCode::CREATED,
        },
        Op::ReconcileLedger => {
            let reconciled = bank_transaction(app).await;
            app.create(
                &app.a,
                post(
                    format!("/api/bank-transactions/{reconciled}/reconcile"),
                    json!({}),
                ),
            )
            .await;
            let open = bank_transaction(app).await;
            let another = bank_transaction(app).await;
            Case {
                refused: post(
                    format!("/api/bank-transactions/{reconciled}/reconcile"),
                    json!({}),
                ),
                refused_status: StatusCode::CONFLICT,
                ok: post(
                    format!("/api/bank-transactions/{open}/reconcile"),
                    json!({}),
                ),
                other: post(
                    format!("/api/bank-transactions/{another}/reconcile"),
                    json!({}),
                ),
                rows: "SELECT COUNT(*) FROM bank_transactions WHERE company_id = $1 AND status = 'reconciled'",
                workflows: 0,
                cross_tenant: StatusCode::NOT_FOUND,
            }
        }
        Op::CreateInventoryItem => Case {
            refused: post("/api/inventory", json!({ "sku": "", "name": "Bolt" })),
            refused_status: unprocessable,
            ok: post("/api/inventory", json!({ "sku": "B-1", "name": "Bolt" })),
            other: post("/api/inventory", json!({ "sku": "B-2", "name": "Bolt" })),
            rows: "SELECT COUNT(*) FROM inventory_items WHERE company_id = $1",
            workflows: 0,
            cross_tenant: StatusCode::CREATED,
        },
        Op::AdjustInventory => {
            let item = app
                .create(
                    &app.a,
                    post("/api/inventory", json!({ "sku": "N-1", "name": "Nut" })),
                )
                .await;
            let path = format!("/api/inventory/{item}/adjustments");
            Case {
                refused: post(&path, json!({ "delta": -5, "reason": "sold" })),
                refused_status: unprocessable,
                ok: post(&path, json!({ "delta": 5, "reason": "received" })),
                other: post(&path, json!({ "delta": 6, "reason": "received" })),
                rows: "SELECT COUNT(*) FROM inventory_adjustments WHERE company_id = $1",
                workflows: 0,
                cross_tenant: StatusCode::NOT_FOUND,
            }
        }
        Op::TriggerWorkflow => Case {
            refused: post("/api/workflows/launch_rockets/trigger", json!({})),
            refused_status: unprocessable,
            ok: post("/api/workflows/month_end_close/trigger", json!({})),
            other: post("/api/workflows/payroll_report/trigger", json!({})),
            rows: "SELECT COUNT(*) FROM workflow_requests WHERE company_id = $1",
            workflows: 1,
            cross_tenant: StatusCode::ACCEPTED,
        },
        Op::UpdateCompanySettings => {
            let settings = |currency: &str, days: i64| Call {
                method: "PUT",
                path: "/api/company/settings".to_owned(),
                body: json!({ "currency": currency, "invoice_prefix": "INV", "payment_terms_days": days }),
            };
            Case {
                refused: settings("euro", 30),
                refused_status: unprocessable,
                ok: settings("EUR", 30),
                other: settings("EUR", 45),
                rows: "SELECT COUNT(*) FROM company_settings WHERE company_id = $1 AND payment_terms_days = 30",
                workflows: 0,
                cross_tenant: StatusCode::OK,
            }
        }
        Op::CreateUser => Case {
            refused: post("/api/users", json!({ "email": "not-an-address" })),
            refused_status: unprocessable,
            ok: post("/api/users", json!({ "email": "ada@example.com" })),
            other: post("/api/users", json!({ "email": "grace@example.com" })),
            rows: "SELECT COUNT(*) FROM users WHERE company_id = $1",
            workflows: 0,
            cross_tenant: StatusCode::CREATED,
        },
        Op::GrantUserAccess => {
            let user = app
                .create(
                    &app.a,
                    post("/api/users", json!({ "email": "linus@example.com" })),
                )
                .await;
            Case {
                refused: post(
                    "/api/access-grants",
                    json!({ "user_id": user, "role": "overlord" }),
                ),
                refused_status: unprocessable,
                ok: post(
                    "/api/access-grants",
                    json!({ "user_id": user, "role": "admin" }),
                ),
                other: post(
                    "/api/access-grants",
                    json!({ "user_id": user, "role": "viewer" }),
                ),
                rows: "SELECT COUNT(*) FROM access_grants WHERE company_id = $1",
                workflows: 0,
                cross_tenant: StatusCode::NOT_FOUND,
            }
        }
    }
}
