//! The harness of idem's end-to-end tests: fresh stores on real databases, and the business
//! table the tests write to.
//!
//! Every store is new: a new SQLite file in a temporary directory, or a new schema in the
//! PostgreSQL database that `DATABASE_URL` names (inside [`through_pgbouncer`], a new database
//! reached through PgBouncer). Tests count what the database holds with SQL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::web::ServiceConfig;
use actix_web::{App, HttpRequest, HttpServer};
use futures_util::future::BoxFuture;
use idem_actix::{MutationGate, TenantId, TenantRejection, TenantResolver};
use idem_runtime::{Backend, IdempotencyStore, StoreConfig};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection as _, MySql, Pool, Postgres, Sqlite};
use uuid::Uuid;

/// Runs every scenario on every backend: a module per backend, named after it, and in it what
/// `$test!(backend, scenario { … })` declares for each scenario (a test, usually; `{ … }` is
/// the scenario's own settings, passed through). The binary's `$test!` macro says how a
/// scenario meets a backend: its fixture, its runtime, its worker threads. A backend's
/// attributes (`#[cfg(postgres_suite)]`) apply to its whole module.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// static RUNS: AtomicUsize = AtomicUsize::new(0);
///
/// // How a scenario meets a backend: here, a function (a test would carry `#[test]`) that
/// // passes the scenario the backend's name, as many times as the scenario's settings say.
/// macro_rules! check {
///     ($backend:ident, $scenario:ident) => {
///         check!($backend, $scenario { times: 1 });
///     };
///     ($backend:ident, $scenario:ident { times: $times:literal }) => {
///         pub fn $scenario() {
///             for _ in 0..$times {
///                 super::$scenario(stringify!($backend));
///             }
///         }
///     };
/// }
///
/// fn opens(backend: &str) {
///     assert!(["sqlite", "postgres"].contains(&backend));
///     RUNS.fetch_add(1, Ordering::Relaxed);
/// }
///
/// fn reopens(backend: &str) {
///     opens(backend);
/// }
///
/// idem_tests::per_backend!(check! for [sqlite, #[cfg(any())] postgres] [
///     opens,
///     reopens { times: 2 },
/// ]);
///
/// fn main() {
///     sqlite::opens();
///     sqlite::reopens();
///     assert_eq!(RUNS.load(Ordering::Relaxed), 3);
///     // `postgres` is not compiled: its attribute applies to its whole module.
/// }
/// ```
#[macro_export]
macro_rules! per_backend {
    ($test:ident! for [$($(#[$attr:meta])* $backend:ident),+ $(,)?] $scenarios:tt) => {
        $($crate::per_backend!(@module $test, [$(#[$attr])*] $backend, $scenarios);)+
    };
    (@module $test:ident, [$(#[$attr:meta])*] $backend:ident,
        [$($scenario:ident $({$($settings:tt)*})?),* $(,)?]) => {
        $(#[$attr])*
        mod $backend {
            $($test!($backend, $scenario $({$($settings)*})?);)*
        }
    };
}

/// Serves `configure` behind the mutation `gate` on a free loopback port with two workers, in
/// the background of the current actix system: the server's base URL and its handle.
pub fn serve(
    gate: MutationGate,
    configure: impl Fn(&mut ServiceConfig) + Clone + Send + 'static,
) -> (String, ServerHandle) {
    let server =
        HttpServer::new(move || App::new().wrap(gate.clone()).configure(configure.clone()))
            .workers(2)
            .bind(("127.0.0.1", 0))
            .expect("bind a loopback port");
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (base, handle)
}

/// Every request belongs to one tenant, and optionally one user: for servers whose tests are
/// not about authentication.
pub struct FixedTenant {
    tenant: &'static str,
    user: Option<&'static str>,
}

impl FixedTenant {
    /// Every request belongs to `tenant`.
    pub fn new(tenant: &'static str) -> Self {
        Self { tenant, user: None }
    }

    /// Every request is sent by `user`, for the audit log.
    pub fn with_user(mut self, user: &'static str) -> Self {
        self.user = Some(user);
        self
    }
}

impl TenantResolver for FixedTenant {
    async fn resolve(&self, _: &HttpRequest) -> Result<TenantId, TenantRejection> {
        TenantId::new(self.tenant).map_err(|error| TenantRejection::new(error.to_string()))
    }

    fn user(&self, _: &HttpRequest) -> Option<String> {
        self.user.map(str::to_owned)
    }
}

/// A fresh, migrated store and whatever keeps its database alive.
pub struct TestStore<DB: Backend> {
    /// The store under test.
    pub store: IdempotencyStore<DB>,
    /// Kept so the SQLite file outlives the test.
    _dir: Option<tempfile::TempDir>,
    /// Opens a second store on the same database, as a second process would.
    reopen: Reopen,
    /// The database itself, when the store reaches it through PgBouncer: migrations and counts
    /// go there.
    direct: Option<Pool<DB>>,
}

#[doc(hidden)]
pub enum Reopen {
    Sqlite(String),
    Postgres(Box<PgConnectOptions>),
    MySql(Box<MySqlConnectOptions>),
    /// A URL for sqlx's `Any` driver.
    Any(String),
}

/// What a test needs of a backend beyond the protocol: the business table and counting.
pub trait TestDb: Backend + Sized {
    /// A fresh database with idem's migrations and the `payments` and `ledger` tables.
    fn fresh(config: StoreConfig) -> BoxFuture<'static, TestStore<Self>> {
        Box::pin(async move {
            let db = Self::unmigrated(config).await;
            db.migrate().await;
            Self::create_business_tables(db.store.pool()).await;
            db
        })
    }

    /// A fresh, empty database: idem's migrations not applied.
    fn unmigrated(config: StoreConfig) -> BoxFuture<'static, TestStore<Self>>;

    /// Creates the `payments` and `ledger` tables.
    fn create_business_tables(pool: &Pool<Self>) -> BoxFuture<'_, ()>;

    /// A new pool on an existing test database.
    fn open_pool(how: &Reopen) -> BoxFuture<'_, Pool<Self>>;

    /// Inserts one payment row with the write's entity id as primary key.
    fn insert_payment<'c>(
        conn: &'c mut Self::Connection,
        id: Uuid,
        tenant: &'c str,
        amount_cents: i64,
    ) -> BoxFuture<'c, Result<(), sqlx::Error>>;

    /// Appends a ledger row whose balance is the tenant's previous balance plus `amount`: a
    /// read-then-write that SERIALIZABLE isolation must order.
    fn append_ledger<'c>(
        conn: &'c mut Self::Connection,
        tenant: &'c str,
        amount: i64,
    ) -> BoxFuture<'c, Result<i64, sqlx::Error>>;

    /// The primary keys of the `payments` rows.
    fn payment_ids(pool: &Pool<Self>) -> BoxFuture<'_, Vec<Uuid>>;

    /// Runs one statement (no parameters) and returns the rows it affected, or the database's
    /// refusal.
    fn execute<'a>(
        pool: &'a Pool<Self>,
        sql: &'static str,
    ) -> BoxFuture<'a, Result<u64, sqlx::Error>>;

    /// Runs a `SELECT COUNT(*) ...` (or any single-integer query) bound to `args`.
    fn count<'a>(
        pool: &'a Pool<Self>,
        sql: &'static str,
        args: &'a [&'a str],
    ) -> BoxFuture<'a, i64>;
}

impl<DB: TestDb> TestStore<DB> {
    /// A store on a new pool of the test database `reopen` names.
    async fn opened(reopen: Reopen, config: StoreConfig) -> Self {
        let store = IdempotencyStore::new(DB::open_pool(&reopen).await, config);
        Self {
            store,
            _dir: None,
            reopen,
            direct: None,
        }
    }

    /// Another store on the same database with its own in-process state, as a second replica
    /// of the service has.
    pub async fn second_process(&self, config: StoreConfig) -> IdempotencyStore<DB> {
        let pooled = self.store.config().transaction_pooling();
        let config = config.with_transaction_pooling(pooled);
        IdempotencyStore::new(DB::open_pool(&self.reopen).await, config)
    }

    /// The database's URL, for another binary to open it.
    pub fn url(&self) -> String {
        use sqlx::ConnectOptions;
        match &self.reopen {
            Reopen::Sqlite(url) | Reopen::Any(url) => url.clone(),
            Reopen::Postgres(options) => {
                // The schema's `search_path` travels in `options`, which the URL leaves out.
                let mut url = options.to_url_lossy();
                if let Some(settings) = options.get_options() {
                    url.query_pairs_mut().append_pair("options", settings);
                }
                url.to_string()
            }
            Reopen::MySql(options) => options.to_url_lossy().to_string(),
        }
    }

    /// A pool on the database itself: the store's, or the direct one when the store is behind
    /// PgBouncer.
    pub fn database(&self) -> &Pool<DB> {
        self.direct.as_ref().unwrap_or(self.store.pool())
    }

    /// Applies idem's migrations, on the database itself when the store is behind PgBouncer.
    pub async fn migrate(&self) {
        match &self.direct {
            Some(direct) => {
                IdempotencyStore::new(direct.clone(), StoreConfig::default())
                    .migrate()
                    .await
            }
            None => self.store.migrate().await,
        }
        .expect("migrate the test database");
    }

    /// Counts with SQL on the store's database.
    pub async fn count(&self, sql: &'static str, args: &[&str]) -> i64 {
        DB::count(self.database(), sql, args).await
    }

    /// The primary keys of the `payments` rows.
    pub async fn payment_ids(&self) -> Vec<Uuid> {
        DB::payment_ids(self.database()).await
    }
}

impl TestStore<Postgres> {
    /// A fresh PostgreSQL store whose sessions run
    /// `SET default_transaction_isolation = serializable`.
    pub async fn fresh_serializable(config: StoreConfig) -> Self {
        let options = postgres_test_schema()
            .await
            .options([("default_transaction_isolation", "serializable")]);
        let db = postgres_store(options, config).await;
        db.store.migrate().await.expect("migrate the test schema");
        Postgres::create_business_tables(db.store.pool()).await;
        db
    }
}

impl TestStore<Postgres> {
    /// A pool on this store's schema that logs in as `role` instead of the owner: what an
    /// application serving with a runtime role has.
    pub async fn pool_as(&self, role: &str) -> PgPool {
        let Reopen::Postgres(options) = &self.reopen else {
            unreachable!("a PostgreSQL test store reopens by options")
        };
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with((**options).clone().username(role))
            .await
            .unwrap_or_else(|error| panic!("log in as {role}: {error}"))
    }
}

/// The business tables, per dialect.
const SQLITE_SCHEMA: &str = "
CREATE TABLE payments (id BLOB PRIMARY KEY, tenant_id TEXT NOT NULL, amount_cents INTEGER NOT NULL);
CREATE TABLE ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, amount INTEGER NOT NULL, balance INTEGER NOT NULL);";

const POSTGRES_SCHEMA: &str = "
CREATE TABLE payments (id UUID PRIMARY KEY, tenant_id TEXT NOT NULL, amount_cents BIGINT NOT NULL);
CREATE TABLE ledger (seq BIGSERIAL PRIMARY KEY, tenant_id TEXT NOT NULL, amount BIGINT NOT NULL, balance BIGINT NOT NULL);";

/// The business statements in one database's words: the test-only methods are otherwise the
/// same on every backend ([`business_statements!`]); only the types differ.
struct BusinessSql {
    /// The `payments` and `ledger` tables.
    schema: &'static str,
    insert_payment: &'static str,
    ledger_balance: &'static str,
    ledger_append: &'static str,
    /// A counting statement as the suites write it (`$1`, `$2`, …), in this database's words.
    counting: fn(&str) -> String,
}

/// SQLite: `$n` parameters, as the suites write them.
const SQLITE_SQL: BusinessSql = BusinessSql {
    schema: SQLITE_SCHEMA,
    ..POSTGRES_SQL
};

/// PostgreSQL: `$n` parameters, as the suites write them.
const POSTGRES_SQL: BusinessSql = BusinessSql {
    schema: POSTGRES_SCHEMA,
    insert_payment: "INSERT INTO payments (id, tenant_id, amount_cents) VALUES ($1, $2, $3)",
    ledger_balance: "SELECT COALESCE(MAX(balance), 0) FROM ledger WHERE tenant_id = $1",
    ledger_append: "INSERT INTO ledger (tenant_id, amount, balance) VALUES ($1, $2, $3)",
    counting: str::to_owned,
};

/// MySQL: `?` parameters; `COALESCE` over `MAX` cast back to a BIGINT.
const MYSQL_SQL: BusinessSql = BusinessSql {
    schema: MYSQL_SCHEMA,
    insert_payment: "INSERT INTO payments (id, tenant_id, amount_cents) VALUES (?, ?, ?)",
    ledger_balance: "SELECT CAST(COALESCE(MAX(balance), 0) AS SIGNED) FROM ledger WHERE tenant_id = ?",
    ledger_append: "INSERT INTO ledger (tenant_id, amount, balance) VALUES (?, ?, ?)",
    counting: mysql_counting,
};

/// A counting statement as the suites write it, in MySQL's words: `?` parameters
/// ([`positional`]), and `CAST(… AS SIGNED)` for the `CAST(… AS BIGINT)` that turns a `SUM`
/// back into an integer elsewhere.
fn mysql_counting(sql: &str) -> String {
    positional(sql).replace(" AS BIGINT)", " AS SIGNED)")
}

/// The test-only methods, written once for every backend over its [`BusinessSql`].
macro_rules! business_statements {
    ($sql:expr) => {
        business_statements!($sql, std::convert::identity, Uuid, std::convert::identity);
    };
    // `$payment_id` turns the write's entity id into what the database binds, and
    // `$read_payment_id` a `$stored_id` the database returns back into the id.
    ($sql:expr, $payment_id:expr, $stored_id:ty, $read_payment_id:expr) => {
        fn create_business_tables(pool: &Pool<Self>) -> BoxFuture<'_, ()> {
            Box::pin(async move {
                sqlx::raw_sql($sql.schema)
                    .execute(pool)
                    .await
                    .expect("create the business tables");
            })
        }

        fn insert_payment<'c>(
            conn: &'c mut Self::Connection,
            id: Uuid,
            tenant: &'c str,
            amount_cents: i64,
        ) -> BoxFuture<'c, Result<(), sqlx::Error>> {
            Box::pin(async move {
                sqlx::query($sql.insert_payment)
                    .bind($payment_id(id))
                    .bind(tenant)
                    .bind(amount_cents)
                    .execute(conn)
                    .await
                    .map(drop)
            })
        }

        fn append_ledger<'c>(
            conn: &'c mut Self::Connection,
            tenant: &'c str,
            amount: i64,
        ) -> BoxFuture<'c, Result<i64, sqlx::Error>> {
            Box::pin(async move {
                let balance: i64 = sqlx::query_scalar($sql.ledger_balance)
                    .bind(tenant)
                    .fetch_one(&mut *conn)
                    .await?;
                sqlx::query($sql.ledger_append)
                    .bind(tenant)
                    .bind(amount)
                    .bind(balance + amount)
                    .execute(&mut *conn)
                    .await?;
                Ok(balance + amount)
            })
        }

        fn payment_ids(pool: &Pool<Self>) -> BoxFuture<'_, Vec<Uuid>> {
            Box::pin(async move {
                sqlx::query_scalar::<_, $stored_id>("SELECT id FROM payments")
                    .fetch_all(pool)
                    .await
                    .expect("read the payments' ids")
                    .into_iter()
                    .map($read_payment_id)
                    .collect()
            })
        }

        fn execute<'a>(
            pool: &'a Pool<Self>,
            sql: &'static str,
        ) -> BoxFuture<'a, Result<u64, sqlx::Error>> {
            // The simple protocol: one round trip, nothing prepared, through PgBouncer too.
            Box::pin(async move {
                sqlx::raw_sql(sql)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })
        }

        fn count<'a>(
            pool: &'a Pool<Self>,
            sql: &'static str,
            args: &'a [&'a str],
        ) -> BoxFuture<'a, i64> {
            Box::pin(async move {
                let counting = sqlx::AssertSqlSafe(($sql.counting)(sql));
                let query = args
                    .iter()
                    .fold(sqlx::query_scalar::<_, i64>(counting), |query, arg| {
                        query.bind(*arg)
                    });
                query
                    .fetch_one(pool)
                    .await
                    .unwrap_or_else(|error| panic!("{sql}: {error}"))
            })
        }
    };
}

