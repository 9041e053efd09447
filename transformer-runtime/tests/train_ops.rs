//! The training building blocks against PyTorch's autograd and against naive twins.
//!
//! Parity: `scripts/reference/train_ops.py` wrote `tests/fixtures/train/ops.json` (float32
//! inputs, float64 autograd). Every gradient must agree within [`TOLERANCE`] of the reference's
//! largest magnitude: our arithmetic is f32, so a sum of `n` products carries a relative error of
//! about `n·2⁻²⁴` (≤ 1e-6 here); 1e-5 leaves room for the approximated erf/exp and nothing for a
//! wrong formula. Each parity test also runs a deliberately wrong variant and checks that the same
//! comparison rejects it, so none of them can pass vacuously.
//!
//! Property tests compare the blocked, threaded kernels with f64 loops over random shapes that
//! cross the block sizes.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;
use transformer_runtime::train::activation::{activation_backward, gated_backward};
use transformer_runtime::train::embedding::{embedding_backward, position_embedding_backward};
use transformer_runtime::train::linear::linear_backward;
use transformer_runtime::train::loss::{next_token_labels, softmax_cross_entropy, Reduction, IGNORE_INDEX};
use transformer_runtime::train::norm::{
    layer_norm_backward, layer_norm_train, rms_norm_backward, rms_norm_train, NormStats,
};
use transformer_runtime::train::rope::rope_heads_backward;
use transformer_runtime::train::Store;
use transformer_runtime::{Activation, Error, Threads};

#[path = "common/fixture.rs"]
mod fixture;

use fixture::{as_rows, floats, number};

/// Largest difference allowed, relative to the reference's largest magnitude.
const TOLERANCE: f64 = 1e-5;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| fixture::read("ops.json"))
}

fn cases(op: &str) -> &'static [Value] {
    fixture::cases(fixture(), op)
}

/// max |ours − reference| / max |reference|.
fn relative_error(ours: &[f32], reference: &[f32]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "lengths differ");
    let scale = reference.iter().fold(0.0f64, |m, &r| m.max(f64::from(r).abs())).max(f64::MIN_POSITIVE);
    let diff =
        ours.iter().zip(reference).fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - f64::from(b)).abs()));
    diff / scale
}

fn assert_close(what: &str, ours: &[f32], reference: &[f32]) {
    let error = relative_error(ours, reference);
    assert!(error <= TOLERANCE, "{what}: relative error {error:.3e} > {TOLERANCE:e}");
}

fn assert_rejected(what: &str, wrong: &[f32], reference: &[f32]) {
    let error = relative_error(wrong, reference);
    assert!(
        error > TOLERANCE,
        "{what}: a wrong variant passed (error {error:.3e}): the comparison cannot fail"
    );
}

fn activation(name: &str) -> Activation {
    match name {
        "identity" => Activation::Identity,
        "gelu_erf" => Activation::GeluErf,
        "gelu_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" => Activation::Silu,
        other => panic!("unknown activation {other}"),
    }
}

// ---- linear (+ activation) ------------------------------------------------------------------

const LIN_IN: usize = 13;
const LIN_OUT: usize = 7;

/// dx, dW, db of one fixture case; `undo_activation: false` is the wrong variant.
fn linear_gradients(
    case: &Value,
    undo_activation: bool,
    threads: &Threads,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = as_rows::<LIN_IN>(&floats(case, "x"));
    let mut dy = floats(case, "dy");
    if undo_activation {
        activation_backward(activation(case["activation"].as_str().unwrap()), &floats(case, "pre"), &mut dy);
    }
    let mut dx = vec![[7.0f32; LIN_IN]; x.len()];
    let (mut dw, mut db) = (vec![0.0; LIN_IN * LIN_OUT], vec![0.0; LIN_OUT]);
    let dy = as_rows::<LIN_OUT>(&dy);
    let w = floats(case, "w");
    linear_backward::<LIN_IN, LIN_OUT>(
        &x,
        &dy,
        &w,
        Some((&mut dx, Store::Overwrite)),
        &mut dw,
        Some(&mut db),
        threads,
    );
    (dx.into_flattened(), dw, db)
}

