//! An orders service on PostgreSQL, as a new user writes it from README.md and the rustdoc:
//! only `idem_actix`'s root, one database feature, its own tenant resolution, a protected route
//! and a nightly job. `DATABASE_URL` names the database; it prints `orders: ok` when the
//! startup check passes and the job's rerun is a replay.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use idem_actix::{
    Fingerprint, Idempotency, IdempotencyKey, IdempotencyStore, Outcome, ProtectedRoutes,
    StoreConfig, StoredResponse, TenantId, TenantRejection, TenantResolver, WriteContext,
    WriteRequest, financial_mutation, operation, verify_registry,
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

impl ResponseError for OrderError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotPositive => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
    Ok(HttpResponse::Created().finish())
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
    let store = IdempotencyStore::<Postgres>::connect(&url, StoreConfig::default()).await?;
    store.migrate().await?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS orders (id UUID PRIMARY KEY, tenant_id TEXT NOT NULL, cents BIGINT NOT NULL);
         CREATE TABLE IF NOT EXISTS shop_api_keys (key_sha256 TEXT PRIMARY KEY, shop TEXT NOT NULL)",
    )
    .execute(store.pool())
    .await?;
    verify_registry()?;
    let _routes = ProtectedRoutes::new(Idempotency::new(
        store.clone(),
        Shops {
            pool: store.pool().clone(),
        },
    ))
    .financial(place_order)
    .verify()
    .await?;

    // The nightly job, run twice: the rerun is a replay.
    let shop = TenantId::new(format!("shop-{}", std::process::id()))?;
    let key = IdempotencyKey::parse("late-fees:2026-11")?;
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
                    sqlx::query("INSERT INTO orders (id, tenant_id, cents) VALUES ($1, $2, 500)")
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
    let charged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE tenant_id = $1")
        .bind(&shop)
        .fetch_one(store.pool())
        .await?;
    assert_eq!(charged, 1);
    println!("orders: ok");
    Ok(())
}
