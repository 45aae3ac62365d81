//! The `Idempotency-Key` header.

use actix_web::http::header::{HeaderMap, HeaderName};
use idem_runtime::IdempotencyKey;

use crate::problem::{Problem, ProblemKind};

/// The header's name, lower case as HTTP/2 sends it.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The client's key, validated from a request's headers: a protected handler's
/// [`IdempotencyKey`] parameter gets it. A request with no key, with more than one
/// `Idempotency-Key` header, or with a key that is empty, longer than 255 bytes or not visible
/// ASCII is refused with a `400` problem+json answer, before any work. The structured-field
/// string form (`"abc"`) and the bare token form (`abc`) are both accepted.
pub(crate) fn key_from_headers(headers: &HeaderMap) -> Result<IdempotencyKey, Problem> {
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
    IdempotencyKey::from_header_value(value.as_bytes())
        .map_err(|error| Problem::new(ProblemKind::KeyInvalid, error.to_string()))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn key_of(request: TestRequest) -> Result<String, ProblemKind> {
        let request = request.to_http_request();
        key_from_headers(request.headers())
            .map(|key| key.as_str().to_owned())
            .map_err(|problem| problem.kind().expect("one of idem's problems"))
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
