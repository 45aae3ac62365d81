//! Per operation: exactly once (a new write, its replay, the same key with another request, no
//! key, a refusal that frees the key, tenant isolation), a 500-request burst, and a key reused
//! after it expired; and fifty tenants writing at once.

use super::*;

pub(crate) async fn exactly_once(app: TestApp, op: Op) {
    let (case, operation) = (case(&app, op).await, op.name());
    let rows_before = app.count(case.rows, &app.a).await;
    let workflows_before = app.workflow_runs(&app.a).await;
    let key = format!("{operation}-key");

    // A business-rule refusal writes nothing and leaves the key free.
    let refused = app.send(&app.a, Some(&key), &case.refused).await;
    assert_eq!(
        refused.status, case.refused_status,
        "{operation} refused: {:?}",
        refused.body
    );
    assert_eq!(
        refused.json()["type"]
            .as_str()
            .map(|t| t.contains("accubooks.example")),
        Some(true)
    );
    assert_eq!(app.count(case.rows, &app.a).await, rows_before);

    // The corrected request with the same key is a new write.
    let new = app.send(&app.a, Some(&key), &case.ok).await;
    assert!(
        new.status.is_success() && !new.replayed,
        "{operation} new: {} {:?}",
        new.status,
        new.body
    );
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: one row"
    );

    // A retry replays the stored answer byte for byte and writes nothing more.
    let replay = app.send(&app.a, Some(&key), &case.ok).await;
    assert!(replay.replayed, "{operation}: the replay is marked");
    assert_eq!(replay.body, new.body, "{operation}: byte-identical");
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: no second row"
    );
    assert_eq!(
        app.workflow_runs(&app.a).await,
        workflows_before + case.workflows,
        "{operation}: workflows run once, after commit, never for the replay"
    );

    // The same key with another request is refused.
    let other = app.send(&app.a, Some(&key), &case.other).await;
    assert_eq!(
        other.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{operation}: {:?}",
        other.body
    );
    assert!(
        other.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("#key-reused")
    );

    // No key, no write.
    let keyless = app.send(&app.a, None, &case.ok).await;
    assert_eq!(keyless.status, StatusCode::BAD_REQUEST);
    assert!(
        keyless.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("#key-missing")
    );
    assert_eq!(app.count(case.rows, &app.a).await, rows_before + 1);

    // The key's audit trail: one row per outcome, the refusal's and the replay's included
    // (they are written after their answers, on this app's `Any` pool).
    assert_eq!(
        app.audit_trail(&app.a, operation, &key).await,
        ["failed", "mismatch", "new", "replayed"],
        "{operation}: the audit trail"
    );

    // Company B with A's key gets its own write or its own refusal, never A's answer.
    let b_rows_before = app.count(case.rows, &app.b).await;
    let b = app.send(&app.b, Some(&key), &case.ok).await;
    assert!(!b.replayed, "{operation}: B never replays A's answer");
    assert_eq!(
        b.status, case.cross_tenant,
        "{operation}: B's answer {:?}",
        b.body
    );
    let b_rows = app.count(case.rows, &app.b).await;
    if b.status.is_success() {
        assert_eq!(b_rows, b_rows_before + 1, "{operation}: B's own record");
        if let Some(a_id) = new.json()["id"].as_str() {
            let b_id = b.json()["id"].as_str().map(str::to_owned);
            assert!(
                b_id.is_some_and(|b_id| b_id != a_id),
                "{operation}: B's record is its own"
            );
        }
    } else {
        assert_eq!(
            b.json()["status"],
            b.status.as_u16(),
            "{operation}: a problem answer"
        );
        assert_ne!(
            b.body, new.body,
            "{operation}: B never sees A's stored response"
        );
        assert_eq!(b_rows, b_rows_before, "{operation}: nothing written for B");
    }
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: A untouched"
    );
    app.stop().await;
}

/// 500 concurrent requests with one key: one record, one workflow run where the operation
/// starts one, and 500 answers with byte-identical bodies.
pub(crate) async fn burst_of_500_writes_once(app: TestApp, op: Op) {
    let (case, operation) = (case(&app, op).await, op.name());
    let rows_before = app.count(case.rows, &app.a).await;
    let workflows_before = app.workflow_runs(&app.a).await;
    let key = format!("{operation}-burst");
    let answers =
        futures_util::future::join_all((0..500).map(|_| app.send(&app.a, Some(&key), &case.ok)))
            .await;
    let first = answers
        .iter()
        .find(|answer| !answer.replayed)
        .expect("one answer is the write");
    assert!(
        first.status.is_success(),
        "{operation}: {} {:?}",
        first.status,
        first.body
    );
    assert_eq!(
        answers.iter().filter(|answer| !answer.replayed).count(),
        1,
        "{operation}"
    );
    assert!(
        answers
            .iter()
            .all(|answer| answer.status.is_success() && answer.body == first.body),
        "{operation}: 500 byte-identical bodies"
    );
    assert_eq!(
        app.count(case.rows, &app.a).await,
        rows_before + 1,
        "{operation}: one record"
    );
    assert_eq!(
        app.workflow_runs(&app.a).await,
        workflows_before + case.workflows,
        "{operation}: one workflow at most"
    );
    // 500 outcomes in the audit log (batched after the answers, repeats counted in one row):
    // the write and 499 replays.
    let trail = app.audit_trail(&app.a, operation, &key).await;
    assert_eq!(trail.len(), 500, "{operation}: every request's outcome");
    assert_eq!(
        trail.iter().filter(|outcome| *outcome == "new").count(),
        1,
        "{operation}: one new write in the audit log"
    );
    assert!(
        trail
            .iter()
            .all(|outcome| outcome == "new" || outcome == "replayed"),
        "{operation}: {trail:?}"
    );
    app.stop().await;
}

