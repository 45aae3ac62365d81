//! What one request sends PostgreSQL, counted through the proxy of [`super::wire`].

use super::*;

/// Requests per side of one operation in the count of statements and round trips.
pub(crate) const WIRE_REQUESTS: u64 = 200;

/// What `WIRE_REQUESTS` requests of an operation send PostgreSQL: its bare twin, protected new
/// writes, and replays of them (with the audit rows written after the answers).
pub(crate) struct WireResult {
    pub(crate) operation: Operation,
    pub(crate) bare: Wire,
    pub(crate) new: Wire,
    pub(crate) replay: Wire,
}

impl Target {
    /// Sends `WIRE_REQUESTS` requests of `operation` one at a time (request `i` with key
    /// `{keys}-{i}` when `keys` is given), waits for their audit rows, and returns what the
    /// counter saw.
    pub(crate) async fn wire(
        &self,
        counter: &WireCounter,
        operation: Operation,
        prefix: &str,
        keys: Option<&str>,
        fixtures: &Fixtures,
    ) -> Wire {
        counter.take();
        for i in 0..WIRE_REQUESTS as usize {
            let (path, body) = operation.request(prefix, i, fixtures);
            let mut sending = Client::default()
                .post(format!("{}{path}", self.base))
                .insert_header(("authorization", format!("Bearer {}", self.token)));
            if let Some(keys) = keys {
                sending = sending.insert_header(("idempotency-key", format!("{keys}-{i}")));
            }
            let response = sending.send_json(&body).await.expect("the server answers");
            assert!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
        }
        self.store.flush_audit().await;
        counter.take()
    }
}

/// Counts the statements and round trips of every operation on PostgreSQL at `url`, through a
/// [`WireCounter`] (one client; the counts are exact, whatever the machine's load).
pub(crate) async fn count_wire(url: &str) -> Result<Vec<WireResult>, Box<dyn std::error::Error>> {
    let options: PgConnectOptions = url.parse()?;
    let (host, port) = (options.get_host().to_owned(), options.get_port());
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or("the PostgreSQL host has no address")?;
    let counter = WireCounter::start(upstream).await?;
    // The same database through the counter, in plaintext so that it can read the messages.
    let at = format!("@{host}:{port}/");
    let proxied = if url.contains(&at) {
        url.replacen(&at, &format!("@127.0.0.1:{}/", counter.port()), 1)
    } else {
        return Err(
            format!("give --postgres as postgres://user@host:port/database, not {url}").into(),
        );
    };
    let separator = if proxied.contains('?') { '&' } else { '?' };
    let proxied = format!("{proxied}{separator}sslmode=disable");
    let (target, handle) = Target::start(&proxied, StoreConfig::default()).await?;
    let run = format!("wire{:x}", std::process::id());
    let fixtures = target.fixtures(&run).await;
    let mut results = Vec::new();
    for operation in Operation::ALL {
        let keys = format!("{run}-{}", operation.table());
        // Warm the statement caches of both paths first.
        target
            .wire(&counter, operation, "/bare", None, &fixtures)
            .await;
        target
            .wire(
                &counter,
                operation,
                "/api",
                Some(&format!("{keys}-warm")),
                &fixtures,
            )
            .await;
        let bare = target
            .wire(&counter, operation, "/bare", None, &fixtures)
            .await;
        let new = target
            .wire(&counter, operation, "/api", Some(&keys), &fixtures)
            .await;
        let replay = target
            .wire(&counter, operation, "/api", Some(&keys), &fixtures)
            .await;
        results.push(WireResult {
            operation,
            bare,
            new,
            replay,
        });
    }
    handle.stop(true).await;
    println!("PostgreSQL: statements and round trips counted");
    Ok(results)
}

pub(crate) fn report_wire(results: &[WireResult]) -> (String, Value) {
    let mut markdown = String::from(
        "| operation | bare: statements | round trips | protected new write: statements | round trips | replay: statements | round trips |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let mut rows = Vec::new();
    let per_request = |count: u64| count as f64 / WIRE_REQUESTS as f64;
    for result in results {
        let sides = [result.bare, result.new, result.replay];
        let _ = write!(markdown, "| {} |", result.operation.name());
        for side in sides {
            let _ = write!(
                markdown,
                " {:.1} | {:.1} |",
                per_request(side.statements),
                per_request(side.round_trips)
            );
        }
        markdown.push('\n');
        let [bare, new, replay] = sides.map(|side| {
            json!({
                "statements": per_request(side.statements),
                "round_trips": per_request(side.round_trips),
            })
        });
        rows.push(json!({
            "operation": result.operation.name(),
            "bare": bare,
            "new": new,
            "replay": replay,
        }));
    }
    (markdown, Value::Array(rows))
}
