use idem_actix::WriteContext;
use sqlx::Sqlite;

/// A write context is handed out by the protocol after the key is claimed, never built.
fn forge(tx: sqlx::Transaction<'static, Sqlite>) -> WriteContext<'static, Sqlite> {
    WriteContext { tx }
}

fn main() {}
