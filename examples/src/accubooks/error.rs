//! AccuBooks' own refusals, as problem+json with AccuBooks' own types: a business conflict is
//! never mistaken for idem's in-flight `409`.

use actix_web::error::JsonPayloadError;
use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, ContentType};
use actix_web::{HttpResponse, ResponseError, web};
use idem_actix::ErrorChain;
use idem_actix::StoreError;
use serde_json::json;

/// The base of AccuBooks' own problem types: an identifier (a `tag:` URI, RFC 4151), not a
/// link; each type adds an anchor (`#business-rule`, `#not-found`, `#method-not-allowed`, …)
/// named in [`ApiError`]'s variants. idem's own refusals carry idem's types
/// (`idem_actix::problem`), so a client tells a business conflict from an in-flight twin.
pub const PROBLEM_TYPES_URI: &str = "tag:accubooks.example,2026:problems";

/// The largest request body AccuBooks reads, in bytes, on every route: idem refuses a larger
/// one on a protected route before any work, [`ApiError::json_config`] on the others.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Why AccuBooks refused a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request breaks a business rule or is malformed (`422`).
    #[error("{0}")]
    Invalid(String),
    /// The named record does not exist for this company (`404`).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The record is not in a state that allows this (`409`).
    #[error("{0}")]
    Conflict(String),
    /// The body is not the JSON this operation takes: unreadable, or of the wrong shape (`400`).
    #[error("the body is not what this operation takes: {0}")]
    Malformed(String),
    /// The body was not sent as JSON (`415`).
    #[error("send the body as JSON, with Content-Type: application/json")]
    NotJson,
    /// The body is larger than [`BODY_LIMIT`] (`413`).
    #[error("the body is larger than the {BODY_LIMIT} bytes accepted")]
    TooLarge,
    /// No route serves this path (`404`).
    #[error("nothing is served at {0}: see the API's routes in the README")]
    NoRoute(String),
    /// The path is served, with other methods (`405`, with `Allow`).
    #[error("{method} is not served here: use {}", allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(" or "))]
    MethodNotAllowed {
        /// The method the request used.
        method: Method,
        /// The methods the path is served with.
        allowed: Vec<Method>,
    },
    /// The database failed (`500`); a serialization failure here is retried by idem. A unique
    /// violation is a `409`: the record exists already (a duplicate natural key, or a key
    /// reused after it expired, whose deterministic entity id is taken).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The idempotency store failed one of AccuBooks' own transactions
    /// (`IdempotencyStore::begin_for`) in a way that is not a database error (`500`).
    #[error(transparent)]
    Store(StoreError),
}

impl ApiError {
    /// A `422` refusal.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::Invalid(detail.into())
    }

    /// A `409` refusal.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict(detail.into())
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "business-rule",
            Self::NotFound(_) => "not-found",
            Self::NoRoute(_) => "no-route",
            Self::MethodNotAllowed { .. } => "method-not-allowed",
            Self::Conflict(_) => "state-conflict",
            Self::Malformed(_) => "malformed-body",
            Self::NotJson => "not-json",
            Self::TooLarge => "body-too-large",
            Self::Database(_) if self.is_duplicate() => "already-exists",
            Self::Database(_) | Self::Store(_) => "internal",
        }
    }

    /// How AccuBooks reads JSON bodies: at most [`BODY_LIMIT`] bytes, and a body it cannot read
    /// is refused as problem+json like every other refusal.
    pub fn json_config() -> web::JsonConfig {
        web::JsonConfig::default()
            .limit(BODY_LIMIT)
            .error_handler(|error, _request| Self::from(error).into())
    }

    /// A unique violation: the record this request would create exists already.
    fn is_duplicate(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(error)) if error.is_unique_violation())
    }
}

impl From<StoreError> for ApiError {
    /// The store's failures of AccuBooks' own transactions (`IdempotencyStore::begin_for`).
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(error) => Self::Database(error),
            other => Self::Store(other),
        }
    }
}

impl From<JsonPayloadError> for ApiError {
    fn from(error: JsonPayloadError) -> Self {
        match error {
            JsonPayloadError::ContentType => Self::NotJson,
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                Self::TooLarge
            }
            other => Self::Malformed(other.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Database(_) if self.is_duplicate() => StatusCode::CONFLICT,
            Self::Database(_) | Self::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let detail = match self {
            Self::Database(_) if self.is_duplicate() => {
                "the record this request creates exists already; if this Idempotency-Key was used \
                 more than a day ago it has expired: send a new request with a new key"
                    .to_owned()
            }
            Self::Database(_) | Self::Store(_) => {
                tracing::error!(error = %ErrorChain(self), "database failure");
                "the request failed; retry it with the same Idempotency-Key".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        if let Self::MethodNotAllowed { allowed, .. } = self {
            response.insert_header(header::Allow(allowed.clone()));
        }
        response
            .insert_header(ContentType(
                "application/problem+json"
                    .parse()
                    .expect("a valid media type"),
            ))
            .json(json!({
                "type": format!("{PROBLEM_TYPES_URI}#{}", self.slug()),
                "title": self.slug().replace('-', " "),
                "status": self.status_code().as_u16(),
                "detail": detail,
            }))
    }
}
