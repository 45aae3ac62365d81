//! What an annotated handler's function returned, in the protocol's terms, chosen by the type's
//! shape at the call site with zero-sized tags (autoref specialization, as in anyhow's
//! `kind.rs`): `(&value).idem_answer_kind()` picks a tag by reference, and the tag's method takes
//! the value by move. A `Result` splits into the answer and the refusal; any other
//! [`Responder`] is an answer. A refusal that is a [`std::error::Error`] is kept as the
//! failure's cause, so the protocol can find a transient database failure in its chain.

use std::error::Error as StdError;
use std::fmt;
use std::marker::PhantomData;

use actix_web::{HttpRequest, HttpResponse, Responder, ResponseError};

use crate::serve::HandlerFailure;

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

impl<E: Into<actix_web::Error>> AnsweredKind for &E {}

impl AnsweredTag {
    /// The failure to report.
    pub fn failure<E: Into<actix_web::Error>>(self, error: E) -> HandlerFailure {
        HandlerFailure::answered(error.into())
    }
}

/// The answer of a handler, as a response.
pub fn respond<T: Responder>(answer: T, request: &HttpRequest) -> HttpResponse {
    answer.respond_to(request).map_into_boxed_body()
}

/// A parameter type of a protected handler, checked for being a database pool by the same
/// specialization: `(&ParamCheck::<T>::new()).idem_param_kind().admit::<T>()` compiles for an
/// extractor and fails, at the parameter, for a pool.
pub struct ParamCheck<T>(PhantomData<T>);

impl<T> ParamCheck<T> {
    /// The check of `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for ParamCheck<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A database pool, directly or in app data: what a protected handler must not take.
pub trait IsPool {}

impl<DB: sqlx::Database> IsPool for sqlx::Pool<DB> {}
impl<T: IsPool> IsPool for actix_web::web::Data<T> {}
impl<T: IsPool> IsPool for std::sync::Arc<T> {}

/// The tag of a pool parameter.
pub struct PoolParam;

/// Picks [`PoolParam`] for a pool.
pub trait PoolParamKind {
    /// The tag.
    fn idem_param_kind(&self) -> PoolParam {
        PoolParam
    }
}

impl<T: IsPool> PoolParamKind for ParamCheck<T> {}

impl PoolParam {
    /// Refuses the parameter: no type satisfies the bound, whose message says what to do.
    pub fn admit<T: WriteThroughTheTransaction>(self) {}
}

/// The tag of any other parameter.
pub struct OtherParam;

/// Picks [`OtherParam`] for anything that is not a pool (one autoref further away).
pub trait OtherParamKind {
    /// The tag.
    fn idem_param_kind(&self) -> OtherParam {
        OtherParam
    }
}

impl<T> OtherParamKind for &ParamCheck<T> {}

impl OtherParam {
    /// Admits the parameter.
    pub fn admit<T>(self) {}
}

/// Implemented by no type: the bound a pool parameter fails, with the sentence it shows.
#[diagnostic::on_unimplemented(
    message = "a protected handler cannot take a database pool: `{T}` writes outside the claimed transaction",
    label = "a write through this pool commits even when the protected write rolls back, and again on every retry",
    note = "write through the write context's transaction instead: `write.tx()`; a read that must not be part of the write belongs in an unprotected handler"
)]
pub trait WriteThroughTheTransaction<T = Self> {}
