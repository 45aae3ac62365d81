//! The outbox: one event per new write, delivered at least once after the commit, by one or
//! several dispatchers, parked when it keeps failing, never in the way of the others.

use super::*;

pub(crate) const EVENTS: &str = "SELECT COUNT(*) FROM idem_outbox";
pub(crate) const PENDING_EVENTS: &str =
    "SELECT COUNT(*) FROM idem_outbox WHERE delivered_at_ms IS NULL";

/// A payment that records a `receipt` event, or refuses after recording it.
pub(crate) fn pay_with_receipt<DB: TestDb>(refuse: bool) -> Box<Body<DB>> {
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
pub(crate) struct Deliveries(Arc<std::sync::Mutex<Vec<uuid::Uuid>>>);

impl Deliveries {
    pub(crate) fn dispatcher<DB: TestDb>(
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

    pub(crate) fn ids(&self) -> Vec<uuid::Uuid> {
        self.0.lock().unwrap().clone()
    }
}

pub(crate) async fn one_event_per_new_write_none_per_replay_or_refusal<DB: TestDb>() {
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
pub(crate) async fn events_survive_a_crash_between_commit_and_dispatch<DB: TestDb>() {
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
pub(crate) async fn a_running_dispatcher_delivers_after_the_commit<DB: TestDb>() {
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
pub(crate) async fn a_handlers_own_io_error_is_its_answer<DB: TestDb>() {
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
pub(crate) fn pay_with_two_events<DB: TestDb>() -> Box<Body<DB>> {
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
pub(crate) async fn record_writes<DB: TestDb>(
    store: &IdempotencyStore<DB>,
    prefix: &str,
    writes: usize,
) {
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
pub(crate) struct Seen(Arc<std::sync::Mutex<Vec<(uuid::Uuid, String, uuid::Uuid)>>>);

impl Seen {
    /// A dispatcher whose handlers of `first` and `second` record what they see.
    pub(crate) fn dispatcher<DB: TestDb>(
        &self,
        store: IdempotencyStore<DB>,
    ) -> OutboxDispatcher<DB> {
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

    pub(crate) fn all(&self) -> Vec<(uuid::Uuid, String, uuid::Uuid)> {
        self.0.lock().unwrap().clone()
    }
}

/// Two processes' dispatchers on one outbox, at once: each event's handler runs once, and no
/// failure is counted.
pub(crate) async fn two_dispatchers_deliver_each_event_once<DB: TestDb>() {
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
pub(crate) async fn a_backlog_drains_batch_after_batch<DB: TestDb>() {
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
pub(crate) async fn a_stuck_handler_delays_nobody_else<DB: TestDb>() {
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
pub(crate) async fn one_writes_events_arrive_in_order<DB: TestDb>() {
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
pub(crate) async fn a_reused_key_records_new_event_ids<DB: TestDb>() {
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
pub(crate) async fn event_ids_derive_from_the_entity_the_place_and_the_claim<DB: TestDb>() {
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

pub(crate) const PARKED_EVENTS: &str =
    "SELECT COUNT(*) FROM idem_outbox WHERE parked_at_ms IS NOT NULL";

/// Three payments with receipts, in this order; their event ids.
pub(crate) async fn three_receipts<DB: TestDb>(db: &TestStore<DB>) -> Vec<String> {
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
pub(crate) async fn a_failing_event_is_parked_and_never_blocks_the_rest<DB: TestDb>() {
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
pub(crate) async fn unhandled_and_undecodable_events_do_not_block_the_queue<DB: TestDb>() {
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
pub(crate) async fn a_running_dispatcher_survives_database_errors_and_stops_when_told<
    DB: TestDb,
>() {
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
