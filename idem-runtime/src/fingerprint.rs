//! The request fingerprint: what makes a retry "the same request".

use std::fmt;

use sha2::{Digest, Sha256};

use crate::canonical_json::canonical_json;
use crate::hex::LowerHex;

/// SHA-256 over the operation, method, path, query and body of a request.
///
/// Two requests with one idempotency key are the same request exactly when their fingerprints
/// are equal; otherwise the second is refused as a mismatch. Each part is length-prefixed, so
/// moving bytes from one part to another changes the fingerprint. Beside the digest of the
/// whole, a fingerprint keeps a short digest of each part, so that a refusal can say which
/// part differed without keeping the request itself.
///
/// [`Fingerprint::of_request`] takes the body as sent; [`Fingerprint::of_json_request`] takes a
/// JSON body in its canonical form, so that member order, whitespace and the spelling of
/// numbers and strings do not make a retry another request.
///
/// ```
/// use idem_runtime::{Fingerprint, RequestPart};
///
/// let a = Fingerprint::of_request("createPayment", "POST", "/api/payments", "", br#"{"amount_cents":100}"#);
/// let b = Fingerprint::of_request("createPayment", "POST", "/api/payments", "", br#"{"amount_cents":100}"#);
/// let c = Fingerprint::of_request("createPayment", "POST", "/api/payments", "", br#"{"amount_cents":101}"#);
/// assert_eq!(a, b);
/// assert_ne!(a, c);
/// assert_eq!(a.differing_parts(&c.to_stored()), [RequestPart::Body]);
///
/// let sent = Fingerprint::of_json_request("createPayment", "POST", "/api/payments", "", br#"{"a":1,"b":2.50}"#, &[]);
/// let retried = Fingerprint::of_json_request("createPayment", "POST", "/api/payments", "", br#"{ "b": 25e-1, "a": 1 }"#, &[]);
/// assert_eq!(sent, retried);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    digest: [u8; 32],
    /// The first bytes of each part's own digest, in [`RequestPart::ALL`]'s order.
    parts: [[u8; PART_DIGEST_LEN]; 4],
}

/// Versions the hashed layout, so a future change cannot collide with stored fingerprints.
const DOMAIN: &[u8] = b"idem-fingerprint-v1";

/// What [`Fingerprint::of_job`] hashes as the method: no HTTP request has it.
const JOB_METHOD: &str = "JOB";

/// How many bytes of each part's digest are kept: enough to tell which part differed.
const PART_DIGEST_LEN: usize = 4;

/// How many bytes a fingerprint takes in the key table: the digest, then the parts'.
const STORED_LEN: usize = 32 + 4 * PART_DIGEST_LEN;

/// A part of a request that the fingerprint covers (the operation is part of the key's scope:
/// one key sent to another operation is another key, never a mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestPart {
    /// The HTTP method (or what a job names as such).
    Method,
    /// The concrete path.
    Path,
    /// The query string.
    Query,
    /// The body.
    Body,
}

impl RequestPart {
    /// Every part, in the order the fingerprint keeps them.
    pub const ALL: [Self; 4] = [Self::Method, Self::Path, Self::Query, Self::Body];

    /// The part's name in lower case (`"body"`), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Path => "path",
            Self::Query => "query",
            Self::Body => "body",
        }
    }
}

impl Fingerprint {
    /// The fingerprint of one request, its body as sent. `path` is the path as requested
    /// (`/api/invoices/42/finalize`), path parameters included, so one key sent to two
    /// resources is two different requests.
    pub fn of_request(operation: &str, method: &str, path: &str, query: &str, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        let mut parts = [[0; PART_DIGEST_LEN]; 4];
        hasher.update((DOMAIN.len() as u64).to_be_bytes());
        hasher.update(DOMAIN);
        hasher.update((operation.len() as u64).to_be_bytes());
        hasher.update(operation);
        let fields = [method.as_bytes(), path.as_bytes(), query.as_bytes(), body];
        for (part, digest) in fields.into_iter().zip(&mut parts) {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
            digest.copy_from_slice(&Sha256::digest(part)[..PART_DIGEST_LEN]);
        }
        Self {
            digest: hasher.finalize().into(),
            parts,
        }
    }

