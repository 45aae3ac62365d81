//! The error answers of idem: RFC 9457 `application/problem+json`, one `type` per failure.
//!
//! Each failure has its own `type` URI, [`PROBLEM_TYPES_URI`] and an anchor of this table, so a
//! client can tell them apart without parsing prose, and in particular tell an in-flight twin
//! from a business conflict. The types are identifiers (`tag:` URIs), not links:
//!
//! | anchor | status | when |
//! | --- | --- | --- |
//! | <a id="key-missing"></a>`#key-missing` | 400 | a registered operation was called without an `Idempotency-Key` header |
//! | <a id="key-invalid"></a>`#key-invalid` | 400 | the key is empty, longer than 255 bytes, not visible ASCII, or sent in more than one header |
//! | <a id="tenant-unresolved"></a>`#tenant-unresolved` | 401 | the application's [`TenantResolver`](crate::TenantResolver) could not name the tenant (with `WWW-Authenticate`) |
//! | <a id="tenant-unavailable"></a>`#tenant-unavailable` | 503 | the [`TenantResolver`](crate::TenantResolver) could not check the credentials (its database failed); retry after `Retry-After` seconds |
//! | <a id="request-invalid"></a>`#request-invalid` | 400 (or the extractor's own 4xx) | an extractor of the protected handler (`web::Json`, `web::Path`, `web::Query`, …) refused the request, and the application gave it no problem+json answer of its own; nothing was written |
//! | <a id="payload-too-large"></a>`#payload-too-large` | 413 | the body exceeds [`Idempotency::with_body_limit`](crate::Idempotency::with_body_limit) |
//! | <a id="body-timeout"></a>`#body-timeout` | 408 | the body did not arrive whole within [`Idempotency::with_body_timeout`](crate::Idempotency::with_body_timeout); nothing was written |
//! | <a id="server-busy"></a>`#server-busy` | 503 | the request bodies being read already hold [`Idempotency::with_buffered_bodies_limit`](crate::Idempotency::with_buffered_bodies_limit) bytes; retry after `Retry-After` seconds; nothing was written |
//! | <a id="key-reused"></a>`#key-reused` | 422 | the key was used before with a different request |
//! | <a id="request-in-flight"></a>`#request-in-flight` | 409 | a request with the same key is still running; retry after `Retry-After` seconds |
//! | <a id="write-failed"></a>`#write-failed` | 500 | the handler panicked, answered with a body that cannot be stored (a stream, or a body over [`Idempotency::with_answer_limit`](crate::Idempotency::with_answer_limit)), or answered after one of its own statements failed and aborted the transaction (PostgreSQL); nothing was written |
//! | <a id="handler-failed"></a>`#handler-failed` | 500 | the handler refused the write with a server error that is not a problem of its own (actix-web's default answer for an error type, whose text may hold a database's message): the cause is logged with the request's `X-Request-Id` (`request_id` in the body), never sent; nothing was written |
//! | <a id="write-timed-out"></a>`#write-timed-out` | 503 | the handler held its transaction past the write timeout; it was rolled back; retry with the same key |
//! | <a id="store-unavailable"></a>`#store-unavailable` | 503 | the idempotency store failed; nothing was written; retry after `Retry-After` seconds |
//! | <a id="outcome-unknown"></a>`#outcome-unknown` | 503 | the database did not answer the write's `COMMIT` and the outcome could not be read back: it may have been written; retry with the same key after `Retry-After` seconds (the retry replays it if it landed) |
//! | <a id="not-configured"></a>`#not-configured` | 500 | the application is not set up as idem needs: no [`Idempotency`](crate::Idempotency) app data, no [`MutationGate`](crate::MutationGate), or another resource mounted before a protected route would answer in its place |
//! | <a id="unprotected-mutation"></a>`#unprotected-mutation` | 405 | a mutating request (not `GET`, `HEAD`, `OPTIONS`, `TRACE`) reached a route pattern where that method is neither a protected operation nor declared with [`unprotected_mutation!`](crate::unprotected_mutation); `Allow` lists what the gate lets through there; no handler ran ([`MutationGate`](crate::MutationGate)) |
//! | <a id="mutation-not-routed"></a>`#mutation-not-routed` | 404 | a mutating request's path is placed on no resource of the application (the router would have answered `404`, or its default service would have run) and matches no declared exemption; no handler ran ([`MutationGate`](crate::MutationGate)) |
//! | <a id="not-ready"></a>`#not-ready` | 503 | `GET /readyz`: the process is draining, its migrations are pending or its database is unreachable ([`Health`](crate::health::Health)) |

