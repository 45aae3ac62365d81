//! What an annotated handler runs: extract, fingerprint, run the write protocol, answer.
//!
//! Generated code calls [`serve`] with the user's function wrapped in a closure; nothing here
//! is meant to be called by hand.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut};
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use idem_runtime::{
    Backend, Fingerprint, IdempotencyKey, Outcome, RegisteredOperation, RequestPart, StoreError,
    WriteContext, WriteError, WriteRequest,
};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::Idempotency;
use crate::failure::HandlerFailure;
use crate::key::key_from_headers;
use crate::mutation_gate::{GatePassed, ServedByIdem, gate_not_installed};
use crate::param::Extraction;
use crate::problem::{PROBLEM_JSON, Problem, ProblemKind};
use crate::replay::{capture, replay};
use crate::tenant::not_configured;

/// Runs one request of the registered operation `Op`: `extract` takes the handler's parameters
/// but its write context from the request (the client's key among them), `handler` is the
/// user's function, called once per attempt (closures that capture nothing, so copying them is
/// free). `ignored_fields` are the top-level JSON fields of the body that the fingerprint
/// leaves out (`ignore_in_fingerprint`); `created` is the attribute's `created = …`, if it
/// says.
pub async fn serve<Op, DB, Args, X, H>(
    operation: Op,
    request: HttpRequest,
    mut payload: Payload,
    extract: X,
    handler: H,
    ignored_fields: &'static [&'static str],
    created: Option<bool>,
) -> HttpResponse
where
    Op: RegisteredOperation,
    DB: Backend,
    Args: 'static,
    X: Fn(&HttpRequest, &mut Payload, &IdempotencyKey) -> Extraction<Args> + Copy + 'static,
    H: for<'c, 'r> Fn(
            &'c mut WriteContext<'r, DB>,
            Args,
            HttpRequest,
        ) -> LocalBoxFuture<'c, Result<HttpResponse, HandlerFailure>>
        + Copy
        + 'static,
{
    let (Ok(mut response) | Err(mut response)) = serve_checked(
        operation,
        &request,
        &mut payload,
        extract,
        handler,
        ignored_fields,
        created,
    )
    .await;
    response.extensions_mut().insert(ServedByIdem);
    response
}

