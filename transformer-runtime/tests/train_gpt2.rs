//! One GPT-2 training step from the training building blocks, against transformers.
//!
//! `scripts/reference/train_gpt2.py` ran `GPT2LMHeadModel` (the tiny checkpoint of
//! `tests/fixtures/gpt2/tiny`: 2 layers, width 64, 4 heads, tied head) on a right-padded batch with
//! `labels` and saved the loss and every parameter's gradient (`tests/fixtures/train/gpt2_step`).
//! This test writes the same step by hand, in the order the macro is to generate it (issue #18):
//! the training forward saves each block's activations, the loss's gradient flows back through
//! the head (tied to the token embeddings, so both uses accumulate into one gradient), the final
//! norm, each block in reverse (the residual stream receiving both its paths' gradients), and the
//! embeddings. Every gradient must match transformers' within [`TOLERANCE`] of its largest
//! magnitude.

use transformer_runtime::kernels::activation::Activation;
use transformer_runtime::kernels::attention::{HeadRows, Mask};
use transformer_runtime::train::activation::activation_backward;
use transformer_runtime::train::attention::{
    attention_backward, attention_backward_scratch_len, attention_train,
};
use transformer_runtime::train::embedding::{embedding_backward, position_embedding_backward};
use transformer_runtime::train::linear::{linear_backward, linear_train};
use transformer_runtime::train::loss::{next_token_labels, softmax_cross_entropy, Reduction};
use transformer_runtime::train::norm::{layer_norm_backward, layer_norm_train, NormStats};
use transformer_runtime::train::optim::{clip_grad_norm_tensors, AdamW, AdamWConfig, ParamSpec};
use transformer_runtime::train::Store;
use transformer_runtime::{Threads, WeightLoader};

const D: usize = 64;
const HEADS: usize = 4;
const HD: usize = D / HEADS;
const FF: usize = 4 * D;
const VOCAB: usize = 512;
const POSITIONS: usize = 128;
const LAYERS: usize = 2;
const EPS: f32 = 1e-5;
const SEQ: usize = 9;
const BATCH: usize = 2;
const ROWS: usize = BATCH * SEQ;

/// Largest gradient difference allowed, relative to the reference's largest magnitude: f32
/// forward and backward through 2 layers against transformers' f32 (measured worst: 1.6e-6, the
/// first LayerNorm's weight); a gradient dropped or misplaced anywhere is off by O(1).
const TOLERANCE: f64 = 2e-5;

/// Largest difference of the three AdamW steps' updates, relative to the largest update. Adam
/// divides by √v, so an element whose gradient is small, or whose running mean cancels as its
/// gradient changes sign between steps, amplifies the rounding of its gradient. That floor is
/// measured by our own trainer under two GEMMs that are equally exact but sum in different
/// orders (matrixmultiply's and our packed kernel's): their updates differ by up to 1.5e-3 of the
/// largest (`h.1.mlp.c_fc.weight`), and each is within 4.3e-4 and 1.9e-3 of torch's. A wrong
/// formula (a missing bias correction, decay on the wrong group, a dropped gradient) is off by
/// O(1).
const UPDATE_TOLERANCE: f64 = 4e-3;

