//! AccuBooks end to end, per operation, over real HTTP, on SQLite, PostgreSQL (directly and
//! through PgBouncer) and MySQL/MariaDB: a new
//! write, its replay (same bytes, the replay header, no second row, no second workflow), the
//! same key with another request (422), no key (400), a business-rule refusal that leaves the
//! key free for the corrected request, and tenant isolation.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web;
use awc::Client;
use idem_actix::StoreConfig;
use idem_examples::accubooks::AccuBooks;
use serde_json::{Value, json};

/// A running AccuBooks and two companies.
struct TestApp {
    base: String,
    accubooks: AccuBooks,
    /// Counts every tenant's rows (row-level security does not apply to it).
    admin: sqlx::AnyPool,
    /// The database is MySQL or MariaDB, whose parameters are `?`.
    mysql: bool,
    /// AccuBooks serves through PgBouncer.
    pooled: bool,
    handle: actix_web::dev::ServerHandle,
    _dir: Option<tempfile::TempDir>,
    a: Company,
    b: Company,
}

struct Company {
    id: String,
    token: String,
}

struct Answer {
    status: StatusCode,
    replayed: bool,
    body: web::Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One request of a case.
#[derive(Clone)]
struct Call {
    method: &'static str,
    path: String,
    body: Value,
}

fn post(path: impl Into<String>, body: Value) -> Call {
    Call {
        method: "POST",
        path: path.into(),
        body,
    }
}

impl TestApp {
    /// AccuBooks on `database_url` (served through `pooler_url` when there is one); the test
    /// counts rows through `admin_url` (on PostgreSQL the database's owner, whom row-level
    /// security does not restrict; AccuBooks serves as a role it does).
    async fn start(
        database_url: String,
        pooler_url: Option<String>,
        admin_url: String,
        dir: Option<tempfile::TempDir>,
        config: StoreConfig,
    ) -> Self {
        let pooled = pooler_url.is_some();
        let accubooks = match pooler_url {
            None => AccuBooks::open(&database_url, config).await,
            Some(pooler_url) => {
                AccuBooks::open_through_pooler(&database_url, &pooler_url, config).await
            }
        }
        .expect("AccuBooks starts");
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&admin_url)
            .await
            .expect("the admin pool connects");
        let app = accubooks.clone();
        let (base, handle) =
            idem_tests::serve(app.mutation_gate(), move |config| app.configure(config));
        let a = Self::company(&base, "Company A").await;
        let b = Self::company(&base, "Company B").await;
        Self {
            base,
            accubooks,
            admin,
            mysql: admin_url.starts_with("mysql:"),
            pooled,
            handle,
            _dir: dir,
            a,
            b,
        }
    }

    async fn sqlite(config: StoreConfig) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("accubooks.db").display());
        Self::start(url.clone(), None, url, Some(dir), config).await
    }

    /// AccuBooks as an application role under row-level security, never a superuser.
    #[cfg(postgres_suite)]
    async fn postgres(config: StoreConfig) -> Self {
        let (url, admin_url) = idem_tests::postgres_test_url_as_app_role().await;
        Self::start(url, None, admin_url, None, config).await
    }

    /// AccuBooks as an application role under row-level security, through PgBouncer in
    /// transaction pooling mode.
    #[cfg(postgres_suite)]
    async fn pgbouncer(config: StoreConfig) -> Self {
        let database = idem_tests::pgbouncer_test_database_as_app_role().await;
        let pooler = Some(database.pooler_url);
        Self::start(
            database.direct_url,
            pooler,
            database.admin_url,
            None,
            config,
        )
        .await
    }

    /// AccuBooks on a new MySQL or MariaDB database at `MYSQL_URL`.
    #[cfg(mysql_suite)]
    async fn mysql(config: StoreConfig) -> Self {
        let url = idem_tests::mysql_test_database_url().await;
        Self::start(url.clone(), None, url, None, config).await
    }

    /// `sql` with its `$1, $2, …` (in bind order, each once) written for this database.
    fn sql(&self, sql: &str) -> String {
        if self.mysql {
            idem_tests::positional(sql)
        } else {
            sql.to_owned()
        }
    }

    async fn company(base: &str, name: &str) -> Company {
        let mut response = Client::default()
            .post(format!("{base}/api/companies"))
            .send_json(&json!({ "name": name }))
            .await
            .expect("the bootstrap call answers");
        assert_eq!(response.status(), StatusCode::CREATED);
        let created: Value = response.json().await.expect("a JSON answer");
        Company {
            id: created["company_id"].as_str().unwrap().to_owned(),
            token: created["token"].as_str().unwrap().to_owned(),
        }
    }

    async fn send(&self, company: &Company, key: Option<&str>, call: &Call) -> Answer {
        let client = Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut request = client
            .request(
                call.method.parse().unwrap(),
                format!("{}{}", self.base, call.path),
            )
            .insert_header(("authorization", format!("Bearer {}", company.token)));
        if let Some(key) = key {
            request = request.insert_header(("idempotency-key", key));
        }
        let mut response = request
            .send_json(&call.body)
            .await
            .expect("the server answers");
        Answer {
            status: response.status(),
            replayed: response.headers().get("idempotent-replayed").is_some(),
            body: response.body().await.expect("a readable body"),
        }
    }

    /// Sends a setup call with a fresh key and returns the new record's id.
    async fn create(&self, company: &Company, call: Call) -> String {
        let key = format!("setup-{}", fastrand::u64(..));
        let answer = self.send(company, Some(&key), &call).await;
        assert!(
            answer.status.is_success(),
            "setup {}: {:?}",
            call.path,
            answer.body
        );
        answer.json()["id"].as_str().expect("an id").to_owned()
    }

    /// The number `sql` counts, whose every `$1` is the company's id.
    async fn count(&self, sql: &str, company: &Company) -> i64 {
        let (text, binds) = if self.mysql {
            (sql.replace("$1", "?"), sql.matches("$1").count())
        } else {
            (sql.to_owned(), 1)
        };
        let mut query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(text));
        for _ in 0..binds {
            query = query.bind(&company.id);
        }
        query
            .fetch_one(&self.admin)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    async fn workflow_runs(&self, company: &Company) -> i64 {
        let report = self
            .accubooks
            .workflows()
            .dispatch_pending()
            .await
            .expect("dispatch");
        assert_eq!((report.failed, report.unhandled), (0, 0));
        self.count(
            "SELECT COUNT(*) FROM workflow_runs WHERE company_id = $1",
            company,
        )
        .await
    }

    /// The outcomes the audit log records for one key, sorted: a row that stands for repeats
    /// (`repeat_count`) as many times.
    async fn audit_trail(&self, company: &Company, operation: &str, key: &str) -> Vec<String> {
        self.accubooks.store().flush_audit().await;
        let tenant = idem_runtime::TenantId::new(company.id.clone()).expect("a tenant id");
        let key = idem_runtime::IdempotencyKey::parse(key).expect("a key");
        let rows: Vec<(String, i32)> = sqlx::query_as(sqlx::AssertSqlSafe(self.sql(
            "SELECT outcome, repeat_count FROM idempotent_write_audit_log
             WHERE company_id = $1 AND entity_id = $2 ORDER BY outcome",
        )))
        .bind(&company.id)
        .bind(idem_runtime::entity_id(&tenant, operation, &key).to_string())
        .fetch_all(&self.admin)
        .await
        .expect("the audit trail");
        rows.into_iter()
            .flat_map(|(outcome, repeats)| {
                std::iter::repeat_n(outcome, usize::try_from(repeats).expect("a count"))
            })
            .collect()
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        if self.pooled {
            // PgBouncer keeps the test's server connections for its idle timeout, each test
            // database a pool of its own: end them now, so that tests running one after another
            // do not fill the server's connection slots.
            self.accubooks.store().pool().close().await;
            sqlx::query(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .execute(&self.admin)
            .await
            .expect("the test database's server connections end");
        }
    }
}