impl TestDb for Sqlite {
    fn unmigrated(config: StoreConfig) -> BoxFuture<'static, TestStore<Self>> {
        Box::pin(async move {
            let dir = tempfile::tempdir().expect("create a temporary directory");
            let url = format!("sqlite://{}", dir.path().join("idem.db").display());
            let store = IdempotencyStore::<Sqlite>::connect(&url, config)
                .await
                .expect("open the SQLite test database");
            TestStore {
                store,
                _dir: Some(dir),
                reopen: Reopen::Sqlite(url),
                direct: None,
            }
        })
    }

    fn open_pool(how: &Reopen) -> BoxFuture<'_, Pool<Self>> {
        let Reopen::Sqlite(url) = how else {
            unreachable!("a SQLite test store reopens by URL")
        };
        Box::pin(async move {
            IdempotencyStore::<Sqlite>::connect(url, StoreConfig::default())
                .await
                .expect("reopen the SQLite test database")
                .pool()
                .clone()
        })
    }

    business_statements!(SQLITE_SQL);
}

impl TestDb for Postgres {
    fn unmigrated(config: StoreConfig) -> BoxFuture<'static, TestStore<Self>> {
        Box::pin(async move {
            if THROUGH_PGBOUNCER.try_with(|_| ()).is_ok() {
                return pgbouncer_store(config).await;
            }
            postgres_store(postgres_test_schema().await, config).await
        })
    }

    fn open_pool(how: &Reopen) -> BoxFuture<'_, Pool<Self>> {
        let Reopen::Postgres(options) = how else {
            unreachable!("a PostgreSQL test store reopens by options")
        };
        Box::pin(async move {
            PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with((**options).clone())
                .await
                .expect("open a pool on the PostgreSQL test schema")
        })
    }

    business_statements!(POSTGRES_SQL);
}

