//! LSTM and GRU parity with PyTorch: forward outputs, final states and every gradient of
//! `loss = Σ output·R + Σ h_n·S (+ Σ c_n·T)` against torch's float64 autograd on the same float32
//! values (`scripts/reference/recurrent.py`, fixtures in `tests/fixtures/recurrent/<case>/`).
//!
//! Also: the backward against central finite differences of the forward on random small shapes
//! (proptest), thread-count independence, no allocation inside a time step, and a missing or
//! misshaped weight being a typed error naming the tensor and its shape.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::Value;
use transformer_runtime::recurrent::{Gru, GruSaved, Lstm, LstmSaved, LstmStates, ParamTensor};
use transformer_runtime::train::Store;
use transformer_runtime::weights::{WeightError, WeightProblem};
use transformer_runtime::{Error, Threads, WeightLoader};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is thread-local
// plain data and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// The fixtures' widths.
const IN: usize = 5;
const H: usize = 7;
/// Forward values: |Δ| ≤ 1e-5 · max(1, |torch|) per element.
const FORWARD_TOLERANCE: f32 = 1e-5;
/// Gradients: max |Δ| ≤ 1e-4 · max |torch| per tensor.
const GRADIENT_TOLERANCE: f32 = 1e-4;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/recurrent").join(case)
}

/// A case's config.json, checked against what the test instantiates.
fn config(case: &str, kind: &str, layers: usize, directions: usize) -> Value {
    let path = fixture(case).join("config.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["kind"], kind, "{case}");
    assert_eq!(config["input_size"], IN, "{case}");
    assert_eq!(config["hidden_size"], H, "{case}");
    assert_eq!(config["num_layers"], layers, "{case}");
    assert_eq!(config["bidirectional"], directions == 2, "{case}");
    assert_eq!(config["batch_first"], true, "{case}");
    config
}

/// The tensors of a case's reference.safetensors, by name, flat.
struct Reference {
    loader: WeightLoader,
}

impl Reference {
    fn open(case: &str) -> Self {
        Self { loader: WeightLoader::open(fixture(case).join("reference.safetensors")).unwrap() }
    }

    fn get(&mut self, name: &str) -> Vec<f32> {
        let (_, shape) = self.loader.info(name).unwrap_or_else(|| panic!("reference has no {name}"));
        let values = self.loader.take(name, &shape);
        assert!(self.loader.problems().is_empty(), "{name}: {:?}", self.loader.problems());
        values
    }

    fn optional(&mut self, name: &str) -> Option<Vec<f32>> {
        self.loader.contains(name).then(|| self.get(name))
    }
}

fn to_rows<const W: usize>(flat: &[f32]) -> Vec<[f32; W]> {
    let (rows, rest) = flat.as_chunks::<W>();
    assert!(rest.is_empty(), "{} values are not rows of {W}", flat.len());
    rows.to_vec()
}

fn nested_rows<const W: usize, const D: usize>(flat: &[f32]) -> Vec<[[f32; W]; D]> {
    let rows = to_rows::<W>(flat);
    let (nested, rest) = rows.as_chunks::<D>();
    assert!(rest.is_empty());
    nested.to_vec()
}

/// Forward values: the largest |Δ| / max(1, |torch|). Asserted ≤ [`FORWARD_TOLERANCE`].
fn forward_error(case: &str, what: &str, ours: &[f32], torch: &[f32]) -> f32 {
    assert_eq!(ours.len(), torch.len(), "{case} {what}: lengths");
    let error = ours.iter().zip(torch).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)).fold(0.0, f32::max);
    println!("{case:>30} {what:<24} forward error {error:.2e}");
    assert!(error <= FORWARD_TOLERANCE, "{case} {what}: error {error:e} > {FORWARD_TOLERANCE:e}");
    error
}