use std::borrow::Cow;
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use serde_json::{Map, Value};

/// The base of every problem type: a `tag:` URI (RFC 4151), an identifier, not a link (RFC
/// 9457 lets a type be a URI that does not resolve). Each type is this base and an anchor of
/// the table above (`tag:idem-rs.github.io,2026:problems#key-reused`); the table, in this
/// module's docs (`cargo doc --open`, `idem_actix::problem`), is where a reader finds it.
pub const PROBLEM_TYPES_URI: &str = "tag:idem-rs.github.io,2026:problems";

/// The documentation of the `Idempotency-Key` header, linked from every 400 answer with
/// `rel="describedby"`.
pub const KEY_DOCUMENTATION_URI: &str =
    "https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/";

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One kind of failure, with its status and `type` URI anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// No `Idempotency-Key` header on a registered operation.
    KeyMissing,
    /// A malformed or repeated `Idempotency-Key` header.
    KeyInvalid,
    /// The tenant could not be resolved from the request.
    TenantUnresolved,
    /// The credentials could not be checked: the server's failure.
    TenantUnavailable,
    /// An extractor of the protected handler refused the request.
    RequestInvalid,
    /// The request body is over the configured limit.
    PayloadTooLarge,
    /// The request body did not arrive within the configured time.
    BodyTimedOut,
    /// Too many bytes of request bodies are being read at once.
    ServerBusy,
    /// The key was used before with a different request.
    KeyReused,
    /// A request with the same key is still running.
    RequestInFlight,
    /// The handler panicked, or its answer cannot be stored.
    WriteFailed,
    /// The handler refused the write with a server error that is not a problem of its own.
    HandlerFailed,
    /// The handler ran past the write timeout.
    WriteTimedOut,
    /// The idempotency store failed.
    StoreUnavailable,
    /// The write's `COMMIT` got no answer and could not be settled: it may have landed.
    OutcomeUnknown,
    /// No [`Idempotency`](crate::Idempotency) app data.
    NotConfigured,
    /// The readiness probe failed.
    NotReady,
    /// A mutation reached a route that is neither protected nor exempt.
    UnprotectedMutation,
    /// A mutation's path is served by no resource and no exemption.
    MutationNotRouted,
}

