//! The canonical form of a JSON text, so that a retry whose encoder orders members or spaces
//! its output differently is still recognised as the same request.
//!
//! Two texts have the same canonical form exactly when they denote the same JSON value:
//! - insignificant whitespace is dropped;
//! - object members are sorted by their (unescaped) names;
//! - strings are written with the fewest escapes (`\uXXXX` spellings of plain characters stop
//!   mattering);
//! - numbers are compared by their exact decimal value, never rounded through `f64`: `1`,
//!   `1.0`, `10e-1` and `0.1E1` are one number, `9007199254740993` and `9007199254740992` are
//!   two. A number is written as `[-]digits` or `[-]digitsEexponent` with no trailing zeros.
//!
//! A text that is not strict JSON (RFC 8259), repeats a member name (its meaning depends on
//! the reader), nests deeper than [`MAX_DEPTH`] or has an exponent too large to compare has no
//! canonical form: the fingerprint then takes its bytes as sent.

/// How deep arrays and objects may nest before a text is taken as sent.
pub const MAX_DEPTH: usize = 128;

/// The canonical form of `text`, without the top-level object's members named in `ignored`;
/// `None` when `text` is not a JSON text that has one.
pub(crate) fn canonical_json(text: &[u8], ignored: &[&str]) -> Option<Vec<u8>> {
    let mut parser = Parser { text, at: 0 };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at != text.len() {
        return None;
    }
    let value = match value {
        Value::Object(members) if !ignored.is_empty() => Value::Object(
            members
                .into_iter()
                .filter(|(name, _)| !ignored.contains(&name.as_str()))
                .collect(),
        ),
        value => value,
    };
    let mut out = Vec::with_capacity(text.len());
    value.write(&mut out);
    Some(out)
}

enum Value {
    Literal(&'static str),
    Number(Number),
    String(String),
    Array(Vec<Value>),
    /// Members sorted by name, names unique.
    Object(Vec<(String, Value)>),
}

/// A number as `sign × digits × 10^exponent`, `digits` without leading or trailing zeros
/// (empty for zero, which has no sign).
struct Number {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Exponents beyond this many digits are not compared (no real request carries one).
const MAX_EXPONENT_DIGITS: usize = 15;

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth >= MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String),
            b't' => self.literal("true"),
            b'f' => self.literal("false"),
            b'n' => self.literal("null"),
            _ => self.number().map(Value::Number),
        }
    }

    fn literal(&mut self, word: &'static str) -> Option<Value> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word.as_bytes()).then(|| {
            self.at = end;
            Value::Literal(word)
        })
    }

    fn array(&mut self, depth: usize) -> Option<Value> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.eat(b']') {
            return Some(Value::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.next()? {
                b',' => {}
                b']' => return Some(Value::Array(items)),
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Value> {
        self.at += 1;
        let mut members = Vec::new();
        self.skip_whitespace();
        if !self.eat(b'}') {
            loop {
                self.skip_whitespace();
                if self.peek()? != b'"' {
                    return None;
                }
                let name = self.string()?;
                self.skip_whitespace();
                if !self.eat(b':') {
                    return None;
                }
                self.skip_whitespace();
                members.push((name, self.value(depth)?));
                self.skip_whitespace();
                match self.next()? {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        members.sort_by(|(a, _), (b, _)| a.cmp(b));
        if members.windows(2).any(|pair| pair[0].0 == pair[1].0) {
            return None;
        }
        Some(Value::Object(members))
    }

    /// A string token, unescaped.
    fn string(&mut self) -> Option<String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while !matches!(self.peek()?, b'"' | b'\\' | 0x00..=0x1f) {
                self.at += 1;
            }
            out.push_str(std::str::from_utf8(&self.text[start..self.at]).ok()?);
            match self.next()? {
                b'"' => return Some(out),
                b'\\' => out.push(self.escape()?),
                _ => return None,
            }
        }
    }

    fn escape(&mut self) -> Option<char> {
        Some(match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                if (0xd800..0xdc00).contains(&unit) {
                    if !(self.eat(b'\\') && self.eat(b'u')) {
                        return None;
                    }
                    let low = self.hex4()?;
                    if !(0xdc00..0xe000).contains(&low) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))?
                } else {
                    char::from_u32(unit)?
                }
            }
            _ => return None,
        })
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.text.get(self.at..self.at + 4)?).ok()?;
        if !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    fn digits(&mut self) -> &[u8] {
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        &self.text[start..self.at]
    }

    fn number(&mut self) -> Option<Number> {
        let negative = self.eat(b'-');
        let integer = self.digits().to_vec();
        if integer.is_empty() || (integer.len() > 1 && integer[0] == b'0') {
            return None;
        }
        let fraction = if self.eat(b'.') {
            let fraction = self.digits().to_vec();
            if fraction.is_empty() {
                return None;
            }
            fraction
        } else {
            Vec::new()
        };
        let mut exponent: i64 = 0;
        if self.eat(b'e') || self.eat(b'E') {
            let negative_exponent = self.eat(b'-') || {
                self.eat(b'+');
                false
            };
            let digits = self.digits();
            let significant = digits.iter().skip_while(|&&digit| digit == b'0').count();
            if digits.is_empty() || significant > MAX_EXPONENT_DIGITS {
                return None;
            }
            exponent = std::str::from_utf8(digits).ok()?.parse().ok()?;
            if negative_exponent {
                exponent = -exponent;
            }
        }
        exponent -= i64::try_from(fraction.len()).ok()?;
        let mut digits: Vec<u8> = integer.into_iter().chain(fraction).collect();
        let leading = digits.iter().take_while(|&&digit| digit == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exponent += 1;
        }
        if digits.is_empty() {
            return Some(Number {
                negative: false,
                digits,
                exponent: 0,
            });
        }
        Some(Number {
            negative,
            digits,
            exponent,
        })
    }
}

