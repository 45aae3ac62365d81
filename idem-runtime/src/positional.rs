//! Statements written once for every database: `$1`, `$2`, … as MySQL's `?`.

/// `numbered` with each `$n` as `?`, for MySQL, which binds parameters by position. A statement
/// that an application sends on [`Any`](sqlx::Any) (or to both PostgreSQL and MySQL) is then
/// written once, with `$1, $2, …` in the order its values are bound.
///
/// # Panics
///
/// When the parameters are not `$1, $2, …` in order, each once: `?` binds by position, so any
/// other numbering would bind the wrong values. Run each statement once on MySQL in a test.
///
/// ```
/// assert_eq!(
///     idem_runtime::positional("UPDATE invoices SET status = $1 WHERE id = $2"),
///     "UPDATE invoices SET status = ? WHERE id = ?"
/// );
/// ```
pub fn positional(numbered: &str) -> String {
    let mut text = String::with_capacity(numbered.len());
    let mut chars = numbered.chars().peekable();
    let mut expected = 1;
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            let mut number = String::new();
            while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                number.push(digit);
            }
            assert!(
                number.parse::<usize>().ok() == Some(expected),
                "${number} where ${expected} was due in {numbered:?}: number the parameters in \
                 the order they are bound, each once, so that MySQL's `?` binds the same values"
            );
            expected += 1;
            text.push('?');
        } else {
            text.push(c);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::positional;

    #[test]
    fn numbered_parameters_become_positional_ones() {
        assert_eq!(
            positional(
                "UPDATE t SET a = $1, b = $2 WHERE id = $3 AND x IN ($4, $5, $6, $7, $8, $9, $10)"
            ),
            "UPDATE t SET a = ?, b = ? WHERE id = ? AND x IN (?, ?, ?, ?, ?, ?, ?)"
        );
        assert_eq!(positional("SELECT 1"), "SELECT 1");
    }

    #[test]
    #[should_panic(expected = "$2 where $1 was due")]
    fn parameters_out_of_bind_order_are_refused() {
        positional("SELECT $2, $1");
    }

    #[test]
    #[should_panic(expected = "$1 where $2 was due")]
    fn a_parameter_used_twice_is_refused() {
        positional("SELECT $1 + $1");
    }

    #[test]
    fn a_dollar_without_a_digit_stays() {
        assert_eq!(positional("SELECT '$x', $1"), "SELECT '$x', ?");
    }
}
