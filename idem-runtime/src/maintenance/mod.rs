//! Retention, run by the library: the audit log is sealed, and expired keys, delivered outbox
//! events and old audit rows are deleted on a schedule, in bounded batches that never hold up
//! writers.

mod batches;

use std::time::Duration;

use tokio::time::Instant;

use crate::clock::millis;
use crate::observe::{MAINTENANCE_ERRORS_TOTAL, MAINTENANCE_PURGED_ROWS_TOTAL};
use crate::{Backend, ErrorChain, IdempotencyStore, StoreError};

pub use batches::PurgePace;

/// What one maintenance run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Idempotency keys past their own expiry (they had stopped replaying already).
    pub expired_keys: u64,
    /// Outbox events delivered longer ago than the outbox retention.
    pub delivered_events: u64,
    /// Audit rows older than the audit retention.
    pub audit_rows: u64,
    /// Audit rows sealed (see [`IdempotencyStore::verify_audit_log`]).
    pub sealed_rows: u64,
}

/// The retention task: run it beside the server
/// (`tokio::spawn(Maintenance::new(store).run_until(shutdown))`), on every instance; the
/// batches of concurrent instances do not conflict.
///
/// Each run first seals the audit rows inserted since its last seal and at least
/// [`Self::with_seal_delay`] ago ([`IdempotencyStore::seal_audit_log`]), then deletes, at the
/// store's [`PurgePace`] (batches of 1 000 rows with a pause between, by default):
/// - idempotency keys past their own expiry, by the database's clock: each row's expiry is set
///   at its claim from its operation's retention (the store's
///   [retention](crate::StoreConfig::with_retention), 24 h by default, or the operation's own
///   when longer), so any binary's run removes only what has expired, whichever operations
///   that binary registers;
/// - outbox events delivered more than [`Self::with_outbox_retention`] ago (7 days);
/// - audit rows older than [`Self::with_audit_retention`] (90 days, the reference design's hot
///   retention). On PostgreSQL the owner's floor applies too (see
///   [`IdempotencyStore::purge_audit_older_than`]). To keep audit records for 7 years, either
///   set the retention to 7 years, or archive the rows older than 80 days (for example a
///   nightly `COPY (SELECT …) TO` into cold storage that your auditors can query) and keep the
///   90-day default for the hot table.
///
/// ```
/// # use std::time::Duration;
/// # use idem_runtime::{IdempotencyStore, Maintenance, StoreConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), idem_runtime::StoreError> {
/// # let dir = std::env::temp_dir().join(format!("idem-maintenance-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let url = format!("sqlite://{}", dir.join("maintenance.db").display());
/// let store = IdempotencyStore::<sqlx::Sqlite>::connect(&url, StoreConfig::default()).await?;
/// store.migrate().await?;
/// let maintenance = Maintenance::new(store)
///     .with_interval(Duration::from_secs(15 * 60))
///     .with_audit_retention(Duration::from_secs(400 * 24 * 3600));
/// let report = maintenance.run_once().await?;
/// assert_eq!(report.expired_keys, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Maintenance<DB: Backend> {
    store: IdempotencyStore<DB>,
    interval: Duration,
    outbox_retention: Duration,
    audit_retention: Option<Duration>,
    seal_delay: Duration,
}

impl<DB: Backend> Maintenance<DB> {
    /// Hourly runs with the default retentions.
    pub fn new(store: IdempotencyStore<DB>) -> Self {
        Self {
            store,
            interval: Duration::from_secs(3600),
            outbox_retention: Duration::from_secs(7 * 24 * 3600),
            audit_retention: Some(Duration::from_secs(90 * 24 * 3600)),
            seal_delay: Duration::from_secs(5 * 60),
        }
    }

    /// The pause between two runs (default 1 h).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// How long delivered outbox events are kept (default 7 days).
    pub fn with_outbox_retention(mut self, retention: Duration) -> Self {
        self.outbox_retention = retention;
        self
    }

    /// How long audit rows are kept (default 90 days).
    pub fn with_audit_retention(mut self, retention: Duration) -> Self {
        self.audit_retention = Some(retention);
        self
    }

    /// How long after its insertion an audit row is sealed (default 5 minutes): longer than any
    /// write transaction stays open, since a row that commits below a seal shows as inserted
    /// into it.
    pub fn with_seal_delay(mut self, delay: Duration) -> Self {
        self.seal_delay = delay;
        self
    }

    /// Never deletes audit rows (an archive elsewhere takes none of them away either).
    pub fn keeping_audit_rows(mut self) -> Self {
        self.audit_retention = None;
        self
    }

    /// One run, now.
    pub async fn run_once(&self) -> Result<MaintenanceReport, StoreError> {
        self.run_stoppable(&mut || false).await
    }

    /// Runs every interval, the first run at once, until the process ends. A failed run is
    /// logged and counted in `idempotent_maintenance_errors_total`; the next one tries again.
    pub async fn run(self) {
        self.run_until(std::future::pending()).await;
    }

    /// [`Self::run`] until `shutdown` resolves; a run in progress stops between two batches.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) {
        use futures_util::FutureExt;

        let mut shutdown = std::pin::pin!(shutdown);
        let mut stopping = false;
        loop {
            let mut stop = || {
                stopping = stopping || shutdown.as_mut().now_or_never().is_some();
                stopping
            };
            let run = self.run_stoppable(&mut stop).await;
            if stop() {
                return;
            }
            if let Err(error) = run {
                metrics::counter!(MAINTENANCE_ERRORS_TOTAL).increment(1);
                tracing::error!(error = %ErrorChain(&error), "the maintenance run failed; the next one tries again");
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn run_stoppable(
        &self,
        stop: &mut (dyn FnMut() -> bool + Send),
    ) -> Result<MaintenanceReport, StoreError> {
        let started = Instant::now();
        let (pool, statements) = (&self.store.pool, self.store.config.statements());
        let pace = self.store.config.purge_pace();
        let mut report = MaintenanceReport {
            sealed_rows: self.store.seal_stoppable(self.seal_delay, stop).await?,
            ..MaintenanceReport::default()
        };
        report.expired_keys = pace
            .purge(stop, |rows| DB::purge_expired(pool, statements, rows))
            .await?;
        metrics::counter!(MAINTENANCE_PURGED_ROWS_TOTAL, "table" => "keys")
            .increment(report.expired_keys);
        report.delivered_events = pace
            .purge(stop, |rows| {
                DB::purge_delivered(pool, statements, millis(self.outbox_retention), rows)
            })
            .await?;
        metrics::counter!(MAINTENANCE_PURGED_ROWS_TOTAL, "table" => "outbox")
            .increment(report.delivered_events);
        if let Some(retention) = self.audit_retention {
            report.audit_rows = pace
                .purge(stop, |rows| {
                    DB::purge_audit(pool, statements, millis(retention), rows)
                })
                .await?;
            metrics::counter!(MAINTENANCE_PURGED_ROWS_TOTAL, "table" => "audit")
                .increment(report.audit_rows);
        }
        tracing::info!(
            expired_keys = report.expired_keys,
            delivered_events = report.delivered_events,
            audit_rows = report.audit_rows,
            sealed_rows = report.sealed_rows,
            duration_ms = started.elapsed().as_millis(),
            "maintenance run finished"
        );
        Ok(report)
    }
}
