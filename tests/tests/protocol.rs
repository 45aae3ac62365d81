//! The write protocol on real databases: exactly once under concurrency, nothing left behind by
//! errors, panics or cancellation, mismatches refused, transient failures retried.
//!
//! Each scenario is written once, generic over the backend, and instantiated for SQLite always
//! and for PostgreSQL when the suite is built with `DATABASE_URL` (see `build.rs`).

use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use idem_runtime::{
    Fingerprint, IdempotencyKey, IdempotencyStore, OutboxDispatcher, Outcome, RequestPart,
    StoreConfig, StoredResponse, TenantId, WriteContext, WriteError, WriteRequest,
};
use idem_tests::{TestDb, TestStore};
use tokio::sync::Notify;

idem_runtime::operation! {
    /// A payment, written by the scenarios below as a job would.
    financial CreatePayment = "createPayment";
}
idem_runtime::operation! {
    /// A ledger posting whose body reads a balance and appends to it.
    financial PostLedger = "postLedger";
}

const PAYMENTS: &str = "SELECT COUNT(*) FROM payments";
const PAYMENTS_OF: &str = "SELECT COUNT(*) FROM payments WHERE tenant_id = $1";
const KEYS: &str = "SELECT COUNT(*) FROM idempotency_keys";
const KEYS_OF: &str = "SELECT COUNT(*) FROM idempotency_keys WHERE tenant_id = $1";

#[derive(Debug, thiserror::Error)]
enum PaymentError {
    #[error("the payment was refused by a business rule")]
    Refused,
    /// The card gateway's own connection failed: an I/O error that is not idem's.
    #[error("the card gateway could not be reached")]
    Gateway(#[source] std::io::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

type Body<DB> = dyn for<'c, 'r> FnMut(
        &'c mut WriteContext<'r, DB>,
    ) -> BoxFuture<'c, Result<StoredResponse, PaymentError>>
    + Send;

/// A payment that inserts one row keyed by the entity id and answers with a nonce, so a body
/// that ran twice would give two different responses.
fn pay<DB: TestDb>(amount_cents: i64) -> Box<Body<DB>> {
    Box::new(move |write| {
        Box::pin(async move {
            let id = write.entity_id();
            let tenant = write.tenant().as_str().to_owned();
            DB::insert_payment(write.tx(), id, &tenant, amount_cents).await?;
            let body = format!(r#"{{"id":"{id}","nonce":{}}}"#, fastrand::u64(..));
            Ok(StoredResponse::new(201, body).with_header("content-type", "application/json"))
        })
    })
}

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).unwrap()
}

fn fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of_request("createPayment", "POST", "/payments", "", body.as_bytes())
}

async fn execute<DB: TestDb>(
    store: &IdempotencyStore<DB>,
    tenant: &TenantId,
    key: &IdempotencyKey,
    body: &str,
    write: Box<Body<DB>>,
) -> Result<Outcome, WriteError<PaymentError>> {
    store
        .execute(
            CreatePayment,
            WriteRequest::new(tenant, key, fingerprint(body)),
            write,
        )
        .await
}

/// Runs `calls` concurrently on the multi-threaded runtime, each on its own task.
async fn concurrently<T: Send + 'static>(
    calls: impl IntoIterator<Item = impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("a concurrent call panicked"))
        .collect()
}

async fn burst_of_500_with_one_key_writes_once<DB: TestDb>() {
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

async fn fifty_tenants_by_ten_keys_write_500_rows<DB: TestDb>() {
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

async fn one_key_in_two_tenants_is_two_writes<DB: TestDb>() {
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

async fn retry_replays_and_another_payload_is_a_mismatch<DB: TestDb>() {
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
async fn assert_key_is_free<DB: TestDb>(db: &TestStore<DB>, t: &TenantId, k: &IdempotencyKey) {
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

async fn body_error_rolls_back_and_frees_the_key<DB: TestDb>() {
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

async fn body_panic_rolls_back_and_frees_the_key<DB: TestDb>() {
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

async fn cancelled_body_rolls_back_and_frees_the_key<DB: TestDb>() {
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
async fn twin_in_this_process_past_the_lock_timeout_is_in_flight<DB: TestDb>() {
    twin_past_the_lock_timeout_is_in_flight::<DB>(false).await;
}

async fn twin_past_the_lock_timeout_is_in_flight<DB: TestDb>(second_process: bool) {
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
async fn twins_across_processes_write_once<DB: TestDb>() {
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

async fn expired_keys_stop_replaying_and_are_purged<DB: TestDb>() {
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

async fn migrations_are_idempotent_and_kept_apart<DB: TestDb>()
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
        10,
        "keys, outbox, audit log, outbox parking, database clock, audit roles, key expiry, outbox claims, audit repeats, the clock per statement: each applied once, in idem's own table"
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
        10,
        "idem's holds its own ten"
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
async fn conflicting_writes_land_once<DB: TestDb>(db: &TestStore<DB>, writes: usize) -> u32 {
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

const EVENTS: &str = "SELECT COUNT(*) FROM idem_outbox";
const PENDING_EVENTS: &str = "SELECT COUNT(*) FROM idem_outbox WHERE delivered_at_ms IS NULL";

/// A payment that records a `receipt` event, or refuses after recording it.
fn pay_with_receipt<DB: TestDb>(refuse: bool) -> Box<Body<DB>> {
    Box::new(move |write| {
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 10).await?;
            let event = write.record_event("receipt", id.as_bytes()).await?;
            if refuse {
                return Err(PaymentError::Refused);
            }
            Ok(StoredResponse::new(201, event.to_string()))
        })
    })
}

/// Counts deliveries per event id, as a deduplicating handler would see them.
#[derive(Clone, Default)]
struct Deliveries(Arc<std::sync::Mutex<Vec<uuid::Uuid>>>);

impl Deliveries {
    fn dispatcher<DB: TestDb>(
        &self,
        store: IdempotencyStore<DB>,
        fail: bool,
    ) -> OutboxDispatcher<DB> {
        let seen = self.0.clone();
        OutboxDispatcher::new(store).on("receipt", move |event| {
            let seen = seen.clone();
            async move {
                if fail {
                    return Err("the mail server is down".into());
                }
                seen.lock().unwrap().push(event.event_id);
                Ok(())
            }
        })
    }

    fn ids(&self) -> Vec<uuid::Uuid> {
        self.0.lock().unwrap().clone()
    }
}

async fn one_event_per_new_write_none_per_replay_or_refusal<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-receipt"));
    let first = execute(&db.store, &t, &k, "{}", pay_with_receipt::<DB>(false)).await;
    let Ok(Outcome::New {
        response,
        events: 1,
        ..
    }) = first
    else {
        panic!("the write records one event: {first:?}");
    };
    let replay = execute(&db.store, &t, &k, "{}", pay_with_receipt::<DB>(false)).await;
    assert!(matches!(replay, Ok(Outcome::Replayed { .. })));
    let refused = execute(
        &db.store,
        &t,
        &key("k-refused"),
        "{}",
        pay_with_receipt::<DB>(true),
    )
    .await;
    assert!(matches!(
        refused,
        Err(WriteError::Handler(PaymentError::Refused))
    ));
    assert_eq!(
        db.count(EVENTS, &[]).await,
        1,
        "no event for a replay or a refusal"
    );

    let deliveries = Deliveries::default();
    let dispatcher = deliveries.dispatcher(db.store.clone(), false);
    assert_eq!(dispatcher.dispatch_pending().await.unwrap().delivered, 1);
    assert_eq!(dispatcher.dispatch_pending().await.unwrap().delivered, 0);
    let event_id = String::from_utf8(response.body).unwrap();
    assert_eq!(
        deliveries
            .ids()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [event_id]
    );
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
}

/// The process dies after the commit and before dispatch (or its handler fails): the event is
/// still pending, and the next process delivers it. Nothing acknowledged is lost.
async fn events_survive_a_crash_between_commit_and_dispatch<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-crash"));
    let outcome = execute(&db.store, &t, &k, "{}", pay_with_receipt::<DB>(false)).await;
    assert!(matches!(outcome, Ok(Outcome::New { events: 1, .. })));

    let deliveries = Deliveries::default();
    let failing = deliveries
        .dispatcher(db.store.clone(), true)
        .with_backoff(Duration::ZERO, Duration::ZERO);
    assert_eq!(failing.dispatch_pending().await.unwrap().failed, 1);
    drop(failing);
    assert_eq!(
        db.count(PENDING_EVENTS, &[]).await,
        1,
        "the event outlives the crash"
    );

    let restarted = db.second_process(StoreConfig::default()).await;
    let report = deliveries
        .dispatcher(restarted, false)
        .dispatch_pending()
        .await
        .unwrap();
    assert_eq!(report.delivered, 1);
    assert_eq!(deliveries.ids().len(), 1);
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
}

/// A running dispatcher is woken by the commit; it does not wait for its poll interval.
async fn a_running_dispatcher_delivers_after_the_commit<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let deliveries = Deliveries::default();
    let running = tokio::spawn(
        deliveries
            .dispatcher(db.store.clone(), false)
            .run(Duration::from_secs(3600)),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let outcome = execute(
        &db.store,
        &tenant("acme"),
        &key("k-run"),
        "{}",
        pay_with_receipt::<DB>(false),
    )
    .await;
    assert!(matches!(outcome, Ok(Outcome::New { events: 1, .. })));
    // The handler sees the event before the dispatcher marks it delivered: wait for both.
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        while deliveries.ids().is_empty() || db.count(PENDING_EVENTS, &[]).await > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    running.abort();
    assert!(
        delivered.is_ok(),
        "the dispatcher delivered and marked the event within seconds, not at its hourly poll"
    );
    assert_eq!(deliveries.ids().len(), 1, "delivered once");
}

/// A handler's own error that wraps an I/O error (its payment gateway's) while the write's
/// connection is fine is the handler's answer, not a lost connection: idem reinterprets only
/// the failure of its own connection.
async fn a_handlers_own_io_error_is_its_answer<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let gateway_down: Box<Body<DB>> = Box::new(|write| {
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 10).await?;
            Err(PaymentError::Gateway(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the gateway reset the connection",
            )))
        })
    });
    let outcome = execute(&db.store, &tenant("acme"), &key("k-gw"), "{}", gateway_down).await;
    assert!(
        matches!(outcome, Err(WriteError::Handler(PaymentError::Gateway(_)))),
        "{outcome:?}"
    );
    assert_eq!(db.count(PAYMENTS, &[]).await, 0, "rolled back");
    assert_eq!(db.count(KEYS, &[]).await, 0, "the key is free");
}

/// A write that records the events `first` and `second`, in that order.
fn pay_with_two_events<DB: TestDb>() -> Box<Body<DB>> {
    Box::new(|write| {
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 10).await?;
            write.record_event("first", id.as_bytes()).await?;
            write.record_event("second", id.as_bytes()).await?;
            Ok(StoredResponse::new(201, id.to_string()))
        })
    })
}

