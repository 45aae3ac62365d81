//! Every row of the HTTP semantics over real HTTP, on a SQLite file.

type Db = sqlx::Sqlite;

#[path = "http/suite.rs"]
mod sqlite;