async fn postgres_store(options: PgConnectOptions, config: StoreConfig) -> TestStore<Postgres> {
    TestStore::opened(Reopen::Postgres(Box::new(options)), config).await
}

tokio::task_local! {
    /// Set while a scenario runs [`through_pgbouncer`].
    static THROUGH_PGBOUNCER: ();
}

/// Runs a scenario whose PostgreSQL stores ([`TestDb::fresh`], [`TestDb::unmigrated`]) reach a
/// new database of [`TestServer::Tls`] through [`TestServer::PgBouncer`], in transaction
/// pooling mode, with [`StoreConfig::with_transaction_pooling`]; their second processes too.
/// Migrations and counts go to the database itself.
pub async fn through_pgbouncer<F: Future>(scenario: F) -> F::Output {
    THROUGH_PGBOUNCER.scope((), scenario).await
}

async fn pgbouncer_store(config: StoreConfig) -> TestStore<Postgres> {
    let pooled: PgConnectOptions = test_server_database(TestServer::PgBouncer)
        .await
        .parse()
        .expect("a valid URL");
    let direct = pooled.clone().port(TestServer::Tls.port());
    let reopen = Reopen::Postgres(Box::new(pooled));
    let store = IdempotencyStore::new(
        Postgres::open_pool(&reopen).await,
        config.with_transaction_pooling(true),
    );
    let direct = Postgres::open_pool(&Reopen::Postgres(Box::new(direct))).await;
    TestStore {
        store,
        _dir: None,
        reopen,
        direct: Some(direct),
    }
}