/// `writes` writes of two events each, under the keys `{prefix}-{n}`.
async fn record_writes<DB: TestDb>(store: &IdempotencyStore<DB>, prefix: &str, writes: usize) {
    for n in 0..writes {
        let outcome = execute(
            store,
            &tenant("acme"),
            &key(&format!("{prefix}-{n}")),
            "{}",
            pay_with_two_events::<DB>(),
        )
        .await;
        assert!(
            matches!(outcome, Ok(Outcome::New { events: 2, .. })),
            "{outcome:?}"
        );
    }
}

/// What handlers saw, in the order they saw it: (entity id, topic, event id).
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<Vec<(uuid::Uuid, String, uuid::Uuid)>>>);

impl Seen {
    /// A dispatcher whose handlers of `first` and `second` record what they see.
    fn dispatcher<DB: TestDb>(&self, store: IdempotencyStore<DB>) -> OutboxDispatcher<DB> {
        let handler = |seen: Arc<std::sync::Mutex<Vec<_>>>| {
            move |event: idem_runtime::OutboxEvent| {
                let seen = seen.clone();
                async move {
                    // Handlers that take a moment, so that dispatchers overlap, and `first`
                    // longer than `second`, so that delivering them at once would reorder them.
                    let pause = if event.topic == "first" { 10 } else { 1 };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    seen.lock()
                        .unwrap()
                        .push((event.entity_id, event.topic, event.event_id));
                    Ok(())
                }
            }
        };
        OutboxDispatcher::new(store)
            .on("first", handler(self.0.clone()))
            .on("second", handler(self.0.clone()))
    }

    fn all(&self) -> Vec<(uuid::Uuid, String, uuid::Uuid)> {
        self.0.lock().unwrap().clone()
    }
}

/// Two processes' dispatchers on one outbox, at once: each event's handler runs once, and no
/// failure is counted.
async fn two_dispatchers_deliver_each_event_once<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    record_writes(&db.store, "k-two", 150).await;
    let seen = Seen::default();
    let other = db.second_process(StoreConfig::default()).await;
    let (one, two) = (
        seen.dispatcher(db.store.clone()).with_batch_size(20),
        seen.dispatcher(other).with_batch_size(20),
    );
    let (first, second) = tokio::join!(one.dispatch_pending(), two.dispatch_pending());
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(
        first.delivered + second.delivered,
        300,
        "{first:?} {second:?}"
    );
    let mut ids: Vec<uuid::Uuid> = seen.all().into_iter().map(|(_, _, id)| id).collect();
    assert_eq!(ids.len(), 300, "each handler ran once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 300, "no event was handled twice");
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idem_outbox WHERE attempts > 0", &[])
            .await,
        0,
        "no delivery counted as failed"
    );
}

/// A backlog larger than a batch drains in one pass: full batches go again at once.
async fn a_backlog_drains_batch_after_batch<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    record_writes(&db.store, "k-backlog", 125).await;
    let seen = Seen::default();
    let report = seen
        .dispatcher(db.store.clone())
        .with_batch_size(100)
        .dispatch_pending()
        .await
        .unwrap();
    assert_eq!(report.delivered, 250);
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
}

/// A handler that never returns is cut at the delivery timeout and counted as failed; the other
/// writes' events are delivered meanwhile, and the stuck write's later event waits for its retry.
async fn a_stuck_handler_delays_nobody_else<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let stuck: Box<Body<DB>> = Box::new(|write| {
        Box::pin(async move {
            write.record_event("stuck", b"").await?;
            write.record_event("second", b"").await?;
            Ok(StoredResponse::new(201, "recorded"))
        })
    });
    execute(&db.store, &tenant("acme"), &key("k-stuck"), "{}", stuck)
        .await
        .unwrap();
    record_writes(&db.store, "k-fine", 20).await;
    let seen = Seen::default();
    let dispatcher = seen
        .dispatcher(db.store.clone())
        .on("stuck", |_| std::future::pending())
        .with_delivery_timeout(Duration::from_millis(300))
        .with_parallelism(4);
    let report = tokio::time::timeout(Duration::from_secs(20), dispatcher.dispatch_pending())
        .await
        .expect("a stuck handler does not stall the pass")
        .unwrap();
    assert_eq!(report.delivered, 40, "{report:?}");
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idem_outbox WHERE topic = $1 AND attempts = 1 AND last_error LIKE '%delivery timeout%'",
            &["stuck"]
        )
        .await,
        1
    );
    assert_eq!(
        db.count(PENDING_EVENTS, &[]).await,
        2,
        "the stuck event, and its write's later event behind it"
    );
    assert_eq!(
        seen.all().len(),
        40,
        "the stuck write's second event waits for its retry"
    );
}

/// The events of one write arrive in the order it recorded them, whatever the parallelism.
async fn one_writes_events_arrive_in_order<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    record_writes(&db.store, "k-order", 40).await;
    let seen = Seen::default();
    seen.dispatcher(db.store.clone())
        .with_parallelism(8)
        .dispatch_pending()
        .await
        .unwrap();
    let seen = seen.all();
    assert_eq!(seen.len(), 80);
    for (at, (entity, topic, _)) in seen.iter().enumerate() {
        if topic == "second" {
            let first = seen
                .iter()
                .position(|(other, topic, _)| other == entity && topic == "first")
                .expect("the write's first event was delivered");
            assert!(first < at, "{entity}: second before first");
        }
    }
}

/// A key reused after it and its delivered event expired records a new event id, so a handler
/// that dedupes on event ids runs the new write's side effect.
async fn a_reused_key_records_new_event_ids<DB: TestDb>() {
    let retention = Duration::from_millis(200);
    let db = DB::fresh(StoreConfig::default().with_retention(retention)).await;
    let receipt: fn() -> Box<Body<DB>> = || {
        Box::new(|write| {
            Box::pin(async move {
                let event = write.record_event("receipt", b"").await?;
                Ok(StoredResponse::new(201, event.to_string()))
            })
        })
    };
    let deliveries = Deliveries::default();
    let dispatcher = deliveries.dispatcher(db.store.clone(), false);
    execute(&db.store, &tenant("acme"), &key("k-again"), "{}", receipt())
        .await
        .unwrap();
    dispatcher.dispatch_pending().await.unwrap();
    tokio::time::sleep(retention * 2).await;
    // The key expired; its delivered event is still kept (its retention is the outbox's).
    let again = execute(&db.store, &tenant("acme"), &key("k-again"), "{}", receipt()).await;
    assert!(
        matches!(again, Ok(Outcome::New { events: 1, .. })),
        "{again:?}"
    );
    dispatcher.dispatch_pending().await.unwrap();
    let mut ids = deliveries.ids();
    ids.dedup();
    assert_eq!(
        ids.len(),
        2,
        "two writes, two event ids, two deliveries: {ids:?}"
    );
    assert_eq!(db.count(EVENTS, &[]).await, 2);
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
}

/// Each event's id is what CONTRACT.md and `record_event` say: UUID v5 of
/// `{topic}:{n}:{claim}` (the write's `n`th event, the id of the attempt holding the key)
/// under the write's entity id. A handler that dedupes on it may rely on it: the stored row and
/// the delivered event carry that id.
async fn event_ids_derive_from_the_entity_the_place_and_the_claim<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    record_writes(&db.store, "k-derived", 1).await;
    let claim = db
        .count("SELECT attempt_id FROM idempotency_keys", &[])
        .await;
    let entity = idem_runtime::entity_id(&tenant("acme"), "createPayment", &key("k-derived-0"));
    let expected: Vec<uuid::Uuid> = ["first", "second"]
        .iter()
        .zip(1..)
        .map(|(topic, n)| uuid::Uuid::new_v5(&entity, format!("{topic}:{n}:{claim}").as_bytes()))
        .collect();
    let stored_as = [
        "SELECT COUNT(*) FROM idem_outbox WHERE event_id = $1 AND sequence_in_write = 1",
        "SELECT COUNT(*) FROM idem_outbox WHERE event_id = $1 AND sequence_in_write = 2",
    ];
    for (id, sql) in expected.iter().zip(stored_as) {
        assert_eq!(db.count(sql, &[&id.to_string()]).await, 1, "{sql}: {id}");
    }
    let seen = Seen::default();
    seen.dispatcher(db.store.clone())
        .dispatch_pending()
        .await
        .unwrap();
    let delivered: Vec<uuid::Uuid> = seen.all().into_iter().map(|(_, _, id)| id).collect();
    assert_eq!(delivered, expected, "and delivered with it");
}

/// An operation whose `RegisteredOperation` was written by hand, past the compiler's refusal
/// (it implements the hidden mark too), under a name a registered operation owns: its entry is
/// not in the registries, so the protocol runs nothing and writes nothing.
struct Forged;

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