impl ProblemKind {
    /// The HTTP status of this failure.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::KeyMissing | Self::KeyInvalid | Self::RequestInvalid => StatusCode::BAD_REQUEST,
            Self::TenantUnresolved => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimedOut => StatusCode::REQUEST_TIMEOUT,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RequestInFlight => StatusCode::CONFLICT,
            Self::WriteFailed | Self::HandlerFailed | Self::NotConfigured => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::UnprotectedMutation => StatusCode::METHOD_NOT_ALLOWED,
            Self::MutationNotRouted => StatusCode::NOT_FOUND,
            Self::StoreUnavailable
            | Self::OutcomeUnknown
            | Self::ServerBusy
            | Self::NotReady
            | Self::TenantUnavailable
            | Self::WriteTimedOut => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The anchor of this failure on [`PROBLEM_TYPES_URI`].
    pub const fn anchor(self) -> &'static str {
        match self {
            Self::KeyMissing => "key-missing",
            Self::KeyInvalid => "key-invalid",
            Self::TenantUnresolved => "tenant-unresolved",
            Self::TenantUnavailable => "tenant-unavailable",
            Self::RequestInvalid => "request-invalid",
            Self::PayloadTooLarge => "payload-too-large",
            Self::BodyTimedOut => "body-timeout",
            Self::ServerBusy => "server-busy",
            Self::KeyReused => "key-reused",
            Self::RequestInFlight => "request-in-flight",
            Self::WriteFailed => "write-failed",
            Self::HandlerFailed => "handler-failed",
            Self::WriteTimedOut => "write-timed-out",
            Self::StoreUnavailable => "store-unavailable",
            Self::OutcomeUnknown => "outcome-unknown",
            Self::NotConfigured => "not-configured",
            Self::NotReady => "not-ready",
            Self::UnprotectedMutation => "unprotected-mutation",
            Self::MutationNotRouted => "mutation-not-routed",
        }
    }

    /// The short, fixed summary of this failure (the problem's `title`).
    pub const fn title(self) -> &'static str {
        match self {
            Self::KeyMissing => "Idempotency-Key header missing",
            Self::KeyInvalid => "Idempotency-Key header invalid",
            Self::TenantUnresolved => "tenant not resolved",
            Self::TenantUnavailable => "credentials could not be checked",
            Self::RequestInvalid => "request not readable by the handler",
            Self::PayloadTooLarge => "request body too large",
            Self::BodyTimedOut => "request body too slow",
            Self::ServerBusy => "too many request bodies being read",
            Self::KeyReused => "Idempotency-Key reused with a different request",
            Self::RequestInFlight => "a request with this Idempotency-Key is in flight",
            Self::WriteFailed => "the write failed",
            Self::HandlerFailed => "the write failed on the server",
            Self::WriteTimedOut => "the write timed out",
            Self::StoreUnavailable => "idempotency store unavailable",
            Self::OutcomeUnknown => "the write's outcome is unknown",
            Self::NotConfigured => "idempotency not configured",
            Self::NotReady => "not ready",
            Self::UnprotectedMutation => "unprotected mutation refused",
            Self::MutationNotRouted => "no route for this mutation",
        }
    }

    /// The problem's `type` URI.
    pub fn type_uri(self) -> String {
        format!("{PROBLEM_TYPES_URI}#{}", self.anchor())
    }
}

/// An RFC 9457 problem detail, rendered as `application/problem+json`: one of idem's own
/// ([`Problem::new`]), or one of the application's ([`Problem::of_type`]), so that a service
/// answers its own refusals in the same shape as idem's.
///
/// ```
/// use actix_web::http::StatusCode;
/// use idem_actix::problem::Problem;
/// use serde_json::json;
///
/// let declined = Problem::of_type(
///     "https://payouts.example/problems#insufficient-funds",
///     "insufficient funds",
///     StatusCode::UNPROCESSABLE_ENTITY,
/// )
/// .with_detail("the balance is 3000 cents short of this payout")
/// .with_extension("shortfall_cents", 3000);
/// let response = declined.to_response();
/// assert_eq!(response.status(), 422);
/// assert_eq!(response.headers().get("content-type").unwrap(), "application/problem+json");
/// ```
#[derive(Debug, Clone)]
pub struct Problem {
    /// idem's own kind, for idem's problems.
    kind: Option<ProblemKind>,
    type_uri: Cow<'static, str>,
    title: Cow<'static, str>,
    status: StatusCode,
    detail: Option<String>,
    /// Boxed, so that a `Result` carrying a problem stays small.
    extras: Box<Extras>,
}

/// What few problems carry: extension members and the headers of some statuses.
#[derive(Debug, Clone, Default)]
struct Extras {
    extensions: Map<String, Value>,
    retry_after: Option<Duration>,
    challenge: Option<String>,
    allow: Option<String>,
}

/// The members RFC 9457 defines, which an extension may not take.
const STANDARD_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "instance"];

