//! `idem outbox`: the backlog, the events, and requeuing parked ones.

use clap::Subcommand;
use idem_runtime::{IdempotencyStore, OutboxDispatcher};
use serde_json::Value;
use sqlx::Any;

use crate::report::{Report, instant};
use crate::{Failure, sql};

#[derive(Debug, Subcommand)]
pub(crate) enum OutboxCommand {
    /// Pending and parked events, and how long the oldest pending one has waited.
    Status,
    /// The pending events, oldest first; with --parked the parked ones.
    List {
        /// Lists the parked events (deliveries that kept failing), oldest parked first.
        #[arg(long)]
        parked: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Makes parked events due again, with a fresh attempt count (after their handler was fixed).
    Requeue {
        /// The events to requeue, by id.
        #[arg(required_unless_present = "parked", conflicts_with = "parked")]
        ids: Vec<String>,
        /// Requeues every parked event (of --operation, when given).
        #[arg(long, requires = "operation")]
        parked: bool,
        /// With --parked: only this operation's events.
        #[arg(long)]
        operation: Option<String>,
    },
}

const PENDING: &str = "SELECT event_id, tenant_id, operation, topic, attempts, created_at_ms
FROM idem_outbox
WHERE delivered_at_ms IS NULL AND parked_at_ms IS NULL
ORDER BY created_at_ms, event_id
LIMIT $1";

pub(crate) async fn run(
    store: &IdempotencyStore<Any>,
    command: OutboxCommand,
) -> Result<Report, Failure> {
    let outbox = OutboxDispatcher::new(store.clone());
    match command {
        OutboxCommand::Status => {
            let backlog = outbox.backlog().await?;
            Ok(Report::fields(&[
                ("pending", backlog.pending.into()),
                ("parked", backlog.parked.into()),
                (
                    "oldest pending age seconds",
                    backlog
                        .oldest_pending_age
                        .map(|age| age.as_secs_f64())
                        .into(),
                ),
            ]))
        }
        OutboxCommand::List {
            parked: true,
            limit,
        } => {
            let rows = outbox
                .parked()
                .await?
                .into_iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .map(|event| {
                    vec![
                        event.event_id.into(),
                        event.tenant.into(),
                        event.operation.into(),
                        event.topic.into(),
                        event.attempts.into(),
                        instant(event.parked_at_ms).into(),
                        event.last_error.into(),
                    ]
                })
                .collect();
            Ok(Report::table(
                &[
                    "event",
                    "tenant",
                    "operation",
                    "topic",
                    "attempts",
                    "parked at",
                    "last error",
                ],
                rows,
            ))
        }
        OutboxCommand::List {
            parked: false,
            limit,
        } => {
            let rows: Vec<(String, String, String, String, i32, i64)> =
                sqlx::query_as(sql::text(store.pool(), PENDING))
                    .bind(limit)
                    .fetch_all(store.pool())
                    .await?;
            let rows = rows
                .into_iter()
                .map(
                    |(event, tenant, operation, topic, attempts, created_at_ms)| {
                        vec![
                            event.into(),
                            tenant.into(),
                            operation.into(),
                            topic.into(),
                            attempts.into(),
                            instant(created_at_ms).into(),
                        ]
                    },
                )
                .collect();
            Ok(Report::table(
                &[
                    "event",
                    "tenant",
                    "operation",
                    "topic",
                    "attempts",
                    "recorded at",
                ],
                rows,
            ))
        }
        OutboxCommand::Requeue {
            ids,
            parked,
            operation,
        } => {
            let ids = if parked {
                outbox
                    .parked()
                    .await?
                    .into_iter()
                    .filter(|event| Some(&event.operation) == operation.as_ref())
                    .map(|event| event.event_id)
                    .collect()
            } else {
                ids
            };
            let mut rows = Vec::with_capacity(ids.len());
            let mut all_requeued = true;
            for id in ids {
                let requeued = outbox.requeue(&id).await?;
                all_requeued &= requeued;
                let result = if requeued {
                    "requeued"
                } else {
                    "not parked: left as it is"
                };
                rows.push(vec![Value::from(id), result.into()]);
            }
            let report = Report::table(&["event", "result"], rows);
            if all_requeued {
                Ok(report)
            } else {
                Err(Failure::Finding(report.with_note(
                    "an event that is not parked is pending or delivered: `idem outbox list` shows the pending ones",
                )))
            }
        }
    }
}
