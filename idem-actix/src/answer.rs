//! What an annotated handler's function returned, in the protocol's terms, chosen by the type's
//! shape at the call site with zero-sized tags (autoref specialization, as in anyhow's
//! `kind.rs`): `(&value).idem_answer_kind()` picks a tag by reference, and the tag's method takes
//! the value by move. A `Result` splits into the answer and the refusal; any other
//! [`Responder`] is an answer. A refusal that is a [`std::error::Error`] is kept as the
//! failure's cause, so the protocol can find a transient database failure in its chain.

use std::error::Error as StdError;
use std::fmt;

use actix_web::{HttpRequest, HttpResponse, Responder, ResponseError};

use crate::failure::HandlerFailure;

/// The tag of a handler's `Result`: `Err` refuses the write.
pub struct ResultTag;

/// Picks [`ResultTag`] for a `Result`.
pub trait ResultKind {
    /// The tag.
    fn idem_answer_kind(&self) -> ResultTag {
        ResultTag
    }
}

impl<T, E> ResultKind for Result<T, E> {}

impl ResultTag {
    /// The answer or the refusal.
    pub fn split<T, E>(self, output: Result<T, E>) -> Result<T, E> {
        output
    }
}

/// The tag of any other return type: always an answer.
pub struct AnswerTag;

/// Picks [`AnswerTag`] for anything that is not a `Result` (one autoref further away).
pub trait AnswerKind {
    /// The tag.
    fn idem_answer_kind(&self) -> AnswerTag {
        AnswerTag
    }
}

impl<T> AnswerKind for &T {}

impl AnswerTag {
    /// The answer, never refused.
    pub fn split<T>(self, output: T) -> Result<T, NoRefusal> {
        Ok(output)
    }
}

/// The refusal of a handler that cannot refuse.
#[derive(Debug)]
pub enum NoRefusal {}

impl fmt::Display for NoRefusal {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl StdError for NoRefusal {}

impl ResponseError for NoRefusal {}

/// The tag of a refusal that is a [`std::error::Error`]: kept as the failure's cause.
pub struct CauseTag;

/// Picks [`CauseTag`] for an error type that answers itself.
pub trait CauseKind {
    /// The tag.
    fn idem_refusal_kind(&self) -> CauseTag {
        CauseTag
    }
}

impl<E: ResponseError + StdError + 'static> CauseKind for E {}

impl CauseTag {
    /// The failure to report, with its cause.
    pub fn failure<E: ResponseError + StdError + 'static>(self, error: E) -> HandlerFailure {
        HandlerFailure::with_cause(error)
    }
}

/// The tag of any other refusal that actix-web can answer, such as `actix_web::Error`.
pub struct AnsweredTag;

/// Picks [`AnsweredTag`] for what converts into an `actix_web::Error`.
pub trait AnsweredKind {
    /// The tag.
    fn idem_refusal_kind(&self) -> AnsweredTag {
        AnsweredTag
    }
}

impl<E> AnsweredKind for &E {}

impl AnsweredTag {
    /// The failure to report.
    pub fn failure<E: Refusal>(self, error: E) -> HandlerFailure {
        HandlerFailure::answered(error.into_error())
    }
}

/// The answer of a handler, as a response.
pub fn respond<T: Answer>(answer: T, request: &HttpRequest) -> HttpResponse {
    answer.respond_to(request).map_into_boxed_body()
}

/// What a protected handler answers with: an actix-web [`Responder`].
#[diagnostic::on_unimplemented(
    message = "a protected handler cannot answer with `{Self}`",
    label = "not an actix-web `Responder`",
    note = "return `HttpResponse`, `web::Json<T>` where `T: serde::Serialize`, another `Responder`, or `Result<R, E>` of one, where `E` implements `actix_web::ResponseError`"
)]
pub trait Answer: Responder {}

#[diagnostic::do_not_recommend]
impl<T: Responder> Answer for T {}

/// What a protected handler refuses a write with.
#[diagnostic::on_unimplemented(
    message = "a protected handler cannot refuse a write with `{Self}`",
    label = "neither an `actix_web::ResponseError` nor convertible into `actix_web::Error`",
    note = "return an error type of your own that implements `actix_web::ResponseError` and `std::error::Error`, with the database error as its source (`#[error(transparent)] Database(#[from] sqlx::Error)` with thiserror): idem then retries transient database failures; or map it: `.map_err(actix_web::error::ErrorInternalServerError)`"
)]
pub trait Refusal {
    /// The refusal's answer.
    fn into_error(self) -> actix_web::Error;
}

#[diagnostic::do_not_recommend]
impl<E: Into<actix_web::Error>> Refusal for E {
    fn into_error(self) -> actix_web::Error {
        self.into()
    }
}