async fn an_operation_outside_the_registries_is_refused_and_writes_nothing<DB: TestDb>() {
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

const PARKED_EVENTS: &str = "SELECT COUNT(*) FROM idem_outbox WHERE parked_at_ms IS NOT NULL";

/// Three payments with receipts, in this order; their event ids.
async fn three_receipts<DB: TestDb>(db: &TestStore<DB>) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..3 {
        let outcome = execute(
            &db.store,
            &tenant("acme"),
            &key(&format!("k-receipt-{n}")),
            "{}",
            pay_with_receipt::<DB>(false),
        )
        .await;
        let Ok(Outcome::New { response, .. }) = outcome else {
            panic!("the write records its event: {outcome:?}");
        };
        ids.push(String::from_utf8(response.body).unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    ids
}

/// A handler that fails for one event backs it off, parks it after the attempt limit with its
/// attempts and last error, and delivers the others meanwhile; a requeued event is delivered.
async fn a_failing_event_is_parked_and_never_blocks_the_rest<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let ids = three_receipts(&db).await;
    let poison = ids[0].clone();
    let delivered = Deliveries::default();
    let seen = delivered.0.clone();
    let dispatcher = OutboxDispatcher::new(db.store.clone())
        .with_max_attempts(3)
        .with_backoff(Duration::ZERO, Duration::ZERO)
        .on("receipt", move |event| {
            let (seen, poison) = (seen.clone(), poison.clone());
            async move {
                if event.event_id.to_string() == poison {
                    return Err("the mail server refuses this address".into());
                }
                seen.lock().unwrap().push(event.event_id);
                Ok(())
            }
        });
    let first = dispatcher.dispatch_pending().await.unwrap();
    assert_eq!((first.delivered, first.failed, first.parked), (2, 1, 0));
    let second = dispatcher.dispatch_pending().await.unwrap();
    assert_eq!((second.delivered, second.failed, second.parked), (0, 1, 0));
    let third = dispatcher.dispatch_pending().await.unwrap();
    assert_eq!((third.delivered, third.failed, third.parked), (0, 1, 1));
    let fourth = dispatcher.dispatch_pending().await.unwrap();
    assert_eq!(
        (fourth.delivered, fourth.failed, fourth.parked),
        (0, 0, 0),
        "parked: not tried again"
    );
    assert_eq!(delivered.ids().len(), 2);
    assert_eq!(db.count(PARKED_EVENTS, &[]).await, 1);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idem_outbox WHERE event_id = $1 AND attempts = 3 AND last_error LIKE '%refuses this address%' AND delivered_at_ms IS NULL",
            &[&ids[0]]
        )
        .await,
        1
    );
    let parked = dispatcher.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(
        (parked[0].event_id.as_str(), parked[0].attempts),
        (ids[0].as_str(), 3)
    );
    let backlog = dispatcher.backlog().await.unwrap();
    assert_eq!(
        (backlog.pending, backlog.parked, backlog.oldest_pending_age),
        (0, 1, None)
    );

    // Fixed (here: another dispatcher whose handler succeeds), the event is requeued by hand.
    assert!(
        !dispatcher.requeue(&ids[1]).await.unwrap(),
        "a delivered event is not parked"
    );
    assert!(dispatcher.requeue(&ids[0]).await.unwrap());
    assert_eq!(db.count(PARKED_EVENTS, &[]).await, 0);
    let fixed = Deliveries::default().dispatcher(db.store.clone(), false);
    assert_eq!(fixed.dispatch_pending().await.unwrap().delivered, 1);
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
}

/// An event that nobody handles, or whose row cannot be decoded, does not hold up the events
/// behind it, even when a batch is one event.
async fn unhandled_and_undecodable_events_do_not_block_the_queue<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let ids = three_receipts(&db).await;
    // The oldest event's row is corrupt; the second's topic has no handler.
    DB::execute(db.store.pool(), "UPDATE idem_outbox SET entity_id = 'not a uuid' WHERE created_at_ms = (SELECT MIN(created_at_ms) FROM idem_outbox)").await.unwrap();
    DB::execute(db.store.pool(), "UPDATE idem_outbox SET topic = 'fax' WHERE created_at_ms = (SELECT MIN(created_at_ms) FROM idem_outbox WHERE entity_id <> 'not a uuid')").await.unwrap();
    let deliveries = Deliveries::default();
    let dispatcher = deliveries
        .dispatcher(db.store.clone(), false)
        .with_batch_size(1)
        .with_backoff(Duration::from_secs(3600), Duration::from_secs(3600));
    // One event a batch, batch after batch in one pass: the corrupt row is parked at once (no
    // retry decodes it), the unhandled one backs off, and the third is not held up.
    let pass = dispatcher.dispatch_pending().await.unwrap();
    assert_eq!(
        (pass.parked, pass.unhandled, pass.delivered),
        (1, 1, 1),
        "{pass:?}"
    );
    assert_eq!(
        deliveries
            .ids()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [ids[2].clone()]
    );
    assert_eq!(
        dispatcher.dispatch_pending().await.unwrap(),
        Default::default()
    );
    assert_eq!(db.count(PARKED_EVENTS, &[]).await, 1);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idem_outbox WHERE topic = 'fax' AND attempts = 1 AND parked_at_ms IS NULL AND last_error LIKE '%no handler%'", &[]).await,
        1
    );
    let backlog = dispatcher.backlog().await.unwrap();
    assert_eq!((backlog.pending, backlog.parked), (1, 1));
    assert!(
        backlog
            .oldest_pending_age
            .is_some_and(|age| age > Duration::ZERO)
    );
}

/// A running dispatcher outlives a database failure: its passes fail, are logged and retried,
/// and once the table is back it delivers. It stops between events when told to.
async fn a_running_dispatcher_survives_database_errors_and_stops_when_told<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    DB::execute(
        db.store.pool(),
        "ALTER TABLE idem_outbox RENAME TO idem_outbox_away",
    )
    .await
    .unwrap();
    let deliveries = Deliveries::default();
    let shutdown = Arc::new(Notify::new());
    let stop = shutdown.clone();
    let running = tokio::spawn(
        deliveries
            .dispatcher(db.store.clone(), false)
            .with_backoff(Duration::from_millis(5), Duration::from_millis(20))
            .run_until(
                Duration::from_millis(50),
                async move { stop.notified().await },
            ),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !running.is_finished(),
        "the dispatcher outlives failing passes"
    );
    DB::execute(
        db.store.pool(),
        "ALTER TABLE idem_outbox_away RENAME TO idem_outbox",
    )
    .await
    .unwrap();
    let outcome = execute(
        &db.store,
        &tenant("acme"),
        &key("k-back"),
        "{}",
        pay_with_receipt::<DB>(false),
    )
    .await;
    assert!(
        matches!(outcome, Ok(Outcome::New { events: 1, .. })),
        "{outcome:?}"
    );
    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        while deliveries.ids().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(delivered.is_ok(), "delivered once the database is back");
    shutdown.notify_one();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the dispatcher stops when told")
        .unwrap();
    assert_eq!(db.count(PENDING_EVENTS, &[]).await, 0);
}

const AUDIT: &str = "SELECT COUNT(*) FROM idempotent_write_audit_log";

/// Sixteen clients replay one key as fast as they can for 1.2 s: every replay is in the audit
/// log, counted, in at most one row per coalescing window (300 ms here) and two more for the
/// edges, each row saying when its first and last replay happened (no further apart than the
/// flood lasted); a mismatch and a replay of another key each keep a row of their own.
async fn a_replay_flood_writes_a_bounded_number_of_audit_rows<DB: TestDb>() {
    const WINDOW: Duration = Duration::from_millis(300);
    const FLOOD: Duration = Duration::from_millis(1200);
    let db = DB::fresh(StoreConfig::default().with_audit_coalescing_window(WINDOW)).await;
    let t = tenant("acme");
    for k in ["k-flood", "k-other"] {
        execute(&db.store, &t, &key(k), "{}", pay::<DB>(1))
            .await
            .unwrap();
    }
    let started = std::time::Instant::now();
    let replays: Vec<usize> = concurrently((0..16).map(|_| {
        let (store, t) = (db.store.clone(), t.clone());
        async move {
            let mut replays = 0;
            while started.elapsed() < FLOOD {
                let outcome = execute(&store, &t, &key("k-flood"), "{}", pay::<DB>(1)).await;
                assert!(
                    matches!(outcome, Ok(Outcome::Replayed { .. })),
                    "{outcome:?}"
                );
                replays += 1;
            }
            replays
        }
    }))
    .await;
    let flooded = started.elapsed();
    let replays: usize = replays.iter().sum();
    let mismatch = execute(
        &db.store,
        &t,
        &key("k-flood"),
        "{\"other\":1}",
        pay::<DB>(1),
    )
    .await;
    assert!(
        matches!(mismatch, Ok(Outcome::FingerprintMismatch { .. })),
        "{mismatch:?}"
    );
    let other = execute(&db.store, &t, &key("k-other"), "{}", pay::<DB>(1)).await;
    assert!(matches!(other, Ok(Outcome::Replayed { .. })), "{other:?}");
    db.store.flush_audit().await;

    let flood_hash = idem_runtime::sha256_hex(b"k-flood");
    let replay_rows = "SELECT COUNT(*) FROM idempotent_write_audit_log
                       WHERE outcome = 'replayed' AND key_hash = $1";
    let rows = db.count(replay_rows, &[&flood_hash]).await;
    let bound = i64::try_from(FLOOD.as_millis() / WINDOW.as_millis()).unwrap() + 2;
    assert!(
        (1..=bound).contains(&rows),
        "{replays} replays in {rows} rows, not at most {bound}"
    );
    assert!(replays > 100, "a flood: {replays} replays");
    assert_eq!(
        db.count(
            "SELECT CAST(SUM(repeat_count) AS BIGINT) FROM idempotent_write_audit_log
             WHERE outcome = 'replayed' AND key_hash = $1",
            &[&flood_hash]
        )
        .await,
        i64::try_from(replays).unwrap(),
        "every replay counted"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log
             WHERE outcome = 'replayed' AND key_hash = $1 AND first_seen_at_ms <= created_at_ms",
            &[&flood_hash]
        )
        .await,
        rows,
        "each row spans its first and last replay"
    );
    // Both times are the same insert's clock less two ages: their difference is exact.
    let widest = db
        .count(
            "SELECT CAST(MAX(created_at_ms - first_seen_at_ms) AS BIGINT)
             FROM idempotent_write_audit_log WHERE outcome = 'replayed' AND key_hash = $1",
            &[&flood_hash],
        )
        .await;
    assert!(
        widest <= i64::try_from(flooded.as_millis()).unwrap() + 1,
        "a row spans {widest} ms, longer than the flood's {flooded:?}"
    );
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = 'mismatch'",
            &[]
        )
        .await,
        1
    );
    assert_eq!(
        db.count(replay_rows, &[&idem_runtime::sha256_hex(b"k-other")])
            .await,
        1,
        "another key's replay is its own row"
    );
}

