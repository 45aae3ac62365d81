//! What a stored answer's size costs: `createCustomer` at rest (one client), its answer (the
//! customer, whose name it echoes) 1, 16 or 64 KiB, as new writes and as replays. The cost per
//! KiB is the slope of the median latency from the smallest answer to the largest. The answers
//! stay well inside `Idempotency::with_answer_limit` (1 MiB by default), past which a handler's
//! answer is refused `500 #write-failed` and nothing is written.

use super::*;

/// The answers' sizes, in KiB.
const SIZES_KIB: [usize; 3] = [1, 16, 64];
/// Requests per size and kind, one at a time.
const AT_REST: usize = 200;

/// One answer size on one database.
pub(crate) struct AnswerSize {
    kib: usize,
    /// The bare twin with the same body: what the size costs without idem.
    bare: Row,
    new_writes: Row,
    replays: Row,
}

/// New writes and their replays at each size, on the database at `url`.
pub(crate) async fn measure_answer_sizes(
    url: &str,
) -> Result<Vec<AnswerSize>, Box<dyn std::error::Error>> {
    let (target, handle) = Target::start(url, StoreConfig::default()).await?;
    let run = format!("{:x}", std::process::id());
    let mut sizes = Vec::new();
    for kib in SIZES_KIB {
        // The answer carries the name and a few fields: the name makes up the size.
        let name = "n".repeat(kib * 1024 - 100);
        let request = |i| Request {
            path: "/api/customers".to_owned(),
            key: Some(format!("answer-{run}-{kib}-{i}")),
            cookie: None,
            body: json!({ "name": name }),
        };
        let bare = target
            .send_all("bare writes", "customers", AT_REST, 1, |i| Request {
                path: "/bare/customers".to_owned(),
                key: None,
                ..request(i)
            })
            .await;
        let new_writes = target
            .send_all("new writes", "customers", AT_REST, 1, request)
            .await;
        let replays = target
            .send_all("replays", "customers", AT_REST, 1, request)
            .await;
        sizes.push(AnswerSize {
            kib,
            bare,
            new_writes,
            replays,
        });
    }
    handle.stop(true).await;
    Ok(sizes)
}

/// The table of every database's sizes, and each one's cost per KiB.
pub(crate) fn report_answer_sizes(results: &[(&str, Vec<AnswerSize>)]) -> (String, Value) {
    let mut markdown = format!(
        "What a stored answer's size costs, at rest (one client, {AT_REST} requests per size and kind; the answer is the customer, its name making up the size):\n\n\
         | database | answer (KiB) | bare write p50 (ms) | new write p50 (ms) | replay p50 (ms) | rows written (bare + new + replays) |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut json_rows = Vec::new();
    let mut slopes = String::new();
    for (database, sizes) in results {
        for size in sizes {
            let _ = writeln!(
                markdown,
                "| {database} | {} | {:.2} | {:.2} | {:.2} | {} |",
                size.kib,
                size.bare.p(0.5),
                size.new_writes.p(0.5),
                size.replays.p(0.5),
                size.bare.rows_written + size.new_writes.rows_written + size.replays.rows_written,
            );
            json_rows.push(json!({
                "database": database, "answer_kib": size.kib, "bare_p50_ms": size.bare.p(0.5),
                "new_write_p50_ms": size.new_writes.p(0.5), "replay_p50_ms": size.replays.p(0.5),
            }));
        }
        if let (Some(small), Some(large)) = (sizes.first(), sizes.last()) {
            let kib = (large.kib - small.kib) as f64;
            let _ = writeln!(
                slopes,
                "\n{database}: each KiB of answer adds {:.3} ms to a bare write, {:.3} ms to a new write and {:.3} ms to a replay.",
                (large.bare.p(0.5) - small.bare.p(0.5)) / kib,
                (large.new_writes.p(0.5) - small.new_writes.p(0.5)) / kib,
                (large.replays.p(0.5) - small.replays.p(0.5)) / kib,
            );
        }
    }
    markdown.push_str(&slopes);
    (markdown, Value::Array(json_rows))
}