/// One operation's scenario: the refused request, the corrected one (a new write), another
/// request for the 422, the rows it writes and the workflows it starts.
struct Case {
    refused: Call,
    refused_status: StatusCode,
    ok: Call,
    other: Call,
    rows: &'static str,
    workflows: i64,
    /// What company B gets for the `ok` request with A's key: its own write, or a refusal
    /// because the records the request names are A's (404) or B lacks what it needs (422).
    cross_tenant: StatusCode,
}

async fn customer(app: &TestApp) -> String {
    app.create(&app.a, post("/api/customers", json!({ "name": "Globex" })))
        .await
}

async fn invoice(app: &TestApp, customer: &str, cents: i64) -> String {
    let lines = json!([{ "description": "Consulting", "quantity": 1, "unit_price_cents": cents }]);
    let body = json!({ "customer_id": customer, "currency": "EUR", "lines": lines });
    app.create(&app.a, post("/api/invoices", body)).await
}

async fn final_invoice(app: &TestApp, cents: i64) -> String {
    let invoice = invoice(app, &customer(app).await, cents).await;
    app.create(
        &app.a,
        post(format!("/api/invoices/{invoice}/finalize"), json!({})),
    )
    .await;
    invoice
}

async fn bank_transaction(app: &TestApp) -> String {
    let body = json!({ "amount_cents": 5000, "currency": "EUR", "description": "wire" });
    app.create(&app.a, post("/api/bank-transactions", body))
        .await
}

