//! Money is integer cents with an ISO 4217 currency code; nothing else is accepted.

use crate::accubooks::error::ApiError;

/// Checks a currency code: three upper-case ASCII letters (`EUR`, `USD`).
pub fn currency(code: &str) -> Result<&str, ApiError> {
    if code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(ApiError::invalid(format!(
            "currency {code:?} is not an ISO 4217 code such as \"EUR\""
        )))
    }
}

/// Checks that an amount of cents is above zero.
pub fn positive(what: &str, cents: i64) -> Result<i64, ApiError> {
    if cents > 0 {
        Ok(cents)
    } else {
        Err(ApiError::invalid(format!(
            "{what} must be a positive number of cents"
        )))
    }
}