impl Value {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Literal(word) => out.extend_from_slice(word.as_bytes()),
            Self::Number(number) => number.write(out),
            Self::String(text) => write_string(text, out),
            Self::Array(items) => {
                out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Self::Object(members) => {
                out.push(b'{');
                for (index, (name, value)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write_string(name, out);
                    out.push(b':');
                    value.write(out);
                }
                out.push(b'}');
            }
        }
    }
}

impl Number {
    fn write(&self, out: &mut Vec<u8>) {
        if self.digits.is_empty() {
            out.push(b'0');
            return;
        }
        if self.negative {
            out.push(b'-');
        }
        out.extend_from_slice(&self.digits);
        if self.exponent != 0 {
            out.push(b'E');
            out.extend_from_slice(self.exponent.to_string().as_bytes());
        }
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for character in text.chars() {
        match character {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{0}'..='\u{1f}' => {
                out.extend_from_slice(format!("\\u{:04x}", u32::from(character)).as_bytes());
            }
            _ => {
                let mut buffer = [0; 4];
                out.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> Option<String> {
        canonical_json(text.as_bytes(), &[]).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn member_order_and_whitespace_do_not_matter() {
        assert_eq!(
            canonical(r#"{"a":1,"b":2}"#),
            canonical("{ \"b\": 2,\n\t\"a\": 1 }")
        );
        assert_eq!(
            canonical(r#"{ "b": [ 1 , {"y":null,"x":true} ] , "a":"z" }"#).unwrap(),
            r#"{"a":"z","b":[1,{"x":true,"y":null}]}"#
        );
    }

    #[test]
    fn numbers_compare_by_exact_value() {
        for same in ["1", "1.0", "10e-1", "0.1E1", "1.000e+0", "100E-2"] {
            assert_eq!(canonical(same).unwrap(), "1", "{same}");
        }
        assert_eq!(canonical("-0.0").unwrap(), "0");
        assert_eq!(canonical("0e5").unwrap(), "0");
        assert_eq!(canonical("1250").unwrap(), "125E1");
        assert_eq!(canonical("-12.50").unwrap(), "-125E-1");
        assert_ne!(canonical("9007199254740993"), canonical("9007199254740992"));
        assert_ne!(canonical("0.1"), canonical("0.10000000000000001"));
        assert_ne!(canonical("1"), canonical("-1"));
        assert_ne!(canonical("1"), canonical(r#""1""#));
    }

    #[test]
    fn strings_compare_by_their_characters() {
        assert_eq!(canonical(r#""\u00e9\/""#), canonical(r#""é/""#));
        assert_eq!(canonical(r#""\ud83d\ude00""#), canonical("\"😀\""));
        assert_eq!(canonical(r#""a\nb\"""#).unwrap(), r#""a\u000ab\"""#);
        assert_ne!(canonical(r#""a""#), canonical(r#""A""#));
    }

    #[test]
    fn texts_that_are_not_strict_json_have_no_canonical_form() {
        for bad in [
            "",
            "{",
            "{\"a\":1,}",
            "[1,]",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "NaN",
            "'a'",
            "{\"a\":1}x",
            "\"\t\"",
            r#""\ud800""#,
            r#""\x""#,
            "tru",
            "{a:1}",
            "1e9999999999999999",
        ] {
            assert_eq!(canonical(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_repeated_member_name_has_no_canonical_form() {
        assert_eq!(canonical(r#"{"a":1,"a":2}"#), None);
        assert_eq!(canonical(r#"{"a":1,"\u0061":1}"#), None);
    }

    #[test]
    fn nesting_past_the_limit_has_no_canonical_form() {
        let deep = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(canonical(&deep(MAX_DEPTH)).is_some());
        assert_eq!(canonical(&deep(MAX_DEPTH + 1)), None);
    }

    #[test]
    fn ignored_members_leave_only_the_top_level_object() {
        let a = canonical_json(
            br#"{"amount":1,"sent_at":"now","meta":{"sent_at":1}}"#,
            &["sent_at"],
        );
        let b = canonical_json(
            br#"{"meta":{"sent_at":1},"amount":1.0,"sent_at":"later"}"#,
            &["sent_at"],
        );
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a.unwrap()).unwrap(),
            r#"{"amount":1,"meta":{"sent_at":1}}"#
        );
    }
}
