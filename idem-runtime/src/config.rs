//! How long keys live, how long twins wait, how often transient failures are retried.

use std::time::Duration;

use crate::backend::Statements;
use crate::{Backend, PurgePace};

/// The settings of an [`IdempotencyStore`](crate::IdempotencyStore).
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::{RetryPolicy, StoreConfig};
///
/// let config = StoreConfig::default()
///     .with_retention(Duration::from_secs(48 * 3600))
///     .with_lock_timeout(Duration::from_secs(2))
///     .with_retry(RetryPolicy::default().with_max_attempts(5));
/// assert_eq!(config.lock_timeout(), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone)]
pub struct StoreConfig {
    retention: Duration,
    lock_timeout: Duration,
    retry_after: Duration,
    retry: RetryPolicy,
    audit_queue_limit: usize,
    audit_coalescing_window: Duration,
    sqlite_synchronous: SqliteSynchronous,
    write_timeout: Duration,
    acquire_timeout: Duration,
    transaction_pooling: bool,
    replica_timeout: Duration,
    purge_pace: PurgePace,
}

/// How SQLite makes a commit durable (its `synchronous` pragma), for the pools that
/// [`IdempotencyStore::connect`](crate::IdempotencyStore::connect) opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SqliteSynchronous {
    /// Every commit is on disk before it is acknowledged (`synchronous = FULL`): a power loss
    /// never undoes a write already answered `201`. The default.
    #[default]
    Full,
    /// Commits reach the disk at WAL checkpoints (`synchronous = NORMAL`): faster, and a power
    /// loss (not a process crash) can undo the last writes already answered. Only for data
    /// that can be recomputed.
    Normal,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 60 * 60),
            lock_timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            audit_queue_limit: 10_000,
            audit_coalescing_window: Duration::from_secs(1),
            sqlite_synchronous: SqliteSynchronous::Full,
            write_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(5),
            transaction_pooling: false,
            replica_timeout: Duration::from_secs(1),
            purge_pace: PurgePace::default(),
        }
    }
}

impl StoreConfig {
    /// How long a write waits for a database connection (default 5 s) before it fails with
    /// [`StoreError::Database`](crate::StoreError::Database)`(PoolTimedOut)`, which HTTP answers
    /// `503` with `Retry-After`: while the database is down or restarting, a request is answered
    /// within this bound instead of waiting for it. Applies to pools that
    /// [`IdempotencyStore::connect`](crate::IdempotencyStore::connect) opens.
    pub fn with_acquire_timeout(mut self, acquire_timeout: Duration) -> Self {
        self.acquire_timeout = acquire_timeout;
        self
    }

    /// How long a write waits for a database connection.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Set when PostgreSQL is reached through a pooler in transaction mode (PgBouncer's
    /// `pool_mode = transaction`, before 1.21 or without `max_prepared_statements`), which
    /// hands each transaction to any server connection. idem then sends its statements unnamed
    /// (parsed on each use: one more round trip per statement) and only inside transactions;
    /// claims a key this process is not already writing without reading it first (the claim
    /// finds a committed record as well); begins each transaction with `DEALLOCATE ALL`, in the
    /// same round trip, so that no statement left on the server by an abandoned request is in
    /// the way; and, before a write's transaction ends, removes every named statement its body
    /// prepared (`DEALLOCATE ALL`: sqlx names statements even when it caches none). Pools that [`IdempotencyStore::connect`](crate::IdempotencyStore::connect)
    /// opens keep no statement cache; give your own pool `statement_cache_capacity(0)` too.
    /// Migrations need a session of their own: [`IdempotencyStore::migrate`](crate::IdempotencyStore::migrate)
    /// refuses, run them on a direct connection. Default `false`. docs/production.md, "Behind PgBouncer",
    /// says what a handler's own queries need.
    pub fn with_transaction_pooling(mut self, transaction_pooling: bool) -> Self {
        self.transaction_pooling = transaction_pooling;
        self
    }

    /// Whether the database is reached through a transaction pooler.
    pub fn transaction_pooling(&self) -> bool {
        self.transaction_pooling
    }

