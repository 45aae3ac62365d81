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
    Fingerprint, IdempotencyKey, IdempotencyStore, OutboxDispatcher, Outcome, PurgePace,
    RequestPart, StoreConfig, StoredResponse, TenantId, WriteContext, WriteError, WriteRequest,
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

/// A body that writes a payment, then never finishes: the request went away mid-body, its
/// transaction left open until the future is dropped.
#[cfg(any(postgres_suite, mysql_suite))]
fn held_open<DB: TestDb>(amount_cents: i64) -> Box<Body<DB>> {
    Box::new(move |write| {
        Box::pin(async move {
            let id = write.entity_id();
            let tenant = write.tenant().as_str().to_owned();
            DB::insert_payment(write.tx(), id, &tenant, amount_cents).await?;
            pending().await
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

mod audit;
mod events;
mod writes;

use audit::*;
use events::*;
use writes::*;

/// One test of a generic scenario on a backend: `#[tokio::test]` on as many worker threads as
/// the scenario asks (`{ threads: 4 }`; 2 when it does not say), the scenario instantiated for
/// the backend's database type, inside PgBouncer's transaction pooling for `pgbouncer`.
macro_rules! protocol_test {
    ($backend:ident, $scenario:ident) => {
        protocol_test!($backend, $scenario { threads: 2 });
    };
    ($backend:ident, $scenario:ident { threads: $threads:literal }) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = $threads)]
        async fn $scenario() {
            protocol_test!(@run $backend, $scenario)
        }
    };
    (@run sqlite, $scenario:ident) => { super::$scenario::<sqlx::Sqlite>().await };
    (@run postgres, $scenario:ident) => { super::$scenario::<sqlx::Postgres>().await };
    (@run mysql, $scenario:ident) => { super::$scenario::<sqlx::MySql>().await };
    // `IdempotencyStore<Any>` over MySQL (see `TestDb for Any`).
    (@run any_mysql, $scenario:ident) => { super::$scenario::<sqlx::Any>().await };
    (@run pgbouncer, $scenario:ident) => {
        idem_tests::through_pgbouncer(super::$scenario::<sqlx::Postgres>()).await
    };
}

// Every generic scenario on every backend; the compiler checks each name against its `async fn`.
// PgBouncer runs them all again through transaction pooling; `any_mysql`, through `Any`.
idem_tests::per_backend!(protocol_test! for [
    sqlite,
    #[cfg(postgres_suite)] postgres,
    #[cfg(mysql_suite)] mysql,
    #[cfg(mysql_suite)] any_mysql,
    #[cfg(postgres_suite)] pgbouncer,
] [
    burst_of_500_with_one_key_writes_once { threads: 4 },
    fifty_tenants_by_ten_keys_write_500_rows { threads: 4 },
    one_key_in_two_tenants_is_two_writes,
    retry_replays_and_another_payload_is_a_mismatch,
    body_error_rolls_back_and_frees_the_key,
    body_panic_rolls_back_and_frees_the_key,
    cancelled_body_rolls_back_and_frees_the_key,
    twin_in_this_process_past_the_lock_timeout_is_in_flight,
    twins_across_processes_write_once { threads: 4 },
    expired_keys_stop_replaying_and_are_purged,
    the_purge_deletes_in_batches_with_a_pause_between,
    one_event_per_new_write_none_per_replay_or_refusal,
    events_survive_a_crash_between_commit_and_dispatch,
    a_running_dispatcher_delivers_after_the_commit,
    a_failing_event_is_parked_and_never_blocks_the_rest,
    two_dispatchers_deliver_each_event_once { threads: 4 },
    a_backlog_drains_batch_after_batch,
    a_stuck_handler_delays_nobody_else,
    one_writes_events_arrive_in_order,
    a_reused_key_records_new_event_ids,
    a_replay_flood_writes_a_bounded_number_of_audit_rows { threads: 4 },
    a_flush_cuts_the_coalescing_window_short,
    event_ids_derive_from_the_entity_the_place_and_the_claim,
    a_handlers_own_io_error_is_its_answer,
    unhandled_and_undecodable_events_do_not_block_the_queue,
    a_running_dispatcher_survives_database_errors_and_stops_when_told,
    maintenance_purges_what_retention_allows_and_nothing_else,
    a_full_audit_queue_makes_requests_write_their_own_rows { threads: 4 },
    an_operation_outside_the_registries_is_refused_and_writes_nothing,
    the_audit_log_is_append_only,
    a_sealed_audit_log_finds_each_change_by_the_tables_owner,
    migrations_are_idempotent_and_kept_apart,
]);

mod sqlite_only;

#[cfg(postgres_suite)]
mod postgres_only;

mod sqlite_durability;

#[cfg(postgres_suite)]
mod pgbouncer_only;

#[cfg(mysql_suite)]
mod mysql_faults;

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
        let gone = tokio::time::timeout(
            Duration::from_millis(500),
            execute(
                &store,
                &tenant("acme"),
                &key("k-gone"),
                "{}",
                held_open::<MySql>(3),
            ),
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

    /// The runtime user docs/production.md describes (`SELECT, INSERT` on the audit log, what the
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
            // Denied for want of privilege (SQLSTATE 42000, "… command denied"), not for
            // anything else: a misspelled trigger's name fails as unknown, and proves nothing.
            let denied = refused
                .as_ref()
                .err()
                .and_then(|error| error.as_database_error())
                .is_some_and(|error| {
                    error.code().as_deref() == Some("42000") && error.message().contains("denied")
                });
            assert!(denied, "{attack} was not denied: {refused:?}");
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
