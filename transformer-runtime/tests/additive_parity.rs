//! Additive and location attention parity: a small encoder-decoder assembled from runtime pieces
//! (learned embeddings, one post-norm transformer encoder layer, one pre-norm decoder layer with
//! causal self-attention, the attention kind under test as its cross-attention, a feed-forward and
//! an untied head) against the PyTorch module of `scripts/reference/additive.py`, in the fixtures
//! `tests/fixtures/additive/{bahdanau,location,location_sensitive}`.
//!
//! Checks per kind: teacher-forced logits of every real target row ≤ 1e-4 from PyTorch's (alone
//! and as a padded batch of sources and targets); greedy generation identical to PyTorch's for
//! each source alone and for both as one padded batch; the incremental path (KV-cached
//! self-attention, one cross-attention `step` per token, the alignment carried in an
//! `AlignmentState`) ≤ 1e-5 from the full forward, from scratch and after a teacher-forced
//! prefill. The script shows that wrong conventions (no source mask, no renormalisation over the
//! real positions, alignment not carried, conv not centred, no or lagging cumulative alignment)
//! move PyTorch's logits by 3 to 11 (`alternatives` in reference.json); `alignment_not_carried_
//! breaks_parity` checks the same from this side.

use std::path::{Path, PathBuf};

use serde_json::Value;
use transformer_runtime::layers::{
    cached_causal_attention, causal_self_attention, self_attention, AlignmentChannels, AlignmentState,
    Bahdanau, Embedding, LayerNorm, Linear, LocationSensitive, LuongLocation, Memory,
};
use transformer_runtime::{Activation, Batch, KvCache, Threads, WeightLoader};

const VOCAB: usize = 48;
/// Encoder (memory) width, heads and head width.
const M: usize = 24;
const ENC_HEADS: usize = 2;
const ENC_HD: usize = M / ENC_HEADS;
/// Decoder width, heads and head width.
const D: usize = 32;
const DEC_HEADS: usize = 2;
const DEC_HD: usize = D / DEC_HEADS;
const FF: usize = 64;
/// Additive attention width.
const A: usize = 16;
const MAX_SOURCE: usize = 16;
const MAX_TARGET: usize = 32;
const FILTERS: usize = 4;
const EPS: f32 = 1e-5;
const TOLERANCE: f32 = 1e-4;
const STEP_TOLERANCE: f32 = 1e-5;

fn fixture(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/additive").join(kind)
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("expected an integer, got {v}")) as usize
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|x| usize_of(x) as u32)
        .collect()
}

fn id_lists(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap_or_else(|| panic!("expected an array, got {v}")).iter().map(ids).collect()
}

/// The config.json values the consts above stand for.
fn check_config(dir: &Path) -> (usize, usize) {
    let c = read_json(&dir.join("config.json"));
    for (key, want) in [
        ("vocab_size", VOCAB),
        ("memory_dim", M),
        ("d_model", D),
        ("encoder_heads", ENC_HEADS),
        ("decoder_heads", DEC_HEADS),
        ("d_ff", FF),
        ("attention_dim", A),
        ("max_source", MAX_SOURCE),
        ("max_target", MAX_TARGET),
        ("filters", FILTERS),
    ] {
        assert_eq!(usize_of(&c[key]), want, "config.json {key}");
    }
    assert_eq!(c["norm_eps"].as_f64().map(|e| e as f32), Some(EPS), "config.json norm_eps");
    (usize_of(&c["kernel"]), usize_of(&c["bos_id"]))
}

/// The cross-attention sublayer under test.
enum Cross {
    Bahdanau(Bahdanau<D, M, A>),
    Location(LuongLocation<D, M, MAX_SOURCE>),
    Sensitive(LocationSensitive<D, M, A, FILTERS>),
}

