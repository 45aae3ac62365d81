//! The response a write stores, so a retry gets the same answer.

use std::fmt;

/// The answer to a write, stored in the same transaction as the write and replayed to retries.
///
/// It is shaped like an HTTP response because that is what most writes answer with; an
/// operation outside HTTP stores its result in `body` and uses `status` as it likes.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code (`201`).
    pub status: u16,
    /// The headers worth replaying, as (name, value) pairs.
    pub headers: Vec<(String, String)>,
    /// The body bytes, replayed byte for byte.
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// A response with a status and a body and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The body as text when it is UTF-8 (a JSON answer reads as JSON), as bytes otherwise.
impl fmt::Debug for StoredResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut response = f.debug_struct("StoredResponse");
        response
            .field("status", &self.status)
            .field("headers", &self.headers);
        match std::str::from_utf8(&self.body) {
            Ok(text) => response.field("body", &text),
            Err(_) => response.field("body", &self.body),
        };
        response.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_a_text_body_as_text_and_other_bytes_as_bytes() {
        let json =
            StoredResponse::new(201, r#"{"id":1}"#).with_header("content-type", "application/json");
        assert_eq!(
            format!("{json:?}"),
            r#"StoredResponse { status: 201, headers: [("content-type", "application/json")], body: "{\"id\":1}" }"#
        );
        let binary = StoredResponse::new(200, vec![0xff, 0x00]);
        assert_eq!(
            format!("{binary:?}"),
            "StoredResponse { status: 200, headers: [], body: [255, 0] }"
        );
    }
}
