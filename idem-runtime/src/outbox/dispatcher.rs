//! The dispatcher: claims due events for a lease, delivers them to their topic's handler, and
//! marks each delivered, retried after a backoff, or parked.

use std::collections::HashMap;
use std::ops::AddAssign;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, stream};
use tokio::time::Instant;

use super::{HandlerError, OutboxEvent};
use crate::attempt::panic_message;
use crate::backend::{DeliveryFailure, EventRow};
use crate::clock::millis;
use crate::observe::{
    OUTBOX_DISPATCH_ERRORS_TOTAL, OUTBOX_EVENTS_PARKED, OUTBOX_EVENTS_PARKED_TOTAL,
    OUTBOX_EVENTS_PENDING, OUTBOX_OLDEST_PENDING_AGE_SECONDS,
};
use crate::{Backend, ErrorChain, IdempotencyStore, StoreError};

/// A topic's handler, as the dispatcher holds it.
type Handler =
    Arc<dyn Fn(OutboxEvent) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// What one [`OutboxDispatcher::dispatch_pending`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchReport {
    /// Events whose handler succeeded and that are now marked delivered.
    pub delivered: usize,
    /// Events whose handler failed (or panicked); they are delivered again after a backoff.
    pub failed: usize,
    /// Events with no handler for their topic; they are tried again after a backoff, in case
    /// another dispatcher (a newer release) handles them.
    pub unhandled: usize,
    /// Events parked by this pass: undecodable, or failed for the last allowed time.
    pub parked: usize,
}

impl AddAssign for DispatchReport {
    fn add_assign(&mut self, other: Self) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.unhandled += other.unhandled;
        self.parked += other.parked;
    }
}

