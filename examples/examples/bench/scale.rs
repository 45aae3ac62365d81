//! The scale mode: idem on tables that a year of traffic filled (keys over 1 000 tenants with
//! their stored answers, and audit rows), beside a fresh database on the same server, both
//! driven in interleaved rounds, so that what the loaded tables cost shows as a ratio. On
//! PostgreSQL.
//!
//! The loaded database (`idem_scale_loaded`) is filled in SQL, in batches, and kept between
//! runs: a later run tops it up to the asked size. The fresh one (`idem_scale_fresh`) is made
//! again on every run.

use idem_actix::PurgePace;
use sqlx::Connection as _;
use sqlx::Postgres;
use sqlx::postgres::PgConnection;

use super::*;

/// How much a year of traffic leaves behind.
pub(crate) struct Scale {
    /// Keys with their stored answers, over [`TENANTS`] tenants.
    pub(crate) keys: u64,
    /// Rows of the audit log, sealed in seals of [`SEAL_ROWS`].
    pub(crate) audit_rows: u64,
    /// Events of the outbox waiting for the dispatcher (none runs during the measurement).
    pub(crate) pending_events: u64,
    /// The pace of the purge measured beside an unpaced one.
    pub(crate) purge_pace: PurgePace,
}

/// The audit rows of one loaded seal.
const SEAL_ROWS: u64 = 1_000;

/// The tenants the loaded keys and audit rows spread over.
const TENANTS: u64 = 1_000;
/// Rows per loading statement: the progress a run prints.
const LOAD_BATCH: u64 = 1_000_000;

/// One scenario on both databases, each summed over its rounds.
struct Pair {
    fresh: Row,
    loaded: Row,
    /// Each round's ratio of the loaded database's throughput to the fresh one's.
    ratios: Vec<f64>,
}

