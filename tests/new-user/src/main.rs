//! An orders service on PostgreSQL, as a new user writes it from docs/postgres.md, docs/handlers.md
//! and the rustdoc: only `idem_actix`'s root, one database feature, its own tenant resolution,
//! its own problem types, two protected routes (one that creates nothing), a nightly job over
//! every shop, and the service's life run by `Lifecycle`. `.ci/new-user` runs it as the guide
//! says: `orders migrate` as the owner, then `orders` as the runtime role, with `DATABASE_URL`
//! and `ORDERS_API_KEY`. It serves on a free port, sends itself an order, a cancellation and a
//! refused order over HTTP, stops on its own SIGTERM, and prints `orders: ok` when every answer
//! was the one expected and the stop was graceful.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use idem_actix::health::Health;
use idem_actix::problem::Problem;
use idem_actix::{
    Fingerprint, Idempotency, IdempotencyKey, IdempotencyStore, Lifecycle, Maintenance, Outcome,
    ProtectedRoutes, Stopped, StoreConfig, StoredResponse, TenantId, TenantRejection,
    TenantResolver, WriteContext, WriteRequest, financial_mutation, operation, verify_registry,
};
use sqlx::Postgres;

#[derive(serde::Deserialize)]
struct NewOrder {
    cents: i64,
}

/// The service's own refusals, told apart from idem's by their problem type.
#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("an order is for a positive amount")]
    NotPositive,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The problem type of an order for nothing.
const NOT_POSITIVE: &str = "https://orders.example/problems#not-positive";

impl ResponseError for OrderError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotPositive => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::NotPositive => {
                Problem::of_type(NOT_POSITIVE, "order not positive", self.status_code())
                    .with_detail(self.to_string())
                    .with_extension("minimum_cents", 1)
                    .to_response()
            }
            // idem answers a 5xx that is not problem+json with its own #handler-failed, and
            // logs the cause: the database's message never reaches the client.
            Self::Database(_) => HttpResponse::new(self.status_code()),
        }
    }
}

/// Places an order.
#[financial_mutation("placeOrder", post = "/orders")]
async fn place_order(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Postgres>,
    order: web::Json<NewOrder>,
) -> Result<HttpResponse, OrderError> {
    if order.cents <= 0 {
        return Err(OrderError::NotPositive);
    }
    sqlx::query("INSERT INTO orders (id, tenant_id, cents) VALUES ($1, $2, $3)")
        .bind(write.entity_id())
        .bind(write.tenant())
        .bind(order.cents)
        .execute(write.tx())
        .await?;
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": write.entity_id() })))
}

/// Cancels an order: it creates nothing, so its `200 OK` stays `200`.
#[financial_mutation("cancelOrder", post = "/orders/{id}/cancellation", created = false)]
async fn cancel_order(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Postgres>,
    order: web::Path<uuid::Uuid>,
) -> Result<web::Json<serde_json::Value>, OrderError> {
    let cancelled = sqlx::query("DELETE FROM orders WHERE id = $1 AND tenant_id = $2")
        .bind(*order)
        .bind(write.tenant())
        .execute(write.tx())
        .await?
        .rows_affected();
    Ok(web::Json(serde_json::json!({ "cancelled": cancelled })))
}

operation! {
    /// Charges the late fees of a month, once per tenant.
    financial ChargeLateFees = "chargeLateFees";
}

/// The tenant is the shop that the request's API key belongs to, looked up by the key's
/// SHA-256 in the service's own table: never a header the client chooses.
struct Shops {
    pool: sqlx::PgPool,
}

