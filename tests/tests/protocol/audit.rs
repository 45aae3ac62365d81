//! The audit log: coalesced replay floods, append-only against the application, retention
//! only through maintenance, a full queue written by the requests themselves.

use super::*;
use idem_runtime::{AuditVerification, Maintenance, SealFinding};

pub(crate) const AUDIT: &str = "SELECT COUNT(*) FROM idempotent_write_audit_log";

/// Sixteen clients replay one key as fast as they can for 1.2 s: every replay is in the audit
/// log, counted, in at most one row per coalescing window (300 ms here) and two more for the
/// edges, each row saying when its first and last replay happened (no further apart than the
/// flood lasted); a mismatch and a replay of another key each keep a row of their own.
pub(crate) async fn a_replay_flood_writes_a_bounded_number_of_audit_rows<DB: TestDb>() {
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
pub(crate) async fn a_flush_cuts_the_coalescing_window_short<DB: TestDb>() {
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
pub(crate) async fn the_audit_log_is_append_only<DB: TestDb>() {
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
pub(crate) async fn maintenance_purges_what_retention_allows_and_nothing_else<DB: TestDb>() {
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
pub(crate) async fn a_full_audit_queue_makes_requests_write_their_own_rows<DB: TestDb>() {
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

/// The tables' owner, with the log's triggers out of the way, changes a row, deletes one and
/// inserts one into a sealed range: each is found, by seal, and an untouched log verifies. Rows
/// younger than the seal delay stay unsealed; seals that retention emptied are not a finding.
pub(crate) async fn a_sealed_audit_log_finds_each_change_by_the_tables_owner<DB: TestDb>() {
    const SEALS: &str = "SELECT COUNT(*) FROM idempotent_write_audit_seals";
    let db = DB::fresh(StoreConfig::default()).await;
    let t = tenant("acme");
    let (postgres, sqlite) = (DB::NAME == "PostgreSQL", DB::NAME == "SQLite");
    let mut written = 0;
    for seal in 1..=4 {
        if seal == 2 {
            // A gap in the order of insertion, as rolled-back transactions leave: seal 2 covers
            // seq 4..=1002 and holds three rows, 1000..=1002.
            DB::execute(
                db.store.pool(),
                if postgres {
                    "SELECT setval(pg_get_serial_sequence('idempotent_write_audit_log', 'seq'), 999)"
                } else if sqlite {
                    "UPDATE sqlite_sequence SET seq = 999 WHERE name = 'idempotent_write_audit_log'"
                } else {
                    "ALTER TABLE idempotent_write_audit_log AUTO_INCREMENT = 1000"
                },
            )
            .await
            .unwrap();
        }
        for _ in 0..3 {
            written += 1;
            execute(
                &db.store,
                &t,
                &key(&format!("k-{written}")),
                "{}",
                pay::<DB>(1),
            )
            .await
            .unwrap();
        }
        if seal == 1 {
            let report = Maintenance::new(db.store.clone()).run_once().await.unwrap();
            assert_eq!(
                report.sealed_rows, 0,
                "rows younger than the seal delay wait"
            );
            assert_eq!(db.count(SEALS, &[]).await, 0);
        }
        assert_eq!(db.store.seal_audit_log(Duration::ZERO).await.unwrap(), 3);
    }
    assert_eq!(db.store.seal_audit_log(Duration::ZERO).await.unwrap(), 0);
    assert_eq!(db.count(SEALS, &[]).await, 4);
    assert_eq!(
        db.count(
            "SELECT last_seq FROM idempotent_write_audit_seals WHERE seal = 2",
            &[]
        )
        .await,
        1002
    );
    let verified = db.store.verify_audit_log().await.unwrap();
    assert!(verified.holds(), "{verified:?}");
    assert_eq!((verified.verified_seals, verified.verified_rows), (4, 12));
    let latest = verified.latest.expect("a latest seal");
    assert_eq!((latest.number, latest.rows), (4, 3));
    assert_eq!(latest.digest.len(), 64);

    let store = &db.store;
    let broken = move |seal, finding| async move {
        let verification = db_verify::<DB>(store).await;
        let found = verification.broken.expect("a broken seal");
        assert_eq!((found.seal, &found.finding), (seal, &finding), "{found}");
    };
    // The owner takes the triggers out of the way.
    let disable: &[&'static str] = if postgres {
        &["ALTER TABLE idempotent_write_audit_log DISABLE TRIGGER USER"]
    } else {
        &[
            "DROP TRIGGER idempotent_write_audit_log_no_update",
            "DROP TRIGGER idempotent_write_audit_log_no_delete",
        ]
    };
    for statement in disable {
        DB::execute(db.store.pool(), statement).await.unwrap();
    }
    let in_seal_4 = "UPDATE idempotent_write_audit_log SET status = status + 1
        WHERE seq = (SELECT last_seq FROM idempotent_write_audit_seals WHERE seal = 4)";
    assert_eq!(DB::execute(db.store.pool(), in_seal_4).await.unwrap(), 1);
    broken(4, SealFinding::Digest).await;
    let undone = "UPDATE idempotent_write_audit_log SET status = status - 1
        WHERE seq = (SELECT last_seq FROM idempotent_write_audit_seals WHERE seal = 4)";
    assert_eq!(DB::execute(db.store.pool(), undone).await.unwrap(), 1);
    assert!(
        db_verify::<DB>(&db.store).await.holds(),
        "the change undone"
    );

    let from_seal_3 = "DELETE FROM idempotent_write_audit_log
        WHERE seq = (SELECT last_seq - 1 FROM idempotent_write_audit_seals WHERE seal = 3)";
    assert_eq!(DB::execute(db.store.pool(), from_seal_3).await.unwrap(), 1);
    broken(
        3,
        SealFinding::RowCount {
            sealed: 3,
            found: 2,
        },
    )
    .await;

    let into_seal_2 = if postgres {
        "INSERT INTO idempotent_write_audit_log
            (seq, id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint,
             outcome, status, failure, attempts, duration_ms, request_id, created_at_ms,
             repeat_count, first_seen_at_ms, inserted_at_ms)
         OVERRIDING SYSTEM VALUE
         SELECT 500, 'forged', operation, class, company_id, user_id, key_hash, entity_id,
             fingerprint, outcome, status, failure, attempts, duration_ms, request_id,
             created_at_ms, repeat_count, first_seen_at_ms, inserted_at_ms
         FROM idempotent_write_audit_log WHERE seq = 1000"
    } else {
        "INSERT INTO idempotent_write_audit_log
            (seq, id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint,
             outcome, status, failure, attempts, duration_ms, request_id, created_at_ms,
             repeat_count, first_seen_at_ms, inserted_at_ms)
         SELECT 500, 'forged', operation, class, company_id, user_id, key_hash, entity_id,
             fingerprint, outcome, status, failure, attempts, duration_ms, request_id,
             created_at_ms, repeat_count, first_seen_at_ms, inserted_at_ms
         FROM idempotent_write_audit_log WHERE seq = 1000"
    };
    assert_eq!(DB::execute(db.store.pool(), into_seal_2).await.unwrap(), 1);
    broken(
        2,
        SealFinding::RowCount {
            sealed: 3,
            found: 4,
        },
    )
    .await;

    // Retention empties the oldest seals: not a finding; the first seal with rows is checked.
    let retention = "DELETE FROM idempotent_write_audit_log
        WHERE seq <= (SELECT last_seq FROM idempotent_write_audit_seals WHERE seal = 2)";
    assert_eq!(DB::execute(db.store.pool(), retention).await.unwrap(), 7);
    let verification = db_verify::<DB>(&db.store).await;
    assert_eq!(verification.seals_past_retention, 2, "{verification:?}");
    assert_eq!(
        verification.broken.map(|broken| broken.seal),
        Some(3),
        "seal 3 still misses its row"
    );
}

async fn db_verify<DB: TestDb>(store: &IdempotencyStore<DB>) -> AuditVerification {
    store.verify_audit_log().await.unwrap()
}
