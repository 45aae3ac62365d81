//! The request fingerprint: what makes a retry "the same request".

use std::fmt;

use sha2::{Digest, Sha256};

use crate::hex::LowerHex;

/// SHA-256 over the operation, method, path, query and body of a request.
///
/// Two requests with one idempotency key are the same request exactly when their fingerprints
/// are equal; otherwise the second is refused as a mismatch. Each part is length-prefixed, so
/// moving bytes from one part to another changes the fingerprint.
///
/// ```
/// use idem_runtime::Fingerprint;
///
/// let a = Fingerprint::of_request("createPayment", "POST", "/api/payments", "", br#"{"amount_cents":100}"#);
/// let b = Fingerprint::of_request("createPayment", "POST", "/api/payments", "", br#"{"amount_cents":100}"#);
/// let c = Fingerprint::of_request("createPayment", "POST", "/api/payments", "", br#"{"amount_cents":101}"#);
/// assert_eq!(a, b);
/// assert_ne!(a, c);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

/// Versions the hashed layout, so a future change cannot collide with stored fingerprints.
const DOMAIN: &[u8] = b"idem-fingerprint-v1";

impl Fingerprint {
    /// The fingerprint of one request. `path` is the path as requested
    /// (`/api/invoices/42/finalize`), path parameters included, so one key sent to two
    /// resources is two different requests.
    pub fn of_request(operation: &str, method: &str, path: &str, query: &str, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        for part in [
            DOMAIN,
            operation.as_bytes(),
            method.as_bytes(),
            path.as_bytes(),
            query.as_bytes(),
            body,
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        Self(hasher.finalize().into())
    }

    /// Rebuilds a fingerprint from its 32 stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes of the digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        LowerHex(&self.0).fmt(f)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_changes_the_fingerprint() {
        let base = Fingerprint::of_request("op", "POST", "/r", "q=1", b"{}");
        assert_ne!(
            base,
            Fingerprint::of_request("op2", "POST", "/r", "q=1", b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("op", "PUT", "/r", "q=1", b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("op", "POST", "/r2", "q=1", b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("op", "POST", "/r", "q=2", b"{}")
        );
        assert_ne!(
            base,
            Fingerprint::of_request("op", "POST", "/r", "q=1", b"{ }")
        );
    }

    #[test]
    fn moving_bytes_between_parts_changes_the_fingerprint() {
        assert_ne!(
            Fingerprint::of_request("op", "POST", "/r", "ab", b""),
            Fingerprint::of_request("op", "POST", "/r", "a", b"b")
        );
    }

    #[test]
    fn displays_as_lowercase_hex() {
        let text = Fingerprint::from_bytes([0xab; 32]).to_string();
        assert_eq!(text, "ab".repeat(32));
    }
}
