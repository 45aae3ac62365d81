//! Deletions in bounded batches: short transactions that never hold up writers.

/// The most rows one purge statement deletes: short transactions that never hold up writers.
pub const PURGE_BATCH: i64 = 1000;

/// Runs `batch` until it deletes fewer than [`PURGE_BATCH`] rows or `stop` says so; the rows
/// deleted in all.
pub(crate) async fn purge_in_batches<F, Fut>(
    stop: &mut (dyn FnMut() -> bool + Send),
    mut batch: F,
) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, sqlx::Error>>,
{
    let mut purged = 0;
    while !stop() {
        let deleted = batch().await?;
        purged += deleted;
        if deleted < PURGE_BATCH.unsigned_abs() {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(purged)
}
