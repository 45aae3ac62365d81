//! Faults injected into a real PostgreSQL server, each followed by SQL proving that nothing
//! was written twice and nothing acknowledged was lost. `chaos-scenarios.md` describes each.
#![cfg(postgres_suite)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use awc::Client;
use idem_actix::prometheus::{PrometheusHandle, install_recorder};
use idem_actix::{
    Idempotency, IdempotencyKey, IdempotencyStore, ProtectedRoutes, StoreConfig, WriteContext,
    financial_mutation,
};
use idem_tests::{FixedTenant, TestDb};
use serde::Deserialize;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Pool, Postgres};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The problem type of a refusal while the database cannot be reached.
const STORE_UNAVAILABLE: &str = "tag:idem-rs.github.io,2026:problems#store-unavailable";

const PAYMENTS: &str = "SELECT COUNT(*) FROM payments";

/// The rows of `pg_stat_activity` that are a write of this server (`$1`, its application name)
/// holding its transaction open after the body's INSERT.
macro_rules! open_write {
    () => {
        "FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction' AND query LIKE 'INSERT INTO payments%'"
    };
}

#[derive(Deserialize)]
struct Payment {
    amount_cents: i64,
    /// How long the handler holds its transaction open after writing.
    #[serde(default)]
    hold_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct PaymentError(#[from] sqlx::Error);

impl ResponseError for PaymentError {}

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Postgres>,
    payment: web::Json<Payment>,
) -> Result<HttpResponse, PaymentError> {
    record_payment(write, payment.into_inner()).await
}

/// The same write as [`create_payment`] under an operation of its own, whose metrics no other
/// test of this binary moves (they run beside each other, with one recorder).
#[financial_mutation("createRefund", post = "/refunds")]
async fn create_refund(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Postgres>,
    refund: web::Json<Payment>,
) -> Result<HttpResponse, PaymentError> {
    record_payment(write, refund.into_inner()).await
}

async fn record_payment(
    write: &mut WriteContext<'_, Postgres>,
    payment: Payment,
) -> Result<HttpResponse, PaymentError> {
    let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
    Postgres::insert_payment(write.tx(), id, &tenant, payment.amount_cents).await?;
    tokio::time::sleep(Duration::from_millis(payment.hold_ms)).await;
    // A statement after the pause: a connection killed meanwhile fails here, inside the write.
    sqlx::query("SELECT 1").execute(write.tx()).await?;
    Ok(HttpResponse::Created().json(json!({ "id": id })))
}

/// A server whose store reaches PostgreSQL through `options` (its own schema, its own
/// application name, so faults hit only this test's connections).
struct Faulty {
    base: String,
    store: IdempotencyStore<Postgres>,
    admin: Pool<Postgres>,
    application: String,
    handle: actix_web::dev::ServerHandle,
}

impl Faulty {
    async fn start(
        configure: impl FnOnce(PgConnectOptions) -> PgConnectOptions,
        pool: PgPoolOptions,
    ) -> Self {
        let schema = idem_tests::postgres_test_schema().await;
        let application = format!("idem-faults-{}", fastrand::u64(..));
        let admin = PgPoolOptions::new()
            .connect_with(schema.clone())
            .await
            .unwrap();
        let store = IdempotencyStore::new(admin.clone(), StoreConfig::default());
        store.migrate().await.unwrap();
        Postgres::create_business_tables(&admin).await;

        let options = configure(schema.application_name(&application));
        let pool = pool.connect_lazy_with(options);
        let config = StoreConfig::default().with_lock_timeout(Duration::from_secs(2));
        let store = IdempotencyStore::new(pool.clone(), config);
        let routes =
            ProtectedRoutes::new(Idempotency::new(store.clone(), FixedTenant::new("acme")))
                .financial(create_payment)
                .financial(create_refund)
                .verify()
                .await
                .expect("the startup check passes");
        let (base, handle) = idem_tests::serve(routes.mutation_gate(), move |config| {
            routes.configure(config)
        });
        Self {
            base,
            store,
            admin,
            application,
            handle,
        }
    }

