//! Writes: exactly once under concurrency and across processes, nothing left behind by
//! errors, panics or cancellation, mismatches refused, expiry, migrations, the registries.

use super::*;

pub(crate) async fn burst_of_500_with_one_key_writes_once<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default().with_lock_timeout(Duration::from_secs(30))).await;
    let (t, k) = (tenant("acme"), key("burst-1"));
    let outcomes = concurrently((0..500).map(|_| {
        let (store, t, k) = (db.store.clone(), t.clone(), k.clone());
        async move { execute(&store, &t, &k, "{\"cents\":100}", pay::<DB>(100)).await }
    }))
    .await;

    let mut new = Vec::new();
    let mut replayed = Vec::new();
    for outcome in outcomes {
        match outcome.expect("no call fails") {
            Outcome::New { response, .. } => new.push(response),
            Outcome::Replayed { response } => replayed.push(response),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(new.len(), 1, "exactly one call writes");
    assert_eq!(replayed.len(), 499, "every other call replays");
    assert!(
        replayed.iter().all(|response| *response == new[0]),
        "replays are byte-identical"
    );
    assert_eq!(
        db.payment_ids().await,
        [idem_runtime::entity_id(&t, "createPayment", &k)],
        "one row, keyed by the id derived from tenant, operation and key"
    );
    assert_eq!(db.count(KEYS, &[]).await, 1);
}

pub(crate) async fn fifty_tenants_by_ten_keys_write_500_rows<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default().with_lock_timeout(Duration::from_secs(30))).await;
    let outcomes = concurrently((0..50).flat_map(|t| (0..10).map(move |k| (t, k))).map(
        |(t, k)| {
            let store = db.store.clone();
            async move {
                let (t, k) = (tenant(&format!("company-{t}")), key(&format!("key-{k}")));
                execute(&store, &t, &k, "{\"cents\":5}", pay::<DB>(5)).await
            }
        },
    ))
    .await;

    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Outcome::New { .. }))),
        "every distinct (tenant, key) is a new write"
    );
    assert_eq!(db.count(PAYMENTS, &[]).await, 500);
    assert_eq!(db.count(KEYS, &[]).await, 500);
    for t in 0..50 {
        assert_eq!(db.count(PAYMENTS_OF, &[&format!("company-{t}")]).await, 10);
    }
}

pub(crate) async fn one_key_in_two_tenants_is_two_writes<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let k = key("shared-key");
    for name in ["company-a", "company-b"] {
        let outcome = execute(&db.store, &tenant(name), &k, "{}", pay::<DB>(7)).await;
        assert!(
            matches!(outcome, Ok(Outcome::New { .. })),
            "{name}: {outcome:?}"
        );
    }
    assert_eq!(db.count(PAYMENTS_OF, &["company-a"]).await, 1);
    assert_eq!(db.count(PAYMENTS_OF, &["company-b"]).await, 1);
    assert_eq!(db.count(KEYS, &[]).await, 2);
}

pub(crate) async fn retry_replays_and_another_payload_is_a_mismatch<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-mismatch"));
    let Ok(Outcome::New {
        response,
        attempts,
        events,
    }) = execute(&db.store, &t, &k, "{\"cents\":100}", pay::<DB>(100)).await
    else {
        panic!("the first call writes");
    };
    assert_eq!((attempts, events), (1, 0));
    let replay = execute(&db.store, &t, &k, "{\"cents\":100}", pay::<DB>(100)).await;
    assert_eq!(replay.unwrap(), Outcome::Replayed { response });
    let mismatch = execute(&db.store, &t, &k, "{\"cents\":999}", pay::<DB>(999)).await;
    assert_eq!(
        mismatch.unwrap(),
        Outcome::FingerprintMismatch {
            differing: vec![RequestPart::Body]
        }
    );
    assert_eq!(db.count(PAYMENTS, &[]).await, 1);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM payments WHERE amount_cents = 100",
            &[]
        )
        .await,
        1
    );
    assert_eq!(db.count(KEYS, &[]).await, 1);
}

/// After a failed body the key and the business row are gone, and the same key writes.
pub(crate) async fn assert_key_is_free<DB: TestDb>(
    db: &TestStore<DB>,
    t: &TenantId,
    k: &IdempotencyKey,
) {
    assert_eq!(db.count(KEYS, &[]).await, 0, "the key row rolled back");
    assert_eq!(
        db.count(PAYMENTS, &[]).await,
        0,
        "the business row rolled back"
    );
    let retry = execute(&db.store, t, k, "{}", pay::<DB>(1)).await;
    assert!(
        matches!(retry, Ok(Outcome::New { .. })),
        "the next call runs the body: {retry:?}"
    );
    assert_eq!(db.count(PAYMENTS, &[]).await, 1);
    assert_eq!(db.count(KEYS_OF, &[t.as_str()]).await, 1);
}

