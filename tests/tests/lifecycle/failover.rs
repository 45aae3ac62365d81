//! AccuBooks behind HAProxy, in front of a three-node Patroni cluster with synchronous
//! replication (`tests/servers/start-ha`), through a crash of the primary and a planned
//! switchover in the middle of a burst. Six clients each send keys one after the other and retry
//! each key until it is answered. Then, with SQL on the new primary: one row per key, every
//! acknowledged write present, every retry a byte-equal replay, no "nothing was written" for a
//! key whose write landed, and every outcome idem answered in the audit log or counted lost.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use idem_actix::{IdempotencyStore, StoreConfig};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AnyPool, Postgres};

use crate::process::{Answer, Process, client, count, create_company, create_customer};

/// Clients sending at once, each one key at a time.
const CLIENTS: usize = 6;

/// Acknowledged writes between one fault and the next.
const STEADY_WRITES: usize = 60;

/// How long writes may stay unavailable after a fault before the test fails: Patroni's `ttl`
/// (20 s) for the crashed primary's lock to expire, the promotion, HAProxy's checks, and slack
/// for a loaded machine.
const UNAVAILABLE_AT_MOST: Duration = Duration::from_secs(60);

/// idem's problem types (the suffix after `#`) whose answers idem audits: the write's outcome
/// was decided by the protocol. `#tenant-unavailable` is not one: the tenant resolver refused
/// before idem ran.
const AUDITED_PROBLEMS: [&str; 5] = [
    "store-unavailable",
    "outcome-unknown",
    "request-in-flight",
    "write-failed",
    "write-timed-out",
];

/// The cluster's REST APIs, one per node, in node order (`n1`, `n2`, `n3`).
const PATRONI_PORTS: [u16; 3] = [8441, 8442, 8443];

/// One attempt at a key: its answer, or `None` when the connection to AccuBooks failed.
type Attempt = Option<Answer>;

/// What the clients saw: every attempt of every key, and the acknowledgments as they came.
#[derive(Default)]
struct Burst {
    attempts: Mutex<HashMap<String, Vec<Attempt>>>,
    acknowledged: AtomicUsize,
    /// When the latest acknowledged attempt was sent, and when it was acknowledged.
    latest: Mutex<Option<(Instant, Instant)>>,
    stop: AtomicBool,
}

