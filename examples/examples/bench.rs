//! What exactly-once costs: AccuBooks' protected `createCustomer` against a bare twin (the same
//! INSERT in the same kind of transaction, with no key), side by side in one run, on SQLite and
//! on PostgreSQL.
//!
//! ```text
//! cargo run --release --example bench -- --help
//! cargo run --release --example bench                       # SQLite only
//! cargo run --release --example bench -- --postgres postgres://postgres@127.0.0.1:5432/idem_bench
//! ```
//!
//! Prints a Markdown table (throughput and p50/p99 latency of bare writes, protected new writes,
//! replays and a 500-request same-key burst, each with its ratio to bare) and writes it, with a
//! JSON copy for tracking over time, to `target/bench/`. The same writes also run behind
//! `actix-idempotent` (sessions in the Redis at `127.0.0.1:6379`), the middleware a user would
//! otherwise pick; its rows report how many rows its same-key burst wrote. The steady scenarios
//! run in interleaved rounds and the table adds each round's ratio of protected new writes to
//! bare writes. The machine is small and shared: read the ratios, not the absolute numbers.

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
use idem_actix::{StoreConfig, Tenant};
use idem_examples::accubooks::AccuBooks;
use serde_json::{Value, json};
use sqlx::{Any, Pool};

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
    POST "/middleware/customers",
    reason = "the benchmark's rival: the same write behind another crate's idempotency middleware"
);

/// The bare twin of `createCustomer`: the same row, the same transaction, no idempotency.
async fn create_customer_bare(
    pool: web::Data<Pool<Any>>,
    tenant: Tenant,
    customer: web::Json<Value>,
) -> actix_web::Result<HttpResponse> {
    let id = uuid::Uuid::new_v4().to_string();
    let name = customer["name"].as_str().unwrap_or("anonymous").to_owned();
    let mut tx = pool
        .begin()
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    sqlx::query("INSERT INTO customers (id, company_id, name, email, created_at_ms) VALUES ($1, $2, $3, NULL, 0)")
        .bind(&id)
        .bind(tenant.0.as_str())
        .bind(&name)
        .execute(&mut *tx)
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    tx.commit()
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    Ok(HttpResponse::Created().json(json!({ "id": id, "name": name, "email": null })))
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
    pool: Pool<Any>,
    company: String,
}

impl Target {
    async fn start(
        url: &str,
        config: StoreConfig,
    ) -> Result<(Self, actix_web::dev::ServerHandle), Box<dyn std::error::Error>> {
        let accubooks = AccuBooks::open(url, config).await?;
        let pool = accubooks.store().pool().clone();
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
            pool,
        };
        Ok((target, handle))
    }

    async fn customers(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM customers WHERE company_id = $1")
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
        let client = Client::builder()
            .connector(awc::Connector::new().limit(concurrency))
            .timeout(Duration::from_secs(60))
            .finish();
        let before = self.customers().await;
        let started = Instant::now();
        let latencies: Vec<u64> = futures_util::stream::iter(0..requests)
            .map(|i| {
                let mut request = client
                    .post(format!("{}{path}", self.base))
                    .insert_header(("authorization", format!("Bearer {}", self.token)));
                if let Some(key) = key(i) {
                    request = request.insert_header(("idempotency-key", key));
                }
                if let Some(cookie) = cookie {
                    request = request.insert_header(("cookie", cookie.to_owned()));
                }
                async move {
                    let sent = Instant::now();
                    let mut response = request
                        .send_json(&json!({ "name": "Bench Customer" }))
                        .await
                        .expect("the server answers");
                    let _ = response.body().await;
                    assert!(
                        response.status().is_success(),
                        "{name}: {}",
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
            rows_written: self.customers().await - before,
        }
    }
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

const USAGE: &str = "usage: bench [--postgres URL]
  --postgres URL   also measure PostgreSQL at URL (the database must exist)
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
    let postgres = match args.as_slice() {
        [] => None,
        [flag, url] if flag == "--postgres" => Some(url.clone()),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };

    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    let mut results = vec![(
        "SQLite",
        measure("SQLite", &sqlite, StoreConfig::default()).await?,
    )];
    if let Some(url) = &postgres {
        results.push((
            "PostgreSQL",
            measure("PostgreSQL", url, StoreConfig::default()).await?,
        ));
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
    if let Some(url) = &postgres {
        results.push((
            "PostgreSQL, observed",
            measure("PostgreSQL", url, StoreConfig::default()).await?,
        ));
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
