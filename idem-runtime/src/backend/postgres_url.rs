//! A `postgres://` URL read by libpq's rules before sqlx reads it, so that a connection is
//! never weaker than the URL says.
//!
//! sqlx accepts what libpq would refuse: it logs and ignores a parameter it does not know (a
//! misspelled `sslMode=verify-full` then connects unverified), turns an invalid `PGSSLMODE`
//! into `prefer`, does not verify under `sslmode=require` with `sslrootcert` (libpq treats that
//! as `verify-ca`), and trusts the public web PKI beside `sslrootcert`. The first three are
//! refused here with what to write instead; the last cannot be changed from outside sqlx, so
//! `verify-ca` (which checks no name, and would then accept any publicly issued certificate)
//! is refused too, and `verify-full` is documented as trusting the public roots beside
//! `sslrootcert`.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// The parameters sqlx reads, under every spelling it accepts.
const IMPLEMENTED: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// libpq's other parameters (PostgreSQL 17's list): valid for psql, ignored by sqlx.
const LIBPQ_ONLY: &[&str] = &[
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslnegotiation",
    "sslcompression",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "requiressl",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
];

/// The URL's connect options, or why it cannot be honoured. `env` reads the environment
/// (`PGSSLMODE`, `PGSSLROOTCERT`), as libpq and sqlx do.
pub(crate) fn checked_options(
    url: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<PgConnectOptions, sqlx::Error> {
    let parsed = url::Url::parse(url).map_err(sqlx::Error::config)?;
    let mut sslmode = None;
    let mut rootcert = None;
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "sslmode" | "ssl-mode" => sslmode = Some(ssl_mode(&value, "the URL's sslmode")?),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => rootcert = Some(value.into_owned()),
            key if IMPLEMENTED.contains(&key) => {}
            key if key.starts_with("options[") && key.ends_with(']') => {}
            key if LIBPQ_ONLY.contains(&key) => {
                return Err(refused(format!(
                    "the connection parameter `{key}` is libpq's, but sqlx does not implement it and would ignore it: remove it from the URL"
                )));
            }
            key => {
                let hint = IMPLEMENTED
                    .iter()
                    .find(|known| known.eq_ignore_ascii_case(key))
                    .map(|known| format!(" (did you mean `{known}`? parameters are lower case)"))
                    .unwrap_or_default();
                return Err(refused(format!(
                    "unknown connection parameter `{key}`{hint}: sqlx would ignore it"
                )));
            }
        }
    }
    let sslmode = match sslmode {
        Some(mode) => mode,
        None => match env("PGSSLMODE") {
            Some(value) => ssl_mode(&value, "PGSSLMODE")?,
            None => PgSslMode::Prefer,
        },
    };
    let rootcert = rootcert.or_else(|| env("PGSSLROOTCERT"));
    match (sslmode, rootcert.is_some()) {
        (PgSslMode::VerifyCa, _) => Err(refused(
            "sslmode=verify-ca cannot be held: sqlx trusts the public web PKI beside sslrootcert, so without the name check any publicly issued certificate would be accepted; write sslmode=verify-full, which checks the server's name",
        )),
        (PgSslMode::Require, true) => Err(refused(
            "sslmode=require with sslrootcert means verify-ca to libpq, which cannot be held on sqlx (it trusts the public web PKI beside sslrootcert and would check no name): write sslmode=verify-full to verify the server, or drop sslrootcert to encrypt without verifying",
        )),
        _ => PgConnectOptions::from_str(url),
    }
}

/// An `sslmode` value, strictly: libpq refuses any other.
fn ssl_mode(value: &str, source: &str) -> Result<PgSslMode, sqlx::Error> {
    match value {
        "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full" => {
            PgSslMode::from_str(value)
        }
        other => Err(refused(format!(
            "{source} is {other:?}, which is not an sslmode: write disable, allow, prefer, require or verify-full"
        ))),
    }
}

fn refused(message: impl Into<String>) -> sqlx::Error {
    sqlx::Error::Configuration(message.into().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "postgres://app@db.internal:5432/payments";

    fn check(params: &str, env: &[(&str, &str)]) -> Result<PgConnectOptions, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        checked_options(&format!("{URL}?{params}"), |name| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
        .map_err(|error| error.to_string())
    }

    #[test]
    fn what_sqlx_implements_passes() {
        for params in [
            "sslmode=verify-full&sslrootcert=/etc/ca.pem",
            "sslmode=require",
            "sslmode=disable",
            "sslmode=prefer&application_name=payouts&options=-c%20search_path%3Dpay",
            "ssl-mode=verify-full&ssl-ca=/etc/ca.pem&statement-cache-capacity=0",
            "options[search_path]=pay",
        ] {
            check(params, &[]).unwrap_or_else(|error| panic!("{params}: {error}"));
        }
    }

    #[test]
    fn a_misspelled_parameter_is_refused_with_its_spelling() {
        let error = check("sslMode=verify-full", &[]).unwrap_err();
        assert!(
            error.contains("unknown connection parameter `sslMode`"),
            "{error}"
        );
        assert!(error.contains("did you mean `sslmode`"), "{error}");
        let error = check("sslmdoe=verify-full", &[]).unwrap_err();
        assert!(error.contains("`sslmdoe`"), "{error}");
    }

    #[test]
    fn a_libpq_parameter_sqlx_ignores_is_refused() {
        for key in [
            "sslcrl",
            "target_session_attrs",
            "connect_timeout",
            "channel_binding",
        ] {
            let error = check(&format!("{key}=x"), &[]).unwrap_err();
            assert!(
                error.contains("sqlx does not implement it"),
                "{key}: {error}"
            );
        }
    }

    #[test]
    fn an_invalid_sslmode_is_refused_in_the_url_and_in_pgsslmode() {
        let error = check("sslmode=verify_full", &[]).unwrap_err();
        assert!(
            error.contains("\"verify_full\", which is not an sslmode"),
            "{error}"
        );
        let error = check("", &[("PGSSLMODE", "requier")]).unwrap_err();
        assert!(error.contains("PGSSLMODE is \"requier\""), "{error}");
        // Case matters to libpq.
        assert!(check("sslmode=REQUIRE", &[]).is_err());
        // The URL's own sslmode wins over the environment's.
        check("sslmode=require", &[("PGSSLMODE", "requier")]).unwrap();
    }

    #[test]
    fn verify_ca_is_refused_since_sqlx_adds_the_public_roots() {
        let error = check("sslmode=verify-ca&sslrootcert=/etc/ca.pem", &[]).unwrap_err();
        assert!(error.contains("write sslmode=verify-full"), "{error}");
        assert!(check("", &[("PGSSLMODE", "verify-ca")]).is_err());
    }

    #[test]
    fn require_with_a_root_certificate_is_libpqs_verify_ca_and_refused() {
        let error = check("sslmode=require&sslrootcert=/etc/ca.pem", &[]).unwrap_err();
        assert!(error.contains("means verify-ca to libpq"), "{error}");
        assert!(check("sslmode=require", &[("PGSSLROOTCERT", "/etc/ca.pem")]).is_err());
        assert!(
            check(
                "",
                &[("PGSSLMODE", "require"), ("PGSSLROOTCERT", "/etc/ca.pem")]
            )
            .is_err()
        );
    }
}