/// A flush does not wait out the coalescing window: with a 30 s window, a replay queued while
/// the writer lingers after an earlier one is written as soon as a flush asks.
async fn a_flush_cuts_the_coalescing_window_short<DB: TestDb>() {
    let db =
        DB::fresh(StoreConfig::default().with_audit_coalescing_window(Duration::from_secs(30)))
            .await;
    let (t, k) = (tenant("acme"), key("k-linger"));
    for _ in 0..2 {
        execute(&db.store, &t, &k, "{}", pay::<DB>(1))
            .await
            .unwrap();
    }
    // The first replay's row is written; the writer lingers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    execute(&db.store, &t, &k, "{}", pay::<DB>(1))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), db.store.flush_audit())
        .await
        .expect("the flush does not wait for the window");
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = 'replayed'",
            &[]
        )
        .await,
        2,
        "the lingering writer's row and the one the flush asked for"
    );
}

/// The database itself refuses to change or remove audit rows; only the logged maintenance
/// path removes rows past its horizon.
async fn the_audit_log_is_append_only<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-audit"));
    for _ in 0..2 {
        execute(&db.store, &t, &k, "{}", pay::<DB>(1))
            .await
            .unwrap();
    }
    db.store.flush_audit().await;
    assert_eq!(
        db.count(AUDIT, &[]).await,
        2,
        "the new write and its replay"
    );

    let update = DB::execute(
        db.store.pool(),
        "UPDATE idempotent_write_audit_log SET outcome = 'new'",
    )
    .await;
    let delete = DB::execute(db.store.pool(), "DELETE FROM idempotent_write_audit_log").await;
    for refused in [update, delete] {
        let error = refused.expect_err("the database refuses");
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = 'replayed'",
            &[]
        )
        .await,
        1
    );

    assert_eq!(
        db.store
            .purge_audit_older_than(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    if DB::NAME == "PostgreSQL" {
        assert_eq!(
            db.store
                .purge_audit_older_than(Duration::ZERO)
                .await
                .unwrap(),
            0,
            "rows younger than the owner's floor (90 days) stay, whatever the caller asks"
        );
        DB::execute(
            db.store.pool(),
            "UPDATE idempotent_write_audit_settings SET min_retention_ms = 0",
        )
        .await
        .expect("the owner lowers the floor");
    }
    assert_eq!(
        db.store
            .purge_audit_older_than(Duration::ZERO)
            .await
            .unwrap(),
        2
    );
    assert_eq!(db.count(AUDIT, &[]).await, 0);
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_maintenance",
            &[]
        )
        .await,
        0,
        "the maintenance horizon closes with its transaction"
    );
    let after = DB::execute(db.store.pool(), "DELETE FROM idempotent_write_audit_log").await;
    assert!(after.is_ok(), "an empty log deletes nothing");
    assert_eq!(
        db.count(PAYMENTS, &[]).await,
        1,
        "audit maintenance never touches business rows"
    );
}

/// One maintenance run deletes the expired keys, the delivered events past their retention and
/// the audit rows past theirs (on PostgreSQL, never younger than the owner's floor); pending
/// events, live keys and business rows stay.
async fn maintenance_purges_what_retention_allows_and_nothing_else<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let acme = tenant("acme");
    for n in 0..3 {
        execute(
            &db.store,
            &acme,
            &key(&format!("k-old-{n}")),
            "{}",
            pay_with_receipt::<DB>(false),
        )
        .await
        .unwrap();
    }
    let deliveries = Deliveries::default();
    assert_eq!(
        deliveries
            .dispatcher(db.store.clone(), false)
            .dispatch_pending()
            .await
            .unwrap()
            .delivered,
        3
    );
    // The three old keys expired a day ago, by their rows' own word; the live one has 24 h.
    DB::execute(
        db.store.pool(),
        "UPDATE idempotency_keys SET expires_at_ms = expires_at_ms - 2 * 86400000",
    )
    .await
    .unwrap();
    execute(
        &db.store,
        &acme,
        &key("k-live"),
        "{}",
        pay_with_receipt::<DB>(false),
    )
    .await
    .unwrap();
    db.store.flush_audit().await;

    let maintenance = idem_runtime::Maintenance::new(db.store.clone())
        .with_outbox_retention(Duration::ZERO)
        .with_audit_retention(Duration::ZERO);
    let report = maintenance.run_once().await.unwrap();
    assert_eq!(report.expired_keys, 3);
    assert_eq!(report.delivered_events, 3);
    assert_eq!(db.count(KEYS, &[]).await, 1, "the live key stays");
    assert_eq!(
        db.count(EVENTS, &[]).await,
        1,
        "the undelivered event stays"
    );
    assert_eq!(
        db.count(PAYMENTS, &[]).await,
        4,
        "business rows are never touched"
    );
    if DB::NAME == "PostgreSQL" {
        assert_eq!(report.audit_rows, 0, "the owner's 90-day floor holds");
        assert_eq!(db.count(AUDIT, &[]).await, 4);
        DB::execute(
            db.store.pool(),
            "UPDATE idempotent_write_audit_settings SET min_retention_ms = 0",
        )
        .await
        .unwrap();
        assert_eq!(maintenance.run_once().await.unwrap().audit_rows, 4);
    } else {
        assert_eq!(report.audit_rows, 4);
    }
    assert_eq!(db.count(AUDIT, &[]).await, 0);
    let again = maintenance.run_once().await.unwrap();
    assert_eq!(
        (again.expired_keys, again.delivered_events, again.audit_rows),
        (0, 0, 0)
    );
}

/// Past the audit queue's limit a request writes its own audit row before it is answered:
/// every replay of a burst has its row the moment the burst is answered, none lost.
async fn a_full_audit_queue_makes_requests_write_their_own_rows<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default().with_audit_queue_limit(0)).await;
    let (t, k) = (tenant("acme"), key("k-queue"));
    execute(&db.store, &t, &k, "{}", pay::<DB>(1))
        .await
        .unwrap();
    let replays = concurrently((0..20).map(|_| {
        let (store, t, k) = (db.store.clone(), t.clone(), k.clone());
        async move {
            execute(&store, &t, &k, "{}", pay::<DB>(1))
                .await
                .map(|outcome| matches!(outcome, Outcome::Replayed { .. }))
        }
    }))
    .await;
    assert!(replays.iter().all(|replayed| matches!(replayed, Ok(true))));
    // No flush: with no room in the queue, each row was written before its answer.
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = 'replayed'",
            &[]
        )
        .await,
        20
    );
    assert_eq!(db.count(AUDIT, &[]).await, 21);
}

/// Every generic scenario, listed once with the worker threads it runs on; each backend
/// instantiates the list. The compiler checks each name against its `async fn`.
macro_rules! with_scenarios {
    ($callback:ident!($($args:tt)*)) => {
        $callback!($($args)* [
            4 burst_of_500_with_one_key_writes_once,
            4 fifty_tenants_by_ten_keys_write_500_rows,
            2 one_key_in_two_tenants_is_two_writes,
            2 retry_replays_and_another_payload_is_a_mismatch,
            2 body_error_rolls_back_and_frees_the_key,
            2 body_panic_rolls_back_and_frees_the_key,
            2 cancelled_body_rolls_back_and_frees_the_key,
            2 twin_in_this_process_past_the_lock_timeout_is_in_flight,
            4 twins_across_processes_write_once,
            2 expired_keys_stop_replaying_and_are_purged,
            2 one_event_per_new_write_none_per_replay_or_refusal,
            2 events_survive_a_crash_between_commit_and_dispatch,
            2 a_running_dispatcher_delivers_after_the_commit,
            2 a_failing_event_is_parked_and_never_blocks_the_rest,
            4 two_dispatchers_deliver_each_event_once,
            2 a_backlog_drains_batch_after_batch,
            2 a_stuck_handler_delays_nobody_else,
            2 one_writes_events_arrive_in_order,
            2 a_reused_key_records_new_event_ids,
            4 a_replay_flood_writes_a_bounded_number_of_audit_rows,
            2 a_flush_cuts_the_coalescing_window_short,
            2 event_ids_derive_from_the_entity_the_place_and_the_claim,
            2 a_handlers_own_io_error_is_its_answer,
            2 unhandled_and_undecodable_events_do_not_block_the_queue,
            2 a_running_dispatcher_survives_database_errors_and_stops_when_told,
            2 maintenance_purges_what_retention_allows_and_nothing_else,
            4 a_full_audit_queue_makes_requests_write_their_own_rows,
            2 an_operation_outside_the_registries_is_refused_and_writes_nothing,
            2 the_audit_log_is_append_only,
            2 migrations_are_idempotent_and_kept_apart,
        ]);
    };
}

/// One `#[tokio::test]` per scenario, on the backend `$db`, in the module `$backend`; each runs
/// inside `$route` (a function that takes the scenario's future) when one is given.
macro_rules! backend_suite {
    ($backend:ident: $db:ty [$($scenarios:tt)*]) => {
        backend_suite!($backend: $db, std::convert::identity [$($scenarios)*]);
    };
    ($backend:ident: $db:ty, $route:path [$($threads:literal $scenario:ident,)*]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
                async fn $scenario() {
                    $route(super::$scenario::<$db>()).await;
                }
            )*
        }
    };
}