async fn case(app: &TestApp, operation: Op) -> Case {
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

async fn exactly_once(app: TestApp, op: Op) {
    let (case, operation) = (case(&app, op).await, op.name());
    let rows_before = app.count(case.rows, &app.a).await;
    let workflows_before = app.workflow_runs(&app.a).await;
    let key = format!("{operation}-key");

    // A business-rule refusal writes nothing and leaves the key free.
    let refused = app.send(&app.a, Some(&key), &case.refused).await;
    assert_eq!(
        refused.status, case.refused_status,
        "{operation} refused: {:?}",
        refused.body
    );
    assert_eq!(
        refused.json()["type"]
            .as_str()
            .map(|t| t.contains("accubooks.example")),
        Some(true)
    );
    assert_eq!(app.count(case.rows, &app.a).await, rows_before);

    // The corrected request with the same key is a new write.
    let new = app.send(&app.a, Some(&key), &case.ok).await;
    assert!(
        new.status.is_success() && !new.replayed,
        "{operation} new: {} {:?}",
        new.status,
        new.body
    );
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: one row"
    );

    // A retry replays the stored answer byte for byte and writes nothing more.
    let replay = app.send(&app.a, Some(&key), &case.ok).await;
    assert!(replay.replayed, "{operation}: the replay is marked");
    assert_eq!(replay.body, new.body, "{operation}: byte-identical");
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: no second row"
    );
    assert_eq!(
        app.workflow_runs(&app.a).await,
        workflows_before + case.workflows,
        "{operation}: workflows run once, after commit, never for the replay"
    );

    // The same key with another request is refused.
    let other = app.send(&app.a, Some(&key), &case.other).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{operation}: {:?}",
        other.body
    );
    assert!(
        other.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("#key-reused")
    );

    // No key, no write.
    let keyless = app.send(&app.a, None, &case.ok).await;
    assert_eq!(keyless.status, StatusCode::BAD_REQUEST);
    assert!(
        keyless.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("#key-missing")
    );
    assert_eq!(app.count(case.rows, &app.a).await, rows_before + 1);

    // The key's audit trail: one row per outcome, the refusal's and the replay's included
    // (they are written after their answers, on this app's `Any` pool).
    assert_eq!(
        app.audit_trail(&app.a, operation, &key).await,
        ["failed", "mismatch", "new", "replayed"],
        "{operation}: the audit trail"
    );

    // Company B with A's key gets its own write or its own refusal, never A's answer.
    let b_rows_before = app.count(case.rows, &app.b).await;
    let b = app.send(&app.b, Some(&key), &case.ok).await;
    assert!(!b.replayed, "{operation}: B never replays A's answer");
    assert_eq!(
        b.status, case.cross_tenant,
        "{operation}: B's answer {:?}",
        b.body
    );
    let b_rows = app.count(case.rows, &app.b).await;
    if b.status.is_success() {
        assert_eq!(b_rows, b_rows_before + 1, "{operation}: B's own record");
        if let Some(a_id) = new.json()["id"].as_str() {
            let b_id = b.json()["id"].as_str().map(str::to_owned);
            assert!(
                b_id.is_some_and(|b_id| b_id != a_id),
                "{operation}: B's record is its own"
            );
        }
    } else {
        assert_eq!(
            b.json()["status"],
            b.status.as_u16(),
            "{operation}: a problem answer"
        );
        assert_ne!(
            b.body, new.body,
            "{operation}: B never sees A's stored response"
        );
        assert_eq!(b_rows, b_rows_before, "{operation}: nothing written for B");
    }
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: A untouched"
    );
    app.stop().await;
}

/// 500 concurrent requests with one key: one record, one workflow run where the operation
/// starts one, and 500 answers with byte-identical bodies.
async fn burst_of_500_writes_once(app: TestApp, op: Op) {
    let (case, operation) = (case(&app, op).await, op.name());
    let rows_before = app.count(case.rows, &app.a).await;
    let workflows_before = app.workflow_runs(&app.a).await;
    let key = format!("{operation}-burst");
    let answers =
        futures_util::future::join_all((0..500).map(|_| app.send(&app.a, Some(&key), &case.ok)))
            .await;
    let first = answers
        .iter()
        .find(|answer| !answer.replayed)
        .expect("one answer is the write");
    assert!(
        first.status.is_success(),
        "{operation}: {} {:?}",
        first.status,
        first.body
    );
    assert_eq!(
        answers.iter().filter(|answer| !answer.replayed).count(),
        1,
        "{operation}"
    );
    assert!(
        answers
            .iter()
            .all(|answer| answer.status.is_success() && answer.body == first.body),
        "{operation}: 500 byte-identical bodies"
    );
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: one record"
    );
    assert_eq!(
        app.workflow_runs(&app.a).await,
        workflows_before + case.workflows,
        "{operation}: one workflow at most"
    );
    // 500 outcomes in the audit log (batched after the answers, repeats counted in one row):
    // the write and 499 replays.
    let trail = app.audit_trail(&app.a, operation, &key).await;
    assert_eq!(trail.len(), 500, "{operation}: every request's outcome");
    assert_eq!(
        trail.iter().filter(|outcome| *outcome == "new").count(),
        1,
        "{operation}: one new write in the audit log"
    );
    assert!(
        trail
            .iter()
            .all(|outcome| outcome == "new" || outcome == "replayed"),
        "{operation}: {trail:?}"
    );
    app.stop().await;
}

/// A key used again after it expired runs the handler again, whose deterministic entity id is
/// taken: a clear 409 that says to use a new key, never a 500, a second record or a replay.
async fn key_reused_after_it_expired_is_a_clear_conflict(app: TestApp) {
    let call = post("/api/customers", json!({ "name": "Late Retry Ltd" }));
    let first = app.send(&app.a, Some("k-expiring"), &call).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    tokio::time::sleep(EXPIRING_RETENTION * 2).await;

    let late = app.send(&app.a, Some("k-expiring"), &call).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{:?}", late.body);
    assert!(!late.replayed);
    assert!(
        late.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("#already-exists"),
        "{:?}",
        late.body
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM customers WHERE company_id = $1",
            &app.a
        )
        .await,
        1,
        "one customer"
    );
    assert_eq!(
        app.send(&app.a, Some("k-fresh"), &call).await.status,
        StatusCode::CREATED,
        "a new key writes"
    );
    app.stop().await;
}

/// How long keys live in the expiry test.
const EXPIRING_RETENTION: Duration = Duration::from_millis(300);

/// The waits of a test that sends 5000 requests at once: its point is that every key is written
/// once and every retry answers the same, not how fast a shared 2-core machine serves a flood,
/// so a request waits for a connection or its twin longer than the 5 s defaults.
fn flood_config() -> StoreConfig {
    StoreConfig::default()
        .with_acquire_timeout(Duration::from_secs(60))
        .with_lock_timeout(Duration::from_secs(60))
}

