//! Every operation against its bare twin, saturated and at rest, and their table.

use super::*;

/// The operations measured against their bare twins: AccuBooks' cheapest write and three
/// heavier ones.
#[derive(Clone, Copy)]
pub(crate) enum Operation {
    CreateCustomer,
    CreateInvoice,
    CreatePayment,
    AdjustInventory,
}

impl Operation {
    pub(crate) const ALL: [Self; 4] = [
        Self::CreateCustomer,
        Self::CreateInvoice,
        Self::CreatePayment,
        Self::AdjustInventory,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::CreateCustomer => "createCustomer",
            Self::CreateInvoice => "createInvoice (3 lines)",
            Self::CreatePayment => "createPayment",
            Self::AdjustInventory => "adjustInventory",
        }
    }

    /// The table that gains one row per write: the count that proves the writes happened.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Self::CreateCustomer => "customers",
            Self::CreateInvoice => "invoices",
            Self::CreatePayment => "payments",
            Self::AdjustInventory => "inventory_adjustments",
        }
    }

    /// Request `i`'s path under `prefix` (`/api` or `/bare`) and body. Payments and
    /// adjustments spread over many invoices and items, so that concurrent writes do not all
    /// queue on one row.
    pub(crate) fn request(self, prefix: &str, i: usize, fixtures: &Fixtures) -> (String, Value) {
        match self {
            Self::CreateCustomer => (
                format!("{prefix}/customers"),
                json!({ "name": "Bench Customer" }),
            ),
            Self::CreateInvoice => (
                format!("{prefix}/invoices"),
                json!({
                    "customer_id": fixtures.customer, "currency": "USD",
                    "lines": [
                        { "description": "Design", "quantity": 3, "unit_price_cents": 12_000 },
                        { "description": "Build", "quantity": 10, "unit_price_cents": 9_500 },
                        { "description": "Support", "quantity": 1, "unit_price_cents": 40_000 },
                    ],
                }),
            ),
            Self::CreatePayment => (
                format!("{prefix}/payments"),
                json!({
                    "invoice_id": fixtures.invoices[i % fixtures.invoices.len()],
                    "amount_cents": 1,
                }),
            ),
            Self::AdjustInventory => (
                format!(
                    "{prefix}/inventory/{}/adjustments",
                    fixtures.items[i % fixtures.items.len()]
                ),
                json!({ "delta": 1, "reason": "bench" }),
            ),
        }
    }
}

/// What the operations' requests refer to.
pub(crate) struct Fixtures {
    pub(crate) customer: String,
    pub(crate) invoices: Vec<String>,
    pub(crate) items: Vec<String>,
}

/// How many invoices and items the payments and adjustments spread over.
pub(crate) const FIXTURE_ROWS: usize = 64;
/// Requests per side (bare, protected) of one operation in one saturated round.
pub(crate) const OPERATION_REQUESTS: usize = 400;
/// Requests per side of one operation at rest (one client), in two interleaved halves.
pub(crate) const AT_REST_REQUESTS: usize = 200;

/// One operation, bare and protected: saturated and at rest.
pub(crate) struct OperationResult {
    pub(crate) operation: Operation,
    pub(crate) bare: Row,
    pub(crate) protected: Row,
    pub(crate) ratios: Vec<f64>,
    pub(crate) bare_at_rest: Row,
    pub(crate) protected_at_rest: Row,
}

impl Target {
    /// One protected write, which must succeed: its answer.
    pub(crate) async fn create(&self, path: &str, key: String, body: Value) -> Value {
        let mut response = Client::default()
            .post(format!("{}{path}", self.base))
            .insert_header(("authorization", format!("Bearer {}", self.token)))
            .insert_header(("idempotency-key", key))
            .send_json(&body)
            .await
            .expect("the server answers");
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.expect("a JSON answer")
    }

