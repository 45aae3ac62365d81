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

mod api;
mod cases;
mod hostile;
mod writes;

use api::*;
use cases::*;
use hostile::*;
use writes::*;

async fn every_operation_is_registered_and_mounted(app: TestApp) {
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

/// The tests of each operation on one backend: it writes exactly once, and a burst of 500 with
/// one key writes once. A module per operation (`sqlite::create_customer::exactly_once`).
macro_rules! per_operation {
    ($backend:ident [$($variant:ident $test:ident $name:literal,)*]) => {
        $(
            mod $test {
                use super::super::*;

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
    };
}

/// One test of a scenario on a backend: AccuBooks served on it with the scenario's store
/// configuration (`{ config: … }`; the default when it does not say), as the scenario's
/// `TestApp`. `per_operation` is the tests of every operation.
macro_rules! accubooks_test {
    ($backend:ident, per_operation) => {
        with_operations!(per_operation!($backend));
    };
    ($backend:ident, $scenario:ident) => {
        accubooks_test!(
            $backend,
            $scenario {
                config: StoreConfig::default()
            }
        );
    };
    ($backend:ident, $scenario:ident { config: $config:expr }) => {
        #[actix_web::test]
        async fn $scenario() {
            use super::*;
            super::$scenario(TestApp::$backend($config).await).await;
        }
    };
}

// PgBouncer serves the whole suite again, in transaction pooling mode.
idem_tests::per_backend!(accubooks_test! for [
    sqlite,
    #[cfg(postgres_suite)] postgres,
    #[cfg(postgres_suite)] pgbouncer,
    #[cfg(mysql_suite)] mysql,
] [
    per_operation,
    fifty_tenants_ten_keys_ten_retries { config: flood_config() },
    hostile_input_is_refused_and_writes_nothing,
    key_reused_after_it_expired_is_a_clear_conflict {
        config: StoreConfig::default().with_retention(EXPIRING_RETENTION)
    },
    the_api_answers_as_a_client_expects,
    money_arithmetic_is_checked,
    every_operation_is_registered_and_mounted,
]);

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
