//! The command's own statements, written once with `$1, $2, …` and sent as the connection's
//! database reads them.

use std::borrow::Cow;

use idem_runtime::positional;
use sqlx::AnyPool;

/// `numbered` as the pool's database reads it: on MySQL and MariaDB `?` parameters, and
/// `SIGNED` for a `CAST`'s `BIGINT`.
pub(crate) fn text(
    pool: &AnyPool,
    numbered: &'static str,
) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
    let options = pool.connect_options();
    let scheme = options.database_url.scheme();
    sqlx::AssertSqlSafe(if scheme == "mysql" || scheme == "mariadb" {
        Cow::Owned(positional(numbered).replace(" AS BIGINT)", " AS SIGNED)"))
    } else {
        Cow::Borrowed(numbered)
    })
}