#[test]
fn linear_with_each_activation_matches_torch() {
    for case in cases("linear") {
        let name = case["activation"].as_str().unwrap();
        assert_eq!((number(case, "in"), number(case, "out")), (LIN_IN, LIN_OUT));
        for threads in [Threads::sequential(), Threads::new(2).unwrap()] {
            let (dx, dw, db) = linear_gradients(case, true, &threads);
            assert_close(&format!("linear+{name} dx"), &dx, &floats(case, "dx"));
            assert_close(&format!("linear+{name} dW"), &dw, &floats(case, "dw"));
            assert_close(&format!("linear+{name} db"), &db, &floats(case, "db"));
        }
        if name != "identity" {
            let (dx, _, _) = linear_gradients(case, false, &Threads::sequential());
            assert_rejected(
                &format!("linear+{name} without the activation's derivative"),
                &dx,
                &floats(case, "dx"),
            );
        }
    }
}

#[test]
fn linear_parameter_gradients_accumulate_and_dx_can_be_added() {
    let case = &cases("linear")[0];
    let x = as_rows::<LIN_IN>(&floats(case, "x"));
    let dy = as_rows::<LIN_OUT>(&floats(case, "dy"));
    let w = floats(case, "w");
    let mut dx = vec![[1.0f32; LIN_IN]; x.len()];
    let (mut dw, mut db) = (vec![0.5; LIN_IN * LIN_OUT], vec![0.25; LIN_OUT]);
    let threads = Threads::sequential();
    linear_backward::<LIN_IN, LIN_OUT>(
        &x,
        &dy,
        &w,
        Some((&mut dx, Store::Accumulate)),
        &mut dw,
        Some(&mut db),
        &threads,
    );
    let plus = |v: Vec<f32>, c: f32| v.into_iter().map(|g| g + c).collect::<Vec<_>>();
    assert_close("dx added", &dx.into_flattened(), &plus(floats(case, "dx"), 1.0));
    assert_close("dW accumulated", &dw, &plus(floats(case, "dw"), 0.5));
    assert_close("db accumulated", &db, &plus(floats(case, "db"), 0.25));
}

#[test]
fn gated_feed_forward_matches_torch() {
    for case in cases("gated") {
        let name = case["activation"].as_str().unwrap();
        let f = number(case, "f");
        let gate_up = floats(case, "gate_up");
        let mut d_gate_up = vec![0.0; gate_up.len()];
        gated_backward(activation(name), &gate_up, &floats(case, "dy"), &mut d_gate_up, f);
        assert_close(&format!("{name} gate/up"), &d_gate_up, &floats(case, "d_gate_up"));
        let mut swapped = vec![0.0; gate_up.len()];
        let up_gate: Vec<f32> =
            gate_up.chunks_exact(2 * f).flat_map(|r| r[f..].iter().chain(&r[..f])).copied().collect();
        gated_backward(activation(name), &up_gate, &floats(case, "dy"), &mut swapped, f);
        assert_rejected(&format!("{name} with gate and up swapped"), &swapped, &floats(case, "d_gate_up"));
    }
}

// ---- norms ------------------------------------------------------------------------------------

const NORM_D: usize = 11;

#[test]
fn layer_norm_matches_torch() {
    for case in cases("layer_norm") {
        assert_eq!(number(case, "d"), NORM_D);
        let eps = case["eps"].as_f64().unwrap() as f32;
        let x = as_rows::<NORM_D>(&floats(case, "x"));
        let gamma: [f32; NORM_D] = floats(case, "gamma").try_into().unwrap();
        let beta: [f32; NORM_D] = floats(case, "beta").try_into().unwrap();
        let (mut y, mut stats) = (vec![[0.0; NORM_D]; x.len()], vec![NormStats::default(); x.len()]);
        layer_norm_train(&x, &mut y, &gamma, &beta, eps, &mut stats);
        assert_close(&format!("layer norm (eps {eps:e}) forward"), y.as_flattened(), &floats(case, "y"));

        // The training forward is the inference kernel's arithmetic: bit-identical.
        let mut inference = x.clone();
        transformer_runtime::kernels::norm::layer_norm(&mut inference, &gamma, &beta, eps);
        assert_eq!(inference, y, "layer_norm_train differs from layer_norm");

        let dy = as_rows::<NORM_D>(&floats(case, "dy"));
        let mut dx = vec![[0.0; NORM_D]; x.len()];
        let (mut dg, mut db) = ([0.0; NORM_D], [0.0; NORM_D]);
        layer_norm_backward(&x, &stats, &gamma, &dy, &mut dx, Store::Overwrite, &mut dg, &mut db);
        assert_close("layer norm dx", dx.as_flattened(), &floats(case, "dx"));
        assert_close("layer norm dγ", &dg, &floats(case, "d_gamma"));
        assert_close("layer norm dβ", &db, &floats(case, "d_beta"));

        // Without the projection terms (dx = r·g): what a backward that forgot the mean gives.
        let wrong: Vec<f32> = (0..x.len() * NORM_D)
            .map(|i| stats[i / NORM_D].rstd * dy[i / NORM_D][i % NORM_D] * gamma[i % NORM_D])
            .collect();
        assert_rejected("layer norm dx without the mean terms", &wrong, &floats(case, "dx"));
    }
}

