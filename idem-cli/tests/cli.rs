//! `idem` end to end: the binary against a real SQLite file, and against PostgreSQL and MariaDB
//! when `DATABASE_URL` and `MYSQL_URL` name them at build time (build.rs), each in a database of
//! its own. What the command says is checked against what the tables hold, counted with SQL.

use std::process::{Command, Output, Stdio};

use idem_runtime::{
    Fingerprint, HandlerError, IdempotencyKey, IdempotencyStore, OutboxDispatcher, StoreConfig,
    StoredResponse, TenantId, WriteRequest, operation,
};
use serde_json::Value;
use sqlx::{Any, AnyPool};

operation! {
    /// A payment, written as a job would, with a receipt for after the commit.
    financial CreatePayment = "createPayment";
}

/// Runs `idem` on `url` with `args`; its output.
fn idem(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(args)
        .env("DATABASE_URL", url)
        .stdin(Stdio::null())
        .output()
        .expect("run idem")
}

/// `idem --json …`: its exit code and its JSON.
fn idem_json(url: &str, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let output = idem(url, &all);
    let json = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "idem {args:?}: {error}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.code().expect("an exit code"), json)
}

async fn count(pool: &AnyPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

async fn pay(store: &IdempotencyStore<Any>, tenant: &str, key: &str) {
    let (tenant, key) = (
        TenantId::new(tenant).unwrap(),
        IdempotencyKey::parse(key).unwrap(),
    );
    let request = WriteRequest::new(&tenant, &key, Fingerprint::of_job("createPayment", b"100"));
    store
        .execute(CreatePayment, request, |write| {
            Box::pin(async move {
                write.record_event("receipt", b"{}").await?;
                Ok::<_, sqlx::Error>(
                    StoredResponse::new(201, r#"{"amount_cents":100}"#)
                        .with_header("content-type", "application/json"),
                )
            })
        })
        .await
        .expect("the write");
}

/// Every command on one database, from an unmigrated one on.
async fn every_command(url: &str, owner_disables_triggers: &[&'static str]) {
    let (code, json) = idem_json(url, &["migrate", "--check"]);
    assert_eq!(code, 1, "{json}");
    assert!(!json["missing_migrations"].as_array().unwrap().is_empty());
    let (code, json) = idem_json(url, &["migrate"]);
    assert_eq!(
        (code, json["applied_migrations"].as_array().unwrap().len()),
        (0, 13)
    );
    assert_eq!(idem_json(url, &["migrate", "--check"]).0, 0);

    let store = IdempotencyStore::<Any>::connect(url, StoreConfig::default())
        .await
        .unwrap();
    let pool = store.pool().clone();
    for key in ["k-1", "k-2", "k-1"] {
        pay(&store, "acme", key).await;
    }
    pay(&store, "globex", "k-1").await;
    store.flush_audit().await;

    // keys show: the stored answer, and exit 1 for a key that is not there.
    let (code, json) = idem_json(
        url,
        &[
            "keys",
            "show",
            "--tenant",
            "acme",
            "--operation",
            "createPayment",
            "k-1",
        ],
    );
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["answer_status"], 201);
    assert_eq!(json["answer_body"], r#"{"amount_cents":100}"#);
    assert!(
        json["state"].as_str().unwrap().starts_with("committed"),
        "{json}"
    );
    assert!(json["fingerprint"].as_str().unwrap().len() >= 64, "{json}");
    let (code, _) = idem_json(
        url,
        &[
            "keys",
            "show",
            "--tenant",
            "acme",
            "--operation",
            "createPayment",
            "k-9",
        ],
    );
    assert_eq!(code, 1);

    // The outbox: a receipt handler that fails parks the events; requeue makes them due.
    let failing = OutboxDispatcher::new(store.clone())
        .on("receipt", |_| async {
            Err(HandlerError::from("the mail server refused"))
        })
        .with_max_attempts(1);
    let pass = failing.dispatch_pending().await.unwrap();
    assert_eq!(pass.parked, 3, "{pass:?}");
    let (_, status) = idem_json(url, &["outbox", "status"]);
    assert_eq!(
        (status["pending"].as_u64(), status["parked"].as_u64()),
        (Some(0), Some(3))
    );
    let (_, parked) = idem_json(url, &["outbox", "list", "--parked"]);
    let parked = parked["rows"].as_array().unwrap().clone();
    assert_eq!(parked.len(), 3);
    assert!(
        parked[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("mail server")
    );
    let one = parked[0]["event"].as_str().unwrap();
    let (code, _) = idem_json(url, &["outbox", "requeue", one]);
    assert_eq!(code, 0);
    let (code, _) = idem_json(url, &["outbox", "requeue", one]);
    assert_eq!(code, 1, "no longer parked");
    let (code, _) = idem_json(
        url,
        &[
            "outbox",
            "requeue",
            "--parked",
            "--operation",
            "createPayment",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM idem_outbox WHERE parked_at_ms IS NULL AND attempts = 0"
        )
        .await,
        3,
        "every event due again, with a fresh count"
    );
    let (_, pending) = idem_json(url, &["outbox", "list"]);
    assert_eq!(pending["rows"].as_array().unwrap().len(), 3);

    // audit export: one tenant's rows, every one, in both formats.
    let acme_rows = count(
        &pool,
        "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE company_id = 'acme'",
    )
    .await;
    assert_eq!(acme_rows, 3, "two new writes and a replay");
    let jsonl = idem(
        url,
        &["audit", "export", "--tenant", "acme", "--format", "jsonl"],
    );
    assert!(jsonl.status.success());
    let lines: Vec<Value> = String::from_utf8(jsonl.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|row| row["company_id"] == "acme"));
    assert_eq!(lines[2]["outcome"], "replayed");
    let csv = idem(
        url,
        &["audit", "export", "--tenant", "acme", "--format", "csv"],
    );
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(csv.lines().count(), 4, "a header and three rows:\n{csv}");
    assert!(csv.starts_with("seq,id,operation,"));
    let (code, _) = idem_json(
        url,
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--since",
            "2999-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 0);

    // Maintenance, a dry run and a real one, then the seals verified and broken.
    let audit_rows = count(&pool, "SELECT COUNT(*) FROM idempotent_write_audit_log").await;
    let (code, dry) = idem_json(
        url,
        &["maintenance", "run", "--dry-run", "--audit-retention", "0s"],
    );
    assert_eq!(
        (code, dry["audit_rows_past_retention"].as_i64()),
        (0, Some(audit_rows))
    );
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM idempotent_write_audit_log").await,
        audit_rows
    );
    let (code, run) = idem_json(url, &["maintenance", "run", "--seal-delay", "0s"]);
    assert_eq!(
        (code, run["sealed_audit_rows"].as_i64()),
        (0, Some(audit_rows)),
        "{run}"
    );
    let (code, verified) = idem_json(url, &["audit", "verify"]);
    assert_eq!(code, 0, "{verified}");
    assert_eq!(verified["verified_rows"].as_i64(), Some(audit_rows));
    assert_eq!(verified["latest_digest"].as_str().unwrap().len(), 64);
    for statement in owner_disables_triggers {
        sqlx::raw_sql(*statement).execute(&pool).await.unwrap();
    }
    sqlx::raw_sql("UPDATE idempotent_write_audit_log SET duration_ms = duration_ms + 1 WHERE company_id = 'globex'")
        .execute(&pool)
        .await
        .unwrap();
    let (code, broken) = idem_json(url, &["audit", "verify"]);
    assert_eq!(
        (code, broken["broken_seal"].as_i64()),
        (1, Some(1)),
        "{broken}"
    );
    assert!(
        broken["finding"].as_str().unwrap().contains("was changed"),
        "{broken}"
    );
}

#[tokio::test]
async fn every_command_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    every_command(
        &url,
        &[
            "DROP TRIGGER idempotent_write_audit_log_no_update",
            "DROP TRIGGER idempotent_write_audit_log_no_delete",
        ],
    )
    .await;
}

/// A database of its own on the server `admin_url` names; its URL.
#[cfg(any(postgres_suite, mysql_suite))]
async fn fresh_database(admin_url: &str, prefix: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("{prefix}_{}", std::process::id());
    let admin = AnyPool::connect(admin_url)
        .await
        .expect("the server is reachable");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&admin)
    .await
    .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let mut url = url::Url::parse(admin_url).unwrap();
    url.set_path(&name);
    url.to_string()
}

#[cfg(postgres_suite)]
#[tokio::test]
async fn every_command_on_postgres() {
    let url = fresh_database(env!("DATABASE_URL"), "idem_cli").await;
    every_command(
        &url,
        &["ALTER TABLE idempotent_write_audit_log DISABLE TRIGGER USER"],
    )
    .await;
}

#[cfg(mysql_suite)]
#[tokio::test]
async fn every_command_on_mysql() {
    let url = fresh_database(env!("MYSQL_URL"), "idem_cli").await;
    every_command(
        &url,
        &[
            "DROP TRIGGER idempotent_write_audit_log_no_update",
            "DROP TRIGGER idempotent_write_audit_log_no_delete",
        ],
    )
    .await;
    drop_database(env!("MYSQL_URL"), &url, "").await;
}

/// Drops the database `url` names, through the server `admin_url` names.
#[cfg(any(postgres_suite, mysql_suite))]
async fn drop_database(admin_url: &str, url: &str, options: &str) {
    let name = url::Url::parse(url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let admin = AnyPool::connect(admin_url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name}{options}"
    )))
    .execute(&admin)
    .await
    .unwrap();
}