/// A `postgres://` URL for a new, empty schema of the database that `DATABASE_URL` names
/// (its `search_path` set through the URL's `options`), for code that connects by URL.
pub async fn postgres_test_url() -> String {
    let (url, _, schema) = create_test_schema().await;
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

/// A new schema, and a new role that owns what it creates there and is neither a superuser nor
/// `BYPASSRLS`: an application's runtime role, under row-level security even on the tables it
/// owns (when they `FORCE` it). The URL logs in as that role; the second URL, as the owner of
/// the database (a superuser, for counting every tenant's rows).
pub async fn postgres_test_url_as_app_role() -> (String, String) {
    let admin_url = postgres_test_url().await;
    let schema = admin_url
        .rsplit("search_path%3D")
        .next()
        .expect("the test URL names its schema")
        .to_owned();
    let role = format!(
        "{TEST_ROLE_PREFIX}{}",
        schema.trim_start_matches(TEST_SCHEMA_PREFIX)
    );
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .expect("PostgreSQL at DATABASE_URL is reachable");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{role}' NOSUPERUSER NOBYPASSRLS; GRANT USAGE, CREATE ON SCHEMA {schema} TO {role}"
    )))
    .execute(&admin)
    .await
    .expect("create the application's role");
    admin.close().await;
    // The role logs in by its own name and password (its password is its name: a test role
    // on a server that asks for passwords, or ignores them), whatever the owner's URL holds.
    let mut url = url::Url::parse(&admin_url).expect("a valid URL");
    url.set_username(&role).expect("a URL with a host");
    url.set_password(Some(&role)).expect("a URL with a host");
    (url.to_string(), admin_url)
}