/// Gradients: max |Δ| / max |torch| over the tensor. Asserted ≤ [`GRADIENT_TOLERANCE`].
fn gradient_error(case: &str, what: &str, ours: &[f32], torch: &[f32]) -> f32 {
    assert_eq!(ours.len(), torch.len(), "{case} {what}: lengths");
    let delta = ours.iter().zip(torch).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    let scale = torch.iter().map(|g| g.abs()).fold(0.0, f32::max);
    let error = delta / scale;
    println!("{case:>30} {what:<24} gradient error {error:.2e} (max |g| {scale:.3})");
    assert!(error <= GRADIENT_TOLERANCE, "{case} {what}: error {error:e} > {GRADIENT_TOLERANCE:e}");
    error
}

/// The parameter gradients, each tensor against torch's `grad.<name>`.
fn check_parameter_gradients(case: &str, reference: &mut Reference, tensors: &[ParamTensor], grads: &[f32]) {
    for tensor in tensors {
        let torch = reference.get(&format!("grad.{}", tensor.name));
        gradient_error(case, &tensor.name, &grads[tensor.range()], &torch);
    }
}

fn lstm_parity<const D: usize>(case: &str, layers: usize, threads: &Threads) -> (LstmSaved<H, D>, Vec<f32>) {
    let config = config(case, "lstm", layers, D);
    let batch = config["batch"].as_u64().unwrap() as usize;
    let lstm = Lstm::<IN, H, D>::open(fixture(case).join("model.safetensors"), layers).unwrap();
    let mut reference = Reference::open(case);
    let x = to_rows::<IN>(&reference.get("input"));
    let (h0, c0) = (
        reference.optional("h0").map(|h| to_rows::<H>(&h)),
        reference.optional("c0").map(|c| to_rows::<H>(&c)),
    );
    assert_eq!(h0.is_some(), config["initial_states"] == true);

    let mut saved = LstmSaved::new();
    let initial = LstmStates { h: h0.as_deref(), c: c0.as_deref() };
    lstm.forward(&x, batch, initial, &mut saved, threads);
    forward_error(case, "output", saved.output().as_flattened().as_flattened(), &reference.get("output"));
    forward_error(case, "h_n", saved.h_n().as_flattened(), &reference.get("h_n"));
    forward_error(case, "c_n", saved.c_n().as_flattened(), &reference.get("c_n"));

    let (r, s, t) = (reference.get("R"), reference.get("S"), reference.get("T"));
    let loss = dot(saved.output().as_flattened().as_flattened(), &r)
        + dot(saved.h_n().as_flattened(), &s)
        + dot(saved.c_n().as_flattened(), &t);
    forward_error(case, "loss", &[loss as f32], &reference.get("loss"));

    let (s, t) = (to_rows::<H>(&s), to_rows::<H>(&t));
    let mut grads = vec![0.0; lstm.params().len()];
    let mut dx = vec![[0.0; IN]; x.len()];
    let d_final = LstmStates { h: Some(&s), c: Some(&t) };
    let d_output = nested_rows::<H, D>(&r);
    lstm.backward(&x, &mut saved, &d_output, d_final, Some((&mut dx, Store::Overwrite)), &mut grads, threads);
    gradient_error(case, "input", dx.as_flattened(), &reference.get("grad.input"));
    if let Some(torch) = reference.optional("grad.h0") {
        gradient_error(case, "h0", saved.d_h0().as_flattened(), &torch);
    }
    if let Some(torch) = reference.optional("grad.c0") {
        gradient_error(case, "c0", saved.d_c0().as_flattened(), &torch);
    }
    check_parameter_gradients(case, &mut reference, lstm.tensors(), &grads);
    grads.extend(dx.as_flattened());
    (saved, grads)
}

