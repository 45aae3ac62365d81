//! `idem keys show`: what one idempotency key holds.

use clap::Subcommand;
use idem_runtime::{IdempotencyKey, IdempotencyStore, TenantId};
use serde_json::Value;
use sqlx::Any;

use crate::report::{Report, instant};
use crate::{Failure, sql, usage};

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// A key's state, expiry, request fingerprint and stored answer.
    Show {
        /// The tenant the key belongs to (the service's tenant id).
        #[arg(long)]
        tenant: String,
        /// The operation's registered name (createPayment, …).
        #[arg(long)]
        operation: String,
        /// The key as the client sent it (bare or quoted).
        key: String,
    },
}

const FIND_KEY: &str =
    "SELECT fingerprint, entity_id, response_status, response_headers, response_body,
    created_at_ms, expires_at_ms
FROM idempotency_keys
WHERE tenant_id = $1 AND operation = $2 AND idempotency_key = $3";

type KeyRow = (
    Vec<u8>,
    String,
    Option<i32>,
    Option<String>,
    Option<Vec<u8>>,
    i64,
    i64,
);

pub(crate) async fn run(
    store: &IdempotencyStore<Any>,
    command: KeysCommand,
) -> Result<Report, Failure> {
    let KeysCommand::Show {
        tenant,
        operation,
        key,
    } = command;
    let tenant = TenantId::new(tenant).map_err(|error| usage(&error))?;
    let key = IdempotencyKey::parse(&key).map_err(|error| usage(&error))?;
    let row: Option<KeyRow> = sqlx::query_as(sql::text(store.pool(), FIND_KEY))
        .bind(tenant.as_str())
        .bind(operation.as_str())
        .bind(key.as_str())
        .fetch_optional(store.pool())
        .await?;
    let Some((fingerprint, entity_id, status, headers, body, created_at_ms, expires_at_ms)) = row
    else {
        return Err(Failure::Finding(
            Report::fields(&[("state", "absent".into())]).with_note(
                "no such key: it was never committed, or retention purged it after it expired",
            ),
        ));
    };
    let now_ms = store.database_clock_ms().await?;
    let state = match status {
        None => "claimed, no answer stored",
        Some(_) if expires_at_ms <= now_ms => "expired: the next request with it writes again",
        Some(_) => "committed: a retry replays the answer below",
    };
    let headers: Value = headers
        .as_deref()
        .and_then(|headers| serde_json::from_str(headers).ok())
        .unwrap_or(Value::Null);
    let body = body.map(|body| match String::from_utf8(body) {
        Ok(text) => Value::String(text),
        Err(bytes) => format!("({} bytes, not UTF-8 text)", bytes.as_bytes().len()).into(),
    });
    Ok(Report::fields(&[
        ("tenant", tenant.as_str().into()),
        ("operation", operation.into()),
        ("key", key.as_str().into()),
        ("state", state.into()),
        ("created at", instant(created_at_ms).into()),
        ("expires at", instant(expires_at_ms).into()),
        ("entity id", entity_id.into()),
        ("fingerprint", hex(&fingerprint).into()),
        ("answer status", status.into()),
        ("answer headers", headers),
        ("answer body", body.unwrap_or(Value::Null)),
    ]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
