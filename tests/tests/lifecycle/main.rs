//! The AccuBooks binary as an operator runs it: a real process, real signals, a real database.
//! A SIGTERM in the middle of a burst of new writes, replays and refusals ends the process with
//! exit code 0 within its bound; every answered request has its audit row, no write is half
//! done, and after a restart every retry replays. A second signal during the drain ends the
//! process at once, still without a half write.

#[cfg(postgres_suite)]
mod failover;
mod process;

use std::process::Command;
use std::time::Duration;

use awc::Client;
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use sqlx::AnyPool;

use idem_tests::example_binary;
use process::{Answer, Process, client, count, create_company, send};

/// Every customer row has its committed key and its `new` audit row, and nothing else: no
/// write is half done.
async fn assert_no_half_write(pool: &AnyPool) -> i64 {
    let customers = count(pool, "SELECT COUNT(*) FROM customers", None).await;
    let keys = count(
        pool,
        "SELECT COUNT(*) FROM idempotency_keys WHERE operation = 'createCustomer' AND response_status IS NOT NULL",
        None,
    )
    .await;
    let audited = count(
        pool,
        "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE operation = 'createCustomer' AND outcome = 'new'",
        None,
    )
    .await;
    assert_eq!(
        (customers, keys),
        (audited, audited),
        "customers, keys and new audit rows agree"
    );
    customers
}

const NEW_WRITES: usize = 150;

/// SIGTERM while a burst of new writes, replays and refusals is in flight.
async fn sigterm_mid_burst_loses_nothing(url: String) {
    let mut process = Process::start(&url, &["--shutdown-timeout", "20"]);
    let token = create_company(&process.base).await;
    let client = client();
    // Ten writes first, so that replays and refusals of them can run in the burst.
    for n in 0..10 {
        let first = send(
            &client,
            &process.base,
            "/api/customers",
            Some(&token),
            Some(&format!("c-{n}")),
            &format!("first-{n}"),
            json!({ "name": format!("Customer {n}") }),
        )
        .await;
        assert_eq!(first.map(|answer| answer.status), Some(201));
    }
    let mut burst = Vec::new();
    for n in 10..NEW_WRITES {
        burst.push((
            format!("c-{n}"),
            format!("new-{n}"),
            json!({ "name": format!("Customer {n}") }),
        ));
    }
    for n in 0..10 {
        burst.push((
            format!("c-{n}"),
            format!("replay-{n}"),
            json!({ "name": format!("Customer {n}") }),
        ));
        burst.push((
            format!("c-{n}"),
            format!("reuse-{n}"),
            json!({ "name": "Someone else" }),
        ));
    }
    let requests = burst.iter().map(|(key, request_id, body)| {
        send(
            &client,
            &process.base,
            "/api/customers",
            Some(&token),
            Some(key),
            request_id,
            body.clone(),
        )
    });
    let answers = join_all(requests);
    let sigterm = async {
        actix_web::rt::time::sleep(Duration::from_millis(30)).await;
        process.signal("TERM");
    };
    let (answers, ()) = tokio::join!(answers, sigterm);
    let (status, took) = process.exit_within(Duration::from_secs(25)).await;
    assert_eq!(status.code(), Some(0), "a graceful shutdown exits 0");
    assert!(took < Duration::from_secs(20), "within the bound: {took:?}");

    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.expect("open the database");
    let mut answered = 0;
    for ((key, request_id, _), answer) in burst.iter().zip(&answers) {
        let Some(answer) = answer else { continue };
        answered += 1;
        let expected = if request_id.starts_with("new") {
            201
        } else if request_id.starts_with("replay") {
            200
        } else {
            422
        };
        assert_eq!(answer.status, expected, "{request_id}: {answer:?}");
        assert_eq!(answer.replayed, expected == 200, "{request_id}");
        assert_eq!(
            count(
                &pool,
                "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE request_id = $1",
                Some(request_id)
            )
            .await,
            1,
            "{request_id} ({key}) was answered, so its audit row is written"
        );
        if expected == 201 {
            let id = answer.body["id"].as_str().expect("the new customer's id");
            assert_eq!(
                count(
                    &pool,
                    "SELECT COUNT(*) FROM customers WHERE id = $1",
                    Some(id)
                )
                .await,
                1
            );
        }
    }
    assert!(
        answered > 0,
        "some requests of the burst were answered before the signal"
    );
    let before_restart = assert_no_half_write(&pool).await;

    // Restarted, every key is retried: what committed replays, the rest writes once.
    let mut process = Process::start(&url, &[]);
    for n in 0..NEW_WRITES {
        let retry = send(
            &client,
            &process.base,
            "/api/customers",
            Some(&token),
            Some(&format!("c-{n}")),
            &format!("retry-{n}"),
            json!({ "name": format!("Customer {n}") }),
        )
        .await
        .expect("the restarted server answers");
        let first = answers
            .iter()
            .zip(&burst)
            .find(|(_, (key, id, _))| *key == format!("c-{n}") && id.starts_with("new"));
        match first {
            Some((Some(answer), _)) => {
                assert_eq!(
                    (retry.status, retry.replayed),
                    (200, true),
                    "c-{n} committed before the signal"
                );
                assert_eq!(retry.body, answer.body, "the replay is the first answer");
            }
            _ if n < 10 => assert_eq!((retry.status, retry.replayed), (200, true)),
            _ => assert!(matches!(retry.status, 200 | 201), "c-{n}: {retry:?}"),
        }
    }
    process.signal("TERM");
    let (status, _) = process.exit_within(Duration::from_secs(25)).await;
    assert_eq!(status.code(), Some(0));
    let customers = assert_no_half_write(&pool).await;
    assert_eq!(
        customers,
        i64::try_from(NEW_WRITES).unwrap(),
        "one customer per key, never two"
    );
    assert!(customers >= before_restart);
}

