//! Capturing a handler's answer for storage, and replaying a stored one.

use actix_web::HttpResponse;
use actix_web::body::{BodyLimitExceeded, BodySize, MessageBody, to_bytes_limited};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use idem_runtime::StoredResponse;

use crate::config::ReplayStatus;
use crate::problem::{Problem, ProblemKind};

/// The header that marks a replayed answer.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The headers a replay repeats. Never `Set-Cookie` (a session must not be handed out twice),
/// `Date` or rate-limit headers (they describe the first answer's moment, not this one).
pub const REPLAYED_HEADERS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::ETAG,
    header::LINK,
    header::CONTENT_LOCATION,
];

/// Reads the handler's answer in full: the answer to send now (every header kept) and what to
/// store for replays (status, allow-listed headers, body bytes).
pub(crate) async fn capture(
    response: HttpResponse,
    created_status: bool,
    answer_limit: usize,
) -> Result<(HttpResponse, StoredResponse), actix_web::Error> {
    let mut response = response;
    if created_status && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
    }
    let headers = REPLAYED_HEADERS
        .iter()
        .flat_map(|name| {
            response
                .headers()
                .get_all(name)
                .map(move |value| (name, value))
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let (response, body) = response.into_parts();
    if matches!(body.size(), BodySize::Stream) {
        // A stream may never end, and would hold the key and the transaction while it runs.
        tracing::error!(
            status = response.status().as_u16(),
            "a protected handler answered with a streaming body, which cannot be stored; rolled back"
        );
        return Err(Problem::new(
            ProblemKind::WriteFailed,
            "the handler answered with a streaming body, which cannot be stored for replays: nothing was written (answer with a sized body, such as bytes or JSON)",
        )
        .into());
    }
    let body = to_bytes_limited(body, answer_limit)
        .await
        .map_err(|_: BodyLimitExceeded| answer_too_large(answer_limit))?
        .map_err(|error| {
            actix_web::error::ErrorInternalServerError(format!(
                "the handler's response body could not be read: {error}"
            ))
        })?;
    let stored = StoredResponse {
        status: response.status().as_u16(),
        headers,
        body: body.to_vec(),
    };
    Ok((response.set_body(body.boxed()), stored))
}

/// The refusal of an answer over the limit of stored answers: the write rolls back.
fn answer_too_large(limit: usize) -> actix_web::Error {
    tracing::error!(
        limit,
        "a protected handler answered with a body over the limit of stored answers; rolled back"
    );
    Problem::new(
        ProblemKind::WriteFailed,
        format!(
            "the handler's answer is over the {limit}-byte limit of answers stored for replays: nothing was written (answer with a reference to a large document, or raise Idempotency::with_answer_limit)"
        ),
    )
    .into()
}

/// The stored answer, marked `Idempotent-Replayed: true`.
pub(crate) fn replay(stored: &StoredResponse, replay_status: ReplayStatus) -> HttpResponse {
    let status = match (replay_status, stored.status) {
        (ReplayStatus::Ok, 201) => StatusCode::OK,
        (_, status) => StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
    };
    let mut response = HttpResponse::build(status);
    for (name, value) in &stored.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.append_header((name, value));
        }
    }
    response.insert_header((IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")));
    response.body(stored.body.clone())
}