fn root(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// How a checkpoint tensor is stored relative to our `[out, in]` linear layout.
#[derive(Clone, Copy)]
enum Layout {
    /// As is, of this many rows (embeddings; 1 for norms and biases).
    Plain { rows: usize },
    /// GPT-2's `Conv1D`: `[in, out]`, transposed at load and back at save.
    Conv1d { n_in: usize, n_out: usize },
}

/// Every parameter (or its gradient) of the model, flat, under the checkpoint's names.
#[derive(Clone)]
struct Params {
    tensors: Vec<(String, Layout, Vec<f32>)>,
}

/// Index of each tensor in [`Params::tensors`].
const WTE: usize = 0;
const WPE: usize = 1;
const LN_F_W: usize = 2;
const LN_F_B: usize = 3;
const PER_LAYER: usize = 12;
fn layer(i: usize, k: usize) -> usize {
    4 + i * PER_LAYER + k
}
const LN_1_W: usize = 0;
const LN_1_B: usize = 1;
const C_ATTN_W: usize = 2;
const C_ATTN_B: usize = 3;
const ATTN_PROJ_W: usize = 4;
const ATTN_PROJ_B: usize = 5;
const LN_2_W: usize = 6;
const LN_2_B: usize = 7;
const C_FC_W: usize = 8;
const C_FC_B: usize = 9;
const MLP_PROJ_W: usize = 10;
const MLP_PROJ_B: usize = 11;

const VECTOR: Layout = Layout::Plain { rows: 1 };

fn layout() -> Vec<(String, Layout, usize)> {
    let mut names = vec![
        ("transformer.wte.weight".to_string(), Layout::Plain { rows: VOCAB }, VOCAB * D),
        ("transformer.wpe.weight".to_string(), Layout::Plain { rows: POSITIONS }, POSITIONS * D),
        ("transformer.ln_f.weight".to_string(), VECTOR, D),
        ("transformer.ln_f.bias".to_string(), VECTOR, D),
    ];
    for i in 0..LAYERS {
        let p = |s: &str| format!("transformer.h.{i}.{s}");
        let conv = |n_in, n_out| Layout::Conv1d { n_in, n_out };
        names.extend([
            (p("ln_1.weight"), VECTOR, D),
            (p("ln_1.bias"), VECTOR, D),
            (p("attn.c_attn.weight"), conv(D, 3 * D), 3 * D * D),
            (p("attn.c_attn.bias"), VECTOR, 3 * D),
            (p("attn.c_proj.weight"), conv(D, D), D * D),
            (p("attn.c_proj.bias"), VECTOR, D),
            (p("ln_2.weight"), VECTOR, D),
            (p("ln_2.bias"), VECTOR, D),
            (p("mlp.c_fc.weight"), conv(D, FF), FF * D),
            (p("mlp.c_fc.bias"), VECTOR, FF),
            (p("mlp.c_proj.weight"), conv(FF, D), D * FF),
            (p("mlp.c_proj.bias"), VECTOR, D),
        ]);
    }
    names
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| data[r * cols + c])).collect()
}

impl Params {
    fn zeros() -> Self {
        Params { tensors: layout().into_iter().map(|(n, l, len)| (n, l, vec![0.0; len])).collect() }
    }

    /// Reads a safetensors file of these names, into our layout.
    fn load(path: &str, ignore: &[&str]) -> Self {
        let mut loader = WeightLoader::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let tensors = layout()
            .into_iter()
            .map(|(name, layout, len)| {
                let data = match layout {
                    Layout::Plain { rows: 1 } => loader.take(&name, &[len]),
                    Layout::Plain { rows } => loader.take(&name, &[rows, len / rows]),
                    Layout::Conv1d { n_in, n_out } => {
                        transpose(&loader.take(&name, &[n_in, n_out]), n_in, n_out)
                    }
                };
                (name, layout, data)
            })
            .collect();
        for name in ignore {
            loader.ignore(name);
        }
        loader.finish().unwrap_or_else(|e| panic!("{path}: {e}"));
        Params { tensors }
    }

    fn get(&self, i: usize) -> &[f32] {
        &self.tensors[i].2
    }

    fn get_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.tensors[i].2
    }
}

fn vector<const N: usize>(v: &[f32]) -> &[f32; N] {
    v.try_into().unwrap_or_else(|_| panic!("{} floats, expected {N}", v.len()))
}

fn vector_mut<const N: usize>(v: &mut [f32]) -> &mut [f32; N] {
    let len = v.len();
    v.try_into().unwrap_or_else(|_| panic!("{len} floats, expected {N}"))
}

/// What one block's backward needs from its forward.
struct BlockActivations {
    input: Vec<[f32; D]>,
    ln_1: Vec<NormStats>,
    a: Vec<[f32; D]>,
    qkv: Vec<[f32; 3 * D]>,
    attn: Vec<[f32; D]>,
    lse: Vec<f32>,
    mid: Vec<[f32; D]>,
    ln_2: Vec<NormStats>,
    m: Vec<[f32; D]>,
    h_pre: Vec<[f32; FF]>,
    h: Vec<[f32; FF]>,
}

struct Batch {
    ids: Vec<u32>,
    valid: Vec<bool>,
    labels: Vec<i64>,
}

fn batch(reference: &serde_json::Value) -> Batch {
    let flat = |key: &str| -> Vec<i64> {
        reference[key]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()))
            .collect()
    };
    let ids: Vec<u32> = flat("ids").into_iter().map(|v| v as u32).collect();
    let valid: Vec<bool> = flat("attention_mask").into_iter().map(|v| v == 1).collect();
    assert_eq!(ids.len(), ROWS);
    let mut labels = vec![0; ROWS];
    next_token_labels(&ids, Some(&valid), SEQ, &mut labels).unwrap();
    Batch { ids, valid, labels }
}