/// Test roles are named `idem_role_<unix seconds>_<random>`, after their schema.
const TEST_ROLE_PREFIX: &str = "idem_role_";

/// Creates a new schema in the database that `DATABASE_URL` names and returns connect options
/// whose `search_path` is that schema.
pub async fn postgres_test_schema() -> PgConnectOptions {
    let (_, base, schema) = create_test_schema().await;
    base.options([("search_path", schema.as_str())])
}

/// Test schemas are named `idem_test_<unix seconds>_<random>`.
const TEST_SCHEMA_PREFIX: &str = "idem_test_";

/// No test runs this long: a test schema older than this is left over from an earlier run.
const STALE_AFTER_SECS: u64 = 3 * 60 * 60;

/// Whether a test schema or database named `<prefix><unix seconds>_<random>` is left over from
/// an earlier run: older than [`STALE_AFTER_SECS`], or named before the name carried its time.
fn is_stale(name: &str, prefix: &str, now: u64) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(secs, _)| secs.parse::<u64>().ok())
        .is_none_or(|created| now.saturating_sub(created) > STALE_AFTER_SECS)
}

/// Drops the test schemas of earlier runs, so a long-lived development database does not
/// collect them: those older than [`STALE_AFTER_SECS`], and those named before the name carried
/// its time. One test process at a time does it (an advisory lock); the others go on. Best
/// effort: a failure is reported and the test goes on.
async fn drop_stale_test_schemas(admin: &PgPool, now: u64) {
    let cleaner: Result<bool, _> =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('idem_test_schema_cleanup'))")
            .fetch_one(admin)
            .await;
    if !matches!(cleaner, Ok(true)) {
        return;
    }
    let listed: Result<Vec<String>, _> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'idem\\_test\\_%'",
    )
    .fetch_all(admin)
    .await;
    let schemas = listed.unwrap_or_else(|error| {
        eprintln!("listing old test schemas failed: {error}");
        Vec::new()
    });
    for schema in schemas {
        if is_stale(&schema, TEST_SCHEMA_PREFIX, now) {
            let role = format!(
                "{TEST_ROLE_PREFIX}{}",
                schema.trim_start_matches(TEST_SCHEMA_PREFIX)
            );
            let drop = format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; \
                 DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN \
                 EXECUTE 'DROP OWNED BY {role}'; EXECUTE 'DROP ROLE {role}'; END IF; END $$"
            );
            if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(admin)
                .await
            {
                eprintln!("dropping the old test schema {schema} failed: {error}");
            }
        }
    }
}

/// Creates a new schema in the database that `DATABASE_URL` names: the URL, its options and
/// the schema's name. Panics, never skips, when the server is unreachable.
async fn create_test_schema() -> (String, PgConnectOptions, String) {
    let url = std::env::var("DATABASE_URL").expect(
        "the PostgreSQL suite was built with DATABASE_URL set, and now it is not: set it to the same postgres:// URL",
    );
    let base: PgConnectOptions = url
        .parse()
        .expect("DATABASE_URL is a valid postgres:// URL");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs();
    let schema = format!("{TEST_SCHEMA_PREFIX}{now}_{}", fastrand::u32(..));
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap_or_else(|error| panic!("PostgreSQL at DATABASE_URL is unreachable: {error}"));
    drop_stale_test_schemas(&admin, now).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("create the test schema");
    admin.close().await;
    (url, base, schema)
}