struct Encoder {
    embed: Embedding<M>,
    pos: Embedding<M>,
    /// `nn.TransformerEncoderLayer`: packed `in_proj` → `[Q | K | V]`.
    qkv: Linear<M, { 3 * M }>,
    out_proj: Linear<M, M>,
    norm1: LayerNorm<M>,
    linear1: Linear<M, FF>,
    linear2: Linear<FF, M>,
    norm2: LayerNorm<M>,
}

struct Decoder {
    embed: Embedding<D>,
    pos: Embedding<D>,
    self_norm: LayerNorm<D>,
    qkv: Linear<D, { 3 * D }>,
    o_proj: Linear<D, D>,
    cross_norm: LayerNorm<D>,
    cross: Cross,
    cross_out: Linear<M, D>,
    ffn_norm: LayerNorm<D>,
    fc_in: Linear<D, FF>,
    fc_out: Linear<FF, D>,
    final_norm: LayerNorm<D>,
    lm_head: Linear<D, VOCAB>,
}

struct Model {
    encoder: Encoder,
    decoder: Decoder,
    bos: u32,
}

/// A batch of sources, encoded: the memory rows, the additive keys (projected once), and the
/// location-sensitive alignment state.
struct Encoded {
    sources: Batch,
    memory: Vec<[f32; M]>,
    keys: Vec<[f32; A]>,
    state: AlignmentState,
}

