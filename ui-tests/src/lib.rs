//! The trybuild proof that breaches of idem's contract do not compile.
//!
//! `tests/fail/` holds one breach per file, each with the compiler's exact message in the
//! `.stderr` beside it, run by trybuild; `examples/` shows that every legitimate form of a
//! protected handler compiles (`cargo test` builds them: as trybuild cases they would make it
//! build the whole dependency graph a second time, where failing cases only need it checked). Compiler messages change between toolchains, so the suite runs on the toolchain
//! pinned in the workspace's `rust-toolchain.toml`; after a toolchain change, regenerate with
//! `TRYBUILD=overwrite cargo test -p ui-tests` and review the `.stderr` diff like code.
//! The cases are database-free: they only compile.
