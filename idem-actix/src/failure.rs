//! A handler's refusal, as the write protocol sees it: the answer the handler chose, and the
//! error behind it.

use std::error::Error as StdError;
use std::fmt;

use actix_web::http::header;
use actix_web::{HttpResponse, ResponseError};
use idem_runtime::ErrorChain;

use crate::problem::{PROBLEM_JSON, Problem, ProblemKind};

/// A handler's refusal: its own error answer, and the error itself when it implements
/// [`std::error::Error`], so the protocol can find a transient database failure in its
/// `source()` chain and retry.
pub struct HandlerFailure {
    response: HttpResponse,
    cause: Option<Box<dyn StdError + 'static>>,
}

impl HandlerFailure {
    /// A refusal that answers itself and is kept as the failure's cause.
    pub(crate) fn with_cause<E: ResponseError + StdError + 'static>(error: E) -> Self {
        Self {
            response: error.error_response(),
            cause: Some(Box::new(error)),
        }
    }

    /// The handler's own answer, unless it is a server error in actix-web's default shape (the
    /// error's text as `text/plain`, which may hold a database's message or a query): then
    /// idem's `#handler-failed` problem, naming the request's id, and the error with its causes
    /// goes to the log under that id. A server error the handler answered as problem+json is
    /// the application's own choice, and stays.
    pub(crate) fn into_answer(self, operation: &str, request_id: Option<&str>) -> HttpResponse {
        let own_problem = self
            .response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|media_type| media_type.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
        if !self.response.status().is_server_error() || own_problem {
            return self.response;
        }
        tracing::error!(
            error = %ErrorChain(&self),
            operation,
            request_id,
            "a protected handler failed; the client is told only that it did"
        );
        let detail = match request_id {
            Some(id) => format!(
                "the write failed on the server and nothing was written; the server's log has the cause under request id {id}"
            ),
            None => "the write failed on the server and nothing was written; send an X-Request-Id header to find the cause in the server's log".to_owned(),
        };
        let problem = Problem::new(ProblemKind::HandlerFailed, detail);
        match request_id {
            Some(id) => problem.with_extension("request_id", id),
            None => problem,
        }
        .to_response()
    }

    /// A refusal answered by actix-web's error, whose cause the protocol cannot inspect.
    pub(crate) fn answered(error: actix_web::Error) -> Self {
        Self {
            response: error.error_response(),
            cause: None,
        }
    }
}

impl fmt::Debug for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerFailure")
            .field("status", &self.response.status())
            .field("cause", &self.cause)
            .finish()
    }
}

/// The cause is not repeated here: it is the [`source`](StdError::source), which an error
/// chain prints after this line.
impl fmt::Display for HandlerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the handler refused the write ({})",
            self.response.status()
        )
    }
}

impl StdError for HandlerFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.cause.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the payment gateway timed out")]
    struct GatewayTimeout;

    impl ResponseError for GatewayTimeout {}

    /// Printed as error reporters print a chain (each `source()` after its error), the
    /// handler's cause appears once.
    #[test]
    fn the_cause_is_printed_once_in_the_chain() {
        let failure = HandlerFailure::with_cause(GatewayTimeout);
        let mut chain = vec![failure.to_string()];
        let mut cause = failure.source();
        while let Some(error) = cause {
            chain.push(error.to_string());
            cause = error.source();
        }
        let printed = chain.join(": ");
        assert_eq!(
            printed,
            "the handler refused the write (500 Internal Server Error): the payment gateway timed out"
        );
    }
}
