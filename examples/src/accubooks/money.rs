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

/// The largest amount AccuBooks takes in one field: 10^13 cents (a hundred billion units of a
/// currency). The schema's CHECK constraints hold the same bound.
pub const MAX_CENTS: i64 = 10_000_000_000_000;

/// The largest quantity of one invoice line or one stock adjustment: 10^9.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

/// The largest stock of one inventory item: 10^15.
pub const MAX_STOCK: i64 = 1_000_000_000_000_000;

/// Checks that an amount of cents is above zero and at most [`MAX_CENTS`].
pub fn positive(what: &str, cents: i64) -> Result<i64, ApiError> {
    if (1..=MAX_CENTS).contains(&cents) {
        Ok(cents)
    } else {
        Err(ApiError::invalid(format!(
            "{what} must be a positive number of cents, at most {MAX_CENTS}"
        )))
    }
}

/// Checks that an amount of cents is not zero and at most [`MAX_CENTS`] either way.
pub fn non_zero(what: &str, cents: i64) -> Result<i64, ApiError> {
    if cents != 0 && (-MAX_CENTS..=MAX_CENTS).contains(&cents) {
        Ok(cents)
    } else {
        Err(ApiError::invalid(format!(
            "{what} must be a non-zero number of cents between -{MAX_CENTS} and {MAX_CENTS}"
        )))
    }
}

/// `a + b`, or a refusal naming `what` when the sum does not fit in 64 bits.
pub fn add(what: &str, a: i64, b: i64) -> Result<i64, ApiError> {
    a.checked_add(b).ok_or_else(|| too_large(what))
}

/// `a × b`, or a refusal naming `what` when the product does not fit in 64 bits.
pub fn multiply(what: &str, a: i64, b: i64) -> Result<i64, ApiError> {
    a.checked_mul(b).ok_or_else(|| too_large(what))
}

fn too_large(what: &str) -> ApiError {
    ApiError::invalid(format!(
        "{what} would be larger than AccuBooks can hold ({} cents): split the request",
        i64::MAX
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_bounded_and_arithmetic_is_checked() {
        assert!(positive("amount_cents", MAX_CENTS).is_ok());
        assert!(positive("amount_cents", MAX_CENTS + 1).is_err());
        assert!(positive("amount_cents", 0).is_err());
        assert!(non_zero("amount_cents", -MAX_CENTS).is_ok());
        assert!(non_zero("amount_cents", i64::MIN).is_err());
        assert_eq!(add("total_cents", 2, 3).unwrap(), 5);
        let overflow = add("total_cents", i64::MAX, 1).unwrap_err().to_string();
        assert!(overflow.contains("total_cents"), "{overflow}");
        assert!(multiply("lines[0].amount_cents", i64::MAX, 2).is_err());
    }
}
