//! Companies and their API tokens: the tenant of a request comes from its bearer token.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use idem_actix::sha256_hex;
use idem_actix::{IdempotencyStore, TenantId, TenantRejection, TenantResolver};
use serde::Deserialize;
use serde_json::json;
use sqlx::{Any, Pool};
use uuid::Uuid;

use crate::accubooks::error::ApiError;
use crate::accubooks::sql::sql;
use crate::accubooks::{indexable, now_ms};

idem_actix::unprotected_mutation!(
    POST "/api/companies",
    reason = "bootstrap: creates the tenant whose key scope every protected write needs; a retry creates a second, empty company and moves no money"
);

/// What `POST /api/companies` takes.
#[derive(Deserialize)]
pub struct NewCompany {
    name: String,
    /// The email of the company's first user, who owns its first token (default `owner`).
    owner_email: Option<String>,
}

/// `POST /api/companies`: the one unauthenticated call. Creates a company, its first user (the
/// owner) and the owner's API token, returned once and stored only as a hash. The audit log
/// records the owner as the user of every write made with the token.
///
/// It is not a protected operation: without a tenant there is no key scope. A retried bootstrap
/// creates a second, empty company, which costs nothing and moves no money. The exemption below
/// lets it past the mutation gate, and puts it in the startup log and the reviewed registry.
pub async fn create_company(
    store: web::Data<IdempotencyStore<Any>>,
    company: web::Json<NewCompany>,
) -> Result<HttpResponse, ApiError> {
    let name = company.name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("a company needs a name"));
    }
    let owner_email = company.owner_email.as_deref().map_or("owner", str::trim);
    if owner_email.is_empty() {
        return Err(ApiError::invalid("owner_email, when given, is not empty"));
    }
    let owner_email = indexable("owner_email", owner_email)?;
    let (company_id, user_id) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let token = format!("ab_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    // The new company's own transaction: row-level security lets it create only its own rows.
    let tenant =
        TenantId::new(company_id.clone()).map_err(|error| ApiError::invalid(error.to_string()))?;
    // Behind a transaction pooler a statement outside idem's writes must not be named.
    let persistent = !store.config().transaction_pooling();
    let mut tx = store.begin_for(&tenant).await?;
    sqlx::query(
        sql!("INSERT INTO companies (id, name, created_at_ms) VALUES ($1, $2, $3)").on(&tx),
    )
    .persistent(persistent)
    .bind(&company_id)
    .bind(name)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        sql!("INSERT INTO users (id, company_id, email, created_at_ms) VALUES ($1, $2, $3, $4)")
            .on(&tx),
    )
    .persistent(persistent)
    .bind(&user_id)
    .bind(&company_id)
    .bind(owner_email)
    .bind(now_ms())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        sql!("INSERT INTO api_tokens (token_hash, company_id, user_id) VALUES ($1, $2, $3)")
            .on(&tx),
    )
    .persistent(persistent)
    .bind(token_hash(&token))
    .bind(&company_id)
    .bind(&user_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created()
        .json(json!({ "company_id": company_id, "user_id": user_id, "token": token })))
}

fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// The challenge of every `401`: the scheme and realm (RFC 6750).
const CHALLENGE: &str = "Bearer realm=\"accubooks\"";

/// The user a request's token belongs to, kept on the request for the audit log.
#[derive(Clone)]
struct TokenUser(String);

/// Resolves `Authorization: Bearer <token>` to the company that owns the token (and the user
/// it was issued to, for the audit log).
pub struct BearerTokens {
    pool: Pool<Any>,
    /// Behind a transaction pooler: the lookup is an unnamed statement in a transaction.
    pooled: bool,
}

impl BearerTokens {
    /// Looks tokens up in `api_tokens`, on the store's database.
    pub fn new(store: &IdempotencyStore<Any>) -> Self {
        Self {
            pool: store.pool().clone(),
            pooled: store.config().transaction_pooling(),
        }
    }

    /// The company and user a token hash belongs to.
    async fn owner(&self, token_hash: String) -> Result<Option<(String, String)>, sqlx::Error> {
        let lookup = sqlx::query_as(
            sql!("SELECT company_id, user_id FROM api_tokens WHERE token_hash = $1")
                .on_pool(&self.pool),
        )
        .persistent(!self.pooled)
        .bind(token_hash);
        if !self.pooled {
            return lookup.fetch_optional(&self.pool).await;
        }
        let mut tx = self.pool.begin().await?;
        let owner = lookup.fetch_optional(&mut *tx).await?;
        tx.commit().await?;
        Ok(owner)
    }

    /// The company of a request, as the protected routes and the read endpoints resolve it.
    /// The scheme is case-insensitive (`bearer` is `Bearer`); a database failure is the
    /// server's (`503`), never an invalid token.
    pub async fn company(&self, request: &HttpRequest) -> Result<TenantId, TenantRejection> {
        let token = bearer_token(request).ok_or_else(|| {
            TenantRejection::new("send Authorization: Bearer <token>").with_challenge(CHALLENGE)
        })?;
        let invalid = || {
            TenantRejection::new("the token is not valid")
                .with_challenge(format!("{CHALLENGE}, error=\"invalid_token\""))
        };
        let owner = self.owner(token_hash(token)).await.map_err(|error| {
            tracing::error!(%error, "checking a token failed");
            TenantRejection::unavailable(
                "the token could not be checked: retry with the same request",
            )
        })?;
        let (company, user) = owner.ok_or_else(invalid)?;
        request.extensions_mut().insert(TokenUser(user));
        TenantId::new(company).map_err(|_| invalid())
    }
}

/// The token of `Authorization: Bearer <token>`, the scheme in any case.
fn bearer_token(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl TenantResolver for BearerTokens {
    async fn resolve(&self, request: &HttpRequest) -> Result<TenantId, TenantRejection> {
        self.company(request).await
    }

    fn user(&self, request: &HttpRequest) -> Option<String> {
        request
            .extensions()
            .get::<TokenUser>()
            .map(|user| user.0.clone())
    }
}
