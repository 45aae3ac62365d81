//! One AccuBooks process on a free port, and the requests the suites send it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use awc::Client;
use serde_json::{Value, json};
use sqlx::AnyPool;

/// One running AccuBooks process.
pub struct Process {
    pub child: Child,
    pub base: String,
    /// What the process printed (its log), for the messages of failed assertions.
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts AccuBooks on `database_url` on a free port and waits until it listens.
    pub fn start(database_url: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(idem_tests::example_binary("accubooks"))
            .args(["--bind", "127.0.0.1:0", "--database-url", database_url])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start AccuBooks");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("AccuBooks printed its address before exiting")
                .expect("readable stdout");
            if let Some(address) = line.strip_prefix("listening on ") {
                break address.trim().to_owned();
            }
        };
        // Keep draining stdout (so the process never blocks on a full pipe) into the test's
        // output, which the harness shows when the test fails.
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines_seen = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                lines_seen.lock().unwrap().push(line);
            }
        });
        Self { child, base, log }
    }

    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name}");
    }

    /// What the process has printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits for the exit, at most `bound`: the status and how long it took.
    pub async fn exit_within(&mut self, bound: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for AccuBooks") {
                return (status, started.elapsed());
            }
            if started.elapsed() > bound {
                let _ = self.child.kill();
                panic!("AccuBooks did not exit within {bound:?}");
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A test that fails before AccuBooks exits does not leave it running (holding the test's
/// output open, and its database).
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one request got: its status, whether it was a replay, its body; `None` when the
/// connection was refused or cut (the server was shutting down).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub replayed: bool,
    /// Whether it said when to retry (`Retry-After`): read by the PostgreSQL crash test.
    #[cfg_attr(not(postgres_suite), allow(dead_code))]
    pub retry_after: bool,
    pub body: Value,
    /// The body's bytes, as sent: a replay's are the first answer's. Read by the failover test.
    #[cfg_attr(not(postgres_suite), allow(dead_code))]
    pub bytes: Bytes,
}

pub async fn send(
    client: &Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    key: Option<&str>,
    request_id: &str,
    body: Value,
) -> Option<Answer> {
    let mut request = client
        .post(format!("{base}{path}"))
        .insert_header(("x-request-id", request_id));
    if let Some(token) = token {
        request = request.insert_header(("authorization", format!("Bearer {token}")));
    }
    if let Some(key) = key {
        request = request.insert_header(("idempotency-key", key));
    }
    let mut response = request.send_json(&body).await.ok()?;
    let bytes = response.body().await.ok()?;
    Some(Answer {
        status: response.status().as_u16(),
        replayed: response.headers().contains_key("idempotent-replayed"),
        retry_after: response.headers().contains_key("retry-after"),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes,
    })
}

/// Asks to create the customer named `key`, under the idempotency key `key` (the request id
/// too), as a client that retries one key until it is answered does.
#[cfg(postgres_suite)]
pub async fn create_customer(
    client: &Client,
    base: &str,
    token: &str,
    key: &str,
) -> Option<Answer> {
    send(
        client,
        base,
        "/api/customers",
        Some(token),
        Some(key),
        key,
        json!({ "name": key }),
    )
    .await
}

pub fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(30)).finish()
}

pub async fn create_company(base: &str) -> String {
    let company = send(
        &client(),
        base,
        "/api/companies",
        None,
        None,
        "company",
        json!({ "name": "Acme" }),
    )
    .await
    .expect("the company is created");
    assert_eq!(company.status, 201, "{company:?}");
    company.body["token"].as_str().expect("a token").to_owned()
}

pub async fn count(pool: &AnyPool, sql: &'static str, arg: Option<&str>) -> i64 {
    let text = if pool.connect_options().database_url.scheme() == "mysql" {
        idem_tests::positional(sql)
    } else {
        sql.to_owned()
    };
    let query = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(text));
    let query = match arg {
        Some(arg) => query.bind(arg.to_owned()),
        None => query,
    };
    query
        .fetch_one(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}
