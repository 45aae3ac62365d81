//! The HTTP semantics of a protected route, end to end: a real actix server on a loopback
//! port, a real HTTP client, and SQL counts of what the database holds afterwards. Included by
//! one test binary per backend, each of which names its `Db`.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{LOCATION, SET_COOKIE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use awc::Client;
use futures_util::future::join_all;
use idem_actix::problem::Problem;
use idem_actix::{
    Idempotency, IdempotencyKey, OperationClass, ProtectedRoutes, ReplayStatus, StartupProblem,
    StoreConfig, TenantId, TenantRejection, TenantResolver, WriteContext, financial_mutation,
    high_risk_mutation, registered_operations, unprotected_mutation,
};
use idem_tests::{TestDb, TestStore};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Db;

mod gate;

const PAYMENTS: &str = "SELECT COUNT(*) FROM payments";
const PAYMENTS_OF: &str = "SELECT COUNT(*) FROM payments WHERE tenant_id = $1";
const KEYS: &str = "SELECT COUNT(*) FROM idempotency_keys";
/// A payment above this is refused after its row was written, to prove the rollback.
const APPROVAL_LIMIT: i64 = 1_000_000;
/// A payment of exactly this is declined by the card network: a final answer, with its row.
const DECLINED_AMOUNT: i64 = 402;
/// A payment of exactly this finds the card network down: the application's own 502 problem.
const GATEWAY_DOWN_AMOUNT: i64 = 90_502;
/// A payment of exactly this runs a statement the database refuses: a server error whose text
/// (a table's name) the client must never read.
const BROKEN_QUERY_AMOUNT: i64 = 90_500;
/// The application's own problem types.
const NEEDS_APPROVAL: &str = "https://payments.example/problems#needs-approval";
const GATEWAY_DOWN: &str = "https://payments.example/problems#gateway-down";

#[derive(Deserialize)]
struct NewPayment {
    amount_cents: i64,
    #[serde(default)]
    hold_ms: u64,
    /// Bytes of padding in the answer, to size it.
    #[serde(default)]
    answer_padding: usize,
}

#[derive(Debug, thiserror::Error)]
enum PaymentError {
    #[error("payments above {APPROVAL_LIMIT} cents need approval")]
    NeedsApproval,
    #[error("the card network did not answer")]
    GatewayDown,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The refusals the application names answer as problems of its own; a database failure keeps
/// actix-web's default answer (its text, as `text/plain`), which idem must not let through.
impl ResponseError for PaymentError {
    fn status_code(&self) -> StatusCode {
        self.problem()
            .map_or(StatusCode::INTERNAL_SERVER_ERROR, |problem| {
                problem.status()
            })
    }

    fn error_response(&self) -> HttpResponse {
        match self.problem() {
            Some(problem) => problem.to_response(),
            None => HttpResponse::build(self.status_code())
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string()),
        }
    }
}

impl PaymentError {
    fn problem(&self) -> Option<Problem> {
        match self {
            Self::NeedsApproval => Some(
                Problem::of_type(NEEDS_APPROVAL, "approval needed", StatusCode::FORBIDDEN)
                    .with_detail(self.to_string())
                    .with_extension("limit_cents", APPROVAL_LIMIT),
            ),
            Self::GatewayDown => Some(
                Problem::of_type(GATEWAY_DOWN, "card network down", StatusCode::BAD_GATEWAY)
                    .with_detail(self.to_string()),
            ),
            Self::Database(_) => None,
        }
    }
}

/// Records a payment; answers with a nonce, so a body that ran twice would answer differently.
/// The client's own timestamp is not part of the request's identity.
#[financial_mutation("createPayment", post = "/payments", ignore_in_fingerprint = ["client_sent_at"])]
async fn create_payment(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Db>,
    payment: web::Json<NewPayment>,
) -> Result<HttpResponse, PaymentError> {
    let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
    Db::insert_payment(write.tx(), id, &tenant, payment.amount_cents).await?;
    if payment.hold_ms > 0 {
        tokio::time::sleep(Duration::from_millis(payment.hold_ms)).await;
    }
    if payment.amount_cents > APPROVAL_LIMIT {
        return Err(PaymentError::NeedsApproval);
    }
    if payment.amount_cents == GATEWAY_DOWN_AMOUNT {
        return Err(PaymentError::GatewayDown);
    }
    if payment.amount_cents == BROKEN_QUERY_AMOUNT {
        sqlx::query("SELECT amount FROM no_such_ledger")
            .execute(write.tx())
            .await?;
    }
    if payment.amount_cents == DECLINED_AMOUNT {
        return Ok(HttpResponse::PaymentRequired()
            .json(json!({ "id": id, "declined": true, "nonce": fastrand::u64(..) })));
    }
    let mut answer =
        json!({ "id": id, "amount_cents": payment.amount_cents, "nonce": fastrand::u64(..) });
    if payment.answer_padding > 0 {
        answer["padding"] = Value::from("x".repeat(payment.answer_padding));
    }
    Ok(HttpResponse::Created()
        .insert_header((LOCATION, format!("/payments/{id}")))
        .insert_header((SET_COOKIE, "session=first-answer-only"))
        .json(answer))
}

