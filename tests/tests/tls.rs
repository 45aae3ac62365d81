//! TLS to PostgreSQL, as libpq's `sslmode` says: idem is built with rustls, encrypts when asked
//! to, and refuses, at connect, a server it was asked to verify and cannot, never falling back
//! to plaintext; a URL whose parameters sqlx would ignore or weaken is refused before any
//! connection. This machine's server has TLS on with Debian's self-signed "snakeoil"
//! certificate, issued to `localhost`. idem trusts the roots of `sslrootcert` and the Mozilla
//! roots built in (webpki-roots), never the machine's certificate directory, where Debian puts
//! the snakeoil certificate itself.

#[cfg(postgres_suite)]
mod postgres {
    use idem_actix::{
        ErrorChain, Fingerprint, IdempotencyKey, IdempotencyStore, StoreConfig, StoredResponse,
        TenantId, WriteRequest, operation,
    };
    use sqlx::Postgres;

    operation! {
        /// A job written over an encrypted connection.
        financial SealLedger = "sealLedger";
    }

    /// A store on `url` with the URL parameters `params` (`sslmode=…&sslrootcert=…`), or why it
    /// could not connect, with its causes.
    async fn connect(url: &str, params: &str) -> Result<IdempotencyStore<Postgres>, String> {
        let separator = if url.contains('?') { '&' } else { '?' };
        IdempotencyStore::<Postgres>::connect(
            &format!("{url}{separator}{params}"),
            StoreConfig::default(),
        )
        .await
        .map_err(|error| ErrorChain(&error).to_string())
    }

    /// Why the machine's server is refused with `params`.
    async fn refused(params: &str) -> String {
        connect(&idem_tests::postgres_test_url().await, params)
            .await
            .map(|_| ())
            .expect_err("connected to a server it could not verify")
    }

    /// A test URL on 127.0.0.1, by the name the servers' certificates give: `localhost`.
    fn by_certificate_name(url: String) -> String {
        url.replacen("@127.0.0.1:", "@localhost:", 1)
    }

    /// Whether the pool's connection to the server is encrypted, as the server sees it.
    async fn encrypted(store: &IdempotencyStore<Postgres>) -> bool {
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(store.pool())
            .await
            .expect("pg_stat_ssl")
    }

    #[tokio::test]
    async fn sslmode_require_encrypts_every_connection_and_writes_once() {
        let store = connect(&idem_tests::postgres_test_url().await, "sslmode=require")
            .await
            .expect("connect with sslmode=require");
        store.migrate().await.expect("migrate over TLS");
        assert!(encrypted(&store).await, "sslmode=require must encrypt");
        let (tenant, key) = (
            TenantId::new("acme").unwrap(),
            IdempotencyKey::parse("seal-1").unwrap(),
        );
        for _ in 0..2 {
            let request =
                WriteRequest::new(&tenant, &key, Fingerprint::of_job("sealLedger", b"2026-11"));
            store
                .execute(SealLedger, request, |_write| {
                    Box::pin(async { Ok::<_, sqlx::Error>(StoredResponse::new(200, "sealed")) })
                })
                .await
                .expect("a write over TLS");
        }
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(keys, 1);
    }

    #[tokio::test]
    async fn sslmode_disable_is_plaintext() {
        let store = connect(&idem_tests::postgres_test_url().await, "sslmode=disable")
            .await
            .expect("connect with sslmode=disable");
        assert!(!encrypted(&store).await);
    }

    /// `prefer` (the default) encrypts when the server offers TLS, as this one does; `allow`
    /// tries plaintext first, as libpq's does, and the server accepts it.
    #[tokio::test]
    async fn sslmode_prefer_encrypts_and_allow_starts_in_plaintext() {
        let url = idem_tests::postgres_test_url().await;
        let preferred = connect(&url, "sslmode=prefer").await.expect("prefer");
        assert!(encrypted(&preferred).await, "prefer encrypts when it can");
        let allowed = connect(&url, "sslmode=allow").await.expect("allow");
        assert!(!encrypted(&allowed).await, "allow starts in plaintext");
    }

    #[tokio::test]
    async fn a_server_certificate_from_another_ca_is_refused_at_connect() {
        // The public CAs did not issue the server's self-signed certificate.
        let url = by_certificate_name(idem_tests::postgres_test_url().await);
        let error = connect(
            &url,
            "sslmode=verify-full&sslrootcert=/etc/ssl/certs/ca-certificates.crt",
        )
        .await
        .map(|_| ())
        .expect_err("connected to a server it could not verify");
        assert!(
            error.contains("invalid peer certificate: UnknownIssuer"),
            "{error}"
        );
    }