with_scenarios!(backend_suite!(sqlite: sqlx::Sqlite));

#[cfg(postgres_suite)]
with_scenarios!(backend_suite!(postgres: sqlx::Postgres));

#[cfg(mysql_suite)]
with_scenarios!(backend_suite!(mysql: sqlx::MySql));

// Every scenario again on `Any` over MySQL (see `TestDb for Any`).
#[cfg(mysql_suite)]
with_scenarios!(backend_suite!(any_mysql: sqlx::Any));

// Every scenario again, through PgBouncer in transaction pooling mode.
#[cfg(postgres_suite)]
with_scenarios!(backend_suite!(pgbouncer: sqlx::Postgres, idem_tests::through_pgbouncer));

mod sqlite_only {
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
}

#[cfg(postgres_suite)]
mod postgres_only {
    use super::*;
    use idem_runtime::RetryPolicy;

    /// `Any` over PostgreSQL reads PostgreSQL's errors by PostgreSQL's rules (MySQL reports
    /// SQLSTATEs too, SQLite numbers): a serialization failure in the body is retried, and the
    /// write lands once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_retries_a_serialization_failure_of_postgres() {
        let url = idem_tests::postgres_test_url().await;
        let store = IdempotencyStore::<sqlx::Any>::connect(&url, StoreConfig::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let conflicted: Box<Body<sqlx::Any>> = Box::new(|write| {
            Box::pin(async move {
                if write.attempt() == 1 {
                    sqlx::raw_sql(
                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$",
                    )
                    .execute(write.tx())
                    .await?;
                }
                Ok(StoredResponse::new(201, "landed"))
            })
        });
        let outcome = execute(&store, &tenant("acme"), &key("k-any"), "{}", conflicted).await;
        assert!(
            matches!(outcome, Ok(Outcome::New { attempts: 2, .. })),
            "retried once, then landed: {outcome:?}"
        );
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(keys, 1);
    }

    /// A real database error, as the store reports it, names its cause once: sqlx's
    /// `Database` error ends its message with the server's, which is also its source.
    #[tokio::test]
    async fn a_database_errors_cause_is_printed_once() {
        let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
        let error = sqlx::query("SELECT 1 / 0")
            .execute(db.store.pool())
            .await
            .expect_err("division by zero");
        assert!(matches!(error, sqlx::Error::Database(_)), "{error:?}");
        let error = idem_runtime::StoreError::from(error);
        let chain = idem_runtime::ErrorChain(&error).to_string();
        assert_eq!(chain.matches("division by zero").count(), 1, "{chain}");
        assert!(
            chain.starts_with("the idempotency store's database failed: "),
            "{chain}"
        );
    }

