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
            let setting: String = sqlx::query_scalar("SELECT current_setting('idem.tenant_id')")
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
/// read it, and seal it, and nothing else: UPDATE, DELETE, TRUNCATE (of the log and of its
/// seals), disabling the trigger, a forged
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
    let runtime =
        IdempotencyStore::<sqlx::Postgres>::new(db.pool_as(&role).await, StoreConfig::default());
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

    // The runtime role seals the log (maintenance runs as it).
    assert_eq!(runtime.seal_audit_log(Duration::ZERO).await.unwrap(), 2);
    assert!(runtime.verify_audit_log().await.unwrap().holds());

    let attacks = [
        "UPDATE idempotent_write_audit_seals SET digest = 'forged'",
        "DELETE FROM idempotent_write_audit_seals",
        "TRUNCATE idempotent_write_audit_seals",
        "ALTER TABLE idempotent_write_audit_seals DISABLE TRIGGER ALL",
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
        // Refused for want of privilege, not for anything else (a misspelled trigger's name
        // would fail too, as an undefined object, and prove nothing).
        let code = refused
            .as_ref()
            .err()
            .and_then(|error| error.as_database_error())
            .and_then(|error| error.code());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "insufficient_privilege for {attack}: {refused:?}"
        );
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

/// No statement of the protocol reads a whole table: on tables big enough that the planner
/// weighs its choices (200 000 keys over 100 tenants, 200 000 audit rows, 100 000 outbox events
/// of which 54 000 are due, a backlog, 5 000 seals), each statement's generic plan, the one a
/// prepared statement runs with any parameters, has no sequential scan, and the outbox claim
/// and both purges read their batch in index order, without sorting the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_protocol_statement_scans_a_whole_table() {
    let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
    let mut conn = db.store.pool().acquire().await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO idempotency_keys
             (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id,
              response_status, response_headers, response_body, created_at_ms, expires_at_ms)
         SELECT 'tenant-' || (i % 100), 'createPayment', 'key-' || i, sha256(i::text::bytea),
             'entity-' || i, i, 201, '[]', convert_to(repeat('x', 100), 'UTF8'),
             1700000000000 + i, 1700086400000 + i
         FROM generate_series(1, 200000) AS i;
         INSERT INTO idempotent_write_audit_log
             (id, operation, class, company_id, key_hash, entity_id, fingerprint, outcome,
              status, attempts, duration_ms, created_at_ms)
         SELECT 'audit-' || i, 'createPayment', 'financial', 'tenant-' || (i % 100),
             md5(i::text), 'entity-' || i, md5(i::text), 'new', 201, 1, 1.5, 1700000000000 + i
         FROM generate_series(1, 200000) AS i;
         INSERT INTO idem_outbox
             (event_id, tenant_id, operation, entity_id, topic, payload, sequence_in_write,
              created_at_ms, delivered_at_ms, parked_at_ms)
         SELECT 'event-' || i, 'tenant-' || (i % 100), 'createPayment', 'entity-' || i,
             'receipt', '\\x7b7d', 1, 1700000000000 + i,
             CASE WHEN i % 100 < 45 THEN 1700000001000 + i END,
             CASE WHEN i % 100 = 99 THEN 1700000002000 + i END
         FROM generate_series(1, 100000) AS i;
         INSERT INTO idempotent_write_audit_seals
             (seal, first_seq, last_seq, row_count, digest, previous_digest, sealed_at_ms)
         SELECT i, (i - 1) * 40 + 1, i * 40, 40, md5(i::text), md5((i - 1)::text), 1700000000000 + i
         FROM generate_series(1, 5000) AS i;",
    )
    .execute(&mut *conn)
    .await
    .expect("load the tables");
    // As autovacuum leaves a table: statistics, and the visibility map that lets a count read
    // an index alone.
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&mut *conn)
        .await
        .expect("vacuum");

    let plans = idem_runtime::__private::postgres_generic_plans(&mut conn)
        .await
        .expect("plan every statement");
    let scans: Vec<String> = plans
        .iter()
        .filter(|(_, plan)| plan.contains("Seq Scan"))
        .map(|(name, plan)| format!("{name}:\n{plan}"))
        .collect();
    // The dispatcher's claim and the purges read their batch in the index's order and stop: a
    // sort would read the whole backlog for each batch (a million due events, in the scale
    // benchmark).
    for batched in ["claim_events", "purge_delivered", "purge_expired"] {
        let plan = plan_of(&plans, batched);
        assert!(!plan.contains("Sort"), "{batched} sorts:\n{plan}");
    }
    assert!(
        scans.is_empty(),
        "sequential scans:\n{}",
        scans.join("\n\n")
    );
}