/// Loads (or tops up) the loaded database, measures both side by side, and returns the
/// report's Markdown: the scenarios' ratios, the purge while serving, the loaded tables' sizes
/// and the statements whose plans read a whole table or sort.
pub(crate) async fn measure_scale(
    server_url: &str,
    scale: &Scale,
) -> Result<String, Box<dyn std::error::Error>> {
    let mut admin = PgConnection::connect(server_url).await?;
    sqlx::raw_sql("DROP DATABASE IF EXISTS idem_scale_fresh WITH (FORCE)")
        .execute(&mut admin)
        .await?;
    sqlx::raw_sql("CREATE DATABASE idem_scale_fresh")
        .execute(&mut admin)
        .await?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'idem_scale_loaded')",
    )
    .fetch_one(&mut admin)
    .await?;
    if !exists {
        sqlx::raw_sql("CREATE DATABASE idem_scale_loaded")
            .execute(&mut admin)
            .await?;
    }
    let (fresh_url, loaded_url) = (
        with_database(server_url, "idem_scale_fresh"),
        with_database(server_url, "idem_scale_loaded"),
    );
    let (fresh, fresh_handle) = Target::start(&fresh_url, StoreConfig::default()).await?;
    let (loaded, loaded_handle) = Target::start(&loaded_url, StoreConfig::default()).await?;
    let mut conn = PgConnection::connect(&loaded_url).await?;
    load(&mut conn, scale).await?;

    let pairs = drive_side_by_side(&fresh, &loaded).await;
    let unpaced = scale.purge_pace.with_pause(Duration::ZERO);
    let mut purges = Vec::new();
    for pace in [unpaced, scale.purge_pace] {
        purges.push(purge_while_serving(&loaded, &loaded_url, pace, &mut conn).await?);
    }
    fresh_handle.stop(true).await;
    loaded_handle.stop(true).await;

    let mut markdown = format!(
        "PostgreSQL, a database loaded with {} keys over {TENANTS} tenants, {} audit rows and {} pending outbox events beside a fresh one, {ROUNDS} interleaved rounds at {CONCURRENCY} concurrent clients:\n\n\
         | scenario | fresh (req/s) | loaded (req/s) | loaded ÷ fresh | rounds | fresh p99 (ms) | loaded p99 (ms) | p99 loaded ÷ fresh |\n\
         | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n",
        scale.keys, scale.audit_rows, scale.pending_events
    );
    for Pair {
        fresh,
        loaded,
        ratios,
    } in &pairs
    {
        let rounds = ratios
            .iter()
            .map(|ratio| format!("{ratio:.2}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            markdown,
            "| {} | {:.0} | {:.0} | {:.2} | {rounds} | {:.2} | {:.2} | {:.2} |",
            fresh.name,
            fresh.throughput(),
            loaded.throughput(),
            loaded.throughput() / fresh.throughput(),
            fresh.p(0.99),
            loaded.p(0.99),
            loaded.p(0.99) / fresh.p(0.99),
        );
    }
    let _ = writeln!(
        markdown,
        "\nThe purge while serving: {PURGED} keys of the loaded database expired, then purged by `IdempotencyStore::purge_expired` at a pace, while new writes ran beside it; the writes of as many rounds after it are the baseline. Unpaced first, then the pace asked for; every request succeeded (none waited past the lock timeout):\n\n\
         | purge pace | keys purged | seconds | rows/s | writes beside (req/s) | after (req/s) | beside ÷ after | p99 beside (ms) | p99 after (ms) | p99 beside ÷ after |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for PurgeWhileServing {
        pace,
        alone,
        beside,
        purged,
        seconds,
    } in &purges
    {
        let _ = writeln!(
            markdown,
            "| {} rows, {} ms pause | {purged} | {seconds:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            pace.batch_rows(),
            pace.pause().as_millis(),
            *purged as f64 / seconds,
            beside.throughput(),
            alone.throughput(),
            beside.throughput() / alone.throughput(),
            beside.p(0.99),
            alone.p(0.99),
            beside.p(0.99) / alone.p(0.99),
        );
    }
    markdown.push_str("\nThe loaded tables:\n\n| table | rows | table (MiB) | indexes (MiB) |\n| --- | ---: | ---: | ---: |\n");
    let sizes: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT c.relname::text, c.reltuples::bigint, pg_table_size(c.oid), pg_indexes_size(c.oid)
         FROM pg_class c
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
           AND c.relname IN ('idempotency_keys', 'idempotent_write_audit_log', 'idempotent_write_audit_seals', 'idem_outbox', 'customers')
         ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    for (table, rows, table_bytes, index_bytes) in sizes {
        let _ = writeln!(
            markdown,
            "| {table} | {rows} | {:.0} | {:.0} |",
            table_bytes as f64 / 1048576.0,
            index_bytes as f64 / 1048576.0
        );
    }
    let plans = idem_runtime::__private::postgres_generic_plans(&mut conn).await?;
    let statements = plans.len();
    let scans: Vec<_> = plans
        .into_iter()
        .filter(|(_, plan)| plan.contains("Seq Scan") || plan.contains("Sort"))
        .collect();
    if scans.is_empty() {
        let _ = writeln!(
            markdown,
            "\nThe generic plans of all {statements} protocol statements on the loaded tables: no sequential scan, no sort."
        );
    } else {
        let _ = writeln!(
            markdown,
            "\nStatements whose generic plan reads a whole table or sorts, on the loaded tables:\n"
        );
        for (name, plan) in scans {
            let _ = writeln!(markdown, "{name}:\n```text\n{plan}\n```");
        }
    }
    Ok(markdown)
}

