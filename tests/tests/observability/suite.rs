//! Drives each outcome (new, replayed, mismatch, failed, conflict) through real HTTP, then reads
//! the counters from the rendered `/metrics`, the fields of the `idem.write` spans from a test
//! subscriber, and the audit rows with SQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use awc::Client;
use idem_actix::prometheus::{install_recorder, metrics_service};
use idem_actix::sha256_hex;
use idem_actix::{
    Idempotency, IdempotencyKey, ProtectedRoutes, StoreConfig, WriteContext, financial_mutation,
};
use idem_tests::{FixedTenant, TestDb};
use serde::Deserialize;
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry};

use super::Db;

const TENANT: &str = "company-observed";

#[derive(Deserialize)]
struct Transfer {
    amount_cents: i64,
    #[serde(default)]
    hold_ms: u64,
    #[serde(default)]
    panic: bool,
}

#[derive(Debug, thiserror::Error)]
enum TransferError {
    #[error("transfers must be positive")]
    NotPositive,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ResponseError for TransferError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotPositive => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Moves money: writes a row, records a workflow event, and can be told to hold, refuse or
/// panic.
#[financial_mutation("createTransfer", post = "/transfers")]
async fn create_transfer(
    _key: IdempotencyKey,
    write: &mut WriteContext<'_, Db>,
    transfer: web::Json<Transfer>,
) -> Result<HttpResponse, TransferError> {
    assert!(!transfer.panic, "the transfer handler has a bug");
    if transfer.amount_cents <= 0 {
        return Err(TransferError::NotPositive);
    }
    let (id, tenant) = (write.entity_id(), write.tenant().as_str().to_owned());
    Db::insert_payment(write.tx(), id, &tenant, transfer.amount_cents).await?;
    write.record_event("notify_treasury", id.as_bytes()).await?;
    tokio::time::sleep(Duration::from_millis(transfer.hold_ms)).await;
    Ok(HttpResponse::Created().json(json!({ "id": id })))
}

/// The fields of every closed `idem.write` span.
#[derive(Clone, Default)]
struct ClosedSpans(Arc<Mutex<Vec<HashMap<String, String>>>>);

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for ClosedSpans {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        if attributes.metadata().name() == "idem.write" {
            let mut fields = Fields::default();
            attributes.record(&mut fields);
            let span = context.span(id).expect("a new span exists");
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, context: Context<'_, S>) {
        if let Some(span) = context.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<Fields>()
        {
            values.record(fields);
        }
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        if let Some(span) = context.span(&id)
            && let Some(fields) = span.extensions_mut().remove::<Fields>()
        {
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

pub async fn every_outcome_is_counted_traced_and_audited() {
    let spans = ClosedSpans::default();
    tracing::subscriber::set_global_default(Registry::default().with(spans.clone()))
        .expect("the only subscriber of this test binary");
    let metrics = install_recorder().expect("the only recorder of this test binary");

    let config = StoreConfig::default().with_lock_timeout(Duration::from_millis(200));
    let db = Db::fresh(config).await;
    let routes = ProtectedRoutes::new(Idempotency::new(
        db.store.clone(),
        FixedTenant::new(TENANT).with_user("ada@observed.example"),
    ))
    .financial(create_transfer)
    .verify()
    .await
    .expect("the startup check passes");
    let (base, handle) = idem_tests::serve(routes.mutation_gate(), move |config| {
        routes.configure(config);
        config.service(metrics_service(metrics.clone()));
    });

    let client = Client::builder().timeout(Duration::from_secs(30)).finish();
    let send = |key: &'static str, body: serde_json::Value| {
        let request = client
            .post(format!("{base}/transfers"))
            .insert_header(("idempotency-key", key))
            .insert_header(("x-request-id", format!("req-{key}")));
        async move { request.send_json(&body).await.unwrap().status().as_u16() }
    };

    // The metrics, as Prometheus scrapes them.
    let scrape = || {
        let request = client.get(format!("{base}/metrics"));
        async move {
            let mut response = request.send().await.unwrap();
            String::from_utf8(response.body().await.unwrap().to_vec()).unwrap()
        }
    };
    let lost_rows = |text: &str| {
        idem_tests::metric(
            text,
            "idempotent_write_audit_rows_lost_total",
            &[("operation", "createTransfer"), ("class", "financial")],
        )
    };

    // Before the first request: every counter of the operation is there, at zero, with HELP.
    let fresh = scrape().await;
    let series = |name: &str, labels: &str| format!("{name}{{{labels}}} 0");
    for line in [
        series(
            "idempotent_writes_total",
            "operation=\"createTransfer\",class=\"financial\",outcome=\"failed\"",
        ),
        series(
            "idempotent_writes_total",
            "operation=\"createTransfer\",class=\"financial\",outcome=\"new\"",
        ),
        series(
            "idempotent_writes_failed_total",
            "operation=\"createTransfer\",class=\"financial\",reason=\"store\"",
        ),
        series(
            "idempotent_writes_replayed_total",
            "operation=\"createTransfer\",class=\"financial\"",
        ),
        series(
            "idempotent_writes_workflows_triggered_total",
            "operation=\"createTransfer\",class=\"financial\"",
        ),
        series(
            "idempotent_write_audit_rows_lost_total",
            "operation=\"createTransfer\",class=\"financial\"",
        ),
        series(
            "idempotent_maintenance_purged_rows_total",
            "table=\"audit\"",
        ),
        "idempotent_outbox_dispatch_errors_total 0".to_owned(),
        series(
            "idempotent_write_duration_ms_count",
            "operation=\"createTransfer\",class=\"financial\",outcome=\"new\"",
        ),
    ] {
        assert!(
            fresh.lines().any(|sample| sample == line),
            "missing at startup: {line}\n{fresh}"
        );
    }
    // Every counter and the histogram; the outbox gauges appear with a dispatcher's first pass.
    let has_help = |text: &str, name: &str| {
        text.lines()
            .any(|line| line.starts_with(&format!("# HELP {name} ")))
    };
    let later = [
        idem_runtime::OUTBOX_EVENTS_PENDING,
        idem_runtime::OUTBOX_EVENTS_PARKED,
        idem_runtime::OUTBOX_OLDEST_PENDING_AGE_SECONDS,
    ];
    for name in idem_runtime::METRIC_NAMES
        .into_iter()
        .filter(|name| !later.contains(name))
    {
        assert!(has_help(&fresh, name), "no HELP for {name}");
    }

    assert_eq!(send("k-new", json!({ "amount_cents": 100 })).await, 201);
    assert_eq!(send("k-new", json!({ "amount_cents": 100 })).await, 200);
    assert_eq!(send("k-new", json!({ "amount_cents": 999 })).await, 422);
    assert_eq!(send("k-refused", json!({ "amount_cents": -1 })).await, 422);
    assert_eq!(
        send("k-panic", json!({ "amount_cents": 1, "panic": true })).await,
        500
    );
    let slow = send("k-slow", json!({ "amount_cents": 5, "hold_ms": 800 }));
    let twin = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        send("k-slow", json!({ "amount_cents": 5, "hold_ms": 800 })).await
    };
    assert_eq!(tokio::join!(slow, twin), (201, 409));

    let text = scrape().await;
    assert!(has_help(&text, idem_runtime::WRITE_DURATION_MS));
    let total = |outcome| {
        idem_tests::metric(
            &text,
            "idempotent_writes_total",
            &[
                ("operation", "createTransfer"),
                ("class", "financial"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        [
            total("new"),
            total("replayed"),
            total("mismatch"),
            total("failed"),
            total("conflict")
        ],
        [2.0, 1.0, 1.0, 2.0, 1.0],
        "{text}"
    );
    assert_eq!(
        idem_tests::metric(
            &text,
            "idempotent_writes_replayed_total",
            &[("operation", "createTransfer")]
        ),
        1.0
    );
    assert_eq!(
        idem_tests::metric(
            &text,
            "idempotent_writes_failed_total",
            &[("reason", "handler")]
        ),
        1.0
    );
    assert_eq!(
        idem_tests::metric(
            &text,
            "idempotent_writes_failed_total",
            &[("reason", "panic")]
        ),
        1.0
    );
    assert_eq!(
        idem_tests::metric(
            &text,
            "idempotent_writes_workflows_triggered_total",
            &[("operation", "createTransfer")]
        ),
        2.0
    );
    assert_eq!(
        idem_tests::metric(
            &text,
            "idempotent_write_duration_ms_count",
            &[("outcome", "new")]
        ),
        2.0
    );
    assert!(
        idem_tests::metric(
            &text,
            "idempotent_write_duration_ms_bucket",
            &[("outcome", "conflict"), ("le", "+Inf")]
        ) >= 1.0
    );
    assert!(
        !text.contains(TENANT) && !text.contains("k-new"),
        "no tenant or key in any label"
    );

    // Spans: one per request, with the outcome, and the tenant and key only as hashes.
    let spans = spans.0.lock().unwrap().clone();
    let mut outcomes: Vec<&str> = spans.iter().map(|span| span["outcome"].as_str()).collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        [
            "conflict", "failed", "failed", "mismatch", "new", "new", "replayed"
        ]
    );
    let replayed = spans
        .iter()
        .find(|span| span["outcome"] == "replayed")
        .unwrap();
    assert_eq!(replayed["replayed"], "true");
    assert_eq!(replayed["operation"], "createTransfer");
    assert_eq!(replayed["class"], "financial");
    assert_eq!(replayed["key_hash"], sha256_hex(b"k-new"));
    assert_eq!(replayed["tenant_hash"], sha256_hex(TENANT.as_bytes()));
    // A replay reads the database: it takes time, and less than the test's whole run.
    let duration_ms = replayed["duration_ms"].parse::<f64>().unwrap();
    assert!(duration_ms > 0.0 && duration_ms < 30_000.0, "{duration_ms}");
    for span in &spans {
        assert!(
            span.values()
                .all(|value| !value.contains(TENANT) && !value.contains("k-"))
        );
    }

    // The audit log: one row per outcome, joined to a key by its hash. The rows of outcomes
    // that changed nothing are written after the answer; wait for them.
    db.store.flush_audit().await;
    let audit = |sql: &'static str, args: &'static [&'static str]| db.count(sql, args);
    let by_outcome = "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE outcome = $1";
    assert_eq!(audit(by_outcome, &["new"]).await, 2);
    assert_eq!(audit(by_outcome, &["replayed"]).await, 1);
    assert_eq!(audit(by_outcome, &["mismatch"]).await, 1);
    assert_eq!(audit(by_outcome, &["failed"]).await, 2);
    assert_eq!(audit(by_outcome, &["conflict"]).await, 1);
    let failed_by = "SELECT COUNT(*) FROM idempotent_write_audit_log
                     WHERE outcome = 'failed' AND failure = $1 AND key_hash = $2";
    let refused_hash = sha256_hex(b"k-refused");
    let panic_hash = sha256_hex(b"k-panic");
    assert_eq!(
        db.count(failed_by, &["handler", &refused_hash]).await,
        1,
        "the refused transfer is the handler's failure"
    );
    assert_eq!(
        db.count(failed_by, &["panic", &panic_hash]).await,
        1,
        "the panic is recorded as a panic, not as the handler's failure"
    );
    let key_hash = sha256_hex(b"k-new");
    let story = "SELECT COUNT(*) FROM idempotent_write_audit_log
                 WHERE company_id = $1 AND key_hash = $2 AND user_id = 'ada@observed.example'
                   AND request_id = 'req-k-new' AND operation = 'createTransfer' AND class = 'financial'";
    assert_eq!(
        db.count(story, &[TENANT, &key_hash]).await,
        3,
        "what happened to k-new, in one query"
    );
    assert_eq!(
        audit(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE status = 201",
            &[]
        )
        .await,
        3,
        "the two new writes and the replay of a stored 201"
    );

    // An audit row the database refuses after the answer is counted, never silently dropped.
    Db::execute(
        db.store.pool(),
        "ALTER TABLE idempotent_write_audit_log RENAME TO audit_log_away",
    )
    .await
    .expect("move the audit log away");
    assert_eq!(send("k-new", json!({ "amount_cents": 100 })).await, 200);
    db.store.flush_audit().await;
    Db::execute(
        db.store.pool(),
        "ALTER TABLE audit_log_away RENAME TO idempotent_write_audit_log",
    )
    .await
    .expect("bring the audit log back");
    assert_eq!(
        audit(by_outcome, &["replayed"]).await,
        1,
        "the row was lost"
    );
    assert_eq!(lost_rows(&scrape().await), 1.0, "the lost row is counted");

    // Rows still queued when a shutdown's bound runs out are counted lost too: another
    // transaction holds the audit log, so the writer waits on it past the bound.
    let holder = super::hold_audit_log(db.store.pool()).await;
    for _ in 0..3 {
        assert_eq!(send("k-new", json!({ "amount_cents": 100 })).await, 200);
    }
    assert_eq!(
        db.store
            .flush_audit_within(Duration::from_millis(300))
            .await,
        3,
        "the three replays' outcomes are given up at the bound"
    );
    assert_eq!(
        lost_rows(&scrape().await),
        4.0,
        "the rows given up at the bound are counted"
    );
    drop(holder);
    handle.stop(true).await;
}