/// An export streams: 100 000 rows (60 MB of JSON lines) leave the process within 32 MB of
/// peak resident memory, read from /proc while it runs.
#[tokio::test]
async fn an_export_streams_at_constant_memory() {
    const ROWS: i64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("idem.db").display());
    assert_eq!(idem_json(&url, &["migrate"]).0, 0);
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
         INSERT INTO idempotent_write_audit_log
             (id, operation, class, company_id, user_id, key_hash, entity_id, fingerprint,
              outcome, status, attempts, duration_ms, request_id, created_at_ms)
         SELECT 'row-' || i, 'createPayment', 'financial', 'acme', 'user-1',
             printf('%064d', i), printf('%036d', i), printf('%064d', i), 'new', 201, 1, 1.5,
             'request-' || i, 1700000000000 + i
         FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let (peak, lines) = peak_memory_of_export(&url);
    assert_eq!(lines, ROWS);
    // The process alone takes about 10 MB; the rows as JSON are 60 MB.
    assert!(
        (1..32 * 1024).contains(&peak),
        "{ROWS} rows exported at a peak of {peak} kB: the export holds what it sends"
    );
}

/// The peak resident set (kB) of an export of every row, and the lines it wrote.
fn peak_memory_of_export(url: &str) -> (u64, i64) {
    use std::io::BufRead as _;

    let mut child = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["audit", "export", "--tenant", "acme"])
        .env("DATABASE_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::BufReader::new(stdout).lines().count());
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        let high_water = std::fs::read_to_string(&status).ok().and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
        peak = peak.max(high_water.unwrap_or(0));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let lines = reader.join().unwrap();
    (peak, i64::try_from(lines).unwrap())
}

/// Without a database the command says what to do (exit 2); with one it cannot reach, it says
/// why (exit 3).
#[test]
fn no_database_and_an_unreachable_one_are_told_apart() {
    let output = Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(["outbox", "status"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
    let output = idem("postgres://nobody@127.0.0.1:1/none", &["outbox", "status"]);
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).starts_with("idem: "));
}