/// One new write, its replay, and SIGTERM at once, while the database holds the replay's
/// audit row back for a moment: the row, queued after its answer, is written before the
/// process exits. (Its writer once ran on the request's worker, which the shutdown stopped:
/// the row was lost and the process never exited.)
async fn a_replay_just_before_sigterm_keeps_its_audit_row(url: String) {
    let mut process = Process::start(&url, &["--shutdown-timeout", "20"]);
    let token = create_company(&process.base).await;
    let client = client();
    let body = json!({ "name": "Globex" });
    let new = send(
        &client,
        &process.base,
        "/api/customers",
        Some(&token),
        Some("k-1"),
        "new",
        body.clone(),
    )
    .await;
    assert_eq!(new.map(|answer| answer.status), Some(201));

    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.expect("open the database");
    let mut holder = pool.acquire().await.unwrap();
    // The audit table held against writers, in each database's words.
    let (hold, release) = if url.starts_with("sqlite:") {
        ("BEGIN IMMEDIATE", "COMMIT")
    } else if url.starts_with("mysql:") {
        (
            "LOCK TABLES idempotent_write_audit_log READ",
            "UNLOCK TABLES",
        )
    } else {
        (
            "BEGIN; LOCK TABLE idempotent_write_audit_log IN SHARE MODE",
            "COMMIT",
        )
    };
    sqlx::raw_sql(hold).execute(&mut *holder).await.unwrap();
    let replay = send(
        &client,
        &process.base,
        "/api/customers",
        Some(&token),
        Some("k-1"),
        "replay",
        body,
    )
    .await;
    assert_eq!(
        replay.map(|answer| (answer.status, answer.replayed)),
        Some((200, true))
    );
    process.signal("TERM");
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    sqlx::raw_sql(release).execute(&mut *holder).await.unwrap();
    drop(holder);

    let (status, took) = process.exit_within(Duration::from_secs(25)).await;
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(
        count(&pool, "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE request_id = 'replay' AND outcome = 'replayed'", None).await,
        1,
        "the replay's audit row; the process logged:\n{}",
        process.log()
    );
}