/// The operations a fresh company can call without setting anything up first, with the table
/// each writes to.
const STANDALONE: [(&str, &str); 5] = [
    ("/api/customers", "customers"),
    ("/api/employees", "employees"),
    ("/api/bank-transactions", "bank_transactions"),
    ("/api/inventory", "inventory_items"),
    ("/api/users", "users"),
];

fn standalone_body(operation: usize, n: usize) -> Value {
    match operation {
        0 => json!({ "name": format!("Customer {n}") }),
        1 => {
            json!({ "name": format!("Employee {n}"), "monthly_salary_cents": 300_000, "currency": "EUR" })
        }
        2 => {
            json!({ "amount_cents": 100 + n as i64, "currency": "EUR", "description": format!("wire {n}") })
        }
        3 => json!({ "sku": format!("SKU-{n}"), "name": "Widget" }),
        _ => json!({ "email": format!("user{n}@example.com") }),
    }
}

/// 50 companies × 10 keys × 10 retries of each, all at once, across five operations: exactly
/// 500 records, 10 per company, and every company reads back only its own.
async fn fifty_tenants_ten_keys_ten_retries(app: TestApp) {
    let mut companies = Vec::new();
    for n in 0..50 {
        companies.push(TestApp::company(&app.base, &format!("Tenant {n}")).await);
    }
    let calls: Vec<(usize, String, Call)> = (0..50)
        .flat_map(|tenant| (0..10).map(move |key| (tenant, key)))
        .flat_map(|(tenant, key)| {
            let operation = key % STANDALONE.len();
            let call = post(STANDALONE[operation].0, standalone_body(operation, key));
            (0..10).map(move |_| (tenant, format!("mixed-{key}"), call.clone()))
        })
        .collect();
    let answers = futures_util::future::join_all(
        calls
            .iter()
            .map(|(tenant, key, call)| app.send(&companies[*tenant], Some(key), call)),
    )
    .await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|answer| !answer.status.is_success())
        .map(|answer| {
            (
                answer.status,
                String::from_utf8_lossy(&answer.body).into_owned(),
            )
        })
        .collect();
    assert!(
        refused.is_empty(),
        "every retry answers success: {refused:?}"
    );
    assert_eq!(
        answers.iter().filter(|answer| !answer.replayed).count(),
        500,
        "500 new writes"
    );

    let mut total = 0;
    for company in &companies {
        let mut own = 0;
        for (path, table) in STANDALONE {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE company_id = $1");
            let rows = app.count(&sql, company).await;
            let listed = app
                .send(
                    company,
                    None,
                    &Call {
                        method: "GET",
                        path: path.to_owned(),
                        body: Value::Null,
                    },
                )
                .await;
            let listed = listed.json().as_array().map_or(usize::MAX, Vec::len);
            assert_eq!(
                listed as i64, rows,
                "{path}: a company reads exactly its own rows"
            );
            own += rows;
        }
        assert_eq!(
            own, 11,
            "10 records per company, and the owner created with it"
        );
        total += own;
    }
    assert_eq!(total, 550);
    app.stop().await;
}

/// An answer with its headers, for the checks of HTTP semantics.
struct Full {
    status: u16,
    headers: actix_web::http::header::HeaderMap,
    body: Value,
}

