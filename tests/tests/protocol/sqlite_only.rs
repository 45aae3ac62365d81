use super::*;

/// A connection of a second process on `db` that holds SQLite's write lock (`BEGIN
/// IMMEDIATE`) until it runs `ROLLBACK`.
async fn write_lock_of_another_process(
    db: &TestStore<sqlx::Sqlite>,
) -> sqlx::pool::PoolConnection<sqlx::Sqlite> {
    let other = db.second_process(StoreConfig::default()).await;
    let mut holder = other.pool().acquire().await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    holder
}

/// A twin in another process holds SQLite's write lock: a write waits the lock timeout (the
/// busy timeout), is answered in flight at once (not retried as a transient failure, for
/// ten times the wait), writes nothing, and writes once the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_lock_held_by_another_process_is_in_flight_after_the_lock_timeout() {
    let lock_timeout = Duration::from_millis(300);
    let db = sqlx::Sqlite::fresh(StoreConfig::default().with_lock_timeout(lock_timeout)).await;
    let mut holder = write_lock_of_another_process(&db).await;
    let started = std::time::Instant::now();
    let outcome = execute(&db.store, &tenant("acme"), &key("k-held"), "{}", pay(1)).await;
    let waited = started.elapsed();
    assert!(
        matches!(outcome, Ok(Outcome::InFlight { .. })),
        "{outcome:?}"
    );
    assert!(
        waited < lock_timeout * 5,
        "answered after one lock timeout, not after retries: {waited:?}"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    assert_eq!(db.count(PAYMENTS, &[]).await, 0);
    let retried = execute(&db.store, &tenant("acme"), &key("k-held"), "{}", pay(1)).await;
    assert!(matches!(retried, Ok(Outcome::New { .. })), "{retried:?}");
    assert_eq!(db.count(PAYMENTS, &[]).await, 1);
}

/// Another process holds SQLite's write lock for longer than the busy timeout: the
/// dispatcher's claim meets a busy database and claims again under the retry policy, so
/// the pass delivers everything once the lock is free, instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_outlasts_another_process_holding_the_write_lock() {
    let lock_timeout = Duration::from_millis(200);
    let db = sqlx::Sqlite::fresh(StoreConfig::default().with_lock_timeout(lock_timeout)).await;
    record_writes(&db.store, "k-busy", 3).await;
    let mut holder = write_lock_of_another_process(&db).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(lock_timeout * 3).await;
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut *holder)
            .await
            .unwrap();
    });
    let seen = Seen::default();
    let report = seen.dispatcher(db.store.clone()).dispatch_pending().await;
    release.await.unwrap();
    assert_eq!(report.unwrap().delivered, 6);
    assert_eq!(seen.all().len(), 6, "each handler ran once");
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
}

/// SQLite has one writer: concurrent read-then-write bodies never interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicting_writes_are_serialized() {
    let db = sqlx::Sqlite::fresh(StoreConfig::default()).await;
    conflicting_writes_land_once(&db, 40).await;
}
