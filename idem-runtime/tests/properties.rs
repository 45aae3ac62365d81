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

/// A JSON value for the canonical-form properties: numbers as exact decimals (sign, digits,
/// exponent), object members with distinct names.
#[derive(Debug, Clone)]
enum Json {
    Null,
    Bool(bool),
    Number(bool, String, i32),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        (any::<bool>(), "[1-9][0-9]{0,30}", -20..20i32)
            .prop_map(|(negative, digits, exponent)| Json::Number(negative, digits, exponent)),
        "[a-zA-Z0-9 é\"\\\\\n😀]{0,12}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|members| Json::Object(members.into_iter().collect())),
        ]
    })
}

/// Writes `value` as JSON text; `spelled_otherwise` reverses member order, adds whitespace,
/// escapes characters as `\uXXXX` and writes numbers with trailing zeros and another exponent.
fn render(value: &Json, spelled_otherwise: bool) -> String {
    let space = if spelled_otherwise { " \n\t" } else { "" };
    match value {
        Json::Null => "null".to_owned(),
        Json::Bool(value) => value.to_string(),
        Json::Number(negative, digits, exponent) => {
            let sign = if *negative { "-" } else { "" };
            if spelled_otherwise {
                format!("{sign}{digits}.000e{}", exponent)
            } else {
                format!("{sign}{digits}0E{}", exponent - 1)
            }
        }
        Json::String(text) => {
            let mut out = String::from("\"");
            for c in text.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c if spelled_otherwise && c.is_ascii_alphabetic() => {
                        out.push_str(&format!("\\u{:04X}", u32::from(c)));
                    }
                    '😀' if spelled_otherwise => out.push_str("\\ud83d\\ude00"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }
        Json::Array(items) => {
            let items: Vec<_> = items
                .iter()
                .map(|item| render(item, spelled_otherwise))
                .collect();
            format!(
                "[{space}{}{space}]",
                items.join(&format!("{space},{space}"))
            )
        }
        Json::Object(members) => {
            let mut members: Vec<_> = members
                .iter()
                .map(|(name, value)| {
                    format!(
                        "\"{name}\"{space}:{space}{}",
                        render(value, spelled_otherwise)
                    )
                })
                .collect();
            if spelled_otherwise {
                members.reverse();
            }
            format!(
                "{{{space}{}{space}}}",
                members.join(&format!("{space},{space}"))
            )
        }
    }
}

/// `value` with its first number, string or boolean changed.
fn changed(value: &Json) -> Option<Json> {
    Some(match value {
        Json::Null => return None,
        Json::Bool(value) => Json::Bool(!value),
        Json::Number(negative, digits, exponent) => {
            let mut digits = digits.clone();
            let last = digits.pop().unwrap();
            digits.push(if last == '9' {
                '8'
            } else {
                char::from(last as u8 + 1)
            });
            Json::Number(*negative, digits, *exponent)
        }
        Json::String(text) => Json::String(format!("{text}x")),
        Json::Array(items) => {
            let mut items = items.clone();
            let (index, item) = items
                .iter()
                .enumerate()
                .find_map(|(i, item)| changed(item).map(|c| (i, c)))?;
            items[index] = item;
            Json::Array(items)
        }
        Json::Object(members) => {
            let mut members = members.clone();
            let (index, value) = members
                .iter()
                .enumerate()
                .find_map(|(i, (_, value))| changed(value).map(|c| (i, c)))?;
            members[index].1 = value;
            Json::Object(members)
        }
    })
}

fn json_fingerprint(body: &str) -> Fingerprint {
    Fingerprint::of_json_request("op", "POST", "/p", "", body.as_bytes(), &[])
}

proptest! {
    #[test]
    fn a_json_body_spelled_otherwise_is_the_same_request(value in json_value()) {
        let first = render(&value, false);
        let retry = render(&value, true);
        prop_assert_eq!(json_fingerprint(&first), json_fingerprint(&retry), "{} vs {}", first, retry);
    }

    #[test]
    fn a_json_body_with_another_value_is_another_request(value in json_value()) {
        let Some(other) = changed(&value) else { return Ok(()) };
        let (first, second) = (render(&value, false), render(&other, true));
        prop_assert_ne!(json_fingerprint(&first), json_fingerprint(&second), "{} vs {}", first, second);
    }
}
