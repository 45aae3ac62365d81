//! The tenant (company) that owns a key: part of every key's scope and every statement.

use std::fmt;

/// The longest tenant id accepted, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 128;

/// The tenant a write belongs to, such as a company id.
///
/// 1 to 128 bytes of visible ASCII except `:`. The colon is excluded because the deterministic
/// entity id hashes `company:{tenant}:op:{operation}:key:{key}`: with no colon in the tenant and
/// none in the operation name, that text names exactly one (tenant, operation, key) triple.
///
/// ```
/// use idem_runtime::TenantId;
///
/// let tenant = TenantId::new("company-42")?;
/// assert_eq!(tenant.as_str(), "company-42");
/// assert!(TenantId::new("a:b").is_err());
/// # Ok::<(), idem_runtime::TenantIdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

/// Why a value is not a valid tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    /// The tenant id has no characters.
    #[error("the tenant id is empty")]
    Empty,
    /// The tenant id is longer than [`MAX_TENANT_ID_LEN`].
    #[error("the tenant id is {len} bytes long: at most {MAX_TENANT_ID_LEN} are accepted")]
    TooLong {
        /// The tenant id's length in bytes.
        len: usize,
    },
    /// The tenant id holds `:` or a byte outside visible ASCII.
    #[error(
        "the tenant id has byte {byte:#04x} at position {position}: only visible ASCII other than ':' is accepted"
    )]
    InvalidCharacter {
        /// Zero-based byte offset in the tenant id.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
}

impl TenantId {
    /// Validates a tenant id.
    pub fn new(id: impl Into<String>) -> Result<Self, TenantIdError> {
        let id = id.into();
        if id.is_empty() {
            return Err(TenantIdError::Empty);
        }
        if id.len() > MAX_TENANT_ID_LEN {
            return Err(TenantIdError::TooLong { len: id.len() });
        }
        if let Some(position) = id
            .bytes()
            .position(|byte| !byte.is_ascii_graphic() || byte == b':')
        {
            return Err(TenantIdError::InvalidCharacter {
                position,
                byte: id.as_bytes()[position],
            });
        }
        Ok(Self(id))
    }

    /// The tenant id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<uuid::Uuid> for TenantId {
    fn from(id: uuid::Uuid) -> Self {
        Self(id.hyphenated().to_string())
    }
}

impl From<i64> for TenantId {
    fn from(id: i64) -> Self {
        Self(id.to_string())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TenantId").field(&self.0).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_empty_long_colon_and_invisible_ids() {
        assert_eq!(TenantId::new(""), Err(TenantIdError::Empty));
        assert_eq!(
            TenantId::new("t".repeat(129)),
            Err(TenantIdError::TooLong { len: 129 })
        );
        assert_eq!(
            TenantId::new("a:b"),
            Err(TenantIdError::InvalidCharacter {
                position: 1,
                byte: b':'
            })
        );
        assert_eq!(
            TenantId::new("a b"),
            Err(TenantIdError::InvalidCharacter {
                position: 1,
                byte: b' '
            })
        );
    }

    #[test]
    fn uuids_and_integers_are_valid_tenant_ids() {
        let id = uuid::Uuid::from_u128(7);
        assert_eq!(
            TenantId::from(id).as_str(),
            "00000000-0000-0000-0000-000000000007"
        );
        assert_eq!(TenantId::from(-3_i64).as_str(), "-3");
    }
}
