//! Compiles the PostgreSQL case of the command's tests exactly when `DATABASE_URL` names a PostgreSQL server, and the
//! MySQL case of the command's tests exactly when `MYSQL_URL` names a MySQL or MariaDB server.
//!
//! Without it the suite is not built at all (rather than built and skipped), and the build says
//! so; with it every PostgreSQL test connects for real and fails if the server is unreachable.

fn main() {
    println!("cargo::rerun-if-env-changed=DATABASE_URL");
    println!("cargo::rerun-if-env-changed=MYSQL_URL");
    println!("cargo::rustc-check-cfg=cfg(postgres_suite)");
    println!("cargo::rustc-check-cfg=cfg(mysql_suite)");
    match std::env::var("MYSQL_URL") {
        Ok(url) if url.starts_with("mysql://") || url.starts_with("mariadb://") => {
            println!("cargo::rustc-cfg=mysql_suite");
        }
        Ok(url) => println!(
            "cargo::warning=MYSQL_URL is set but is not a mysql:// URL ({url}): the MySQL case of the command's tests was NOT built"
        ),
        Err(_) => println!(
            "cargo::warning=MYSQL_URL is not set: the MySQL case of the command's tests was NOT built (see docs/testing.md)"
        ),
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            println!("cargo::rustc-cfg=postgres_suite");
        }
        Ok(url) => println!(
            "cargo::warning=DATABASE_URL is set but is not a postgres:// URL ({url}): the PostgreSQL case of the command's tests was NOT built; only the SQLite suite runs"
        ),
        Err(_) => println!(
            "cargo::warning=DATABASE_URL is not set: the PostgreSQL case of the command's tests was NOT built; only the SQLite suite runs (see docs/testing.md)"
        ),
    }
}