impl TestApp {
    async fn request(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> Full {
        let client = Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut request = client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(authorization) = authorization {
            request = request.insert_header(("authorization", authorization));
        }
        request = request.insert_header(("idempotency-key", format!("http-{}", fastrand::u64(..))));
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .expect("the server answers");
        let bytes = response.body().await.expect("a readable body");
        Full {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

impl Full {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    fn assert_problem(&self, status: u16, anchor: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            "application/problem+json",
            "{}",
            self.body
        );
        let problem_type = self.body["type"].as_str().unwrap_or_default();
        assert!(
            problem_type.ends_with(&format!("#{anchor}")),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(!self.body["detail"].as_str().unwrap_or_default().is_empty());
    }
}

/// What a client of the API meets around the writes: problem+json for every refusal, 405 with
/// `Allow`, RFC 9110's challenge on 401, a case-insensitive scheme, 503 when the token cannot be
/// checked, the settings as one object, and the audit log naming the user.
async fn the_api_answers_as_a_client_expects(app: TestApp) {
    let bearer = format!("Bearer {}", app.a.token);
    app.request("GET", "/api/nothing-here", Some(&bearer), None)
        .await
        .assert_problem(404, "no-route");
    app.request("GET", "/", None, None)
        .await
        .assert_problem(404, "no-route");
    // A mutation the API does not serve never reaches a handler: the mutation gate answers it.
    let wrong = app
        .request("DELETE", "/api/customers", Some(&bearer), None)
        .await;
    wrong.assert_problem(405, "unprotected-mutation");
    let wrong = app
        .request("GET", "/api/invoices/42/finalize", Some(&bearer), None)
        .await;
    wrong.assert_problem(405, "method-not-allowed");
    assert_eq!(wrong.header("allow"), "POST");
    let wrong = app
        .request("PUT", "/api/companies", None, Some(json!({ "name": "X" })))
        .await;
    wrong.assert_problem(405, "unprotected-mutation");

    let anonymous = app.request("GET", "/api/customers", None, None).await;
    anonymous.assert_problem(401, "tenant-unresolved");
    assert!(
        anonymous
            .header("www-authenticate")
            .starts_with("Bearer realm="),
        "{:?}",
        anonymous.headers
    );
    let forged = app
        .request("GET", "/api/customers", Some("Bearer ab_not_a_token"), None)
        .await;
    forged.assert_problem(401, "tenant-unresolved");
    assert!(
        forged
            .header("www-authenticate")
            .contains("error=\"invalid_token\"")
    );
    let lower = app
        .request(
            "GET",
            "/api/customers",
            Some(&format!("bearer {}", app.a.token)),
            None,
        )
        .await;
    assert_eq!(
        lower.status, 200,
        "the scheme is case-insensitive: {}",
        lower.body
    );
    let upper = app
        .request(
            "POST",
            "/api/customers",
            Some(&format!("BEARER {}", app.a.token)),
            Some(json!({ "name": "Upper" })),
        )
        .await;
    assert_eq!(upper.status, 201, "{}", upper.body);

    let none = app
        .request("GET", "/api/company/settings", Some(&bearer), None)
        .await;
    none.assert_problem(404, "not-found");
    let put = app
        .request(
            "PUT",
            "/api/company/settings",
            Some(&bearer),
            Some(json!({ "currency": "EUR", "invoice_prefix": "AC", "payment_terms_days": 30 })),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let settings = app
        .request("GET", "/api/company/settings", Some(&bearer), None)
        .await;
    assert_eq!(settings.status, 200);
    assert_eq!(
        settings.body,
        json!({ "currency": "EUR", "invoice_prefix": "AC", "payment_terms_days": 30 })
    );

    // Every write of the token is the owner's, in the audit log.
    app.accubooks.store().flush_audit().await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM idempotent_write_audit_log WHERE company_id = $1 AND (user_id IS NULL OR user_id NOT IN (SELECT user_id FROM api_tokens WHERE company_id = $1))", &app.a).await,
        0,
        "every audit row names the token's user"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE company_id = $1",
            &app.a
        )
        .await,
        2
    );

    // The token table is unreachable: the server's failure, a 503 to retry, not a 401. (The
    // simple protocol: nothing prepared, so it runs as it is through PgBouncer too.)
    sqlx::raw_sql("ALTER TABLE api_tokens RENAME TO api_tokens_away")
        .execute(app.accubooks.store().pool())
        .await
        .unwrap();
    let down = app
        .request(
            "POST",
            "/api/customers",
            Some(&bearer),
            Some(json!({ "name": "Down" })),
        )
        .await;
    down.assert_problem(503, "tenant-unavailable");
    assert!(
        down.header("retry-after")
            .parse::<u64>()
            .is_ok_and(|seconds| seconds >= 1)
    );
    assert!(down.header("www-authenticate").is_empty());
    sqlx::raw_sql("ALTER TABLE api_tokens_away RENAME TO api_tokens")
        .execute(app.accubooks.store().pool())
        .await
        .unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM customers WHERE company_id = $1",
            &app.a
        )
        .await,
        1,
        "only Upper"
    );
    app.stop().await;
}

/// Money and quantities never overflow: an amount past the bound, a line whose amount or an
/// invoice whose total does not fit, a delta of `i64::MAX` or `i64::MIN` are 422 problems that
/// name the field, and nothing is written.
async fn money_arithmetic_is_checked(app: TestApp) {
    let bearer = format!("Bearer {}", app.a.token);
    let customer = customer(&app).await;
    let refused = |path: &'static str, body: Value, field: &'static str| {
        let bearer = bearer.clone();
        let app = &app;
        async move {
            let answer = app.request("POST", path, Some(&bearer), Some(body)).await;
            answer.assert_problem(422, "business-rule");
            let detail = answer.body["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(detail.contains(field), "{path}: {detail}");
        }
    };
    let max_quantity = 1_000_000_000_i64;
    let max_cents = 10_000_000_000_000_i64;
    refused(
        "/api/invoices",
        json!({ "customer_id": customer, "currency": "EUR", "lines": [
        { "description": "a lot", "quantity": max_quantity, "unit_price_cents": max_cents } ] }),
        "lines[0].amount_cents",
    )
    .await;
    refused(
        "/api/invoices",
        json!({ "customer_id": customer, "currency": "EUR", "lines": [
        { "description": "too many", "quantity": i64::MAX, "unit_price_cents": 1 } ] }),
        "quantity",
    )
    .await;
    // Each line fits (10^18 cents); ten of them do not.
    let many = (0..10).map(|n| json!({ "description": format!("line {n}"), "quantity": max_quantity, "unit_price_cents": 1_000_000_000 })).collect::<Vec<_>>();
    refused(
        "/api/invoices",
        json!({ "customer_id": customer, "currency": "EUR", "lines": many }),
        "total_cents",
    )
    .await;
    refused(
        "/api/employees",
        json!({ "name": "Rich", "monthly_salary_cents": i64::MAX, "currency": "EUR" }),
        "monthly_salary_cents",
    )
    .await;
    refused(
        "/api/bank-transactions",
        json!({ "amount_cents": i64::MIN, "currency": "EUR", "description": "huge" }),
        "amount_cents",
    )
    .await;
    let item = app
        .create(
            &app.a,
            post("/api/inventory", json!({ "sku": "BIG", "name": "Bolt" })),
        )
        .await;
    for delta in [i64::MAX, i64::MIN, max_quantity + 1] {
        refused(
            Box::leak(format!("/api/inventory/{item}/adjustments").into_boxed_str()),
            json!({ "delta": delta, "reason": "overflow" }),
            "delta",
        )
        .await;
    }
    for written in [
        "SELECT COUNT(*) FROM invoices WHERE company_id = $1",
        "SELECT COUNT(*) FROM invoice_lines WHERE invoice_id IN (SELECT id FROM invoices WHERE company_id = $1)",
        "SELECT COUNT(*) FROM employees WHERE company_id = $1",
        "SELECT COUNT(*) FROM bank_transactions WHERE company_id = $1",
        "SELECT COUNT(*) FROM inventory_adjustments WHERE company_id = $1",
    ] {
        assert_eq!(
            app.count(written, &app.a).await,
            0,
            "nothing written: {written}"
        );
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM inventory_items WHERE company_id = $1 AND quantity = 0",
            &app.a
        )
        .await,
        1
    );

    // Even a handler that forgot its checks could not store a negative total or stock.
    for sql in [
        "UPDATE inventory_items SET quantity = -1 WHERE company_id = $1",
        "INSERT INTO payroll_runs (id, company_id, period, currency, total_cents, created_at_ms) VALUES ('neg', $1, '2026-01', 'EUR', -2, 0)",
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(app.sql(sql)))
            .bind(&app.a.id)
            .execute(&app.admin)
            .await
            .expect_err(sql);
        assert!(
            refused.to_string().to_lowercase().contains("constraint"),
            "a constraint refuses {sql}: {refused}"
        );
    }
    app.stop().await;
}

