//! Tenant isolation that PostgreSQL enforces: under row-level security keyed on the
//! `idem.tenant_id` setting that idem gives every transaction it opens, a handler that forgets
//! its `WHERE company_id = …` can neither read nor change another company's rows, over HTTP;
//! the same handler on the same tables without the policies does. Without the setting, a
//! statement sees no rows, never all rows. (SQLite has no row-level security: there isolation
//! rests on the handlers' clauses, as CONTRACT.md says.)

#[cfg(postgres_suite)]
mod postgres {
    use std::time::Duration;

    use actix_web::{HttpRequest, HttpResponse, web};
    use awc::Client;
    use idem_actix::{
        Idempotency, IdempotencyKey, IdempotencyStore, ProtectedRoutes, StoreConfig, Tenant,
        TenantId, TenantRejection, TenantResolver, WriteContext, high_risk_mutation,
    };
    use sqlx::{PgPool, Postgres};

    /// A note, the business row of these tests.
    const NOTES: &str = "
        CREATE TABLE notes (id TEXT PRIMARY KEY, company_id TEXT NOT NULL, body TEXT NOT NULL)";

    /// The recipe of docs/production.md: ENABLE and FORCE, one policy on the setting.
    const ROW_LEVEL_SECURITY: &str = "
        ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
        ALTER TABLE notes FORCE ROW LEVEL SECURITY;
        CREATE POLICY tenant_isolation ON notes
            USING (company_id = current_setting('idem.tenant_id', true))
            WITH CHECK (company_id = current_setting('idem.tenant_id', true))";

    /// Wipes every note, and forgets to say whose: the bug row-level security is for.
    #[high_risk_mutation("wipeNotes", post = "/notes/wipe")]
    async fn wipe_notes(
        _key: IdempotencyKey,
        write: &mut WriteContext<'_, Postgres>,
    ) -> Result<HttpResponse, actix_web::Error> {
        let wiped = sqlx::query("UPDATE notes SET body = 'wiped'")
            .execute(write.tx())
            .await
            .map_err(actix_web::error::ErrorInternalServerError)?
            .rows_affected();
        Ok(HttpResponse::Ok().json(serde_json::json!({ "wiped": wiped })))
    }

    /// Reads a note by id, and forgets to check whose it is.
    async fn read_note(
        store: web::Data<IdempotencyStore<Postgres>>,
        tenant: Tenant,
        id: web::Path<String>,
    ) -> actix_web::Result<HttpResponse> {
        let mut tx = store
            .begin_for(&tenant.0)
            .await
            .map_err(actix_web::error::ErrorInternalServerError)?;
        let body: Option<String> = sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(actix_web::error::ErrorInternalServerError)?;
        Ok(match body {
            Some(body) => HttpResponse::Ok().json(serde_json::json!({ "body": body })),
            None => HttpResponse::NotFound().finish(),
        })
    }

    /// The company is the `x-company` header: a test's stand-in for real authentication.
    struct CompanyHeader;

    impl TenantResolver for CompanyHeader {
        async fn resolve(&self, request: &HttpRequest) -> Result<TenantId, TenantRejection> {
            let company = request
                .headers()
                .get("x-company")
                .and_then(|value| value.to_str().ok());
            match company.map(TenantId::new) {
                Some(Ok(company)) => Ok(company),
                _ => Err(TenantRejection::new("send x-company")),
            }
        }
    }

    /// A server on a fresh schema whose application role owns the notes, with or without the
    /// policies; the admin pool (the database's owner) sees every row.
    struct Server {
        base: String,
        admin: PgPool,
        runtime: PgPool,
        handle: actix_web::dev::ServerHandle,
    }

    impl Server {
        async fn start(row_level_security: bool) -> Self {
            let (url, admin_url) = idem_tests::postgres_test_url_as_app_role().await;
            let store = IdempotencyStore::<Postgres>::connect(&url, StoreConfig::default())
                .await
                .expect("the application role connects");
            store
                .migrate()
                .await
                .expect("the application role migrates");
            sqlx::raw_sql(NOTES).execute(store.pool()).await.unwrap();
            if row_level_security {
                sqlx::raw_sql(ROW_LEVEL_SECURITY)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            let admin = PgPool::connect(&admin_url).await.unwrap();
            sqlx::raw_sql(
                "INSERT INTO notes VALUES ('a-1', 'company-a', 'A''s secret'), ('b-1', 'company-b', 'B''s note')",
            )
            .execute(&admin)
            .await
            .unwrap();
            let routes = ProtectedRoutes::new(Idempotency::new(store.clone(), CompanyHeader))
                .high_risk(wipe_notes)
                .verify()
                .await
                .expect("the startup check passes");
            let runtime = store.pool().clone();
            let data = web::Data::new(store);
            let (base, handle) = idem_tests::serve(routes.mutation_gate(), move |config| {
                routes.configure(config);
                config.app_data(data.clone());
                config.route("/notes/{id}", web::get().to(read_note));
            });
            Self {
                base,
                admin,
                runtime,
                handle,
            }
        }

        async fn send(&self, method: &str, path: &str, company: &str) -> (u16, String) {
            let client = Client::builder().timeout(Duration::from_secs(30)).finish();
            let mut response = client
                .request(method.parse().unwrap(), format!("{}{path}", self.base))
                .insert_header(("x-company", company))
                .insert_header(("idempotency-key", format!("k-{}", fastrand::u64(..))))
                .send()
                .await
                .expect("the server answers");
            let body = response.body().await.expect("a body");
            (
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            )
        }

        async fn body_of(&self, id: &str) -> String {
            sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
                .bind(id)
                .fetch_one(&self.admin)
                .await
                .unwrap()
        }
    }

