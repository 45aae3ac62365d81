//! The HTTP scenarios (bare writes, protected new writes, replays, a same-key burst, the
//! rival's), measured in interleaved rounds, and their table.

use super::*;

/// One measured scenario.
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) requests: usize,
    pub(crate) seconds: f64,
    pub(crate) latency: Histogram<u64>,
    pub(crate) rows_written: i64,
}

/// The rows of one database (the bare writes first) and each round's ratio of protected new
/// writes to bare writes.
pub(crate) struct Measured {
    pub(crate) rows: Vec<Row>,
    pub(crate) new_write_ratios: Vec<f64>,
}

impl Row {
    /// Adds another round of the same scenario.
    pub(crate) fn add(&mut self, round: Row) {
        self.requests += round.requests;
        self.seconds += round.seconds;
        self.rows_written += round.rows_written;
        self.latency
            .add(&round.latency)
            .expect("histograms of the same precision");
    }

    pub(crate) fn throughput(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    pub(crate) fn p(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// One request of a measured scenario.
pub(crate) struct Request {
    pub(crate) path: String,
    /// Its `Idempotency-Key`, if it sends one.
    pub(crate) key: Option<String>,
    /// A session cookie of actix-idempotent's, if it sends one.
    pub(crate) cookie: Option<String>,
    pub(crate) body: Value,
}

/// Measures one database. The steady scenarios run in [`ROUNDS`] interleaved rounds (bare, protected
/// new writes, their replays, actix-idempotent), so that drift on a shared machine (other
/// processes, checkpoints, growing tables) falls on every scenario alike; each row sums its
/// rounds. The bursts run once, at the end.
pub(crate) async fn measure(
    database: &str,
    url: &str,
    config: StoreConfig,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let (target, handle) = Target::start(url, config).await?;
    let run = format!("{:x}", std::process::id());
    // Warm up connections and caches on both paths before measuring.
    target
        .drive("warm-up", "/bare/customers", 200, CONCURRENCY, |_| None)
        .await;
    target
        .drive("warm-up", "/api/customers", 200, CONCURRENCY, |i| {
            Some(format!("warm-{run}-{i}"))
        })
        .await;

    let per_round = REQUESTS / ROUNDS;
    let mut rows: Vec<Row> = Vec::new();
    let mut new_write_ratios = Vec::new();
    for round in 0..ROUNDS {
        let new_key = |i| Some(format!("new-{run}-{round}-{i}"));
        let measured = [
            target
                .drive(
                    "bare writes",
                    "/bare/customers",
                    per_round,
                    CONCURRENCY,
                    |_| None,
                )
                .await,
            target
                .drive(
                    "protected new writes",
                    "/api/customers",
                    per_round,
                    CONCURRENCY,
                    new_key,
                )
                .await,
            // The keys of this round's new writes again: every request is a replay.
            target
                .drive("replays", "/api/customers", per_round, CONCURRENCY, new_key)
                .await,
            target
                .drive(
                    "actix-idempotent new writes",
                    "/middleware/customers",
                    per_round,
                    CONCURRENCY,
                    |_| None,
                )
                .await,
        ];
        new_write_ratios.push(measured[1].throughput() / measured[0].throughput());
        if rows.is_empty() {
            rows.extend(measured);
        } else {
            for (total, row) in rows.iter_mut().zip(measured) {
                total.add(row);
            }
        }
    }
    let burst_key = format!("burst-{run}");
    rows.push(
        target
            .drive(
                "500-request same-key burst",
                "/api/customers",
                BURST,
                BURST,
                |_| Some(burst_key.clone()),
            )
            .await,
    );
    // The burst behind actix-idempotent comes from one client holding one session (its cache
    // is per session).
    let cookie = target.session_cookie().await;
    rows.push(
        target
            .drive_with_cookie(
                "actix-idempotent 500-request burst",
                "/middleware/customers",
                BURST,
                BURST,
                |_| Some(burst_key.clone()),
                Some(&cookie),
            )
            .await,
    );
    handle.stop(true).await;
    println!("{database}: done");
    Ok(Measured {
        rows,
        new_write_ratios,
    })
}

pub(crate) fn merge(total: &mut Option<Row>, row: Row) {
    match total {
        Some(total) => total.add(row),
        None => *total = Some(row),
    }
}

pub(crate) fn report(results: &[(&str, Measured)]) -> (String, Value) {
    let mut markdown = String::from(
        "| database | scenario | requests | throughput (req/s) | × bare | p50 (ms) | × bare | p99 (ms) | × bare | rows written |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut json_rows = Vec::new();
    for (database, Measured { rows, .. }) in results {
        let bare = &rows[0];
        for row in rows {
            let _ = writeln!(
                markdown,
                "| {database} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                row.name,
                row.requests,
                row.throughput(),
                row.throughput() / bare.throughput(),
                row.p(0.5),
                row.p(0.5) / bare.p(0.5),
                row.p(0.99),
                row.p(0.99) / bare.p(0.99),
                row.rows_written,
            );
            json_rows.push(json!({
                "database": database, "scenario": row.name, "requests": row.requests,
                "throughput_rps": row.throughput(), "throughput_ratio_to_bare": row.throughput() / bare.throughput(),
                "p50_ms": row.p(0.5), "p99_ms": row.p(0.99),
                "p50_ratio_to_bare": row.p(0.5) / bare.p(0.5), "p99_ratio_to_bare": row.p(0.99) / bare.p(0.99),
                "rows_written": row.rows_written,
            }));
        }
    }
    let mut rounds = serde_json::Map::new();
    for (database, measured) in results {
        let ratios = &measured.new_write_ratios;
        let _ = writeln!(
            markdown,
            "\n{database}: protected new writes ÷ bare writes in each of the {ROUNDS} rounds: {}.",
            ratios
                .iter()
                .map(|ratio| format!("{ratio:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rounds.insert((*database).to_owned(), json!(ratios));
    }
    (
        markdown,
        json!({
            "concurrency": CONCURRENCY,
            "rounds": ROUNDS,
            "rows": json_rows,
            "new_write_ratio_per_round": rounds,
        }),
    )
}