/// Sends raw bytes, so headers that no well-behaved client would build get through, and
/// returns the answer's status code.
/// Sends a hand-written request and reads the answer's status and `Content-Type`.
async fn raw_answer(app: &TestApp, request: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(&request).await.expect("send");
    // The head is enough; the server may close early on a body it refused.
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
        }
    }
    let head = String::from_utf8_lossy(&answer);
    let status = head
        .get(9..12)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type)
}

fn raw_post(path: &str, token: &str, keys: &[&[u8]], content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !token.is_empty() {
        request.extend_from_slice(format!("authorization: {token}\r\n").as_bytes());
    }
    for key in keys {
        request.extend_from_slice(b"idempotency-key: ");
        request.extend_from_slice(key);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// Who refuses a hostile request.
enum Refused {
    /// The application: this status, with a problem+json body.
    Problem(u16),
    /// actix-web's HTTP parser, before any application code runs: a bare `400` (a control
    /// character or DEL in a header value is not HTTP).
    ByHttpParser,
}

/// Hostile keys, bodies, tenants and paths: each gets a 4xx in problem+json, nothing is
/// written, and the server keeps serving.
async fn hostile_input_is_refused_and_writes_nothing(app: TestApp) {
    let invoice = final_invoice(&app, 10_000).await;
    let b_item = app
        .create(
            &app.b,
            post("/api/inventory", json!({ "sku": "B-ITEM", "name": "Bolt" })),
        )
        .await;
    let (a, b) = (
        format!("Bearer {}", app.a.token),
        format!("Bearer {}", app.b.token),
    );
    let payment = |cents: i64| {
        json!({ "invoice_id": invoice, "amount_cents": cents })
            .to_string()
            .into_bytes()
    };
    let json_type = "application/json";
    let long_key = vec![b'k'; 256];
    let quoted_long_key = [b"\"".as_slice(), &[b'k'; 300], b"\""].concat();
    let huge = [
        b"{\"invoice_id\":\"".as_slice(),
        &vec![b'x'; 1 << 20],
        b"\",\"amount_cents\":1}",
    ]
    .concat();
    let long_path = format!("/api/invoices/{}/finalize", "9".repeat(10_000));

    let cases: Vec<(&str, Refused, Vec<u8>)> = vec![
        (
            "empty key",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b""], json_type, &payment(100)),
        ),
        (
            "empty quoted key",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b"\"\""], json_type, &payment(100)),
        ),
        (
            "256-byte key",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[&long_key], json_type, &payment(100)),
        ),
        (
            "300-byte quoted key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[&quoted_long_key],
                json_type,
                &payment(100),
            ),
        ),
        (
            "control character in key",
            Refused::ByHttpParser,
            raw_post("/api/payments", &a, &[b"k\x01ey"], json_type, &payment(100)),
        ),
        (
            "DEL in key",
            Refused::ByHttpParser,
            raw_post("/api/payments", &a, &[b"k\x7fey"], json_type, &payment(100)),
        ),
        (
            "non-ASCII key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &["ключ".as_bytes()],
                json_type,
                &payment(100),
            ),
        ),
        (
            "tab in quoted key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"\"a\tb\""],
                json_type,
                &payment(100),
            ),
        ),
        (
            "SQL with spaces as key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"'; DROP TABLE payments; --"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "unterminated quote",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b"\"abc"], json_type, &payment(100)),
        ),
        (
            "three key headers",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"k1", b"k2", b"k3"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "malformed JSON",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"h-1"],
                json_type,
                b"{\"amount_cents\":",
            ),
        ),
        (
            "1 MiB body",
            Refused::Problem(413),
            raw_post("/api/payments", &a, &[b"h-2"], json_type, &huge),
        ),
        (
            "wrong types",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"h-3"],
                json_type,
                br#"{"invoice_id":5,"amount_cents":"ten"}"#,
            ),
        ),
        (
            "negative money",
            Refused::Problem(422),
            raw_post("/api/payments", &a, &[b"h-4"], json_type, &payment(-500)),
        ),
        (
            "zero money",
            Refused::Problem(422),
            raw_post("/api/payments", &a, &[b"h-5"], json_type, &payment(0)),
        ),
        (
            "money past i64",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"h-6"],
                json_type,
                br#"{"invoice_id":"x","amount_cents":9223372036854775808}"#,
            ),
        ),
        (
            "a 256-character email (MySQL's index holds 255)",
            Refused::Problem(422),
            raw_post(
                "/api/users",
                &a,
                &[b"h-long-email"],
                json_type,
                json!({ "email": format!("{}@example.com", "é".repeat(244)) })
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "a 256-character SKU",
            Refused::Problem(422),
            raw_post(
                "/api/inventory",
                &a,
                &[b"h-long-sku"],
                json_type,
                json!({ "sku": "S".repeat(256), "name": "Bolt" })
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "not JSON at all",
            Refused::Problem(415),
            raw_post("/api/payments", &a, &[b"h-7"], "text/plain", b"pay me"),
        ),
        (
            "no tenant",
            Refused::Problem(401),
            raw_post("/api/payments", "", &[b"h-8"], json_type, &payment(100)),
        ),
        (
            "forged token",
            Refused::Problem(401),
            raw_post(
                "/api/payments",
                "Bearer ab_forged",
                &[b"h-9"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "basic auth",
            Refused::Problem(401),
            raw_post(
                "/api/payments",
                "Basic YWRtaW46YWRtaW4=",
                &[b"h-10"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "another company's invoice",
            Refused::Problem(404),
            raw_post("/api/payments", &b, &[b"h-11"], json_type, &payment(100)),
        ),
        (
            "another company's item",
            Refused::Problem(404),
            raw_post(
                &format!("/api/inventory/{b_item}/adjustments"),
                &a,
                &[b"h-12"],
                json_type,
                br#"{"delta":5,"reason":"x"}"#,
            ),
        ),
        (
            "unknown invoice",
            Refused::Problem(404),
            raw_post(
                "/api/invoices/00000000-0000-0000-0000-000000000000/finalize",
                &a,
                &[b"h-13"],
                json_type,
                b"{}",
            ),
        ),
        (
            "traversal in path",
            Refused::Problem(404),
            raw_post(
                "/api/invoices/..%2F..%2Fetc%2Fpasswd/finalize",
                &a,
                &[b"h-14"],
                json_type,
                b"{}",
            ),
        ),
        (
            "10 KB path segment",
            Refused::Problem(404),
            raw_post(&long_path, &a, &[b"h-15"], json_type, b"{}"),
        ),
        (
            "quoted key with parameters",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[br#""k";v=1"#],
                json_type,
                &payment(100),
            ),
        ),
        (
            "two keys in one header",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b"k1, k2"], json_type, &payment(100)),
        ),
        (
            "malformed JSON where no key is needed",
            Refused::Problem(400),
            raw_post("/api/companies", "", &[], json_type, b"{\"name\":"),
        ),
    ];
    let written = "SELECT (SELECT COUNT(*) FROM payments WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM inventory_adjustments WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM users WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM inventory_items WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM idempotency_keys WHERE tenant_id = $1)
                        + (SELECT COUNT(*) FROM companies)";
    let (a_before, b_before) = (
        app.count(written, &app.a).await,
        app.count(written, &app.b).await,
    );
    for (name, refused, request) in cases {
        let answer = raw_answer(&app, request).await;
        match refused {
            Refused::Problem(status) => assert_eq!(
                answer,
                (status, "application/problem+json".to_owned()),
                "{name}"
            ),
            Refused::ByHttpParser => assert_eq!(answer, (400, String::new()), "{name}"),
        }
    }
    assert_eq!(
        app.count(written, &app.a).await,
        a_before,
        "nothing written for A"
    );
    assert_eq!(
        app.count(written, &app.b).await,
        b_before,
        "nothing written for B"
    );

    // A key made of SQL is just a key: one payment, and every table still there.
    let injected = raw_post(
        "/api/payments",
        &a,
        &[b"';DROP_TABLE_payments;--"],
        json_type,
        &payment(100),
    );
    assert_eq!(raw_answer(&app, injected).await.0, 201);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM payments WHERE company_id = $1",
            &app.a
        )
        .await,
        1
    );

    // And the server keeps serving.
    let healthy = app
        .send(
            &app.a,
            Some("after-the-storm"),
            &post("/api/customers", json!({ "name": "Still here" })),
        )
        .await;
    assert_eq!(healthy.status, StatusCode::CREATED);
    app.stop().await;
}

