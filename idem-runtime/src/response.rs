//! The response a write stores, so a retry gets the same answer.

/// The answer to a write, stored in the same transaction as the write and replayed to retries.
///
/// It is shaped like an HTTP response because that is what most writes answer with; an
/// operation outside HTTP stores its result in `body` and uses `status` as it likes.
#[derive(Debug, Clone, PartialEq, Eq)]
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
