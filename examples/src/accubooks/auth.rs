//! Companies and their API tokens: the tenant of a request comes from its bearer token.

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::LocalBoxFuture;
use idem_actix::runtime::sha256_hex;
use idem_actix::{TenantId, TenantRejection, TenantResolver};
use serde::Deserialize;
use serde_json::json;
use sqlx::{Any, Pool};
use uuid::Uuid;

use crate::accubooks::error::ApiError;
use crate::accubooks::now_ms;

/// What `POST /api/companies` takes.
#[derive(Deserialize)]
pub struct NewCompany {
    name: String,
}

/// `POST /api/companies`: the one unauthenticated call. Creates a company and its first API
/// token, returned once and stored only as a hash.
///
/// It is not a protected operation: without a tenant there is no key scope. A retried bootstrap
/// creates a second, empty company, which costs nothing and moves no money.
pub async fn create_company(
    pool: web::Data<Pool<Any>>,
    company: web::Json<NewCompany>,
) -> Result<HttpResponse, ApiError> {
    let name = company.name.trim();
    if name.is_empty() {
        return Err(ApiError::invalid("a company needs a name"));
    }
    let company_id = Uuid::new_v4().to_string();
    let token = format!("ab_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO companies (id, name, created_at_ms) VALUES ($1, $2, $3)")
        .bind(&company_id)
        .bind(name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO api_tokens (token_hash, company_id) VALUES ($1, $2)")
        .bind(token_hash(&token))
        .bind(&company_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(json!({ "company_id": company_id, "token": token })))
}

fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// Resolves `Authorization: Bearer <token>` to the company that owns the token.
pub struct BearerTokens {
    pool: Pool<Any>,
}

impl BearerTokens {
    /// Looks tokens up in `api_tokens`.
    pub fn new(pool: Pool<Any>) -> Self {
        Self { pool }
    }

    /// The company of a request, as the protected routes and the read endpoints resolve it.
    pub async fn company(&self, request: &HttpRequest) -> Result<TenantId, TenantRejection> {
        let token = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| TenantRejection::new("send Authorization: Bearer <token>"))?;
        let company: Option<String> =
            sqlx::query_scalar("SELECT company_id FROM api_tokens WHERE token_hash = $1")
                .bind(token_hash(token))
                .fetch_optional(&self.pool)
                .await
                .map_err(|_| TenantRejection::new("the token could not be checked; retry"))?;
        let company = company.ok_or_else(|| TenantRejection::new("the token is not valid"))?;
        TenantId::new(company).map_err(|_| TenantRejection::new("the token is not valid"))
    }
}

impl TenantResolver for BearerTokens {
    fn resolve<'a>(
        &'a self,
        request: &'a HttpRequest,
    ) -> LocalBoxFuture<'a, Result<TenantId, TenantRejection>> {
        Box::pin(self.company(request))
    }
}