impl Burst {
    fn acknowledged(&self) -> usize {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits until `more` writes are acknowledged after now.
    async fn until_acknowledged(&self, more: usize) {
        let target = self.acknowledged() + more;
        let started = Instant::now();
        while self.acknowledged() < target {
            assert!(
                started.elapsed() < UNAVAILABLE_AT_MOST,
                "writes unavailable for {UNAVAILABLE_AT_MOST:?}"
            );
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the acknowledgment of an attempt sent after `fault` (one sent before may
    /// have committed before it), and returns how long writes were unavailable.
    async fn recovery_after(&self, fault: Instant) -> Duration {
        loop {
            if let Some((sent, acknowledged)) = *self.latest.lock().unwrap()
                && sent > fault
            {
                return acknowledged - fault;
            }
            assert!(
                fault.elapsed() < UNAVAILABLE_AT_MOST,
                "writes unavailable for {UNAVAILABLE_AT_MOST:?} after the fault"
            );
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One client: sends its keys one after the other, each until it is acknowledged, until
    /// told to stop.
    async fn client(&self, base: &str, token: &str, client: usize) {
        let http = crate::process::client();
        let mut n = 0;
        while !self.stop.load(Ordering::SeqCst) {
            let key = format!("ha-{client}-{n}");
            let started = Instant::now();
            loop {
                assert!(
                    started.elapsed() < UNAVAILABLE_AT_MOST,
                    "{key}: not answered within {UNAVAILABLE_AT_MOST:?}"
                );
                let sent = Instant::now();
                let attempt = create_customer(&http, base, token, &key).await;
                let done = attempt
                    .as_ref()
                    .is_some_and(|answer| matches!(answer.status, 200 | 201));
                self.attempts
                    .lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default()
                    .push(attempt);
                if done {
                    *self.latest.lock().unwrap() = Some((sent, Instant::now()));
                    self.acknowledged.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
            n += 1;
        }
    }
}

/// The problem type's name (after `#`) of an answer, if it is a problem.
fn problem(answer: &Answer) -> Option<&str> {
    answer.body["type"]
        .as_str()?
        .rsplit_once('#')
        .map(|(_, name)| name)
}

/// Whether the answer says that nothing was written.
fn says_nothing_was_written(answer: &Answer) -> bool {
    answer.body["detail"]
        .as_str()
        .is_some_and(|detail| detail.contains("nothing was written"))
}

/// The cluster as Patroni's REST API describes it, from the first node that answers.
async fn cluster() -> Value {
    let http = client();
    for port in PATRONI_PORTS {
        if let Ok(mut response) = http
            .get(format!("http://127.0.0.1:{port}/cluster"))
            .send()
            .await
            && let Ok(cluster) = response.json::<Value>().await
        {
            return cluster;
        }
    }
    panic!("no Patroni node answers on {PATRONI_PORTS:?}");
}

/// The leader's name (`n1`, `n2` or `n3`).
async fn leader() -> String {
    for _ in 0..100 {
        let cluster = cluster().await;
        let leader = cluster["members"].as_array().and_then(|members| {
            members
                .iter()
                .find(|member| member["role"] == "leader" && member["state"] == "running")
        });
        if let Some(leader) = leader {
            return leader["name"].as_str().expect("a member's name").to_owned();
        }
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the cluster has no running leader: {}", cluster().await);
}

/// Crashes node `name` as a machine crash would: Patroni and PostgreSQL killed at once,
/// nothing flushed, the leader lock left to expire.
fn crash(name: &str) {
    let ha = idem_tests::test_servers_dir().join("ha");
    let config = ha.join(format!("{name}.yml"));
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", &format!("patroni {}", config.display())])
        .status()
        .expect("run pkill");
    assert!(killed.success(), "no Patroni ran {}", config.display());
    let pid_file = ha.join(format!("{name}-data")).join("postmaster.pid");
    let postmaster = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|error| panic!("{}: {error}", pid_file.display()));
    let postmaster = postmaster.lines().next().expect("the postmaster's pid");
    // Its backends first (they would outlive it for a moment), then the postmaster.
    Command::new("pkill")
        .args(["-KILL", "-P", postmaster])
        .status()
        .expect("run pkill");
    let killed = Command::new("kill")
        .args(["-KILL", postmaster])
        .status()
        .expect("run kill");
    assert!(killed.success(), "kill -KILL {postmaster}");
}

/// A planned switchover away from the leader `name`, to the synchronous standby. Patroni
/// refuses it (412) until its own record names the synchronous standby, which may trail the
/// replication it reads by a loop or two after a node rejoined.
async fn switchover(name: &str) {
    let started = Instant::now();
    loop {
        let mut response = client()
            .post(format!("http://127.0.0.1:{}/switchover", rest_port(name)))
            .send_json(&json!({ "leader": name }))
            .await
            .expect("Patroni's REST API answers");
        let body = response.body().await.unwrap_or_default();
        match response.status().as_u16() {
            200 => return,
            412 if started.elapsed() < Duration::from_secs(30) => {
                actix_web::rt::time::sleep(Duration::from_millis(500)).await;
            }
            status => panic!("switchover: {status} {}", String::from_utf8_lossy(&body)),
        }
    }
}

fn rest_port(name: &str) -> u16 {
    let index: usize = name[1..].parse().expect("nodes are n1, n2, n3");
    PATRONI_PORTS[index - 1]
}

/// Brings the crashed node back (it rejoins as a standby, rewound) and waits until the cluster
/// is whole, with a synchronous standby again.
async fn restore() {
    actix_web::rt::task::spawn_blocking(idem_tests::start_ha_cluster)
        .await
        .expect("start-ha");
}

/// The cluster's commits wait for a synchronous standby: no risk is named, unless the session
/// turns `synchronous_commit` down to `local`.
async fn replication_risks_follow_synchronous_commit(url: &str) {
    let store = IdempotencyStore::<Postgres>::connect(url, StoreConfig::default())
        .await
        .expect("the cluster's primary");
    assert_eq!(
        store.replication_risks().await.unwrap(),
        Vec::<String>::new()
    );
    let options: PgConnectOptions = url.parse().expect("a PostgreSQL URL");
    let local = PgPoolOptions::new()
        .connect_with(options.options([("synchronous_commit", "local")]))
        .await
        .expect("the cluster's primary");
    let risks = IdempotencyStore::new(local, StoreConfig::default())
        .replication_risks()
        .await
        .unwrap();
    assert_eq!(risks.len(), 1, "{risks:?}");
    assert!(
        risks[0].starts_with("synchronous_commit is local"),
        "{risks:?}"
    );
}

#[actix_web::test]
async fn a_primary_crash_and_a_switchover_mid_burst_lose_no_acknowledged_write() {
    use idem_tests::TestServer;

    let url = idem_tests::test_server_database(TestServer::Ha).await;
    replication_risks_follow_synchronous_commit(&url).await;
    // One fault at a time on this cluster, should two test runs meet.
    let turn = std::fs::File::create(idem_tests::test_servers_dir().join("ha").join(".turn"))
        .expect("the failover test's lock file");
    turn.lock().expect("the failover test's turn");
    let mut process = Process::start(&url, &["--shutdown-timeout", "20"]);
    let token = create_company(&process.base).await;

    let burst = Burst::default();
    let clients = join_all((0..CLIENTS).map(|n| burst.client(&process.base, &token, n)));
    let faults = async {
        burst.until_acknowledged(STEADY_WRITES).await;
        let crashed = leader().await;
        let fault = Instant::now();
        crash(&crashed);
        let after_crash = burst.recovery_after(fault).await;
        let promoted = leader().await;
        assert_ne!(promoted, crashed, "a standby was promoted");
        restore().await;
        burst.until_acknowledged(STEADY_WRITES).await;

        let fault = Instant::now();
        switchover(&leader().await).await;
        let after_switchover = burst.recovery_after(fault).await;
        burst.until_acknowledged(STEADY_WRITES).await;
        burst.stop.store(true, Ordering::SeqCst);
        (after_crash, after_switchover)
    };
    let (_, (after_crash, after_switchover)) = tokio::join!(clients, faults);
    let attempts = burst.attempts.into_inner().unwrap();
    let mut answers: HashMap<String, usize> = HashMap::new();
    for attempt in attempts.values().flatten() {
        let kind = attempt.as_ref().map_or("no answer".to_owned(), |answer| {
            format!("{} {}", answer.status, problem(answer).unwrap_or_default())
        });
        *answers.entry(kind).or_default() += 1;
    }
    println!(
        "{} keys; writes unavailable {after_crash:?} after the crash, {after_switchover:?} after the switchover; answers: {answers:?}",
        attempts.len()
    );

    // No "nothing was written" for a write that landed: a key whose first acknowledgment is a
    // replay had an attempt whose outcome its client could not know (no answer, or
    // `#outcome-unknown`), never only attempts that said nothing was written.
    let mut first_answers = HashMap::new();
    let mut outcome_unknown = 0;
    let mut audited_answers = 0;
    for (key, attempts) in &attempts {
        let (acknowledged, before) = attempts.split_last().expect("at least one attempt");
        let acknowledged = acknowledged.as_ref().expect("the last attempt is answered");
        outcome_unknown += attempts
            .iter()
            .flatten()
            .filter(|answer| problem(answer) == Some("outcome-unknown"))
            .count();
        audited_answers += attempts
            .iter()
            .flatten()
            .filter(|answer| {
                matches!(answer.status, 200 | 201)
                    || problem(answer).is_some_and(|name| AUDITED_PROBLEMS.contains(&name))
            })
            .count();
        if acknowledged.replayed {
            assert!(
                before.iter().any(|attempt| attempt
                    .as_ref()
                    .is_none_or(|answer| !says_nothing_was_written(answer))),
                "{key}: replayed, yet every earlier attempt said nothing was written: {attempts:?}"
            );
        }
        first_answers.insert(key.clone(), acknowledged.clone());
    }

    // One row per key, with the id each client was given.
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(&url).await.expect("the new primary");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, id::text FROM customers WHERE name LIKE 'ha-%'")
            .fetch_all(&pool)
            .await
            .expect("the customers");
    assert_eq!(rows.len(), attempts.len(), "one row per key");
    for (name, id) in &rows {
        let answer = first_answers
            .get(name)
            .unwrap_or_else(|| panic!("{name}: a row for a key no client sent"));
        assert_eq!(answer.body["id"].as_str(), Some(id.as_str()), "{name}");
    }

    // Every retry, now that the cluster is calm, replays the first answer's bytes.
    let http = client();
    for (key, first) in &first_answers {
        let again = create_customer(&http, &process.base, &token, key)
            .await
            .expect("AccuBooks answers");
        assert!(again.replayed, "{key}: {again:?}");
        assert_eq!(again.bytes, first.bytes, "{key}: the replay is byte-equal");
        audited_answers += 1;
    }

    // Every outcome idem answered is in the audit log, or counted lost. An attempt answered
    // `#outcome-unknown` may have landed: then its `new` row is there beside its own.
    let metrics = http
        .get(format!("{}/metrics", process.base))
        .send()
        .await
        .expect("the metrics")
        .body()
        .await
        .expect("the metrics' text");
    let lost = idem_tests::metric(
        std::str::from_utf8(&metrics).expect("text"),
        "idempotent_write_audit_rows_lost_total",
        &[("operation", "createCustomer")],
    ) as i64;
    process.signal("TERM");
    let (status, _) = process.exit_within(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", process.log());
    let audited = count(
        &pool,
        "SELECT CAST(COALESCE(SUM(repeat_count), 0) AS BIGINT) FROM idempotent_write_audit_log WHERE operation = 'createCustomer'",
        None,
    )
    .await;
    let answered = i64::try_from(audited_answers).unwrap();
    let unknown = i64::try_from(outcome_unknown).unwrap();
    assert!(
        (answered..=answered + unknown).contains(&(audited + lost)),
        "{audited} outcomes audited and {lost} counted lost, for {answered} answers of which {unknown} #outcome-unknown"
    );
    assert_eq!(
        count(
            &pool,
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE operation = 'createCustomer' AND outcome = 'new'",
            None,
        )
        .await,
        i64::try_from(rows.len()).unwrap(),
        "one new row per write"
    );
}