fn gru_parity<const D: usize>(case: &str, layers: usize, threads: &Threads) -> (GruSaved<H, D>, Vec<f32>) {
    let config = config(case, "gru", layers, D);
    let batch = config["batch"].as_u64().unwrap() as usize;
    let gru = Gru::<IN, H, D>::open(fixture(case).join("model.safetensors"), layers).unwrap();
    let mut reference = Reference::open(case);
    let x = to_rows::<IN>(&reference.get("input"));
    let h0 = reference.optional("h0").map(|h| to_rows::<H>(&h));
    assert_eq!(h0.is_some(), config["initial_states"] == true);

    let mut saved = GruSaved::new();
    gru.forward(&x, batch, h0.as_deref(), &mut saved, threads);
    forward_error(case, "output", saved.output().as_flattened().as_flattened(), &reference.get("output"));
    forward_error(case, "h_n", saved.h_n().as_flattened(), &reference.get("h_n"));

    let (r, s) = (reference.get("R"), reference.get("S"));
    let loss = dot(saved.output().as_flattened().as_flattened(), &r) + dot(saved.h_n().as_flattened(), &s);
    forward_error(case, "loss", &[loss as f32], &reference.get("loss"));

    let s = to_rows::<H>(&s);
    let mut grads = vec![0.0; gru.params().len()];
    let mut dx = vec![[0.0; IN]; x.len()];
    let d_output = nested_rows::<H, D>(&r);
    gru.backward(&x, &mut saved, &d_output, Some(&s), Some((&mut dx, Store::Overwrite)), &mut grads, threads);
    gradient_error(case, "input", dx.as_flattened(), &reference.get("grad.input"));
    if let Some(torch) = reference.optional("grad.h0") {
        gradient_error(case, "h0", saved.d_h0().as_flattened(), &torch);
    }
    check_parameter_gradients(case, &mut reference, gru.tensors(), &grads);
    grads.extend(dx.as_flattened());
    (saved, grads)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum()
}

#[test]
fn lstm_one_layer_matches_torch() {
    lstm_parity::<1>("lstm_1layer", 1, &Threads::sequential());
}

#[test]
fn lstm_two_layers_bidirectional_with_initial_states_matches_torch() {
    lstm_parity::<2>("lstm_2layer_bidirectional_h0", 2, &Threads::sequential());
}

#[test]
fn gru_one_layer_matches_torch() {
    gru_parity::<1>("gru_1layer", 1, &Threads::sequential());
}

#[test]
fn gru_two_layers_bidirectional_with_initial_state_matches_torch() {
    gru_parity::<2>("gru_2layer_bidirectional_h0", 2, &Threads::sequential());
}

/// Two threads (directions in parallel, products split) give bit-identical results.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let two = Threads::new(2).unwrap();
    let case = "lstm_2layer_bidirectional_h0";
    let (one_saved, one_grads) = lstm_parity::<2>(case, 2, &Threads::sequential());
    let (two_saved, two_grads) = lstm_parity::<2>(case, 2, &two);
    assert_eq!(one_saved.output(), two_saved.output());
    assert_eq!(one_saved.h_n(), two_saved.h_n());
    assert_eq!(one_grads, two_grads);
    let case = "gru_2layer_bidirectional_h0";
    let (one_saved, one_grads) = gru_parity::<2>(case, 2, &Threads::sequential());
    let (two_saved, two_grads) = gru_parity::<2>(case, 2, &two);
    assert_eq!(one_saved.output(), two_saved.output());
    assert_eq!(one_grads, two_grads);
}

/// Parameter gradients accumulate, and `Store::Accumulate` adds the input gradient.
#[test]
fn gradients_accumulate() {
    let (batch, time) = (2, 4);
    let gru = Gru::<3, 4, 2>::init(2, 7);
    let x: Vec<[f32; 3]> = (0..batch * time).map(|i| [i as f32 * 0.1, -0.2, 0.3]).collect();
    let d_output = vec![[[0.5; 4]; 2]; batch * time];
    let mut saved = GruSaved::new();
    gru.forward(&x, batch, None, &mut saved, &Threads::sequential());
    let mut once = (vec![0.0; gru.params().len()], vec![[0.0; 3]; x.len()]);
    let mut twice = (vec![0.0; gru.params().len()], vec![[0.0; 3]; x.len()]);
    gru.backward(
        &x,
        &mut saved,
        &d_output,
        None,
        Some((&mut once.1, Store::Overwrite)),
        &mut once.0,
        &Threads::sequential(),
    );
    for _ in 0..2 {
        let dx = Some((&mut twice.1[..], Store::Accumulate));
        gru.backward(&x, &mut saved, &d_output, None, dx, &mut twice.0, &Threads::sequential());
    }
    for (a, b) in once.0.iter().zip(&twice.0).chain(once.1.as_flattened().iter().zip(twice.1.as_flattened()))
    {
        assert!((2.0 * a - b).abs() <= 1e-6 * a.abs().max(1.0), "{a} twice is not {b}");
    }
}