fn mask(valid: &[bool]) -> Mask<'_> {
    Mask { key_valid: Some(valid), causal: true, window: None, bias: None }
}

fn heads(qkv: &[[f32; 3 * D]], seq: usize, part: usize) -> HeadRows<'_> {
    HeadRows { data: qkv.as_flattened(), stride: 3 * D, offset: seq * SEQ * 3 * D + part * D, rows: SEQ }
}

/// The forward of one pre-norm GPT-2 block over the residual stream `x`, keeping activations.
fn block_forward(
    p: &Params,
    i: usize,
    x: &mut [[f32; D]],
    threads: &Threads,
    valid: &[bool],
) -> BlockActivations {
    let w = |k| p.get(layer(i, k));
    let mut s = BlockActivations {
        input: x.to_vec(),
        ln_1: vec![NormStats::default(); ROWS],
        a: vec![[0.0; D]; ROWS],
        qkv: vec![[0.0; 3 * D]; ROWS],
        attn: vec![[0.0; D]; ROWS],
        lse: vec![0.0; ROWS * HEADS],
        mid: vec![],
        ln_2: vec![NormStats::default(); ROWS],
        m: vec![[0.0; D]; ROWS],
        h_pre: vec![[0.0; FF]; ROWS],
        h: vec![[0.0; FF]; ROWS],
    };
    layer_norm_train(x, &mut s.a, vector(w(LN_1_W)), vector(w(LN_1_B)), EPS, &mut s.ln_1);
    linear_train::<D, { 3 * D }>(&s.a, w(C_ATTN_W), Some(w(C_ATTN_B)), &mut s.qkv, threads);
    let scale = 1.0 / (HD as f32).sqrt();
    for b in 0..BATCH {
        let out = &mut s.attn.as_flattened_mut()[b * SEQ * D..][..SEQ * D];
        let lse = &mut s.lse[b * SEQ * HEADS..][..SEQ * HEADS];
        let m = mask(&valid[b * SEQ..][..SEQ]);
        attention_train::<HD>(
            heads(&s.qkv, b, 0),
            heads(&s.qkv, b, 1),
            heads(&s.qkv, b, 2),
            HEADS,
            HEADS,
            m,
            scale,
            None,
            out,
            lse,
        );
    }
    let mut y = vec![[0.0; D]; ROWS];
    linear_train::<D, D>(&s.attn, w(ATTN_PROJ_W), Some(w(ATTN_PROJ_B)), &mut y, threads);
    add(x, &y);
    s.mid = x.to_vec();
    layer_norm_train(x, &mut s.m, vector(w(LN_2_W)), vector(w(LN_2_B)), EPS, &mut s.ln_2);
    linear_train::<D, FF>(&s.m, w(C_FC_W), Some(w(C_FC_B)), &mut s.h_pre, threads);
    s.h.clone_from(&s.h_pre);
    Activation::GeluTanh.apply_slice(s.h.as_flattened_mut());
    linear_train::<FF, D>(&s.h, w(MLP_PROJ_W), Some(w(MLP_PROJ_B)), &mut y, threads);
    add(x, &y);
    s
}

fn add(x: &mut [[f32; D]], y: &[[f32; D]]) {
    for (a, b) in x.as_flattened_mut().iter_mut().zip(y.as_flattened()) {
        *a += b;
    }
}

