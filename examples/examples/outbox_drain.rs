//! How fast a backed-up outbox drains: a backlog of events, each its own write, delivered to a
//! handler that takes 2 ms (a webhook on the same network), by one dispatcher delivering one
//! write at a time, by one dispatcher at its default parallelism, and by two dispatchers (two
//! processes' worth) sharing the outbox, side by side in one run, on SQLite, and on PostgreSQL
//! and MySQL/MariaDB when given.
//!
//! ```text
//! cargo run --release --example outbox_drain
//! cargo run --release --example outbox_drain -- --postgres postgres://postgres@127.0.0.1:5432/idem_bench
//! cargo run --release --example outbox_drain -- --mysql 'mysql://root@localhost/idem_bench?socket=/run/mysqld/mysqld.sock'
//! ```
//!
//! The database given must be one the benchmark may fill: it migrates it and empties its
//! `idem_outbox` before each scenario. Prints a Markdown table: events per second, and each
//! scenario's ratio to one write at a time and to the dispatcher before it drained batch after
//! batch (one batch of 100 per 5 s poll: 20 events per second, whatever the handler). The
//! machine is small and shared: read the ratios, not the absolute numbers.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use idem_actix::positional;
use idem_actix::{IdempotencyStore, OutboxDispatcher, StoreConfig};
use sqlx::Any;

/// Events in each scenario's backlog.
const BACKLOG: usize = 10_000;
/// What one delivery waits, as a webhook on the same network would.
const HANDLER: Duration = Duration::from_millis(2);
/// Rows per `INSERT` when the backlog is loaded.
const CHUNK: usize = 500;
/// The dispatcher before it drained batch after batch: one batch of 100 per 5 s poll.
const ONE_BATCH_PER_POLL: f64 = 100.0 / 5.0;

const USAGE: &str = "usage: outbox_drain [--postgres URL] [--mysql URL]
  --postgres URL   also measure PostgreSQL at URL (the database must exist; its outbox is emptied)
  --mysql URL      also measure MySQL or MariaDB at URL (the database must exist; its outbox is emptied)
  --help           this text";

/// How the backlog is drained.
#[derive(Clone, Copy)]
enum Scenario {
    /// One dispatcher delivering one write at a time.
    OneAtATime,
    /// One dispatcher at its default parallelism.
    Default,
    /// Two dispatchers, as two processes would run, at their default parallelism.
    TwoDispatchers,
}

impl Scenario {
    const ALL: [Self; 3] = [Self::OneAtATime, Self::Default, Self::TwoDispatchers];

    fn name(self) -> &'static str {
        match self {
            Self::OneAtATime => "one dispatcher, one write at a time",
            Self::Default => "one dispatcher, 8 writes at a time (default)",
            Self::TwoDispatchers => "two dispatchers, 8 writes at a time each",
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut databases = vec![(
        "SQLite",
        format!("sqlite://{}", dir.path().join("drain.db").display()),
    )];
    for pair in args.chunks(2) {
        match pair {
            [flag, url] if flag == "--postgres" => databases.push(("PostgreSQL", url.clone())),
            [flag, url] if flag == "--mysql" => databases.push(("MySQL", url.clone())),
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let mut table = String::from(
        "| database | scenario | events/s | × one at a time | × one batch per poll |\n\
         | --- | --- | ---: | ---: | ---: |\n",
    );
    for (database, url) in databases {
        let store = IdempotencyStore::<Any>::connect(&url, StoreConfig::default()).await?;
        store.migrate().await?;
        let mut one_at_a_time = None;
        for scenario in Scenario::ALL {
            load_backlog(&store, url.starts_with("mysql:")).await?;
            let rate = drain(&store, scenario).await?;
            let baseline = *one_at_a_time.get_or_insert(rate);
            eprintln!("{database}: {}: {rate:.0} events/s", scenario.name());
            let _ = writeln!(
                table,
                "| {database} | {} | {rate:.0} | {:.2} | {:.1} |",
                scenario.name(),
                rate / baseline,
                rate / ONE_BATCH_PER_POLL,
            );
        }
    }
    println!(
        "\nA backlog of {BACKLOG} events, one per write, each delivery taking {} ms:\n\n{table}",
        HANDLER.as_millis()
    );
    Ok(())
}

/// Empties the outbox and fills it with [`BACKLOG`] due events, each of its own write, in
/// MySQL's words (`?`) or the others' (`$n`).
async fn load_backlog(store: &IdempotencyStore<Any>, mysql: bool) -> Result<(), sqlx::Error> {
    let pool = store.pool();
    sqlx::query("DELETE FROM idem_outbox").execute(pool).await?;
    let mut numbered = String::from(
        "INSERT INTO idem_outbox
         (event_id, tenant_id, operation, entity_id, topic, payload, sequence_in_write, created_at_ms)
         VALUES ",
    );
    for row in 0..CHUNK {
        let n = row * 4;
        let separator = if row == 0 { "" } else { ", " };
        let _ = write!(
            numbered,
            "{separator}(${}, 'bench', 'triggerWorkflow', ${}, 'drain', ${}, 1, ${})",
            n + 1,
            n + 2,
            n + 3,
            n + 4
        );
    }
    let insert = if mysql {
        positional(&numbered)
    } else {
        numbered
    };
    for chunk in 0..BACKLOG / CHUNK {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(insert.clone())).persistent(false);
        for row in 0..CHUNK {
            query = query
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(b"{}".to_vec())
                .bind(i64::try_from(chunk * CHUNK + row).unwrap_or(i64::MAX));
        }
        query.execute(pool).await?;
    }
    Ok(())
}

/// Drains the backlog as `scenario` says: events delivered per second.
async fn drain(
    store: &IdempotencyStore<Any>,
    scenario: Scenario,
) -> Result<f64, Box<dyn std::error::Error>> {
    let delivered = Arc::new(AtomicUsize::new(0));
    let dispatcher = || {
        let delivered = delivered.clone();
        OutboxDispatcher::new(store.clone()).on("drain", move |_event| {
            let delivered = delivered.clone();
            async move {
                tokio::time::sleep(HANDLER).await;
                delivered.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
    };
    let started = Instant::now();
    match scenario {
        Scenario::OneAtATime => {
            dispatcher().with_parallelism(1).dispatch_pending().await?;
        }
        Scenario::Default => {
            dispatcher().dispatch_pending().await?;
        }
        Scenario::TwoDispatchers => {
            let (one, two) = (dispatcher(), dispatcher());
            let (first, second) = tokio::join!(one.dispatch_pending(), two.dispatch_pending());
            first?;
            second?;
        }
    }
    let elapsed = started.elapsed();
    let delivered = delivered.load(Ordering::Relaxed);
    if delivered != BACKLOG {
        return Err(format!("{delivered} of {BACKLOG} events delivered").into());
    }
    Ok(BACKLOG as f64 / elapsed.as_secs_f64())
}