/// Tops the loaded database up to `scale`, in SQL: keys of `createCustomer` with an answer the
/// size of AccuBooks' own, live for a day, audit rows over a year with their seals, and pending
/// outbox events, then `VACUUM ANALYZE`.
async fn load(conn: &mut PgConnection, scale: &Scale) -> Result<(), sqlx::Error> {
    // Each table, how many loaded rows it has, how many are wanted, the highest number its
    // loaded rows carry where it is not their count (keys are purged by the scale mode, the
    // others never), and the statement that loads the rows numbered $1 to $2.
    let tables = [
        (
            "idempotency_keys",
            "SELECT COUNT(*) FROM idempotency_keys WHERE tenant_id LIKE 'scale-%'",
            scale.keys,
            Some("SELECT COALESCE(MAX(attempt_id), 0) FROM idempotency_keys WHERE tenant_id LIKE 'scale-%'"),
            format!("INSERT INTO idempotency_keys
                 (tenant_id, operation, idempotency_key, fingerprint, entity_id, attempt_id,
                  response_status, response_headers, response_body, created_at_ms, expires_at_ms)
             SELECT 'scale-tenant-' || (i % {TENANTS}), 'createCustomer', 'scale-key-' || i,
                 sha256(i::text::bytea), md5(i::text)::uuid::text, i, 201,
                 '[[\"content-type\",\"application/json\"]]',
                 convert_to(json_build_object('id', md5(i::text)::uuid, 'name', 'Customer ' || i,
                     'email', 'customer' || i || '@example.com')::text, 'UTF8'),
                 idem_now_ms() - 3600000, idem_now_ms() + 86400000
             FROM generate_series($1::bigint, $2::bigint) AS i"),
        ),
        (
            "idempotent_write_audit_log",
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE company_id LIKE 'scale-%'",
            scale.audit_rows,
            None,
            format!("INSERT INTO idempotent_write_audit_log
                 (id, operation, class, company_id, key_hash, entity_id, fingerprint, outcome,
                  status, attempts, duration_ms, created_at_ms)
             SELECT md5('audit' || i)::uuid::text, 'createCustomer', 'high_risk',
                 'scale-tenant-' || (i % {TENANTS}), encode(sha256(i::text::bytea), 'hex'),
                 md5(i::text)::uuid::text, encode(sha256(('f' || i)::bytea), 'hex'),
                 CASE WHEN i % 5 = 0 THEN 'replayed' ELSE 'new' END, 201, 1, 4.5,
                 idem_now_ms() - 31536000000 + i % 31536000000
             FROM generate_series($1::bigint, $2::bigint) AS i"),
        ),
        (
            "idempotent_write_audit_seals",
            "SELECT COUNT(*) FROM idempotent_write_audit_seals",
            scale.audit_rows / SEAL_ROWS,
            Some("SELECT COALESCE(MAX(seal), 0) FROM idempotent_write_audit_seals"),
            format!("INSERT INTO idempotent_write_audit_seals
                 (seal, first_seq, last_seq, row_count, digest, previous_digest, sealed_at_ms)
             SELECT i, (i - 1) * {SEAL_ROWS} + 1, i * {SEAL_ROWS}, {SEAL_ROWS},
                 encode(sha256(i::text::bytea), 'hex'), encode(sha256((i - 1)::text::bytea), 'hex'),
                 idem_now_ms()
             FROM generate_series($1::bigint, $2::bigint) AS i"),
        ),
        (
            "idem_outbox",
            "SELECT COUNT(*) FROM idem_outbox WHERE tenant_id LIKE 'scale-%'",
            scale.pending_events,
            None,
            format!("INSERT INTO idem_outbox
                 (event_id, tenant_id, operation, entity_id, topic, payload, sequence_in_write,
                  created_at_ms, next_attempt_at_ms)
             SELECT 'scale-event-' || i, 'scale-tenant-' || (i % {TENANTS}), 'createPayment',
                 md5(i::text)::uuid::text, 'receipt', convert_to('{{\"invoice\":' || i || '}}', 'UTF8'),
                 0, idem_now_ms() - 60000, 0
             FROM generate_series($1::bigint, $2::bigint) AS i"),
        ),
    ];
    for (table, count, wanted, highest, insert) in tables {
        let mut have: i64 = sqlx::query_scalar(count).fetch_one(&mut *conn).await?;
        let mut next: i64 = match highest {
            Some(highest) => sqlx::query_scalar(highest).fetch_one(&mut *conn).await?,
            None => have,
        };
        let started = Instant::now();
        while (have as u64) < wanted {
            let rows = LOAD_BATCH.min(wanted - have as u64) as i64;
            sqlx::query(sqlx::AssertSqlSafe(insert.clone()))
                .bind(next + 1)
                .bind(next + rows)
                .execute(&mut *conn)
                .await?;
            (have, next) = (have + rows, next + rows);
            println!(
                "loaded {table}: {have} of {wanted} rows ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

/// New writes, their replays and a same-key burst on both databases, in interleaved rounds
/// whose order alternates, so that drift on a shared machine falls on both alike.
async fn drive_side_by_side(fresh: &Target, loaded: &Target) -> Vec<Pair> {
    let run = format!("{:x}", std::process::id());
    for target in [fresh, loaded] {
        target
            .drive("warm-up", "/api/customers", 200, CONCURRENCY, |i| {
                Some(format!("warm-{run}-{i}"))
            })
            .await;
    }
    let per_round = REQUESTS / ROUNDS;
    let mut pairs: Vec<Pair> = Vec::new();
    for round in 0..ROUNDS {
        let new_key = |i| Some(format!("scale-new-{run}-{round}-{i}"));
        let drive = async |target: &Target, name| {
            target
                .drive(name, "/api/customers", per_round, CONCURRENCY, new_key)
                .await
        };
        let mut measured = Vec::new();
        for name in ["protected new writes", "replays"] {
            // Fresh first in even rounds, loaded first in odd ones.
            measured.push(if round % 2 == 0 {
                let fresh_row = drive(fresh, name).await;
                (fresh_row, drive(loaded, name).await)
            } else {
                let loaded_row = drive(loaded, name).await;
                (drive(fresh, name).await, loaded_row)
            });
        }
        for (index, (fresh_row, loaded_row)) in measured.into_iter().enumerate() {
            let ratio = loaded_row.throughput() / fresh_row.throughput();
            match pairs.get_mut(index) {
                Some(pair) => {
                    pair.fresh.add(fresh_row);
                    pair.loaded.add(loaded_row);
                    pair.ratios.push(ratio);
                }
                None => pairs.push(Pair {
                    fresh: fresh_row,
                    loaded: loaded_row,
                    ratios: vec![ratio],
                }),
            }
        }
    }
    let mut bursts = Vec::new();
    for target in [fresh, loaded] {
        let key = format!("scale-burst-{run}");
        bursts.push(
            target
                .drive(
                    "500-request same-key burst",
                    "/api/customers",
                    BURST,
                    BURST,
                    |_| Some(key.clone()),
                )
                .await,
        );
    }
    let loaded_burst = bursts.pop().expect("two bursts");
    let fresh_burst = bursts.pop().expect("two bursts");
    let ratio = loaded_burst.throughput() / fresh_burst.throughput();
    pairs.push(Pair {
        fresh: fresh_burst,
        loaded: loaded_burst,
        ratios: vec![ratio],
    });
    pairs
}

/// Keys the purge-while-serving measurement expires and purges.
const PURGED: i64 = 1_000_000;

/// New writes on the loaded database beside the purge of expired keys, and without it.
struct PurgeWhileServing {
    pace: PurgePace,
    /// The rounds after the purge.
    alone: Row,
    /// The rounds while the purge ran.
    beside: Row,
    purged: u64,
    seconds: f64,
}

/// Expires the [`PURGED`] oldest loaded keys, then drives rounds of new writes on the loaded
/// database while `IdempotencyStore::purge_expired` deletes them at `pace` (from a store of its
/// own, as a maintenance process would), and as many rounds after it. The loaded database
/// loses those keys; the next run's load adds new ones.
async fn purge_while_serving(
    loaded: &Target,
    loaded_url: &str,
    pace: PurgePace,
    conn: &mut PgConnection,
) -> Result<PurgeWhileServing, Box<dyn std::error::Error>> {
    sqlx::query(
        "UPDATE idempotency_keys SET expires_at_ms = 0
         WHERE tenant_id LIKE 'scale-%' AND attempt_id <= $1 +
             (SELECT MIN(attempt_id) FROM idempotency_keys WHERE tenant_id LIKE 'scale-%')",
    )
    .bind(PURGED - 1)
    .execute(&mut *conn)
    .await?;
    let run = format!("{:x}", std::process::id());
    let per_round = REQUESTS / ROUNDS;
    let store = IdempotencyStore::<Postgres>::connect(
        loaded_url,
        StoreConfig::default().with_purge_pace(pace),
    )
    .await?;
    // One round of new writes named `name`, merged into `into`, its keys after `when` and the
    // round.
    let round = async |into: &mut Option<Row>, name, when: &str, round: usize| {
        let key = |i| Some(format!("purge-{when}-{run}-{round}-{i}"));
        merge(
            into,
            loaded
                .drive(name, "/api/customers", per_round, CONCURRENCY, key)
                .await,
        );
    };
    let started = Instant::now();
    let purge = actix_web::rt::spawn(async move { store.purge_expired().await });
    let (mut beside, mut rounds) = (None, 0);
    while !purge.is_finished() {
        round(&mut beside, "new writes beside the purge", "beside", rounds).await;
        rounds += 1;
    }
    let purged = purge.await??;
    let seconds = started.elapsed().as_secs_f64();
    let mut alone = None;
    for after in 0..rounds {
        round(&mut alone, "new writes after the purge", "after", after).await;
    }
    Ok(PurgeWhileServing {
        pace,
        alone: alone.expect("at least one round"),
        beside: beside.expect("at least one round"),
        purged,
        seconds,
    })
}

/// `url` with its database (the last segment of its path) replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (address, query) = url
        .split_once('?')
        .map_or((url, None), |(a, q)| (a, Some(q)));
    let base = address.rsplit_once('/').map_or(address, |(base, _)| base);
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}
