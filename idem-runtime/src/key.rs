//! The `Idempotency-Key` a client sends, validated once at the edge.

use std::fmt;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A validated idempotency key: 1 to 255 bytes of visible ASCII (`0x21..=0x7E`).
///
/// The IETF draft "The Idempotency-Key HTTP Header Field" sends the key as a structured-field
/// string (`"8e03978e-40d5-43e8-bc93-6894a57f9324"`); Stripe-style clients send the bare token.
/// [`IdempotencyKey::from_header_value`] accepts both, [`IdempotencyKey::parse`] takes the key
/// itself.
///
/// ```
/// use idem_runtime::IdempotencyKey;
///
/// let quoted = IdempotencyKey::from_header_value(br#""8e03978e-40d5""#)?;
/// let bare = IdempotencyKey::from_header_value(b"8e03978e-40d5")?;
/// assert_eq!(quoted, bare);
/// assert_eq!(quoted.as_str(), "8e03978e-40d5");
/// assert!(IdempotencyKey::parse("").is_err());
/// # Ok::<(), idem_runtime::KeyError>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why a value is not a valid idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key has no characters.
    #[error("the idempotency key is empty: send 1 to 255 visible ASCII characters, such as a UUID")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("the idempotency key is {len} bytes long: at most {MAX_KEY_LEN} are accepted")]
    TooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// The key holds a byte outside visible ASCII.
    #[error(
        "the idempotency key has byte {byte:#04x} at position {position}: only visible ASCII (0x21 to 0x7e) is accepted"
    )]
    InvalidCharacter {
        /// Zero-based byte offset in the key.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A structured-field string was opened with `"` and never closed.
    #[error("the idempotency key opens a quoted string that is never closed")]
    UnterminatedString,
    /// A structured-field string is followed by more text (a second value or parameters, which
    /// the header does not define).
    #[error(
        "the idempotency key has text after its closing quote, at position {position}: send one quoted string and nothing after it"
    )]
    TextAfterString {
        /// Zero-based byte offset of the first byte after the closing quote in the header value.
        position: usize,
    },
    /// A `\` inside a structured-field string escapes something other than `"` or `\`.
    #[error(
        "the idempotency key has an invalid escape at position {position}: only \\\" and \\\\ may be escaped"
    )]
    InvalidEscape {
        /// Zero-based byte offset of the backslash in the header value.
        position: usize,
    },
}

impl IdempotencyKey {
    /// Validates the key itself (no quotes, no escapes).
    pub fn parse(key: &str) -> Result<Self, KeyError> {
        validate(key.as_bytes())?;
        Ok(Self(key.to_owned()))
    }

    /// Parses the value of an `Idempotency-Key` header: a structured-field string
    /// (`"abc"`, with `\"` and `\\` escapes) or a bare token (`abc`). Surrounding spaces and tabs
    /// are ignored.
    pub fn from_header_value(value: &[u8]) -> Result<Self, KeyError> {
        let value = value.trim_ascii();
        let Some(quoted) = value.strip_prefix(b"\"") else {
            validate(value)?;
            return Ok(Self(ascii_string(value)));
        };
        let mut key = Vec::with_capacity(quoted.len());
        let mut bytes = quoted.iter().enumerate();
        while let Some((offset, &byte)) = bytes.next() {
            match byte {
                b'"' if offset + 1 == quoted.len() => {
                    validate(&key)?;
                    return Ok(Self(ascii_string(&key)));
                }
                b'"' => {
                    return Err(KeyError::TextAfterString {
                        position: offset + 2,
                    });
                }
                b'\\' => match bytes.next() {
                    Some((_, &escaped @ (b'"' | b'\\'))) => key.push(escaped),
                    _ => {
                        return Err(KeyError::InvalidEscape {
                            position: offset + 1,
                        });
                    }
                },
                _ => key.push(byte),
            }
        }
        Err(KeyError::UnterminatedString)
    }

    /// The key as the client sent it, unquoted.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(key: &[u8]) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: key.len() });
    }
    match key.iter().position(|byte| !byte.is_ascii_graphic()) {
        Some(position) => Err(KeyError::InvalidCharacter {
            position,
            byte: key[position],
        }),
        None => Ok(()),
    }
}

/// Called only on bytes that `validate` accepted, which are ASCII.
fn ascii_string(bytes: &[u8]) -> String {
    bytes.iter().map(|&byte| char::from(byte)).collect()
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keys are credentials of a sort (they replay a stored response): `Debug` shows only the length.
impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey(<{} bytes>)", self.0.len())
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = KeyError;

    fn from_str(key: &str) -> Result<Self, KeyError> {
        Self::parse(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_visible_ascii_byte_and_the_longest_key() {
        let all: String = (0x21u8..=0x7e).map(char::from).collect();
        assert_eq!(IdempotencyKey::parse(&all).unwrap().as_str(), all);
        let longest = "k".repeat(MAX_KEY_LEN);
        assert!(IdempotencyKey::parse(&longest).is_ok());
    }

    #[test]
    fn refuses_each_malformed_key_with_its_own_error() {
        assert_eq!(IdempotencyKey::parse(""), Err(KeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(MAX_KEY_LEN + 1)),
            Err(KeyError::TooLong { len: 256 })
        );
        assert_eq!(
            IdempotencyKey::parse("ab c"),
            Err(KeyError::InvalidCharacter {
                position: 2,
                byte: b' '
            })
        );
        assert_eq!(
            IdempotencyKey::parse("a\u{e9}"),
            Err(KeyError::InvalidCharacter {
                position: 1,
                byte: 0xc3
            })
        );
        assert_eq!(
            IdempotencyKey::parse("a\nb"),
            Err(KeyError::InvalidCharacter {
                position: 1,
                byte: b'\n'
            })
        );
    }

    #[test]
    fn header_value_accepts_structured_field_strings_and_bare_tokens() {
        let key = |v: &[u8]| IdempotencyKey::from_header_value(v).map(|k| k.0);
        assert_eq!(key(br#""abc""#).unwrap(), "abc");
        assert_eq!(key(b" abc\t").unwrap(), "abc");
        assert_eq!(key(br#""a\"b\\c""#).unwrap(), r#"a"b\c"#);
        assert_eq!(key(br#""""#), Err(KeyError::Empty));
        assert_eq!(key(b"\"abc"), Err(KeyError::UnterminatedString));
        assert_eq!(
            key(br#""a\bc""#),
            Err(KeyError::InvalidEscape { position: 2 })
        );
        assert_eq!(
            key(br#""a"b""#),
            Err(KeyError::TextAfterString { position: 3 })
        );
        assert_eq!(
            key(br#""abc";v=1"#),
            Err(KeyError::TextAfterString { position: 5 })
        );
        assert_eq!(
            key(br#""k1", "k2""#),
            Err(KeyError::TextAfterString { position: 4 })
        );
        assert_eq!(
            key(br#""a b""#),
            Err(KeyError::InvalidCharacter {
                position: 1,
                byte: b' '
            })
        );
    }

    #[test]
    fn debug_does_not_leak_the_key() {
        let key = IdempotencyKey::parse("secret-key").unwrap();
        assert_eq!(format!("{key:?}"), "IdempotencyKey(<10 bytes>)");
    }
}
