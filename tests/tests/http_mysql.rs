//! Every row of the HTTP semantics over real HTTP, on MySQL or MariaDB (built with `MYSQL_URL`).
#![cfg(mysql_suite)]

type Db = sqlx::MySql;

#[path = "http/suite.rs"]
mod mysql;
