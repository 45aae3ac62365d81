//! Company settings, users and their access.

use actix_web::{HttpResponse, web};
use idem_actix::{IdempotencyKey, WriteContext, high_risk_mutation};
use serde::Deserialize;
use serde_json::json;
use sqlx::Any;

use crate::accubooks::error::ApiError;
use crate::accubooks::sql::sql;
use crate::accubooks::{indexable, money, now_ms};

/// The roles a user can be granted.
pub const ROLES: [&str; 3] = ["viewer", "accountant", "admin"];

/// What `PUT /api/company/settings` takes.
#[derive(Deserialize)]
pub struct Settings {
    currency: String,
    invoice_prefix: String,
    payment_terms_days: i64,
}

/// Replaces the company's settings.
#[high_risk_mutation("updateCompanySettings", put = "/api/company/settings")]
pub async fn update_company_settings(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    settings: web::Json<Settings>,
) -> Result<HttpResponse, ApiError> {
    let currency = money::currency(&settings.currency)?;
    let prefix = settings.invoice_prefix.trim();
    if prefix.is_empty() || prefix.len() > 10 {
        return Err(ApiError::invalid(
            "the invoice prefix has 1 to 10 characters",
        ));
    }
    if !(0..=365).contains(&settings.payment_terms_days) {
        return Err(ApiError::invalid("payment terms are 0 to 365 days"));
    }
    let company = write.tenant().to_string();
    sqlx::query(sql!("INSERT INTO company_settings (company_id, currency, invoice_prefix, payment_terms_days, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (company_id) DO UPDATE SET currency = excluded.currency,
             invoice_prefix = excluded.invoice_prefix,
             payment_terms_days = excluded.payment_terms_days,
             updated_at_ms = excluded.updated_at_ms",
        mysql: "INSERT INTO company_settings (company_id, currency, invoice_prefix, payment_terms_days, updated_at_ms)
         VALUES (?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE currency = VALUES(currency),
             invoice_prefix = VALUES(invoice_prefix),
             payment_terms_days = VALUES(payment_terms_days),
             updated_at_ms = VALUES(updated_at_ms)").on(write.tx()))
    .bind(&company)
    .bind(currency)
    .bind(prefix)
    .bind(settings.payment_terms_days)
    .bind(now_ms())
    .execute(write.tx())
    .await?;
    Ok(HttpResponse::Ok().json(json!({
        "currency": currency, "invoice_prefix": prefix, "payment_terms_days": settings.payment_terms_days,
    })))
}

/// What `POST /api/users` takes.
#[derive(Deserialize)]
pub struct NewUser {
    email: String,
}

/// Adds a user to the company, with no access until granted.
#[high_risk_mutation("createUser", post = "/api/users")]
pub async fn create_user(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    user: web::Json<NewUser>,
) -> Result<HttpResponse, ApiError> {
    let email = indexable("email", user.email.trim())?;
    if !email.contains('@') {
        return Err(ApiError::invalid(format!(
            "{email:?} is not an email address"
        )));
    }
    let (id, company) = (write.entity_id().to_string(), write.tenant().to_string());
    let taken: Option<String> = sqlx::query_scalar(
        sql!("SELECT id FROM users WHERE company_id = $1 AND email = $2").on(write.tx()),
    )
    .bind(&company)
    .bind(email)
    .fetch_optional(write.tx())
    .await?;
    if taken.is_some() {
        return Err(ApiError::conflict(format!("{email} is already a user")));
    }
    sqlx::query(
        sql!("INSERT INTO users (id, company_id, email, created_at_ms) VALUES ($1, $2, $3, $4)")
            .on(write.tx()),
    )
    .bind(&id)
    .bind(&company)
    .bind(email)
    .bind(now_ms())
    .execute(write.tx())
    .await?;
    Ok(HttpResponse::Created().json(json!({ "id": id, "email": email })))
}

/// What `POST /api/access-grants` takes.
#[derive(Deserialize)]
pub struct NewGrant {
    user_id: String,
    role: String,
}

/// Grants an existing user of the company a known role, once.
#[high_risk_mutation("grantUserAccess", post = "/api/access-grants")]
pub async fn grant_user_access(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Any>,
    grant: web::Json<NewGrant>,
) -> Result<HttpResponse, ApiError> {
    if !ROLES.contains(&grant.role.as_str()) {
        return Err(ApiError::invalid(format!(
            "role {:?} is not one of {}",
            grant.role,
            ROLES.join(", ")
        )));
    }
    let (id, company) = (write.entity_id().to_string(), write.tenant().to_string());
    let user: Option<String> = sqlx::query_scalar(
        sql!("SELECT id FROM users WHERE id = $1 AND company_id = $2").on(write.tx()),
    )
    .bind(&grant.user_id)
    .bind(&company)
    .fetch_optional(write.tx())
    .await?;
    user.ok_or(ApiError::NotFound("user"))?;
    let granted: Option<String> = sqlx::query_scalar(
        sql!("SELECT id FROM access_grants WHERE user_id = $1 AND role = $2").on(write.tx()),
    )
    .bind(&grant.user_id)
    .bind(&grant.role)
    .fetch_optional(write.tx())
    .await?;
    if granted.is_some() {
        return Err(ApiError::conflict(format!(
            "the user already has the {} role",
            grant.role
        )));
    }
    sqlx::query(sql!("INSERT INTO access_grants (id, company_id, user_id, role, created_at_ms) VALUES ($1, $2, $3, $4, $5)").on(write.tx()))
    .bind(&id)
    .bind(&company)
    .bind(&grant.user_id)
    .bind(&grant.role)
    .bind(now_ms())
    .execute(write.tx())
    .await?;
    Ok(HttpResponse::Created()
        .json(json!({ "id": id, "user_id": grant.user_id, "role": grant.role })))
}
