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

/// No statement of the protocol reads a whole table on SQLite either: on 20 000 keys, audit rows
/// and events (analyzed), each statement's query plan searches an index or scans only a
/// partial one, never a table.
#[tokio::test]
async fn no_protocol_statement_scans_a_whole_table() {
    let db = sqlx::Sqlite::fresh(StoreConfig::default()).await;
    let mut conn = db.store.pool().acquire().await.unwrap();
    sqlx::raw_sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO idempotency_keys
             (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id,
              response_status, response_headers, response_body, created_at_ms, expires_at_ms)
         SELECT 'tenant-' || (i % 100), 'createPayment', 'key-' || i, randomblob(32),
             'entity-' || i, i, 201, '[]', randomblob(100), 1700000000000 + i, 1700086400000 + i
         FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO idempotent_write_audit_log
             (id, operation, class, company_id, key_hash, entity_id, fingerprint, outcome,
              status, attempts, duration_ms, created_at_ms)
         SELECT 'audit-' || i, 'createPayment', 'financial', 'tenant-' || (i % 100),
             hex(randomblob(32)), 'entity-' || i, hex(randomblob(32)), 'new', 201, 1, 1.5,
             1700000000000 + i
         FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO idem_outbox
             (event_id, tenant_id, operation, entity_id, topic, payload, sequence_in_write,
              created_at_ms, delivered_at_ms, parked_at_ms)
         SELECT 'event-' || i, 'tenant-' || (i % 100), 'createPayment', 'entity-' || i,
             'receipt', x'7b7d', 1, 1700000000000 + i,
             CASE WHEN i % 100 < 95 THEN 1700000001000 + i END,
             CASE WHEN i % 100 = 99 THEN 1700000002000 + i END
         FROM n;
         ANALYZE;",
    )
    .execute(&mut *conn)
    .await
    .expect("load the tables");

    let mut scans = Vec::new();
    for (name, statement) in idem_runtime::__private::sqlite_statements() {
        let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "EXPLAIN QUERY PLAN {statement}"
        )))
        .fetch_all(&mut *conn)
        .await
        .unwrap_or_else(|error| panic!("{name}: {error}"));
        // `SCAN t` reads the table; `SCAN t USING … INDEX i` reads an index (here a partial
        // one); `SEARCH` looks up.
        let whole_table = |detail: &str| {
            detail.starts_with("SCAN ")
                && !detail.contains(" USING ")
                && detail != "SCAN CONSTANT ROW"
        };
        // The dispatcher's claim reads its batch in the index's order: a temporary B-tree
        // would sort the whole backlog for each batch.
        let sorts = |detail: &str| name == "claim_events" && detail.contains("TEMP B-TREE");
        if plan
            .iter()
            .any(|(.., detail)| whole_table(detail) || sorts(detail))
        {
            let details: Vec<&str> = plan.iter().map(|(.., detail)| detail.as_str()).collect();
            scans.push(format!("{name}: {}", details.join(" / ")));
        }
    }
    assert!(
        scans.is_empty(),
        "whole-table scans, or a sorted claim:\n{}",
        scans.join("\n")
    );
}

/// One call seals a backlog in seals of `SEAL_ROWS`, each chained to the one before it.
#[tokio::test]
async fn a_backlog_is_sealed_in_chained_seals_of_bounded_size() {
    let db = sqlx::Sqlite::fresh(StoreConfig::default()).await;
    sqlx::raw_sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
         INSERT INTO idempotent_write_audit_log
             (id, operation, class, company_id, key_hash, entity_id, fingerprint, outcome,
              status, attempts, duration_ms, created_at_ms)
         SELECT 'audit-' || i, 'createPayment', 'financial', 'acme', hex(randomblob(32)),
             'entity-' || i, hex(randomblob(32)), 'new', 201, 1, 1.5, 1700000000000 + i
         FROM n",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    assert_eq!(db.store.seal_audit_log(Duration::ZERO).await.unwrap(), 2500);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idempotent_write_audit_seals", &[])
            .await,
        3
    );
    assert_eq!(
        db.count(
            "SELECT row_count FROM idempotent_write_audit_seals WHERE seal = 3",
            &[]
        )
        .await,
        2500 - 2 * idem_runtime::SEAL_ROWS
    );
    let verification = db.store.verify_audit_log().await.unwrap();
    assert!(verification.holds(), "{verification:?}");
    assert_eq!(
        (verification.verified_seals, verification.verified_rows),
        (3, 2500)
    );
}