impl Problem {
    /// One of idem's problems, of `kind`, with a sentence about this occurrence.
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind: Some(kind),
            detail: Some(detail.into()),
            ..Self::of_type(kind.type_uri(), kind.title(), kind.status())
        }
    }

    /// One of the application's problems: its `type` URI (an identifier of the application's,
    /// such as `https://payouts.example/problems#insufficient-funds`; not idem's
    /// [`PROBLEM_TYPES_URI`]), its `title` (the same for every occurrence) and its status.
    pub fn of_type(
        type_uri: impl Into<Cow<'static, str>>,
        title: impl Into<Cow<'static, str>>,
        status: StatusCode,
    ) -> Self {
        Self {
            kind: None,
            type_uri: type_uri.into(),
            title: title.into(),
            status,
            detail: None,
            extras: Box::default(),
        }
    }

    /// A sentence about this occurrence, for the client: never a cause's text that the client
    /// should not read (a database's message, a query).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// An extension member: `name` with `value`, beside the standard members.
    ///
    /// # Panics
    ///
    /// When `name` is a member RFC 9457 defines (`type`, `title`, `status`, `detail`,
    /// `instance`): set those through their own methods.
    pub fn with_extension(mut self, name: &str, value: impl Into<Value>) -> Self {
        assert!(
            !STANDARD_MEMBERS.contains(&name),
            "`{name}` is a standard member of a problem, not an extension"
        );
        self.extras.extensions.insert(name.to_owned(), value.into());
        self
    }

    /// Answers with `status` instead of the one the problem was made with: for a refusal whose
    /// status another layer chose (an extractor's `415`, say).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The status this problem answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Adds `Allow`, the methods the target resource accepts: RFC 9110 requires it on a `405`.
    pub fn allow(mut self, methods: impl Into<String>) -> Self {
        self.extras.allow = Some(methods.into());
        self
    }

    /// Adds a `WWW-Authenticate` challenge, for a `401`.
    pub fn challenge(mut self, challenge: impl Into<String>) -> Self {
        self.extras.challenge = Some(challenge.into());
        self
    }

    /// Adds `Retry-After`, in whole seconds rounded up.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.extras.retry_after = Some(wait);
        self
    }

    /// idem's kind of failure, for idem's own problems; `None` for the application's.
    pub fn kind(&self) -> Option<ProblemKind> {
        self.kind
    }

    /// The problem's `type` URI.
    pub fn type_uri(&self) -> &str {
        &self.type_uri
    }

    /// The response: status, `application/problem+json` body, and for the key's 400s a
    /// `Link: <…>; rel="describedby"` to the header's documentation.
    pub fn to_response(&self) -> HttpResponse {
        let mut body = Map::new();
        body.insert("type".to_owned(), Value::from(self.type_uri.as_ref()));
        body.insert("title".to_owned(), Value::from(self.title.as_ref()));
        body.insert("status".to_owned(), Value::from(self.status.as_u16()));
        if let Some(detail) = &self.detail {
            body.insert("detail".to_owned(), Value::from(detail.as_str()));
        }
        body.extend(self.extras.extensions.clone());
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        if matches!(
            self.kind,
            Some(ProblemKind::KeyMissing | ProblemKind::KeyInvalid)
        ) {
            response.insert_header((
                header::LINK,
                format!("<{KEY_DOCUMENTATION_URI}>; rel=\"describedby\""),
            ));
        }
        if let Some(challenge) = &self.extras.challenge {
            response.insert_header((header::WWW_AUTHENTICATE, challenge.as_str()));
        }
        if let Some(methods) = &self.extras.allow {
            response.insert_header((header::ALLOW, methods.as_str()));
        }
        if let Some(wait) = self.extras.retry_after {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.insert_header((header::RETRY_AFTER, seconds.max(1)));
        }
        response.body(Value::Object(body).to_string())
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.title),
            None => f.write_str(&self.title),
        }
    }
}

impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        self.to_response()
    }
}