/// The backward of one block: `dx` holds the gradient of the block's output and receives that of
/// its input; parameter gradients accumulate into `g`.
fn block_backward(
    p: &Params,
    g: &mut Params,
    i: usize,
    s: &BlockActivations,
    dx: &mut [[f32; D]],
    threads: &Threads,
    valid: &[bool],
) {
    let w = |k| p.get(layer(i, k));
    // MLP: x_out = mid + proj(gelu(fc(ln_2(mid)))).
    let mut dh = vec![[0.0; FF]; ROWS];
    let (dw, db) = two(g, layer(i, MLP_PROJ_W), layer(i, MLP_PROJ_B));
    linear_backward::<FF, D>(
        &s.h,
        dx,
        w(MLP_PROJ_W),
        Some((&mut dh, Store::Overwrite)),
        dw,
        Some(db),
        threads,
    );
    activation_backward(Activation::GeluTanh, s.h_pre.as_flattened(), dh.as_flattened_mut());
    let mut dm = vec![[0.0; D]; ROWS];
    let (dw, db) = two(g, layer(i, C_FC_W), layer(i, C_FC_B));
    linear_backward::<D, FF>(&s.m, &dh, w(C_FC_W), Some((&mut dm, Store::Overwrite)), dw, Some(db), threads);
    let (dg, db) = two(g, layer(i, LN_2_W), layer(i, LN_2_B));
    layer_norm_backward(
        &s.mid,
        &s.ln_2,
        vector(w(LN_2_W)),
        &dm,
        dx,
        Store::Accumulate,
        vector_mut(dg),
        vector_mut(db),
    );

    // Attention: mid = input + proj(attn(qkv(ln_1(input)))).
    let mut d_attn = vec![[0.0; D]; ROWS];
    let (dw, db) = two(g, layer(i, ATTN_PROJ_W), layer(i, ATTN_PROJ_B));
    linear_backward::<D, D>(
        &s.attn,
        dx,
        w(ATTN_PROJ_W),
        Some((&mut d_attn, Store::Overwrite)),
        dw,
        Some(db),
        threads,
    );
    let mut d_qkv = vec![[0.0; 3 * D]; ROWS];
    let mut scratch = vec![0.0; attention_backward_scratch_len(HD)];
    let scale = 1.0 / (HD as f32).sqrt();
    for b in 0..BATCH {
        let (mut dq, mut dk, mut dv) = ([0.0; SEQ * D], [0.0; SEQ * D], [0.0; SEQ * D]);
        let rows = b * SEQ * D..(b + 1) * SEQ * D;
        attention_backward::<HD>(
            heads(&s.qkv, b, 0),
            heads(&s.qkv, b, 1),
            heads(&s.qkv, b, 2),
            &s.attn.as_flattened()[rows.clone()],
            &d_attn.as_flattened()[rows],
            &s.lse[b * SEQ * HEADS..][..SEQ * HEADS],
            HEADS,
            HEADS,
            mask(&valid[b * SEQ..][..SEQ]),
            scale,
            None,
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
        );
        for r in 0..SEQ {
            let row = &mut d_qkv[b * SEQ + r];
            row[..D].copy_from_slice(&dq[r * D..][..D]);
            row[D..2 * D].copy_from_slice(&dk[r * D..][..D]);
            row[2 * D..].copy_from_slice(&dv[r * D..][..D]);
        }
    }
    let mut da = vec![[0.0; D]; ROWS];
    let (dw, db) = two(g, layer(i, C_ATTN_W), layer(i, C_ATTN_B));
    linear_backward::<D, { 3 * D }>(
        &s.a,
        &d_qkv,
        w(C_ATTN_W),
        Some((&mut da, Store::Overwrite)),
        dw,
        Some(db),
        threads,
    );
    let (dg, db) = two(g, layer(i, LN_1_W), layer(i, LN_1_B));
    layer_norm_backward(
        &s.input,
        &s.ln_1,
        vector(w(LN_1_W)),
        &da,
        dx,
        Store::Accumulate,
        vector_mut(dg),
        vector_mut(db),
    );
}

/// Two distinct tensors of `g`, mutably.
fn two(g: &mut Params, a: usize, b: usize) -> (&mut [f32], &mut [f32]) {
    assert!(a < b);
    let (lo, hi) = g.tensors.split_at_mut(b);
    (&mut lo[a].2, &mut hi[0].2)
}

