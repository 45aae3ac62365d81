//! The mutation gate, tried as an attacker would: every spelling of an undeclared mutation
//! that a router accepts (percent-encoding, slashes, scopes sharing a prefix behind a guard, a
//! resource answering every method, a default service, `NormalizePath` on either side of the
//! gate) is refused before any handler runs, and the protected and exempt routes still serve.
//! Each undeclared handler writes a payment through the pool, so the count of payments says
//! whether one ran.

use actix_web::middleware::NormalizePath;
use actix_web::{App, HttpResponse, HttpServer, guard, web};
use awc::Client;
use idem_actix::{Idempotency, StoreConfig, VerifiedRoutes};
use idem_tests::TestDb;
use serde_json::json;

use super::{BearerTokens, Db, PAYMENTS, Server, read_answer, routes, unprotected_payment};

/// Where the application puts `NormalizePath`, and whether a resource shadows a protected one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    /// The gate around the application, nothing else.
    Plain,
    /// `NormalizePath` outside the gate, as the gate's docs say: the gate sees the path the
    /// router will route.
    NormalizeOutside,
    /// `NormalizePath` inside the gate: the gate sees the path before it is repaired, and
    /// refuses what it cannot place.
    NormalizeInside,
    /// A resource with the pattern of the protected `POST /payments`, behind a guard the gate
    /// cannot run, mounted before the protected routes.
    Shadowed,
}

/// The application a user writes around the protected routes: an exempt route, undeclared
/// mutations at `/admin/reset`, in a second `/ops` scope behind a guarded one, on a resource
/// answering every method, and in the default service.
fn application(
    config: &mut web::ServiceConfig,
    routes: &VerifiedRoutes<Db>,
    pool: &web::Data<sqlx::Pool<Db>>,
    layout: Layout,
) {
    if layout == Layout::Shadowed {
        config.service(
            web::resource("/payments")
                .guard(guard::Header("x-shadow", "1"))
                .route(web::post().to(unprotected_payment)),
        );
    }
    routes.configure(config);
    config.app_data(pool.clone());
    config.route("/unprotected/payments", web::get().to(HttpResponse::Ok));
    config.route("/unprotected/payments", web::post().to(unprotected_payment));
    config.route("/exempt/payments", web::post().to(unprotected_payment));
    config.route("/admin/reset", web::post().to(unprotected_payment));
    config.service(
        web::scope("/ops")
            .guard(guard::Header("x-ops", "1"))
            .route("/status", web::get().to(HttpResponse::Ok)),
    );
    config.service(web::scope("/ops").route("/reset", web::post().to(unprotected_payment)));
    config.service(web::resource("/any").to(unprotected_payment));
    config.default_service(web::to(unprotected_payment));
}