    /// How the protocol's statements travel, from [`Self::transaction_pooling`].
    pub(crate) fn statements(&self) -> Statements {
        if self.transaction_pooling {
            Statements::Unnamed
        } else {
            Statements::Prepared
        }
    }

    /// How long a key replays its response (default 24 h). Expiry is checked whenever a key is
    /// read; [`IdempotencyStore::purge_expired`](crate::IdempotencyStore::purge_expired) only
    /// reclaims the space.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long a replay lookup on the read replica
    /// ([`IdempotencyStore::with_replica`](crate::IdempotencyStore::with_replica)) may take,
    /// connection included (default 1 s), before the primary answers instead: a replica that
    /// hangs costs each write at most this, never the write itself.
    pub fn with_replica_timeout(mut self, replica_timeout: Duration) -> Self {
        self.replica_timeout = replica_timeout;
        self
    }

    /// How long a replay lookup on the read replica may take: [`Self::with_replica_timeout`].
    pub fn replica_timeout(&self) -> Duration {
        self.replica_timeout
    }

    /// How long a request waits for a twin that holds its key before it is answered
    /// [`Outcome::InFlight`](crate::Outcome::InFlight) (default 5 s). On PostgreSQL this is
    /// also the `lock_timeout` of the write transaction; on SQLite, the busy timeout of the pool
    /// that [`IdempotencyStore::connect`](crate::IdempotencyStore::connect) opens.
    pub fn with_lock_timeout(mut self, lock_timeout: Duration) -> Self {
        self.lock_timeout = lock_timeout;
        self
    }

    /// How long a request answered [`Outcome::InFlight`](crate::Outcome::InFlight) is told to
    /// wait before retrying (default 1 s).
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// How serialization failures, deadlocks and busy errors are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The most audit rows waiting to be written after their answers (default 10 000); when
    /// the queue is full, a request writes its own row before it is answered.
    pub fn with_audit_queue_limit(mut self, rows: usize) -> Self {
        self.audit_queue_limit = rows;
        self
    }

    /// How long the audit writer waits after each batch, so that repeats of one outcome gather
    /// in one row (default 1 s): a replay, mismatch or conflict of a key (same operation,
    /// tenant, user, request and status) that happens while an earlier one's row still waits
    /// is counted in that row (`repeat_count`, `first_seen_at_ms`) instead of adding one. A
    /// client replaying one key in a loop then adds at most about one row per window. Zero
    /// writes each batch at once, still counting the repeats that meet in the queue.
    /// [`IdempotencyStore::flush_audit`](crate::IdempotencyStore::flush_audit) does not wait
    /// for it.
    pub fn with_audit_coalescing_window(mut self, window: Duration) -> Self {
        self.audit_coalescing_window = window;
        self
    }

    /// How SQLite makes commits durable (default [`SqliteSynchronous::Full`]).
    pub fn with_sqlite_synchronous(mut self, synchronous: SqliteSynchronous) -> Self {
        self.sqlite_synchronous = synchronous;
        self
    }

    /// How long a write's body may hold its transaction, and the key, before it is cancelled
    /// and rolled back (default 30 s): the client is told to retry with the same key.
    pub fn with_write_timeout(mut self, write_timeout: Duration) -> Self {
        self.write_timeout = write_timeout;
        self
    }

    /// How the store's purges delete (default 1 000 rows a batch, 20 ms between batches): see
    /// [`PurgePace`].
    pub fn with_purge_pace(mut self, pace: PurgePace) -> Self {
        self.purge_pace = pace;
        self
    }

    /// The configured purge pace.
    pub fn purge_pace(&self) -> PurgePace {
        self.purge_pace
    }

    /// The configured write timeout.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// The configured audit queue limit.
    pub fn audit_queue_limit(&self) -> usize {
        self.audit_queue_limit
    }

    /// The configured audit coalescing window.
    pub fn audit_coalescing_window(&self) -> Duration {
        self.audit_coalescing_window
    }