    /// The server ends the write's connection mid-body (`pg_terminate_backend`): the write is
    /// `ConnectionLost`, nothing of it is written, the key is free, and the retry writes once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_terminated_mid_body_is_connection_lost() {
        let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
        let backend = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let (entered, terminated) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (pid_out, inside, gone) = (backend.clone(), entered.clone(), terminated.clone());
        let doomed: Box<Body<sqlx::Postgres>> = Box::new(move |write| {
            let (pid_out, inside, gone) = (pid_out.clone(), inside.clone(), gone.clone());
            Box::pin(async move {
                let id = write.entity_id();
                sqlx::Postgres::insert_payment(write.tx(), id, "acme", 1).await?;
                let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                    .fetch_one(&mut *write.tx())
                    .await?;
                pid_out.store(pid, std::sync::atomic::Ordering::SeqCst);
                inside.notify_one();
                gone.notified().await;
                sqlx::query("SELECT 1").execute(write.tx()).await?;
                Ok(StoredResponse::new(201, "unreachable"))
            })
        });
        let store = db.store.clone();
        let write = tokio::spawn(async move {
            execute(&store, &tenant("acme"), &key("k-term"), "{}", doomed).await
        });
        entered.notified().await;
        let pid = backend.load(std::sync::atomic::Ordering::SeqCst);
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert!(ended);
        terminated.notify_one();
        let failed = write.await.unwrap();
        assert!(
            matches!(
                failed,
                Err(WriteError::Store(
                    idem_runtime::StoreError::ConnectionLost { .. }
                ))
            ),
            "{failed:?}"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 0);
        assert_eq!(db.count(KEYS, &[]).await, 0, "the key is free");
        let retry = execute(&db.store, &tenant("acme"), &key("k-term"), "{}", pay(1)).await;
        assert!(matches!(retry, Ok(Outcome::New { .. })), "{retry:?}");
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);
    }

    /// A body that catches its own statement's error and answers anyway left the transaction
    /// aborted: the write is the body's failure, final (no retry, no "retry with the same
    /// key"), nothing of it is written, and the key is free for the corrected handler.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_that_swallows_a_failed_statement_is_its_own_failure() {
        let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
        let swallows: Box<Body<sqlx::Postgres>> = Box::new(|write| {
            Box::pin(async move {
                let id = write.entity_id();
                sqlx::Postgres::insert_payment(write.tx(), id, "acme", 5).await?;
                let failed = sqlx::query("SELECT 1 / 0").execute(write.tx()).await;
                assert!(failed.is_err(), "division by zero");
                Ok(StoredResponse::new(201, "paid, it says"))
            })
        });
        let outcome = execute(
            &db.store,
            &tenant("acme"),
            &key("k-swallow"),
            "{}",
            swallows,
        )
        .await;
        assert!(
            matches!(outcome, Err(WriteError::BodyAbortedTransaction)),
            "{outcome:?}"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 0);
        assert_eq!(db.count(KEYS, &[]).await, 0);
        let fixed = execute(&db.store, &tenant("acme"), &key("k-swallow"), "{}", pay(5)).await;
        assert!(
            matches!(fixed, Ok(Outcome::New { attempts: 1, .. })),
            "{fixed:?}"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);
    }

    /// A read replica that accepts connections and never answers costs a write at most the
    /// replica timeout: the primary then answers, the write lands once, and its retry replays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hanging_replica_delays_a_write_by_the_replica_timeout_only() {
        let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            loop {
                let (socket, _) = silent.accept().await.unwrap();
                connections.push(socket);
            }
        });
        let options = db.store.pool().connect_options().as_ref().clone();
        let hanging = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(600))
            .connect_lazy_with(options.port(port));
        let store = IdempotencyStore::new(
            db.store.pool().clone(),
            StoreConfig::default().with_replica_timeout(Duration::from_millis(200)),
        )
        .with_replica(hanging);
        for attempt in ["write", "retry"] {
            let outcome = tokio::time::timeout(
                Duration::from_secs(30),
                execute(&store, &tenant("acme"), &key("k-hang"), "{}", pay(1)),
            )
            .await
            .unwrap_or_else(|_| panic!("the {attempt} waited on the hanging replica"))
            .unwrap();
            match attempt {
                "write" => assert!(matches!(outcome, Outcome::New { .. }), "{outcome:?}"),
                _ => assert!(matches!(outcome, Outcome::Replayed { .. }), "{outcome:?}"),
            }
        }
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);
        held.abort();
    }

    /// A tenant id holding `'` and `\\` writes, and reads its own setting back, on a server
    /// that refuses `\\'` in string literals (`backslash_quote = off`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_id_with_quotes_writes_whatever_backslash_quote_says() {
        let url = idem_tests::postgres_test_url().await;
        let url = format!("{url}%20-c%20backslash_quote%3Doff");
        let store = IdempotencyStore::<sqlx::Postgres>::connect(&url, StoreConfig::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let said: String = sqlx::query_scalar("SHOW backslash_quote")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(said, "off");
        let reads_its_tenant: Box<Body<sqlx::Postgres>> = Box::new(|write| {
            Box::pin(async move {
                let setting: String =
                    sqlx::query_scalar("SELECT current_setting('idem.tenant_id')")
                        .fetch_one(&mut *write.tx())
                        .await?;
                Ok(StoredResponse::new(201, setting))
            })
        });
        let tenant = TenantId::new(r"o'brien\\co").unwrap();
        let outcome = execute(&store, &tenant, &key("k-quote"), "{}", reads_its_tenant)
            .await
            .unwrap();
        let Outcome::New { response, .. } = outcome else {
            panic!("a new write: {outcome:?}")
        };
        assert_eq!(response.body, br"o'brien\\co");
        let keys: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(keys, 1);
    }

    /// A second replica has its own in-process coalescing, so its twin waits on the key's row
    /// in PostgreSQL, and `lock_timeout` turns the wait into `InFlight`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn twin_in_another_process_past_the_lock_timeout_is_in_flight() {
        twin_past_the_lock_timeout_is_in_flight::<sqlx::Postgres>(true).await;
    }

    /// Under `default_transaction_isolation = serializable`, concurrent read-then-append bodies
    /// conflict; the protocol retries the 40001 failures and every write lands exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn serialization_failures_are_retried_and_land_once() {
        let config = StoreConfig::default()
            .with_lock_timeout(Duration::from_secs(30))
            .with_retry(RetryPolicy::default().with_max_attempts(60));
        let db = TestStore::<sqlx::Postgres>::fresh_serializable(config).await;
        assert_eq!(
            db.count("SELECT COUNT(*) FROM pg_settings WHERE name = 'default_transaction_isolation' AND setting = 'serializable'", &[]).await,
            1
        );
        let writes = 40;
        let attempts = conflicting_writes_land_once(&db, writes).await;
        assert!(
            attempts > u32::try_from(writes).unwrap(),
            "the workload conflicts, so the retry path is taken ({attempts} attempts)"
        );
    }

    /// The database's clock is read once per statement, as on MySQL and SQLite: two readings
    /// in one statement (an audit row's two times) never differ. A hundred thousand readings
    /// take milliseconds, so a clock read per call would show several values.
    #[tokio::test]
    async fn the_database_clock_is_read_once_per_statement() {
        let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
        assert_eq!(
            db.count(
                "SELECT COUNT(DISTINCT idem_now_ms() + n - n) FROM generate_series(1, 100000) AS n",
                &[]
            )
            .await,
            1
        );
    }

    /// Expiry and takeover follow the database's clock, not the application node's: with the
    /// database's clock two days ahead (as another node's skew would put it), a key written a
    /// moment ago is past its 24 h retention, and the next request with it is a new write; the
    /// audit rows, the new write's and a queued replay's, carry the database's time too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expiry_follows_the_database_clock() {
        let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
        let (t, k) = (tenant("acme"), key("k-clock"));
        execute(&db.store, &t, &k, "{}", pay::<sqlx::Postgres>(1))
            .await
            .unwrap();
        let replay = execute(&db.store, &t, &k, "{}", pay::<sqlx::Postgres>(1)).await;
        assert!(matches!(replay, Ok(Outcome::Replayed { .. })), "{replay:?}");
        db.store.flush_audit().await;
        sqlx::Postgres::execute(
            db.store.pool(),
            "CREATE OR REPLACE FUNCTION idem_now_ms() RETURNS BIGINT LANGUAGE sql STABLE \
             AS $$ SELECT (EXTRACT(EPOCH FROM clock_timestamp() + interval '2 days') * 1000)::BIGINT $$",
        )
        .await
        .unwrap();
        // The takeover runs the body again; this one writes no row of its own.
        let answer_only: Box<Body<sqlx::Postgres>> =
            Box::new(|_| Box::pin(async { Ok(StoredResponse::new(201, "taken over")) }));
        let later = execute(&db.store, &t, &k, "{}", answer_only).await;
        assert!(
            matches!(later, Ok(Outcome::New { .. })),
            "the key expired by the database's clock: {later:?}"
        );
        assert_eq!(
            db.count("SELECT COUNT(*) FROM idempotency_keys WHERE created_at_ms > (EXTRACT(EPOCH FROM clock_timestamp() + interval '1 day') * 1000)::BIGINT", &[]).await,
            1,
            "the takeover stamped the key with the database's time"
        );
        let replay = execute(&db.store, &t, &k, "{}", pay::<sqlx::Postgres>(1)).await;
        assert!(matches!(replay, Ok(Outcome::Replayed { .. })), "{replay:?}");
        db.store.flush_audit().await;
        assert_eq!(
            db.count("SELECT COUNT(*) FROM idempotent_write_audit_log WHERE created_at_ms > (EXTRACT(EPOCH FROM clock_timestamp() + interval '1 day') * 1000)::BIGINT AND first_seen_at_ms > (EXTRACT(EPOCH FROM clock_timestamp() + interval '1 day') * 1000)::BIGINT", &[]).await,
            2,
            "the takeover's audit row and the queued replay's carry the database's time"
        );
        // With the database's clock two days behind the node's, an event delivered a moment
        // ago is past a one-day outbox retention by the node's clock, not by the database's,
        // which the purge reads.
        sqlx::Postgres::execute(
            db.store.pool(),
            "CREATE OR REPLACE FUNCTION idem_now_ms() RETURNS BIGINT LANGUAGE sql STABLE \
             AS $$ SELECT (EXTRACT(EPOCH FROM clock_timestamp() - interval '2 days') * 1000)::BIGINT $$",
        )
        .await
        .unwrap();
        record_writes(&db.store, "k-clock-event", 1).await;
        Seen::default()
            .dispatcher(db.store.clone())
            .dispatch_pending()
            .await
            .unwrap();
        let purged = idem_runtime::Maintenance::new(db.store.clone())
            .with_outbox_retention(Duration::from_secs(24 * 3600))
            .run_once()
            .await
            .unwrap();
        assert_eq!(
            purged.delivered_events, 0,
            "delivered a moment ago: {purged:?}"
        );
        assert_eq!(db.count(EVENTS, &[]).await, 2);
    }

    /// The two-role setup: a runtime role that serves requests can append to the audit log and
    /// read it, and nothing else: UPDATE, DELETE, TRUNCATE, disabling the trigger, a forged
    /// maintenance horizon and a temporary table shadowing the maintenance table are refused;
    /// the retention purge works, never below the owner's floor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_runtime_role_cannot_empty_the_audit_log() {
        let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
        let role = format!("idem_runtime_{}", fastrand::u32(..));
        let admin = db.store.pool();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {role} LOGIN; SELECT idem_grant_runtime_role('{role}'); GRANT SELECT, INSERT ON payments TO {role}"
        )))
        .execute(admin)
        .await
        .expect("the owner creates and grants the runtime role");
        let runtime = IdempotencyStore::<sqlx::Postgres>::new(
            db.pool_as(&role).await,
            StoreConfig::default(),
        );
        let (t, k) = (tenant("acme"), key("k-roles"));
        for _ in 0..2 {
            execute(&runtime, &t, &k, "{}", pay::<sqlx::Postgres>(1))
                .await
                .expect("the runtime role writes");
        }
        runtime.flush_audit().await;
        assert_eq!(db.count(AUDIT, &[]).await, 2);
        // Rows old enough for any floor, so that only the refusals below keep them.
        sqlx::Postgres::execute(
            admin,
            "ALTER TABLE idempotent_write_audit_log DISABLE TRIGGER USER",
        )
        .await
        .unwrap();
        sqlx::Postgres::execute(
            admin,
            "UPDATE idempotent_write_audit_log SET created_at_ms = 0",
        )
        .await
        .unwrap();
        sqlx::Postgres::execute(
            admin,
            "ALTER TABLE idempotent_write_audit_log ENABLE TRIGGER USER",
        )
        .await
        .unwrap();

        let attacks = [
            "UPDATE idempotent_write_audit_log SET outcome = 'new'",
            "DELETE FROM idempotent_write_audit_log",
            "TRUNCATE idempotent_write_audit_log",
            "ALTER TABLE idempotent_write_audit_log DISABLE TRIGGER ALL",
            "DROP TRIGGER idempotent_write_audit_log_append_only ON idempotent_write_audit_log",
            "INSERT INTO idempotent_write_audit_maintenance (horizon_ms) VALUES (9223372036854775807)",
            "UPDATE idempotent_write_audit_settings SET min_retention_ms = 0",
            "CREATE OR REPLACE FUNCTION idempotent_write_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
        ];
        let mut conn = runtime.pool().acquire().await.unwrap();
        for attack in attacks {
            let refused = sqlx::raw_sql(sqlx::AssertSqlSafe(attack))
                .execute(&mut *conn)
                .await;
            assert!(refused.is_err(), "the runtime role was allowed: {attack}");
        }
        // Even a role granted DELETE on the log by mistake cannot delete: the trigger refuses,
        // and a temporary table of the maintenance table's name, holding a horizon in the
        // future, does not stand in for the real one.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "GRANT DELETE ON idempotent_write_audit_log TO {role}"
        )))
        .execute(admin)
        .await
        .unwrap();
        let error = sqlx::raw_sql("DELETE FROM idempotent_write_audit_log")
            .execute(&mut *conn)
            .await
            .expect_err("the trigger refuses");
        assert!(error.to_string().contains("append-only"), "{error}");
        let shadow = sqlx::raw_sql(
            "BEGIN; CREATE TEMP TABLE idempotent_write_audit_maintenance (horizon_ms BIGINT); \
             INSERT INTO idempotent_write_audit_maintenance VALUES (9223372036854775807); \
             DELETE FROM idempotent_write_audit_log;",
        )
        .execute(&mut *conn)
        .await;
        let error = shadow.expect_err("the shadowed delete is refused");
        assert!(error.to_string().contains("append-only"), "{error}");
        sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "REVOKE DELETE ON idempotent_write_audit_log FROM {role}"
        )))
        .execute(admin)
        .await
        .unwrap();
        assert_eq!(
            db.count(AUDIT, &[]).await,
            2,
            "nothing was changed or removed"
        );
        assert_eq!(
            db.count(
                "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = 'new'",
                &[]
            )
            .await,
            1
        );

        // Retention, through the owner's function: a forged horizon is clamped to the floor.
        let recent = execute(
            &runtime,
            &t,
            &key("k-recent"),
            "{}",
            pay::<sqlx::Postgres>(1),
        )
        .await;
        assert!(matches!(recent, Ok(Outcome::New { .. })));
        assert_eq!(
            runtime
                .purge_audit_older_than(Duration::ZERO)
                .await
                .unwrap(),
            2,
            "the old rows go"
        );
        assert_eq!(
            db.count(AUDIT, &[]).await,
            1,
            "the row younger than 90 days stays"
        );
        // A permissions error reads as what it is, not as "not migrated".
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "REVOKE SELECT ON _idem_migrations FROM {role}"
        )))
        .execute(admin)
        .await
        .unwrap();
        let unreadable = runtime
            .pending_migrations()
            .await
            .expect_err("no permission");
        let report = idem_runtime::ErrorChain(&unreadable).to_string();
        assert!(report.contains("permission denied"), "{report}");
        drop(conn);
        runtime.pool().close().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP OWNED BY {role}; DROP ROLE {role}"
        )))
        .execute(admin)
        .await
        .unwrap();
    }
}

mod sqlite_durability {
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
}

#[cfg(postgres_suite)]
mod pgbouncer_only {
    use super::*;
    use sqlx::Connection as _;