pub(crate) async fn body_error_rolls_back_and_frees_the_key<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-error"));
    let refused: Box<Body<DB>> = Box::new(|write| {
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 1).await?;
            Err(PaymentError::Refused)
        })
    });
    let outcome = execute(&db.store, &t, &k, "{}", refused).await;
    assert!(
        matches!(outcome, Err(WriteError::Handler(PaymentError::Refused))),
        "{outcome:?}"
    );
    assert_key_is_free(&db, &t, &k).await;
}

pub(crate) async fn body_panic_rolls_back_and_frees_the_key<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-panic"));
    let panicking: Box<Body<DB>> = Box::new(|write| {
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 1).await?;
            panic!("the handler has a bug");
        })
    });
    let outcome = execute(&db.store, &t, &k, "{}", panicking).await;
    let Err(WriteError::Panicked { message }) = outcome else {
        panic!("a panic is reported as one: {outcome:?}");
    };
    assert_eq!(message, "the handler has a bug");
    assert_key_is_free(&db, &t, &k).await;
}

pub(crate) async fn cancelled_body_rolls_back_and_frees_the_key<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default().with_lock_timeout(Duration::from_secs(10))).await;
    let (t, k) = (tenant("acme"), key("k-cancel"));
    let inside = Arc::new(Notify::new());
    let entered = inside.clone();
    let hanging: Box<Body<DB>> = Box::new(move |write| {
        let entered = entered.clone();
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 1).await?;
            entered.notify_one();
            pending::<()>().await;
            unreachable!("the client disconnects first")
        })
    });
    let store = db.store.clone();
    let (t2, k2) = (t.clone(), k.clone());
    let call = tokio::spawn(async move { execute(&store, &t2, &k2, "{}", hanging).await });
    inside.notified().await;
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());

    // The next call must not wait for the lock timeout: the claim was released by rollback.
    let started = std::time::Instant::now();
    assert_key_is_free(&db, &t, &k).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the retry did not wait on a stale claim"
    );
}

/// A twin in this process that outlasts the lock timeout is answered `InFlight`, and replays
/// once the first call has committed.
pub(crate) async fn twin_in_this_process_past_the_lock_timeout_is_in_flight<DB: TestDb>() {
    twin_past_the_lock_timeout_is_in_flight::<DB>(false).await;
}

pub(crate) async fn twin_past_the_lock_timeout_is_in_flight<DB: TestDb>(second_process: bool) {
    let lock_timeout = Duration::from_millis(300);
    let config = StoreConfig::default()
        .with_lock_timeout(lock_timeout)
        .with_retry_after(Duration::from_secs(2));
    let db = DB::fresh(config.clone()).await;
    let twin_store = if second_process {
        db.second_process(config).await
    } else {
        db.store.clone()
    };
    let (t, k) = (tenant("acme"), key("k-slow"));
    let (inside, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (entered, released) = (inside.clone(), release.clone());
    let slow: Box<Body<DB>> = Box::new(move |write| {
        let (entered, released) = (entered.clone(), released.clone());
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 1).await?;
            entered.notify_one();
            released.notified().await;
            Ok(StoredResponse::new(201, "slow"))
        })
    });
    let store = db.store.clone();
    let (t1, k1) = (t.clone(), k.clone());
    let first = tokio::spawn(async move { execute(&store, &t1, &k1, "{}", slow).await });
    inside.notified().await;

    let twin = execute(&twin_store, &t, &k, "{}", pay::<DB>(1)).await;
    assert_eq!(
        twin.unwrap(),
        Outcome::InFlight {
            retry_after: Duration::from_secs(2)
        }
    );

    release.notify_one();
    assert!(matches!(first.await.unwrap(), Ok(Outcome::New { .. })));
    let retry = execute(&twin_store, &t, &k, "{}", pay::<DB>(1)).await;
    assert_eq!(
        retry.unwrap(),
        Outcome::Replayed {
            response: StoredResponse::new(201, "slow")
        }
    );
    assert_eq!(db.count(PAYMENTS, &[]).await, 1);
}