async fn registry_is_complete(app: TestApp) {
    let mounted: Vec<_> = app.accubooks.operations().map(|op| op.name()).collect();
    let registered: Vec<_> = idem_actix::registered_operations()
        .map(|op| op.name())
        .collect();
    assert_eq!(mounted.len(), 14);
    assert_eq!(registered.len(), 14);
    for name in Op::ALL.iter().map(|op| op.name()) {
        assert!(mounted.contains(&name), "{name} is mounted");
    }
    app.stop().await;
}

/// The registry, rendered one operation per line, and the mutations served without idem:
/// adding, removing or reclassifying a protected operation, or declaring an exemption, changes
/// `examples/accubooks-operations.txt` in the same commit, where a reviewer sees it.
#[test]
fn the_registry_matches_its_reviewed_snapshot() {
    let mut lines: Vec<String> = idem_actix::registered_operations()
        .map(|op| {
            let route = op.route().map_or("(no route)".to_owned(), |r| {
                format!("{} {}", r.method, r.path)
            });
            format!("{:<10} {:<22} {route}", op.class(), op.name())
        })
        .collect();
    lines.extend(idem_actix::exemptions().map(|exemption| {
        format!(
            "{:<10} {:<22} {} {}: {}",
            "exempt",
            "(unprotected)",
            exemption.method(),
            exemption.path(),
            exemption.reason()
        )
    }));
    lines.sort();
    let rendered = lines.join("\n") + "\n";
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/accubooks-operations.txt"
    );
    if std::env::var_os("IDEM_BLESS").is_some() {
        std::fs::write(path, &rendered).expect("write the snapshot");
    }
    let snapshot = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        rendered == snapshot,
        "the registry of protected operations changed.\n\
         If the change is intended, review it and update the snapshot with\n\
         \n    IDEM_BLESS=1 cargo test -p idem-tests --test accubooks the_registry_matches_its_reviewed_snapshot\n\n\
         and commit examples/accubooks-operations.txt with the change.\n\
         registry now:\n{rendered}\nsnapshot:\n{snapshot}"
    );
}

