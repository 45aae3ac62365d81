//! The AccuBooks server: `cargo run --example accubooks [-- OPTIONS]` (`--help` lists them).
//!
//! Serves on `127.0.0.1:8080` from `sqlite://accubooks.db` unless told otherwise
//! (`--database-url`, or `DATABASE_URL`, takes `sqlite://…`, `postgres://…` or `mysql://…`).
//! Prometheus scrapes `GET /metrics`; orchestrators probe `GET /healthz` and `GET /readyz`.
//!
//! On SIGTERM or Ctrl-C it shuts down in bounded time: `/readyz` answers 503 for the drain
//! delay, then the server stops accepting, in-flight writes finish (or, past the bound, are
//! cut and roll back), the workflow dispatcher and the maintenance task stop between two
//! events or batches, every queued audit row is written, and the process exits 0. A second
//! signal cuts in-flight requests at once (they roll back) and exits 1.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpServer};
use idem_actix::{Lifecycle, Stopped, StoreConfig};
use idem_examples::accubooks::AccuBooks;

const USAGE: &str = "usage: accubooks [OPTIONS]
  --bind ADDR               where to listen (default 127.0.0.1:8080; port 0 picks a free one)
  --database-url URL        sqlite://FILE, postgres://USER@HOST/DB or mysql://USER@HOST/DB
                            (default: $DATABASE_URL, else sqlite://accubooks.db)
  --pooler-url URL          serve through this PgBouncer in transaction mode (postgres://…);
                            --database-url, the database itself, is used to migrate
  --shutdown-timeout SECS   the bound on a shutdown, from the signal to the exit (default 30)
  --drain-delay SECS        how long /readyz answers 503 before the server stops accepting
                            (default 0; set it to your load balancer's probe interval)
  --help                    this text";

struct Options {
    bind: String,
    database_url: String,
    pooler_url: Option<String>,
    shutdown_timeout: Duration,
    drain_delay: Duration,
}

/// What the command line asked for: options to serve with, or the usage to print.
enum Command {
    Serve(Options),
    Help,
}

fn command() -> Result<Command, String> {
    let mut options = Options {
        bind: "127.0.0.1:8080".to_owned(),
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://accubooks.db".to_owned()),
        pooler_url: None,
        shutdown_timeout: Duration::from_secs(30),
        drain_delay: Duration::ZERO,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if matches!(arg.as_str(), "--help" | "-h") {
            return Ok(Command::Help);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
        let seconds = |value: &str| {
            value
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| format!("{arg} takes whole seconds, not {value:?}\n{USAGE}"))
        };
        match arg.as_str() {
            "--bind" => options.bind = value,
            "--database-url" => options.database_url = value,
            "--pooler-url" => options.pooler_url = Some(value),
            "--shutdown-timeout" => options.shutdown_timeout = seconds(&value)?,
            "--drain-delay" => options.drain_delay = seconds(&value)?,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(Command::Serve(options))
}

#[actix_web::main]
async fn main() -> ExitCode {
    // Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org).
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(colour)
        .init();
    let options = match command() {
        Ok(Command::Serve(options)) => options,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match serve(options).await {
        Ok(stopped) => stopped.exit_code(),
        Err(error) => {
            eprintln!("accubooks: {}", idem_actix::ErrorChain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options) -> Result<Stopped, Box<dyn std::error::Error>> {
    // Bind first: a taken port fails before anything is migrated.
    let listener = TcpListener::bind(&options.bind)?;
    let metrics = idem_actix::prometheus::install_recorder()?;
    let accubooks = match &options.pooler_url {
        None => AccuBooks::open(&options.database_url, StoreConfig::default()).await?,
        Some(pooler_url) => {
            AccuBooks::open_through_pooler(
                &options.database_url,
                pooler_url,
                StoreConfig::default(),
            )
            .await?
        }
    }
    .with_metrics(metrics);
    println!("AccuBooks on {}", redact(&options.database_url));
    if let Some(pooler_url) = &options.pooler_url {
        println!(
            "served through the transaction pooler at {}",
            redact(pooler_url)
        );
    }
    println!("{:<24} {:<10} {:<7} path", "operation", "class", "method");
    for operation in accubooks.operations() {
        let route = operation
            .route()
            .expect("every AccuBooks operation is an HTTP route");
        println!(
            "{:<24} {:<10} {:<7} {}",
            operation.name(),
            operation.class(),
            route.method,
            route.path
        );
    }

    let app = accubooks.clone();
    let server = HttpServer::new(move || {
        let app = app.clone();
        App::new()
            .wrap(app.mutation_gate())
            .configure(move |config| app.configure(config))
    })
    .listen(listener)?;
    for address in server.addrs() {
        println!("listening on http://{address}");
    }
    tracing::info!(bind = %options.bind, "ready to serve");
    Ok(Lifecycle::new(accubooks.store().clone())
        .with_health(accubooks.health().clone())
        .with_outbox(accubooks.workflows(), Duration::from_secs(5))
        .with_maintenance(accubooks.maintenance())
        .with_shutdown_timeout(options.shutdown_timeout)
        .with_drain_delay(options.drain_delay)
        .run(server)
        .await?)
}

/// The URL without its password, for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