async fn serve_checked<Op, DB, Args, X, H>(
    operation: Op,
    request: &HttpRequest,
    payload: &mut Payload,
    extract: X,
    handler: H,
    ignored_fields: &'static [&'static str],
    created: Option<bool>,
) -> Result<HttpResponse, HttpResponse>
where
    Op: RegisteredOperation,
    DB: Backend,
    Args: 'static,
    X: Fn(&HttpRequest, &mut Payload, &IdempotencyKey) -> Extraction<Args> + Copy + 'static,
    H: for<'c, 'r> Fn(
            &'c mut WriteContext<'r, DB>,
            Args,
            HttpRequest,
        ) -> LocalBoxFuture<'c, Result<HttpResponse, HandlerFailure>>
        + Copy
        + 'static,
{
    let problem = |problem: Problem| problem.to_response();
    let idem = request
        .app_data::<Idempotency<DB>>()
        .ok_or_else(|| not_configured().to_response())?;
    if request.extensions().get::<GatePassed>().is_none() {
        tracing::error!(
            operation = Op::OPERATION.name(),
            "a protected route ran without the mutation gate: wrap the App with VerifiedRoutes::mutation_gate()"
        );
        return Err(gate_not_installed().to_response());
    }
    let key = key_from_headers(request.headers()).map_err(problem)?;
    let tenant = idem.tenants.resolve(request).await.map_err(problem)?;
    let (body, _buffered) = read_body(request, payload, idem).await.map_err(problem)?;
    // The user's extractors run before the key is claimed: a malformed body costs nothing.
    let args = extract(request, &mut Payload::from(body.clone()), &key)
        .await
        .map_err(|error| extraction_refused(&error))?;

    let definition = Op::OPERATION;
    // The concrete path, not the route template: one key reused for another invoice's
    // `/api/invoices/{id}/finalize` is another request, refused, never the first one's replay.
    let fingerprint = fingerprint(definition.name(), request, &body, ignored_fields);

    let user = idem.tenants.0.user(request);
    let request_id = request_id(request);
    let mut write_request = WriteRequest::new(&tenant, &key, fingerprint);
    if let Some(user) = &user {
        write_request = write_request.with_user(user);
    }
    if let Some(request_id) = request_id {
        write_request = write_request.with_request_id(request_id);
    }

    let first_args = Cell::new(Some(args));
    let answer: Rc<RefCell<Option<HttpResponse>>> = Rc::default();
    // The attribute's word, where it says; else the server's setting, for POST only.
    let answer_limit = idem.answer_limit;
    let created_status = created.unwrap_or_else(|| {
        idem.created_status && request.method() == actix_web::http::Method::POST
    });
    let outcome: Result<Outcome, WriteError<HandlerFailure>> = idem
        .store
        .execute_local(operation, write_request, |write| {
            let (answer, key) = (answer.clone(), key.clone());
            let (request, body, args) = (request.clone(), body.clone(), first_args.take());
            Box::pin(async move {
                // A retried attempt extracts again from the same bytes.
                let args = match args {
                    Some(args) => args,
                    None => extract(&request, &mut Payload::from(body), &key)
                        .await
                        .map_err(HandlerFailure::answered)?,
                };
                let response = handler(write, args, request).await?;
                let (response, stored) = capture(response, created_status, answer_limit)
                    .await
                    .map_err(HandlerFailure::answered)?;
                *answer.borrow_mut() = Some(response);
                Ok(stored)
            })
        })
        .await;

    let retry_after = idem.store.config().retry_after();
    match outcome {
        Ok(Outcome::New { response, .. }) => Ok(answer
            .take()
            .unwrap_or_else(|| replay(&response, crate::ReplayStatus::Original))),
        Ok(Outcome::Replayed { response }) => Ok(replay(&response, idem.replay_status)),
        Ok(Outcome::FingerprintMismatch { differing }) => Err(problem(Problem::new(
            ProblemKind::KeyReused,
            key_reused_detail(&differing),
        ))),
        Ok(Outcome::InFlight { retry_after }) => Err(problem(
            Problem::new(
                ProblemKind::RequestInFlight,
                "a request with this Idempotency-Key is still being processed: retry later with the same key",
            )
            .retry_after(retry_after),
        )),
        Err(WriteError::Handler(failure)) => {
            Err(failure.into_answer(definition.name(), request_id))
        }
        Err(WriteError::Panicked { .. }) => Err(problem(Problem::new(
            ProblemKind::WriteFailed,
            "the write failed and nothing was written: retry with the same key",
        ))),
        Err(WriteError::BodyAbortedTransaction) => Err(problem(Problem::new(
            ProblemKind::WriteFailed,
            "the handler answered after one of its own statements failed, which aborted the write's transaction: nothing was written",
        ))),
        Err(WriteError::TimedOut { after }) => Err(problem(
            Problem::new(
                ProblemKind::WriteTimedOut,
                format!(
                    "the write ran longer than {} ms and was rolled back: nothing was written; retry with the same key",
                    after.as_millis()
                ),
            )
            .retry_after(retry_after),
        )),
        Err(WriteError::Store(StoreError::OutcomeUnknown { .. })) => Err(problem(
            Problem::new(
                ProblemKind::OutcomeUnknown,
                "the database did not answer the write's COMMIT, and its outcome could not be read back: it may have been written; retry with the same key, which answers with the write if it landed and runs it if it did not",
            )
            .retry_after(retry_after),
        )),
        Err(WriteError::Store(error)) => {
            tracing::error!(error = %idem_runtime::ErrorChain(&error), operation = definition.name(), "idempotency store failed");
            Err(problem(
                Problem::new(ProblemKind::StoreUnavailable, store_detail(&error))
                    .retry_after(retry_after),
            ))
        }
        // Outcomes and errors a newer idem-runtime may add (the enums are non-exhaustive; the
        // two crates pin each other exactly, so none arrives today).
        Ok(_) | Err(_) => Err(problem(Problem::new(
            ProblemKind::WriteFailed,
            "the write ended in a way this server does not know: retry with the same key",
        ))),
    }
}

/// The `X-Request-Id` the client or a proxy sent, if it is a sane one (visible ASCII, at most
/// 128 bytes), for the audit log.
fn request_id(request: &HttpRequest) -> Option<&str> {
    let id = request.headers().get("x-request-id")?.to_str().ok()?;
    (!id.is_empty() && id.len() <= 128 && id.bytes().all(|byte| byte.is_ascii_graphic()))
        .then_some(id)
}

fn store_detail(error: &StoreError) -> &'static str {
    match error {
        StoreError::Database(sqlx::Error::PoolTimedOut) => {
            "every database connection is busy and nothing was written: retry with the same key"
        }
        _ => "the idempotency store failed and nothing was written: retry with the same key",
    }
}

/// The request's fingerprint. A JSON body (by its `Content-Type`, `application/json` or
/// `…+json`) is taken in its canonical form, without the `ignore_in_fingerprint` fields, so a
/// retry whose encoder orders members or spaces them differently is the same request; so is
/// any body that parses as JSON when the operation ignores fields. Any other body is taken as
/// sent.
fn fingerprint(
    operation: &str,
    request: &HttpRequest,
    body: &[u8],
    ignored_fields: &[&str],
) -> Fingerprint {
    let (method, path, query) = (
        request.method().as_str(),
        request.path(),
        request.query_string(),
    );
    if is_json(request) || !ignored_fields.is_empty() {
        Fingerprint::of_json_request(operation, method, path, query, body, ignored_fields)
    } else {
        Fingerprint::of_request(operation, method, path, query, body)
    }
}

