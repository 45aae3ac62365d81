//! Deletions in bounded, paced batches: short transactions, with room for writers between them.

use std::time::Duration;

/// How the store deletes what retention lets go (expired keys, delivered outbox events, old
/// audit rows): in batches of at most [`batch_rows`](Self::batch_rows) rows, each its own short
/// transaction, with a [`pause`](Self::pause) after each full batch. Writes run between the
/// batches; the pause leaves the database's CPU and disk to them while a large backlog is
/// purged. Set with [`StoreConfig::with_purge_pace`](crate::StoreConfig::with_purge_pace).
///
/// The default, 1 000 rows and a pause of 20 ms, purged a million expired keys in under a
/// minute on a 2-core PostgreSQL server while the writes beside it kept 0.9× of their
/// throughput (unpaced: 0.7 to 0.8×; BENCHMARKS.md, "At scale"). A service that expires a
/// million keys a day needs about twelve rows a second: a longer pause costs it nothing.
///
/// ```
/// use std::time::Duration;
/// use idem_runtime::{PurgePace, StoreConfig};
///
/// let gentle = PurgePace::default()
///     .with_batch_rows(500)
///     .with_pause(Duration::from_millis(50));
/// let config = StoreConfig::default().with_purge_pace(gentle);
/// assert_eq!(config.purge_pace().batch_rows(), 500);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgePace {
    batch_rows: u32,
    pause: Duration,
}

impl Default for PurgePace {
    fn default() -> Self {
        Self {
            batch_rows: 1000,
            pause: Duration::from_millis(20),
        }
    }
}

impl PurgePace {
    /// The most rows one delete statement removes (default 1 000; at least 1). Larger batches
    /// purge faster and hold their row locks longer.
    pub fn with_batch_rows(mut self, rows: u32) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// The pause after each full batch (default 20 ms); zero purges as fast as the database
    /// deletes.
    pub fn with_pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// The most rows one delete statement removes.
    pub fn batch_rows(&self) -> u32 {
        self.batch_rows
    }

    /// The pause after each full batch.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// Runs `batch` with the batch size until it deletes fewer rows than that or `stop` says
    /// so, pausing after each full batch; the rows deleted in all.
    pub(crate) async fn purge<F, Fut>(
        &self,
        stop: &mut (dyn FnMut() -> bool + Send),
        mut batch: F,
    ) -> Result<u64, sqlx::Error>
    where
        F: FnMut(i64) -> Fut,
        Fut: Future<Output = Result<u64, sqlx::Error>>,
    {
        let mut purged = 0;
        while !stop() {
            let deleted = batch(i64::from(self.batch_rows)).await?;
            purged += deleted;
            if deleted < u64::from(self.batch_rows) {
                break;
            }
            if self.pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(self.pause).await;
            }
        }
        Ok(purged)
    }
}
