//! AccuBooks' statements, written once for the three databases it serves from.
//!
//! sqlx's `Any` driver hands a statement's text to the database as it is, and the databases do
//! not write parameters alike: PostgreSQL and SQLite take `$1, $2, …`, MySQL and MariaDB `?`,
//! bound in the order they appear. So a statement is written with `$1, $2, …` numbered in the
//! order its values are bound, each once (`sql!`), and MySQL gets each `$n` as `?`. The few
//! statements MySQL says in other words (an upsert) carry MySQL's text too.

use std::sync::OnceLock;

use idem_actix::positional;
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
