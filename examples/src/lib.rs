//! Runnable services built on idem.
//!
//! [`accubooks`] is the flagship: a small multi-tenant bookkeeping API whose 14 mutations are
//! protected. `cargo run --example accubooks` serves it.

pub mod accubooks;