/// During the drain `/readyz` answers 503 and `/healthz` 200; a second signal ends the process
/// at once, long before the drain delay.
async fn a_second_signal_ends_the_drain_at_once(url: String) {
    let mut process = Process::start(&url, &["--drain-delay", "60", "--shutdown-timeout", "90"]);
    let token = create_company(&process.base).await;
    let client = client();
    let ready = client
        .get(format!("{}/readyz", process.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    process.signal("TERM");
    let draining = async {
        loop {
            let response = client
                .get(format!("{}/readyz", process.base))
                .send()
                .await
                .unwrap();
            if response.status().as_u16() == 503 {
                break response;
            }
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let response = actix_web::rt::time::timeout(Duration::from_secs(10), draining)
        .await
        .expect("/readyz turns 503 while draining");
    assert_eq!(
        response.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let alive = client
        .get(format!("{}/healthz", process.base))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status().as_u16(), 200, "alive while draining");
    // Still serving while the load balancer notices.
    let write = send(
        &client,
        &process.base,
        "/api/customers",
        Some(&token),
        Some("drain-1"),
        "drain-1",
        json!({ "name": "Late" }),
    )
    .await;
    assert_eq!(write.map(|answer| answer.status), Some(201));

    process.signal("INT");
    let (status, took) = process.exit_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "a forced shutdown says so");
    assert!(
        took < Duration::from_secs(5),
        "at once, not after the 60 s drain: {took:?}"
    );
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.expect("open the database");
    assert_eq!(assert_no_half_write(&pool).await, 1);
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE request_id = 'drain-1'",
            None
        )
        .await,
        1
    );
}

/// `--shutdown-timeout` bounds the whole stop, drain delay included: a request whose body never
/// finishes arriving is cut when the bound passes, and the process exits then, not a drain
/// delay plus a shutdown timeout later.
async fn the_shutdown_timeout_bounds_the_whole_stop(url: String) {
    use std::io::Write as _;

    // Drain 4 s within a 5 s bound: the whole stop takes 5 s, where drain + timeout took 9 s.
    let mut process = Process::start(&url, &["--drain-delay", "4", "--shutdown-timeout", "5"]);
    let token = create_company(&process.base).await;
    let address = process.base.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&address).expect("connect");
    write!(
        stalled,
        "POST /api/customers HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Idempotency-Key: stalled-1\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n\r\n{{\"name\": \""
    )
    .expect("send the start of a request");
    stalled.flush().unwrap();
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;

    process.signal("TERM");
    let (status, took) = process.exit_within(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", process.log());
    assert!(
        took < Duration::from_millis(7500),
        "the 5 s bound holds for the whole stop, drain included: {took:?}\n{}",
        process.log()
    );
    assert!(
        took >= Duration::from_secs(4),
        "the drain delay is served first: {took:?}"
    );
    assert!(
        process.log().contains("the shutdown timeout passed"),
        "{}",
        process.log()
    );
    drop(stalled);
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.expect("open the database");
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM idempotency_keys WHERE idempotency_key = $1",
            Some("stalled-1")
        )
        .await,
        0,
        "the cut request wrote nothing"
    );
}

/// Sends `request` until it is not answered `409` (a twin in flight on the other process):
/// the final answer.
async fn settled(client: &Client, base: &str, token: &str, key: &str, body: Value) -> Answer {
    for _ in 0..200 {
        let answer = send(
            client,
            base,
            "/api/customers",
            Some(token),
            Some(key),
            key,
            body.clone(),
        )
        .await
        .expect("the process answers");
        if answer.status != 409 {
            return answer;
        }
        actix_web::rt::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{key}: still in flight after 200 retries");
}

/// Two AccuBooks processes, each with its own pool, on one database: correctness lives in the
/// database, not in either process's memory. Same-key bursts and the 50-tenant mix are spread
/// over both; every key writes one row, and every answer for a key is the same answer.
async fn two_processes_on_one_database_write_each_key_once(url: String) {
    let processes = [Process::start(&url, &[]), Process::start(&url, &[])];
    let bases = [processes[0].base.clone(), processes[1].base.clone()];
    let client = client();

    // A burst of one key, alternating between the processes, all at once.
    let token = create_company(&bases[0]).await;
    let burst = join_all((0..200).map(|n| {
        let (client, base, token) = (&client, &bases[n % 2], &token);
        async move { settled(client, base, token, "burst-1", json!({ "name": "Burst" })).await }
    }))
    .await;
    let ids: std::collections::HashSet<String> = burst
        .iter()
        .map(|answer| {
            assert!(matches!(answer.status, 200 | 201), "{answer:?}");
            answer.body["id"].as_str().expect("an id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one answer for one key: {ids:?}");
    assert_eq!(burst.iter().filter(|answer| !answer.replayed).count(), 1);

    // Fifty companies, each created on one process, ten keys each, every key sent to both.
    let mut tenants = Vec::new();
    for n in 0..50 {
        tenants.push(create_company(&bases[n % 2]).await);
    }
    let requests: Vec<(usize, String, String)> = tenants
        .iter()
        .flat_map(|token| {
            (0..10).flat_map(move |k| [0, 1].map(|side| (side, token.clone(), format!("mix-{k}"))))
        })
        .collect();
    let answers = futures_util::stream::iter(requests.into_iter().map(|(side, token, key)| {
        let (client, base) = (&client, &bases[side]);
        async move {
            let answer = settled(client, base, &token, &key, json!({ "name": key })).await;
            ((token, key), answer)
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    let mut by_key: std::collections::HashMap<(String, String), Vec<Answer>> = Default::default();
    for (key, answer) in answers {
        assert!(matches!(answer.status, 200 | 201), "{answer:?}");
        by_key.entry(key).or_default().push(answer);
    }
    assert_eq!(by_key.len(), 500);
    for (key, answers) in &by_key {
        assert_eq!(
            answers[0].body, answers[1].body,
            "{key:?}: both processes answer the same"
        );
        assert_eq!(
            answers.iter().filter(|answer| !answer.replayed).count(),
            1,
            "{key:?}"
        );
    }

    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.expect("open the database");
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM customers WHERE name = 'Burst'",
            None
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM customers WHERE name LIKE 'mix-%'",
            None
        )
        .await,
        500
    );
    assert_eq!(assert_no_half_write(&pool).await, 501);
    for mut process in processes {
        process.signal("TERM");
        let (status, _) = process.exit_within(Duration::from_secs(30)).await;
        assert_eq!(status.code(), Some(0), "{}", process.log());
    }
}

/// Runs `pg_ctlcluster ACTION` on the crash test's cluster: whether it succeeded.
#[cfg(postgres_suite)]
fn crash_cluster(action: &[&str]) -> bool {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("Debian's PostgreSQL")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .max()
        .expect("a PostgreSQL version");
    Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            idem_tests::TestServer::Crash.cluster(),
        ])
        .args(action)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run pg_ctlcluster")
        .success()
}

/// Starts the crash test's cluster again when the test panics while it is down.
#[cfg(postgres_suite)]
struct RestartOnPanic;

#[cfg(postgres_suite)]
impl Drop for RestartOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Fails harmlessly when the cluster is up.
            crash_cluster(&["start"]);
        }
    }
}

