//! Compile-fail tests of `transformer::model!`: one mistake per file under `tests/ui/<category>/`,
//! each with the exact diagnostics it must produce in the `.stderr` next to it. Regenerate those
//! with `TRYBUILD=overwrite cargo test --test ui`, then read every one: the caret must sit under the
//! offending token and the message must say what is wrong and what would be right.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/keys/*.rs");
    t.compile_fail("tests/ui/values/*.rs");
    t.compile_fail("tests/ui/dims/*.rs");
    t.compile_fail("tests/ui/names/*.rs");
    t.compile_fail("tests/ui/decoder/*.rs");
    t.compile_fail("tests/ui/vision/*.rs");
    t.compile_fail("tests/ui/llama/*.rs");
    t.compile_fail("tests/ui/multiple/*.rs");
    t.compile_fail("tests/ui/syntax/*.rs");
    t.compile_fail("tests/ui/user_shapes/*.rs");
    t.compile_fail("tests/ui/seq2seq/*.rs");
    t.compile_fail("tests/ui/variants/*.rs");
    t.compile_fail("tests/ui/composed/*.rs");
    t.compile_fail("tests/ui/fallback/*.rs");
    t.compile_fail("tests/ui/reformer/*.rs");
    t.compile_fail("tests/ui/training/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
