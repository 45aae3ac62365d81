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
        let gone = tokio::time::timeout(
            Duration::from_millis(500),
            execute(
                &store,
                &tenant("acme"),
                &key("k-gone"),
                "{}",
                held_open::<sqlx::Postgres>(1),
            ),
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
