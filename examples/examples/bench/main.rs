//! What exactly-once costs: AccuBooks' protected `createCustomer` against a bare twin (the same
//! INSERT in the same kind of transaction, with no key), side by side in one run, on SQLite, and
//! on PostgreSQL and MySQL/MariaDB when given.
//!
//! ```text
//! cargo run --release --example bench -- --help
//! cargo run --release --example bench                       # SQLite only
//! cargo run --release --example bench -- --postgres postgres://postgres@127.0.0.1:5432/idem_bench
//! cargo run --release --example bench -- --mysql 'mysql://root@localhost/idem_bench?socket=/run/mysqld/mysqld.sock'
//! ```
//!
//! Prints a Markdown table (throughput and p50/p99 latency of bare writes, protected new writes,
//! replays and a 500-request same-key burst, each with its ratio to bare) and writes it, with a
//! JSON copy for tracking over time, to `target/bench/`. The same writes also run behind
//! `actix-idempotent` (sessions in the Redis at `127.0.0.1:6379`), the middleware a user would
//! otherwise pick; its rows report how many rows its same-key burst wrote. The steady scenarios
//! run in interleaved rounds and the table adds each round's ratio of protected new writes to
//! bare writes. A second table measures four operations (`createCustomer`, `createInvoice` with
//! three lines, `createPayment`, `adjustInventory`) against bare twins that run the same
//! statements (`idem_examples::accubooks::writes`) in one transaction without idem: saturated,
//! and at rest (one client), where it gives the median milliseconds idem adds to one write. On
//! PostgreSQL a last table counts, through a proxy ([`wire`]), the statements and round trips
//! each request sends: bare, protected new write, replay. The machine is small and shared: read
//! the ratios, not the absolute numbers; the counts are exact.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use actix_idempotent::{IdempotentFactory, IdempotentOptions};
use actix_session::SessionMiddleware;
use actix_session::storage::RedisSessionStore;
use actix_web::cookie::Key;
use actix_web::{App, HttpResponse, HttpServer, web};
use awc::Client;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use idem_actix::SqliteSynchronous;
use idem_actix::positional;
use idem_actix::{IdempotencyStore, StoreConfig, Tenant};
use idem_examples::accubooks::AccuBooks;
use idem_examples::accubooks::error::ApiError;
use idem_examples::accubooks::writes::{
    NewAdjustment, NewCustomer, NewInvoice, NewPayment, record_adjustment, record_customer,
    record_invoice, record_payment,
};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Any, AnyConnection, Pool};
use uuid::Uuid;

use wire::{Wire, WireCounter};

mod wire;

/// Requests per measured scenario, in how many interleaved rounds, and how many run at once.
const REQUESTS: usize = 2000;
const ROUNDS: usize = 5;
const CONCURRENCY: usize = 32;
const BURST: usize = 500;

idem_actix::unprotected_mutation!(
    POST "/bare/customers",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/bare/invoices",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/bare/payments",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/bare/inventory/{item_id}/adjustments",
    reason = "the benchmark's bare twin: the same write without idem, to compare against"
);
idem_actix::unprotected_mutation!(
    POST "/middleware/customers",
    reason = "the benchmark's rival: the same write behind another crate's idempotency middleware"
);

/// A bare twin: `write` in one transaction of its own, without a key, answered `201`. On
/// SQLite the transaction takes the write lock up front (`BEGIN IMMEDIATE`), as idem's writes
/// do: a deferred transaction that reads before it writes fails with `SQLITE_BUSY` when another
/// writer committed first.
async fn bare(
    pool: &Pool<Any>,
    write: impl AsyncFnOnce(&mut AnyConnection) -> Result<Value, ApiError>,
) -> Result<HttpResponse, ApiError> {
    let mut tx = if pool.connect_options().database_url.scheme() == "sqlite" {
        pool.begin_with("BEGIN IMMEDIATE").await?
    } else {
        pool.begin().await?
    };
    let written = write(&mut tx).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(written))
}

/// The bare twins: each runs the protected operation's own statements
/// (`idem_examples::accubooks::writes`) through [`bare`].
async fn create_customer_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    customer: web::Json<NewCustomer>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_customer(tx, tenant.0.as_str(), Uuid::new_v4(), &customer).await
    })
    .await
}

async fn create_invoice_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    invoice: web::Json<NewInvoice>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_invoice(tx, tenant.0.as_str(), Uuid::new_v4(), &invoice).await
    })
    .await
}

