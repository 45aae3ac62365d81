use super::*;
use idem_runtime::SqliteSynchronous;

async fn synchronous(config: StoreConfig) -> i64 {
    let db = sqlx::Sqlite::fresh(config).await;
    db.count("SELECT synchronous FROM pragma_synchronous", &[])
        .await
}

/// A commit answered `201` is on disk: `synchronous = FULL` (2) unless configured otherwise.
#[tokio::test]
async fn sqlite_commits_are_durable_by_default() {
    assert_eq!(synchronous(StoreConfig::default()).await, 2);
    assert_eq!(
        synchronous(StoreConfig::default().with_sqlite_synchronous(SqliteSynchronous::Normal))
            .await,
        1
    );
}