/// The generic plan of the statement named `name`, from `postgres_generic_plans`.
fn plan_of<'a>(plans: &'a [(String, String)], name: &str) -> &'a str {
    plans
        .iter()
        .find(|(planned, _)| planned == name)
        .map(|(_, plan)| plan.as_str())
        .unwrap_or_else(|| panic!("{name} is not planned"))
}

/// Keys that expired in a mass after the statistics were gathered (a purge that was off for a
/// while, a retention shortened), and the first of them purged: the planner's look at the
/// expiry index's true lowest value stops at the purged rows' entries, so it believes almost
/// no key expired. The purge still finds each batch's rows by their `ctid`, not by walking
/// every expired key through the expiry index for each batch of 1 000 (which made a
/// million-key backlog purge at about a hundred rows a second in the scale benchmark), and
/// deletes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_purge_finds_its_batch_by_row_however_stale_the_statistics() {
    let pace = PurgePace::default().with_pause(Duration::ZERO);
    let db = sqlx::Postgres::fresh(StoreConfig::default().with_purge_pace(pace)).await;
    let mut conn = db.store.pool().acquire().await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO idempotency_keys
             (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id,
              response_status, response_headers, response_body, created_at_ms, expires_at_ms)
         SELECT 'tenant-' || (i % 100), 'createPayment', 'key-' || i, sha256(i::text::bytea),
             'entity-' || i, i, 201, '[]', '\\x7b7d', idem_now_ms(), idem_now_ms() + 86400000 + i
         FROM generate_series(1, 100000) AS i;
         ANALYZE idempotency_keys;
         UPDATE idempotency_keys SET expires_at_ms = 0 WHERE attempt_id % 2 = 0;
         DELETE FROM idempotency_keys WHERE expires_at_ms = 0 AND attempt_id <= 40000;",
    )
    .execute(&mut *conn)
    .await
    .expect("load the keys, gather statistics, expire half, purge some");
    let plans = idem_runtime::__private::postgres_generic_plans(&mut conn)
        .await
        .expect("plan every statement");
    drop(conn);
    let purge = plan_of(&plans, "purge_expired");
    assert!(
        purge.contains("Tid Scan on idempotency_keys"),
        "the purge does not find its batch by row:\n{purge}"
    );
    assert_eq!(db.store.purge_expired().await.unwrap(), 30_000);
    assert_eq!(db.count(KEYS, &[]).await, 50_000);
}

/// The purge of expired keys races a claim that takes an expired key over: the purge chose the
/// key while it was expired, then waited for the claim's row lock; once the claim commits, the
/// key is live again and stays (the purge re-checks the row it waited for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_taken_over_while_the_purge_waits_for_it_stays() {
    let db = sqlx::Postgres::fresh(StoreConfig::default()).await;
    let (t, k) = (tenant("acme"), key("k-race"));
    execute(&db.store, &t, &k, "{}", pay::<sqlx::Postgres>(1))
        .await
        .unwrap();
    sqlx::Postgres::execute(
        db.store.pool(),
        "UPDATE idempotency_keys SET expires_at_ms = 0",
    )
    .await
    .unwrap();
    // A claim takes the expired key over and holds its row, uncommitted.
    let mut claim = db.store.pool().begin().await.unwrap();
    sqlx::raw_sql(
        "UPDATE idempotency_keys SET expires_at_ms = idem_now_ms() + 86400000,
             attempt_id = attempt_id + 1",
    )
    .execute(&mut *claim)
    .await
    .unwrap();
    let purge = tokio::spawn({
        let store = db.store.clone();
        async move { store.purge_expired().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!purge.is_finished(), "the purge waits for the claim's row");
    claim.commit().await.unwrap();
    assert_eq!(purge.await.unwrap().unwrap(), 0, "nothing purged");
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotency_keys WHERE expires_at_ms > idem_now_ms()",
            &[]
        )
        .await,
        1,
        "the live key stays"
    );
}
