//! `idem`, the operator's command for a service that uses idem: its migrations, what a key
//! answered, the outbox, and the sealed audit log, on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! It connects as the library does (`DATABASE_URL` or `--database-url`, with libpq's TLS
//! parameters on PostgreSQL), prints a table for a person and JSON with `--json`, and exits
//! with a code a script can read (see `idem --help`).

mod audit;
mod keys;
mod maintenance;
mod outbox;
mod report;
mod sql;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use idem_runtime::{ErrorChain, IdempotencyStore, StoreConfig, StoreError};
use sqlx::Any;

use crate::report::Report;

const EXIT_CODES: &str = "\
Exit codes:
  0  done; a check found nothing wrong
  1  a check found something: migrations missing (migrate --check), a broken seal (audit
     verify), no such key (keys show), an event that is not parked (outbox requeue)
  2  the command line is wrong
  3  the database could not be reached, or refused a statement";

/// The operator's command for idem's tables: migrations, keys, the outbox and the audit log.
#[derive(Debug, Parser)]
#[command(name = "idem", version, after_help = EXIT_CODES)]
struct Cli {
    /// The database: postgres://…, mysql://… or sqlite://path (libpq's sslmode and sslrootcert
    /// on PostgreSQL, as the library reads them).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// Prints JSON for scripts instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Applies idem's migrations, or with --check only says which are missing.
    Migrate {
        /// Applies nothing; exits 1 when a migration is missing (for deploy pipelines).
        #[arg(long)]
        check: bool,
    },
    /// What an idempotency key holds.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// The outbox: its backlog, its events, requeuing parked ones.
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
    /// The audit log: export it, verify its seals.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Retention: seals the audit log and purges what retention allows, as the service does.
    #[command(subcommand)]
    Maintenance(maintenance::MaintenanceCommand),
}

/// Why a command did not succeed, and the exit code that says so.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A check found something (exit 1).
    Finding(Report),
    /// An argument the command cannot use (exit 2).
    Usage(String),
    /// The database could not be reached or refused (exit 3).
    Database(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::Database(ErrorChain(&error).to_string())
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(ErrorChain(&error).to_string())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Some(url) = cli.database_url.as_deref() else {
        eprintln!("idem: no database: set DATABASE_URL or pass --database-url");
        return ExitCode::from(2);
    };
    let result = match IdempotencyStore::<Any>::connect(url, StoreConfig::default()).await {
        Ok(store) => run(&store, cli.command).await,
        Err(error) => Err(Failure::from(error)),
    };
    match result {
        Ok(report) => {
            report.print(cli.json);
            ExitCode::SUCCESS
        }
        Err(Failure::Finding(report)) => {
            report.print(cli.json);
            ExitCode::from(1)
        }
        Err(Failure::Usage(error)) => {
            eprintln!("idem: {error}");
            ExitCode::from(2)
        }
        Err(Failure::Database(error)) => {
            eprintln!("idem: {error}");
            ExitCode::from(3)
        }
    }
}

async fn run(store: &IdempotencyStore<Any>, command: Command) -> Result<Report, Failure> {
    match command {
        Command::Migrate { check } => migrate(store, check).await,
        Command::Keys(command) => keys::run(store, command).await,
        Command::Outbox(command) => outbox::run(store, command).await,
        Command::Audit(command) => audit::run(store, command).await,
        Command::Maintenance(command) => maintenance::run(store, command).await,
    }
}

async fn migrate(store: &IdempotencyStore<Any>, check: bool) -> Result<Report, Failure> {
    let pending = store.pending_migrations().await?;
    if check {
        let report = Report::fields(&[("missing migrations", pending.clone().into())]);
        return if pending.is_empty() {
            Ok(report)
        } else {
            Err(Failure::Finding(report.with_note(
                "run `idem migrate` as the tables' owner before deploying",
            )))
        };
    }
    store.migrate().await?;
    Ok(Report::fields(&[("applied migrations", pending.into())]))
}

/// A bad argument: said on stderr, exit 2.
pub(crate) fn usage(error: &dyn std::fmt::Display) -> Failure {
    Failure::Usage(error.to_string())
}

/// `duration` in whole milliseconds, as idem stores durations; saturating.
pub(crate) fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