/// The PostgreSQL servers besides `DATABASE_URL`'s that `tests/servers/start` makes and starts:
/// a TLS server whose certificate the script's own CA issued, its streaming standby, and a
/// server the crash test may stop.
#[derive(Debug, Clone, Copy)]
pub enum TestServer {
    /// Port 5433: TLS with `ca.crt`'s certificate for `localhost` and `127.0.0.1`.
    Tls,
    /// Port 5434: a read-only streaming replica of [`TestServer::Tls`].
    Standby,
    /// Port 5435: stopped and started by the crash test.
    Crash,
    /// Port 6436: PgBouncer in transaction pooling mode, in front of [`TestServer::Tls`]'s
    /// databases, with four server connections per database.
    PgBouncer,
    /// Port 5440: HAProxy in front of a three-node Patroni cluster with synchronous
    /// replication (`tests/servers/start-ha`), routing to whichever node is the primary.
    Ha,
}

impl TestServer {
    /// The server's port.
    pub fn port(self) -> u16 {
        match self {
            Self::Tls => 5433,
            Self::Standby => 5434,
            Self::Crash => 5435,
            Self::PgBouncer => 6436,
            Self::Ha => 5440,
        }
    }

    /// The Debian cluster's name, for `pg_ctlcluster`.
    pub fn cluster(self) -> &'static str {
        match self {
            Self::Tls => "idem_tls",
            Self::Standby => "(standby)",
            Self::Crash => "idem_crash",
            Self::PgBouncer => "(pgbouncer)",
            Self::Ha => "(patroni)",
        }
    }
}

/// The binary of one of idem-examples' examples (`accubooks`, `nightly_maintenance`), built or
/// found up to date, once per test process, by the cargo that builds the tests.
///
/// The build selects what README's `cargo test --workspace` builds (every member's tests and
/// examples), so that it resolves the same features: right after that command it compiles
/// nothing. A build of the examples alone (`-p idem-examples`) would resolve fewer features
/// and compile the whole dependency graph again.
pub fn example_binary(name: &str) -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        // What cargo set for this test (`CARGO_PKG_NAME`, `OUT_DIR`, …) is not the outer
        // build's environment: a build script that watches one of them (ring's does) would run
        // again, and everything above it would compile again.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_CRATE_")
                || name.starts_with("CARGO_BIN_")
                || name.starts_with("CARGO_MANIFEST_")
                || ["OUT_DIR", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"].contains(&&*name)
            {
                cargo.env_remove(&*name);
            }
        }
        let status = cargo
            .args(["build", "--workspace", "--tests", "--examples"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the examples failed");
    });
    std::env::current_exe()
        .expect("the test's path")
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps")
        .join("examples")
        .join(name)
}

/// Where `tests/servers/start` keeps its certificates: `ca.crt`, `other-ca.crt`.
pub fn test_servers_dir() -> std::path::PathBuf {
    std::env::var_os("IDEM_TEST_SERVERS")
        .map_or_else(|| "/var/lib/postgresql/idem-test".into(), Into::into)
}

/// Runs `tests/servers/start` once per test process (it is idempotent, and takes a lock against
/// other processes); panics, never skips, when it fails.
pub fn start_test_servers() {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    STARTED.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/start");
        let status = std::process::Command::new(script)
            .status()
            .unwrap_or_else(|error| panic!("run {script}: {error}"));
        assert!(
            status.success(),
            "{script} failed: the test servers are not up"
        );
    });
}

/// Runs `tests/servers/start-ha`: starts whatever of the high-availability cluster is not
/// running (a node a test crashed, say) and waits until it is whole again, a primary streaming
/// to two standbys, one synchronous; panics, never skips, when it fails.
pub fn start_ha_cluster() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/servers/start-ha");
    let status = std::process::Command::new(script)
        .status()
        .unwrap_or_else(|error| panic!("run {script}: {error}"));
    assert!(
        status.success(),
        "{script} failed: the HA cluster is not up"
    );
}

/// Databases on the servers of `tests/servers/start` are named `idem_t_<unix seconds>_<random>`.
const TEST_DATABASE_PREFIX: &str = "idem_t_";