/// How the decoder runs: the whole (padded) target batch without cache, a prefix into the cache
/// (cross-attention `forward`), or one token per sequence (cross-attention `step`).
enum Mode<'a> {
    Full,
    Prefill(&'a mut KvCache),
    Step(&'a mut KvCache),
}

impl Model {
    fn load(kind: &str) -> Self {
        let dir = fixture(kind);
        let (kernel, bos) = check_config(&dir);
        let mut w = WeightLoader::open(dir.join("model.safetensors")).expect("open model.safetensors");
        let e = "encoder.layer";
        let encoder = Encoder {
            embed: Embedding::load(&mut w, "encoder.embed.weight", VOCAB),
            pos: Embedding::load(&mut w, "encoder.pos.weight", MAX_SOURCE),
            qkv: Linear::load_in_proj(&mut w, &format!("{e}.self_attn.in_proj"), 3 * M, 0, true),
            out_proj: Linear::load(&mut w, &format!("{e}.self_attn.out_proj"), true),
            norm1: LayerNorm::load(&mut w, &format!("{e}.norm1"), EPS),
            linear1: Linear::load(&mut w, &format!("{e}.linear1"), true),
            linear2: Linear::load(&mut w, &format!("{e}.linear2"), true),
            norm2: LayerNorm::load(&mut w, &format!("{e}.norm2"), EPS),
        };
        let prefix = "decoder.cross_attn";
        let cross = match kind {
            "bahdanau" => Cross::Bahdanau(Bahdanau::load(&mut w, prefix)),
            "location" => Cross::Location(LuongLocation::load(&mut w, prefix)),
            "location_sensitive" => Cross::Sensitive(LocationSensitive::load(
                &mut w,
                prefix,
                AlignmentChannels::PreviousAndCumulative,
                kernel,
            )),
            other => panic!("unknown kind {other}"),
        };
        let p = |name: &str| format!("decoder.self_attn.{name}");
        let decoder = Decoder {
            embed: Embedding::load(&mut w, "decoder.embed.weight", VOCAB),
            pos: Embedding::load(&mut w, "decoder.pos.weight", MAX_TARGET),
            self_norm: LayerNorm::load(&mut w, "decoder.self_norm", EPS),
            qkv: Linear::load_fused(&mut w, &[&p("q_proj"), &p("k_proj"), &p("v_proj")], true),
            o_proj: Linear::load(&mut w, &p("o_proj"), true),
            cross_norm: LayerNorm::load(&mut w, "decoder.cross_norm", EPS),
            cross,
            cross_out: Linear::load(&mut w, "decoder.cross_out", true),
            ffn_norm: LayerNorm::load(&mut w, "decoder.ffn_norm", EPS),
            fc_in: Linear::load(&mut w, "decoder.fc_in", true),
            fc_out: Linear::load(&mut w, "decoder.fc_out", true),
            final_norm: LayerNorm::load(&mut w, "decoder.final_norm", EPS),
            lm_head: Linear::load(&mut w, "decoder.lm_head", false),
        };
        w.finish().expect("model.safetensors has exactly the model's tensors");
        Model { encoder, decoder, bos: bos as u32 }
    }

    fn encode(&self, sources: &[Vec<u32>], threads: &Threads) -> Encoded {
        let sources = Batch::from_sequences(sources).expect("a valid source batch");
        sources.validate(VOCAB, MAX_SOURCE, None).expect("sources within the model's sizes");
        let (rows, seq) = (sources.rows(), sources.seq_len());
        let enc = &self.encoder;
        let mut x = vec![[0.0f32; M]; rows];
        for (r, row) in x.iter_mut().enumerate() {
            enc.embed.copy_row(sources.ids()[r] as usize, row);
            // torch adds pos.weight[:S] by index in the padded row, pads included.
            enc.pos.add_row(r % seq, row);
        }
        let mut qkv = vec![[0.0f32; 3 * M]; rows];
        enc.qkv.forward(&x, &mut qkv, Activation::Identity, threads);
        let mut ctx = vec![[0.0f32; M]; rows];
        let scale = 1.0 / (ENC_HD as f32).sqrt();
        self_attention::<ENC_HD>(
            qkv.as_flattened(),
            &sources,
            ENC_HEADS,
            scale,
            ctx.as_flattened_mut(),
            threads,
        );
        let mut sub = vec![[0.0f32; M]; rows];
        enc.out_proj.forward(&ctx, &mut sub, Activation::Identity, threads);
        enc.norm1.forward_residual(&mut x, &sub);
        let mut hidden = vec![[0.0f32; FF]; rows];
        enc.linear1.forward(&x, &mut hidden, Activation::Relu, threads);
        enc.linear2.forward(&hidden, &mut sub, Activation::Identity, threads);
        enc.norm2.forward_residual(&mut x, &sub);

        let mut keys = vec![[0.0f32; A]; rows];
        match &self.decoder.cross {
            Cross::Bahdanau(c) => c.project_memory(&x, &mut keys, threads),
            Cross::Sensitive(c) => c.project_memory(&x, &mut keys, threads),
            Cross::Location(_) => keys.clear(),
        }
        let state = AlignmentState::new(&sources);
        Encoded { sources, memory: x, keys, state }
    }

    /// Logits of every row of `targets` (right-padded, one sequence per source).
    fn decode(
        &self,
        targets: &Batch,
        enc: &mut Encoded,
        mode: Mode<'_>,
        threads: &Threads,
    ) -> Vec<[f32; VOCAB]> {
        let dec = &self.decoder;
        let rows = targets.rows();
        let starts: Vec<usize> = match &mode {
            Mode::Full => vec![0; targets.batch_size()],
            Mode::Prefill(cache) | Mode::Step(cache) => cache.lens().to_vec(),
        };
        let mut x = vec![[0.0f32; D]; rows];
        for (r, row) in x.iter_mut().enumerate() {
            dec.embed.copy_row(targets.ids()[r] as usize, row);
            dec.pos.add_row(starts[r / targets.seq_len()] + targets.position(r), row);
        }
        // x += o_proj(causal self-attention(self_norm(x)))
        let mut normed = vec![[0.0f32; D]; rows];
        dec.self_norm.forward_into(&x, &mut normed);
        let mut qkv = vec![[0.0f32; 3 * D]; rows];
        dec.qkv.forward(&normed, &mut qkv, Activation::Identity, threads);
        let mut ctx = vec![[0.0f32; D]; rows];
        let scale = 1.0 / (DEC_HD as f32).sqrt();
        let (qkv, ctx_flat) = (qkv.as_flattened(), ctx.as_flattened_mut());
        let step = matches!(mode, Mode::Step(_));
        match mode {
            Mode::Full => causal_self_attention::<DEC_HD>(qkv, targets, DEC_HEADS, scale, ctx_flat, threads),
            Mode::Prefill(cache) | Mode::Step(cache) => {
                cache.check_step(targets).expect("a right-padded step within the cache");
                cached_causal_attention::<DEC_HD>(
                    qkv, targets, cache, 0, DEC_HEADS, scale, ctx_flat, threads,
                );
                cache.advance_batch(targets);
            }
        }
        let mut sub = vec![[0.0f32; D]; rows];
        dec.o_proj.forward(&ctx, &mut sub, Activation::Identity, threads);
        add(&mut x, &sub);

        // x += cross_out(context(cross_norm(x), memory))
        dec.cross_norm.forward_into(&x, &mut normed);
        let memory = Memory::new(&enc.memory, &enc.sources);
        let mut alignments = vec![0.0f32; rows * enc.sources.seq_len()];
        let mut context = vec![[0.0f32; M]; rows];
        let mut scratch = vec![[0.0f32; A]; rows];
        let (q, al, c, keys) = (&normed, &mut alignments[..], &mut context[..], &enc.keys[..]);
        match &dec.cross {
            Cross::Bahdanau(b) if step => b.step(q, memory, keys, &mut scratch, al, c, threads),
            Cross::Bahdanau(b) => b.forward(q, targets, memory, keys, &mut scratch, al, c, threads),
            Cross::Location(l) => {
                let mut logits = vec![[0.0f32; MAX_SOURCE]; rows];
                if step {
                    l.step(q, memory, &mut logits, al, c, threads)
                } else {
                    l.forward(q, targets, memory, &mut logits, al, c, threads)
                }
            }
            Cross::Sensitive(s) if step => {
                s.step(q, memory, keys, &mut enc.state, &mut scratch, al, c, threads)
            }
            Cross::Sensitive(s) => {
                s.forward(q, targets, memory, keys, &mut enc.state, &mut scratch, al, c, threads)
            }
        }
        dec.cross_out.forward(&context, &mut sub, Activation::Identity, threads);
        add(&mut x, &sub);

        // x += fc_out(relu(fc_in(ffn_norm(x))))
        dec.ffn_norm.forward_into(&x, &mut normed);
        let mut hidden = vec![[0.0f32; FF]; rows];
        dec.fc_in.forward(&normed, &mut hidden, Activation::Relu, threads);
        dec.fc_out.forward(&hidden, &mut sub, Activation::Identity, threads);
        add(&mut x, &sub);

        dec.final_norm.forward(&mut x);
        let mut logits = vec![[0.0f32; VOCAB]; rows];
        dec.lm_head.forward(&x, &mut logits, Activation::Identity, threads);
        logits
    }

    /// Greedy continuation of BOS for each source, one cached step per token.
    fn generate(&self, sources: &[Vec<u32>], new_tokens: usize, threads: &Threads) -> Vec<Vec<u32>> {
        let mut enc = self.encode(sources, threads);
        let mut cache = KvCache::new(1, sources.len(), MAX_TARGET, D);
        let mut last = vec![self.bos; sources.len()];
        let mut out = vec![Vec::new(); sources.len()];
        for _ in 0..new_tokens {
            let step: Vec<Vec<u32>> = last.iter().map(|&t| vec![t]).collect();
            let batch = Batch::from_sequences(&step).expect("one token per sequence");
            let logits = self.decode(&batch, &mut enc, Mode::Step(&mut cache), threads);
            for (b, row) in logits.iter().enumerate() {
                last[b] = argmax(row);
                out[b].push(last[b]);
            }
        }
        out
    }
}

fn add<const W: usize>(x: &mut [[f32; W]], y: &[[f32; W]]) {
    for (a, b) in x.as_flattened_mut().iter_mut().zip(y.as_flattened()) {
        *a += b;
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The real rows of each target sequence, concatenated.
fn real_rows(logits: &[[f32; VOCAB]], targets: &Batch) -> Vec<f32> {
    let seq = targets.seq_len();
    (0..targets.batch_size())
        .flat_map(|b| logits[b * seq..b * seq + targets.len_of(b)].as_flattened().to_vec())
        .collect()
}

struct Case {
    name: String,
    sources: Vec<Vec<u32>>,
    targets: Vec<Vec<u32>>,
    logits: Vec<f32>,
}

fn cases(reference: &Value) -> Vec<Case> {
    reference["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().expect("name").to_string(),
            sources: id_lists(&c["sources"]),
            targets: id_lists(&c["targets"]),
            logits: c["logits"]
                .as_array()
                .expect("logits")
                .iter()
                .flat_map(|row| {
                    row.as_array().expect("row").iter().map(|v| v.as_f64().expect("logit") as f32)
                })
                .collect(),
        })
        .collect()
}

/// Teacher-forced logits against PyTorch's, every case; returns the largest difference.
fn check_logits(kind: &str) -> f32 {
    let model = Model::load(kind);
    let reference = read_json(&fixture(kind).join("reference.json"));
    let threads = Threads::sequential();
    let mut worst = 0.0f32;
    for case in cases(&reference) {
        let mut enc = model.encode(&case.sources, &threads);
        let targets = Batch::from_sequences(&case.targets).expect("a valid target batch");
        let logits = model.decode(&targets, &mut enc, Mode::Full, &threads);
        let diff = max_diff(&real_rows(&logits, &targets), &case.logits);
        println!(
            "{kind}/{}: {} target rows, max |logit − torch| = {diff:.3e}",
            case.name,
            case.logits.len() / VOCAB
        );
        assert!(diff <= TOLERANCE, "{kind}/{}: max |logit − torch| = {diff} > {TOLERANCE}", case.name);
        worst = worst.max(diff);
    }
    worst
}

/// Greedy generation against PyTorch's: each source alone, then both as one padded batch.
fn check_generation(kind: &str) {
    let model = Model::load(kind);
    let reference = read_json(&fixture(kind).join("reference.json"));
    let g = &reference["generation"];
    let sources = id_lists(&g["sources"]);
    let n = usize_of(&g["max_new_tokens"]);
    let (alone, batched) = (id_lists(&g["alone"]), id_lists(&g["batched"]));
    let threads = Threads::sequential();
    for (source, want) in sources.iter().zip(&alone) {
        let got = model.generate(std::slice::from_ref(source), n, &threads);
        assert_eq!(&got[0], want, "{kind}: greedy tokens of source {source:?} alone");
    }
    assert_eq!(model.generate(&sources, n, &threads), batched, "{kind}: greedy tokens of the padded batch");
    // Two threads split sequences (and GEMM rows or columns) differently: same tokens.
    let two = Threads::new(2).expect("a pool of two threads");
    assert_eq!(model.generate(&sources, n, &two), batched, "{kind}: greedy tokens with two threads");
}

/// The incremental path equals the full forward: every target sequence alone, one token per step
/// from an empty cache and a fresh alignment; then a teacher-forced prefill of the first half and
/// steps for the rest (the state `forward` leaves must be the one `step` continues).
fn check_steps(kind: &str) {
    let model = Model::load(kind);
    let reference = read_json(&fixture(kind).join("reference.json"));
    let threads = Threads::sequential();
    let mut worst = 0.0f32;
    for case in cases(&reference) {
        for (source, target) in case.sources.iter().zip(&case.targets) {
            let sources = std::slice::from_ref(source);
            let mut enc = model.encode(sources, &threads);
            let full_batch = Batch::from_sequences(std::slice::from_ref(target)).expect("a target");
            let full = model.decode(&full_batch, &mut enc, Mode::Full, &threads);
            for prefill in [0, target.len() / 2] {
                let mut enc = model.encode(sources, &threads);
                let mut cache = KvCache::new(1, 1, MAX_TARGET, D);
                let mut rows = Vec::new();
                if prefill > 0 {
                    let prefix = Batch::from_sequences(&[&target[..prefill]]).expect("a prefix");
                    rows.extend(model.decode(&prefix, &mut enc, Mode::Prefill(&mut cache), &threads));
                }
                for &token in &target[prefill..] {
                    let step = Batch::from_sequences(&[[token]]).expect("one token");
                    rows.extend(model.decode(&step, &mut enc, Mode::Step(&mut cache), &threads));
                }
                let diff = max_diff(rows.as_flattened(), full.as_flattened());
                assert!(
                    diff <= STEP_TOLERANCE,
                    "{kind}/{}: steps after a prefill of {prefill} differ from the full forward by {diff}",
                    case.name
                );
                worst = worst.max(diff);
            }
        }
    }
    println!("{kind}: max |step − full forward| = {worst:.3e}");
}

#[test]
fn bahdanau_logits_match_torch() {
    check_logits("bahdanau");
}

#[test]
fn location_logits_match_torch() {
    check_logits("location");
}

#[test]
fn location_sensitive_logits_match_torch() {
    check_logits("location_sensitive");
}

#[test]
fn bahdanau_greedy_matches_torch() {
    check_generation("bahdanau");
}

#[test]
fn location_greedy_matches_torch() {
    check_generation("location");
}

#[test]
fn location_sensitive_greedy_matches_torch() {
    check_generation("location_sensitive");
}

#[test]
fn bahdanau_steps_match_forward() {
    check_steps("bahdanau");
}

#[test]
fn location_steps_match_forward() {
    check_steps("location");
}

#[test]
fn location_sensitive_steps_match_forward() {
    check_steps("location_sensitive");
}

/// The parity test can fail: stepping the location-sensitive model with the alignment reset before
/// every token (not carried) misses PyTorch's logits far beyond the tolerance.
#[test]
fn alignment_not_carried_breaks_parity() {
    let kind = "location_sensitive";
    let model = Model::load(kind);
    let reference = read_json(&fixture(kind).join("reference.json"));
    let case = &cases(&reference)[0];
    let threads = Threads::sequential();
    let mut enc = model.encode(&case.sources, &threads);
    let mut cache = KvCache::new(1, 1, MAX_TARGET, D);
    let mut rows = Vec::new();
    for &token in &case.targets[0] {
        enc.state.reset();
        let step = Batch::from_sequences(&[[token]]).expect("one token");
        rows.extend(model.decode(&step, &mut enc, Mode::Step(&mut cache), &threads));
    }
    let diff = max_diff(rows.as_flattened(), &case.logits);
    println!("alignment not carried: max |logit − torch| = {diff:.3}");
    assert!(diff > 100.0 * TOLERANCE, "resetting the alignment moved the logits only {diff}");
}

/// Bad weights are the loader's to report, by name and shape: a layer declared with a kernel of 3
/// and one alignment channel against the fixture's `[4, 2, 5]` convolution.
#[test]
fn wrong_location_filters_are_reported_by_name() {
    let mut w = WeightLoader::open(fixture("location_sensitive").join("model.safetensors")).expect("open");
    let _ = LocationSensitive::<D, M, A, FILTERS>::load(
        &mut w,
        "decoder.cross_attn",
        AlignmentChannels::Previous,
        3,
    );
    let message = w.finish().expect_err("a shape mismatch").to_string();
    assert!(
        message.contains("decoder.cross_attn.location_conv.weight") && message.contains("[4, 1, 3]"),
        "{message}"
    );
}