    async fn default() -> Self {
        Self::start(|options| options, PgPoolOptions::new()).await
    }

    async fn pay(&self, key: &str, body: serde_json::Value) -> (StatusCode, Option<String>) {
        let (status, retry_after, _) = self.pay_or_refused(key, body).await;
        (status, retry_after)
    }

    /// [`Self::pay`], and the problem type of a refusal (`None` for an answer that is not a
    /// problem).
    async fn pay_or_refused(
        &self,
        key: &str,
        body: serde_json::Value,
    ) -> (StatusCode, Option<String>, Option<String>) {
        self.post("/payments", key, body).await
    }

    async fn refund(&self, key: &str, body: serde_json::Value) -> StatusCode {
        self.post("/refunds", key, body).await.0
    }

    /// Posts `body` to `path` with `key`: the status, `Retry-After` and the problem type of a
    /// refusal.
    async fn post(
        &self,
        path: &str,
        key: &str,
        body: serde_json::Value,
    ) -> (StatusCode, Option<String>, Option<String>) {
        let client = Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut response = client
            .post(format!("{}{path}", self.base))
            .insert_header(("idempotency-key", key))
            .send_json(&body)
            .await
            .expect("the server answers");
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap().to_owned());
        let problem = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|body| Some(body["type"].as_str()?.to_owned()));
        (response.status(), retry_after, problem)
    }

    async fn count(&self, sql: &'static str) -> i64 {
        self.count_bound(sql, &[]).await
    }

    /// Runs a `SELECT COUNT(*) ...` bound to `args`.
    async fn count_bound(&self, sql: &'static str, args: &[&str]) -> i64 {
        let mut query = sqlx::query_scalar(sql);
        for arg in args {
            query = query.bind(*arg);
        }
        query.fetch_one(&self.admin).await.unwrap()
    }

    /// Waits until `sql`, bound to `args`, counts `expected`.
    async fn until(&self, sql: &'static str, args: &[&str], expected: i64) {
        for _ in 0..200 {
            if self.count_bound(sql, args).await == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{sql} never reached {expected}");
    }

    /// Waits until a write of this server has run its body's INSERT and holds its transaction
    /// open (the body then sleeps). Not merely any open transaction: between `BEGIN` and the
    /// INSERT the connection is briefly idle in a transaction too, and then busy again.
    async fn until_a_write_is_open(&self) {
        let open_writes = concat!("SELECT COUNT(*) ", open_write!());
        self.until(open_writes, &[&self.application], 1).await;
    }

    /// Sends a request over a raw socket and returns the socket without reading the answer.
    async fn send_and_walk_away(&self, key: &str, body: serde_json::Value) -> TcpStream {
        let body = body.to_string();
        let request = format!(
            "POST /payments HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nidempotency-key: {key}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = TcpStream::connect(self.base.trim_start_matches("http://"))
            .await
            .unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stream
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// The server-side backend is killed while the write's transaction is open: the request fails
/// cleanly, and the client's retry with the same key writes exactly once.
#[actix_web::test]
async fn backend_killed_mid_transaction() {
    let db = Faulty::default().await;
    let killer = async {
        db.until_a_write_is_open().await;
        let killed: Vec<bool> =
            sqlx::query_scalar(concat!("SELECT pg_terminate_backend(pid) ", open_write!()))
                .bind(&db.application)
                .fetch_all(&db.admin)
                .await
                .unwrap();
        assert_eq!(killed, [true]);
    };
    let (killed_request, ()) = tokio::join!(
        db.pay("k-kill", json!({ "amount_cents": 10, "hold_ms": 3000 })),
        killer
    );
    assert!(
        killed_request.0.is_server_error(),
        "the killed write fails: {killed_request:?}"
    );
    assert_eq!(db.count(PAYMENTS).await, 0, "nothing of it committed");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idempotency_keys").await,
        0,
        "its key is free"
    );

    assert_eq!(
        db.pay("k-kill", json!({ "amount_cents": 10 })).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        db.pay("k-kill", json!({ "amount_cents": 10 })).await.0,
        StatusCode::OK
    );
    assert_eq!(db.count(PAYMENTS).await, 1, "exactly once");
    db.stop().await;
}

/// The write commits but its answer never reaches the client; the retry gets the stored
/// answer, not a second payment.
#[actix_web::test]
async fn answer_lost_after_commit() {
    let db = Faulty::default().await;
    let lost = db
        .send_and_walk_away("k-lost", json!({ "amount_cents": 25 }))
        .await;
    db.until(
        "SELECT COUNT(*) FROM idempotency_keys WHERE response_status IS NOT NULL",
        &[],
        1,
    )
    .await;
    drop(lost);
    let (status, _) = db.pay("k-lost", json!({ "amount_cents": 25 })).await;
    assert_eq!(status, StatusCode::OK, "the retry replays");
    assert_eq!(db.count(PAYMENTS).await, 1);
    db.stop().await;
}

/// The client disconnects while the write is in progress. Whatever the server did with the
/// abandoned request, the retry answers success and there is exactly one payment.
#[actix_web::test]
async fn client_disconnects_mid_request() {
    let db = Faulty::default().await;
    let request = json!({ "amount_cents": 5, "hold_ms": 500 });
    let abandoned = db.send_and_walk_away("k-gone", request.clone()).await;
    db.until_a_write_is_open().await;
    drop(abandoned);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(db.count(PAYMENTS).await <= 1);
    let (status, _) = db.pay("k-gone", request).await;
    assert!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "{status}"
    );
    assert_eq!(db.count(PAYMENTS).await, 1, "never twice, never lost");
    db.stop().await;
}

/// Every connection is busy: a clear 503 with Retry-After, quickly, and no partial write.
#[actix_web::test]
async fn pool_exhaustion_is_503_with_retry_after() {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(300));
    let db = Faulty::start(|options| options, pool).await;
    let holder = db.pay("k-holder", json!({ "amount_cents": 1, "hold_ms": 1500 }));
    let starved = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let answer = db
            .pay_or_refused("k-starved", json!({ "amount_cents": 2 }))
            .await;
        (answer, started.elapsed())
    };
    let (holder, ((status, retry_after, problem), waited)) = tokio::join!(holder, starved);
    assert_eq!(holder.0, StatusCode::CREATED);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(problem.as_deref(), Some(STORE_UNAVAILABLE));
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(waited < Duration::from_secs(5), "no hang: {waited:?}");
    assert_eq!(
        db.count("SELECT COUNT(*) FROM payments WHERE amount_cents = 2")
            .await,
        0
    );
    assert_eq!(
        db.pay("k-starved", json!({ "amount_cents": 2 })).await.0,
        StatusCode::CREATED
    );
    assert_eq!(db.count(PAYMENTS).await, 2);
    db.stop().await;
}

