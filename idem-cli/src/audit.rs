//! `idem audit`: the log exported for auditors, its seals verified; and the counts of a
//! maintenance dry run.

use std::io::{IsTerminal, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use futures_util::TryStreamExt;
use idem_runtime::{IdempotencyStore, TenantId};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};
use sqlx::{Any, Row};

use crate::report::{Report, instant};
use crate::{Failure, millis, sql, usage};

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Streams one tenant's audit rows to stdout, oldest first, at constant memory.
    Export {
        /// The tenant whose rows to export.
        #[arg(long)]
        tenant: String,
        /// From this instant on (RFC 3339, such as 2026-10-01T00:00:00Z).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        since: Option<SystemTime>,
        /// Before this instant (RFC 3339).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        until: Option<SystemTime>,
        /// One JSON object per line, or CSV with a header.
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
    },
    /// Recomputes the audit log's seals and names the first that no longer matches.
    Verify,
}

/// An export's format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values, with a header line.
    Csv,
}

/// The exported columns, in order.
const COLUMNS: [&str; 19] = [
    "seq",
    "id",
    "operation",
    "class",
    "company_id",
    "user_id",
    "key_hash",
    "entity_id",
    "fingerprint",
    "outcome",
    "status",
    "failure",
    "attempts",
    "duration_ms",
    "request_id",
    "repeat_count",
    "first_seen_at_ms",
    "created_at_ms",
    "created_at",
];

const EXPORT: &str = "SELECT seq, id, operation, class, company_id, user_id, key_hash, entity_id,
    fingerprint, outcome, CAST(status AS BIGINT), failure, CAST(attempts AS BIGINT), duration_ms,
    request_id, CAST(repeat_count AS BIGINT), first_seen_at_ms, created_at_ms
FROM idempotent_write_audit_log
WHERE company_id = $1 AND created_at_ms >= $2 AND created_at_ms < $3
ORDER BY seq";

const EXPORT_COUNT: &str = "SELECT COUNT(*) FROM idempotent_write_audit_log
WHERE company_id = $1 AND created_at_ms >= $2 AND created_at_ms < $3";

pub(crate) async fn run(
    store: &IdempotencyStore<Any>,
    command: AuditCommand,
) -> Result<Report, Failure> {
    match command {
        AuditCommand::Export {
            tenant,
            since,
            until,
            format,
        } => {
            let tenant = TenantId::new(tenant).map_err(|error| usage(&error))?;
            let (since, until) = (since.map_or(0, ms), until.map_or(i64::MAX, ms));
            let exported = export(store, &tenant, since, until, format).await?;
            eprintln!("idem: {exported} audit rows exported");
            Ok(Report::default())
        }
        AuditCommand::Verify => verify(store).await,
    }
}

async fn export(
    store: &IdempotencyStore<Any>,
    tenant: &TenantId,
    since: i64,
    until: i64,
    format: Format,
) -> Result<u64, Failure> {
    let pool = store.pool();
    let progress = if std::io::stderr().is_terminal() {
        let total: i64 = sqlx::query_scalar(sql::text(pool, EXPORT_COUNT))
            .bind(tenant.as_str())
            .bind(since)
            .bind(until)
            .fetch_one(pool)
            .await?;
        let bar =
            ProgressBar::with_draw_target(Some(total.unsigned_abs()), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} rows, {eta} left")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let stdout = std::io::stdout().lock();
    let mut sink = match format {
        Format::Jsonl => Sink::Jsonl(std::io::BufWriter::new(stdout)),
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(stdout);
            csv.write_record(COLUMNS).map_err(output)?;
            Sink::Csv(Box::new(csv))
        }
    };
    let mut rows = sqlx::query(sql::text(pool, EXPORT))
        .bind(tenant.as_str())
        .bind(since)
        .bind(until)
        .fetch(pool);
    let mut exported = 0;
    while let Some(row) = rows.try_next().await? {
        let values = values(&row)?;
        match &mut sink {
            Sink::Csv(csv) => {
                let record: Vec<String> = values.iter().map(csv_field).collect();
                csv.write_record(&record).map_err(output)?;
            }
            Sink::Jsonl(out) => {
                let object: Map<String, Value> = COLUMNS
                    .iter()
                    .map(|column| (*column).to_owned())
                    .zip(values)
                    .collect();
                serde_json::to_writer(&mut *out, &object).map_err(output)?;
                out.write_all(b"\n").map_err(output)?;
            }
        }
        exported += 1;
        progress.inc(1);
    }
    match &mut sink {
        Sink::Csv(csv) => csv.flush().map_err(output)?,
        Sink::Jsonl(out) => out.flush().map_err(output)?,
    }
    progress.finish_and_clear();
    Ok(exported)
}

/// Where an export goes: stdout, through a buffer of constant size.
enum Sink<W: Write> {
    Jsonl(std::io::BufWriter<W>),
    Csv(Box<csv::Writer<W>>),
}

/// One row's values, in the order of [`COLUMNS`].
fn values(row: &sqlx::any::AnyRow) -> Result<Vec<Value>, sqlx::Error> {
    let mut values = Vec::with_capacity(COLUMNS.len());
    values.push(row.try_get::<i64, _>(0)?.into());
    for index in 1..=9 {
        values.push(row.try_get::<Option<String>, _>(index)?.into());
    }
    values.push(row.try_get::<Option<i64>, _>(10)?.into());
    values.push(row.try_get::<Option<String>, _>(11)?.into());
    values.push(row.try_get::<i64, _>(12)?.into());
    values.push(row.try_get::<f64, _>(13)?.into());
    values.push(row.try_get::<Option<String>, _>(14)?.into());
    values.push(row.try_get::<i64, _>(15)?.into());
    values.push(row.try_get::<Option<i64>, _>(16)?.into());
    let created_at_ms: i64 = row.try_get(17)?;
    values.push(created_at_ms.into());
    values.push(instant(created_at_ms).into());
    Ok(values)
}

fn csv_field(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Writing to stdout failed (a closed pipe, a full disk).
fn output(error: impl std::fmt::Display) -> Failure {
    Failure::Database(format!("writing the export failed: {error}"))
}

async fn verify(store: &IdempotencyStore<Any>) -> Result<Report, Failure> {
    let verification = store.verify_audit_log().await?;
    let latest = verification.latest.as_ref();
    let report = Report::fields(&[
        ("verified seals", verification.verified_seals.into()),
        ("verified rows", verification.verified_rows.into()),
        (
            "seals past retention",
            verification.seals_past_retention.into(),
        ),
        (
            "seal partly past retention",
            verification.seal_partly_past_retention.into(),
        ),
        ("latest seal", latest.map(|seal| seal.number).into()),
        ("latest seal rows", latest.map(|seal| seal.last_row).into()),
        (
            "latest digest",
            latest.map(|seal| seal.digest.clone()).into(),
        ),
        (
            "broken seal",
            verification
                .broken
                .as_ref()
                .map(|broken| broken.seal)
                .into(),
        ),
        (
            "finding",
            verification.broken.as_ref().map(ToString::to_string).into(),
        ),
    ]);
    if verification.holds() {
        Ok(report.with_note(
            "keep the latest digest outside the database: the next verify must show it again",
        ))
    } else {
        Err(Failure::Finding(report.with_note(
            "the audit log was changed after it was sealed: the finding names the rows",
        )))
    }
}

fn ms(instant: SystemTime) -> i64 {
    instant.duration_since(UNIX_EPOCH).map_or(0, millis)
}