async fn create_payment_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    payment: web::Json<NewPayment>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_payment(tx, tenant.0.as_str(), Uuid::new_v4(), &payment).await
    })
    .await
}

async fn adjust_inventory_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    item_id: web::Path<String>,
    adjustment: web::Json<NewAdjustment>,
) -> Result<HttpResponse, ApiError> {
    bare(&pool, async |tx| {
        record_adjustment(tx, tenant.0.as_str(), Uuid::new_v4(), &item_id, &adjustment).await
    })
    .await
}

/// One measured scenario.
struct Row {
    name: &'static str,
    requests: usize,
    seconds: f64,
    latency: Histogram<u64>,
    rows_written: i64,
}

/// The rows of one database (the bare writes first) and each round's ratio of protected new
/// writes to bare writes.
struct Measured {
    rows: Vec<Row>,
    new_write_ratios: Vec<f64>,
}

impl Row {
    /// Adds another round of the same scenario.
    fn add(&mut self, round: Row) {
        self.requests += round.requests;
        self.seconds += round.seconds;
        self.rows_written += round.rows_written;
        self.latency
            .add(&round.latency)
            .expect("histograms of the same precision");
    }

    fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn p(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

struct Target {
    base: String,
    token: String,
    store: IdempotencyStore<Any>,
    pool: Pool<Any>,
    company: String,
    /// MySQL or MariaDB, whose parameters are `?`.
    mysql: bool,
}

impl Target {
    async fn start(
        url: &str,
        config: StoreConfig,
    ) -> Result<(Self, actix_web::dev::ServerHandle), Box<dyn std::error::Error>> {
        let accubooks = AccuBooks::open(url, config).await?;
        let store = accubooks.store().clone();
        let pool = store.pool().clone();
        let app = accubooks.clone();
        let sessions = RedisSessionStore::new("redis://127.0.0.1:6379").await?;
        let cookie_key = Key::generate();
        let server = HttpServer::new(move || {
            let app = app.clone();
            let middleware = web::scope("/middleware")
                .wrap(IdempotentFactory::new(IdempotentOptions::default()))
                .wrap(SessionMiddleware::new(sessions.clone(), cookie_key.clone()))
                .route("/customers", web::post().to(create_customer_bare));
            App::new()
                .wrap(app.mutation_gate())
                .configure(move |config| app.configure(config))
                .route("/bare/customers", web::post().to(create_customer_bare))
                .route("/bare/invoices", web::post().to(create_invoice_bare))
                .route("/bare/payments", web::post().to(create_payment_bare))
                .route(
                    "/bare/inventory/{item_id}/adjustments",
                    web::post().to(adjust_inventory_bare),
                )
                .service(middleware)
        })
        .workers(2)
        .bind(("127.0.0.1", 0))?;
        let base = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let mut created = Client::default()
            .post(format!("{base}/api/companies"))
            .send_json(&json!({ "name": "Bench" }))
            .await?;
        let company: Value = created.json().await?;
        let target = Self {
            base,
            token: company["token"].as_str().unwrap_or_default().to_owned(),
            company: company["company_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            store,
            pool,
            mysql: url.starts_with("mysql:"),
        };
        Ok((target, handle))
    }

    /// The rows of the bench's company in `table`: the count that proves the writes happened.
    async fn rows_in(&self, table: &str) -> i64 {
        let mut count = format!("SELECT COUNT(*) FROM {table} WHERE company_id = $1");
        if self.mysql {
            count = positional(&count);
        }
        sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(&self.company)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }

    /// A session cookie of the middleware's, as a client that made one request holds it.
    async fn session_cookie(&self) -> String {
        let response = Client::default()
            .post(format!("{}/middleware/customers", self.base))
            .insert_header(("authorization", format!("Bearer {}", self.token)))
            .send_json(&json!({ "name": "Session Opener" }))
            .await
            .expect("the server answers");
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .unwrap_or_default();
        cookie.to_owned()
    }

    /// Sends `requests` requests, `concurrency` at a time: request `i` goes to `path` with key
    /// `key(i)` (none when `None`) and, when given, the session `cookie`.
    async fn drive(
        &self,
        name: &'static str,
        path: &str,
        requests: usize,
        concurrency: usize,
        key: impl Fn(usize) -> Option<String>,
    ) -> Row {
        self.drive_with_cookie(name, path, requests, concurrency, key, None)
            .await
    }

    async fn drive_with_cookie(
        &self,
        name: &'static str,
        path: &str,
        requests: usize,
        concurrency: usize,
        key: impl Fn(usize) -> Option<String>,
        cookie: Option<&str>,
    ) -> Row {
        self.send_all(name, "customers", requests, concurrency, |i| Request {
            path: path.to_owned(),
            key: key(i),
            cookie: cookie.map(str::to_owned),
            body: json!({ "name": "Bench Customer" }),
        })
        .await
    }

    /// Sends `requests` requests, `concurrency` at a time, request `i` being `request(i)`; each
    /// must succeed. The row counts the rows the requests added to `table`.
    async fn send_all(
        &self,
        name: &'static str,
        table: &str,
        requests: usize,
        concurrency: usize,
        request: impl Fn(usize) -> Request,
    ) -> Row {
        let client = Client::builder()
            .connector(awc::Connector::new().limit(concurrency))
            .timeout(Duration::from_secs(60))
            .finish();
        let before = self.rows_in(table).await;
        let started = Instant::now();
        let latencies: Vec<u64> = futures_util::stream::iter(0..requests)
            .map(|i| {
                let Request {
                    path,
                    key,
                    cookie,
                    body,
                } = request(i);
                let mut sending = client
                    .post(format!("{}{path}", self.base))
                    .insert_header(("authorization", format!("Bearer {}", self.token)));
                if let Some(key) = key {
                    sending = sending.insert_header(("idempotency-key", key));
                }
                if let Some(cookie) = cookie {
                    sending = sending.insert_header(("cookie", cookie));
                }
                async move {
                    let sent = Instant::now();
                    let mut response = sending.send_json(&body).await.expect("the server answers");
                    let _ = response.body().await;
                    assert!(
                        response.status().is_success(),
                        "{name} ({path}): {}",
                        response.status()
                    );
                    u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let mut latency = Histogram::new(3).expect("a histogram");
        for micros in latencies {
            latency.record(micros.max(1)).expect("a recordable latency");
        }
        Row {
            name,
            requests,
            seconds,
            latency,
            rows_written: self.rows_in(table).await - before,
        }
    }
}

/// One request of a measured scenario.
struct Request {
    path: String,
    /// Its `Idempotency-Key`, if it sends one.
    key: Option<String>,
    /// A session cookie of actix-idempotent's, if it sends one.
    cookie: Option<String>,
    body: Value,
}

/// Measures one database. The steady scenarios run in [`ROUNDS`] interleaved rounds (bare, protected
/// new writes, their replays, actix-idempotent), so that drift on a shared machine (other
/// processes, checkpoints, growing tables) falls on every scenario alike; each row sums its
/// rounds. The bursts run once, at the end.
async fn measure(
    database: &str,
    url: &str,
    config: StoreConfig,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let (target, handle) = Target::start(url, config).await?;
    let run = format!("{:x}", std::process::id());
    // Warm up connections and caches on both paths before measuring.
    target
        .drive("warm-up", "/bare/customers", 200, CONCURRENCY, |_| None)
        .await;
    target
        .drive("warm-up", "/api/customers", 200, CONCURRENCY, |i| {
            Some(format!("warm-{run}-{i}"))
        })
        .await;

    let per_round = REQUESTS / ROUNDS;
    let mut rows: Vec<Row> = Vec::new();
    let mut new_write_ratios = Vec::new();
    for round in 0..ROUNDS {
        let new_key = |i| Some(format!("new-{run}-{round}-{i}"));
        let measured = [
            target
                .drive(
                    "bare writes",
                    "/bare/customers",
                    per_round,
                    CONCURRENCY,
                    |_| None,
                )
                .await,
            target
                .drive(
                    "protected new writes",
                    "/api/customers",
                    per_round,
                    CONCURRENCY,
                    new_key,
                )
                .await,
            // The keys of this round's new writes again: every request is a replay.
            target
                .drive("replays", "/api/customers", per_round, CONCURRENCY, new_key)
                .await,
            target
                .drive(
                    "actix-idempotent new writes",
                    "/middleware/customers",
                    per_round,
                    CONCURRENCY,
                    |_| None,
                )
                .await,
        ];
        new_write_ratios.push(measured[1].throughput() / measured[0].throughput());
        if rows.is_empty() {
            rows.extend(measured);
        } else {
            for (total, row) in rows.iter_mut().zip(measured) {
                total.add(row);
            }
        }
    }
    let burst_key = format!("burst-{run}");
    rows.push(
        target
            .drive(
                "500-request same-key burst",
                "/api/customers",
                BURST,
                BURST,
                |_| Some(burst_key.clone()),
            )
            .await,
    );
    // The burst behind actix-idempotent comes from one client holding one session (its cache
    // is per session).
    let cookie = target.session_cookie().await;
    rows.push(
        target
            .drive_with_cookie(
                "actix-idempotent 500-request burst",
                "/middleware/customers",
                BURST,
                BURST,
                |_| Some(burst_key.clone()),
                Some(&cookie),
            )
            .await,
    );
    handle.stop(true).await;
    println!("{database}: done");
    Ok(Measured {
        rows,
        new_write_ratios,
    })
}

/// The operations measured against their bare twins: AccuBooks' cheapest write and three
/// heavier ones.
#[derive(Clone, Copy)]
enum Operation {
    CreateCustomer,
    CreateInvoice,
    CreatePayment,
    AdjustInventory,
}

impl Operation {
    const ALL: [Self; 4] = [
        Self::CreateCustomer,
        Self::CreateInvoice,
        Self::CreatePayment,
        Self::AdjustInventory,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::CreateCustomer => "createCustomer",
            Self::CreateInvoice => "createInvoice (3 lines)",
            Self::CreatePayment => "createPayment",
            Self::AdjustInventory => "adjustInventory",
        }
    }

    /// The table that gains one row per write: the count that proves the writes happened.
    fn table(self) -> &'static str {
        match self {
            Self::CreateCustomer => "customers",
            Self::CreateInvoice => "invoices",
            Self::CreatePayment => "payments",
            Self::AdjustInventory => "inventory_adjustments",
        }
    }

    /// Request `i`'s path under `prefix` (`/api` or `/bare`) and body. Payments and
    /// adjustments spread over many invoices and items, so that concurrent writes do not all
    /// queue on one row.
    fn request(self, prefix: &str, i: usize, fixtures: &Fixtures) -> (String, Value) {
        match self {
            Self::CreateCustomer => (
                format!("{prefix}/customers"),
                json!({ "name": "Bench Customer" }),
            ),
            Self::CreateInvoice => (
                format!("{prefix}/invoices"),
                json!({
                    "customer_id": fixtures.customer, "currency": "USD",
                    "lines": [
                        { "description": "Design", "quantity": 3, "unit_price_cents": 12_000 },
                        { "description": "Build", "quantity": 10, "unit_price_cents": 9_500 },
                        { "description": "Support", "quantity": 1, "unit_price_cents": 40_000 },
                    ],
                }),
            ),
            Self::CreatePayment => (
                format!("{prefix}/payments"),
                json!({
                    "invoice_id": fixtures.invoices[i % fixtures.invoices.len()],
                    "amount_cents": 1,
                }),
            ),
            Self::AdjustInventory => (
                format!(
                    "{prefix}/inventory/{}/adjustments",
                    fixtures.items[i % fixtures.items.len()]
                ),
                json!({ "delta": 1, "reason": "bench" }),
            ),
        }
    }
}

/// What the operations' requests refer to.
struct Fixtures {
    customer: String,
    invoices: Vec<String>,
    items: Vec<String>,
}

/// How many invoices and items the payments and adjustments spread over.
const FIXTURE_ROWS: usize = 64;
/// Requests per side (bare, protected) of one operation in one saturated round.
const OPERATION_REQUESTS: usize = 400;
/// Requests per side of one operation at rest (one client), in two interleaved halves.
const AT_REST_REQUESTS: usize = 200;

/// One operation, bare and protected: saturated and at rest.
struct OperationResult {
    operation: Operation,
    bare: Row,
    protected: Row,
    ratios: Vec<f64>,
    bare_at_rest: Row,
    protected_at_rest: Row,
}

impl Target {
    /// One protected write, which must succeed: its answer.
    async fn create(&self, path: &str, key: String, body: Value) -> Value {
        let mut response = Client::default()
            .post(format!("{}{path}", self.base))
            .insert_header(("authorization", format!("Bearer {}", self.token)))
            .insert_header(("idempotency-key", key))
            .send_json(&body)
            .await
            .expect("the server answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("a JSON answer")
    }

    /// Writes, through the protected API, the customer, the final invoices and the items
    /// that the operations' requests refer to.
    async fn fixtures(&self, run: &str) -> Fixtures {
        let customer = self
            .create(
                "/api/customers",
                format!("fx-{run}-c"),
                json!({ "name": "Payer" }),
            )
            .await["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        let mut invoices = Vec::new();
        let mut items = Vec::new();
        for n in 0..FIXTURE_ROWS {
            let invoice = self
                .create(
                    "/api/invoices",
                    format!("fx-{run}-i{n}"),
                    json!({ "customer_id": customer, "currency": "USD", "lines": [
                        { "description": "Retainer", "quantity": 1, "unit_price_cents": 1_000_000_000 },
                    ] }),
                )
                .await["id"]
                .as_str()
                .expect("an id")
                .to_owned();
            self.create(
                &format!("/api/invoices/{invoice}/finalize"),
                format!("fx-{run}-f{n}"),
                json!({}),
            )
            .await;
            invoices.push(invoice);
            let item = self
                .create(
                    "/api/inventory",
                    format!("fx-{run}-s{n}"),
                    json!({ "sku": format!("sku-{run}-{n}"), "name": "Widget" }),
                )
                .await["id"]
                .as_str()
                .expect("an id")
                .to_owned();
            items.push(item);
        }
        Fixtures {
            customer,
            invoices,
            items,
        }
    }

    /// Sends `requests` requests of `operation` under `prefix`, `concurrency` at a time, each
    /// with a new key `{keys}-{i}` when `keys` is given.
    async fn drive_operation(
        &self,
        operation: Operation,
        prefix: &str,
        keys: Option<&str>,
        requests: usize,
        concurrency: usize,
        fixtures: &Fixtures,
    ) -> Row {
        self.send_all(
            operation.name(),
            operation.table(),
            requests,
            concurrency,
            |i| {
                let (path, body) = operation.request(prefix, i, fixtures);
                Request {
                    path,
                    key: keys.map(|keys| format!("{keys}-{i}")),
                    cookie: None,
                    body,
                }
            },
        )
        .await
    }
}

/// Measures every [`Operation`] on one database against its bare twin: saturated (fixed
/// concurrency, interleaved rounds) and at rest (one client, interleaved halves).
async fn measure_operations(
    database: &str,
    url: &str,
) -> Result<Vec<OperationResult>, Box<dyn std::error::Error>> {
    let (target, handle) = Target::start(url, StoreConfig::default()).await?;
    let run = format!("op{:x}", std::process::id());
    let fixtures = target.fixtures(&run).await;
    let mut results = Vec::new();
    for operation in Operation::ALL {
        let tag = |side: &str| format!("{run}-{}-{side}", operation.table());
        // Warm up both paths.
        target
            .drive_operation(operation, "/bare", None, 100, CONCURRENCY, &fixtures)
            .await;
        target
            .drive_operation(
                operation,
                "/api",
                Some(&tag("warm")),
                100,
                CONCURRENCY,
                &fixtures,
            )
            .await;
        let (mut bare, mut protected, mut ratios): (Option<Row>, Option<Row>, Vec<f64>) =
            (None, None, Vec::new());
        for round in 0..ROUNDS {
            let b = target
                .drive_operation(
                    operation,
                    "/bare",
                    None,
                    OPERATION_REQUESTS,
                    CONCURRENCY,
                    &fixtures,
                )
                .await;
            let p = target
                .drive_operation(
                    operation,
                    "/api",
                    Some(&tag(&format!("r{round}"))),
                    OPERATION_REQUESTS,
                    CONCURRENCY,
                    &fixtures,
                )
                .await;
            ratios.push(p.throughput() / b.throughput());
            merge(&mut bare, b);
            merge(&mut protected, p);
        }
        let (mut bare_at_rest, mut protected_at_rest) = (None, None);
        for half in 0..2 {
            let b = target
                .drive_operation(operation, "/bare", None, AT_REST_REQUESTS / 2, 1, &fixtures)
                .await;
            let p = target
                .drive_operation(
                    operation,
                    "/api",
                    Some(&tag(&format!("rest{half}"))),
                    AT_REST_REQUESTS / 2,
                    1,
                    &fixtures,
                )
                .await;
            merge(&mut bare_at_rest, b);
            merge(&mut protected_at_rest, p);
        }
        results.push(OperationResult {
            operation,
            bare: bare.expect("at least one round"),
            protected: protected.expect("at least one round"),
            ratios,
            bare_at_rest: bare_at_rest.expect("two halves"),
            protected_at_rest: protected_at_rest.expect("two halves"),
        });
    }
    handle.stop(true).await;
    println!("{database}: operations done");
    Ok(results)
}

/// Requests per side of one operation in the count of statements and round trips.
const WIRE_REQUESTS: u64 = 200;

/// What `WIRE_REQUESTS` requests of an operation send PostgreSQL: its bare twin, protected new
/// writes, and replays of them (with the audit rows written after the answers).
struct WireResult {
    operation: Operation,
    bare: Wire,
    new: Wire,
    replay: Wire,
}

impl Target {
    /// Sends `WIRE_REQUESTS` requests of `operation` one at a time (request `i` with key
    /// `{keys}-{i}` when `keys` is given), waits for their audit rows, and returns what the
    /// counter saw.
    async fn wire(
        &self,
        counter: &WireCounter,
        operation: Operation,
        prefix: &str,
        keys: Option<&str>,
        fixtures: &Fixtures,
    ) -> Wire {
        counter.take();
        for i in 0..WIRE_REQUESTS as usize {
            let (path, body) = operation.request(prefix, i, fixtures);
            let mut sending = Client::default()
                .post(format!("{}{path}", self.base))
                .insert_header(("authorization", format!("Bearer {}", self.token)));
            if let Some(keys) = keys {
                sending = sending.insert_header(("idempotency-key", format!("{keys}-{i}")));
            }
            let response = sending.send_json(&body).await.expect("the server answers");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
        }
        self.store.flush_audit().await;
        counter.take()
    }
}

/// Counts the statements and round trips of every operation on PostgreSQL at `url`, through a
/// [`WireCounter`] (one client; the counts are exact, whatever the machine's load).
async fn count_wire(url: &str) -> Result<Vec<WireResult>, Box<dyn std::error::Error>> {
    let options: PgConnectOptions = url.parse()?;
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or("the PostgreSQL host has no address")?;
    let counter = WireCounter::start(upstream).await?;
    // The same database through the counter, in plaintext so that it can read the messages.
    let at = format!("@{host}:{port}/");
    let proxied = if url.contains(&at) {
        url.replacen(&at, &format!("@127.0.0.1:{}/", counter.port()), 1)
    } else {
        return Err(
            format!("give --postgres as postgres://user@host:port/database, not {url}").into(),
        );
    };
    let separator = if proxied.contains('?') { '&' } else { '?' };
    let proxied = format!("{proxied}{separator}sslmode=disable");
    let (target, handle) = Target::start(&proxied, StoreConfig::default()).await?;
    let run = format!("wire{:x}", std::process::id());
    let fixtures = target.fixtures(&run).await;
    let mut results = Vec::new();
    for operation in Operation::ALL {
        let keys = format!("{run}-{}", operation.table());
        // Warm the statement caches of both paths first.
        target
            .wire(&counter, operation, "/bare", None, &fixtures)
            .await;
        target
            .wire(
                &counter,
                operation,
                "/api",
                Some(&format!("{keys}-warm")),
                &fixtures,
            )
            .await;
        let bare = target
            .wire(&counter, operation, "/bare", None, &fixtures)
            .await;
        let new = target
            .wire(&counter, operation, "/api", Some(&keys), &fixtures)
            .await;
        let replay = target
            .wire(&counter, operation, "/api", Some(&keys), &fixtures)
            .await;
        results.push(WireResult {
            operation,
            bare,
            new,
            replay,
        });
    }
    handle.stop(true).await;
    println!("PostgreSQL: statements and round trips counted");
    Ok(results)
}

fn report_wire(results: &[WireResult]) -> (String, Value) {
    let mut markdown = String::from(
        "| operation | bare: statements | round trips | protected new write: statements | round trips | replay: statements | round trips |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut rows = Vec::new();
    let per_request = |count: u64| count as f64 / WIRE_REQUESTS as f64;
    for result in results {
        let sides = [result.bare, result.new, result.replay];
        let _ = write!(markdown, "| {} |", result.operation.name());
        for side in sides {
            let _ = write!(
                markdown,
                " {:.1} | {:.1} |",
                per_request(side.statements),
                per_request(side.round_trips)
            );
        }
        markdown.push('\n');
        let [bare, new, replay] = sides.map(|side| {
            json!({
                "statements": per_request(side.statements),
                "round_trips": per_request(side.round_trips),
            })
        });
        rows.push(json!({
            "operation": result.operation.name(),
            "bare": bare,
            "new": new,
            "replay": replay,
        }));
    }
    (markdown, Value::Array(rows))
}

fn merge(total: &mut Option<Row>, row: Row) {
    match total {
        Some(total) => total.add(row),
        None => *total = Some(row),
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// The operations' table, and its JSON.
fn report_operations(results: &[(&str, Vec<OperationResult>)]) -> (String, Value) {
    let mut markdown = format!(
        "| database | operation | bare (req/s) | protected new writes (req/s) | × bare (median of {ROUNDS} rounds) | rounds | at rest: bare p50 (ms) | protected p50 (ms) | idem adds (ms) | rows written (bare + protected) |\n\
         | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n"
    );
    let mut rows = Vec::new();
    for (database, operations) in results {
        for result in operations {
            let ratio = median(&result.ratios);
            let added = result.protected_at_rest.p(0.5) - result.bare_at_rest.p(0.5);
            let written = result.bare.rows_written
                + result.protected.rows_written
                + result.bare_at_rest.rows_written
                + result.protected_at_rest.rows_written;
            let _ = writeln!(
                markdown,
                "| {database} | {} | {:.0} | {:.0} | {ratio:.2} | {} | {:.2} | {:.2} | {added:+.2} | {written} |",
                result.operation.name(),
                result.bare.throughput(),
                result.protected.throughput(),
                result
                    .ratios
                    .iter()
                    .map(|ratio| format!("{ratio:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                result.bare_at_rest.p(0.5),
                result.protected_at_rest.p(0.5),
            );
            rows.push(json!({
                "database": database, "operation": result.operation.name(),
                "bare_rps": result.bare.throughput(), "protected_rps": result.protected.throughput(),
                "ratio_median": ratio, "ratios": result.ratios,
                "at_rest_bare_p50_ms": result.bare_at_rest.p(0.5),
                "at_rest_protected_p50_ms": result.protected_at_rest.p(0.5),
                "at_rest_added_ms": added, "rows_written": written,
            }));
        }
    }
    (markdown, json!(rows))
}

fn report(results: &[(&str, Measured)]) -> (String, Value) {
    let mut markdown = String::from(
        "| database | scenario | requests | throughput (req/s) | × bare | p50 (ms) | × bare | p99 (ms) | × bare | rows written |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut json_rows = Vec::new();
    for (database, Measured { rows, .. }) in results {
        let bare = &rows[0];
        for row in rows {
            let _ = writeln!(
                markdown,
                "| {database} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                row.name,
                row.requests,
                row.throughput(),
                row.throughput() / bare.throughput(),
                row.p(0.5),
                row.p(0.5) / bare.p(0.5),
                row.p(0.99),
                row.p(0.99) / bare.p(0.99),
                row.rows_written,
            );
            json_rows.push(json!({
                "database": database, "scenario": row.name, "requests": row.requests,
                "throughput_rps": row.throughput(), "throughput_ratio_to_bare": row.throughput() / bare.throughput(),
                "p50_ms": row.p(0.5), "p99_ms": row.p(0.99),
                "p50_ratio_to_bare": row.p(0.5) / bare.p(0.5), "p99_ratio_to_bare": row.p(0.99) / bare.p(0.99),
                "rows_written": row.rows_written,
            }));
        }
    }
    let mut rounds = serde_json::Map::new();
    for (database, measured) in results {
        let ratios = &measured.new_write_ratios;
        let _ = writeln!(
            markdown,
            "\n{database}: protected new writes ÷ bare writes in each of the {ROUNDS} rounds: {}.",
            ratios
                .iter()
                .map(|ratio| format!("{ratio:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rounds.insert((*database).to_owned(), json!(ratios));
    }
    (
        markdown,
        json!({
            "concurrency": CONCURRENCY,
            "rounds": ROUNDS,
            "rows": json_rows,
            "new_write_ratio_per_round": rounds,
        }),
    )
}

const USAGE: &str = "usage: bench [--postgres URL] [--mysql URL]
  --postgres URL   also measure PostgreSQL at URL (the database must exist)
  --mysql URL      also measure MySQL or MariaDB at URL (the database must exist)
  --help           this text
SQLite always runs (with synchronous = FULL, idem's default, and again with NORMAL);
actix-idempotent's rows need Redis on 127.0.0.1:6379.";

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let (mut postgres, mut mysql) = (None, None);
    for pair in args.chunks(2) {
        match pair {
            [flag, url] if flag == "--postgres" => postgres = Some(url.clone()),
            [flag, url] if flag == "--mysql" => mysql = Some(url.clone()),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    // The servers measured besides SQLite, in the tables' order.
    let servers: Vec<(&str, &String)> = [("PostgreSQL", &postgres), ("MySQL", &mysql)]
        .into_iter()
        .filter_map(|(name, url)| Some((name, url.as_ref()?)))
        .collect();

    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut results = vec![(
        "SQLite",
        measure("SQLite", &sqlite, StoreConfig::default()).await?,
    )];
    for &(name, url) in &servers {
        results.push((name, measure(name, url, StoreConfig::default()).await?));
    }
    // Every operation against its bare twin, saturated and at rest.
    let mut operations = vec![("SQLite", measure_operations("SQLite", &sqlite).await?)];
    for &(name, url) in &servers {
        operations.push((name, measure_operations(name, url).await?));
    }
    // What durability costs: the same run with synchronous = NORMAL, which a power loss can
    // undo answered writes under.
    let normal_sqlite = format!("sqlite://{}", dir.path().join("normal.db").display());
    let normal = measure(
        "SQLite",
        &normal_sqlite,
        StoreConfig::default().with_sqlite_synchronous(SqliteSynchronous::Normal),
    )
    .await?;

    // The same writes with a Prometheus recorder and a tracing subscriber installed (logging
    // every idem.write span to a sink): what metrics and spans add. The audit row is part of
    // every write above; it is not optional.
    idem_actix::prometheus::install_recorder()?;
    tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .init();
    let observed_sqlite = format!("sqlite://{}", dir.path().join("observed.db").display());
    results.push((
        "SQLite, observed",
        measure("SQLite", &observed_sqlite, StoreConfig::default()).await?,
    ));
    for &(name, url) in &servers {
        let observed = match name {
            "PostgreSQL" => "PostgreSQL, observed",
            _ => "MySQL, observed",
        };
        results.push((observed, measure(name, url, StoreConfig::default()).await?));
    }
    results.push(("SQLite, synchronous=NORMAL", normal));

    let (mut markdown, json) = report(&results);
    let (full, normal) = (&results[0].1.rows, &results[results.len() - 1].1.rows);
    // Row 1 is "protected new writes".
    let _ = writeln!(
        markdown,
        "\nSQLite: synchronous=FULL (the default) runs protected new writes at {:.2}× the throughput of synchronous=NORMAL, and adds {:+.2} ms to their median.",
        full[1].throughput() / normal[1].throughput(),
        full[1].p(0.5) - normal[1].p(0.5),
    );
    let plain = (results.len() - 1) / 2;
    for ((database, measured), (_, observed)) in
        results[..plain].iter().zip(&results[plain..2 * plain])
    {
        let (rows, observed) = (&measured.rows, &observed.rows);
        // Row 1 is "protected new writes" in both passes.
        let _ = writeln!(
            markdown,
            "\n{database}: metrics + tracing add {:+.2} ms to the median protected new write ({:.2}× its p50 without them).",
            observed[1].p(0.5) - rows[1].p(0.5),
            observed[1].p(0.5) / rows[1].p(0.5),
        );
    }
    let (operations_markdown, operations_json) = report_operations(&operations);
    let _ = write!(
        markdown,
        "\nEvery operation against its bare twin (the same statements in one transaction, no key), at {CONCURRENCY} concurrent clients and at rest (one client):\n\n{operations_markdown}"
    );
    let mut json = json!({ "scenarios": json, "operations": operations_json });
    if let Some(url) = &postgres {
        let (wire_markdown, wire_json) = report_wire(&count_wire(url).await?);
        let _ = write!(
            markdown,
            "\nWhat one request sends PostgreSQL, counted by a proxy (statements run, and round trips the client waits for; sqlx's ping when a pooled connection is handed out is a round trip; a protected request also looks its token up, which the bare twin does not; a replay's audit row is its share of a batch):\n\n{wire_markdown}"
        );
        json["wire"] = wire_json;
    }
    println!("\n{markdown}");
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/results.md", &markdown)?;
    std::fs::write(
        "target/bench/results.json",
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("written to target/bench/results.md and target/bench/results.json");
    Ok(())
}