/// A TCP proxy on a free local port: each client it accepts is handed to `relay` on a task of
/// its own. Returns the port.
async fn proxy<R, F>(relay: R) -> u16
where
    R: Fn(TcpStream) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(relay(client));
        }
    });
    port
}

/// A TCP relay in front of PostgreSQL that can be cut and restored, like a network partition.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let up = Arc::new(AtomicBool::new(true));
        let relay_up = up.clone();
        let port = proxy(move |client| {
            let (target, up) = (target.clone(), relay_up.clone());
            async move {
                if !up.load(Ordering::SeqCst) {
                    return; // refused: dropped at once
                }
                if let Ok(server) = TcpStream::connect(&target).await {
                    idem_tests::pipe_until_cut(client, server, &up).await;
                }
            }
        })
        .await;
        Self { port, up }
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// The database is unreachable for a while, then back: requests fail cleanly (503, nothing
/// written), then succeed, each exactly once.
#[actix_web::test]
async fn database_unreachable_then_back() {
    let url = std::env::var("DATABASE_URL").unwrap();
    let target: PgConnectOptions = url.parse().unwrap();
    let relay = Relay::start(format!("{}:{}", target.get_host(), target.get_port())).await;
    let pool = PgPoolOptions::new().acquire_timeout(Duration::from_secs(1));
    let db = Faulty::start(|options| options.host("127.0.0.1").port(relay.port), pool).await;
    assert_eq!(
        db.pay("k-before", json!({ "amount_cents": 1 })).await.0,
        StatusCode::CREATED
    );

    relay.set(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for key in ["k-down-1", "k-down-2"] {
        let (status, retry_after, problem) =
            db.pay_or_refused(key, json!({ "amount_cents": 2 })).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{key}");
        assert_eq!(problem.as_deref(), Some(STORE_UNAVAILABLE), "{key}");
        assert!(retry_after.is_some());
    }
    relay.set(true);
    let mut recovered = false;
    for _ in 0..40 {
        if db.pay("k-down-1", json!({ "amount_cents": 2 })).await.0 == StatusCode::CREATED {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the write succeeds once the database is back");
    assert_eq!(
        db.pay("k-down-1", json!({ "amount_cents": 2 })).await.0,
        StatusCode::OK
    );
    assert_eq!(
        db.count(PAYMENTS).await,
        2,
        "k-before and k-down-1, once each"
    );
    db.stop().await;
}

/// A TCP proxy in front of PostgreSQL that, once armed, lets the next `COMMIT` (or the next
/// audit batch insert) through to the server, waits for the server's answer (the commit has
/// landed), swallows it and cuts the connection: the client cannot know whether its
/// transaction committed.
struct CommitCutter {
    port: u16,
    armed: Arc<AtomicBool>,
    /// Whether the armed cut is that of an audit batch insert rather than of a `COMMIT`.
    audit_batch: Arc<AtomicBool>,
    /// Whether new connections are refused once the cut happened, until restored.
    partition: Arc<AtomicBool>,
}

impl CommitCutter {
    async fn start(target: String) -> Self {
        let armed = Arc::new(AtomicBool::new(false));
        let audit_batch = Arc::new(AtomicBool::new(false));
        let partition = Arc::new(AtomicBool::new(false));
        let cutter = (armed.clone(), audit_batch.clone(), partition.clone());
        let port = proxy(move |client| {
            let target = target.clone();
            let (armed, audit_batch, partition) = cutter.clone();
            async move {
                // Partitioned: the connection is refused, as by a network that is down.
                let partitioned = partition.load(Ordering::SeqCst) && !armed.load(Ordering::SeqCst);
                if partitioned {
                    return;
                }
                if let Ok(server) = TcpStream::connect(&target).await {
                    let cut = Cut {
                        armed,
                        audit_batch,
                        partition,
                    };
                    Self::relay(client, server, cut).await;
                }
            }
        })
        .await;
        Self {
            port,
            armed,
            audit_batch,
            partition,
        }
    }

    /// A cutter in front of `DATABASE_URL`'s server, and a server whose store's pool (`pool`)
    /// reaches the database through it.
    async fn in_front_of_a_server(pool: PgPoolOptions) -> (Self, Faulty) {
        let url = std::env::var("DATABASE_URL").unwrap();
        let target: PgConnectOptions = url.parse().unwrap();
        let cutter = Self::start(format!("{}:{}", target.get_host(), target.get_port())).await;
        let port = cutter.port;
        let db = Faulty::start(
            |options| {
                options
                    .host("127.0.0.1")
                    .port(port)
                    .ssl_mode(PgSslMode::Disable)
            },
            pool,
        )
        .await;
        (cutter, db)
    }

    /// After the next cut, refuses every new connection until [`Self::restore`]: the
    /// database is unreachable when the write tries to read its outcome back.
    fn partition_after_the_cut(&self) {
        self.partition.store(true, Ordering::SeqCst);
    }

    /// Lets connections through again.
    fn restore(&self) {
        self.partition.store(false, Ordering::SeqCst);
    }

    /// Cuts the next `COMMIT` any connection sends.
    fn arm(&self) {
        self.audit_batch.store(false, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Cuts the next audit batch insert (an autocommit statement: it commits at the `Sync`
    /// that follows its `Execute`).
    fn arm_audit_batch(&self) {
        self.audit_batch.store(true, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Whether an armed cut happened.
    fn has_cut(&self) -> bool {
        !self.armed.load(Ordering::SeqCst)
    }

    /// Relays one connection until the cut, or until the partition after it.
    async fn relay(client: TcpStream, server: TcpStream, cut: Cut) {
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let cutting = AtomicBool::new(false);
        tokio::select! {
            _ = Self::to_server(client_read, server_write, &cut, &cutting) => {}
            _ = Self::to_client(server_read, client_write, &cutting) => {}
        }
    }

    /// The client's messages, one by one, to spot the statement to cut.
    async fn to_server(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        cut: &Cut,
        cutting: &AtomicBool,
    ) -> std::io::Result<()> {
        let Cut {
            armed,
            audit_batch,
            partition,
        } = cut;
        // How far this connection is into an audit batch insert: parsed, then executed.
        let (mut audit_parsed, mut audit_executed) = (false, false);
        // The startup message has no type byte: a length, then the rest.
        let length = from.read_u32().await?;
        let mut startup = vec![0; length as usize - 4];
        from.read_exact(&mut startup).await?;
        to.write_all(&length.to_be_bytes()).await?;
        to.write_all(&startup).await?;
        loop {
            let tag = from.read_u8().await?;
            let length = from.read_u32().await?;
            let mut body = vec![0; length as usize - 4];
            from.read_exact(&mut body).await?;
            // After the cut, a partition ends every connection at its next message.
            if partition.load(Ordering::SeqCst) && !armed.load(Ordering::SeqCst) {
                return Ok(());
            }
            if audit_batch.load(Ordering::SeqCst) {
                // The extended protocol: `Parse` of the insert, `Execute`, then the `Sync` at
                // which the implicit transaction commits and the server answers.
                audit_parsed |= tag == b'P'
                    && body
                        .windows(AUDIT_INSERT.len())
                        .any(|text| text == AUDIT_INSERT);
                audit_executed |= audit_parsed && tag == b'E';
                if audit_executed && tag == b'S' && armed.swap(false, Ordering::SeqCst) {
                    cutting.store(true, Ordering::SeqCst);
                }
            } else if tag == b'Q' && body == b"COMMIT\0" && armed.swap(false, Ordering::SeqCst) {
                // A simple query `COMMIT`, as sqlx sends it.
                cutting.store(true, Ordering::SeqCst);
            }
            to.write_all(&[tag]).await?;
            to.write_all(&length.to_be_bytes()).await?;
            to.write_all(&body).await?;
        }
    }

    /// The server's bytes as they come, until it answers the cut `COMMIT`.
    async fn to_client(
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        cutting: &AtomicBool,
    ) -> std::io::Result<()> {
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let read = from.read(&mut buffer).await?;
            // After the cut, whatever the server sends is its answer to `COMMIT`: the
            // transaction has committed. The answer is dropped with the connection.
            if read == 0 || cutting.load(Ordering::SeqCst) {
                return Ok(());
            }
            to.write_all(&buffer[..read]).await?;
        }
    }
}

/// What a relayed connection of a [`CommitCutter`] watches for.
struct Cut {
    armed: Arc<AtomicBool>,
    audit_batch: Arc<AtomicBool>,
    partition: Arc<AtomicBool>,
}

/// The start of the audit writer's batch insert.
const AUDIT_INSERT: &[u8] = b"INSERT INTO idempotent_write_audit_log";

/// The connection drops after the server committed but before the client heard so: the
/// ambiguous `COMMIT`. The protocol re-reads the key, finds its own attempt's row, and answers
/// the new write (not an error, not a replay of itself); the retry replays; one payment.
#[actix_web::test]
async fn commit_answer_lost_is_settled_as_the_new_write() {
    let (cutter, db) = CommitCutter::in_front_of_a_server(PgPoolOptions::new()).await;
    assert_eq!(
        db.pay("k-before", json!({ "amount_cents": 1 })).await.0,
        StatusCode::CREATED
    );

    cutter.arm();
    let (status, _) = db.pay("k-ambiguous", json!({ "amount_cents": 40 })).await;
    assert!(cutter.has_cut(), "the write's COMMIT was cut");
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the commit landed: the answer is the new write"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM payments WHERE amount_cents = 40")
            .await,
        1
    );
    assert_eq!(
        db.pay("k-ambiguous", json!({ "amount_cents": 40 })).await.0,
        StatusCode::OK,
        "the retry replays"
    );
    assert_eq!(
        db.count(PAYMENTS).await,
        2,
        "k-before and k-ambiguous, once each"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = 'new'")
            .await,
        2
    );
    db.stop().await;
}

/// The `COMMIT` is cut and the database stays unreachable while the write tries to read its
/// outcome back: the answer says the outcome is unknown (never "nothing was written", since the
/// payment exists), and the retry, once the database is back, replays the write.
#[actix_web::test]
async fn an_ambiguous_commit_that_cannot_be_settled_is_outcome_unknown() {
    let (cutter, db) = CommitCutter::in_front_of_a_server(
        PgPoolOptions::new().acquire_timeout(Duration::from_millis(500)),
    )
    .await;
    cutter.partition_after_the_cut();
    cutter.arm();
    let client = Client::builder().timeout(Duration::from_secs(30)).finish();
    let mut response = client
        .post(format!("{}/payments", db.base))
        .insert_header(("idempotency-key", "k-unknown"))
        .send_json(&json!({ "amount_cents": 41 }))
        .await
        .unwrap();
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(cutter.has_cut(), "the write's COMMIT was cut");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        body["type"], "tag:idem-rs.github.io,2026:problems#outcome-unknown",
        "{body}"
    );
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        !body["detail"]
            .as_str()
            .unwrap()
            .contains("nothing was written"),
        "{body}"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM payments WHERE amount_cents = 41")
            .await,
        1,
        "the commit had landed"
    );
    cutter.restore();
    assert_eq!(
        db.pay("k-unknown", json!({ "amount_cents": 41 })).await.0,
        StatusCode::OK,
        "the retry replays the write that landed"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM payments WHERE amount_cents = 41")
            .await,
        1
    );
    // Its `failed`/`unknown` audit row was queued while the database was unreachable: written
    // if the audit writer's retries outlast the partition, else counted lost; not asserted here.
    db.stop().await;
}

/// The audit writer's batch insert commits and its answer is lost with the connection: the
/// writer tries again on another connection, meets its own rows (a unique violation), and
/// counts nothing lost; the row is there once.
#[actix_web::test]
async fn an_audit_batch_whose_answer_was_lost_is_not_counted_lost() {
    let metrics = prometheus();
    let lost = || {
        idem_tests::metric(
            &metrics.render(),
            idem_runtime::AUDIT_ROWS_LOST_TOTAL,
            &[("operation", "createRefund")],
        )
    };
    let (cutter, db) = CommitCutter::in_front_of_a_server(PgPoolOptions::new()).await;
    assert_eq!(
        db.refund("k-audited", json!({ "amount_cents": 7 })).await,
        StatusCode::CREATED
    );
    cutter.arm_audit_batch();
    assert_eq!(
        db.refund("k-audited", json!({ "amount_cents": 7 })).await,
        StatusCode::OK,
        "the replay, whose audit row the writer inserts after the answer"
    );
    db.store.flush_audit().await;
    assert!(cutter.has_cut(), "the audit batch's answer was cut");
    assert_eq!(
        db.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE operation = 'createRefund' AND outcome = 'replayed'"
        )
        .await,
        1
    );
    assert_eq!(
        lost(),
        0.0,
        "no audit row is lost, and none is counted lost"
    );
    db.stop().await;
}

/// This binary's metrics recorder, installed by the first test that asks.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| install_recorder().expect("the only recorder of this test binary"))
        .clone()
}
