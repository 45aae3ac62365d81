//! One database under measurement: AccuBooks, its bare twins and the rival middleware on
//! one server.

use super::*;

pub(crate) struct Target {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) store: IdempotencyStore<Any>,
    pub(crate) pool: Pool<Any>,
    pub(crate) company: String,
    /// MySQL or MariaDB, whose parameters are `?`.
    pub(crate) mysql: bool,
}

impl Target {
    pub(crate) async fn start(
        url: &str,
        config: StoreConfig,
    ) -> Result<(Self, actix_web::dev::ServerHandle), Box<dyn std::error::Error>> {
        let accubooks = AccuBooks::open(url, config).await?;
        let store = accubooks.store().clone();
        let pool = store.pool().clone();
        let app = accubooks.clone();
        let sessions = RedisSessionStore::new("redis://127.0.0.1:6379").await?;
        let cookie_key = Key::generate();
        let server = HttpServer::new(move || {
            let app = app.clone();
            let middleware = web::scope("/middleware")
                .wrap(IdempotentFactory::new(IdempotentOptions::default()))
                .wrap(SessionMiddleware::new(sessions.clone(), cookie_key.clone()))
                .route("/customers", web::post().to(create_bare::<NewCustomer>));
            App::new()
                .wrap(app.mutation_gate())
                .configure(move |config| app.configure(config))
                .route(
                    "/bare/customers",
                    web::post().to(create_bare::<NewCustomer>),
                )
                .route("/bare/invoices", web::post().to(create_bare::<NewInvoice>))
                .route("/bare/payments", web::post().to(create_bare::<NewPayment>))
                .route(
                    "/bare/inventory/{item_id}/adjustments",
                    web::post().to(adjust_inventory_bare),
                )
                .service(middleware)
        })
        .workers(2)
        .bind(("127.0.0.1", 0))?;
        let base = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let mut created = Client::default()
            .post(format!("{base}/api/companies"))
            .send_json(&json!({ "name": "Bench" }))
            .await?;
        let company: Value = created.json().await?;
        let target = Self {
            base,
            token: company["token"].as_str().unwrap_or_default().to_owned(),
            company: company["company_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            store,
            pool,
            mysql: url.starts_with("mysql:"),
        };
        Ok((target, handle))
    }

    /// The rows of the bench's company in `table`: the count that proves the writes happened.
    pub(crate) async fn rows_in(&self, table: &str) -> i64 {
        let mut count = format!("SELECT COUNT(*) FROM {table} WHERE company_id = $1");
        if self.mysql {
            count = positional(&count);
        }
        sqlx::query_scalar(sqlx::AssertSqlSafe(count))
            .bind(&self.company)
            .fetch_one(&self.pool)
            .await
            .unwrap_or(-1)
    }

    /// A session cookie of the middleware's, as a client that made one request holds it.
    pub(crate) async fn session_cookie(&self) -> String {
        let response = Client::default()
            .post(format!("{}/middleware/customers", self.base))
            .insert_header(("authorization", format!("Bearer {}", self.token)))
            .send_json(&json!({ "name": "Session Opener" }))
            .await
            .expect("the server answers");
        let cookie = response
            .headers()
            .get("set-cookie")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .unwrap_or_default();
        cookie.to_owned()
    }

    /// Sends `requests` requests, `concurrency` at a time: request `i` goes to `path` with key
    /// `key(i)` (none when `None`) and, when given, the session `cookie`.
    pub(crate) async fn drive(
        &self,
        name: &'static str,
        path: &str,
        requests: usize,
        concurrency: usize,
        key: impl Fn(usize) -> Option<String>,
    ) -> Row {
        self.drive_with_cookie(name, path, requests, concurrency, key, None)
            .await
    }

    pub(crate) async fn drive_with_cookie(
        &self,
        name: &'static str,
        path: &str,
        requests: usize,
        concurrency: usize,
        key: impl Fn(usize) -> Option<String>,
        cookie: Option<&str>,
    ) -> Row {
        self.send_all(name, "customers", requests, concurrency, |i| Request {
            path: path.to_owned(),
            key: key(i),
            cookie: cookie.map(str::to_owned),
            body: json!({ "name": "Bench Customer" }),
        })
        .await
    }

    /// Sends `requests` requests, `concurrency` at a time, request `i` being `request(i)`; each
    /// must succeed. The row counts the rows the requests added to `table`.
    pub(crate) async fn send_all(
        &self,
        name: &'static str,
        table: &str,
        requests: usize,
        concurrency: usize,
        request: impl Fn(usize) -> Request,
    ) -> Row {
        let client = Client::builder()
            .connector(awc::Connector::new().limit(concurrency))
            .timeout(Duration::from_secs(60))
            .finish();
        let before = self.rows_in(table).await;
        let started = Instant::now();
        let latencies: Vec<u64> = futures_util::stream::iter(0..requests)
            .map(|i| {
                let Request {
                    path,
                    key,
                    cookie,
                    body,
                } = request(i);
                let mut sending = client
                    .post(format!("{}{path}", self.base))
                    .insert_header(("authorization", format!("Bearer {}", self.token)));
                if let Some(key) = key {
                    sending = sending.insert_header(("idempotency-key", key));
                }
                if let Some(cookie) = cookie {
                    sending = sending.insert_header(("cookie", cookie));
                }
                async move {
                    let sent = Instant::now();
                    let mut response = sending.send_json(&body).await.expect("the server answers");
                    let _ = response.body().await;
                    assert!(
                        response.status().is_success(),
                        "{name} ({path}): {}",
                        response.status()
                    );
                    u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX)
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        let mut latency = Histogram::new(3).expect("a histogram");
        for micros in latencies {
            latency.record(micros.max(1)).expect("a recordable latency");
        }
        Row {
            name,
            requests,
            seconds,
            latency,
            rows_written: self.rows_in(table).await - before,
        }
    }
}