impl TenantResolver for Shops {
    async fn resolve(&self, request: &HttpRequest) -> Result<TenantId, TenantRejection> {
        let key = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                TenantRejection::new("send Authorization: Bearer <API key>")
                    .with_challenge("Bearer")
            })?;
        let shop: Option<String> = sqlx::query_scalar(
            "SELECT shop FROM shop_api_keys WHERE key_sha256 = encode(sha256(convert_to($1, 'UTF8')), 'hex')",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|_| TenantRejection::unavailable("the API keys could not be checked"))?;
        let shop =
            shop.ok_or_else(|| TenantRejection::new("unknown API key").with_challenge("Bearer"))?;
        TenantId::new(shop).map_err(|error| TenantRejection::new(error.to_string()))
    }
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        let owner = IdempotencyStore::<Postgres>::connect(&url, StoreConfig::default()).await?;
        owner.migrate().await?;
        println!("orders: migrated");
        return Ok(());
    }
    let store = IdempotencyStore::<Postgres>::connect(&url, StoreConfig::default()).await?;
    verify_registry()?;
    let routes = ProtectedRoutes::new(Idempotency::new(
        store.clone(),
        Shops {
            pool: store.pool().clone(),
        },
    ))
    .financial(place_order)
    .financial(cancel_order)
    .verify()
    .await?;

    // The nightly job over every shop, run twice: the rerun is a replay.
    let shops: Vec<String> = sqlx::query_scalar("SELECT id FROM shops ORDER BY id")
        .fetch_all(store.pool())
        .await?;
    let key = IdempotencyKey::parse("late-fees:2026-11")?;
    for shop in &shops {
        let shop = TenantId::new(shop.as_str())?;
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let request = WriteRequest::new(
                &shop,
                &key,
                Fingerprint::of_job("chargeLateFees", b"2026-11"),
            );
            let outcome = store
                .execute(ChargeLateFees, request, |write| {
                    Box::pin(async move {
                        sqlx::query(
                            "INSERT INTO orders (id, tenant_id, cents) VALUES ($1, $2, 500)",
                        )
                        .bind(write.entity_id())
                        .bind(write.tenant())
                        .execute(write.tx())
                        .await?;
                        Ok::<_, sqlx::Error>(StoredResponse::new(200, "charged"))
                    })
                })
                .await?;
            outcomes.push(outcome);
        }
        assert!(matches!(outcomes[0], Outcome::New { .. }));
        assert!(matches!(outcomes[1], Outcome::Replayed { .. }));
        // Outside a shop's transaction the policies show no order at all; inside, its own.
        let unscoped: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(store.pool())
            .await?;
        assert_eq!(unscoped, 0, "row-level security holds for the serving role");
        let mut tx = store.begin_for(&shop).await?;
        let charged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        assert_eq!(charged, 1, "{shop}: charged once");
    }

    // The service itself, run by the lifecycle; this process plays its first client, with the
    // API key the operator gave it.
    let api_key = std::env::var("ORDERS_API_KEY")?;
    let health = Health::new(&routes);
    let (probes, served) = (health.clone(), routes.clone());
    let server = HttpServer::new(move || {
        let (probes, served) = (probes.clone(), served.clone());
        App::new()
            .wrap(served.mutation_gate())
            .configure(move |config| {
                probes.configure(config);
                served.configure(config);
            })
    })
    .workers(1)
    .bind("127.0.0.1:0")?;
    let address = server.addrs()[0];
    let client = std::thread::spawn(move || first_client(address, &api_key));
    let stopped = Lifecycle::new(store.clone())
        .with_health(health)
        .with_maintenance(Maintenance::new(store.clone()))
        .with_shutdown_timeout(Duration::from_secs(10))
        .run(server)
        .await?;
    client.join().expect("the client finished")?;
    assert_eq!(stopped, Stopped::Graceful);
    println!("orders: ok");
    Ok(())
}

/// Places an order, cancels it, has an order for nothing refused, and then asks the service to
/// stop, as an orchestrator does: SIGTERM.
fn first_client(address: SocketAddr, api_key: &str) -> Result<(), String> {
    let (status, body) = post(address, api_key, "/orders", "order-1", r#"{"cents": 1250}"#)?;
    expect(status == 201, "a new order answers 201", &body)?;
    let id = body
        .split("\"id\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| format!("no id in {body}"))?
        .to_owned();
    let cancellation = format!("/orders/{id}/cancellation");
    let (status, body) = post(address, api_key, &cancellation, "cancel-1", "{}")?;
    expect(
        status == 200,
        "a cancellation keeps its 200 (created = false)",
        &body,
    )?;
    expect(
        body.contains("\"cancelled\":1"),
        "the order was cancelled",
        &body,
    )?;
    let (status, body) = post(address, api_key, "/orders", "order-2", r#"{"cents": 0}"#)?;
    expect(status == 422, "an order for nothing is refused", &body)?;
    expect(
        body.contains(NOT_POSITIVE),
        "with the service's own problem type",
        &body,
    )?;
    expect(
        body.contains("\"minimum_cents\":1"),
        "and its extension",
        &body,
    )?;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .map_err(|error| format!("kill: {error}"))?;
    expect(sent.success(), "SIGTERM sent", "")
}

fn expect(holds: bool, what: &str, body: &str) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(format!("expected that {what}: {body}"))
    }
}

/// One `POST` over HTTP/1.1 with `Connection: close`: the status and the body.
fn post(
    address: SocketAddr,
    api_key: &str,
    path: &str,
    key: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(address).map_err(|error| error.to_string())?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {api_key}\r\n\
         Idempotency-Key: {key}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|error| error.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|error| error.to_string())?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {answer}"))?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}
