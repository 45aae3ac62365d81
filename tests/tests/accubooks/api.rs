//! The API as a client meets it (reads, errors, money arithmetic), in one server.

use super::*;

/// An answer with its headers, for the checks of HTTP semantics.
pub(crate) struct Full {
    pub(crate) status: u16,
    pub(crate) headers: actix_web::http::header::HeaderMap,
    pub(crate) body: Value,
}

impl TestApp {
    pub(crate) async fn request(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: Option<Value>,
    ) -> Full {
        let client = Client::builder().timeout(Duration::from_secs(30)).finish();
        let mut request = client.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(authorization) = authorization {
            request = request.insert_header(("authorization", authorization));
        }
        request = request.insert_header(("idempotency-key", format!("http-{}", fastrand::u64(..))));
        let mut response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        }
        .expect("the server answers");
        let bytes = response.body().await.expect("a readable body");
        Full {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }
}

impl Full {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }

    pub(crate) fn assert_problem(&self, status: u16, anchor: &str) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            "application/problem+json",
            "{}",
            self.body
        );
        let problem_type = self.body["type"].as_str().unwrap_or_default();
        assert!(
            problem_type.ends_with(&format!("#{anchor}")),
            "{}",
            self.body
        );
        assert_eq!(self.body["status"], status);
        assert!(!self.body["detail"].as_str().unwrap_or_default().is_empty());
    }
}

/// What a client of the API meets around the writes: problem+json for every refusal, 405 with
/// `Allow`, RFC 9110's challenge on 401, a case-insensitive scheme, 503 when the token cannot be
/// checked, the settings as one object, and the audit log naming the user.
pub(crate) async fn the_api_answers_as_a_client_expects(app: TestApp) {
    let bearer = format!("Bearer {}", app.a.token);
    app.request("GET", "/api/nothing-here", Some(&bearer), None)
        .await
        .assert_problem(404, "no-route");
    app.request("GET", "/", None, None)
        .await
        .assert_problem(404, "no-route");
    // A mutation the API does not serve never reaches a handler: the mutation gate answers it.
    let wrong = app
        .request("DELETE", "/api/customers", Some(&bearer), None)
        .await;
    wrong.assert_problem(405, "unprotected-mutation");
    let wrong = app
        .request("GET", "/api/invoices/42/finalize", Some(&bearer), None)
        .await;
    wrong.assert_problem(405, "method-not-allowed");
    assert_eq!(wrong.header("allow"), "POST");
    let wrong = app
        .request("PUT", "/api/companies", None, Some(json!({ "name": "X" })))
        .await;
    wrong.assert_problem(405, "unprotected-mutation");

    let anonymous = app.request("GET", "/api/customers", None, None).await;
    anonymous.assert_problem(401, "tenant-unresolved");
    assert!(
        anonymous
            .header("www-authenticate")
            .starts_with("Bearer realm="),
        "{:?}",
        anonymous.headers
    );
    let forged = app
        .request("GET", "/api/customers", Some("Bearer ab_not_a_token"), None)
        .await;
    forged.assert_problem(401, "tenant-unresolved");
    assert!(
        forged
            .header("www-authenticate")
            .contains("error=\"invalid_token\"")
    );
    let lower = app
        .request(
            "GET",
            "/api/customers",
            Some(&format!("bearer {}", app.a.token)),
            None,
        )
        .await;
    assert_eq!(
        lower.status, 200,
        "the scheme is case-insensitive: {}",
        lower.body
    );
    let upper = app
        .request(
            "POST",
            "/api/customers",
            Some(&format!("BEARER {}", app.a.token)),
            Some(json!({ "name": "Upper" })),
        )
        .await;
    assert_eq!(upper.status, 201, "{}", upper.body);

    let none = app
        .request("GET", "/api/company/settings", Some(&bearer), None)
        .await;
    none.assert_problem(404, "not-found");
    let put = app
        .request(
            "PUT",
            "/api/company/settings",
            Some(&bearer),
            Some(json!({ "currency": "EUR", "invoice_prefix": "AC", "payment_terms_days": 30 })),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    let settings = app
        .request("GET", "/api/company/settings", Some(&bearer), None)
        .await;
    assert_eq!(settings.status, 200);
    assert_eq!(
        settings.body,
        json!({ "currency": "EUR", "invoice_prefix": "AC", "payment_terms_days": 30 })
    );

    // Every write of the token is the owner's, in the audit log.
    app.accubooks.store().flush_audit().await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM idempotent_write_audit_log WHERE company_id = $1 AND (user_id IS NULL OR user_id NOT IN (SELECT user_id FROM api_tokens WHERE company_id = $1))", &app.a).await,
        0,
        "every audit row names the token's user"
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM idempotent_write_audit_log WHERE company_id = $1",
            &app.a
        )
        .await,
        2
    );

    // The token table is unreachable: the server's failure, a 503 to retry, not a 401. (The
    // simple protocol: nothing prepared, so it runs as it is through PgBouncer too.)
    sqlx::raw_sql("ALTER TABLE api_tokens RENAME TO api_tokens_away")
        .execute(app.accubooks.store().pool())
        .await
        .unwrap();
    let down = app
        .request(
            "POST",
            "/api/customers",
            Some(&bearer),
            Some(json!({ "name": "Down" })),
        )
        .await;
    down.assert_problem(503, "tenant-unavailable");
    assert!(
        down.header("retry-after")
            .parse::<u64>()
            .is_ok_and(|seconds| seconds >= 1)
    );
    assert!(down.header("www-authenticate").is_empty());
    sqlx::raw_sql("ALTER TABLE api_tokens_away RENAME TO api_tokens")
        .execute(app.accubooks.store().pool())
        .await
        .unwrap();
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM customers WHERE company_id = $1",
            &app.a
        )
        .await,
        1,
        "only Upper"
    );
    app.stop().await;
}