/// A server laid out as `layout`, on a fresh database.
async fn start(layout: Layout) -> Server {
    let db = Db::fresh(StoreConfig::default()).await;
    let routes = routes(Idempotency::new(db.store.clone(), BearerTokens))
        .verify()
        .await
        .expect("the startup check passes");
    let pool = web::Data::new(db.store.pool().clone());
    macro_rules! serve {
        (|$routes:ident| $app:expr) => {{
            let server = HttpServer::new(move || {
                let $routes = routes.clone();
                let pool = pool.clone();
                $app.configure(move |config| application(config, &$routes, &pool, layout))
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .expect("bind a loopback port");
            let base = format!("http://{}", server.addrs()[0]);
            let server = server.run();
            let handle = server.handle();
            actix_web::rt::spawn(server);
            (base, handle)
        }};
    }
    let (base, handle) = match layout {
        Layout::Plain | Layout::Shadowed => {
            serve!(|routes| App::new().wrap(routes.mutation_gate()))
        }
        Layout::NormalizeOutside => serve!(|routes| App::new()
            .wrap(routes.mutation_gate())
            .wrap(NormalizePath::trim())),
        Layout::NormalizeInside => serve!(|routes| App::new()
            .wrap(NormalizePath::trim())
            .wrap(routes.mutation_gate())),
    };
    Server { base, db, handle }
}

/// What a request must get: the status, the problem type when refused, and how many payments
/// it writes.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Served by the protected or an exempt handler, which writes one payment.
    Served(u16),
    /// Refused by the gate with this status and problem type; nothing written.
    Refused(u16, &'static str),
}

use Expect::{Refused, Served};

const NOT_DECLARED: Expect = Refused(405, "unprotected-mutation");
const NOT_ROUTED: Expect = Refused(404, "mutation-not-routed");

/// One request: its method, its path as sent on the wire, and extra headers.
type Spelling = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const NONE: &[(&str, &str)] = &[];

/// The spellings every layout is tried with, and what each must get in a plain layout.
const PLAIN: &[(Spelling, Expect)] = &[
    // The routes that must keep working.
    (("POST", "/payments", NONE), Served(201)),
    (("POST", "/%70ayments", NONE), Served(201)),
    (("POST", "/payments", &[("x-shadow", "1")]), Served(201)),
    (("POST", "/exempt/payments", NONE), Served(201)),
    (("POST", "/exempt/%70ayments", NONE), Served(201)),
    // An undeclared route, spelled as the router reads it.
    (("POST", "/admin/reset", NONE), NOT_DECLARED),
    (("POST", "/admin/%72eset", NONE), NOT_DECLARED),
    (("POST", "/%61dmin/reset", NONE), NOT_DECLARED),
    (
        ("POST", "/%61%64%6d%69%6e/%72%65%73%65%74", NONE),
        NOT_DECLARED,
    ),
    (("POST", "/admin/reset?force=1", NONE), NOT_DECLARED),
    (("PATCH", "/admin/reset", NONE), NOT_DECLARED),
    (("POST", "/unprotected/%70ayments", NONE), NOT_DECLARED),
    // A resource answering every method.
    (("POST", "/any", NONE), NOT_DECLARED),
    (("PUT", "/any", NONE), NOT_DECLARED),
    (("DELETE", "/%61ny", NONE), NOT_DECLARED),
    (("PURGE", "/any", NONE), NOT_DECLARED),
    // A protected pattern with a method it does not protect.
    (("DELETE", "/payments", NONE), NOT_DECLARED),
    // The second of two scopes with one prefix, behind a guarded first one.
    (("POST", "/ops/reset", NONE), NOT_ROUTED),
    (("POST", "/ops/reset", &[("x-ops", "1")]), NOT_ROUTED),
    (("POST", "/%6fps/reset", NONE), NOT_ROUTED),
    // Slashes the router does not repair: the default service would run.
    (("POST", "/admin/reset/", NONE), NOT_ROUTED),
    (("POST", "//admin//reset", NONE), NOT_ROUTED),
    (("POST", "/payments/", NONE), NOT_ROUTED),
    // The default service.
    (("POST", "/nowhere", NONE), NOT_ROUTED),
    (("DELETE", "/nowhere/at/all", NONE), NOT_ROUTED),
];

/// What a layout changes from the plain one.
fn expected(layout: Layout, spelling: Spelling, plain: Expect) -> Expect {
    let (method, path, _) = spelling;
    match (layout, method, path) {
        // Normalized before the gate: the path the router routes, judged as such.
        (Layout::NormalizeOutside, "POST", "/admin/reset/" | "//admin//reset") => NOT_DECLARED,
        (Layout::NormalizeOutside, "POST", "/payments/") => Served(201),
        // Behind an earlier resource of its pattern, a protected route is never let through.
        (Layout::Shadowed, "POST", "/payments" | "/%70ayments") => Refused(500, "not-configured"),
        _ => plain,
    }
}

async fn try_every_spelling(layout: Layout) {
    let server = start(layout).await;
    let client = Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .disable_redirects()
        .finish();
    for (index, &(spelling, plain)) in PLAIN.iter().enumerate() {
        let (method, path, headers) = spelling;
        let expect = expected(layout, spelling, plain);
        let before = server.count(PAYMENTS, &[]).await;
        let mut request = client
            .request(
                method.parse().expect("a method"),
                format!("{}{path}", server.base),
            )
            .insert_header(("authorization", "Bearer token-a"))
            .insert_header(("idempotency-key", format!("k-gate-{index}")));
        for &header in headers {
            request = request.insert_header(header);
        }
        let answer = read_answer(
            request
                .send_json(&json!({"amount_cents": 500}))
                .await
                .expect("the server answers"),
        )
        .await;
        let written = server.count(PAYMENTS, &[]).await - before;
        let case = format!("{layout:?}: {method} {path} {headers:?}");
        match expect {
            Served(status) => {
                assert_eq!(answer.status.as_u16(), status, "{case}: {:?}", answer.body);
                assert_eq!(written, 1, "{case}: one payment written");
            }
            Refused(status, anchor) => {
                answer.assert_problem(status, anchor);
                assert_eq!(written, 0, "{case}: refused, yet a handler wrote");
                if status == 405 {
                    let allow = answer.header("allow").unwrap_or_else(|| {
                        panic!("{case}: a 405 carries Allow (RFC 9110 section 15.5.6)")
                    });
                    assert!(allow.starts_with("GET, HEAD, OPTIONS"), "{case}: {allow}");
                    assert!(!allow.contains(method), "{case}: {allow}");
                }
            }
        }
    }
    // Reads pass the gate whatever the layout.
    let read = read_answer(
        client
            .get(format!("{}/unprotected/payments", server.base))
            .send()
            .await
            .expect("the server answers"),
    )
    .await;
    assert_eq!(read.status.as_u16(), 200, "{layout:?}");
    server.stop().await;
}

#[actix_web::test]
async fn every_spelling_of_an_undeclared_mutation_is_refused() {
    try_every_spelling(Layout::Plain).await;
}

#[actix_web::test]
async fn normalize_path_outside_the_gate_is_judged_on_the_normalized_path() {
    try_every_spelling(Layout::NormalizeOutside).await;
}

#[actix_web::test]
async fn normalize_path_inside_the_gate_fails_closed() {
    try_every_spelling(Layout::NormalizeInside).await;
}

#[actix_web::test]
async fn a_resource_mounted_before_a_protected_route_is_refused_its_mutations() {
    try_every_spelling(Layout::Shadowed).await;
}

#[actix_web::test]
async fn the_405_lists_the_mutations_declared_on_its_pattern() {
    let server = start(Layout::Plain).await;
    let client = Client::default();
    let answer = read_answer(
        client
            .put(format!("{}/exempt/payments", server.base))
            .send()
            .await
            .expect("the server answers"),
    )
    .await;
    answer.assert_problem(405, "unprotected-mutation");
    assert_eq!(answer.header("allow"), Some("GET, HEAD, OPTIONS, POST"));
    assert_eq!(server.count(PAYMENTS, &[]).await, 0);
    server.stop().await;
}
