//! MySQL's own faults, on both backends that speak MySQL: `IdempotencyStore<MySql>` and
//! `IdempotencyStore<Any>` over MySQL, whose driver errors `Any` must classify alike.

use super::*;

// The statements below are MySQL's own (`CONNECTION_ID()`, `KILL`, `?`), run through whichever
// of the two backends the test instantiates.
idem_tests::per_backend!(protocol_test! for [mysql, any_mysql] [
    twin_in_another_process_past_the_lock_timeout_is_in_flight,
    a_connection_killed_mid_transaction_writes_nothing,
    deadlocked_writes_are_retried_and_land_once { threads: 4 },
]);

/// A second process has its own in-process coalescing, so its twin waits on the
/// key's row, and `innodb_lock_wait_timeout` (the lock timeout rounded up to a
/// second) turns the wait into `InFlight` (error 1205).
pub(crate) async fn twin_in_another_process_past_the_lock_timeout_is_in_flight<DB: TestDb>() {
    twin_past_the_lock_timeout_is_in_flight::<DB>(true).await;
}

/// The server kills the write's connection (`KILL`) while its transaction is open: the
/// write fails as a lost connection, nothing of it is written, its key is free, and the
/// retry writes exactly once.
pub(crate) async fn a_connection_killed_mid_transaction_writes_nothing<DB: TestDb>()
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
{
    let db = DB::fresh(StoreConfig::default()).await;
    let connection = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let (entered, killed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let (id_out, inside, gone) = (connection.clone(), entered.clone(), killed.clone());
    let doomed: Box<Body<DB>> = Box::new(move |write| {
        let (id_out, inside, gone) = (id_out.clone(), inside.clone(), gone.clone());
        Box::pin(async move {
            let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
            DB::insert_payment(write.tx(), id, &tenant, 1).await?;
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
        pay::<DB>(1),
    )
    .await;
    assert!(matches!(retry, Ok(Outcome::New { .. })), "{retry:?}");
    assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 1);
}

/// Two writes lock two rows in opposite orders: InnoDB picks one as the deadlock's
/// victim (error 1213) and rolls it back, and the protocol retries it on a fresh
/// transaction; both land, once each.
pub(crate) async fn deadlocked_writes_are_retried_and_land_once<DB: TestDb>()
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
{
    let db = DB::fresh(StoreConfig::default()).await;
    DB::execute(
        db.store.pool(),
        "INSERT INTO ledger (seq, tenant_id, amount, balance) VALUES (1, 'a', 0, 0), (2, 'b', 0, 0)",
    )
    .await
    .unwrap();
    let both_hold_one = Arc::new(tokio::sync::Barrier::new(2));
    let lock_in_order = |first: i64, second: i64| -> Box<Body<DB>> {
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
                DB::insert_payment(write.tx(), id, &tenant, 1).await?;
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
