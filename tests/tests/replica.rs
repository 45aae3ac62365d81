//! Replays from a read replica: a real streaming standby (`tests/servers/start`: `pg_basebackup
//! -R` of the TLS test server). A replay the standby has is served there without reading the
//! primary's keys; a write the standby has not received yet (its replay paused) is still never
//! run twice, because the primary's claim stays the authority.

#[cfg(postgres_suite)]
mod postgres {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use idem_actix::{
        Fingerprint, IdempotencyKey, IdempotencyStore, Outcome, StoreConfig, StoreError,
        StoredResponse, TenantId, WriteError, WriteRequest, operation,
    };
    use idem_tests::TestServer;
    use sqlx::postgres::{PgPool, PgPoolOptions};
    use sqlx::{Pool, Postgres};

    operation! {
        /// A job whose body counts its runs.
        financial PostJournal = "postJournal";
    }

    async fn pool(url: &str) -> PgPool {
        PgPoolOptions::new()
            .max_connections(4)
            .connect(url)
            .await
            .unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    /// Writes (or replays) `key` once; the body bumps `runs`.
    async fn post(
        store: &IdempotencyStore<Postgres>,
        key: &str,
        runs: &Arc<AtomicUsize>,
    ) -> Outcome {
        let (tenant, key) = (
            TenantId::new("acme").unwrap(),
            IdempotencyKey::parse(key).unwrap(),
        );
        let request =
            WriteRequest::new(&tenant, &key, Fingerprint::of_job("postJournal", b"entry"));
        let runs = runs.clone();
        store
            .execute(PostJournal, request, move |_write| {
                let runs = runs.clone();
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, sqlx::Error>(StoredResponse::new(201, "posted"))
                })
            })
            .await
            .expect("the write")
    }

    /// Waits until the standby has replayed everything the primary has written so far.
    async fn caught_up(primary: &PgPool, standby: &PgPool) {
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(primary)
            .await
            .unwrap();
        for _ in 0..200 {
            let behind: bool = sqlx::query_scalar(
                "SELECT pg_wal_lsn_diff($1::pg_lsn, pg_last_wal_replay_lsn()) > 0",
            )
            .bind(&lsn)
            .fetch_one(standby)
            .await
            .unwrap();
            if !behind {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the standby did not catch up with {lsn}");
    }

    /// How many times the primary's keys table was read (index and sequential scans), once
    /// the backends that read it have exited and reported.
    async fn key_reads(admin: &PgPool, closed: Pool<Postgres>) -> i64 {
        closed.close().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut conn = admin.acquire().await.unwrap();
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query_scalar(
            "SELECT COALESCE(idx_scan, 0) + COALESCE(seq_scan, 0) FROM pg_stat_user_tables WHERE relname = 'idempotency_keys'",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap()
    }

    /// A write that reaches a read-only server (a standby; behind HAProxy, a node that is still
    /// read-only right after a promotion) fails in the store at its claim, before its body
    /// runs: nothing is written, and the HTTP layer answers `503` `#store-unavailable`.
    #[tokio::test]
    async fn a_write_on_a_read_only_server_fails_before_its_body() {
        let standby_url = idem_tests::test_server_database(TestServer::Standby).await;
        let primary_url = standby_url.replacen(":5434/", ":5433/", 1);
        let admin = pool(&primary_url).await;
        IdempotencyStore::<Postgres>::new(admin.clone(), StoreConfig::default())
            .migrate()
            .await
            .unwrap();
        let standby = loop {
            if let Ok(standby) = PgPoolOptions::new().connect(&standby_url).await {
                break standby;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        caught_up(&admin, &standby).await;
        let store = IdempotencyStore::new(standby, StoreConfig::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let (tenant, key) = (
            TenantId::new("acme").unwrap(),
            IdempotencyKey::parse("k-read-only").unwrap(),
        );
        let request =
            WriteRequest::new(&tenant, &key, Fingerprint::of_job("postJournal", b"entry"));
        let body_runs = runs.clone();
        let refused = store
            .execute(PostJournal, request, move |_write| {
                let runs = body_runs.clone();
                Box::pin(async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, sqlx::Error>(StoredResponse::new(201, "posted"))
                })
            })
            .await;
        match refused {
            Err(WriteError::Store(StoreError::Database(error))) => assert_eq!(
                error
                    .as_database_error()
                    .and_then(|error| error.code())
                    .as_deref(),
                Some("25006"),
                "read_only_sql_transaction: {error}"
            ),
            other => panic!("not refused by the read-only server: {other:?}"),
        }
        assert_eq!(runs.load(Ordering::SeqCst), 0, "the body never ran");
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(keys, 0, "nothing was written");
    }

    /// The TLS test server streams to its standby asynchronously: a store on it names the risk
    /// (which `ProtectedRoutes::verify` logs at startup); a store on the standby, which streams
    /// to nothing, finds none.
    #[tokio::test]
    async fn an_asynchronous_standby_is_named_as_a_risk_of_losing_writes() {
        let standby_url = idem_tests::test_server_database(TestServer::Standby).await;
        let primary_url = standby_url.replacen(":5434/", ":5433/", 1);
        let primary = IdempotencyStore::<Postgres>::connect(&primary_url, StoreConfig::default())
            .await
            .unwrap();
        let risks = primary.replication_risks().await.unwrap();
        assert_eq!(risks.len(), 1, "{risks:?}");
        assert!(
            risks[0].starts_with("this primary streams to 1 standby(s) asynchronously"),
            "{risks:?}"
        );
        let standby = loop {
            // The new database reaches the standby by replication.
            if let Ok(standby) =
                IdempotencyStore::<Postgres>::connect(&standby_url, StoreConfig::default()).await
            {
                break standby;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(
            standby.replication_risks().await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn replays_come_from_the_standby_and_lag_never_writes_twice() {
        let standby_url = idem_tests::test_server_database(TestServer::Standby).await;
        let primary_url = standby_url.replacen(":5434/", ":5433/", 1);
        let admin = pool(&primary_url).await;
        let runs = Arc::new(AtomicUsize::new(0));

        // The first write, through a store that has no replica.
        let writer = IdempotencyStore::<Postgres>::connect(&primary_url, StoreConfig::default())
            .await
            .unwrap();
        writer.migrate().await.unwrap();
        assert!(matches!(
            post(&writer, "k-1", &runs).await,
            Outcome::New { .. }
        ));
        writer.flush_audit_within(Duration::from_secs(5)).await;
        let standby = loop {
            // The new database reaches the standby by replication, too.
            if let Ok(standby) = PgPoolOptions::new()
                .max_connections(4)
                .connect(&standby_url)
                .await
            {
                break standby;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        caught_up(&admin, &standby).await;
        let before = key_reads(&admin, writer.pool().clone()).await;

        // Twenty replays through a store with the standby: none reads the primary's keys.
        let served = IdempotencyStore::<Postgres>::connect(&primary_url, StoreConfig::default())
            .await
            .unwrap()
            .with_replica(standby.clone());
        for _ in 0..20 {
            assert!(matches!(
                post(&served, "k-1", &runs).await,
                Outcome::Replayed { .. }
            ));
        }
        served.flush_audit_within(Duration::from_secs(5)).await;
        let after_replica = key_reads(&admin, served.pool().clone()).await;
        assert_eq!(
            after_replica, before,
            "replays from the standby read nothing on the primary"
        );

        // The same replays without the standby do read the primary: the count above can move.
        let direct = IdempotencyStore::<Postgres>::connect(&primary_url, StoreConfig::default())
            .await
            .unwrap();
        for _ in 0..20 {
            assert!(matches!(
                post(&direct, "k-1", &runs).await,
                Outcome::Replayed { .. }
            ));
        }
        direct.flush_audit_within(Duration::from_secs(5)).await;
        assert!(key_reads(&admin, direct.pool().clone()).await > after_replica);

        // Lag: the standby stops replaying; a new write and its retries go to the primary.
        sqlx::query("SELECT pg_wal_replay_pause()")
            .execute(&standby)
            .await
            .unwrap();
        let lagging = IdempotencyStore::<Postgres>::connect(&primary_url, StoreConfig::default())
            .await
            .unwrap()
            .with_replica(standby.clone());
        assert!(matches!(
            post(&lagging, "k-2", &runs).await,
            Outcome::New { .. }
        ));
        for _ in 0..5 {
            assert!(matches!(
                post(&lagging, "k-2", &runs).await,
                Outcome::Replayed { .. }
            ));
        }
        let on_standby: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM idempotency_keys WHERE idempotency_key = 'k-2'",
        )
        .fetch_one(&standby)
        .await
        .unwrap();
        assert_eq!(on_standby, 0, "the standby had not received k-2");
        sqlx::query("SELECT pg_wal_replay_resume()")
            .execute(&standby)
            .await
            .unwrap();
        let on_primary: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(on_primary, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2, "each key's body ran once");
    }
}
