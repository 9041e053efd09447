//! Centred local attention (Longformer's sliding window) on an encoder, chosen in the spec with
//! `window`, on all-MiniLM-L6-v2's real weights, against Hugging Face's `BertModel` given the same
//! band as a 3-D attention mask (`scripts/reference/windowed_minilm.py`): every layer windowed
//! (`window: 16`, 8 keys on either side) and a per-layer mix (`[16, global, 16, global, 16,
//! global]`). Also per-layer block-sparse layouts (GPT-3's alternating dense and sparse layers:
//! `sparse: [strided, dense, fixed, dense, strided, dense]`, blocks of 64), given to `BertModel` as
//! per-layer masks the same way. Tolerances as the unwindowed MiniLM test: hidden states and
//! embeddings within 1e-4. The script shows no window, a window one key wider, and the mix shifted
//! by a layer all miss by 0.5 or more; for the layouts, dense attention, the mix shifted by a layer,
//! strided and fixed swapped, and strided on every layer miss by 0.47 or more.

use std::collections::BTreeMap;

use serde::Deserialize;
use transformer::{Batch, Workspace};

#[path = "../examples/common/minilm.rs"]
mod minilm;

macro_rules! windowed_minilm {
    ($name:ident, $key:ident: $value:tt) => {
        transformer::model! {
            pub struct $name {
                vocab_size: 30522,
                max_positions: 512,
                type_vocab_size: 2,
                d_model: 384,
                heads: 12,
                layers: 6,
                d_ff: 1536,
                activation: gelu_erf,
                norm: layer_norm,
                norm_eps: 1e-12,
                norm_placement: post,
                positions: learned,
                attention: bidirectional,
                $key: $value,
                weights: bert,
            }
        }
    };
}

windowed_minilm!(Window16, window: 16);
windowed_minilm!(Mixed, window: [16, global, 16, global, 16, global]);
windowed_minilm!(
    SparseMixed,
    sparse: [
        { pattern: strided, block: 64, stride: 2 },
        dense,
        { pattern: fixed, block: 64, stride: 2, summary: 1 },
        dense,
        { pattern: strided, block: 64, stride: 2 },
        dense,
    ]
);

/// The same models composed: the window is an argument of the composed attention.
macro_rules! composed_windowed_minilm {
    ($name:ident, $($window:tt)*) => {
        transformer::model! {
            pub struct $name {
                vocab_size: 30522,
                max_positions: 512,
                type_vocab_size: 2,
                d_model: 384,
                heads: 12,
                d_ff: 1536,
                layers: 6,
            }

            #[weights(ignore = ["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"])]
            fn forward(tokens, token_types) -> hidden {
                #[weights = "embeddings.word_embeddings"]
                let x = embedding(tokens, vocab_size, d_model);
                #[weights = "embeddings.position_embeddings"]
                let x = x + embedding(positions, max_positions, d_model);
                #[weights = "embeddings.token_type_embeddings"]
                let x = x + embedding(token_types, type_vocab_size, d_model);
                #[weights = "embeddings.LayerNorm"]
                let x = layer_norm(x, eps = 1e-12);
                #[weights = "encoder.layer.{layer}"]
                for layer in 0..layers {
                    #[weights = "attention.self.query"]
                    let q = linear(x, d_model);
                    #[weights = "attention.self.key"]
                    let k = linear(x, d_model);
                    #[weights = "attention.self.value"]
                    let v = linear(x, d_model);
                    let context = attention(q, k, v, heads = heads, window = $($window)*);
                    #[weights = "attention.output.dense"]
                    let attention_out = linear(context, d_model);
                    #[weights = "attention.output.LayerNorm"]
                    x = layer_norm(x + attention_out, eps = 1e-12);
                    #[weights("intermediate.dense", "output.dense")]
                    let ffn_out = linear(gelu(linear(x, d_ff)), d_model);
                    #[weights = "output.LayerNorm"]
                    x = layer_norm(x + ffn_out, eps = 1e-12);
                }
                x
            }
        }
    };
}