/// Loss and gradients of the whole model on the batch.
/// `tied: false` drops the head's share of the token embeddings' gradient (a wrong variant).
fn loss_and_gradients(p: &Params, batch: &Batch, threads: &Threads, tied: bool) -> (f32, Params) {
    let mut g = Params::zeros();
    // Embeddings: x = wte[ids] + wpe[position].
    let mut x = vec![[0.0f32; D]; ROWS];
    for (r, (row, &id)) in x.iter_mut().zip(&batch.ids).enumerate() {
        let (tok, pos) = (&p.get(WTE)[id as usize * D..][..D], &p.get(WPE)[(r % SEQ) * D..][..D]);
        for ((v, &t), &q) in row.iter_mut().zip(tok).zip(pos) {
            *v = t + q;
        }
    }
    let saved: Vec<BlockActivations> =
        (0..LAYERS).map(|i| block_forward(p, i, &mut x, threads, &batch.valid)).collect();
    let mut xf = vec![[0.0; D]; ROWS];
    let mut ln_f = vec![NormStats::default(); ROWS];
    layer_norm_train(&x, &mut xf, vector(p.get(LN_F_W)), vector(p.get(LN_F_B)), EPS, &mut ln_f);
    // Tied head: logits = xf·wteᵀ.
    let mut logits = vec![[0.0; VOCAB]; ROWS];
    linear_train::<D, VOCAB>(&xf, p.get(WTE), None, &mut logits, threads);
    let loss = softmax_cross_entropy(
        logits.as_flattened_mut(),
        VOCAB,
        &batch.labels,
        Reduction::Mean,
        &mut [0.0; ROWS],
        threads,
    )
    .unwrap();

    // Backward, in reverse.
    let mut dxf = vec![[0.0; D]; ROWS];
    let mut dropped = vec![0.0; VOCAB * D];
    let d_head = if tied { g.get_mut(WTE) } else { &mut dropped };
    linear_backward::<D, VOCAB>(
        &xf,
        &logits,
        p.get(WTE),
        Some((&mut dxf, Store::Overwrite)),
        d_head,
        None,
        threads,
    );
    let mut dx = vec![[0.0; D]; ROWS];
    let (dg, db) = two(&mut g, LN_F_W, LN_F_B);
    layer_norm_backward(
        &x,
        &ln_f,
        vector(p.get(LN_F_W)),
        &dxf,
        &mut dx,
        Store::Overwrite,
        vector_mut(dg),
        vector_mut(db),
    );
    for i in (0..LAYERS).rev() {
        block_backward(p, &mut g, i, &saved[i], &mut dx, threads, &batch.valid);
    }
    embedding_backward(&batch.ids, &dx, g.get_mut(WTE), None);
    position_embedding_backward(SEQ, 0, &dx, g.get_mut(WPE));
    (loss.loss, g)
}

/// max |ours − reference| / max |reference| of one tensor.
fn relative_error(ours: &[f32], reference: &[f32]) -> f64 {
    let scale = reference.iter().fold(0.0f64, |m, &r| m.max(f64::from(r).abs())).max(f64::MIN_POSITIVE);
    ours.iter().zip(reference).fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - f64::from(b)).abs())) / scale
}