    /// A write abandoned mid-body (its request gone: the future dropped, no rollback of idem's)
    /// leaves its connection's statement cache holding a name that the body prepared on a server
    /// connection it no longer holds, and that server holding the statement. The next write
    /// never starts its body on that connection (a body statement by that name would run
    /// whatever another client prepared under it), and its body can prepare that name again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_abandoned_write_leaves_no_statement_names_to_the_next() {
        idem_tests::through_pgbouncer(async {
            let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
            // One connection: the next write gets the abandoned write's, unless it is closed.
            let options = db.store.pool().connect_options().as_ref().clone();
            let one = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_with(options)
                .await
                .unwrap();
            let store = IdempotencyStore::new(one, db.store.config().clone());
            let abandoned: Box<Body<sqlx::Postgres>> = Box::new(|write| {
                Box::pin(async move {
                    let id = write.entity_id();
                    sqlx::Postgres::insert_payment(write.tx(), id, "acme", 1).await?;
                    pending().await
                })
            });
            let gone = tokio::time::timeout(
                Duration::from_millis(500),
                execute(&store, &tenant("acme"), &key("k-gone"), "{}", abandoned),
            )
            .await;
            assert!(gone.is_err(), "the request went away mid-body");

            // Its body prepares a statement under the name the abandoned one used, on the
            // server connection the pooler lends it (the same one, when it is free).
            let checks_its_connection: Box<Body<sqlx::Postgres>> = Box::new(|write| {
                Box::pin(async move {
                    let cached = write.tx().cached_statements_size();
                    let id = write.entity_id();
                    sqlx::Postgres::insert_payment(write.tx(), id, "acme", 2).await?;
                    Ok(StoredResponse::new(201, cached.to_string()))
                })
            });
            let next = execute(
                &store,
                &tenant("acme"),
                &key("k-next"),
                "{}",
                checks_its_connection,
            )
            .await
            .unwrap();
            let Outcome::New { response, .. } = next else {
                panic!("a new write: {next:?}")
            };
            assert_eq!(
                response.body, b"0",
                "the next body starts with no statement names cached"
            );
            assert_eq!(
                db.count("SELECT amount_cents FROM payments", &[]).await,
                2,
                "the abandoned write rolled back, the next one wrote"
            );
        })
        .await;
    }

    /// A committed write and a refused one, on a store that `IdempotencyStore::connect` opened
    /// (its pool caches no statement), leave no named statement on any server connection of
    /// the pooler: the body's statements, which sqlx prepares under names even when it caches
    /// none, are deallocated before the transaction ends, so no other client of the pooler can
    /// collide with them or `EXECUTE` them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_leaves_no_named_statement_on_the_poolers_servers() {
        idem_tests::through_pgbouncer(async {
            let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
            // Opened as an application opens it: a pool that caches no statement.
            let store = IdempotencyStore::<sqlx::Postgres>::connect(
                &db.url(),
                StoreConfig::default().with_transaction_pooling(true),
            )
            .await
            .unwrap();
            let writes: Box<Body<sqlx::Postgres>> = Box::new(|write| {
                Box::pin(async move {
                    let id = write.entity_id();
                    sqlx::Postgres::insert_payment(write.tx(), id, "acme", 1).await?;
                    Ok(StoredResponse::new(201, "paid"))
                })
            });
            let outcome = execute(&store, &tenant("acme"), &key("k-1"), "{}", writes)
                .await
                .unwrap();
            assert!(matches!(outcome, Outcome::New { .. }), "{outcome:?}");
            let refuses: Box<Body<sqlx::Postgres>> = Box::new(|write| {
                Box::pin(async move {
                    let id = write.entity_id();
                    sqlx::Postgres::insert_payment(write.tx(), id, "acme", 2).await?;
                    Err(PaymentError::Refused)
                })
            });
            execute(&store, &tenant("acme"), &key("k-2"), "{}", refuses)
                .await
                .expect_err("the body refused");
            assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);

            // Every server connection of the pool at once: as many transactions as the pool
            // has servers (`default_pool_size = 8`), each held open until all have looked.
            const SERVERS: usize = 8;
            let options = db.store.pool().connect_options().as_ref().clone();
            let lookers = sqlx::postgres::PgPoolOptions::new()
                .max_connections(SERVERS as u32)
                .connect_with(options.statement_cache_capacity(0))
                .await
                .unwrap();
            let all_looking = Arc::new(tokio::sync::Barrier::new(SERVERS));
            let names = futures_util::future::join_all((0..SERVERS).map(|_| {
                let (lookers, all_looking) = (lookers.clone(), all_looking.clone());
                async move {
                    let mut tx = lookers.begin().await.unwrap();
                    let names: Vec<String> =
                        sqlx::query_scalar("SELECT name FROM pg_prepared_statements")
                            .persistent(false)
                            .fetch_all(&mut *tx)
                            .await
                            .unwrap();
                    all_looking.wait().await;
                    tx.commit().await.unwrap();
                    names
                }
            }))
            .await;
            let left: Vec<&String> = names.iter().flatten().collect();
            assert!(
                left.is_empty(),
                "named statements left on the servers: {left:?}"
            );
        })
        .await;
    }
}

/// The scenarios of MySQL's own faults, on a backend that speaks MySQL: `IdempotencyStore<MySql>`
/// and `IdempotencyStore<Any>` over MySQL, whose driver errors `Any` must classify alike.
#[cfg(mysql_suite)]
macro_rules! mysql_faults {
    ($backend:ident: $db:ty) => {
        mod $backend {
            use super::*;

            type Db = $db;

            /// A second process has its own in-process coalescing, so its twin waits on the
            /// key's row, and `innodb_lock_wait_timeout` (the lock timeout rounded up to a
            /// second) turns the wait into `InFlight` (error 1205).
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn twin_in_another_process_past_the_lock_timeout_is_in_flight() {
                twin_past_the_lock_timeout_is_in_flight::<Db>(true).await;
            }

            /// The server kills the write's connection (`KILL`) while its transaction is open: the
            /// write fails as a lost connection, nothing of it is written, its key is free, and the
            /// retry writes exactly once.
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_connection_killed_mid_transaction_writes_nothing() {
                let db = Db::fresh(StoreConfig::default()).await;
                let connection = Arc::new(std::sync::atomic::AtomicI64::new(0));
                let (entered, killed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
                let (id_out, inside, gone) = (connection.clone(), entered.clone(), killed.clone());
                let doomed: Box<Body<Db>> = Box::new(move |write| {
                    let (id_out, inside, gone) = (id_out.clone(), inside.clone(), gone.clone());
                    Box::pin(async move {
                        let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
                        Db::insert_payment(write.tx(), id, &tenant, 1).await?;
                        let own: i64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
                            .fetch_one(&mut *write.tx())
                            .await?;
                        id_out.store(own, std::sync::atomic::Ordering::SeqCst);
                        inside.notify_one();
                        gone.notified().await;
                        sqlx::query("SELECT 1").execute(write.tx()).await?;
                        Ok(StoredResponse::new(201, "unreachable"))
                    })
                });
                let store = db.store.clone();
                let write = tokio::spawn(async move {
                    execute(&store, &tenant("acme"), &key("k-kill"), "{}", doomed).await
                });
                entered.notified().await;
                let victim = connection.load(std::sync::atomic::Ordering::SeqCst);
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("KILL {victim}")))
                    .execute(db.store.pool())
                    .await
                    .unwrap();
                killed.notify_one();
                let failed = write.await.unwrap();
                assert!(
                    matches!(
                        failed,
                        Err(WriteError::Store(
                            idem_runtime::StoreError::ConnectionLost { .. }
                        ))
                    ),
                    "{failed:?}"
                );
                assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 0);
                assert_eq!(db.count(KEYS, &[]).await, 0, "the key is free");
                let retry = execute(
                    &db.store,
                    &tenant("acme"),
                    &key("k-kill"),
                    "{}",
                    pay::<Db>(1),
                )
                .await;
                assert!(matches!(retry, Ok(Outcome::New { .. })), "{retry:?}");
                assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);
            }

            /// Two writes lock two rows in opposite orders: InnoDB picks one as the deadlock's
            /// victim (error 1213) and rolls it back, and the protocol retries it on a fresh
            /// transaction; both land, once each.
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn deadlocked_writes_are_retried_and_land_once() {
                let db = Db::fresh(StoreConfig::default()).await;
                Db::execute(
                    db.store.pool(),
                    "INSERT INTO ledger (seq, tenant_id, amount, balance) VALUES (1, 'a', 0, 0), (2, 'b', 0, 0)",
                )
                .await
                .unwrap();
                let both_hold_one = Arc::new(tokio::sync::Barrier::new(2));
                let lock_in_order = |first: i64, second: i64| -> Box<Body<Db>> {
                    let both_hold_one = both_hold_one.clone();
                    Box::new(move |write| {
                        let both_hold_one = both_hold_one.clone();
                        Box::pin(async move {
                            let lock = "SELECT balance FROM ledger WHERE seq = ? FOR UPDATE";
                            sqlx::query(lock).bind(first).execute(write.tx()).await?;
                            if write.attempt() == 1 {
                                both_hold_one.wait().await;
                            }
                            sqlx::query(lock).bind(second).execute(write.tx()).await?;
                            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
                            Db::insert_payment(write.tx(), id, &tenant, 1).await?;
                            Ok(StoredResponse::new(201, format!("{first} then {second}")))
                        })
                    })
                };
                let (one, two) = (lock_in_order(1, 2), lock_in_order(2, 1));
                let (acme, k1, k2) = (tenant("acme"), key("k-one"), key("k-two"));
                let (one, two) = tokio::join!(
                    execute(&db.store, &acme, &k1, "{}", one),
                    execute(&db.store, &acme, &k2, "{}", two),
                );
                let attempts = [one, two].map(|outcome| match outcome {
                    Ok(Outcome::New { attempts, .. }) => attempts,
                    other => panic!("both writes land: {other:?}"),
                });
                assert_eq!(
                    attempts.iter().sum::<u32>(),
                    3,
                    "one of them was the deadlock's victim and ran twice: {attempts:?}"
                );
                assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 2);
                assert_eq!(db.count(KEYS, &[]).await, 2);
            }
        }
    };
}

#[cfg(mysql_suite)]
mysql_faults!(mysql_faults: sqlx::MySql);

#[cfg(mysql_suite)]
mysql_faults!(any_mysql_faults: sqlx::Any);

#[cfg(mysql_suite)]
mod mysql_only {
    use super::*;
    use sqlx::MySql;

