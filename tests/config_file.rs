//! Declarations that name their checkpoint's config.json: every key they leave out comes from the
//! file at compile time, and the result is the model Hugging Face saved — the decoders pass the
//! same parity tests against transformers as their hand-written declarations (logits within 1e-4,
//! greedy generation, cached steps), and every other family loads its fixture with every tensor's
//! name and shape checked. (Contradictions between a declaration and its file are compile errors;
//! the macro crate's tests check their messages.)

#[path = "common/decoder_parity.rs"]
#[macro_use]
mod decoder_parity;

use transformer::{Batch, GenerateOptions, WeightLoader};

transformer::model! {
    /// `tests/fixtures/gpt2/tiny`, from its config alone.
    pub struct Gpt2Tiny { config: "tests/fixtures/gpt2/tiny/config.json" }
}

transformer::model! {
    /// `tests/fixtures/llama/mistral`: grouped-query attention and one sliding window, read from
    /// `num_key_value_heads` and `sliding_window`.
    pub struct Mistral { config: "tests/fixtures/llama/mistral/config.json" }
}

transformer::model! {
    /// `tests/fixtures/llama/ministral`: per-layer windows from `layer_types`.
    pub struct Ministral { config: "tests/fixtures/llama/ministral/config.json" }
}

transformer::model! {
    /// `tests/fixtures/neox/neox`: partial rotary (`rotary_pct`) and the parallel residual.
    pub struct NeoX { config: "tests/fixtures/neox/neox/config.json" }
}

transformer::model! {
    /// `tests/fixtures/bloom/bloom`: ALiBi has no position table, so the config has no length;
    /// the declaration gives the cache's.
    pub struct Bloom { config: "tests/fixtures/bloom/bloom/config.json", max_positions: 128 }
}

transformer::model! {
    /// `tests/fixtures/vit/small`.
    pub struct Vit { config: "tests/fixtures/vit/small/config.json" }
}

transformer::model! {
    /// `tests/fixtures/seq2seq/t5` (gated GELU, `d_kv` ≠ `d_model / heads`); T5's relative
    /// positions have no table either.
    pub struct T5 { config: "tests/fixtures/seq2seq/t5/config.json", max_positions: 64 }
}

transformer::model! {
    /// `tests/fixtures/seq2seq/bart`.
    pub struct Bart { config: "tests/fixtures/seq2seq/bart/config.json" }
}

transformer::model! {
    /// `tests/fixtures/reformer/causal`.
    pub struct Reformer { config: "tests/fixtures/reformer/causal/config.json" }
}

decoder_parity_tests!(mistral, Mistral, "llama/mistral");
decoder_parity_tests!(ministral, Ministral, "llama/ministral");
decoder_parity_tests!(neox, NeoX, "neox/neox");
decoder_parity_tests!(bloom, Bloom, "bloom/bloom");

fn weights(fixture: &str) -> WeightLoader {
    WeightLoader::open(decoder_parity::dir(fixture).join("model.safetensors")).expect("fixture opens")
}

#[test]
fn the_other_families_load_their_fixtures() {
    assert_eq!((Vit::IMAGE_SIZE, Vit::PATCH_SIZE, Vit::D_MODEL, Vit::LABELS), (32, 8, 64, 10));
    let mut w = weights("vit/small");
    let _ = Vit::load(&mut w);
    w.finish().expect("the ViT fixture fits its config");

    assert_eq!((T5::D_MODEL, T5::HEADS, T5::HEAD_DIM), (32, 4, 12));
    let mut w = weights("seq2seq/t5");
    let _ = T5::load(&mut w);
    w.finish().expect("the T5 fixture fits its config");

    let mut w = weights("seq2seq/bart");
    let _ = Bart::load(&mut w);
    w.finish().expect("the BART fixture fits its config");

    assert_eq!(Reformer::LSH_LAYERS, [true, false, true, false]);
    let d = decoder_parity::dir("reformer/causal");
    Reformer::from_pretrained(&d, d.join("rotations.safetensors"))
        .expect("the Reformer fixture fits its config");
}

/// The GPT-2 fixture generates 40 tokens (the shared decoder tests take 32): its last logits and
/// greedy continuations, as transformers computed them.
#[test]
fn gpt2_from_its_config_matches_transformers() {
    let r = decoder_parity::reference("gpt2/tiny");
    let model =
        Gpt2Tiny::from_safetensors(decoder_parity::dir("gpt2/tiny").join("model.safetensors")).unwrap();
    let options = GenerateOptions { max_new_tokens: 40, ..GenerateOptions::default() };
    for ((p, last), greedy) in r.prompts.iter().zip(&r.last_logits).zip(&r.greedy) {
        let logits = model.logits(&Batch::from_sequences(&[&p.ids]).unwrap()).unwrap();
        let diff = decoder_parity::max_abs_diff(&logits[p.ids.len() - 1], last);
        assert!(diff <= 1e-4, "last logits: max |diff| {diff:e}");
        assert_eq!(&model.generate(&[&p.ids], &options).unwrap()[0], greedy);
    }
}