    /// Writes, through the protected API, the customer, the final invoices and the items
    /// that the operations' requests refer to.
    pub(crate) async fn fixtures(&self, run: &str) -> Fixtures {
        let customer = self
            .create(
                "/api/customers",
                format!("fx-{run}-c"),
                json!({ "name": "Payer" }),
            )
            .await["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        let mut invoices = Vec::new();
        let mut items = Vec::new();
        for n in 0..FIXTURE_ROWS {
            let invoice = self
                .create(
                    "/api/invoices",
                    format!("fx-{run}-i{n}"),
                    json!({ "customer_id": customer, "currency": "USD", "lines": [
                        { "description": "Retainer", "quantity": 1, "unit_price_cents": 1_000_000_000 },
                    ] }),
                )
                .await["id"]
                .as_str()
                .expect("an id")
                .to_owned();
            self.create(
                &format!("/api/invoices/{invoice}/finalize"),
                format!("fx-{run}-f{n}"),
                json!({}),
            )
            .await;
            invoices.push(invoice);
            let item = self
                .create(
                    "/api/inventory",
                    format!("fx-{run}-s{n}"),
                    json!({ "sku": format!("sku-{run}-{n}"), "name": "Widget" }),
                )
                .await["id"]
                .as_str()
                .expect("an id")
                .to_owned();
            items.push(item);
        }
        Fixtures {
            customer,
            invoices,
            items,
        }
    }

    /// Sends `requests` requests of `operation` under `prefix`, `concurrency` at a time, each
    /// with a new key `{keys}-{i}` when `keys` is given.
    pub(crate) async fn drive_operation(
        &self,
        operation: Operation,
        prefix: &str,
        keys: Option<&str>,
        requests: usize,
        concurrency: usize,
        fixtures: &Fixtures,
    ) -> Row {
        self.send_all(
            operation.name(),
            operation.table(),
            requests,
            concurrency,
            |i| {
                let (path, body) = operation.request(prefix, i, fixtures);
                Request {
                    path,
                    key: keys.map(|keys| format!("{keys}-{i}")),
                    cookie: None,
                    body,
                }
            },
        )
        .await
    }
}

/// Measures every [`Operation`] on one database against its bare twin: saturated (fixed
/// concurrency, interleaved rounds) and at rest (one client, interleaved halves).
pub(crate) async fn measure_operations(
    database: &str,
    url: &str,
) -> Result<Vec<OperationResult>, Box<dyn std::error::Error>> {
    let (target, handle) = Target::start(url, StoreConfig::default()).await?;
    let run = format!("op{:x}", std::process::id());
    let fixtures = target.fixtures(&run).await;
    let mut results = Vec::new();
    for operation in Operation::ALL {
        let tag = |side: &str| format!("{run}-{}-{side}", operation.table());
        // Warm up both paths.
        target
            .drive_operation(operation, "/bare", None, 100, CONCURRENCY, &fixtures)
            .await;
        target
            .drive_operation(
                operation,
                "/api",
                Some(&tag("warm")),
                100,
                CONCURRENCY,
                &fixtures,
            )
            .await;
        let (mut bare, mut protected, mut ratios): (Option<Row>, Option<Row>, Vec<f64>) =
            (None, None, Vec::new());
        for round in 0..ROUNDS {
            let b = target
                .drive_operation(
                    operation,
                    "/bare",
                    None,
                    OPERATION_REQUESTS,
                    CONCURRENCY,
                    &fixtures,
                )
                .await;
            let p = target
                .drive_operation(
                    operation,
                    "/api",
                    Some(&tag(&format!("r{round}"))),
                    OPERATION_REQUESTS,
                    CONCURRENCY,
                    &fixtures,
                )
                .await;
            ratios.push(p.throughput() / b.throughput());
            merge(&mut bare, b);
            merge(&mut protected, p);
        }
        let (mut bare_at_rest, mut protected_at_rest) = (None, None);
        for half in 0..2 {
            let b = target
                .drive_operation(operation, "/bare", None, AT_REST_REQUESTS / 2, 1, &fixtures)
                .await;
            let p = target
                .drive_operation(
                    operation,
                    "/api",
                    Some(&tag(&format!("rest{half}"))),
                    AT_REST_REQUESTS / 2,
                    1,
                    &fixtures,
                )
                .await;
            merge(&mut bare_at_rest, b);
            merge(&mut protected_at_rest, p);
        }
        results.push(OperationResult {
            operation,
            bare: bare.expect("at least one round"),
            protected: protected.expect("at least one round"),
            ratios,
            bare_at_rest: bare_at_rest.expect("two halves"),
            protected_at_rest: protected_at_rest.expect("two halves"),
        });
    }
    handle.stop(true).await;
    println!("{database}: operations done");
    Ok(results)
}

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

/// The operations' table, and its JSON.
pub(crate) fn report_operations(results: &[(&str, Vec<OperationResult>)]) -> (String, Value) {
    let mut markdown = format!(
        "| database | operation | bare (req/s) | protected new writes (req/s) | × bare (median of {ROUNDS} rounds) | rounds | at rest: bare p50 (ms) | protected p50 (ms) | idem adds (ms) | rows written (bare + protected) |\n\
         | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n"
    );
    let mut rows = Vec::new();
    for (database, operations) in results {
        for result in operations {
            let ratio = median(&result.ratios);
            let added = result.protected_at_rest.p(0.5) - result.bare_at_rest.p(0.5);
            let written = result.bare.rows_written
                + result.protected.rows_written
                + result.bare_at_rest.rows_written
                + result.protected_at_rest.rows_written;
            let _ = writeln!(
                markdown,
                "| {database} | {} | {:.0} | {:.0} | {ratio:.2} | {} | {:.2} | {:.2} | {added:+.2} | {written} |",
                result.operation.name(),
                result.bare.throughput(),
                result.protected.throughput(),
                result
                    .ratios
                    .iter()
                    .map(|ratio| format!("{ratio:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                result.bare_at_rest.p(0.5),
                result.protected_at_rest.p(0.5),
            );
            rows.push(json!({
                "database": database, "operation": result.operation.name(),
                "bare_rps": result.bare.throughput(), "protected_rps": result.protected.throughput(),
                "ratio_median": ratio, "ratios": result.ratios,
                "at_rest_bare_p50_ms": result.bare_at_rest.p(0.5),
                "at_rest_protected_p50_ms": result.protected_at_rest.p(0.5),
                "at_rest_added_ms": added, "rows_written": written,
            }));
        }
    }
    (markdown, json!(rows))
}
