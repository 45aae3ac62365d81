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
//! and at rest (one client), where it gives the median milliseconds idem adds to one write.
//! Another ([`answers`]) gives what each KiB of a stored answer adds to a new write and a
//! replay. On
//! PostgreSQL a last table counts, through a proxy ([`wire`]), the statements and round trips
//! each request sends: bare, protected new write, replay. The machine is small and shared: read
//! the ratios, not the absolute numbers; the counts are exact.
//!
//! `bench --scale --postgres URL` measures instead what a year of traffic costs ([`scale`]): a
//! database loaded with millions of keys and audit rows beside a fresh one, side by side, with
//! the loaded tables' sizes and the plans of the protocol's statements on them.

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
    InventoryAdjustment, NewAdjustment, NewCustomer, NewInvoice, NewPayment, Write,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Any, Pool};
use uuid::Uuid;

mod answers;
mod counts;
mod operations;
mod scale;
mod scenarios;
mod target;
mod twins;
mod wire;

use answers::{measure_answer_sizes, report_answer_sizes};
use counts::{count_wire, report_wire};
use operations::{Fixtures, Operation, measure_operations, report_operations};
use scale::{Scale, measure_scale};
use scenarios::{Request, Row, measure, merge, report};
use target::Target;
use twins::{adjust_inventory_bare, create_bare};
use wire::{Wire, WireCounter};

/// Requests per measured scenario, in how many interleaved rounds, and how many run at once.
const REQUESTS: usize = 2000;
const ROUNDS: usize = 5;
const CONCURRENCY: usize = 32;
const BURST: usize = 500;

const USAGE: &str = "usage: bench [--postgres URL] [--mysql URL]
       bench --scale --postgres URL [--keys N] [--audit-rows N] [--pending-events N]
                                    [--purge-batch N] [--purge-pause-ms N]
  --postgres URL   also measure PostgreSQL at URL (the database must exist)
  --mysql URL      also measure MySQL or MariaDB at URL (the database must exist)
  --scale          instead, a database loaded with --keys keys (10000000), --audit-rows
                   audit rows (50000000) and --pending-events outbox events (1000000) beside a
                   fresh one, on the server of --postgres: it creates idem_scale_fresh and
                   idem_scale_loaded there, and keeps the loaded one; its purge while
                   serving runs unpaced, then at --purge-batch rows a batch and
                   --purge-pause-ms between batches (the store's defaults: 1000, 20)
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
    let scaled = args.first().is_some_and(|arg| arg == "--scale");
    let mut scale = Scale {
        keys: 10_000_000,
        audit_rows: 50_000_000,
        pending_events: 1_000_000,
        purge_pace: idem_actix::PurgePace::default(),
    };
    for pair in args[usize::from(scaled)..].chunks(2) {
        match pair {
            [flag, url] if flag == "--postgres" => postgres = Some(url.clone()),
            [flag, url] if flag == "--mysql" && !scaled => mysql = Some(url.clone()),
            [flag, n] if flag == "--keys" && scaled => scale.keys = n.parse()?,
            [flag, n] if flag == "--audit-rows" && scaled => scale.audit_rows = n.parse()?,
            [flag, n] if flag == "--pending-events" && scaled => {
                scale.pending_events = n.parse()?
            }
            [flag, n] if flag == "--purge-batch" && scaled => {
                scale.purge_pace = scale.purge_pace.with_batch_rows(n.parse()?)
            }
            [flag, n] if flag == "--purge-pause-ms" && scaled => {
                scale.purge_pace = scale
                    .purge_pace
                    .with_pause(Duration::from_millis(n.parse()?))
            }
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if scaled {
        let Some(url) = postgres else {
            eprintln!("{USAGE}");
            std::process::exit(2);
        };
        let markdown = measure_scale(&url, &scale).await?;
        println!("\n{markdown}");
        std::fs::create_dir_all("target/bench")?;
        std::fs::write("target/bench/scale.md", &markdown)?;
        println!("written to target/bench/scale.md");
        return Ok(());
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
    // What an answer's size costs, at rest.
    let mut answer_sizes = vec![("SQLite", measure_answer_sizes(&sqlite).await?)];
    for &(name, url) in &servers {
        answer_sizes.push((name, measure_answer_sizes(url).await?));
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
    let (answers_markdown, answers_json) = report_answer_sizes(&answer_sizes);
    let _ = write!(markdown, "\n{answers_markdown}");
    let mut json = json!({
        "scenarios": json,
        "operations": operations_json,
        "answer_sizes": answers_json,
    });
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