/// A new database on `server` (created on the primary for the standby, on the server behind
/// PgBouncer for PgBouncer, and through HAProxy on the HA cluster's primary), as a URL for the
/// `postgres` user over 127.0.0.1. Databases of earlier runs, older than three hours, are
/// dropped first.
pub async fn test_server_database(server: TestServer) -> String {
    match server {
        TestServer::Ha => start_ha_cluster(),
        _ => start_test_servers(),
    }
    let primary = match server {
        TestServer::Standby | TestServer::PgBouncer => TestServer::Tls,
        other => other,
    };
    let admin_url = format!("postgres://postgres@127.0.0.1:{}/postgres", primary.port());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap_or_else(|error| panic!("the test server at {admin_url} is unreachable: {error}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs();
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datname LIKE 'idem\\_t\\_%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap_or_default();
    for name in old {
        if is_stale(&name, TEST_DATABASE_PREFIX, now) {
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&admin)
                .await;
        }
    }
    // The roles of those databases (see `pgbouncer_test_database_as_app_role`) own nothing now.
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'idem\\_role\\_%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap_or_default();
    for role in roles {
        if is_stale(&role, TEST_ROLE_PREFIX, now) {
            let drop = format!("DROP ROLE IF EXISTS {role}");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&admin)
                .await;
        }
    }
    let name = format!("{TEST_DATABASE_PREFIX}{now}_{}", fastrand::u32(..));
    let create = format!("CREATE DATABASE {name}");
    // Right after a promotion HAProxy may route to a node that is still read-only for a moment.
    retry_while_sqlstate("25006", &create, || {
        sqlx::raw_sql(sqlx::AssertSqlSafe(create.clone())).execute(&admin)
    })
    .await;
    let url = format!("postgres://postgres@127.0.0.1:{}/{name}", server.port());
    // Right after a switchover HAProxy may also route a new connection to a standby that has
    // not replayed the CREATE DATABASE yet (3D000): the database is ready once it is seen.
    // Only there: elsewhere the extra connection only adds to a busy server's count.
    if matches!(server, TestServer::Ha) {
        retry_while_sqlstate("3D000", &url, || sqlx::PgConnection::connect(&url)).await;
    }
    url
}

/// Runs `attempt` again, every 250 ms for up to 10 s, while it fails with SQLSTATE `code` (a
/// failover's passing state); panics, naming `what`, on any other failure or past that time.
async fn retry_while_sqlstate<T, Attempt>(
    code: &str,
    what: &str,
    mut attempt: impl FnMut() -> Attempt,
) -> T
where
    Attempt: Future<Output = Result<T, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(error) => {
                let passing = error
                    .as_database_error()
                    .is_some_and(|error| error.code().as_deref() == Some(code));
                tries += 1;
                assert!(passing && tries < 40, "{what}: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// A new database behind PgBouncer for a new application role (neither a superuser nor
/// `BYPASSRLS`, allowed to create in `public`): see [`pgbouncer_test_database_as_app_role`].
pub struct PooledTestDatabase {
    /// The database itself ([`TestServer::Tls`]), as the role: for migrations.
    pub direct_url: String,
    /// The database through [`TestServer::PgBouncer`], as the role: for serving.
    pub pooler_url: String,
    /// The database itself as its superuser, for counting every tenant's rows.
    pub admin_url: String,
}

/// A new database on [`TestServer::Tls`] and a new role that serves from it through
/// [`TestServer::PgBouncer`], as an application behind PgBouncer does.
pub async fn pgbouncer_test_database_as_app_role() -> PooledTestDatabase {
    let pooled: PgConnectOptions = test_server_database(TestServer::PgBouncer)
        .await
        .parse()
        .expect("a valid URL");
    let database = pooled.get_database().expect("the URL names its database");
    let role = format!(
        "{TEST_ROLE_PREFIX}{}",
        database.trim_start_matches(TEST_DATABASE_PREFIX)
    );
    let (tls, bouncer) = (TestServer::Tls.port(), TestServer::PgBouncer.port());
    let admin_url = format!("postgres://postgres@127.0.0.1:{tls}/{database}");
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&admin_url)
        .await
        .unwrap_or_else(|error| panic!("{admin_url}: {error}"));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; GRANT USAGE, CREATE ON SCHEMA public TO {role}"
    )))
    .execute(&admin)
    .await
    .expect("create the application's role");
    admin.close().await;
    PooledTestDatabase {
        direct_url: format!("postgres://{role}@127.0.0.1:{tls}/{database}"),
        pooler_url: format!("postgres://{role}@127.0.0.1:{bouncer}/{database}"),
        admin_url,
    }
}

impl TestStore<MySql> {
    /// How this store's database is reached (the server, the user, the database).
    pub fn connect_options(&self) -> MySqlConnectOptions {
        let Reopen::MySql(options) = &self.reopen else {
            unreachable!("a MySQL test store reopens by options")
        };
        (**options).clone()
    }

    /// A pool on this store's database that logs in as `user` (with the URL's password, over the
    /// same socket or host) instead of the owner: what an application serving as a runtime user
    /// has.
    pub async fn pool_as(&self, user: &str) -> Pool<MySql> {
        MySqlPoolOptions::new()
            .max_connections(2)
            .connect_with(self.connect_options().username(user))
            .await
            .unwrap_or_else(|error| panic!("log in as {user}: {error}"))
    }
}

/// The business tables on MySQL: a UUID is bound as 16 bytes.
const MYSQL_SCHEMA: &str = "
CREATE TABLE payments (id BINARY(16) PRIMARY KEY, tenant_id VARCHAR(128) NOT NULL, amount_cents BIGINT NOT NULL) ENGINE = InnoDB;
CREATE TABLE ledger (seq BIGINT AUTO_INCREMENT PRIMARY KEY, tenant_id VARCHAR(128) NOT NULL, amount BIGINT NOT NULL, balance BIGINT NOT NULL) ENGINE = InnoDB;";

