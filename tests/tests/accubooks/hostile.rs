//! Hostile input: each is refused with a 4xx before any work, and nothing is written.

use super::*;

/// Sends raw bytes, so headers that no well-behaved client would build get through, and
/// returns the answer's status code.
/// Sends a hand-written request and reads the answer's status and `Content-Type`.
pub(crate) async fn raw_answer(app: &TestApp, request: Vec<u8>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = app.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    stream.write_all(&request).await.expect("send");
    // The head is enough; the server may close early on a body it refused.
    let mut answer = Vec::new();
    let mut chunk = [0; 4096];
    while !answer.windows(4).any(|window| window == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => answer.extend_from_slice(&chunk[..read]),
        }
    }
    let head = String::from_utf8_lossy(&answer);
    let status = head
        .get(9..12)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type)
}

pub(crate) fn raw_post(
    path: &str,
    token: &str,
    keys: &[&[u8]],
    content_type: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !token.is_empty() {
        request.extend_from_slice(format!("authorization: {token}\r\n").as_bytes());
    }
    for key in keys {
        request.extend_from_slice(b"idempotency-key: ");
        request.extend_from_slice(key);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request.extend_from_slice(body);
    request
}

/// Who refuses a hostile request.
enum Refused {
    /// The application: this status, with a problem+json body.
    Problem(u16),
    /// actix-web's HTTP parser, before any application code runs: a bare `400` (a control
    /// character or DEL in a header value is not HTTP).
    ByHttpParser,
}

/// Hostile keys, bodies, tenants and paths: each gets a 4xx in problem+json, nothing is
/// written, and the server keeps serving.
pub(crate) async fn hostile_input_is_refused_and_writes_nothing(app: TestApp) {
    let invoice = final_invoice(&app, 10_000).await;
    let b_item = app
        .create(
            &app.b,
            post("/api/inventory", json!({ "sku": "B-ITEM", "name": "Bolt" })),
        )
        .await;
    let (a, b) = (
        format!("Bearer {}", app.a.token),
        format!("Bearer {}", app.b.token),
    );
    let payment = |cents: i64| {
        json!({ "invoice_id": invoice, "amount_cents": cents })
            .to_string()
            .into_bytes()
    };
    let json_type = "application/json";
    let long_key = vec![b'k'; 256];
    let quoted_long_key = [b"\"".as_slice(), &[b'k'; 300], b"\""].concat();
    let huge = [
        b"{\"invoice_id\":\"".as_slice(),
        &vec![b'x'; 1 << 20],
        b"\",\"amount_cents\":1}",
    ]
    .concat();
    let long_path = format!("/api/invoices/{}/finalize", "9".repeat(10_000));

    let cases: Vec<(&str, Refused, Vec<u8>)> = vec![
        (
            "empty key",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b""], json_type, &payment(100)),
        ),
        (
            "empty quoted key",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b"\"\""], json_type, &payment(100)),
        ),
        (
            "256-byte key",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[&long_key], json_type, &payment(100)),
        ),
        (
            "300-byte quoted key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[&quoted_long_key],
                json_type,
                &payment(100),
            ),
        ),
        (
            "control character in key",
            Refused::ByHttpParser,
            raw_post("/api/payments", &a, &[b"k\x01ey"], json_type, &payment(100)),
        ),
        (
            "DEL in key",
            Refused::ByHttpParser,
            raw_post("/api/payments", &a, &[b"k\x7fey"], json_type, &payment(100)),
        ),
        (
            "non-ASCII key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &["ключ".as_bytes()],
                json_type,
                &payment(100),
            ),
        ),
        (
            "tab in quoted key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"\"a\tb\""],
                json_type,
                &payment(100),
            ),
        ),
        (
            "SQL with spaces as key",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"'; DROP TABLE payments; --"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "unterminated quote",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b"\"abc"], json_type, &payment(100)),
        ),
        (
            "three key headers",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"k1", b"k2", b"k3"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "malformed JSON",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"h-1"],
                json_type,
                b"{\"amount_cents\":",
            ),
        ),
        (
            "1 MiB body",
            Refused::Problem(413),
            raw_post("/api/payments", &a, &[b"h-2"], json_type, &huge),
        ),
        (
            "wrong types",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"h-3"],
                json_type,
                br#"{"invoice_id":5,"amount_cents":"ten"}"#,
            ),
        ),
        (
            "negative money",
            Refused::Problem(422),
            raw_post("/api/payments", &a, &[b"h-4"], json_type, &payment(-500)),
        ),
        (
            "zero money",
            Refused::Problem(422),
            raw_post("/api/payments", &a, &[b"h-5"], json_type, &payment(0)),
        ),
        (
            "money past i64",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[b"h-6"],
                json_type,
                br#"{"invoice_id":"x","amount_cents":9223372036854775808}"#,
            ),
        ),
        (
            "a 256-character email (MySQL's index holds 255)",
            Refused::Problem(422),
            raw_post(
                "/api/users",
                &a,
                &[b"h-long-email"],
                json_type,
                json!({ "email": format!("{}@example.com", "é".repeat(244)) })
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "a 256-character SKU",
            Refused::Problem(422),
            raw_post(
                "/api/inventory",
                &a,
                &[b"h-long-sku"],
                json_type,
                json!({ "sku": "S".repeat(256), "name": "Bolt" })
                    .to_string()
                    .as_bytes(),
            ),
        ),
        (
            "not JSON at all",
            Refused::Problem(415),
            raw_post("/api/payments", &a, &[b"h-7"], "text/plain", b"pay me"),
        ),
        (
            "no tenant",
            Refused::Problem(401),
            raw_post("/api/payments", "", &[b"h-8"], json_type, &payment(100)),
        ),
        (
            "forged token",
            Refused::Problem(401),
            raw_post(
                "/api/payments",
                "Bearer ab_forged",
                &[b"h-9"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "basic auth",
            Refused::Problem(401),
            raw_post(
                "/api/payments",
                "Basic YWRtaW46YWRtaW4=",
                &[b"h-10"],
                json_type,
                &payment(100),
            ),
        ),
        (
            "another company's invoice",
            Refused::Problem(404),
            raw_post("/api/payments", &b, &[b"h-11"], json_type, &payment(100)),
        ),
        (
            "another company's item",
            Refused::Problem(404),
            raw_post(
                &format!("/api/inventory/{b_item}/adjustments"),
                &a,
                &[b"h-12"],
                json_type,
                br#"{"delta":5,"reason":"x"}"#,
            ),
        ),
        (
            "unknown invoice",
            Refused::Problem(404),
            raw_post(
                "/api/invoices/00000000-0000-0000-0000-000000000000/finalize",
                &a,
                &[b"h-13"],
                json_type,
                b"{}",
            ),
        ),
        (
            "traversal in path",
            Refused::Problem(404),
            raw_post(
                "/api/invoices/..%2F..%2Fetc%2Fpasswd/finalize",
                &a,
                &[b"h-14"],
                json_type,
                b"{}",
            ),
        ),
        (
            "10 KB path segment",
            Refused::Problem(404),
            raw_post(&long_path, &a, &[b"h-15"], json_type, b"{}"),
        ),
        (
            "quoted key with parameters",
            Refused::Problem(400),
            raw_post(
                "/api/payments",
                &a,
                &[br#""k";v=1"#],
                json_type,
                &payment(100),
            ),
        ),
        (
            "two keys in one header",
            Refused::Problem(400),
            raw_post("/api/payments", &a, &[b"k1, k2"], json_type, &payment(100)),
        ),
        (
            "malformed JSON where no key is needed",
            Refused::Problem(400),
            raw_post("/api/companies", "", &[], json_type, b"{\"name\":"),
        ),
    ];
    let written = "SELECT (SELECT COUNT(*) FROM payments WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM inventory_adjustments WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM users WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM inventory_items WHERE company_id = $1)
                        + (SELECT COUNT(*) FROM idempotency_keys WHERE tenant_id = $1)
                        + (SELECT COUNT(*) FROM companies)";
    let (a_before, b_before) = (
        app.count(written, &app.a).await,
        app.count(written, &app.b).await,
    );
    for (name, refused, request) in cases {
        let answer = raw_answer(&app, request).await;
        match refused {
            Refused::Problem(status) => assert_eq!(
                answer,
                (status, "application/problem+json".to_owned()),
                "{name}"
            ),
            Refused::ByHttpParser => assert_eq!(answer, (400, String::new()), "{name}"),
        }
    }
    assert_eq!(
        app.count(written, &app.a).await,
        a_before,
        "nothing written for A"
    );
    assert_eq!(
        app.count(written, &app.b).await,
        b_before,
        "nothing written for B"
    );

    // A key made of SQL is just a key: one payment, and every table still there.
    let injected = raw_post(
        "/api/payments",
        &a,
        &[b"';DROP_TABLE_payments;--"],
        json_type,
        &payment(100),
    );
    assert_eq!(raw_answer(&app, injected).await.0, 201);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM payments WHERE company_id = $1",
            &app.a
        )
        .await,
        1
    );

    // And the server keeps serving.
    let healthy = app
        .send(
            &app.a,
            Some("after-the-storm"),
            &post("/api/customers", json!({ "name": "Still here" })),
        )
        .await;
    assert_eq!(healthy.status, StatusCode::CREATED);
    app.stop().await;
}