    #[actix_web::test]
    async fn a_forgotten_tenant_clause_stays_inside_its_tenant() {
        let server = Server::start(true).await;
        let (status, body) = server.send("POST", "/notes/wipe", "company-b").await;
        assert_eq!(
            (status, body.as_str()),
            (201, r#"{"wiped":1}"#),
            "only B's own note"
        );
        assert_eq!(
            server.body_of("a-1").await,
            "A's secret",
            "A's note unchanged"
        );
        assert_eq!(server.body_of("b-1").await, "wiped");
        let (status, _) = server.send("GET", "/notes/a-1", "company-b").await;
        assert_eq!(status, 404, "B cannot read A's note by its id");
        let (status, body) = server.send("GET", "/notes/a-1", "company-a").await;
        assert_eq!((status, body.as_str()), (200, r#"{"body":"A's secret"}"#));

        // Without the setting (a statement outside idem's transactions): no rows, not all rows.
        let visible: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes")
            .fetch_one(&server.runtime)
            .await
            .unwrap();
        assert_eq!(visible, 0);
        let changed = sqlx::query("UPDATE notes SET body = 'x'")
            .execute(&server.runtime)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(changed, 0);
        server.handle.stop(true).await;
    }

    /// The control: the same handlers on the same tables without the policies cross tenants,
    /// so the test above would notice if the isolation came from anything but the database.
    #[actix_web::test]
    async fn without_the_policies_the_same_handler_crosses_tenants() {
        let server = Server::start(false).await;
        let (status, body) = server.send("POST", "/notes/wipe", "company-b").await;
        assert_eq!((status, body.as_str()), (201, r#"{"wiped":2}"#));
        assert_eq!(
            server.body_of("a-1").await,
            "wiped",
            "A's note was changed by B"
        );
        let (status, _) = server.send("GET", "/notes/a-1", "company-b").await;
        assert_eq!(status, 200, "B reads A's note");
        server.handle.stop(true).await;
    }

    /// The roles for which the policies are silently off are named, with the fix: a superuser,
    /// and the owner of a table that does not `FORCE` its policies; the application's role on
    /// `FORCE`d tables is not.
    #[tokio::test]
    async fn a_role_the_policies_do_not_bind_is_named_at_startup() {
        let (url, admin_url) = idem_tests::postgres_test_url_as_app_role().await;
        let runtime = IdempotencyStore::<Postgres>::connect(&url, StoreConfig::default())
            .await
            .unwrap();
        runtime.migrate().await.unwrap();
        sqlx::raw_sql(NOTES).execute(runtime.pool()).await.unwrap();
        assert_eq!(
            runtime.row_level_security_bypasses().await.unwrap(),
            Vec::<String>::new(),
            "no policies yet: nothing to bypass"
        );
        sqlx::raw_sql(ROW_LEVEL_SECURITY)
            .execute(runtime.pool())
            .await
            .unwrap();
        assert_eq!(
            runtime.row_level_security_bypasses().await.unwrap(),
            Vec::<String>::new(),
            "NOSUPERUSER NOBYPASSRLS on FORCEd tables: the policies hold"
        );

        let admin = IdempotencyStore::<Postgres>::connect(&admin_url, StoreConfig::default())
            .await
            .unwrap();
        let bypasses = admin.row_level_security_bypasses().await.unwrap();
        assert_eq!(bypasses.len(), 1, "{bypasses:?}");
        assert!(
            bypasses[0].contains("is a superuser") && bypasses[0].contains("NOBYPASSRLS"),
            "{bypasses:?}"
        );

        sqlx::raw_sql("ALTER TABLE notes NO FORCE ROW LEVEL SECURITY")
            .execute(runtime.pool())
            .await
            .unwrap();
        let bypasses = runtime.row_level_security_bypasses().await.unwrap();
        assert_eq!(bypasses.len(), 1, "{bypasses:?}");
        assert!(
            bypasses[0].contains("owns notes") && bypasses[0].contains("FORCE ROW LEVEL SECURITY"),
            "{bypasses:?}"
        );
    }
}