#[test]
fn rms_norm_matches_torch() {
    let case = &cases("rms_norm")[0];
    let eps = case["eps"].as_f64().unwrap() as f32;
    let x = as_rows::<NORM_D>(&floats(case, "x"));
    let weight: [f32; NORM_D] = floats(case, "weight").try_into().unwrap();
    let (mut y, mut stats) = (vec![[0.0; NORM_D]; x.len()], vec![NormStats::default(); x.len()]);
    rms_norm_train(&x, &mut y, &weight, eps, &mut stats);
    assert_close("rms norm forward", y.as_flattened(), &floats(case, "y"));
    let mut inference = x.clone();
    transformer_runtime::kernels::norm::rms_norm(&mut inference, &weight, eps);
    assert_eq!(inference, y, "rms_norm_train differs from rms_norm");

    let dy = as_rows::<NORM_D>(&floats(case, "dy"));
    let mut dx = vec![[0.0; NORM_D]; x.len()];
    let mut dw = [0.0; NORM_D];
    rms_norm_backward(&x, &stats, &weight, &dy, &mut dx, Store::Overwrite, &mut dw);
    assert_close("rms norm dx", dx.as_flattened(), &floats(case, "dx"));
    assert_close("rms norm dw", &dw, &floats(case, "d_weight"));

    let layer_stats: Vec<NormStats> = x
        .iter()
        .map(|r| {
            let mean = r.iter().sum::<f32>() / NORM_D as f32;
            let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / NORM_D as f32;
            NormStats { mean, rstd: 1.0 / (var + eps).sqrt() }
        })
        .collect();
    let mut wrong = vec![[0.0; NORM_D]; x.len()];
    let (mut dg, mut db) = ([0.0; NORM_D], [0.0; NORM_D]);
    layer_norm_backward(&x, &layer_stats, &weight, &dy, &mut wrong, Store::Overwrite, &mut dg, &mut db);
    assert_rejected("LayerNorm's backward for an RMSNorm", wrong.as_flattened(), &floats(case, "dx"));
}

// ---- embeddings -----------------------------------------------------------------------------

const EMB_D: usize = 5;

#[test]
fn embedding_skips_padding_and_sums_repeats_like_torch() {
    let case = &cases("embedding")[0];
    let ids: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let dy = as_rows::<EMB_D>(&floats(case, "dy"));
    let vocab = number(case, "vocab");
    let mut d_table = vec![0.0; vocab * EMB_D];
    embedding_backward(&ids, &dy, &mut d_table, Some(number(case, "padding_idx") as u32));
    assert_close("embedding d_table", &d_table, &floats(case, "d_table"));
    let mut wrong = vec![0.0; vocab * EMB_D];
    embedding_backward(&ids, &dy, &mut wrong, None);
    assert_rejected("embedding without padding_idx", &wrong, &floats(case, "d_table"));
}

#[test]
fn position_embeddings_match_torch() {
    let case = &cases("positions")[0];
    let dy = as_rows::<EMB_D>(&floats(case, "dy"));
    let mut d_table = vec![0.0; number(case, "positions") * EMB_D];
    position_embedding_backward(number(case, "seq"), number(case, "first"), &dy, &mut d_table);
    assert_close("position d_table", &d_table, &floats(case, "d_table"));
    let mut wrong = vec![0.0; d_table.len()];
    position_embedding_backward(number(case, "seq"), 0, &dy, &mut wrong);
    assert_rejected("positions from 0 instead of the offset", &wrong, &floats(case, "d_table"));
}

// ---- cross-entropy ----------------------------------------------------------------------------