/// PostgreSQL crashes (`stop -m immediate`: recovery on restart) in the middle of a burst of
/// new writes and retries, and comes back seven seconds later. Every request is answered while
/// it is down (a 503 naming the outage, with `Retry-After`, within the acquire timeout and
/// a second and a half of slack: never a hang), the pool recovers without restarting
/// AccuBooks, no acknowledged write is lost, and every key writes once.
#[cfg(postgres_suite)]
async fn a_database_crash_mid_burst_loses_no_acknowledged_write() {
    // AccuBooks' tenant resolver reads the database before idem does: while it is down, most
    // requests stop there, and a write cut at its commit cannot know its outcome.
    const OUTAGE_PROBLEMS: [&str; 3] =
        ["tenant-unavailable", "store-unavailable", "outcome-unknown"];
    const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
    use idem_tests::TestServer;

    let url = idem_tests::test_server_database(TestServer::Crash).await;
    // One crash at a time on this machine, should two test runs meet.
    let turn = std::fs::File::create(idem_tests::test_servers_dir().join(".crash-turn"))
        .expect("the crash test's lock file");
    turn.lock().expect("the crash test's turn");
    let process = Process::start(&url, &[]);
    let token = create_company(&process.base).await;
    let client = client();
    let cluster = |action: &[&str]| {
        assert!(crash_cluster(action), "pg_ctlcluster {action:?}");
    };
    // Declared after the process, so dropped before it: a failed assertion mid-outage leaves
    // the cluster running for the next test, and AccuBooks a database to stop against.
    let _restart = RestartOnPanic;
    let crash = async {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
        cluster(&["stop", "-m", "immediate"]);
        // Longer than the pool's acquire timeout (5 s): requests are answered while it is down.
        actix_web::rt::time::sleep(Duration::from_secs(7)).await;
        cluster(&["start"]);
    };
    let outages = std::cell::Cell::new(0);
    let writes = join_all((0..100).map(|n| {
        let (client, base, token, outages) = (&client, &process.base, &token, &outages);
        async move {
            let key = format!("crash-{n}");
            actix_web::rt::time::sleep(Duration::from_millis(n * 10)).await;
            for _ in 0..600 {
                let asked = std::time::Instant::now();
                let answer = process::create_customer(client, base, token, &key)
                    .await
                    .expect("AccuBooks answers while its database is down");
                match answer.status {
                    200 | 201 => return (key, answer),
                    409 => {}
                    503 => {
                        assert!(
                            answer.retry_after,
                            "{key}: a 503 says when to retry: {answer:?}"
                        );
                        let kind = answer.body["type"].as_str().unwrap_or_default();
                        assert!(
                            OUTAGE_PROBLEMS
                                .iter()
                                .any(|outage| kind.ends_with(&format!("#{outage}"))),
                            "{key}: a 503 names the outage: {answer:?}"
                        );
                        assert!(
                            asked.elapsed() < ACQUIRE_TIMEOUT + Duration::from_millis(1500),
                            "{key}: answered within the acquire timeout, not after {:?}",
                            asked.elapsed()
                        );
                        outages.set(outages.get() + 1);
                    }
                    _ => panic!("{key}: {answer:?}"),
                }
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{key}: no answer within 30 s of retries");
        }
    }));
    let ((), acknowledged) = futures_util::future::join(crash, writes).await;
    assert!(outages.get() > 0, "the crash happened during the burst");

    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.expect("open the database");
    for (key, answer) in &acknowledged {
        let id = answer.body["id"].as_str().expect("an id");
        let rows = count(
            &pool,
            "SELECT COUNT(*) FROM customers WHERE name = $1",
            Some(key),
        )
        .await;
        assert_eq!(rows, 1, "{key}: one row");
        let kept = count(
            &pool,
            "SELECT COUNT(*) FROM customers WHERE id = $1",
            Some(id),
        )
        .await;
        assert_eq!(
            kept, 1,
            "{key}: the acknowledged write {id} survived the crash"
        );
        let retry = process::create_customer(&client, &process.base, &token, key)
            .await
            .expect("a retry after recovery");
        assert_eq!(
            (retry.status, retry.replayed, &retry.body),
            (200, true, &answer.body),
            "{key}"
        );
    }
    assert_eq!(assert_no_half_write(&pool).await, 100);
    let mut process = process;
    process.signal("TERM");
    let (status, _) = process.exit_within(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", process.log());
}

/// `--help` prints every option to stdout and exits 0; a taken port fails before anything is
/// created or migrated.
#[test]
fn help_goes_to_stdout_and_a_taken_port_fails_first() {
    let help = Command::new(example_binary("accubooks"))
        .arg("--help")
        .output()
        .expect("run AccuBooks");
    assert_eq!(help.status.code(), Some(0));
    let usage = String::from_utf8(help.stdout).unwrap();
    for option in [
        "--bind",
        "--database-url",
        "DATABASE_URL",
        "--shutdown-timeout",
        "--drain-delay",
    ] {
        assert!(usage.contains(option), "{option} in {usage}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.db");
    let refused = Command::new(example_binary("accubooks"))
        .args(["--bind", &taken.local_addr().unwrap().to_string()])
        .args(["--database-url", &format!("sqlite://{}", file.display())])
        .env_remove("DATABASE_URL")
        .output()
        .expect("run AccuBooks");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("in use"),
        "{refused:?}"
    );
    assert!(
        !file.exists(),
        "nothing was created before the port was bound"
    );
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("accubooks.db").display())
}

/// One test of a scenario on a backend: the scenario gets a new database's URL (a SQLite file in
/// a temporary directory that lives as long as the test).
macro_rules! lifecycle_test {
    (sqlite, $scenario:ident) => {
        #[actix_web::test]
        async fn $scenario() {
            let dir = tempfile::tempdir().unwrap();
            super::$scenario(super::sqlite_url(&dir)).await;
        }
    };
    (postgres, $scenario:ident) => {
        #[actix_web::test]
        async fn $scenario() {
            super::$scenario(idem_tests::postgres_test_url().await).await;
        }
    };
    (mysql, $scenario:ident) => {
        #[actix_web::test]
        async fn $scenario() {
            super::$scenario(idem_tests::mysql_test_database_url().await).await;
        }
    };
}

idem_tests::per_backend!(lifecycle_test! for [
    sqlite,
    #[cfg(postgres_suite)] postgres,
    #[cfg(mysql_suite)] mysql,
] [
    a_replay_just_before_sigterm_keeps_its_audit_row,
    sigterm_mid_burst_loses_nothing,
    a_second_signal_ends_the_drain_at_once,
    two_processes_on_one_database_write_each_key_once,
]);

/// What one backend proves for all: the bound of the whole stop is the server's, not the
/// database's.
mod sqlite_only {
    #[actix_web::test]
    async fn the_shutdown_timeout_bounds_the_whole_stop() {
        let dir = tempfile::tempdir().unwrap();
        super::the_shutdown_timeout_bounds_the_whole_stop(super::sqlite_url(&dir)).await;
    }
}

/// A crash of the database server itself: PostgreSQL's cluster, stopped `immediate`.
#[cfg(postgres_suite)]
mod postgres_only {
    #[actix_web::test]
    async fn a_database_crash_mid_burst_loses_no_acknowledged_write() {
        super::a_database_crash_mid_burst_loses_no_acknowledged_write().await;
    }
}
