//! The `Idempotency-Key` extractor.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::{Ready, ready};

use crate::problem::{Problem, ProblemKind};

/// The header's name, lower case as HTTP/2 sends it.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The client's `Idempotency-Key`, extracted and validated from the request.
///
/// A handler annotated with `#[financial_mutation]` or `#[high_risk_mutation]` must take one:
/// that is the compile-time half of the contract. Extraction refuses, with a `400`
/// problem+json answer and before any work, a request with no key, with more than one
/// `Idempotency-Key` header, or with a key that is empty, longer than 255 bytes or not visible
/// ASCII. The structured-field string form (`"abc"`) and the bare token form (`abc`) are both
/// accepted.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(idem_runtime::IdempotencyKey);

impl IdempotencyKey {
    /// A key chosen by a job or a command rather than sent by a client (`late-fees:2026-11-29`):
    /// 1 to 255 visible ASCII bytes.
    ///
    /// ```
    /// let key = idem_actix::IdempotencyKey::parse("late-fees:2026-11-29")?;
    /// assert_eq!(key.as_str(), "late-fees:2026-11-29");
    /// # Ok::<(), idem_actix::KeyError>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self, idem_runtime::KeyError> {
        idem_runtime::IdempotencyKey::parse(text).map(Self)
    }

    /// Validates the key of a request's headers.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, Problem> {
        let mut values = headers.get_all(IDEMPOTENCY_KEY);
        let Some(value) = values.next() else {
            return Err(Problem::new(
                ProblemKind::KeyMissing,
                "this operation is protected against duplicates: send an Idempotency-Key header with a unique value, such as a UUID, and reuse it only to retry the same request",
            ));
        };
        if values.next().is_some() {
            return Err(Problem::new(
                ProblemKind::KeyInvalid,
                "more than one Idempotency-Key header was sent: send exactly one",
            ));
        }
        idem_runtime::IdempotencyKey::from_header_value(value.as_bytes())
            .map(Self)
            .map_err(|error| Problem::new(ProblemKind::KeyInvalid, error.to_string()))
    }

    /// The validated key.
    pub fn into_inner(self) -> idem_runtime::IdempotencyKey {
        self.0
    }
}

impl Deref for IdempotencyKey {
    type Target = idem_runtime::IdempotencyKey;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FromRequest for IdempotencyKey {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::from_headers(request.headers()))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn key_of(request: TestRequest) -> Result<String, ProblemKind> {
        let request = request.to_http_request();
        IdempotencyKey::from_headers(request.headers())
            .map(|key| key.as_str().to_owned())
            .map_err(|problem| problem.kind())
    }

    #[test]
    fn quoted_and_bare_keys_are_accepted() {
        let quoted = TestRequest::default().insert_header(("Idempotency-Key", "\"k-1\""));
        let bare = TestRequest::default().insert_header(("Idempotency-Key", "k-1"));
        assert_eq!(key_of(quoted).unwrap(), "k-1");
        assert_eq!(key_of(bare).unwrap(), "k-1");
    }

    #[test]
    fn missing_repeated_and_malformed_keys_are_refused() {
        assert_eq!(key_of(TestRequest::default()), Err(ProblemKind::KeyMissing));
        let repeated = TestRequest::default()
            .append_header(("Idempotency-Key", "a"))
            .append_header(("Idempotency-Key", "b"));
        assert_eq!(key_of(repeated), Err(ProblemKind::KeyInvalid));
        let empty = TestRequest::default().insert_header(("Idempotency-Key", "\"\""));
        assert_eq!(key_of(empty), Err(ProblemKind::KeyInvalid));
        let long = TestRequest::default().insert_header(("Idempotency-Key", "k".repeat(256)));
        assert_eq!(key_of(long), Err(ProblemKind::KeyInvalid));
    }
}