pub use idem_runtime::positional;

impl TestDb for MySql {
    fn unmigrated(config: StoreConfig) -> BoxFuture<'static, TestStore<Self>> {
        Box::pin(async move {
            let reopen = Reopen::MySql(Box::new(mysql_test_database().await));
            TestStore::opened(reopen, config).await
        })
    }

    fn open_pool(how: &Reopen) -> BoxFuture<'_, Pool<Self>> {
        let Reopen::MySql(options) = how else {
            unreachable!("a MySQL test store reopens by options")
        };
        Box::pin(async move {
            MySqlPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with((**options).clone())
                .await
                .expect("open a pool on the MySQL test database")
        })
    }

    business_statements!(MYSQL_SQL);
}

/// `Any` in the suites is MySQL: AccuBooks serves PostgreSQL and SQLite through `Any` in its own
/// suites, and MySQL is the dialect whose dispatch (its `BEGIN`, `LAST_INSERT_ID`, its errors)
/// only the generic scenarios reach.
impl TestDb for sqlx::Any {
    fn unmigrated(config: StoreConfig) -> BoxFuture<'static, TestStore<Self>> {
        Box::pin(async move {
            let reopen = Reopen::Any(mysql_test_database_url().await);
            TestStore::opened(reopen, config).await
        })
    }

    fn open_pool(how: &Reopen) -> BoxFuture<'_, Pool<Self>> {
        let Reopen::Any(url) = how else {
            unreachable!("an Any test store reopens by URL")
        };
        Box::pin(async move {
            sqlx::any::install_default_drivers();
            sqlx::any::AnyPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(60))
                .connect(url)
                .await
                .expect("open a pool on the MySQL test database")
        })
    }

    // `Any` binds no UUID: its 16 bytes, as the MySQL driver binds one.
    business_statements!(
        MYSQL_SQL,
        |id: Uuid| id.as_bytes().to_vec(),
        Vec<u8>,
        |bytes: Vec<u8>| Uuid::from_slice(&bytes).expect("a payment id is 16 bytes")
    );
}

/// Databases for the MySQL suite are named `idem_t_<unix seconds>_<random>`, on the server
/// that `MYSQL_URL` names.
///
/// A new database there, as connect options with the session settings idem's own pools
/// use (`time_zone = '+00:00'`). Databases of earlier runs, older than three hours, are dropped
/// first. Panics, never skips, when the server is unreachable.
pub async fn mysql_test_database() -> MySqlConnectOptions {
    let url = std::env::var("MYSQL_URL").expect(
        "the MySQL suite was built with MYSQL_URL set, and now it is not: set it to the same mysql:// URL",
    );
    let base: MySqlConnectOptions = url.parse().expect("MYSQL_URL is a valid mysql:// URL");
    let base = base.timezone(Some("+00:00".to_owned()));
    let admin = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(base.clone())
        .await
        .unwrap_or_else(|error| panic!("MySQL at MYSQL_URL is unreachable: {error}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970")
        .as_secs();
    let old: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name LIKE 'idem\\_t\\_%'",
    )
    .fetch_all(&admin)
    .await
    .unwrap_or_default();
    for name in old {
        if is_stale(&name, TEST_DATABASE_PREFIX, now) {
            let drop = format!("DROP DATABASE IF EXISTS {name}");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&admin)
                .await;
        }
    }
    let name = format!("{TEST_DATABASE_PREFIX}{now}_{}", fastrand::u32(..));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap_or_else(|error| panic!("CREATE DATABASE {name}: {error}"));
    admin.close().await;
    base.database(&name)
}

/// A new database for the MySQL suite ([`mysql_test_database`]), as a `mysql://` URL: `MYSQL_URL`
/// with the new database's name for its own, for an application that takes a URL.
pub async fn mysql_test_database_url() -> String {
    let options = mysql_test_database().await;
    let name = options
        .get_database()
        .expect("the test database has a name");
    let url = std::env::var("MYSQL_URL").expect("MYSQL_URL is set");
    let (scheme, rest) = url.split_once("://").expect("MYSQL_URL is a mysql:// URL");
    let (authority, rest) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    let query = rest.find('?').map_or("", |start| &rest[start..]);
    format!("{scheme}://{authority}/{name}{query}")
}

/// Carries one relayed connection between a client and its server, both ways, until either side
/// closes or `up` turns false (a network partition): then both are dropped, closed.
pub async fn pipe_until_cut<C, S>(client: C, server: S, up: &std::sync::atomic::AtomicBool)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let cut = async {
        while up.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
        _ = tokio::io::copy(&mut server_read, &mut client_write) => {}
        () = cut => {}
    }
}

/// The sum of the samples of `name` whose labels include `labels`, in a Prometheus text
/// exposition `text`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some((label_text.trim_end_matches('}'), value))
        })
        .filter(|(label_text, _)| {
            labels
                .iter()
                .all(|(key, value)| label_text.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|(_, value)| value.parse::<f64>().expect("a numeric sample"))
        .sum()
}