/// After a warm-up at a larger shape, a forward and backward allocate as often at 7 time steps as
/// at 40: nothing per step (only the per-call packing of `W_hh` and the GEMMs' buffers).
#[test]
fn no_allocation_inside_a_time_step() {
    let lstm = Lstm::<4, 6, 2>::init(2, 3);
    let threads = Threads::sequential();
    let mut saved = LstmSaved::new();
    let mut grads = vec![0.0; lstm.params().len()];
    let batch = 3;
    let mut run = |time: usize| {
        let x = vec![[0.25; 4]; batch * time];
        let d_output = vec![[[1.0; 6]; 2]; batch * time];
        let mut dx = vec![[0.0; 4]; batch * time];
        let before = allocations();
        lstm.forward(&x, batch, LstmStates::ZERO, &mut saved, &threads);
        let dx_opt = Some((&mut dx[..], Store::Overwrite));
        lstm.backward(&x, &mut saved, &d_output, LstmStates::ZERO, dx_opt, &mut grads, &threads);
        allocations() - before
    };
    run(40);
    let (long, short) = (run(40), run(7));
    println!("allocations per forward + backward: {long} at 40 steps, {short} at 7");
    assert_eq!(long, short, "allocations grow with the number of time steps");
}

// ---- finite differences ----------------------------------------------------------------------

/// What a finite-difference case draws: shape and values.
#[derive(Clone, Debug)]
struct Case {
    layers: usize,
    batch: usize,
    time: usize,
    seed: u64,
    initial: bool,
}

fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    // A small LCG is enough for test values: uniform in (−scale, scale).
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The gradient `analytic` of `f` at `point` against central differences of step `EPS`, every
/// coordinate: |Δ| ≤ 3e-4 + 3e-3·|analytic| (about three times the worst seen on 320 cases).
fn check_finite_differences(
    what: &str,
    point: &mut [f32],
    analytic: &[f32],
    f: &mut dyn FnMut(&[f32]) -> f64,
) {
    const EPS: f32 = 1e-2;
    for i in 0..point.len() {
        let original = point[i];
        point[i] = original + EPS;
        let up = f(point);
        point[i] = original - EPS;
        let down = f(point);
        point[i] = original;
        let numeric = ((up - down) / (2.0 * f64::from(EPS))) as f32;
        let error = (numeric - analytic[i]).abs();
        assert!(
            error <= 3e-4 + 3e-3 * analytic[i].abs(),
            "{what}[{i}]: backward {} but finite differences {numeric}",
            analytic[i]
        );
    }
}

