//! Compiles the PostgreSQL suite exactly when `DATABASE_URL` names a PostgreSQL server.
//!
//! Without it the suite is not built at all (rather than built and skipped), and the build says
//! so; with it every PostgreSQL test connects for real and fails if the server is unreachable.

fn main() {
    println!("cargo::rerun-if-env-changed=DATABASE_URL");
    println!("cargo::rustc-check-cfg=cfg(postgres_suite)");
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            println!("cargo::rustc-cfg=postgres_suite");
        }
        Ok(url) => println!(
            "cargo::warning=DATABASE_URL is set but is not a postgres:// URL ({url}): the PostgreSQL suite was NOT built; only the SQLite suite runs"
        ),
        Err(_) => println!(
            "cargo::warning=DATABASE_URL is not set: the PostgreSQL suite was NOT built; only the SQLite suite runs (see README.md)"
        ),
    }
}