    /// A server that accepts the connection and closes it before answering the TLS request (a
    /// proxy with no healthy database behind it): the error says so, not sqlx's "unexpected
    /// response from SSLRequest: 0x00" alone.
    #[tokio::test]
    async fn a_server_that_closes_before_answering_is_said_to() {
        use tokio::io::AsyncReadExt as _;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                // The SSLRequest read whole, so that the close is a clean one, not a reset.
                let mut ssl_request = [0; 8];
                let _ = connection.read_exact(&mut ssl_request).await;
            }
        });
        let error = connect(
            &format!("postgres://postgres@127.0.0.1:{port}/idem"),
            "sslmode=prefer",
        )
        .await
        .map(|_| ())
        .expect_err("nothing answers");
        assert!(
            error.contains("the server closed the connection before answering"),
            "{error}"
        );
    }

    /// What sqlx would weaken, refused at startup as libpq would, before any connection.
    #[tokio::test]
    async fn a_url_sqlx_would_weaken_is_refused_before_connecting() {
        let ca = idem_tests::test_servers_dir().join("ca.crt");
        let other = idem_tests::test_servers_dir().join("other-ca.crt");
        for (params, said) in [
            // Misspelled: sqlx would log it and connect unverified.
            ("sslMode=verify-full".to_owned(), "did you mean `sslmode`"),
            ("sslmode=verify_full".to_owned(), "not an sslmode"),
            // libpq's, ignored by sqlx: no revocation check would be made.
            (
                format!(
                    "sslmode=verify-full&sslrootcert={}&sslcrl=/x.crl",
                    ca.display()
                ),
                "`sslcrl`",
            ),
            // No name check, and the public roots beside the file: any public certificate.
            (
                format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
                "verify-full",
            ),
            (
                format!("sslmode=verify-ca&sslrootcert={}", other.display()),
                "verify-full",
            ),
            // libpq's verify-ca, which sqlx would not verify at all.
            (
                format!("sslmode=require&sslrootcert={}", other.display()),
                "means verify-ca",
            ),
        ] {
            let error = own_ca_server(&params).await.map(|_| ()).expect_err(&params);
            assert!(error.contains(said), "{params}: {error}");
            assert!(
                error.contains("error with configuration") && !error.contains("peer certificate"),
                "{params}: refused by the URL's rules, before any connection: {error}"
            );
        }
    }

    #[tokio::test]
    async fn a_host_name_the_certificate_does_not_name_is_refused_under_verify_full() {
        // The certificate names `localhost`, not 127.0.0.1.
        let error =
            refused("sslmode=verify-full&sslrootcert=/etc/ssl/certs/ssl-cert-snakeoil.pem").await;
        assert!(
            error.contains("certificate not valid for name \"127.0.0.1\""),
            "{error}"
        );
    }

    #[tokio::test]
    async fn verify_full_connects_to_the_name_on_the_certificate_with_its_root() {
        let url = by_certificate_name(idem_tests::postgres_test_url().await);
        let store = connect(
            &url,
            "sslmode=verify-full&sslrootcert=/etc/ssl/certs/ssl-cert-snakeoil.pem",
        )
        .await
        .expect("verify-full against the certificate's own name and root");
        assert!(encrypted(&store).await);
    }

    /// A server whose certificate the test's own CA issued (`tests/servers/start`).
    async fn own_ca_server(params: &str) -> Result<IdempotencyStore<Postgres>, String> {
        let url = idem_tests::test_server_database(idem_tests::TestServer::Tls).await;
        connect(&by_certificate_name(url), params).await
    }

    #[tokio::test]
    async fn verify_full_trusts_the_ca_that_issued_the_certificate_and_no_other() {
        let ca = idem_tests::test_servers_dir().join("ca.crt");
        let store = own_ca_server(&format!("sslmode=verify-full&sslrootcert={}", ca.display()))
            .await
            .expect("verify-full with the issuing CA");
        assert!(encrypted(&store).await);
        store.migrate().await.expect("migrate over verified TLS");

        let other = idem_tests::test_servers_dir().join("other-ca.crt");
        let error = own_ca_server(&format!(
            "sslmode=verify-full&sslrootcert={}",
            other.display()
        ))
        .await
        .map(|_| ())
        .expect_err("another CA's root does not verify the server");
        assert!(
            error.contains("invalid peer certificate: UnknownIssuer"),
            "{error}"
        );
    }
}