fn lstm_finite_differences<const I: usize, const K: usize, const D: usize>(case: &Case) {
    let threads = Threads::sequential();
    let mut lstm = Lstm::<I, K, D>::init(case.layers, case.seed);
    let rows = case.batch * case.time;
    let states = case.layers * D * case.batch;
    let x = values(case.seed ^ 1, rows * I, 1.0);
    let h0 = values(case.seed ^ 2, states * K, 0.5);
    let c0 = values(case.seed ^ 3, states * K, 0.5);
    let (r, s, t) = (
        values(case.seed ^ 4, rows * D * K, 1.0),
        values(case.seed ^ 5, states * K, 1.0),
        values(case.seed ^ 6, states * K, 1.0),
    );
    let initial = case.initial;
    let loss = |lstm: &Lstm<I, K, D>, x: &[f32], h0: &[f32], c0: &[f32]| {
        let mut saved = LstmSaved::new();
        let (h0, c0) = (to_rows::<K>(h0), to_rows::<K>(c0));
        let states = if initial { LstmStates { h: Some(&h0), c: Some(&c0) } } else { LstmStates::ZERO };
        lstm.forward(&to_rows::<I>(x), case.batch, states, &mut saved, &threads);
        let loss = dot(saved.output().as_flattened().as_flattened(), &r)
            + dot(saved.h_n().as_flattened(), &s)
            + dot(saved.c_n().as_flattened(), &t);
        (loss, saved)
    };
    let (_, mut saved) = loss(&lstm, &x, &h0, &c0);
    let mut grads = vec![0.0; lstm.params().len()];
    let mut dx = vec![[0.0; I]; rows];
    let (s_rows, t_rows) = (to_rows::<K>(&s), to_rows::<K>(&t));
    let d_final = LstmStates { h: Some(&s_rows), c: Some(&t_rows) };
    let xr = to_rows::<I>(&x);
    lstm.backward(
        &xr,
        &mut saved,
        &nested_rows::<K, D>(&r),
        d_final,
        Some((&mut dx, Store::Overwrite)),
        &mut grads,
        &threads,
    );

    check_finite_differences("x", &mut x.clone(), dx.as_flattened(), &mut |x| loss(&lstm, x, &h0, &c0).0);
    if initial {
        let (d_h0, d_c0) = (saved.d_h0().as_flattened().to_vec(), saved.d_c0().as_flattened().to_vec());
        check_finite_differences("h0", &mut h0.clone(), &d_h0, &mut |h| loss(&lstm, &x, h, &c0).0);
        check_finite_differences("c0", &mut c0.clone(), &d_c0, &mut |c| loss(&lstm, &x, &h0, c).0);
    }
    check_finite_differences("parameters", &mut lstm.params().to_vec(), &grads, &mut |p| {
        lstm.params_mut().copy_from_slice(p);
        loss(&lstm, &x, &h0, &c0).0
    });
}

fn gru_finite_differences<const I: usize, const K: usize, const D: usize>(case: &Case) {
    let threads = Threads::sequential();
    let mut gru = Gru::<I, K, D>::init(case.layers, case.seed);
    let rows = case.batch * case.time;
    let states = case.layers * D * case.batch;
    let x = values(case.seed ^ 1, rows * I, 1.0);
    let h0 = values(case.seed ^ 2, states * K, 0.5);
    let (r, s) = (values(case.seed ^ 4, rows * D * K, 1.0), values(case.seed ^ 5, states * K, 1.0));
    let initial = case.initial;
    let loss = |gru: &Gru<I, K, D>, x: &[f32], h0: &[f32]| {
        let mut saved = GruSaved::new();
        let h0 = to_rows::<K>(h0);
        gru.forward(&to_rows::<I>(x), case.batch, initial.then_some(&h0[..]), &mut saved, &threads);
        let loss =
            dot(saved.output().as_flattened().as_flattened(), &r) + dot(saved.h_n().as_flattened(), &s);
        (loss, saved)
    };
    let (_, mut saved) = loss(&gru, &x, &h0);
    let mut grads = vec![0.0; gru.params().len()];
    let mut dx = vec![[0.0; I]; rows];
    let s_rows = to_rows::<K>(&s);
    let xr = to_rows::<I>(&x);
    gru.backward(
        &xr,
        &mut saved,
        &nested_rows::<K, D>(&r),
        Some(&s_rows),
        Some((&mut dx, Store::Overwrite)),
        &mut grads,
        &threads,
    );

    check_finite_differences("x", &mut x.clone(), dx.as_flattened(), &mut |x| loss(&gru, x, &h0).0);
    if initial {
        let d_h0 = saved.d_h0().as_flattened().to_vec();
        check_finite_differences("h0", &mut h0.clone(), &d_h0, &mut |h| loss(&gru, &x, h).0);
    }
    check_finite_differences("parameters", &mut gru.params().to_vec(), &grads, &mut |p| {
        gru.params_mut().copy_from_slice(p);
        loss(&gru, &x, &h0).0
    });
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=2, 1usize..=3, 1usize..=5, any::<u64>(), any::<bool>())
        .prop_map(|(layers, batch, time, seed, initial)| Case { layers, batch, time, seed, initial })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Widths (input, hidden) ∈ {(1, 1), (2, 3), (3, 2)}, 1 or 2 directions.
    #[test]
    fn lstm_backward_matches_finite_differences(case in case(), widths in 0usize..3, bidirectional: bool) {
        match (widths, bidirectional) {
            (0, false) => lstm_finite_differences::<1, 1, 1>(&case),
            (0, true) => lstm_finite_differences::<1, 1, 2>(&case),
            (1, false) => lstm_finite_differences::<2, 3, 1>(&case),
            (1, true) => lstm_finite_differences::<2, 3, 2>(&case),
            (_, false) => lstm_finite_differences::<3, 2, 1>(&case),
            (_, true) => lstm_finite_differences::<3, 2, 2>(&case),
        }
    }

    #[test]
    fn gru_backward_matches_finite_differences(case in case(), widths in 0usize..3, bidirectional: bool) {
        match (widths, bidirectional) {
            (0, false) => gru_finite_differences::<1, 1, 1>(&case),
            (0, true) => gru_finite_differences::<1, 1, 2>(&case),
            (1, false) => gru_finite_differences::<2, 3, 1>(&case),
            (1, true) => gru_finite_differences::<2, 3, 2>(&case),
            (_, false) => gru_finite_differences::<3, 2, 1>(&case),
            (_, true) => gru_finite_differences::<3, 2, 2>(&case),
        }
    }
}

