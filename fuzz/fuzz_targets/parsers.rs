//! Every parser of untrusted input, on arbitrary bytes: the `Idempotency-Key` header value and
//! the tenant id. None may panic, and whatever they accept must hold their invariants.
#![no_main]

use idem_runtime::{Fingerprint, IdempotencyKey, MAX_KEY_LEN, TenantId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = IdempotencyKey::from_header_value(data) {
        let text = key.as_str();
        assert!(!text.is_empty() && text.len() <= MAX_KEY_LEN);
        assert!(text.bytes().all(|byte| byte.is_ascii_graphic()));
        // What was accepted parses again, as the key itself, to the same key.
        assert_eq!(IdempotencyKey::parse(text).as_ref(), Ok(&key));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(tenant) = TenantId::new(text) {
            assert!(!tenant.as_str().contains(':'));
        }
        let _ = Fingerprint::of_request(text, "POST", text, text, data);
    }
});