fn reference() -> serde_json::Value {
    let path = root("tests/fixtures/train/gpt2_step/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn model() -> Params {
    // A tied GPT-2 is saved without `lm_head.weight`; a save that has it holds the same tensor.
    Params::load(&root("tests/fixtures/gpt2/tiny/model.safetensors"), &["lm_head.weight"])
}

#[test]
fn gpt2_step_gradients_match_transformers() {
    let reference = reference();
    let batch = batch(&reference);
    let params = model();
    let expected = Params::load(&root("tests/fixtures/train/gpt2_step/grads.safetensors"), &[]);
    for threads in [Threads::sequential(), Threads::new(2).unwrap()] {
        let (loss, grads) = loss_and_gradients(&params, &batch, &threads, true);
        let torch_loss = reference["loss"].as_f64().unwrap();
        assert!(
            (f64::from(loss) - torch_loss).abs() <= 1e-5 * torch_loss,
            "loss {loss} vs transformers {torch_loss}"
        );
        for ((name, _, ours), (_, _, theirs)) in grads.tensors.iter().zip(&expected.tensors) {
            let error = relative_error(ours, theirs);
            assert!(error <= TOLERANCE, "{name}: gradient relative error {error:.3e} > {TOLERANCE:e}");
        }
    }
}

#[test]
fn gpt2_step_comparison_rejects_a_dropped_head_gradient() {
    // The head is tied to the token embeddings; a trainer that kept only the lookup's gradient
    // (the silent drop of issue #18's candle examples) must fail the comparison above.
    let reference = reference();
    let params = model();
    let expected = Params::load(&root("tests/fixtures/train/gpt2_step/grads.safetensors"), &[]);
    let (_, grads) = loss_and_gradients(&params, &batch(&reference), &Threads::sequential(), false);
    let error = relative_error(grads.get(WTE), expected.get(WTE));
    assert!(error > TOLERANCE, "wte without the head's gradient passed (error {error:.3e})");
}

#[test]
fn gpt2_adamw_steps_match_transformers() {
    // Three steps on the batch as the reference ran them: the loss, clip_grad_norm_(1.0), then
    // torch.optim.AdamW with weight decay 0.01 except on biases and LayerNorm weights.
    let reference = reference();
    let batch = batch(&reference);
    let no_decay: Vec<&str> =
        reference["no_decay"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let mut params = model();
    let specs: Vec<ParamSpec> = params
        .tensors
        .iter()
        .map(|(name, _, data)| {
            if no_decay.contains(&name.as_str()) {
                ParamSpec::no_decay(name.clone(), data.len())
            } else {
                ParamSpec::decay(name.clone(), data.len())
            }
        })
        .collect();
    let weight_decay = reference["weight_decay"].as_f64().unwrap();
    let mut adamw = AdamW::new(AdamWConfig::with_weight_decay(weight_decay), &specs).unwrap();
    let (lr, max_norm) = (reference["lr"].as_f64().unwrap(), reference["max_norm"].as_f64().unwrap() as f32);
    let threads = Threads::new(2).unwrap();
    let losses = reference["losses"].as_array().unwrap();
    let norms = reference["grad_norms"].as_array().unwrap();
    for (step, (torch_loss, torch_norm)) in losses.iter().zip(norms).enumerate() {
        let (loss, mut grads) = loss_and_gradients(&params, &batch, &threads, true);
        let torch_loss = torch_loss.as_f64().unwrap();
        assert!(
            (f64::from(loss) - torch_loss).abs() <= 1e-5 * torch_loss,
            "step {step}: loss {loss} vs {torch_loss}"
        );
        let mut slices: Vec<&mut [f32]> =
            grads.tensors.iter_mut().map(|(_, _, g)| g.as_mut_slice()).collect();
        let norm = clip_grad_norm_tensors(&mut slices, max_norm).finite().unwrap();
        let torch_norm = torch_norm.as_f64().unwrap();
        assert!(
            (f64::from(norm) - torch_norm).abs() <= 1e-5 * torch_norm,
            "step {step}: grad norm {norm} vs {torch_norm}"
        );
        let grads: Vec<&[f32]> = slices.iter().map(|g| &**g).collect();
        let mut weights: Vec<&mut [f32]> =
            params.tensors.iter_mut().map(|(_, _, p)| p.as_mut_slice()).collect();
        adamw.step_tensors(&mut weights, &grads, lr).unwrap();
    }
    let expected = Params::load(&root("tests/fixtures/train/gpt2_step/after.safetensors"), &[]);
    let (start, first_grads) =
        (model(), Params::load(&root("tests/fixtures/train/gpt2_step/grads.safetensors"), &[]));
    for (i, (name, _, ours)) in params.tensors.iter().enumerate() {
        let (theirs, before, g) = (expected.get(i), start.get(i), first_grads.get(i));
        // Compared as updates (after − before), at the scale of the learning rate where a wrong
        // formula shows, on the elements whose gradient stands above f32 rounding: Adam divides
        // each gradient by its own magnitude, so an element whose gradient is within rounding of
        // zero (|g| below 1e-3 of the tensor's largest, where 2e-5 relative gradient error is 2 %
        // of it) takes a step in whichever direction its rounding points, in torch as here.
        let g_max = g.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // Exact zeros (positions past the batch's length: only weight decay moves them) are kept.
        // The key bias's gradient is zero in exact arithmetic (it adds q·b to every score of a
        // query, which its softmax ignores): both sides hold rounding noise there, and Adam turns
        // noise into ±lr steps, so those elements are left out too.
        let key_bias = name.ends_with("attn.c_attn.bias");
        let kept: Vec<usize> = (0..g.len())
            .filter(|&j| !(key_bias && (D..2 * D).contains(&j)))
            .filter(|&j| g[j] == 0.0 || g[j].abs() >= 1e-3 * g_max)
            .collect();
        assert!(
            kept.len() * 4 >= g.len(),
            "{name}: only {} of {} gradients above rounding",
            kept.len(),
            g.len()
        );
        let ours: Vec<f32> = kept.iter().map(|&j| ours[j] - before[j]).collect();
        let theirs: Vec<f32> = kept.iter().map(|&j| theirs[j] - before[j]).collect();
        let error = relative_error(&ours, &theirs);
        assert!(
            error <= UPDATE_TOLERANCE,
            "{name}: update relative error {error:.3e} > {UPDATE_TOLERANCE:e}"
        );
    }
}