/// Every protected operation of AccuBooks, declared once: its variant of [`Op`], its test
/// module and its name. The other macros take the list from here.
macro_rules! with_operations {
    ($callback:ident!($($args:tt)*)) => {
        $callback!($($args)* [
            CreateCustomer create_customer "createCustomer",
            CreateInvoice create_invoice "createInvoice",
            FinalizeInvoice finalize_invoice "finalizeInvoice",
            CreatePayment create_payment "createPayment",
            CreateEmployee create_employee "createEmployee",
            ExecutePayroll execute_payroll "executePayroll",
            ImportBankTransaction import_bank_transaction "importBankTransaction",
            ReconcileLedger reconcile_ledger "reconcileLedger",
            CreateInventoryItem create_inventory_item "createInventoryItem",
            AdjustInventory adjust_inventory "adjustInventory",
            TriggerWorkflow trigger_workflow "triggerWorkflow",
            UpdateCompanySettings update_company_settings "updateCompanySettings",
            CreateUser create_user "createUser",
            GrantUserAccess grant_user_access "grantUserAccess",
        ]);
    };
}

/// Defines [`Op`], whose `match`es the compiler checks for every operation.
macro_rules! define_operations {
    ([$($variant:ident $test:ident $name:literal,)*]) => {
        /// A protected operation of AccuBooks.
        #[derive(Clone, Copy, Debug)]
        enum Op {
            $($variant,)*
        }

        impl Op {
            const ALL: &[Op] = &[$(Op::$variant,)*];

            fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => $name,)*
                }
            }
        }
    };
}

with_operations!(define_operations!());

macro_rules! per_operation {
    ($backend:ident [$($variant:ident $test:ident $name:literal,)*]) => {
        mod $backend {
            use super::*;

            $(
                mod $test {
                    use super::*;

                    #[actix_web::test]
                    async fn exactly_once() {
                        super::super::exactly_once(TestApp::$backend(StoreConfig::default()).await, Op::$variant).await;
                    }

                    #[actix_web::test]
                    async fn burst_of_500_writes_once() {
                        super::super::burst_of_500_writes_once(TestApp::$backend(StoreConfig::default()).await, Op::$variant).await;
                    }
                }
            )*

            #[actix_web::test]
            async fn fifty_tenants_ten_keys_ten_retries() {
                super::fifty_tenants_ten_keys_ten_retries(TestApp::$backend(flood_config()).await).await;
            }

            #[actix_web::test]
            async fn hostile_input_is_refused_and_writes_nothing() {
                super::hostile_input_is_refused_and_writes_nothing(TestApp::$backend(StoreConfig::default()).await).await;
            }

            #[actix_web::test]
            async fn key_reused_after_it_expired_is_a_clear_conflict() {
                let config = StoreConfig::default().with_retention(EXPIRING_RETENTION);
                super::key_reused_after_it_expired_is_a_clear_conflict(TestApp::$backend(config).await).await;
            }

            #[actix_web::test]
            async fn the_api_answers_as_a_client_expects() {
                super::the_api_answers_as_a_client_expects(TestApp::$backend(StoreConfig::default()).await).await;
            }

            #[actix_web::test]
            async fn money_arithmetic_is_checked() {
                super::money_arithmetic_is_checked(TestApp::$backend(StoreConfig::default()).await).await;
            }

            #[actix_web::test]
            async fn every_operation_is_registered_and_mounted() {
                registry_is_complete(TestApp::$backend(StoreConfig::default()).await).await;
            }
        }
    };
}

with_operations!(per_operation!(sqlite));

#[cfg(postgres_suite)]
with_operations!(per_operation!(postgres));

// The whole suite again, served through PgBouncer in transaction pooling mode.
#[cfg(postgres_suite)]
with_operations!(per_operation!(pgbouncer));

#[cfg(mysql_suite)]
with_operations!(per_operation!(mysql));

/// On PostgreSQL every business table but the token hashes is under row-level security, forced
/// on its owner, and AccuBooks serves as a role that does not bypass it (the suite above runs so).
#[cfg(postgres_suite)]
#[actix_web::test]
async fn postgres_business_tables_force_row_level_security() {
    let app = TestApp::postgres(StoreConfig::default()).await;
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind = 'r'
           AND c.relname NOT LIKE 'idem%' AND c.relname NOT LIKE '\\_%' AND c.relname <> 'idempotency_keys'
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
         ORDER BY 1",
    )
    .fetch_all(&app.admin)
    .await
    .unwrap();
    assert_eq!(
        unprotected,
        ["api_tokens"],
        "only the token hashes are outside"
    );
    let bypass: bool = sqlx::query_scalar(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(app.accubooks.store().pool())
    .await
    .unwrap();
    assert!(
        !bypass,
        "AccuBooks serves as a role row-level security applies to"
    );
    app.stop().await;
}