/// Delivers recorded events to handlers by topic, at least once.
///
/// A failed delivery (the handler's error or panic, no handler for the topic) is retried with
/// exponential backoff; after [`Self::with_max_attempts`] failures, or at once for a row that
/// cannot be decoded, the event is parked with its attempts and last error, and never blocks
/// the events behind it. [`Self::parked`] lists parked events and [`Self::requeue`] makes one
/// due again. [`Self::run`] never stops on an error: a database that is down, busy or failing
/// over is logged, counted and retried.
///
/// ```
/// # use idem_runtime::{IdempotencyStore, OutboxDispatcher, StoreConfig};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), idem_runtime::StoreError> {
/// # let dir = std::env::temp_dir().join(format!("idem-outbox-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// # let url = format!("sqlite://{}", dir.join("outbox.db").display());
/// let store = IdempotencyStore::<sqlx::Sqlite>::connect(&url, StoreConfig::default()).await?;
/// store.migrate().await?;
/// let dispatcher = OutboxDispatcher::new(store).on("send_invoice", |event| async move {
///     println!("sending invoice {} (event {})", event.entity_id, event.event_id);
///     Ok(())
/// });
/// let report = dispatcher.dispatch_pending().await?;
/// assert_eq!(report.delivered, 0);
/// assert!(dispatcher.parked().await?.is_empty());
/// # Ok(()) }
/// ```
pub struct OutboxDispatcher<DB: Backend> {
    pub(super) store: IdempotencyStore<DB>,
    handlers: HashMap<String, Handler>,
    batch: i64,
    parallelism: usize,
    delivery_timeout: Duration,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl<DB: Backend> OutboxDispatcher<DB> {
    /// A dispatcher with no handlers: batches of 100 events, the events of 8 writes delivered
    /// at once, 30 s for each delivery, 10 attempts an event, backoff from 1 s doubling to
    /// 5 min.
    pub fn new(store: IdempotencyStore<DB>) -> Self {
        Self {
            store,
            handlers: HashMap::new(),
            batch: 100,
            parallelism: 8,
            delivery_timeout: Duration::from_secs(30),
            max_attempts: 10,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }

    /// Delivers events of `topic` to `handler`. A handler may run more than once for one
    /// event (after a crash, or a delivery that outlived its lease): dedupe on
    /// [`OutboxEvent::event_id`], which every redelivery carries. An `Err`, a panic or a
    /// handler past the delivery timeout is a failed delivery, tried again after a backoff.
    ///
    /// ```
    /// use idem_runtime::{IdempotencyStore, OutboxDispatcher};
    ///
    /// fn dispatcher(store: IdempotencyStore<sqlx::Sqlite>) -> OutboxDispatcher<sqlx::Sqlite> {
    ///     OutboxDispatcher::new(store).on("invoice.finalized", |event| async move {
    ///         // Send the invoice by e-mail, once per event id.
    ///         println!("{} {} of {}", event.event_id, event.topic, event.entity_id);
    ///         Ok(())
    ///     })
    /// }
    /// ```
    pub fn on<F, Fut>(mut self, topic: &str, handler: F) -> Self
    where
        F: Fn(OutboxEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handlers.insert(
            topic.to_owned(),
            Arc::new(move |event| Box::pin(handler(event))),
        );
        self
    }

    /// Claims this many events at a time (default 100; at least 1). A pass claims batch
    /// after batch while they come back full, so a backlog drains at the handlers' pace, not
    /// one batch per poll.
    pub fn with_batch_size(mut self, events: u32) -> Self {
        self.batch = i64::from(events.max(1));
        self
    }

    /// Delivers the events of this many writes at once (default 8; at least 1). The events of
    /// one write are delivered one after the other, in the order the write recorded them.
    pub fn with_parallelism(mut self, writes: u32) -> Self {
        self.parallelism = usize::try_from(writes.max(1)).unwrap_or(usize::MAX);
        self
    }

    /// How long one delivery may take (default 30 s): a handler still running then is dropped,
    /// and the delivery counts as failed (backed off, then parked), so a handler that never
    /// returns delays nobody else.
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Parks an event after this many failed deliveries (default 10; at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The wait after an event's first failed delivery, doubling per failure up to `max`
    /// (default 1 s to 5 min).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Delivers every event that is due, oldest first, batch after batch until a batch comes
    /// back short.
    pub async fn dispatch_pending(&self) -> Result<DispatchReport, StoreError> {
        self.dispatch_due(&mut || false).await
    }

    /// [`Self::dispatch_pending`], stopping before the next event once `stop` says so.
    async fn dispatch_due(
        &self,
        stop: &mut (dyn FnMut() -> bool + Send),
    ) -> Result<DispatchReport, StoreError> {
        let stop = Mutex::new(stop);
        let stopping = || (stop.lock().expect("the stop check never panics"))();
        let mut report = DispatchReport::default();
        while !stopping() {
            let lease = self.lease();
            let leased_until = Instant::now() + lease;
            let claimed = self
                .retrying(|| {
                    DB::claim_events(
                        &self.store.pool,
                        self.store.config.statements(),
                        millis(lease),
                        self.batch,
                    )
                })
                .await?;
            let full = i64::try_from(claimed.len()).unwrap_or(i64::MAX) >= self.batch;
            let writes = by_write(claimed);
            let passes: Vec<Result<DispatchReport, StoreError>> = stream::iter(writes)
                .map(|events| self.deliver_write(events, leased_until, &stopping))
                .buffer_unordered(self.parallelism)
                .collect()
                .await;
            for pass in passes {
                report += pass?;
            }
            if !full {
                break;
            }
        }
        Ok(report)
    }

    /// How long a claim keeps a batch from the other dispatchers: long enough for every
    /// delivery of the batch to time out, one write's events after the other, and one more.
    fn lease(&self) -> Duration {
        let rounds = u32::try_from(self.batch)
            .unwrap_or(u32::MAX)
            .div_ceil(u32::try_from(self.parallelism).unwrap_or(u32::MAX));
        self.delivery_timeout
            .saturating_mul(rounds.saturating_add(1))
    }

    /// Delivers the claimed events of one write, in their order. After a failure the write's
    /// later events wait for the failed one's retry; when the dispatcher stops, or the lease
    /// would run out before a delivery could time out, the rest are made due again at once.
    async fn deliver_write(
        &self,
        events: Vec<EventRow>,
        leased_until: Instant,
        stopping: &(dyn Fn() -> bool + Sync),
    ) -> Result<DispatchReport, StoreError> {
        let mut report = DispatchReport::default();
        let mut events = events.into_iter();
        while let Some(row) = events.next() {
            if stopping() || Instant::now() + self.delivery_timeout > leased_until {
                self.defer(std::iter::once(row).chain(events), Duration::ZERO)
                    .await?;
                break;
            }
            let (event_id, attempts) = (row.0.clone(), u32::try_from(row.6).unwrap_or(0));
            let event = match OutboxEvent::from_row(row) {
                Ok(event) => event,
                Err(error) => {
                    let error = ErrorChain(&error).to_string();
                    tracing::error!(%event_id, %error, "an outbox event cannot be decoded; parked");
                    self.record_failure(&event_id, attempts, &error, 0).await?;
                    report.parked += 1;
                    continue;
                }
            };
            let topic = event.topic.clone();
            let failure = match self.handlers.get(&topic) {
                None => {
                    report.unhandled += 1;
                    format!("no handler for topic {topic:?}")
                }
                Some(handler) => match self.deliver(handler, event).await {
                    Ok(()) => {
                        self.retrying(|| {
                            DB::mark_delivered(
                                &self.store.pool,
                                self.store.config.statements(),
                                &event_id,
                            )
                        })
                        .await?;
                        report.delivered += 1;
                        continue;
                    }
                    Err(failure) => {
                        report.failed += 1;
                        failure
                    }
                },
            };
            tracing::warn!(%event_id, %topic, error = %failure, "an outbox delivery failed; delivered again later");
            let parked = self
                .record_failure(&event_id, attempts, &failure, self.max_attempts)
                .await?;
            report.parked += usize::from(parked);
            if !parked {
                // The write's later events come after this one's retry.
                self.defer(events, self.backoff(attempts.saturating_add(1)))
                    .await?;
                break;
            }
        }
        Ok(report)
    }

    /// One delivery, bounded by the delivery timeout: why it failed, if it did.
    async fn deliver(&self, handler: &Handler, event: OutboxEvent) -> Result<(), String> {
        let delivery = AssertUnwindSafe(handler(event)).catch_unwind();
        match tokio::time::timeout(self.delivery_timeout, delivery).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(error.to_string()),
            Ok(Err(panic)) => Err(format!(
                "the handler panicked: {}",
                panic_message(panic.as_ref())
            )),
            Err(_) => Err(format!(
                "the handler did not finish within the delivery timeout ({} ms)",
                self.delivery_timeout.as_millis()
            )),
        }
    }

    /// Makes claimed events due again after `delay`, without counting an attempt.
    async fn defer(
        &self,
        events: impl Iterator<Item = EventRow>,
        delay: Duration,
    ) -> Result<(), StoreError> {
        for row in events {
            self.retrying(|| {
                DB::defer_event(
                    &self.store.pool,
                    self.store.config.statements(),
                    &row.0,
                    millis(delay),
                )
            })
            .await?;
        }
        Ok(())
    }

    /// Counts a failed delivery of `event_id`, which had failed `attempts` times before: backs
    /// it off, or parks it at `park_after` failures (at once for 0). `true` when it is parked.
    async fn record_failure(
        &self,
        event_id: &str,
        attempts: u32,
        error: &str,
        park_after: u32,
    ) -> Result<bool, StoreError> {
        let backoff = self.backoff(attempts.saturating_add(1));
        let failure = DeliveryFailure {
            event_id,
            error,
            backoff_ms: millis(backoff),
            park_after: i32::try_from(park_after).unwrap_or(i32::MAX),
        };
        let parked = self
            .retrying(|| {
                DB::record_delivery_failure(
                    &self.store.pool,
                    self.store.config.statements(),
                    &failure,
                )
            })
            .await?;
        if parked {
            tracing::error!(%event_id, %error, "an outbox event is parked: it is not delivered again until it is requeued");
            metrics::counter!(OUTBOX_EVENTS_PARKED_TOTAL).increment(1);
        }
        Ok(parked)
    }

    /// Runs one of the dispatcher's statements, again after a transient failure (a deadlock, a
    /// busy SQLite database) as the store's [`RetryPolicy`](crate::RetryPolicy) allows.
    async fn retrying<T, Statement>(
        &self,
        statement: impl FnMut() -> Statement,
    ) -> Result<T, StoreError>
    where
        Statement: Future<Output = Result<T, sqlx::Error>>,
    {
        let retry = self.store.config.retry();
        Ok(retry
            .run_statement::<DB, _, _>("an outbox statement", statement)
            .await?)
    }

    /// The wait before the next delivery of an event that failed `failures` times.
    fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(24);
        self.initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// Delivers until the process ends: after each write that records events in this process,
    /// and every `poll` for events recorded elsewhere or backing off. Never stops on an error:
    /// a failed pass is logged, counted in `idempotent_outbox_dispatch_errors_total` and tried
    /// again after a backoff. Run it on a task of its own.
    pub async fn run(self, poll: Duration) {
        self.run_until(poll, std::future::pending()).await;
    }

    /// [`Self::run`] until `shutdown` resolves, then returns between two events (an event
    /// whose handler is running is finished and marked first).
    pub async fn run_until(self, poll: Duration, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut stopping = false;
        let mut failed_passes = 0;
        let mut backlog_reported: Option<Instant> = None;
        loop {
            let signal = self.store.outbox_signal.clone();
            let woken = signal.notified();
            let mut stop = || {
                stopping = stopping || shutdown.as_mut().now_or_never().is_some();
                stopping
            };
            let pass = self.dispatch_due(&mut stop).await;
            if stop() {
                return;
            }
            let wait = match pass {
                Ok(_) => {
                    failed_passes = 0;
                    poll
                }
                Err(error) => {
                    failed_passes += 1;
                    metrics::counter!(OUTBOX_DISPATCH_ERRORS_TOTAL).increment(1);
                    let wait = self.backoff(failed_passes).min(poll);
                    tracing::error!(error = %ErrorChain(&error), retry_in_ms = wait.as_millis(), "an outbox dispatch pass failed; trying again");
                    wait
                }
            };
            if backlog_reported.is_none_or(|at| at.elapsed() >= BACKLOG_REPORT_INTERVAL) {
                backlog_reported = Some(Instant::now());
                self.report_backlog().await;
            }
            tokio::select! {
                () = &mut shutdown => return,
                _ = tokio::time::timeout(wait, woken) => {}
            }
        }
    }

    /// Sets the backlog gauges; a failure is the next pass's to report.
    async fn report_backlog(&self) {
        if let Ok(backlog) = self.backlog().await {
            metrics::gauge!(OUTBOX_EVENTS_PENDING).set(backlog.pending as f64);
            metrics::gauge!(OUTBOX_EVENTS_PARKED).set(backlog.parked as f64);
            metrics::gauge!(OUTBOX_OLDEST_PENDING_AGE_SECONDS)
                .set(backlog.oldest_pending_age.unwrap_or_default().as_secs_f64());
        }
    }
}

/// How often a running dispatcher counts its backlog for the gauges.
const BACKLOG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Claimed events grouped by the write that recorded them, each group in its recorded order,
/// the groups oldest first.
fn by_write(mut claimed: Vec<EventRow>) -> Vec<Vec<EventRow>> {
    claimed.sort_by(|a, b| (a.7, &a.3, a.8, &a.0).cmp(&(b.7, &b.3, b.8, &b.0)));
    let mut writes: Vec<Vec<EventRow>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in claimed {
        match index.get(&row.3) {
            Some(&at) => writes[at].push(row),
            None => {
                index.insert(row.3.clone(), writes.len());
                writes.push(vec![row]);
            }
        }
    }
    writes
}
