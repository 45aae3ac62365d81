//! The trybuild proof that contract breaches do not compile (see issue 3).
