//! A composed encoder-decoder: BART (`tests/fixtures/seq2seq/bart`, Hugging Face
//! `BartForConditionalGeneration` with random weights, written by `scripts/reference/seq2seq.py`)
//! re-expressed as `fn encode` + `fn decode` passes. Its outputs are bit-identical to the preset's
//! (encoder states, teacher-forced logits, cached steps, greedy generation): both lower to the
//! same two-stack graph, so the same kernels run in the same order. It also matches the fixture
//! within the preset test's tolerance (1e-4), and its greedy tokens are the reference's.

use serde::Deserialize;
use transformer::{Batch, GenerateOptions, Workspace};

#[path = "common/seq2seq_presets.rs"]
mod seq2seq_presets;
use seq2seq_presets::*;

transformer::model! {
    /// BART as composed passes: post-norm layers, learned positions offset by 2, scaled and
    /// normalised embeddings, a tied head with `final_logits_bias`.
    pub struct ComposedBart {
        vocab_size: 120,
        max_positions: 64,
        d_model: 32,
        heads: 4,
        d_ff: 48,
        encoder_layers: 2,
        decoder_layers: 2,
        decoder_start: 2,
    }

    fn encode(tokens) -> memory {
        #[weights = "model.shared"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        #[weights = "model.encoder.embed_positions"]
        let x = x + embedding(positions, max_positions + 2, d_model, offset = 2);
        #[weights = "model.encoder.layernorm_embedding"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "model.encoder.layers.{layer}"]
        for layer in 0..encoder_layers {
            #[weights = "self_attn.q_proj"]
            let q = linear(x, d_model);
            #[weights = "self_attn.k_proj"]
            let k = linear(x, d_model);
            #[weights = "self_attn.v_proj"]
            let v = linear(x, d_model);
            let context = attention(q, k, v, heads = heads);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(context, d_model);
            #[weights = "self_attn_layer_norm"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            #[weights("fc1", "fc2")]
            let ffn_out = linear(gelu(linear(x, d_ff)), d_model);
            #[weights = "final_layer_norm"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        x
    }

    fn decode(tokens, memory) -> logits {
        #[weights = "model.shared"]
        let x = embedding(tokens, vocab_size, d_model) * sqrt(d_model);
        #[weights = "model.decoder.embed_positions"]
        let x = x + embedding(positions, max_positions + 2, d_model, offset = 2);
        #[weights = "model.decoder.layernorm_embedding"]
        let x = layer_norm(x, eps = 1e-5);
        #[weights = "model.decoder.layers.{layer}"]
        for layer in 0..decoder_layers {
            #[weights = "self_attn.q_proj"]
            let q = linear(x, d_model);
            #[weights = "self_attn.k_proj"]
            let k = linear(x, d_model);
            #[weights = "self_attn.v_proj"]
            let v = linear(x, d_model);
            let context = attention(q, k, v, heads = heads, causal);
            #[weights = "self_attn.out_proj"]
            let attention_out = linear(context, d_model);
            #[weights = "self_attn_layer_norm"]
            x = layer_norm(x + attention_out, eps = 1e-5);
            // Cross-attention: keys and values are projections of the encoder's memory.
            #[weights = "encoder_attn.q_proj"]
            let cross_q = linear(x, d_model);
            #[weights = "encoder_attn.k_proj"]
            let cross_k = linear(memory, d_model);
            #[weights = "encoder_attn.v_proj"]
            let cross_v = linear(memory, d_model);
            let cross_context = attention(cross_q, cross_k, cross_v, heads = heads);
            #[weights = "encoder_attn.out_proj"]
            let cross_out = linear(cross_context, d_model);
            #[weights = "encoder_attn_layer_norm"]
            x = layer_norm(x + cross_out, eps = 1e-5);
            #[weights("fc1", "fc2")]
            let ffn_out = linear(gelu(linear(x, d_ff)), d_model);
            #[weights = "final_layer_norm"]
            x = layer_norm(x + ffn_out, eps = 1e-5);
        }
        // Tied: the head reads the shared embeddings, with a bias stored apart.
        #[weights = "model.shared"]
        linear(x, vocab_size, bias = "final_logits_bias")
    }
}

// The generated API is the preset's, consts included.
const _: () = assert!(
    ComposedBart::DECODER_START == 2
        && ComposedBart::ENCODER_LAYERS == 2
        && ComposedBart::DECODER_LAYERS == 2
        && ComposedBart::DECODER_D_MODEL == 32
        && ComposedBart::MAX_POSITIONS == 64
);

#[derive(Deserialize)]
struct Reference {
    sources: Vec<Vec<u32>>,
    encoder_hidden: Vec<Vec<Vec<f32>>>,
    decoder_inputs: Vec<Vec<u32>>,
    decoder_logits: Vec<Vec<Vec<f32>>>,
    greedy: Vec<Vec<u32>>,
}

fn path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seq2seq/bart").join(file)
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(path("reference.json")).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn models() -> (ComposedBart, Bart) {
    let weights = path("model.safetensors");
    (ComposedBart::from_safetensors(&weights).unwrap(), Bart::from_safetensors(&weights).unwrap())
}

fn bits(rows: &[impl AsRef<[f32]>]) -> Vec<u32> {
    rows.iter().flat_map(|r| r.as_ref().iter().map(|v| v.to_bits())).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

const TOLERANCE: f32 = 1e-4;

#[test]
fn encoder_states_and_logits_are_bit_identical_to_the_preset() {
    let ((composed, preset), r) = (models(), reference());
    let sources: Vec<&[u32]> = r.sources.iter().map(Vec::as_slice).collect();
    let sources = Batch::from_sequences(&sources).unwrap();
    let (ours, theirs) = (composed.encode(&sources).unwrap(), preset.encode(&sources).unwrap());
    assert_eq!(
        bits(composed.encoder_hidden(&ours)),
        bits(preset.encoder_hidden(&theirs)),
        "encoder states differ"
    );
    let targets: Vec<&[u32]> = r.decoder_inputs.iter().map(Vec::as_slice).collect();
    let targets = Batch::from_sequences(&targets).unwrap();
    let (a, b) = (composed.logits(&ours, &targets).unwrap(), preset.logits(&theirs, &targets).unwrap());
    assert_eq!(bits(&a), bits(&b), "teacher-forced logits differ");
}

#[test]
fn cached_steps_and_generation_are_bit_identical_to_the_preset() {
    let ((composed, preset), r) = (models(), reference());
    let sources: Vec<&[u32]> = r.sources.iter().map(Vec::as_slice).collect();
    let batch = Batch::from_sequences(&sources).unwrap();
    let (ours, theirs) = (composed.encode(&batch).unwrap(), preset.encode(&batch).unwrap());
    let (mut c1, mut c2) = (composed.new_cache(sources.len()), preset.new_cache(sources.len()));
    let (mut w1, mut w2) = (Workspace::new(), Workspace::new());
    // A 3-token prefill, then one token per step.
    let targets: Vec<&[u32]> = r.decoder_inputs.iter().map(Vec::as_slice).collect();
    let steps = targets.iter().map(|t| t.len()).min().unwrap();
    let prefix: Vec<&[u32]> = targets.iter().map(|t| &t[..3]).collect();
    let step = Batch::from_sequences(&prefix).unwrap();
    let a = bits(composed.step_into(&ours, &step, &mut c1, &mut w1).unwrap());
    let b = bits(preset.step_into(&theirs, &step, &mut c2, &mut w2).unwrap());
    assert_eq!(a, b, "prefill differs");
    for pos in 3..steps {
        let next: Vec<&[u32]> = targets.iter().map(|t| &t[pos..pos + 1]).collect();
        let step = Batch::from_sequences(&next).unwrap();
        let a = bits(composed.step_into(&ours, &step, &mut c1, &mut w1).unwrap());
        let b = bits(preset.step_into(&theirs, &step, &mut c2, &mut w2).unwrap());
        assert_eq!(a, b, "cached step at position {pos} differs");
    }
    let options = GenerateOptions { max_new_tokens: 20, ..GenerateOptions::default() };
    assert_eq!(composed.generate(&sources, &options).unwrap(), preset.generate(&sources, &options).unwrap());
}

#[test]
fn composed_bart_matches_the_transformers_reference() {
    let ((composed, _), r) = (models(), reference());
    for (b, source) in r.sources.iter().enumerate() {
        let memory = composed.encode(&Batch::from_sequences(&[source]).unwrap()).unwrap();
        let expected: Vec<f32> = r.encoder_hidden[b].iter().flatten().copied().collect();
        let diff = max_abs_diff(composed.encoder_hidden(&memory).as_flattened(), &expected);
        assert!(diff <= TOLERANCE, "source {b}, encoder states: max |Δ| = {diff}");
        let targets = Batch::from_sequences(&[&r.decoder_inputs[b]]).unwrap();
        let logits = composed.logits(&memory, &targets).unwrap();
        let expected: Vec<f32> = r.decoder_logits[b].iter().flatten().copied().collect();
        let diff = max_abs_diff(logits.as_flattened(), &expected);
        assert!(diff <= TOLERANCE, "source {b}, logits: max |Δ| = {diff}");
        let options = GenerateOptions { max_new_tokens: r.greedy[b].len(), ..GenerateOptions::default() };
        assert_eq!(
            composed.generate(&[source], &options).unwrap()[0],
            r.greedy[b],
            "source {b}: greedy tokens"
        );
    }
}