// ---- bad weights -----------------------------------------------------------------------------

/// The fixture's 2-layer bidirectional LSTM weights with `weight_hh_l1_reverse` left out and
/// `bias_ih_l0` cut to 27 values: one typed problem each, naming the tensor and its shape.
#[test]
fn missing_or_misshaped_weights_are_typed_errors() {
    let case = "lstm_2layer_bidirectional_h0";
    let lstm = Lstm::<IN, H, 2>::open(fixture(case).join("model.safetensors"), 2).unwrap();
    let mut kept: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for tensor in lstm.tensors() {
        let values = &lstm.params()[tensor.range()];
        let (shape, values) = match tensor.name.as_str() {
            "weight_hh_l1_reverse" => continue,
            "bias_ih_l0" => (vec![27], &values[..27]),
            _ => (tensor.shape.clone(), values),
        };
        kept.push((tensor.name.clone(), shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let views: Vec<(&str, TensorView<'_>)> = kept
        .iter()
        .map(|(name, shape, bytes)| {
            (name.as_str(), TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap())
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();

    let mut loader = WeightLoader::from_bytes(bytes.clone(), "bad.safetensors").unwrap();
    let _ = Lstm::<IN, H, 2>::load(&mut loader, "", 2);
    let Err(WeightError::Problems { problems, .. }) = loader.finish() else { panic!("bad weights loaded") };
    assert_eq!(
        problems,
        [
            WeightProblem::ShapeMismatch {
                name: "bias_ih_l0".into(),
                expected: vec![4 * H],
                found: vec![27]
            },
            WeightProblem::Missing { name: "weight_hh_l1_reverse".into(), expected_shape: vec![4 * H, H] },
        ]
    );

    // Through `open`, the crate's error type; under a prefix, the names carry it.
    let path = std::env::temp_dir().join(format!("recurrent-bad-{}.safetensors", std::process::id()));
    std::fs::write(&path, &bytes).unwrap();
    let error = Gru::<IN, H, 2>::open(&path, 2).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let Error::Weights(WeightError::Problems { problems, .. }) = &error else { panic!("{error}") };
    assert!(problems.contains(&WeightProblem::ShapeMismatch {
        name: "weight_ih_l0".into(),
        expected: vec![3 * H, IN],
        found: vec![4 * H, IN]
    }));
    println!("{error}");

    let mut loader = WeightLoader::from_bytes(bytes, "bad.safetensors").unwrap();
    let _ = Lstm::<IN, H, 2>::load(&mut loader, "encoder.rnn", 2);
    assert!(loader.problems().contains(&WeightProblem::Missing {
        name: "encoder.rnn.weight_ih_l0".into(),
        expected_shape: vec![28, IN]
    }));
}