/// Two replicas of a service (two stores, no shared memory) racing on one key: the database's
/// unique index alone makes it one write.
pub(crate) async fn twins_across_processes_write_once<DB: TestDb>() {
    let config = StoreConfig::default().with_lock_timeout(Duration::from_secs(30));
    let db = DB::fresh(config.clone()).await;
    let replicas = [db.store.clone(), db.second_process(config).await];
    let (t, k) = (tenant("acme"), key("k-replicas"));
    let outcomes = concurrently((0..100).map(|i| {
        let (store, t, k) = (replicas[i % 2].clone(), t.clone(), k.clone());
        async move { execute(&store, &t, &k, "{}", pay::<DB>(3)).await }
    }))
    .await;
    let new = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Outcome::New { .. })))
        .count();
    let replayed = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Outcome::Replayed { .. })))
        .count();
    assert_eq!((new, replayed), (1, 99), "{outcomes:?}");
    assert_eq!(db.count(PAYMENTS, &[]).await, 1);
}

pub(crate) async fn expired_keys_stop_replaying_and_are_purged<DB: TestDb>() {
    let retention = Duration::from_millis(200);
    let db = DB::fresh(StoreConfig::default().with_retention(retention)).await;
    let t = tenant("acme");
    for i in 0..3 {
        let outcome = execute(&db.store, &t, &key(&format!("old-{i}")), "{}", pay::<DB>(1)).await;
        assert!(matches!(outcome, Ok(Outcome::New { .. })));
    }
    tokio::time::sleep(retention * 2).await;

    // Expiry is checked on read: an expired key is neither replayed nor refused as a mismatch.
    let reuse: Box<Body<DB>> =
        Box::new(|_| Box::pin(async { Ok(StoredResponse::new(201, "again")) }));
    let outcome = execute(&db.store, &t, &key("old-0"), "{\"other\":1}", reuse).await;
    assert!(matches!(outcome, Ok(Outcome::New { .. })), "{outcome:?}");

    assert_eq!(db.store.purge_expired().await.unwrap(), 2);
    assert_eq!(
        db.count(KEYS, &[]).await,
        1,
        "the reused key is fresh again"
    );
    assert_eq!(
        db.count(PAYMENTS, &[]).await,
        3,
        "purging keys never touches business rows"
    );
}

/// The purge deletes at most the pace's batch of rows per statement and pauses after each full
/// batch: 25 expired keys in batches of 10 are 10, then 15 left for the whole pause.
pub(crate) async fn the_purge_deletes_in_batches_with_a_pause_between<DB: TestDb>() {
    let retention = Duration::from_millis(200);
    let pause = Duration::from_millis(1500);
    let pace = PurgePace::default().with_batch_rows(10).with_pause(pause);
    let db = DB::fresh(
        StoreConfig::default()
            .with_retention(retention)
            .with_purge_pace(pace),
    )
    .await;
    let t = tenant("acme");
    for i in 0..25 {
        let outcome = execute(&db.store, &t, &key(&format!("k-{i}")), "{}", pay::<DB>(1)).await;
        assert!(matches!(outcome, Ok(Outcome::New { .. })), "{outcome:?}");
    }
    tokio::time::sleep(retention * 2).await;

    let started = tokio::time::Instant::now();
    let purge = tokio::spawn({
        let store = db.store.clone();
        async move { store.purge_expired().await }
    });
    while db.count(KEYS, &[]).await == 25 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(db.count(KEYS, &[]).await, 15, "one batch of 10 rows");
    tokio::time::sleep(pause / 4).await;
    assert_eq!(
        db.count(KEYS, &[]).await,
        15,
        "the pause after a full batch"
    );
    assert_eq!(purge.await.unwrap().unwrap(), 25);
    assert!(
        started.elapsed() >= pause * 2,
        "two full batches, each followed by a pause: {:?}",
        started.elapsed()
    );
    assert_eq!(db.count(KEYS, &[]).await, 0);
}

