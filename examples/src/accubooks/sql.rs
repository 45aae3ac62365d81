//! AccuBooks' statements, written once for the three databases it serves from.
//!
//! sqlx's `Any` driver hands a statement's text to the database as it is, and the databases do
//! not write parameters alike: PostgreSQL and SQLite take `$1, $2, …`, MySQL and MariaDB `?`,
//! bound in the order they appear. So a statement is written with `$1, $2, …` numbered in the
//! order its values are bound, each once (`sql!`), and MySQL gets each `$n` as `?`. The few
//! statements MySQL says in other words (an upsert) carry MySQL's text too.

use std::sync::OnceLock;

use sqlx::{AnyConnection, AnyPool, Database, MySql};

/// One statement of AccuBooks; [`sql!`] makes one.
pub(crate) struct Sql {
    /// With `$1, $2, …` in bind order: PostgreSQL's and SQLite's text.
    numbered: &'static str,
    /// MySQL's own text, where it is not `numbered` with `?`.
    mysql: Option<&'static str>,
    /// `numbered` with `?`, made on first use on MySQL.
    positional: OnceLock<String>,
}

impl Sql {
    pub(crate) const fn new(numbered: &'static str, mysql: Option<&'static str>) -> Self {
        Self {
            numbered,
            mysql,
            positional: OnceLock::new(),
        }
    }

    /// The text for the database `conn` reaches.
    pub(crate) fn on(&'static self, conn: &AnyConnection) -> &'static str {
        self.text(conn.backend_name() == MySql::NAME)
    }

    /// The text for the database `pool` reaches.
    pub(crate) fn on_pool(&'static self, pool: &AnyPool) -> &'static str {
        let options = pool.connect_options();
        let scheme = options.database_url.scheme();
        self.text(scheme == "mysql" || scheme == "mariadb")
    }

    fn text(&'static self, mysql: bool) -> &'static str {
        match (mysql, self.mysql) {
            (false, _) => self.numbered,
            (true, Some(own)) => own,
            (true, None) => self.positional.get_or_init(|| positional(self.numbered)),
        }
    }
}

/// `numbered` with each `$n` as `?`, for MySQL.
///
/// # Panics
///
/// When the parameters are not `$1, $2, …` in order, each once: `?` binds by position, so any
/// other numbering would bind the wrong values. Every statement of AccuBooks runs in the MySQL
/// test suite.
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

/// A `&'static` [`Sql`] from `$n`-numbered text (and MySQL's own, after `mysql:`):
/// `sqlx::query(sql!("… $1 …").on(conn))`.
macro_rules! sql {
    ($numbered:literal) => {{
        static SQL: $crate::accubooks::sql::Sql = $crate::accubooks::sql::Sql::new($numbered, None);
        &SQL
    }};
    ($numbered:literal, mysql: $mysql:literal) => {{
        static SQL: $crate::accubooks::sql::Sql =
            $crate::accubooks::sql::Sql::new($numbered, Some($mysql));
        &SQL
    }};
}

pub(crate) use sql;

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
}