#[derive(Deserialize)]
struct NewCustomer {
    name: String,
}

/// A plain return type: an answer, never a refusal; its `200 OK` answers `201 Created`.
#[high_risk_mutation("createCustomer", post = "/customers")]
async fn create_customer(
    write: &mut WriteContext<'_, Db>,
    customer: web::Json<NewCustomer>,
    key: IdempotencyKey,
) -> web::Json<Value> {
    assert_ne!(customer.name, "panic", "the handler has a bug");
    web::Json(json!({ "id": write.entity_id(), "name": customer.name, "key": key.as_str() }))
}

/// A cancellation creates nothing: its `200 OK` stays `200`, whatever the server's setting.
#[financial_mutation("cancelPayment", post = "/cancellations", created = false)]
async fn cancel_payment(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Db>,
) -> web::Json<Value> {
    web::Json(json!({ "cancellation": write.entity_id(), "nonce": fastrand::u64(..) }))
}

/// Answers with a stream after writing a payment: an answer that cannot be stored, so the
/// write must roll back.
#[high_risk_mutation("streamReport", post = "/reports")]
async fn stream_report(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Db>,
) -> Result<HttpResponse, PaymentError> {
    let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
    Db::insert_payment(write.tx(), id, &tenant, 1).await?;
    let chunks = futures_util::stream::once(async {
        Ok::<_, actix_web::Error>(web::Bytes::from_static(b"report"))
    });
    Ok(HttpResponse::Ok().streaming(chunks))
}

/// Bearer tokens as the application's authentication: the tenant never comes from a header
/// the client chooses.
struct BearerTokens;

impl TenantResolver for BearerTokens {
    async fn resolve(&self, request: &HttpRequest) -> Result<TenantId, TenantRejection> {
        let token = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match token {
            Some("token-a") => Ok(TenantId::new("company-a").unwrap()),
            Some("token-b") => Ok(TenantId::new("company-b").unwrap()),
            _ => Err(TenantRejection::new("send Authorization: Bearer <token>")),
        }
    }
}

/// A payment written straight through the pool, outside idem: what the mutation gate must stop
/// unless the route is declared exempt.
async fn unprotected_payment(
    pool: web::Data<sqlx::Pool<Db>>,
) -> Result<HttpResponse, PaymentError> {
    let mut conn = pool.acquire().await?;
    Db::insert_payment(&mut conn, uuid::Uuid::new_v4(), "company-a", 7).await?;
    Ok(HttpResponse::Created().finish())
}

unprotected_mutation!(
    POST "/exempt/payments",
    reason = "the suite's exempt route: a write the gate lets through because it is declared"
);

fn routes(idem: Idempotency<Db>) -> ProtectedRoutes<Db> {
    ProtectedRoutes::new(idem)
        .financial(create_payment)
        .financial(cancel_payment)
        .high_risk(create_customer)
        .high_risk(stream_report)
}

/// A server on a free loopback port, in front of a fresh database.
struct Server {
    base: String,
    db: TestStore<Db>,
    handle: actix_web::dev::ServerHandle,
}

impl Server {
    async fn start(config: StoreConfig, replay_status: ReplayStatus) -> Self {
        Self::start_with(config, |idem| idem.with_replay_status(replay_status)).await
    }

    /// A server whose settings `settings` adjusts (after a 64 KiB body limit).
    async fn start_with(
        config: StoreConfig,
        settings: impl FnOnce(Idempotency<Db>) -> Idempotency<Db>,
    ) -> Self {
        let db = Db::fresh(config).await;
        let idem =
            settings(Idempotency::new(db.store.clone(), BearerTokens).with_body_limit(64 * 1024));
        let routes = routes(idem)
            .verify()
            .await
            .expect("the startup check passes");
        let pool = web::Data::new(db.store.pool().clone());
        let (base, handle) = idem_tests::serve(routes.mutation_gate(), move |config| {
            routes.configure(config);
            config.app_data(pool.clone());
            config.route("/unprotected/payments", web::get().to(HttpResponse::Ok));
            config.route("/unprotected/payments", web::post().to(unprotected_payment));
            config.route("/exempt/payments", web::post().to(unprotected_payment));
        });
        Self { base, db, handle }
    }

    async fn default() -> Self {
        Self::start(StoreConfig::default(), ReplayStatus::default()).await
    }

