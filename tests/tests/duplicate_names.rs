//! A program whose registry names one operation twice writes nothing, even when it never ran
//! `verify_registry()` at startup as the HTTP gate does: one operation's keys would otherwise
//! replay the other's answers. Its own binary, since the duplicate poisons every write in it.

use idem_runtime::{
    Fingerprint, IdempotencyKey, RegistryError, StoreConfig, StoreError, StoredResponse, TenantId,
    WriteError, WriteRequest,
};
use idem_tests::TestDb;
use sqlx::Sqlite;

idem_runtime::operation! {
    /// Closes a month of the books.
    financial CloseMonth = "closeMonth";
}
idem_runtime::operation! {
    /// Another job that took the same name by mistake.
    high_risk ArchiveMonth = "closeMonth";
}

#[tokio::test]
async fn a_name_declared_twice_stops_every_write() {
    let db = Sqlite::fresh(StoreConfig::default()).await;
    let (tenant, key) = (
        TenantId::new("acme").unwrap(),
        IdempotencyKey::parse("close-2026-11").unwrap(),
    );
    let request = || {
        WriteRequest::new(
            &tenant,
            &key,
            Fingerprint::of_request("closeMonth", "POST", "/close", "", b"{}"),
        )
    };
    let mut ran = 0;
    let outcome = db
        .store
        .execute(CloseMonth, request(), |write| {
            ran += 1;
            Box::pin(async move {
                let id = write.entity_id();
                Sqlite::insert_payment(write.tx(), id, "acme", 100).await?;
                Ok::<_, sqlx::Error>(StoredResponse::new(201, "closed"))
            })
        })
        .await;

    match outcome {
        Err(WriteError::Store(StoreError::Registry(RegistryError::DuplicateName {
            name,
            locations,
        }))) => {
            assert_eq!(name, "closeMonth");
            assert_eq!(
                locations.len(),
                2,
                "both declarations are named: {locations:?}"
            );
            assert!(locations.iter().all(|at| at.contains("duplicate_names.rs")));
        }
        other => panic!("the write must be refused, got {other:?}"),
    }
    assert_eq!(ran, 0, "the body never ran");
    assert_eq!(db.count("SELECT COUNT(*) FROM payments", &[]).await, 0);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idempotency_keys", &[]).await,
        0
    );

    // The other operation of the pair is refused alike: the program must be fixed first.
    let other = db
        .store
        .execute(ArchiveMonth, request(), |_| {
            Box::pin(async { Ok::<_, sqlx::Error>(StoredResponse::new(201, "archived")) })
        })
        .await;
    assert!(matches!(
        other,
        Err(WriteError::Store(StoreError::Registry(_)))
    ));
    assert_eq!(
        db.count("SELECT COUNT(*) FROM idempotency_keys", &[]).await,
        0
    );
}