composed_windowed_minilm!(ComposedWindow16, 16);
composed_windowed_minilm!(ComposedMixed, if layer % 2 == 0 { Some(16) } else { None });

#[derive(Deserialize)]
struct Reference {
    configs: BTreeMap<String, Config>,
}

#[derive(Deserialize)]
struct Config {
    sequences: Vec<Sequence>,
}

#[derive(Deserialize)]
struct Sequence {
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
    hidden: BTreeMap<usize, Vec<f32>>,
}

fn config(name: &str) -> Config {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/windowed_minilm.json");
    let mut r: Reference = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    r.configs.remove(name).expect("config in the fixture")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn weights() -> std::path::PathBuf {
    minilm::model_dir().join("model.safetensors")
}

macro_rules! parity {
    ($module:ident, $model:ident, $config:literal) => {
        mod $module {
            use super::*;

            /// Each sequence alone and all of them as one padded batch: the same rows.
            #[test]
            fn hidden_states_and_embeddings_match_bert_with_a_band_mask() {
                let model = $model::from_safetensors(weights()).expect("weights load");
                let reference = config($config);
                let ids: Vec<&[u32]> = reference.sequences.iter().map(|s| s.input_ids.as_slice()).collect();
                let mut ws = Workspace::new();
                let batched = Batch::from_sequences(&ids).unwrap();
                let hidden_batched = model.forward_into(&batched, &mut ws).unwrap().to_vec();
                let embeddings_batched = model.embed_into(&batched, &mut ws).unwrap().to_vec();
                for (b, s) in reference.sequences.iter().enumerate() {
                    let alone = Batch::from_sequences(&[&s.input_ids]).unwrap();
                    let hidden = model.forward_into(&alone, &mut ws).unwrap().to_vec();
                    let embedding = model.embed_into(&alone, &mut ws).unwrap()[0];
                    for (label, e) in [("alone", &embedding), ("batched", &embeddings_batched[b])] {
                        let diff = max_abs_diff(e, &s.embedding);
                        assert!(diff <= 1e-4, "sequence {b} {label}: embedding max |diff| {diff:e}");
                    }
                    let row = |p: usize| b * batched.seq_len() + p;
                    for (&p, theirs) in &s.hidden {
                        let diff = max_abs_diff(&hidden[p], theirs);
                        assert!(diff <= 1e-4, "sequence {b} position {p} alone: max |diff| {diff:e}");
                        let diff = max_abs_diff(&hidden_batched[row(p)], theirs);
                        assert!(diff <= 1e-4, "sequence {b} position {p} batched: max |diff| {diff:e}");
                    }
                }
            }
        }
    };
}

parity!(window16, Window16, "window16");
parity!(mixed, Mixed, "mixed");
parity!(sparse_mixed, SparseMixed, "sparse_mixed");
parity!(composed_window16, ComposedWindow16, "window16");
parity!(composed_mixed, ComposedMixed, "mixed");

fn bits(rows: &[[f32; 384]]) -> Vec<u32> {
    rows.iter().flatten().map(|v| v.to_bits()).collect()
}

/// Composed centred windows lower to the presets' graph: the same kernels in the same order.
#[test]
fn composed_windows_are_bit_identical_to_the_presets() {
    let ids: Vec<Vec<u32>> = config("window16").sequences.into_iter().map(|s| s.input_ids).collect();
    let batch = Batch::from_sequences(&ids).unwrap();
    let (preset, composed) = (
        Window16::from_safetensors(weights()).unwrap(),
        ComposedWindow16::from_safetensors(weights()).unwrap(),
    );
    assert_eq!(bits(&composed.forward(&batch).unwrap()), bits(&preset.forward(&batch).unwrap()));
    assert_eq!(bits(&composed.embed(&batch).unwrap()), bits(&preset.embed(&batch).unwrap()));
    let (preset, composed) =
        (Mixed::from_safetensors(weights()).unwrap(), ComposedMixed::from_safetensors(weights()).unwrap());
    assert_eq!(bits(&composed.forward(&batch).unwrap()), bits(&preset.forward(&batch).unwrap()));
}