    /// The configured SQLite durability.
    pub fn sqlite_synchronous(&self) -> SqliteSynchronous {
        self.sqlite_synchronous
    }

    /// The configured retention.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// The configured lock timeout.
    pub fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    /// The configured `Retry-After` for in-flight twins.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The configured retry policy.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }
}

/// Bounded exponential backoff with full jitter, for failures that a fresh attempt of the same
/// transaction may not meet: PostgreSQL's serialization failures and deadlocks (SQLSTATE 40001,
/// 40P01), MySQL's deadlocks (1213, and MariaDB's 1020) and SQLite's busy and locked errors. It
/// governs a write's attempts and each statement of the outbox dispatcher.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(250),
        }
    }
}

impl RetryPolicy {
    /// The most attempts one write makes, the first included (default 10; at least 1).
    pub fn with_max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The backoff ceiling before the second attempt (default 5 ms); it doubles per attempt.
    pub fn with_initial_backoff(mut self, initial_backoff: Duration) -> Self {
        self.initial_backoff = initial_backoff;
        self
    }

    /// The largest backoff ceiling (default 250 ms).
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// The configured attempt limit.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The pause before attempt `failed_attempts + 1`: uniform in zero to the doubled ceiling,
    /// so twins that failed together do not retry together.
    pub(crate) fn backoff(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(16);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff);
        ceiling.mul_f64(fastrand::f64())
    }

    /// Runs one statement that is its own transaction (an outbox claim, an audit batch), again
    /// after each transient failure of `DB`'s, up to the attempt limit, with backoff between:
    /// the failure rolled the transaction back whole, so a new try starts clean.
    pub(crate) async fn run_statement<DB: Backend, T, Statement>(
        &self,
        what: &'static str,
        mut statement: impl FnMut() -> Statement,
    ) -> Result<T, sqlx::Error>
    where
        Statement: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut attempt = 1;
        loop {
            match statement().await {
                Err(sqlx::Error::Database(error))
                    if DB::is_transient(error.as_ref()) && attempt < self.max_attempts =>
                {
                    tracing::debug!(attempt, %error, what, "a statement failed transiently; trying again");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults the documents promise (README, CONTRACT.md, the rustdoc of each setting):
    /// changing one is a decision that changes these lines and those documents together.
    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = StoreConfig::default();
        assert_eq!(config.retention(), Duration::from_secs(24 * 3600));
        assert_eq!(config.lock_timeout(), Duration::from_secs(5));
        assert_eq!(config.acquire_timeout(), Duration::from_secs(5));
        assert_eq!(config.write_timeout(), Duration::from_secs(30));
        assert_eq!(config.replica_timeout(), Duration::from_secs(1));
        assert_eq!(config.retry_after(), Duration::from_secs(1));
        assert_eq!(config.audit_queue_limit(), 10_000);
        assert_eq!(config.audit_coalescing_window(), Duration::from_secs(1));
        assert_eq!(config.retry().max_attempts(), 10);
        assert_eq!(config.sqlite_synchronous(), SqliteSynchronous::Full);
        assert!(!config.transaction_pooling());
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let policy = RetryPolicy::default()
            .with_initial_backoff(Duration::from_millis(10))
            .with_max_backoff(Duration::from_millis(40));
        let longest = |failed| (0..500).map(|_| policy.backoff(failed)).max().unwrap();
        // Uniform below the ceiling: 500 draws reach its top tenth (a zero or a constant
        // backoff would not), and never pass it.
        for (failed, ceiling_ms) in [(1, 10), (2, 20), (3, 40), (9, 40)] {
            let ceiling = Duration::from_millis(ceiling_ms);
            let longest = longest(failed);
            assert!(longest <= ceiling, "attempt {failed}: {longest:?}");
            assert!(
                longest > ceiling.mul_f64(0.9),
                "attempt {failed}: {longest:?}"
            );
        }
    }

    #[test]
    fn at_least_one_attempt() {
        assert_eq!(
            RetryPolicy::default().with_max_attempts(0).max_attempts(),
            1
        );
    }
}