    fn post(&self, path: &str, token: &str, key: Option<&str>) -> awc::ClientRequest {
        let client = Client::builder().timeout(Duration::from_secs(60)).finish();
        let mut request = client
            .post(format!("{}{path}", self.base))
            .insert_header(("authorization", format!("Bearer {token}")));
        if let Some(key) = key {
            request = request.insert_header(("idempotency-key", key));
        }
        request
    }

    async fn count(&self, sql: &'static str, args: &[&str]) -> i64 {
        self.db.count(sql, args).await
    }

    async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Status, headers and body bytes of one answer.
struct Answer {
    status: StatusCode,
    headers: actix_web::http::header::HeaderMap,
    body: web::Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// Asserts an RFC 9457 answer with the given problem type anchor.
    fn assert_problem(&self, status: u16, anchor: &str) {
        assert_eq!(self.status.as_u16(), status, "{:?}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let problem = self.json();
        assert!(
            problem["type"]
                .as_str()
                .unwrap()
                .ends_with(&format!("#{anchor}")),
            "{problem}"
        );
        assert_eq!(problem["status"], status);
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
}

async fn send(request: awc::ClientRequest, body: Value) -> Answer {
    read_answer(request.send_json(&body).await.expect("the server answers")).await
}

/// The status, headers and body of a response.
async fn read_answer<S>(mut response: awc::ClientResponse<S>) -> Answer
where
    S: futures_util::Stream<Item = Result<web::Bytes, awc::error::PayloadError>> + Unpin,
{
    let body = response
        .body()
        .limit(1 << 20)
        .await
        .expect("a readable body");
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body,
    }
}

#[actix_web::test]
async fn new_write_answers_201_and_writes_one_row() {
    let server = Server::default().await;
    let answer = send(
        server.post("/payments", "token-a", Some("k-new")),
        json!({"amount_cents": 500}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.json()["amount_cents"], 500);
    assert!(answer.header("idempotent-replayed").is_none());
    assert_eq!(
        answer.header("set-cookie"),
        Some("session=first-answer-only")
    );
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    assert_eq!(server.count(KEYS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn replay_answers_the_stored_bytes_with_the_replay_header() {
    let server = Server::default().await;
    let body = json!({"amount_cents": 700});
    let first = send(
        server.post("/payments", "token-a", Some("k-replay")),
        body.clone(),
    )
    .await;
    let replay = send(
        server.post("/payments", "token-a", Some("\"k-replay\"")),
        body,
    )
    .await;

    assert_eq!(
        replay.status,
        StatusCode::OK,
        "a replayed 201 answers 200 by default"
    );
    assert_eq!(replay.body, first.body, "byte for byte");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.header("location"), first.header("location"));
    assert_eq!(replay.header("content-type"), Some("application/json"));
    assert!(
        replay.header("set-cookie").is_none(),
        "cookies are never replayed"
    );
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn replay_can_keep_the_original_status() {
    let server = Server::start(StoreConfig::default(), ReplayStatus::Original).await;
    let body = json!({"amount_cents": 700});
    send(
        server.post("/payments", "token-a", Some("k-orig")),
        body.clone(),
    )
    .await;
    let replay = send(server.post("/payments", "token-a", Some("k-orig")), body).await;
    assert_eq!(replay.status, StatusCode::CREATED);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn missing_key_is_400_and_writes_nothing() {
    let server = Server::default().await;
    let answer = send(
        server.post("/payments", "token-a", None),
        json!({"amount_cents": 1}),
    )
    .await;
    answer.assert_problem(400, "key-missing");
    assert!(
        answer
            .header("link")
            .unwrap()
            .contains("rel=\"describedby\"")
    );
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    assert_eq!(server.count(PAYMENTS, &[]).await, 0);
    assert_eq!(server.count(KEYS, &[]).await, 0);
    server.stop().await;
}

#[actix_web::test]
async fn malformed_or_repeated_keys_are_400_and_write_nothing() {
    let server = Server::default().await;
    let too_long = "k".repeat(256);
    for key in ["\"\"", too_long.as_str(), "\"a b\"", "\"unterminated"] {
        let answer = send(
            server.post("/payments", "token-a", Some(key)),
            json!({"amount_cents": 1}),
        )
        .await;
        answer.assert_problem(400, "key-invalid");
        assert!(answer.header("link").is_some());
    }
    let repeated = server
        .post("/payments", "token-a", None)
        .append_header(("idempotency-key", "k-1"))
        .append_header(("idempotency-key", "k-2"));
    send(repeated, json!({"amount_cents": 1}))
        .await
        .assert_problem(400, "key-invalid");
    assert_eq!(server.count(PAYMENTS, &[]).await, 0);
    assert_eq!(server.count(KEYS, &[]).await, 0);
    server.stop().await;
}

#[actix_web::test]
async fn same_key_with_another_payload_is_422_and_keeps_the_first_write() {
    let server = Server::default().await;
    let first = send(
        server.post("/payments", "token-a", Some("k-422")),
        json!({"amount_cents": 100}),
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = send(
        server.post("/payments", "token-a", Some("k-422")),
        json!({"amount_cents": 999}),
    )
    .await;
    other.assert_problem(422, "key-reused");
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    assert_eq!(
        server
            .count(
                "SELECT COUNT(*) FROM payments WHERE amount_cents = 100",
                &[]
            )
            .await,
        1
    );
    server.stop().await;
}

async fn send_raw(request: awc::ClientRequest, body: &'static str) -> Answer {
    let response = request
        .insert_header(("content-type", "application/json"))
        .send_body(body)
        .await
        .expect("the server answers");
    read_answer(response).await
}

#[actix_web::test]
async fn a_json_retry_in_another_member_order_and_spacing_is_a_replay() {
    let server = Server::default().await;
    let customer = |key| server.post("/customers", "token-a", Some(key));
    let first = send_raw(
        customer("k-json"),
        r#"{"name":"Globex","tier":1,"tags":["a","b"]}"#,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let retry = send_raw(
        customer("k-json"),
        "{ \"tags\" : [ \"a\", \"\\u0062\" ],\n  \"tier\": 1.0, \"name\": \"Globex\" }",
    )
    .await;
    assert_eq!(retry.status, StatusCode::OK, "{:?}", retry.body);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    // Array order is meaningful: another request.
    let reordered = send_raw(
        customer("k-json"),
        r#"{"name":"Globex","tier":1,"tags":["b","a"]}"#,
    )
    .await;
    reordered.assert_problem(422, "key-reused");
    assert_eq!(server.count(KEYS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn numbers_are_compared_exactly_and_the_422_names_what_differed() {
    let server = Server::default().await;
    let customer = |key| server.post("/customers", "token-a", Some(key));
    let first = send_raw(
        customer("k-big"),
        r#"{"name":"Initech","ref":9007199254740993}"#,
    )
    .await;
    assert_eq!(first.status, StatusCode::CREATED);
    // The same number through f64 would be 9007199254740992: not the same request.
    let rounded = send_raw(
        customer("k-big"),
        r#"{"name":"Initech","ref":9007199254740992}"#,
    )
    .await;
    rounded.assert_problem(422, "key-reused");
    let detail = rounded.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("differs in its body"), "{detail}");
    assert!(
        !detail.contains("Initech") && !detail.contains("9007199254740993"),
        "{detail}"
    );
    // Another path with the same key is another request too, and the answer says so.
    let elsewhere = send_raw(
        server.post("/customers?source=import", "token-a", Some("k-big")),
        r#"{"name":"Initech","ref":9007199254740993}"#,
    )
    .await;
    elsewhere.assert_problem(422, "key-reused");
    let detail = elsewhere.json()["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("differs in its query"), "{detail}");
    assert!(!detail.contains("body"), "{detail}");
    assert_eq!(server.count(KEYS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn a_streaming_answer_cannot_be_stored_and_rolls_back() {
    let server = Server::default().await;
    let answer = send(
        server.post("/reports", "token-a", Some("k-stream")),
        json!({}),
    )
    .await;
    answer.assert_problem(500, "write-failed");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("streaming body")
    );
    assert_eq!(
        server.count(PAYMENTS, &[]).await,
        0,
        "the write rolled back"
    );
    assert_eq!(server.count(KEYS, &[]).await, 0, "the key is free");
    server.stop().await;
}

#[actix_web::test]
async fn a_write_past_the_write_timeout_rolls_back_and_says_retry() {
    let config = StoreConfig::default().with_write_timeout(Duration::from_millis(200));
    let server = Server::start(config, ReplayStatus::default()).await;
    let slow = json!({"amount_cents": 50, "hold_ms": 2_000});
    let started = std::time::Instant::now();
    let answer = send(server.post("/payments", "token-a", Some("k-slow")), slow).await;
    answer.assert_problem(503, "write-timed-out");
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "cancelled at the timeout"
    );
    assert!(answer.header("retry-after").is_some());
    assert_eq!(
        server.count(PAYMENTS, &[]).await,
        0,
        "the payment rolled back"
    );
    assert_eq!(
        server.count(KEYS, &[]).await,
        0,
        "the key is free for the retry"
    );
    let retry = send(
        server.post("/payments", "token-a", Some("k-slow")),
        json!({"amount_cents": 50}),
    )
    .await;
    assert_eq!(retry.status, StatusCode::CREATED, "{:?}", retry.body);
    server.db.store.flush_audit().await;
    assert_eq!(
        server.count("SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = 'failed' AND failure = 'timeout'", &[]).await,
        1
    );
    server.stop().await;
}

#[actix_web::test]
async fn a_field_left_out_of_the_fingerprint_does_not_make_a_retry_another_request() {
    let server = Server::default().await;
    let first = json!({"amount_cents": 300, "client_sent_at": "10:00:00"});
    let retry = json!({"client_sent_at": "10:00:05", "amount_cents": 300});
    let other = json!({"amount_cents": 301, "client_sent_at": "10:00:00"});
    let new = send(server.post("/payments", "token-a", Some("k-ts")), first).await;
    assert_eq!(new.status, StatusCode::CREATED);
    let replay = send(server.post("/payments", "token-a", Some("k-ts")), retry).await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.body, new.body);
    send(server.post("/payments", "token-a", Some("k-ts")), other)
        .await
        .assert_problem(422, "key-reused");
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn twin_in_flight_past_the_lock_timeout_is_409_with_retry_after() {
    let config = StoreConfig::default()
        .with_lock_timeout(Duration::from_millis(300))
        .with_retry_after(Duration::from_secs(2));
    let server = Server::start(config, ReplayStatus::default()).await;
    let body = json!({"amount_cents": 100, "hold_ms": 1500});
    let first = send(
        server.post("/payments", "token-a", Some("k-409")),
        body.clone(),
    );
    let twin = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        send(
            server.post("/payments", "token-a", Some("k-409")),
            body.clone(),
        )
        .await
    };
    let (first, twin) = tokio::join!(first, twin);
    assert_eq!(first.status, StatusCode::CREATED);
    twin.assert_problem(409, "request-in-flight");
    assert_eq!(twin.header("retry-after"), Some("2"));

    let retry = send(server.post("/payments", "token-a", Some("k-409")), body).await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn handler_error_answers_its_own_error_and_frees_the_key() {
    let server = Server::default().await;
    let refused = send(
        server.post("/payments", "token-a", Some("k-refused")),
        json!({"amount_cents": APPROVAL_LIMIT + 1}),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "the handler's own error"
    );
    assert_eq!(
        refused.header("content-type"),
        Some("application/problem+json")
    );
    let problem = refused.json();
    assert_eq!(problem["type"], NEEDS_APPROVAL, "{problem}");
    assert_eq!(problem["limit_cents"], APPROVAL_LIMIT, "{problem}");
    assert_eq!(server.count(PAYMENTS, &[]).await, 0, "its row rolled back");
    assert_eq!(server.count(KEYS, &[]).await, 0, "nothing stored");

    let corrected = send(
        server.post("/payments", "token-a", Some("k-refused")),
        json!({"amount_cents": 5}),
    )
    .await;
    assert_eq!(
        corrected.status,
        StatusCode::CREATED,
        "the key was free for a retry"
    );
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    server.stop().await;
}

/// A handler's server error in actix-web's default shape (the error's text) never reaches the
/// client: idem answers `#handler-failed` with the request's id, and logs the cause under it.
/// A server error the application answers as a problem of its own is its answer. Neither
/// writes anything.
#[actix_web::test]
async fn a_handlers_server_error_never_carries_its_cause_to_the_client() {
    let server = Server::default().await;
    let broken = send(
        server
            .post("/payments", "token-a", Some("k-broken"))
            .insert_header(("x-request-id", "req-broken-1")),
        json!({"amount_cents": BROKEN_QUERY_AMOUNT}),
    )
    .await;
    broken.assert_problem(500, "handler-failed");
    let problem = broken.json();
    assert_eq!(problem["request_id"], "req-broken-1", "{problem}");
    let text = String::from_utf8_lossy(&broken.body);
    assert!(!text.contains("no_such_ledger"), "the cause leaked: {text}");

    let down = send(
        server.post("/payments", "token-a", Some("k-down")),
        json!({"amount_cents": GATEWAY_DOWN_AMOUNT}),
    )
    .await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        down.json()["type"],
        GATEWAY_DOWN,
        "the application's own problem"
    );
    assert_eq!(server.count(PAYMENTS, &[]).await, 0, "both rolled back");
    assert_eq!(server.count(KEYS, &[]).await, 0, "both keys free");
    server.stop().await;
}

/// Answers of 1 KiB and 16 KiB are stored and replayed byte for byte; one over the answer limit
/// (64 KiB here) rolls its write back and says so, with the key free for a retry.
#[actix_web::test]
async fn answers_up_to_the_limit_are_stored_and_a_larger_one_writes_nothing() {
    let server = Server::start_with(StoreConfig::default(), |idem| {
        idem.with_answer_limit(64 * 1024)
    })
    .await;
    for kib in [1, 16] {
        let key = format!("k-{kib}-kib");
        let body = json!({"amount_cents": 10, "answer_padding": kib * 1024});
        let first = send(
            server.post("/payments", "token-a", Some(&key)),
            body.clone(),
        )
        .await;
        assert_eq!(first.status, StatusCode::CREATED, "{kib} KiB");
        assert!(first.body.len() > kib * 1024, "{kib} KiB");
        let replay = send(server.post("/payments", "token-a", Some(&key)), body).await;
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
        assert_eq!(replay.body, first.body, "{kib} KiB replayed byte for byte");
    }
    let too_large = send(
        server.post("/payments", "token-a", Some("k-80-kib")),
        json!({"amount_cents": 10, "answer_padding": 80 * 1024}),
    )
    .await;
    too_large.assert_problem(500, "write-failed");
    assert!(
        too_large.json()["detail"]
            .as_str()
            .unwrap()
            .contains("65536-byte limit"),
        "{:?}",
        too_large.json()
    );
    assert_eq!(
        server.count(PAYMENTS, &[]).await,
        2,
        "the large one rolled back"
    );
    assert_eq!(server.count(KEYS, &[]).await, 2, "its key is free");
    server.stop().await;
}

/// `created = false` keeps an operation's `200 OK` where the server turns a POST's `200` into
/// `201 Created` (its default, which `createCustomer` shows beside it).
#[actix_web::test]
async fn an_operation_that_creates_nothing_keeps_its_200() {
    let server = Server::default().await;
    let cancelled = send(
        server.post("/cancellations", "token-a", Some("k-cancel")),
        json!({}),
    )
    .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    let replayed = send(
        server.post("/cancellations", "token-a", Some("k-cancel")),
        json!({}),
    )
    .await;
    assert_eq!(replayed.status, StatusCode::OK);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(replayed.body, cancelled.body, "the stored answer");
    let created = send(
        server.post("/customers", "token-a", Some("k-customer")),
        json!({"name": "Ada"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "the server's default");
    assert_eq!(server.count(KEYS, &[]).await, 2);
    server.stop().await;
}

/// An error status answered as `Ok` is the write's result, like a declined card: committed with
/// its row, stored, and replayed to a retry, which must not try the card again.
#[actix_web::test]
async fn an_error_status_answered_as_ok_is_final_and_replayed() {
    let server = Server::default().await;
    let declined = send(
        server.post("/payments", "token-a", Some("k-declined")),
        json!({"amount_cents": DECLINED_AMOUNT}),
    )
    .await;
    assert_eq!(declined.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(declined.json()["declined"], true);

    let retry = send(
        server.post("/payments", "token-a", Some("k-declined")),
        json!({"amount_cents": DECLINED_AMOUNT}),
    )
    .await;
    assert_eq!(retry.status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        retry.body, declined.body,
        "the stored bytes, not a second run"
    );
    assert_eq!(server.count(PAYMENTS, &[]).await, 1, "one declined attempt");
    assert_eq!(server.count(KEYS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn handler_panic_is_500_and_frees_the_key() {
    let server = Server::default().await;
    let panicked = send(
        server.post("/customers", "token-a", Some("k-panic")),
        json!({"name": "panic"}),
    )
    .await;
    panicked.assert_problem(500, "write-failed");
    assert_eq!(server.count(KEYS, &[]).await, 0);
    let retry = send(
        server.post("/customers", "token-a", Some("k-panic")),
        json!({"name": "Ada"}),
    )
    .await;
    assert_eq!(
        retry.status,
        StatusCode::CREATED,
        "a plain 200 answer of a new write is 201"
    );
    assert_eq!(server.count(KEYS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn malformed_body_is_refused_before_the_key_is_claimed() {
    let server = Server::default().await;
    let answer = send(
        server.post("/payments", "token-a", Some("k-bad")),
        json!({"amount_cents": "ten"}),
    )
    .await;
    answer.assert_problem(400, "request-invalid");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("expected i64"),
        "the detail says what could not be read: {:?}",
        answer.body
    );
    assert_eq!(server.count(KEYS, &[]).await, 0);
    let not_json = read_answer(
        server
            .post("/payments", "token-a", Some("k-text"))
            .insert_header(("content-type", "text/plain"))
            .send_body("amount_cents=10")
            .await
            .expect("the server answers"),
    )
    .await;
    not_json.assert_problem(400, "request-invalid");
    assert!(
        not_json.json()["detail"]
            .as_str()
            .unwrap()
            .contains("Content type"),
        "{:?}",
        not_json.body
    );
    assert_eq!(server.count(KEYS, &[]).await, 0);
    let oversized = json!({"amount_cents": 1, "pad": "x".repeat(70 * 1024)});
    send(
        server.post("/payments", "token-a", Some("k-big")),
        oversized,
    )
    .await
    .assert_problem(413, "payload-too-large");
    assert_eq!(server.count(KEYS, &[]).await, 0);
    assert_eq!(server.count(PAYMENTS, &[]).await, 0);
    server.stop().await;
}

#[actix_web::test]
async fn tenants_are_isolated_and_unauthenticated_calls_are_401() {
    let server = Server::default().await;
    let a = send(
        server.post("/payments", "token-a", Some("k-shared")),
        json!({"amount_cents": 10}),
    )
    .await;
    let b = send(
        server.post("/payments", "token-b", Some("k-shared")),
        json!({"amount_cents": 10}),
    )
    .await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert!(
        b.header("idempotent-replayed").is_none(),
        "B never gets A's stored answer"
    );
    assert_ne!(a.json()["id"], b.json()["id"]);
    assert_eq!(server.count(PAYMENTS_OF, &["company-a"]).await, 1);
    assert_eq!(server.count(PAYMENTS_OF, &["company-b"]).await, 1);

    send(
        server.post("/payments", "forged", Some("k-shared")),
        json!({"amount_cents": 10}),
    )
    .await
    .assert_problem(401, "tenant-unresolved");
    assert_eq!(server.count(PAYMENTS, &[]).await, 2);
    server.stop().await;
}

#[actix_web::test]
async fn a_burst_of_retries_over_http_writes_once() {
    let server = Server::start(
        StoreConfig::default().with_lock_timeout(Duration::from_secs(30)),
        ReplayStatus::Original,
    )
    .await;
    let answers = join_all((0..200).map(|_| {
        send(
            server.post("/payments", "token-a", Some("k-burst")),
            json!({"amount_cents": 42}),
        )
    }))
    .await;
    assert!(
        answers
            .iter()
            .all(|answer| answer.status == StatusCode::CREATED)
    );
    assert!(answers.iter().all(|answer| answer.body == answers[0].body));
    let fresh = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "one answer is the write, the rest are replays");
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    server.stop().await;
}

#[actix_web::test]
async fn the_registry_lists_every_operation_with_class_route_and_location() {
    let mut listing: Vec<String> = registered_operations()
        .map(|op| {
            let route = op.route().expect("an HTTP operation");
            assert!(op.file().ends_with("suite.rs"), "{}", op.file());
            assert!(op.line() > 0);
            format!(
                "{} {} {} {}",
                op.name(),
                op.class(),
                route.method,
                route.path
            )
        })
        .collect();
    // Within a class, the linker decides the order.
    listing.sort();
    assert_eq!(
        listing,
        [
            "cancelPayment financial POST /cancellations",
            "createCustomer high_risk POST /customers",
            "createPayment financial POST /payments",
            "streamReport high_risk POST /reports",
        ]
    );
    let classes: Vec<OperationClass> = registered_operations().map(|op| op.class()).collect();
    assert_eq!(
        classes,
        [
            OperationClass::Financial,
            OperationClass::Financial,
            OperationClass::HighRisk,
            OperationClass::HighRisk
        ]
    );
}

#[actix_web::test]
async fn startup_refuses_an_unmounted_operation() {
    let db = Db::fresh(StoreConfig::default()).await;
    let error = ProtectedRoutes::new(Idempotency::new(db.store.clone(), BearerTokens))
        .financial(create_payment)
        .financial(cancel_payment)
        .high_risk(stream_report)
        .verify()
        .await
        .err()
        .expect("createCustomer is not mounted");
    assert!(matches!(
        error.problems(),
        [StartupProblem::NotMounted { operation, .. }] if operation == "createCustomer"
    ));
    assert!(error.to_string().contains("createCustomer"), "{error}");
}

#[actix_web::test]
async fn startup_refuses_an_operation_mounted_twice() {
    let db = Db::fresh(StoreConfig::default()).await;
    let error = routes(Idempotency::new(db.store.clone(), BearerTokens))
        .financial(create_payment)
        .verify()
        .await
        .err()
        .expect("createPayment is mounted twice");
    assert!(matches!(
        error.problems(),
        [StartupProblem::MountedMoreThanOnce { operation, times: 2 }] if operation == "createPayment"
    ));
}

#[actix_web::test]
async fn startup_refuses_an_unmigrated_schema() {
    let db = Db::fresh(StoreConfig::default()).await;
    let unmigrated = Db::unmigrated(StoreConfig::default()).await;
    let error = routes(Idempotency::new(unmigrated.store.clone(), BearerTokens))
        .verify()
        .await
        .err()
        .expect("the schema is not migrated");
    assert!(
        matches!(error.problems(), [StartupProblem::NotMigrated { pending }] if !pending.is_empty())
    );
    assert!(
        routes(Idempotency::new(db.store.clone(), BearerTokens))
            .verify()
            .await
            .is_ok()
    );
}

/// The head of a `POST /payments` announcing `length` bytes of body, as a slow client sends it.
fn slow_head(server: &Server, key: &str, length: usize) -> String {
    let host = server.base.trim_start_matches("http://");
    format!(
        "POST /payments HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer token-a\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
}

/// Opens a connection, sends `head` and `body`, and keeps the connection open.
async fn send_part(server: &Server, head: &str, body: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(server.base.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

/// The status line and body of the answer on `stream`, read within 10 s.
async fn answer_on(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buffer[..n]);
                    if answer.windows(2).any(|w| w == b"}\n") || answer.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_web::test]
async fn a_body_that_arrives_too_slowly_is_408_and_writes_nothing() {
    let server = Server::start_with(StoreConfig::default(), |idem| {
        idem.with_body_timeout(Duration::from_millis(300))
    })
    .await;
    let mut stalled = send_part(&server, &slow_head(&server, "k-slow", 100), b"{\"amount").await;
    let answer = answer_on(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("#body-timeout"), "{answer}");
    assert_eq!(server.count(PAYMENTS, &[]).await, 0);
    assert_eq!(server.count(KEYS, &[]).await, 0);
    server.stop().await;
}

#[actix_web::test]
async fn a_body_announced_over_the_limit_is_413_before_it_is_read() {
    let server = Server::default().await;
    // Not one byte of the 10 MB sent: the answer comes from the Content-Length alone.
    let mut announced = send_part(&server, &slow_head(&server, "k-huge", 10_000_000), b"").await;
    let answer = answer_on(&mut announced).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("#payload-too-large"), "{answer}");
    assert_eq!(server.count(KEYS, &[]).await, 0);
    server.stop().await;
}

#[actix_web::test]
async fn bodies_held_across_requests_are_bounded() {
    let server = Server::start_with(StoreConfig::default(), |idem| {
        idem.with_buffered_bodies_limit(1_000)
            .with_body_timeout(Duration::from_secs(30))
    })
    .await;
    let filler = vec![b' '; 800];
    let holding = send_part(&server, &slow_head(&server, "k-hold", 900), &filler).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = send_part(&server, &slow_head(&server, "k-more", 900), &filler[..400]).await;
    let answer = answer_on(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("#server-busy"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert_eq!(server.count(KEYS, &[]).await, 0);
    drop(holding);
    server.stop().await;
}

#[actix_web::test]
async fn an_unprotected_mutation_is_refused_before_its_handler_runs() {
    let server = Server::default().await;
    let client = Client::builder().timeout(Duration::from_secs(60)).finish();
    for (method, path) in [
        ("POST", "/unprotected/payments"),
        ("DELETE", "/unprotected/payments"),
        // The pattern of a protected operation, with a method it does not protect.
        ("PUT", "/payments"),
        ("PURGE", "/payments"),
    ] {
        let request = client.request(
            method.parse().expect("a method"),
            format!("{}{path}", server.base),
        );
        let answer = send(
            request.insert_header(("idempotency-key", "k-gate")),
            json!({}),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(
            answer.json()["type"],
            "tag:idem-rs.github.io,2026:problems#unprotected-mutation",
            "{method} {path}"
        );
    }
    assert_eq!(server.count(PAYMENTS, &[]).await, 0);
    // Reads pass, and a path no route serves is the router's 404.
    let read = read_answer(
        client
            .get(format!("{}/unprotected/payments", server.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(read.status, StatusCode::OK);
    let nowhere = send(client.post(format!("{}/nowhere", server.base)), json!({})).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    server.stop().await;
}

#[actix_web::test]
async fn a_declared_exemption_is_served_and_listed() {
    let server = Server::default().await;
    let client = Client::builder().timeout(Duration::from_secs(60)).finish();
    let answer = send(
        client.post(format!("{}/exempt/payments", server.base)),
        json!({}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(server.count(PAYMENTS, &[]).await, 1);
    assert_eq!(server.count(KEYS, &[]).await, 0);
    let listed: Vec<String> = idem_actix::exemptions().map(ToString::to_string).collect();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].starts_with("POST /exempt/payments (declared at tests/tests/http/suite.rs:")
            && listed[0].ends_with("a write the gate lets through because it is declared"),
        "{listed:?}"
    );
    server.stop().await;
}

#[actix_web::test]
async fn a_protected_route_refuses_to_write_without_the_mutation_gate() {
    let db = Db::fresh(StoreConfig::default()).await;
    let routes = routes(Idempotency::new(db.store.clone(), BearerTokens))
        .verify()
        .await
        .expect("the startup check passes");
    let server = actix_web::HttpServer::new(move || {
        let routes = routes.clone();
        actix_web::App::new().configure(move |config| routes.configure(config))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("bind a loopback port");
    let base = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let client = Client::builder().timeout(Duration::from_secs(60)).finish();
    let request = client
        .post(format!("{base}/payments"))
        .insert_header(("authorization", "Bearer token-a"))
        .insert_header(("idempotency-key", "k-ungated"));
    let answer = send(request, json!({"amount_cents": 500})).await;
    answer.assert_problem(500, "not-configured");
    assert!(
        answer.json()["detail"]
            .as_str()
            .unwrap()
            .contains("mutation_gate()"),
        "{:?}",
        answer.json()
    );
    assert_eq!(db.count(PAYMENTS, &[]).await, 0);
    assert_eq!(db.count(KEYS, &[]).await, 0);
    handle.stop(true).await;
}
