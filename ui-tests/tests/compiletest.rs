//! Runs the ui cases: each of `fail/` must fail with its `.stderr`. (What must compile is in
//! `examples/`, which `cargo test` builds: with no case to run, trybuild only checks its
//! dependencies instead of building them a second time.)

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/fail/*.rs");
}