    /// The fingerprint of a request whose body is JSON: the body in its canonical form (member
    /// order and insignificant whitespace do not matter, numbers are compared by exact value,
    /// strings by their characters), without the top-level members named in `ignored`. A body
    /// that is not strict JSON, or that repeats a member name, is taken as sent.
    pub fn of_json_request(
        operation: &str,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        ignored: &[&str],
    ) -> Self {
        match canonical_json(body, ignored) {
            Some(canonical) => Self::of_request(operation, method, path, query, &canonical),
            None => Self::of_request(operation, method, path, query, body),
        }
    }

    /// The fingerprint of a job's run (a background job, a command): the operation and the
    /// bytes that say what this run does, such as the serialized input or the id of the batch
    /// it processes. A rerun with the same key and the same input is a replay; with another
    /// input, a mismatch (the key was reused for other work). There is no method, path or
    /// query: a mismatch names only the body.
    ///
    /// ```
    /// use idem_runtime::Fingerprint;
    ///
    /// let run = Fingerprint::of_job("chargeLateFees", b"2026-11-29");
    /// assert_eq!(run, Fingerprint::of_job("chargeLateFees", b"2026-11-29"));
    /// assert_ne!(run, Fingerprint::of_job("chargeLateFees", b"2026-11-30"));
    /// ```
    pub fn of_job(operation: &str, input: &[u8]) -> Self {
        Self::of_request(operation, JOB_METHOD, "", "", input)
    }

    /// The 32 bytes of the digest of the whole request.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.digest
    }

    /// The bytes the key table keeps: the digest, then the parts' short digests.
    pub fn to_stored(&self) -> Vec<u8> {
        let mut stored = Vec::with_capacity(STORED_LEN);
        stored.extend_from_slice(&self.digest);
        for part in &self.parts {
            stored.extend_from_slice(part);
        }
        stored
    }

    /// Whether `stored` (what [`Self::to_stored`] gave for an earlier request) is this
    /// request's fingerprint.
    pub fn matches_stored(&self, stored: &[u8]) -> bool {
        stored.get(..32) == Some(&self.digest[..])
    }

    /// The parts in which the request that `stored` belongs to differed from this one; empty
    /// when they are the same request, or when `stored` does not say.
    pub fn differing_parts(&self, stored: &[u8]) -> Vec<RequestPart> {
        if self.matches_stored(stored) || stored.len() != STORED_LEN {
            return Vec::new();
        }
        RequestPart::ALL
            .into_iter()
            .zip(&self.parts)
            .zip(stored[32..].chunks_exact(PART_DIGEST_LEN))
            .filter(|((_, mine), theirs)| mine.as_slice() != *theirs)
            .map(|((part, _), _)| part)
            .collect()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        LowerHex(&self.digest).fmt(f)
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
    fn displays_its_digest_as_lowercase_hex() {
        let fingerprint = Fingerprint::of_request("op", "POST", "/r", "", b"");
        let text = fingerprint.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(
            text,
            crate::hex::LowerHex(fingerprint.as_bytes()).to_string()
        );
    }

    #[test]
    fn a_mismatch_names_the_parts_that_differed() {
        let base = Fingerprint::of_request("op", "POST", "/r", "q=1", b"{}");
        let stored = base.to_stored();
        assert!(base.matches_stored(&stored));
        assert!(base.differing_parts(&stored).is_empty());
        let other = Fingerprint::of_request("op", "PUT", "/r2", "q=1", b"{}");
        assert!(!other.matches_stored(&stored));
        assert_eq!(
            other.differing_parts(&stored),
            [RequestPart::Method, RequestPart::Path]
        );
        let body = Fingerprint::of_request("op", "POST", "/r", "q=1", b"[]");
        assert_eq!(body.differing_parts(&stored), [RequestPart::Body]);
        // A fingerprint stored as the bare digest says nothing about its parts.
        assert!(other.differing_parts(&stored[..32]).is_empty());
    }

    #[test]
    fn a_json_body_is_fingerprinted_in_canonical_form() {
        let json =
            |body: &str| Fingerprint::of_json_request("op", "POST", "/r", "", body.as_bytes(), &[]);
        assert_eq!(json(r#"{"a":1,"b":2}"#), json("{ \"b\": 2, \"a\": 1 }"));
        assert_ne!(
            json(r#"{"n":9007199254740993}"#),
            json(r#"{"n":9007199254740992}"#)
        );
        // Not JSON: as sent, byte for byte.
        assert_eq!(
            json("{a:1}"),
            Fingerprint::of_request("op", "POST", "/r", "", b"{a:1}")
        );
        assert_ne!(json("{a:1}"), json("{a: 1}"));
    }
}