pub(crate) async fn migrations_are_idempotent_and_kept_apart<DB: TestDb>()
where
    DB::Connection: sqlx::migrate::Migrate,
{
    let db = DB::fresh(StoreConfig::default()).await;
    if db.store.config().transaction_pooling() {
        let refused = db.store.migrate().await;
        assert!(
            matches!(
                refused,
                Err(idem_runtime::StoreError::MigrationsNeedADirectConnection)
            ),
            "behind a transaction pooler, migrations need a direct connection: {refused:?}"
        );
    }
    // A second migrate is a no-op (on the database itself, behind a pooler).
    db.migrate().await;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM _idem_migrations", &[]).await,
        13,
        "keys, outbox, audit log, outbox parking, database clock, audit roles, key expiry, outbox claims, audit repeats, the clock per statement, audit seals, plans on indexes, the outbox claim in order: each applied once, in idem's own table"
    );
    assert!(db.store.pending_migrations().await.unwrap().is_empty());

    // The application's own migrations, in sqlx's `_sqlx_migrations`, before and after idem's
    // again: each migrator sees only its own (sqlx refuses to run beside an applied version it
    // does not know, and so does idem).
    use sqlx::SqlSafeStr as _;
    let application =
        sqlx::migrate::Migrator::with_migrations(vec![sqlx::migrate::Migration::new(
            1,
            "the application's first table".into(),
            sqlx::migrate::MigrationType::Simple,
            sqlx::AssertSqlSafe("CREATE TABLE application_notes (id INTEGER PRIMARY KEY)")
                .into_sql_str(),
            false,
        )]);
    for round in ["first", "second"] {
        application
            .run(db.database())
            .await
            .unwrap_or_else(|error| panic!("the application's migrations, {round} run: {error}"));
        db.migrate().await;
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM _sqlx_migrations", &[]).await,
        1,
        "the application's table holds its one migration"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM _idem_migrations", &[]).await,
        13,
        "idem's holds its own thirteen"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM application_notes", &[])
            .await,
        0
    );
}

/// Writes whose bodies read a balance and append to it, all at once, under SERIALIZABLE (or
/// SQLite's single writer): every write lands exactly once and the balances form one serial
/// order. Returns the total number of attempts.
pub(crate) async fn conflicting_writes_land_once<DB: TestDb>(
    db: &TestStore<DB>,
    writes: usize,
) -> u32 {
    let outcomes = concurrently((0..writes).map(|i| {
        let store = db.store.clone();
        async move {
            let post: Box<Body<DB>> = Box::new(|write| {
                Box::pin(async move {
                    let balance = DB::append_ledger(write.tx(), "acme", 10).await?;
                    Ok(StoredResponse::new(201, balance.to_string()))
                })
            });
            let fingerprint = Fingerprint::of_request("postLedger", "POST", "/ledger", "", b"10");
            store
                .execute(
                    PostLedger,
                    WriteRequest::new(&tenant("acme"), &key(&format!("l-{i}")), fingerprint),
                    post,
                )
                .await
        }
    }))
    .await;
    let mut attempts = 0;
    for outcome in outcomes {
        match outcome {
            Ok(Outcome::New { attempts: n, .. }) => attempts += n,
            other => panic!("every conflicting write lands: {other:?}"),
        }
    }
    let writes = i64::try_from(writes).unwrap();
    assert_eq!(db.count("SELECT COUNT(*) FROM ledger", &[]).await, writes);
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT balance) FROM ledger", &[])
            .await,
        writes
    );
    assert_eq!(
        db.count("SELECT MAX(balance) FROM ledger", &[]).await,
        10 * writes
    );
    assert_eq!(db.count(KEYS, &[]).await, writes);
    attempts
}

/// An operation whose `RegisteredOperation` was written by hand, past the compiler's refusal
/// (it implements the hidden mark too), under a name a registered operation owns: its entry is
/// not in the registries, so the protocol runs nothing and writes nothing.
pub(crate) struct Forged;

static FORGED: idem_runtime::Operation = idem_runtime::Operation::__new(
    "createPayment",
    idem_runtime::OperationClass::Financial,
    None,
    file!(),
    line!(),
);

impl idem_runtime::__private::Registered for Forged {}

impl idem_runtime::RegisteredOperation for Forged {
    const OPERATION: &'static idem_runtime::Operation = &FORGED;
}

pub(crate) async fn an_operation_outside_the_registries_is_refused_and_writes_nothing<
    DB: TestDb,
>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-forged"));
    let request = WriteRequest::new(&t, &k, fingerprint("{}"));
    let refused = db.store.execute(Forged, request, pay::<DB>(100)).await;
    assert!(
        matches!(
            refused,
            Err(WriteError::Store(idem_runtime::StoreError::Unregistered {
                operation: "createPayment"
            }))
        ),
        "{refused:?}"
    );
    db.store.flush_audit().await;
    assert_eq!(db.count(PAYMENTS, &[]).await, 0);
    assert_eq!(db.count(KEYS, &[]).await, 0);
    assert_eq!(db.count(AUDIT, &[]).await, 0);
    // The registered operation of that name still writes.
    let registered = execute(&db.store, &t, &k, "{}", pay::<DB>(100)).await;
    assert!(
        matches!(registered, Ok(Outcome::New { .. })),
        "{registered:?}"
    );
}