fn is_json(request: &HttpRequest) -> bool {
    let Some(content_type) = request.headers().get(actix_web::http::header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(content_type) = content_type.to_str() else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The 422's detail: which parts of the request differed from the first one's, never their
/// contents (the stored request is not echoed).
fn key_reused_detail(differing: &[RequestPart]) -> String {
    let parts = differing
        .iter()
        .map(|part| part.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let what = if parts.is_empty() {
        "a different request".to_owned()
    } else {
        format!("a request that differs in its {parts}")
    };
    format!(
        "this Idempotency-Key was used with {what}: a retry must repeat the first request; use a new key for a new request"
    )
}

/// The answer to a request that an extractor of the handler refused: the application's own,
/// when it answers with problem+json (a `JsonConfig` error handler, say), else idem's
/// `#request-invalid` with the extractor's status and message (a 4xx), or `#not-configured`
/// without the message (a 5xx, whose cause is logged).
fn extraction_refused(error: &actix_web::Error) -> HttpResponse {
    let response = error.error_response();
    let is_problem = response
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return response;
    }
    if !response.status().is_client_error() {
        // The server's side (app data an extractor needs is missing): logged, not shown.
        tracing::error!(%error, "an extractor of a protected handler failed on the server's side");
        return Problem::new(
            ProblemKind::NotConfigured,
            "an extractor of the handler failed on the server's side: nothing was written",
        )
        .to_response();
    }
    Problem::new(
        ProblemKind::RequestInvalid,
        format!("the request could not be read: {error}; nothing was written"),
    )
    .with_status(response.status())
    .to_response()
}

/// The whole request body, read within the body timeout and the limits, and the share of the
/// process's body budget it holds (released when the request is done with it).
async fn read_body<'a, DB: Backend>(
    request: &HttpRequest,
    payload: &mut Payload,
    idem: &'a Idempotency<DB>,
) -> Result<(Bytes, SemaphorePermit<'a>), Problem> {
    let limit = idem.body_limit;
    let too_large = || {
        Problem::new(
            ProblemKind::PayloadTooLarge,
            format!("the request body is over the limit of {limit} bytes"),
        )
    };
    let announced = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let budget: &'a Semaphore = &idem.buffered_bodies;
    let mut held = budget
        .try_acquire_many(0)
        .expect("no permit is always available");
    let mut body = BytesMut::with_capacity(announced.unwrap_or(0));
    let read = async {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| {
                Problem::new(
                    ProblemKind::PayloadTooLarge,
                    format!("the request body could not be read: {error}"),
                )
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            let more = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            held.merge(budget.try_acquire_many(more).map_err(|_| {
                Problem::new(
                    ProblemKind::ServerBusy,
                    "the server is reading too many request bodies at once: nothing was written; retry with the same key",
                )
                .retry_after(Duration::from_secs(1))
            })?);
            body.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(idem.body_timeout, read).await {
        Ok(Ok(())) => Ok((body.freeze(), held)),
        Ok(Err(problem)) => Err(problem),
        Err(_) => Err(Problem::new(
            ProblemKind::BodyTimedOut,
            format!(
                "the request body did not arrive within {} ms: nothing was written; send it whole, with the same key",
                idem.body_timeout.as_millis()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use actix_web::test::TestRequest;

    fn fingerprint_of(content_type: Option<&str>, body: &str, ignored: &[&str]) -> Fingerprint {
        let mut request = TestRequest::post().uri("/payments");
        if let Some(content_type) = content_type {
            request = request.insert_header(("content-type", content_type));
        }
        fingerprint(
            "createPayment",
            &request.to_http_request(),
            body.as_bytes(),
            ignored,
        )
    }

    #[test]
    fn a_json_body_is_the_same_request_in_any_member_order_and_spacing() {
        for content_type in [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
        ] {
            assert_eq!(
                fingerprint_of(Some(content_type), r#"{"a":1,"b":2}"#, &[]),
                fingerprint_of(Some(content_type), "{ \"b\": 2, \"a\": 1 }", &[]),
                "{content_type}"
            );
        }
        assert_ne!(
            fingerprint_of(Some("application/json"), r#"{"a":1}"#, &[]),
            fingerprint_of(Some("application/json"), r#"{"a":2}"#, &[])
        );
    }

    #[test]
    fn other_bodies_are_fingerprinted_as_sent() {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            assert_ne!(
                fingerprint_of(content_type, r#"{"a":1,"b":2}"#, &[]),
                fingerprint_of(content_type, r#"{"b":2,"a":1}"#, &[]),
                "{content_type:?}"
            );
        }
    }

    #[test]
    fn ignored_fields_leave_the_fingerprint() {
        let ignore = &["client_sent_at"];
        let a = fingerprint_of(
            None,
            r#"{"amount_cents":5,"client_sent_at":"10:00"}"#,
            ignore,
        );
        let b = fingerprint_of(
            None,
            r#"{ "client_sent_at": "10:01", "amount_cents": 5 }"#,
            ignore,
        );
        let c = fingerprint_of(
            None,
            r#"{"amount_cents":6,"client_sent_at":"10:00"}"#,
            ignore,
        );
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn the_reuse_detail_names_the_parts_not_their_contents() {
        assert_eq!(
            key_reused_detail(&[RequestPart::Path, RequestPart::Body]),
            "this Idempotency-Key was used with a request that differs in its path, body: a retry must repeat the first request; use a new key for a new request"
        );
        assert!(key_reused_detail(&[]).contains("with a different request"));
    }
}
