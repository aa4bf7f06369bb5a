//! Diagnostics of the SDK's macros (`.stderr` snapshots; regenerate with `TRYBUILD=overwrite`).

#[test]
fn macro_mistakes_are_reported_at_the_user_code() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