/// Money and quantities never overflow: an amount past the bound, a line whose amount or an
/// invoice whose total does not fit, a delta of `i64::MAX` or `i64::MIN` are 422 problems that
/// name the field, and nothing is written.
pub(crate) async fn money_arithmetic_is_checked(app: TestApp) {
    let bearer = format!("Bearer {}", app.a.token);
    let customer = customer(&app).await;
    let refused = |path: &'static str, body: Value, field: &'static str| {
        let bearer = bearer.clone();
        let app = &app;
        async move {
            let answer = app.request("POST", path, Some(&bearer), Some(body)).await;
            answer.assert_problem(422, "business-rule");
            let detail = answer.body["detail"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(detail.contains(field), "{path}: {detail}");
        }
    };
    let max_quantity = 1_000_000_000_i64;
    let max_cents = 10_000_000_000_000_i64;
    refused(
        "/api/invoices",
        json!({ "customer_id": customer, "currency": "EUR", "lines": [
        { "description": "a lot", "quantity": max_quantity, "unit_price_cents": max_cents } ] }),
        "lines[0].amount_cents",
    )
    .await;
    refused(
        "/api/invoices",
        json!({ "customer_id": customer, "currency": "EUR", "lines": [
        { "description": "too many", "quantity": i64::MAX, "unit_price_cents": 1 } ] }),
        "quantity",
    )
    .await;
    // Each line fits (10^18 cents); ten of them do not.
    let many = (0..10).map(|n| json!({ "description": format!("line {n}"), "quantity": max_quantity, "unit_price_cents": 1_000_000_000 })).collect::<Vec<_>>();
    refused(
        "/api/invoices",
        json!({ "customer_id": customer, "currency": "EUR", "lines": many }),
        "total_cents",
    )
    .await;
    refused(
        "/api/employees",
        json!({ "name": "Rich", "monthly_salary_cents": i64::MAX, "currency": "EUR" }),
        "monthly_salary_cents",
    )
    .await;
    refused(
        "/api/bank-transactions",
        json!({ "amount_cents": i64::MIN, "currency": "EUR", "description": "huge" }),
        "amount_cents",
    )
    .await;
    let item = app
        .create(
            &app.a,
            post("/api/inventory", json!({ "sku": "BIG", "name": "Bolt" })),
        )
        .await;
    for delta in [i64::MAX, i64::MIN, max_quantity + 1] {
        refused(
            Box::leak(format!("/api/inventory/{item}/adjustments").into_boxed_str()),
            json!({ "delta": delta, "reason": "overflow" }),
            "delta",
        )
        .await;
    }
    for written in [
        "SELECT COUNT(*) FROM invoices WHERE company_id = $1",
        "SELECT COUNT(*) FROM invoice_lines WHERE invoice_id IN (SELECT id FROM invoices WHERE company_id = $1)",
        "SELECT COUNT(*) FROM employees WHERE company_id = $1",
        "SELECT COUNT(*) FROM bank_transactions WHERE company_id = $1",
        "SELECT COUNT(*) FROM inventory_adjustments WHERE company_id = $1",
    ] {
        assert_eq!(
            app.count(written, &app.a).await,
            0,
            "nothing written: {written}"
        );
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM inventory_items WHERE company_id = $1 AND quantity = 0",
            &app.a
        )
        .await,
        1
    );

    // Even a handler that forgot its checks could not store a negative total or stock.
    for sql in [
        "UPDATE inventory_items SET quantity = -1 WHERE company_id = $1",
        "INSERT INTO payroll_runs (id, company_id, period, currency, total_cents, created_at_ms) VALUES ('neg', $1, '2026-01', 'EUR', -2, 0)",
    ] {
        let refused = sqlx::query(sqlx::AssertSqlSafe(app.sql(sql)))
            .bind(&app.a.id)
            .execute(&app.admin)
            .await
            .expect_err(sql);
        assert!(
            refused.to_string().to_lowercase().contains("constraint"),
            "a constraint refuses {sql}: {refused}"
        );
    }
    app.stop().await;
}