    /// MySQL has no transaction-scoped setting: the lock wait timeout a write sets for its claim
    /// is set back before the transaction ends, so the pooled connection goes back to the
    /// application with its own (here 17 s, set by the application) after a committed write, a
    /// refused one, and a write abandoned mid-body followed by another.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_leaves_the_sessions_lock_wait_timeout_as_it_found_it() {
        let db = MySql::fresh(StoreConfig::default()).await;
        let options = db.store.pool().connect_options().as_ref().clone();
        let one = sqlx::mysql::MySqlPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET SESSION innodb_lock_wait_timeout = 17")
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
            .connect_with(options)
            .await
            .unwrap();
        let store = IdempotencyStore::new(
            one.clone(),
            StoreConfig::default().with_lock_timeout(Duration::from_secs(3)),
        );
        let session_timeout = || async {
            sqlx::query_scalar::<_, u64>("SELECT @@SESSION.innodb_lock_wait_timeout")
                .fetch_one(&one)
                .await
                .unwrap()
        };
        assert_eq!(session_timeout().await, 17);
        execute(&store, &tenant("acme"), &key("k-paid"), "{}", pay(1))
            .await
            .unwrap();
        assert_eq!(session_timeout().await, 17, "after a committed write");
        let refused: Box<Body<MySql>> = Box::new(|write| {
            Box::pin(async move {
                let id = write.entity_id();
                MySql::insert_payment(write.tx(), id, "acme", 2).await?;
                Err(PaymentError::Refused)
            })
        });
        execute(&store, &tenant("acme"), &key("k-refused"), "{}", refused)
            .await
            .expect_err("refused");
        assert_eq!(session_timeout().await, 17, "after a refused write");
        let abandoned: Box<Body<MySql>> = Box::new(|write| {
            Box::pin(async move {
                let id = write.entity_id();
                MySql::insert_payment(write.tx(), id, "acme", 3).await?;
                pending().await
            })
        });
        let gone = tokio::time::timeout(
            Duration::from_millis(500),
            execute(&store, &tenant("acme"), &key("k-gone"), "{}", abandoned),
        )
        .await;
        assert!(gone.is_err(), "the request went away mid-body");
        execute(&store, &tenant("acme"), &key("k-next"), "{}", pay(4))
            .await
            .unwrap();
        assert_eq!(
            session_timeout().await,
            17,
            "after an abandoned write and the next"
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 2);
    }

    /// The runtime user README.md describes (`SELECT, INSERT` on the audit log, what the
    /// protocol needs on its other tables) serves writes, and cannot empty the log: `UPDATE` and
    /// `DELETE` meet the triggers, `TRUNCATE` and the `DROP`s its missing privileges.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_runtime_user_cannot_empty_the_audit_log() {
        let db = MySql::fresh(StoreConfig::default()).await;
        let database: String = sqlx::query_scalar("SELECT DATABASE()")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        let user = format!("idem_rt_{}", fastrand::u32(..));
        let account = format!("'{user}'@'localhost'");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE USER {account};
             GRANT SELECT, INSERT ON {database}.idempotent_write_audit_log TO {account};
             GRANT SELECT, INSERT, UPDATE, DELETE ON {database}.idempotency_keys TO {account};
             GRANT SELECT, INSERT, UPDATE, DELETE ON {database}.idem_outbox TO {account};
             GRANT SELECT, INSERT ON {database}.payments TO {account};"
        )))
        .execute(db.store.pool())
        .await
        .expect("the owner creates and grants the runtime user");
        let runtime = IdempotencyStore::new(db.pool_as(&user).await, StoreConfig::default());
        for k in ["k-1", "k-1", "k-2"] {
            let outcome = execute(&runtime, &tenant("acme"), &key(k), "{}", pay::<MySql>(1)).await;
            assert!(outcome.is_ok(), "the runtime user serves: {outcome:?}");
        }
        runtime.flush_audit().await;
        let audit = "SELECT COUNT(*) FROM idempotent_write_audit_log";
        assert_eq!(db.count(audit, &[]).await, 3, "new, replayed, new");
        for attack in [
            "UPDATE idempotent_write_audit_log SET outcome = 'failed'",
            "DELETE FROM idempotent_write_audit_log",
            "TRUNCATE TABLE idempotent_write_audit_log",
            "DROP TRIGGER idempotent_write_audit_log_no_delete",
            "DROP TABLE idempotent_write_audit_log",
            "ALTER TABLE idempotent_write_audit_log RENAME TO emptied",
        ] {
            let refused = MySql::execute(runtime.pool(), attack).await;
            assert!(refused.is_err(), "{attack} was allowed");
        }
        assert_eq!(db.count(audit, &[]).await, 3, "every row is still there");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP USER {account}")))
            .execute(db.store.pool())
            .await
            .unwrap();
    }

    /// A twin in another process that reached the claim while the winner's row was uncommitted
    /// waits on the row (InnoDB's lock on the unique key), then replays the winner's answer:
    /// `LAST_INSERT_ID` hands back the winner's attempt id, not this one's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_twin_waiting_on_the_row_replays_the_winner() {
        let config = StoreConfig::default().with_lock_timeout(Duration::from_secs(20));
        let db = MySql::fresh(config.clone()).await;
        let other = db.second_process(config).await;
        let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (inside, go) = (entered.clone(), release.clone());
        let winner: Box<Body<MySql>> = Box::new(move |write| {
            let (inside, go) = (inside.clone(), go.clone());
            Box::pin(async move {
                let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
                MySql::insert_payment(write.tx(), id, &tenant, 100).await?;
                inside.notify_one();
                go.notified().await;
                Ok(StoredResponse::new(201, "the winner's answer"))
            })
        });
        let store = db.store.clone();
        let first =
            tokio::spawn(
                async move { execute(&store, &tenant("acme"), &key("k"), "{}", winner).await },
            );
        entered.notified().await;
        let second = tokio::spawn(async move {
            execute(&other, &tenant("acme"), &key("k"), "{}", pay::<MySql>(100)).await
        });
        // The twin's claim is a statement in progress: it only lasts while it waits.
        let waiting = "SELECT COUNT(*) FROM information_schema.processlist \
                       WHERE info LIKE 'INSERT INTO idempotency_keys%'";
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db.count(waiting, &[]).await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the twin never waited on the winner's row"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        release.notify_one();
        let first = first.await.unwrap().unwrap();
        assert!(matches!(first, Outcome::New { .. }), "{first:?}");
        let second = second.await.unwrap().unwrap();
        assert_eq!(
            second,
            Outcome::Replayed {
                response: StoredResponse::new(201, "the winner's answer")
            }
        );
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);
    }

    /// The server is unreachable for a while, then back: writes meanwhile fail as store errors
    /// with nothing written and their keys free, and once it is back each writes exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_server_unreachable_then_back_writes_once() {
        let db = MySql::fresh(StoreConfig::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::start(dir.path().join("mysql.sock"), db.connect_options()).await;
        let pool = sqlx::mysql::MySqlPoolOptions::new()
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy_with(db.connect_options().socket(&relay.path));
        let store = IdempotencyStore::new(pool, StoreConfig::default());
        let acme = tenant("acme");
        let before = execute(&store, &acme, &key("k-before"), "{}", pay::<MySql>(1)).await;
        assert!(matches!(before, Ok(Outcome::New { .. })), "{before:?}");

        relay.set(false);
        tokio::time::sleep(Duration::from_millis(100)).await;
        for k in ["k-down-1", "k-down-2"] {
            let down = execute(&store, &acme, &key(k), "{}", pay::<MySql>(2)).await;
            assert!(matches!(down, Err(WriteError::Store(_))), "{k}: {down:?}");
        }
        assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);
        assert_eq!(
            db.count(KEYS, &[]).await,
            1,
            "the keys written while down are free"
        );

        relay.set(true);
        let mut back = None;
        for _ in 0..40 {
            match execute(&store, &acme, &key("k-down-1"), "{}", pay::<MySql>(2)).await {
                Ok(outcome) => {
                    back = Some(outcome);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        assert!(
            matches!(back, Some(Outcome::New { .. })),
            "the write lands once the server is back: {back:?}"
        );
        let replay = execute(&store, &acme, &key("k-down-1"), "{}", pay::<MySql>(2)).await;
        assert!(matches!(replay, Ok(Outcome::Replayed { .. })), "{replay:?}");
        assert_eq!(
            db.count("SELECT COUNT(*) FROM payments", &[]).await,
            2,
            "k-before and k-down-1, once each"
        );
        assert_eq!(db.count(KEYS, &[]).await, 2);
    }

    /// A relay on a Unix socket in front of the MySQL server (its own socket, or its TCP port)
    /// that can be cut and restored like a network partition: cut, it closes the connections
    /// it carries and refuses new ones.
    struct Relay {
        path: std::path::PathBuf,
        up: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Relay {
        async fn start(path: std::path::PathBuf, server: sqlx::mysql::MySqlConnectOptions) -> Self {
            use std::sync::atomic::{AtomicBool, Ordering};
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            let up = Arc::new(AtomicBool::new(true));
            let relay_up = up.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (server, up) = (server.clone(), relay_up.clone());
                    tokio::spawn(async move {
                        if !up.load(Ordering::SeqCst) {
                            return; // refused: dropped at once
                        }
                        match server.get_socket() {
                            Some(socket) => {
                                if let Ok(upstream) = tokio::net::UnixStream::connect(socket).await
                                {
                                    idem_tests::pipe_until_cut(client, upstream, &up).await;
                                }
                            }
                            None => {
                                let address = (server.get_host(), server.get_port());
                                if let Ok(upstream) = tokio::net::TcpStream::connect(address).await
                                {
                                    idem_tests::pipe_until_cut(client, upstream, &up).await;
                                }
                            }
                        }
                    });
                }
            });
            Self { path, up }
        }

        fn set(&self, up: bool) {
            self.up.store(up, std::sync::atomic::Ordering::SeqCst);
        }
    }
}