/// A key used again after it expired runs the handler again, whose deterministic entity id is
/// taken: a clear 409 that says to use a new key, never a 500, a second record or a replay.
pub(crate) async fn key_reused_after_it_expired_is_a_clear_conflict(app: TestApp) {
    let call = post("/api/customers", json!({ "name": "Late Retry Ltd" }));
    let first = app.send(&app.a, Some("k-expiring"), &call).await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    tokio::time::sleep(EXPIRING_RETENTION * 2).await;

    let late = app.send(&app.a, Some("k-expiring"), &call).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{:?}", late.body);
    assert!(!late.replayed);
    assert!(
        late.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("#already-exists"),
        "{:?}",
        late.body
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM customers WHERE company_id = $1",
            &app.a
        )
        .await,
        1,
        "one customer"
    );
    assert_eq!(
        app.send(&app.a, Some("k-fresh"), &call).await.status,
        StatusCode::CREATED,
        "a new key writes"
    );
    app.stop().await;
}

/// How long keys live in the expiry test.
pub(crate) const EXPIRING_RETENTION: Duration = Duration::from_millis(300);

/// The waits of a test that sends 5000 requests at once: its point is that every key is written
/// once and every retry answers the same, not how fast a shared 2-core machine serves a flood,
/// so a request waits for a connection or its twin longer than the 5 s defaults.
pub(crate) fn flood_config() -> StoreConfig {
    StoreConfig::default()
        .with_acquire_timeout(Duration::from_secs(60))
        .with_lock_timeout(Duration::from_secs(60))
}

/// The operations a fresh company can call without setting anything up first, with the table
/// each writes to.
pub(crate) const STANDALONE: [(&str, &str); 5] = [
    ("/api/customers", "customers"),
    ("/api/employees", "employees"),
    ("/api/bank-transactions", "bank_transactions"),
    ("/api/inventory", "inventory_items"),
    ("/api/users", "users"),
];

pub(crate) fn standalone_body(operation: usize, n: usize) -> Value {
    match operation {
        0 => json!({ "name": format!("Customer {n}") }),
        1 => {
            json!({ "name": format!("Employee {n}"), "monthly_salary_cents": 300_000, "currency": "EUR" })
        }
        2 => {
            json!({ "amount_cents": 100 + n as i64, "currency": "EUR", "description": format!("wire {n}") })
        }
        3 => json!({ "sku": format!("SKU-{n}"), "name": "Widget" }),
        _ => json!({ "email": format!("user{n}@example.com") }),
    }
}

/// 50 companies × 10 keys × 10 retries of each, all at once, across five operations: exactly
/// 500 records, 10 per company, and every company reads back only its own.
pub(crate) async fn fifty_tenants_ten_keys_ten_retries(app: TestApp) {
    let mut companies = Vec::new();
    for n in 0..50 {
        companies.push(TestApp::company(&app.base, &format!("Tenant {n}")).await);
    }
    let calls: Vec<(usize, String, Call)> = (0..50)
        .flat_map(|tenant| (0..10).map(move |key| (tenant, key)))
        .flat_map(|(tenant, key)| {
            let operation = key % STANDALONE.len();
            let call = post(STANDALONE[operation].0, standalone_body(operation, key));
            (0..10).map(move |_| (tenant, format!("mixed-{key}"), call.clone()))
        })
        .collect();
    let answers = futures_util::future::join_all(
        calls
            .iter()
            .map(|(tenant, key, call)| app.send(&companies[*tenant], Some(key), call)),
    )
    .await;
    let refused: Vec<_> = answers
        .iter()
        .filter(|answer| !answer.status.is_success())
        .map(|answer| {
            (
                answer.status,
                String::from_utf8_lossy(&answer.body).into_owned(),
            )
        })
        .collect();
    assert!(
        refused.is_empty(),
        "every retry answers success: {refused:?}"
    );
    assert_eq!(
        answers.iter().filter(|answer| !answer.replayed).count(),
        500,
        "500 new writes"
    );

    let mut total = 0;
    for company in &companies {
        let mut own = 0;
        for (path, table) in STANDALONE {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE company_id = $1");
            let rows = app.count(&sql, company).await;
            let listed = app
                .send(
                    company,
                    None,
                    &Call {
                        method: "GET",
                        path: path.to_owned(),
                        body: Value::Null,
                    },
                )
                .await;
            let listed = listed.json().as_array().map_or(usize::MAX, Vec::len);
            assert_eq!(
                listed as i64, rows,
                "{path}: a company reads exactly its own rows"
            );
            own += rows;
        }
        assert_eq!(
            own, 11,
            "10 records per company, and the owner created with it"
        );
        total += own;
    }
    assert_eq!(total, 550);
    app.stop().await;
}
