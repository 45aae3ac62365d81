//! Properties of the parsers and the fingerprint, over generated inputs.

use idem_runtime::{Fingerprint, IdempotencyKey, KeyError, MAX_KEY_LEN, TenantId};
use proptest::prelude::*;

/// A valid key: 1 to 255 visible ASCII bytes.
fn valid_key() -> impl Strategy<Value = String> {
    proptest::collection::vec(0x21u8..=0x7e, 1..=MAX_KEY_LEN)
        .prop_map(|bytes| bytes.into_iter().map(char::from).collect())
}

/// The structured-field string form of a key.
fn quoted(key: &str) -> String {
    let escaped: String = key
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

/// A request: operation, method, path, query, body.
fn request() -> impl Strategy<Value = (String, String, String, String, Vec<u8>)> {
    (
        "[a-z][A-Za-z0-9]{0,20}",
        prop_oneof![
            Just("POST".to_owned()),
            Just("PUT".to_owned()),
            Just("PATCH".to_owned())
        ],
        "/[a-z0-9/{}_-]{0,40}",
        "[a-z0-9=&]{0,20}",
        proptest::collection::vec(any::<u8>(), 0..200),
    )
}

proptest! {
    #[test]
    fn a_key_is_valid_exactly_when_it_is_1_to_255_visible_ascii_bytes(text in ".{0,300}") {
        let bytes = text.as_bytes();
        let valid = !bytes.is_empty() && bytes.len() <= MAX_KEY_LEN && bytes.iter().all(u8::is_ascii_graphic);
        prop_assert_eq!(IdempotencyKey::parse(&text).is_ok(), valid);
    }

    #[test]
    fn every_malformed_key_says_why(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
        match IdempotencyKey::parse(&text) {
            Ok(key) => prop_assert_eq!(key.as_str(), text.as_str()),
            Err(KeyError::Empty) => prop_assert!(text.is_empty()),
            Err(KeyError::TooLong { len }) => prop_assert!(len > MAX_KEY_LEN),
            Err(KeyError::InvalidCharacter { position, byte }) => {
                prop_assert_eq!(text.as_bytes()[position], byte);
                prop_assert!(!byte.is_ascii_graphic());
            }
            Err(other) => prop_assert!(false, "parse never reports {other:?}"),
        }
    }

    #[test]
    fn the_quoted_and_bare_header_forms_name_the_same_key(key in valid_key()) {
        let quoted = IdempotencyKey::from_header_value(quoted(&key).as_bytes()).unwrap();
        prop_assert_eq!(quoted.as_str(), key.as_str());
        // A bare token that starts with a quote is read as the quoted form instead.
        if !key.starts_with('"') {
            let bare = IdempotencyKey::from_header_value(key.as_bytes()).unwrap();
            prop_assert_eq!(bare, quoted);
        }
    }

    #[test]
    fn header_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(key) = IdempotencyKey::from_header_value(&bytes) {
            prop_assert!(!key.as_str().is_empty() && key.as_str().len() <= MAX_KEY_LEN);
            prop_assert!(key.as_str().bytes().all(|byte| byte.is_ascii_graphic()));
        }
    }

    #[test]
    fn tenant_ids_never_contain_a_colon(text in ".{0,200}") {
        if let Ok(tenant) = TenantId::new(text.clone()) {
            prop_assert!(!tenant.as_str().contains(':'));
            prop_assert_eq!(tenant.as_str(), text.as_str());
        }
    }

    #[test]
    fn equal_requests_have_equal_fingerprints((op, method, path, query, body) in request()) {
        prop_assert_eq!(
            Fingerprint::of_request(&op, &method, &path, &query, &body),
            Fingerprint::of_request(&op, &method, &path, &query, &body.clone())
        );
    }

    #[test]
    fn any_change_to_a_request_changes_its_fingerprint(
        (op, method, path, query, body) in request(),
        part in 0..5usize,
        extra in "[a-zA-Z0-9]{1,5}",
    ) {
        let original = Fingerprint::of_request(&op, &method, &path, &query, &body);
        let changed = |s: &str| format!("{s}{extra}");
        let other = match part {
            0 => Fingerprint::of_request(&changed(&op), &method, &path, &query, &body),
            1 => Fingerprint::of_request(&op, &changed(&method), &path, &query, &body),
            2 => Fingerprint::of_request(&op, &method, &changed(&path), &query, &body),
            3 => Fingerprint::of_request(&op, &method, &path, &changed(&query), &body),
            _ => Fingerprint::of_request(&op, &method, &path, &query, &[body.as_slice(), extra.as_bytes()].concat()),
        };
        prop_assert_ne!(original, other);
    }

    #[test]
    fn moving_bytes_between_parts_changes_the_fingerprint(
        query in "[a-z]{1,10}", body in "[a-z]{1,10}", split in 0..10usize,
    ) {
        let joined = format!("{query}{body}");
        let split = split % joined.len();
        prop_assume!(split != query.len());
        prop_assert_ne!(
            Fingerprint::of_request("op", "POST", "/p", &query, body.as_bytes()),
            Fingerprint::of_request("op", "POST", "/p", &joined[..split], &joined.as_bytes()[split..])
        );
    }
}
