//! Lower-case hexadecimal, as idem shows digests: fingerprints, key and tenant hashes.

use std::fmt;

/// Displays bytes as lower-case hex, two digits each, without allocating.
pub(crate) struct LowerHex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for LowerHex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_lower_case_digits_per_byte() {
        assert_eq!(LowerHex(&[0x00, 0x0a, 0xff]).to_string(), "000aff");
        assert_eq!(LowerHex(&[]).to_string(), "");
    }
}
