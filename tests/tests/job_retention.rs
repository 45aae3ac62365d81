//! A job's own retention: its reruns replay past the store's retention, for as long as the
//! operation says; the store's other operations still expire on time, and no purge removes a
//! key before its operation's retention, not even one run by another binary that registers
//! none of these operations (each key row carries its own expiry, set at its claim).

use std::process::Command;
use std::time::Duration;

use futures_util::future::BoxFuture;
use idem_runtime::{
    Fingerprint, IdempotencyKey, IdempotencyStore, Outcome, RegisteredOperation, StoreConfig,
    StoredResponse, TenantId, WriteContext, WriteRequest,
};
use idem_tests::{TestDb, TestStore};

idem_runtime::operation! {
    /// Closes a month's books: a rerun an hour later is still a replay.
    financial CloseMonth = "closeMonth", retention = Duration::from_secs(3600);
}
idem_runtime::operation! {
    /// Archives a year: a rerun months later is still a replay.
    financial ArchiveYear = "archiveYear", retention = Duration::from_secs(400 * 24 * 3600);
}
idem_runtime::operation! {
    /// A job with the store's retention.
    financial SendReminders = "sendReminders";
}

type Body<DB> = dyn for<'c, 'r> FnMut(
        &'c mut WriteContext<'r, DB>,
    ) -> BoxFuture<'c, Result<StoredResponse, sqlx::Error>>
    + Send;

/// A job body that answers with a nonce, so a second run would answer differently.
fn run<DB: TestDb>() -> Box<Body<DB>> {
    Box::new(|_| Box::pin(async { Ok(StoredResponse::new(200, fastrand::u64(..).to_string())) }))
}

/// Runs `operation`'s job once for `tenant` and `key`: its outcome.
async fn run_job<DB: TestDb>(
    store: &IdempotencyStore<DB>,
    operation: impl RegisteredOperation,
    tenant: &TenantId,
    key: &IdempotencyKey,
    fingerprint: Fingerprint,
) -> Outcome {
    store
        .execute(
            operation,
            WriteRequest::new(tenant, key, fingerprint),
            run::<DB>(),
        )
        .await
        .unwrap()
}

async fn reruns_replay_for_the_operations_own_retention<DB: TestDb>()
-> (TestStore<DB>, TenantId, IdempotencyKey) {
    let db = DB::fresh(StoreConfig::default().with_retention(Duration::from_millis(200))).await;
    let tenant = TenantId::new("acme").unwrap();
    let key = IdempotencyKey::parse("2026-11").unwrap();
    let fingerprint = Fingerprint::of_job("closeMonth", b"2026-11");
    let store: &IdempotencyStore<DB> = &db.store;
    let first = run_job(store, CloseMonth, &tenant, &key, fingerprint).await;
    let reminders = Fingerprint::of_job("sendReminders", b"2026-11");
    run_job(store, SendReminders, &tenant, &key, reminders).await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let rerun = run_job(store, CloseMonth, &tenant, &key, fingerprint).await;
    let Outcome::New { response, .. } = first else {
        panic!("the first run writes")
    };
    assert_eq!(
        rerun,
        Outcome::Replayed { response },
        "past the store's retention, within the operation's"
    );
    let expired = run_job(store, SendReminders, &tenant, &key, reminders).await;
    assert!(
        matches!(expired, Outcome::New { .. }),
        "the other operation's key expired: {expired:?}"
    );
    assert_eq!(
        store.purge_expired().await.unwrap(),
        0,
        "no key is purged before its operation's retention"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idempotency_keys", &[]).await,
        2
    );
    (db, tenant, key)
}

/// Another binary's purge, with a registry of its own (empty) and the default 24 hours, keeps
/// the yearly job's key for the job's 400 days and removes the key that expired by its own row.
async fn another_binarys_purge_keeps_what_has_not_expired<DB: TestDb>() {
    let db = DB::fresh(StoreConfig::default()).await;
    let tenant = TenantId::new("acme").unwrap();
    let key = IdempotencyKey::parse("2026").unwrap();
    let archive = Fingerprint::of_job("archiveYear", b"2026");
    let remind = Fingerprint::of_job("sendReminders", b"2026");
    let first = run_job(&db.store, ArchiveYear, &tenant, &key, archive).await;
    run_job(&db.store, SendReminders, &tenant, &key, remind).await;
    // Both keys as if claimed two days ago: past the default 24 hours, within 400 days.
    sqlx::any::install_default_drivers();
    let any = sqlx::AnyPool::connect(&db.url())
        .await
        .expect("open by URL");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE idempotency_keys SET created_at_ms = created_at_ms - {TWO_DAYS_MS}, expires_at_ms = expires_at_ms - {TWO_DAYS_MS}"
    )))
    .execute(&any)
    .await
    .expect("age the keys");
    any.close().await;

    let output = tokio::task::spawn_blocking({
        let (binary, url) = (idem_tests::example_binary("nightly_maintenance"), db.url());
        move || {
            Command::new(binary)
                .arg(url)
                .output()
                .expect("run the binary")
        }
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(printed.trim()).expect("one JSON line");
    assert_eq!(report["expired_keys"], 1, "{report}");
    const KEYS_OF: &str = "SELECT COUNT(*) FROM idempotency_keys WHERE operation = $1";
    assert_eq!(
        db.count(KEYS_OF, &["archiveYear"]).await,
        1,
        "the job's key outlives another binary's purge"
    );
    assert_eq!(
        db.count(KEYS_OF, &["sendReminders"]).await,
        0,
        "the expired key is purged"
    );
    let rerun = run_job(&db.store, ArchiveYear, &tenant, &key, archive).await;
    let Outcome::New { response, .. } = first else {
        panic!("the first run writes")
    };
    assert_eq!(
        rerun,
        Outcome::Replayed { response },
        "the job does not run again"
    );
}

const TWO_DAYS_MS: i64 = 2 * 24 * 3600 * 1000;

/// The keys of `tenant` and `key`, counted with the library's ids bound as they are.
macro_rules! count_bound {
    ($store:expr, $tenant:expr, $key:expr) => {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(&$tenant)
        .bind(&$key)
        .fetch_one($store.store.pool())
        .await
        .expect("the ids bind as text")
    };
}

#[tokio::test]
async fn sqlite() {
    let (store, tenant, key) =
        reruns_replay_for_the_operations_own_retention::<sqlx::Sqlite>().await;
    assert_eq!(count_bound!(store, tenant, key), 2);
}

#[tokio::test]
async fn sqlite_purged_by_another_binary() {
    another_binarys_purge_keeps_what_has_not_expired::<sqlx::Sqlite>().await;
}

#[cfg(postgres_suite)]
#[tokio::test]
async fn postgres_purged_by_another_binary() {
    another_binarys_purge_keeps_what_has_not_expired::<sqlx::Postgres>().await;
}

#[cfg(mysql_suite)]
#[tokio::test]
async fn mysql_purged_by_another_binary() {
    another_binarys_purge_keeps_what_has_not_expired::<sqlx::MySql>().await;
}

#[cfg(postgres_suite)]
#[tokio::test]
async fn postgres() {
    let (store, tenant, key) =
        reruns_replay_for_the_operations_own_retention::<sqlx::Postgres>().await;
    assert_eq!(count_bound!(store, tenant, key), 2);
}