fn labels(case: &Value) -> Vec<i64> {
    case["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect()
}

#[test]
fn cross_entropy_matches_torch() {
    for case in cases("cross_entropy") {
        let (rows, classes) = (number(case, "rows"), number(case, "classes"));
        let labels = labels(case);
        let reduction = match case["reduction"].as_str().unwrap() {
            "mean" => Reduction::Mean,
            "sum" => Reduction::Scaled(1.0),
            other => panic!("unknown reduction {other}"),
        };
        for threads in [Threads::sequential(), Threads::new(2).unwrap()] {
            let mut logits = floats(case, "logits");
            let mut scratch = vec![0.0; rows];
            let loss =
                softmax_cross_entropy(&mut logits, classes, &labels, reduction, &mut scratch, &threads)
                    .unwrap();
            assert_eq!(loss.labelled, labels.iter().filter(|&&y| y != IGNORE_INDEX).count());
            let reference = case["loss"].as_f64().unwrap();
            assert!(
                ((f64::from(loss.loss) - reference) / reference).abs() <= TOLERANCE,
                "loss {} vs torch {reference}",
                loss.loss
            );
            assert_close(
                &format!("cross-entropy ({reduction:?}) dlogits"),
                &logits,
                &floats(case, "dlogits"),
            );
        }
        let mut wrong = floats(case, "logits");
        let counted_all = vec![0; rows].into_iter().zip(&labels).map(|(_, &y)| y.max(0)).collect::<Vec<_>>();
        softmax_cross_entropy(
            &mut wrong,
            classes,
            &counted_all,
            reduction,
            &mut vec![0.0; rows],
            &Threads::sequential(),
        )
        .unwrap();
        assert_rejected("cross-entropy with the ignored rows trained on", &wrong, &floats(case, "dlogits"));
    }
}

#[test]
fn cross_entropy_refuses_bad_labels_before_writing() {
    let mut logits = vec![0.5f32; 3 * 4];
    let before = logits.clone();
    let threads = Threads::sequential();
    let mut scratch = vec![0.0; 3];
    let err = softmax_cross_entropy(&mut logits, 4, &[1, 4, 0], Reduction::Mean, &mut scratch, &threads)
        .unwrap_err();
    assert!(matches!(err, Error::LabelOutOfRange { row: 1, label: 4, classes: 4 }), "{err:?}");
    assert!(err.to_string().contains("label 4 at row 1"), "{err}");
    let err = softmax_cross_entropy(&mut logits, 4, &[1, -1, 0], Reduction::Mean, &mut scratch, &threads)
        .unwrap_err();
    assert!(matches!(err, Error::LabelOutOfRange { row: 1, label: -1, .. }), "{err:?}");
    let err =
        softmax_cross_entropy(&mut logits, 4, &[1, 2], Reduction::Mean, &mut scratch, &threads).unwrap_err();
    assert!(matches!(err, Error::LabelCountMismatch { labels: 2, rows: 3 }), "{err:?}");
    assert_eq!(logits, before, "a refused call wrote the logits");
}

#[test]
fn all_ignored_rows_give_zero_loss_and_gradient() {
    let mut logits = vec![1.0f32, 2.0, 3.0, 4.0];
    let loss = softmax_cross_entropy(
        &mut logits,
        2,
        &[IGNORE_INDEX; 2],
        Reduction::Mean,
        &mut [0.0; 2],
        &Threads::sequential(),
    )
    .unwrap();
    assert_eq!((loss.loss, loss.labelled), (0.0, 0));
    assert_eq!(logits, [0.0; 4]);
}

#[test]
fn next_token_labels_shift_within_sequences_and_skip_padding() {
    // Two sequences of 4; the second is right-padded after two tokens.
    let ids = [5, 6, 7, 8, 9, 10, 0, 0];
    let mask = [true, true, true, true, true, true, false, false];
    let mut labels = [0i64; 8];
    next_token_labels(&ids, Some(&mask), 4, &mut labels).unwrap();
    assert_eq!(labels, [6, 7, 8, -100, 10, -100, -100, -100]);
    next_token_labels(&ids, None, 4, &mut labels).unwrap();
    assert_eq!(labels, [6, 7, 8, -100, 10, 0, 0, -100]);
    let err = next_token_labels(&ids, None, 4, &mut [0; 7]).unwrap_err();
    assert!(matches!(err, Error::LabelCountMismatch { labels: 7, rows: 8 }), "{err:?}");
}

// ---- RoPE ---------------------------------------------------------------------------------------

#[test]
fn rope_backward_matches_torch() {
    for case in cases("rope") {
        let (head_dim, rotary, positions) =
            (number(case, "head_dim"), number(case, "rotary"), number(case, "positions"));
        let half = rotary / 2;
        let (mut cos, mut sin) = (vec![0.0; positions * half], vec![0.0; positions * half]);
        transformer_runtime::kernels::rope::rope_tables(
            rotary,
            case["theta"].as_f64().unwrap(),
            &mut cos,
            &mut sin,
        );
        let mut grad = floats(case, "dy");
        let width = grad.len() / positions;
        for (p, row) in grad.chunks_exact_mut(width).enumerate() {
            rope_heads_backward(row, head_dim, &cos[p * half..][..half], &sin[p * half..][..half]);
        }
        assert_close(&format!("rope ({rotary} of {head_dim} dims) dx"), &grad, &floats(case, "dx"));
        // The forward rotation applied to the gradient (+θ instead of −θ).
        let mut wrong = floats(case, "dy");
        for (p, row) in wrong.chunks_exact_mut(width).enumerate() {
            transformer_runtime::kernels::rope::rope_heads(
                row,
                head_dim,
                &cos[p * half..][..half],
                &sin[p * half..][..half],
            );
        }
        assert_rejected("rope backward rotating forward", &wrong, &floats(case, "dx"));
    }
}

// ---- property tests against naive f64 twins ----------------------------------------------------

fn naive_linear_backward(
    x: &[f32],
    dy: &[f32],
    w: &[f32],
    n_in: usize,
    n_out: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let rows = x.len() / n_in;
    let mut dx = vec![0.0f64; rows * n_in];
    let mut dw = vec![0.0f64; n_out * n_in];
    let mut db = vec![0.0f64; n_out];
    for r in 0..rows {
        for o in 0..n_out {
            let g = f64::from(dy[r * n_out + o]);
            db[o] += g;
            for i in 0..n_in {
                dx[r * n_in + i] += g * f64::from(w[o * n_in + i]);
                dw[o * n_in + i] += g * f64::from(x[r * n_in + i]);
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (f(dx), f(dw), f(db))
}

fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(-2.0f32..2.0, len)
}

fn check_linear<const IN: usize, const OUT: usize>(x: &[f32], dy: &[f32], w: &[f32], threads: usize) {
    let threads = Threads::new(threads).unwrap();
    let xr = as_rows::<IN>(x);
    let dyr = as_rows::<OUT>(dy);
    let mut dx = vec![[0.0; IN]; xr.len()];
    let (mut dw, mut db) = (vec![0.0; IN * OUT], vec![0.0; OUT]);
    linear_backward::<IN, OUT>(
        &xr,
        &dyr,
        w,
        Some((&mut dx, Store::Overwrite)),
        &mut dw,
        Some(&mut db),
        &threads,
    );
    let (ndx, ndw, ndb) = naive_linear_backward(x, dy, w, IN, OUT);
    // Sums of up to 150 products of values ≤ 2 in magnitude: f32 rounding stays far below 1e-4.
    for (what, ours, naive) in
        [("dx", dx.as_flattened(), &ndx[..]), ("dW", &dw[..], &ndw[..]), ("db", &db[..], &ndb[..])]
    {
        let error = relative_error(ours, naive);
        assert!(error <= 1e-5, "{what} ({IN}->{OUT}, {} rows): relative error {error:e}", xr.len());
    }
}

fn naive_layer_norm_backward(x: &[f32], gamma: &[f32], dy: &[f32], eps: f64) -> Vec<f32> {
    let d = gamma.len();
    let mut out = Vec::with_capacity(x.len());
    for (row, g) in x.chunks_exact(d).zip(dy.chunks_exact(d)) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / d as f64;
        let r = 1.0 / (var + eps).sqrt();
        let xh: Vec<f64> = row.iter().map(|&v| (f64::from(v) - mean) * r).collect();
        let gg: Vec<f64> = g.iter().zip(gamma).map(|(&a, &b)| f64::from(a) * f64::from(b)).collect();
        let mg = gg.iter().sum::<f64>() / d as f64;
        let mgx = gg.iter().zip(&xh).map(|(a, b)| a * b).sum::<f64>() / d as f64;
        out.extend(gg.iter().zip(&xh).map(|(g, xh)| (r * (g - mg - xh * mgx)) as f32));
    }
    out
}

fn naive_cross_entropy(logits: &[f32], classes: usize, labels: &[i64]) -> (f64, Vec<f32>) {
    let n = labels.iter().filter(|&&y| y != IGNORE_INDEX).count().max(1) as f64;
    let mut loss = 0.0;
    let mut grad = vec![0.0f32; logits.len()];
    for ((z, g), &y) in logits.chunks_exact(classes).zip(grad.chunks_exact_mut(classes)).zip(labels) {
        if y == IGNORE_INDEX {
            continue;
        }
        let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let sum: f64 = z.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        loss += max + sum.ln() - f64::from(z[y as usize]);
        for (k, (gk, &zk)) in g.iter_mut().zip(z).enumerate() {
            let p = (f64::from(zk) - max).exp() / sum;
            *gk = ((p - if k == y as usize { 1.0 } else { 0.0 }) / n) as f32;
        }
    }
    (loss / n, grad)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn linear_backward_matches_naive_small(rows in 1usize..140, threads in 1usize..3, seed in values(140 * (13 + 7) + 13 * 7)) {
        let (x, rest) = seed.split_at(rows * 13);
        let (dy, rest) = rest.split_at(rows * 7);
        check_linear::<13, 7>(x, dy, &rest[..91], threads);
    }

    #[test]
    fn linear_backward_matches_naive_across_feature_blocks(rows in 1usize..70, threads in 1usize..3, seed in values(70 * (33 + 70) + 33 * 70)) {
        let (x, rest) = seed.split_at(rows * 33);
        let (dy, rest) = rest.split_at(rows * 70);
        check_linear::<33, 70>(x, dy, &rest[..33 * 70], threads);
    }

    #[test]
    fn layer_norm_backward_matches_naive(rows in 1usize..9, shift in -50.0f32..50.0, seed in values(9 * 2 * 17 + 17)) {
        const D: usize = 17;
        let x: Vec<f32> = seed[..rows * D].iter().map(|v| v * 3.0 + shift).collect();
        let dy = &seed[9 * D..][..rows * D];
        let gamma: [f32; D] = seed[18 * D..][..D].try_into().unwrap();
        let xr = as_rows::<D>(&x);
        let (mut y, mut stats) = (vec![[0.0; D]; rows], vec![NormStats::default(); rows]);
        layer_norm_train(&xr, &mut y, &gamma, &[0.0; D], 1e-5, &mut stats);
        let mut dx = vec![[0.0; D]; rows];
        let (mut dg, mut db) = ([0.0; D], [0.0; D]);
        layer_norm_backward(&xr, &stats, &gamma, &as_rows::<D>(dy), &mut dx, Store::Overwrite, &mut dg, &mut db);
        let naive = naive_layer_norm_backward(&x, &gamma, dy, 1e-5);
        let error = relative_error(dx.as_flattened(), &naive);
        prop_assert!(error <= 1e-4, "relative error {error:e}");
    }

    #[test]
    fn cross_entropy_matches_naive(rows in 1usize..30, classes in 1usize..80, threads in 1usize..3,
                                   seed in values(30 * 80), picks in prop::collection::vec(-1i64..80, 30)) {
        let mut logits: Vec<f32> = seed[..rows * classes].iter().map(|v| v * 4.0).collect();
        let labels: Vec<i64> = picks[..rows].iter().map(|&p| if p < 0 { IGNORE_INDEX } else { p % classes as i64 }).collect();
        let (naive_loss, naive_grad) = naive_cross_entropy(&logits, classes, &labels);
        let loss = softmax_cross_entropy(&mut logits, classes, &labels, Reduction::Mean, &mut vec![0.0; rows], &Threads::new(threads).unwrap()).unwrap();
        prop_assert!((f64::from(loss.loss) - naive_loss).abs() <= 1e-5 * naive_loss.abs().max(1.0), "loss {} vs {naive_loss}", loss.loss);
        // Relative to the largest |g|, but never to less than 1/n: the label's `p − 1` is computed
        // in f32, so when its probability nears 1 the floor is a few ulps of 1/n, however small
        // the gradient (logits 0, 0, 0, 6.9, −1.4 with the label on 6.9 reached 2.3e-5 of it).
        let n = labels.iter().filter(|&&y| y != IGNORE_INDEX).count().max(1) as f64;
        let scale = naive_grad.iter().fold(1.0 / n, |m, &g| m.max(f64::from(g).abs()));
        let diff = logits.iter().zip(&naive_grad).fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - f64::from(b)).abs()));
        let error = diff / scale;
        prop_assert!(error <= 1e-5 || naive_grad.iter().all(|&g| g == 0.0), "gradient error {error:e} of max(|g|, 1/n)");
    }
}
