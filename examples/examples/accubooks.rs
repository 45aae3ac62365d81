//! The AccuBooks server: `cargo run --example accubooks [-- --bind ADDR --database-url URL]`.
//!
//! Serves on `127.0.0.1:8080` from `sqlite://accubooks.db` unless told otherwise
//! (`--database-url`, or `DATABASE_URL`, takes `sqlite://…` or `postgres://…`). Stops cleanly
//! on SIGINT or SIGTERM. Prometheus scrapes `GET /metrics`.

use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpServer};
use idem_actix::StoreConfig;
use idem_examples::accubooks::AccuBooks;

const USAGE: &str = "usage: accubooks [--bind ADDR] [--database-url URL]
  --bind ADDR          where to listen (default 127.0.0.1:8080)
  --database-url URL   sqlite://FILE or postgres://USER@HOST/DB (default: $DATABASE_URL, else sqlite://accubooks.db)";

struct Options {
    bind: String,
    database_url: String,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        bind: "127.0.0.1:8080".to_owned(),
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://accubooks.db".to_owned()),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--bind" => &mut options.bind,
            "--database-url" => &mut options.database_url,
            "--help" | "-h" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        };
        *target = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
    }
    Ok(options)
}

#[actix_web::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match serve(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("accubooks: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = idem_actix::prometheus::install_recorder()?;
    let accubooks = AccuBooks::open(&options.database_url, StoreConfig::default())
        .await?
        .with_metrics(metrics);
    println!("AccuBooks on {}", redact(&options.database_url));
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

    let workflows = actix_web::rt::spawn(accubooks.workflows().run(Duration::from_secs(5)));
    let app = accubooks.clone();
    let server = HttpServer::new(move || {
        let app = app.clone();
        App::new().configure(move |config| app.configure(config))
    })
    .bind(&options.bind)?;
    for address in server.addrs() {
        println!("listening on http://{address}");
    }
    tracing::info!(bind = %options.bind, "ready to serve");
    server.run().await?;
    workflows.abort();
    accubooks.store().flush_audit().await;
    tracing::info!("stopped");
    Ok(())
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
