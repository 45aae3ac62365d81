//! `idem`, the operator's command for a service that uses idem: its migrations, what a key
//! answered, the outbox, and the sealed audit log, on PostgreSQL, MySQL/MariaDB and SQLite.
//!
//! It connects as the library does (`DATABASE_URL` or `--database-url`, with libpq's TLS
//! parameters on PostgreSQL), prints a table for a person and JSON with `--json`, and exits
//! with a code a script can read (see `idem --help`).

mod audit;
mod keys;
mod outbox;
mod report;
mod sql;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use idem_runtime::{ErrorChain, IdempotencyStore, Maintenance, StoreConfig, StoreError};
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
    Maintenance(MaintenanceCommand),
}

#[derive(Debug, Subcommand)]
enum MaintenanceCommand {
    /// Runs one maintenance pass now (the service runs one every hour).
    Run {
        /// Counts what a run would purge, and deletes nothing.
        #[arg(long)]
        dry_run: bool,
        /// Audit rows are kept this long (as the service's `with_audit_retention`).
        #[arg(long, default_value = "90days", value_parser = humantime::parse_duration)]
        audit_retention: Duration,
        /// Delivered outbox events are kept this long.
        #[arg(long, default_value = "7days", value_parser = humantime::parse_duration)]
        outbox_retention: Duration,
        /// Audit rows are sealed once they are this old (as the service's `with_seal_delay`).
        #[arg(long, default_value = "5min", value_parser = humantime::parse_duration)]
        seal_delay: Duration,
    },
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
        Command::Maintenance(MaintenanceCommand::Run {
            dry_run,
            audit_retention,
            outbox_retention,
            seal_delay,
        }) => {
            if dry_run {
                return audit::dry_run(store, audit_retention, outbox_retention).await;
            }
            let report = Maintenance::new(store.clone())
                .with_audit_retention(audit_retention)
                .with_outbox_retention(outbox_retention)
                .with_seal_delay(seal_delay)
                .run_once()
                .await?;
            Ok(Report::fields(&[
                ("sealed audit rows", report.sealed_rows.into()),
                ("expired keys purged", report.expired_keys.into()),
                ("delivered events purged", report.delivered_events.into()),
                ("audit rows purged", report.audit_rows.into()),
            ]))
        }
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
