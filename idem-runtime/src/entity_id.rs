//! Deterministic entity ids: the same (tenant, operation, key) always names the same entity.

use uuid::Uuid;

use crate::{IdempotencyKey, TenantId};

/// The UUID v5 namespace of every entity id idem derives: the v5 UUID of the name
/// `idem.entity-id.v1` in the URL namespace, `a6afba22-d38c-5c86-9a2f-696737603e8e`.
pub const ENTITY_ID_NAMESPACE: Uuid = Uuid::from_u128(0xa6af_ba22_d38c_5c86_9a2f_6967_3760_3e8e);

/// The id of the entity that one write creates: UUID v5 of
/// `company:{tenant}:op:{operation}:key:{key}` under [`ENTITY_ID_NAMESPACE`].
///
/// A handler that uses it as the primary key of the row it inserts gets a second line of defence:
/// even a write that bypassed the key table would collide on that primary key.
///
/// ```
/// use idem_runtime::{entity_id, IdempotencyKey, TenantId};
///
/// let tenant = TenantId::new("acme")?;
/// let key = IdempotencyKey::parse("k-1")?;
/// assert_eq!(entity_id(&tenant, "createPayment", &key), entity_id(&tenant, "createPayment", &key));
/// assert_ne!(entity_id(&tenant, "createPayment", &key), entity_id(&tenant, "createInvoice", &key));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn entity_id(tenant: &TenantId, operation: &str, key: &IdempotencyKey) -> Uuid {
    let name = format!("company:{tenant}:op:{operation}:key:{key}");
    Uuid::new_v5(&ENTITY_ID_NAMESPACE, name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_the_v5_id_of_its_documented_name() {
        assert_eq!(
            ENTITY_ID_NAMESPACE,
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"idem.entity-id.v1")
        );
    }

    #[test]
    fn entity_id_is_uuid_v5_of_the_documented_name() {
        let tenant = TenantId::new("c1").unwrap();
        let key = IdempotencyKey::parse("k1").unwrap();
        let id = entity_id(&tenant, "createPayment", &key);
        assert_eq!(id.get_version_num(), 5);
        assert_eq!(
            id,
            Uuid::new_v5(&ENTITY_ID_NAMESPACE, b"company:c1:op:createPayment:key:k1")
        );
    }

    #[test]
    fn each_part_of_the_scope_changes_the_id() {
        let t1 = TenantId::new("c1").unwrap();
        let t2 = TenantId::new("c2").unwrap();
        let k1 = IdempotencyKey::parse("k1").unwrap();
        let k2 = IdempotencyKey::parse("k2").unwrap();
        let id = entity_id(&t1, "op", &k1);
        assert_ne!(id, entity_id(&t2, "op", &k1));
        assert_ne!(id, entity_id(&t1, "op2", &k1));
        assert_ne!(id, entity_id(&t1, "op", &k2));
    }
}
