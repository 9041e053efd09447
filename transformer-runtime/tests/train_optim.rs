//! AdamW, global-norm clipping and the learning-rate schedules against PyTorch and transformers
//! (tests/fixtures/train/optim/, written by scripts/reference/train_optim.py), resuming from a
//! saved state bit for bit, and every error.
//!
//! Tolerances: the parameters after each of 20 steps and the moments after the last within 1e-6
//! relative, per parameter tensor (`max |ours - torch| <= 1e-6 * max |torch|`); the clip norms
//! within 1e-6 relative; the learning rates within 1e-7 relative. Without clipping the parameters
//! and moments are equal to torch's bit for bit; with clipping they differ by rounding, because
//! the total norm here is summed in f64 and torch's in f32.

use std::path::{Path, PathBuf};

use serde_json::Value;
use transformer_runtime::train::optim::{
    clip_grad_norm, clip_grad_norm_tensors, AdamW, AdamWConfig, GroupConfig, OptimError, ParamSpec,
};
use transformer_runtime::train::schedule::Schedule;

/// The relative tolerance of the AdamW parity (see the module comment).
const TOL: f64 = 1e-6;
/// Below this magnitude, the error of a clip norm is measured absolutely.
const FLOOR: f64 = 1e-3;
/// The relative tolerance of the learning rates.
const LR_TOL: f64 = 1e-7;

// ------------------------------------------------------------------------------------------------
// Fixtures
// ------------------------------------------------------------------------------------------------

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/train/optim").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

/// Float64 values written as strings: Rust's parser reads them back exactly.
fn exact_f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().parse().unwrap()).collect()
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap()
}

/// The parameters, their initial values and every step's gradients, flat in registration order.
struct Problem {
    specs: Vec<ParamSpec>,
    initial: Vec<f32>,
    grads: Vec<Vec<f32>>,
}

impl Problem {
    fn load(fx: &Value) -> Self {
        let specs: Vec<ParamSpec> = fx["params"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let len =
                    p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product();
                ParamSpec::new(p["name"].as_str().unwrap(), len, u64_of(&p["group"]) as usize)
            })
            .collect();
        let grads = fx["grads"].as_array().unwrap().iter().map(|step| Self::flat(&specs, step)).collect();
        Problem { initial: Self::flat(&specs, &fx["initial"]), grads, specs }
    }

    /// The tensors of `by_name` (a JSON object keyed by parameter name) concatenated in order.
    fn flat(specs: &[ParamSpec], by_name: &Value) -> Vec<f32> {
        let mut flat = Vec::new();
        for spec in specs {
            let values = f32s(&by_name[&spec.name]);
            assert_eq!(values.len(), spec.len, "{}", spec.name);
            flat.extend(values);
        }
        flat
    }
}

/// One of torch's runs: its settings and what it recorded.
struct Reference {
    config: AdamWConfig,
    schedule: Schedule,
    max_norm: Option<f32>,
    lrs: Vec<f64>,
    clip_norms: Vec<f64>,
    params: Vec<Vec<f32>>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: u64,
}

impl Reference {
    fn load(fx: &Value, problem: &Problem, name: &str) -> Self {
        let v = &fx["variants"][name];
        let betas = f64s(&v["betas"]);
        let groups = f64s(&v["weight_decay"]).into_iter().map(GroupConfig::with_weight_decay).collect();
        let config = AdamWConfig { betas: (betas[0], betas[1]), eps: v["eps"].as_f64().unwrap(), groups };
        let s = &v["schedule"];
        let (lr, warmup, total) = (v["lr"].as_f64().unwrap(), u64_of(&s["warmup"]), u64_of(&s["total"]));
        let schedule = match s["kind"].as_str().unwrap() {
            "cosine" => Schedule::cosine_with_warmup(lr, warmup, total),
            "linear" => Schedule::linear_with_warmup(lr, warmup, total),
            kind => panic!("schedule {kind}"),
        };
        let state = |moment: &str| {
            let mut flat = Vec::new();
            for spec in &problem.specs {
                flat.extend(f32s(&v["state"][&spec.name][moment]));
            }
            flat
        };
        let step = v["state"][&problem.specs[0].name]["step"].as_f64().unwrap() as u64;
        Reference {
            config,
            schedule,
            max_norm: v["max_norm"].as_f64().map(|x| x as f32),
            lrs: exact_f64s(&v["lrs"]),
            clip_norms: f64s(&v["clip_norms"]),
            params: v["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| Problem::flat(&problem.specs, p))
                .collect(),
            exp_avg: state("exp_avg"),
            exp_avg_sq: state("exp_avg_sq"),
            step,
        }
    }
}

/// What our optimizer did on a problem: the learning rates, the clip norms, the parameters after
/// every step, and the optimizer at the end.
struct Run {
    lrs: Vec<f64>,
    clip_norms: Vec<f64>,
    params: Vec<Vec<f32>>,
    optimizer: AdamW,
}

/// Steps `optimizer` from `params` through the problem's steps `steps`, as a training loop would.
fn train(
    problem: &Problem,
    optimizer: &mut AdamW,
    params: &mut [f32],
    schedule: &Schedule,
    max_norm: Option<f32>,
    steps: std::ops::Range<usize>,
    run: &mut (Vec<f64>, Vec<f64>, Vec<Vec<f32>>),
) {
    for step in steps {
        assert_eq!(optimizer.step_count(), step as u64);
        let mut grads = problem.grads[step].clone();
        if let Some(max_norm) = max_norm {
            run.1.push(f64::from(clip_grad_norm(&mut grads, max_norm).finite().unwrap()));
        }
        let lr = schedule.lr(optimizer.step_count());
        run.0.push(lr);
        optimizer.step(params, &grads, lr).unwrap();
        run.2.push(params.to_vec());
    }
}

fn replay(problem: &Problem, config: AdamWConfig, schedule: &Schedule, max_norm: Option<f32>) -> Run {
    let mut optimizer = AdamW::new(config, &problem.specs).unwrap();
    let mut params = problem.initial.clone();
    let mut run = (Vec::new(), Vec::new(), Vec::new());
    train(problem, &mut optimizer, &mut params, schedule, max_norm, 0..problem.grads.len(), &mut run);
    Run { lrs: run.0, clip_norms: run.1, params: run.2, optimizer }
}

/// The largest `|ours - theirs| / max(|theirs|, floor)`.
fn max_rel_err(
    ours: impl IntoIterator<Item = f64>,
    theirs: impl IntoIterator<Item = f64>,
    floor: f64,
) -> f64 {
    ours.into_iter().zip(theirs).map(|(a, b)| (a - b).abs() / b.abs().max(floor)).fold(0.0, f64::max)
}

fn widen(values: &[f32]) -> impl Iterator<Item = f64> + '_ {
    values.iter().map(|&x| f64::from(x))
}

/// The error of `ours` against torch's `theirs` (flat buffers), one parameter tensor at a time:
/// the largest `|ours - theirs|` relative to the largest `|theirs|` of the tensor.
fn tensor_err(specs: &[ParamSpec], ours: &[f32], theirs: &[f32]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let mut start = 0;
    let mut worst = 0.0f64;
    for spec in specs {
        let range = start..start + spec.len;
        start = range.end;
        let scale = theirs[range.clone()].iter().fold(0.0f64, |max, &x| max.max(f64::from(x).abs()));
        let diff = max_rel_err(widen(&ours[range.clone()]), widen(&theirs[range]), 1.0);
        worst = worst.max(diff / scale);
    }
    worst
}

/// The largest errors of a run against torch: (the parameters after every step, the moments at
/// the end).
fn errors(problem: &Problem, run: &Run, reference: &Reference) -> (f64, f64) {
    assert_eq!(run.params.len(), reference.params.len());
    let specs = &problem.specs;
    let params = run
        .params
        .iter()
        .zip(&reference.params)
        .map(|(ours, theirs)| tensor_err(specs, ours, theirs))
        .fold(0.0, f64::max);
    let opt = &run.optimizer;
    let moments = tensor_err(specs, opt.exp_avg(), &reference.exp_avg).max(tensor_err(
        specs,
        opt.exp_avg_sq(),
        &reference.exp_avg_sq,
    ));
    (params, moments)
}

fn check_variant(name: &str) {
    let fx = fixture("adamw.json");
    let problem = Problem::load(&fx);
    let reference = Reference::load(&fx, &problem, name);
    let run = replay(&problem, reference.config.clone(), &reference.schedule, reference.max_norm);

    let lr_err = max_rel_err(run.lrs.iter().copied(), reference.lrs.iter().copied(), f64::MIN_POSITIVE);
    assert!(lr_err <= LR_TOL, "{name}: learning rates differ from torch's by {lr_err:e} relative");
    assert_eq!(run.clip_norms.len(), reference.clip_norms.len());
    let norm_err = max_rel_err(run.clip_norms.iter().copied(), reference.clip_norms.iter().copied(), FLOOR);
    assert!(norm_err <= TOL, "{name}: clip norms differ from torch's by {norm_err:e} relative");
    if reference.max_norm.is_some() {
        let clipped = run.clip_norms.iter().filter(|&&n| n > f64::from(reference.max_norm.unwrap())).count();
        assert!(clipped > 0 && clipped < run.clip_norms.len(), "{name}: some steps clip, some do not");
    }
    assert_eq!(run.optimizer.step_count(), reference.step);
    let (params, moments) = errors(&problem, &run, &reference);
    println!(
        "{name}: max rel err params {params:e}, moments {moments:e}, clip norms {norm_err:e}, lr {lr_err:e}"
    );
    assert!(params <= TOL, "{name}: parameters differ from torch's by {params:e} relative");
    assert!(moments <= TOL, "{name}: moments differ from torch's by {moments:e} relative");
}

// ------------------------------------------------------------------------------------------------
// Parity with torch
// ------------------------------------------------------------------------------------------------

#[test]
fn adamw_with_torch_defaults_and_cosine_schedule_matches_torch() {
    check_variant("default");
}

#[test]
fn adamw_with_grad_clipping_matches_torch() {
    check_variant("clipped");
}

#[test]
fn adamw_with_custom_hyperparameters_and_linear_schedule_matches_torch() {
    check_variant("custom");
}

/// The comparison can fail: decaying the no-decay group too, or skipping the clipping, puts the
/// parameters beyond the tolerance.
#[test]
fn a_wrong_optimizer_fails_the_comparison() {
    let fx = fixture("adamw.json");
    let problem = Problem::load(&fx);

    let reference = Reference::load(&fx, &problem, "default");
    let mut config = reference.config.clone();
    config.groups[AdamWConfig::NO_DECAY].weight_decay = config.groups[AdamWConfig::DECAY].weight_decay;
    let (params, _) = errors(&problem, &replay(&problem, config, &reference.schedule, None), &reference);
    println!("decaying the no-decay group: max rel err params {params:e}");
    assert!(params > 10.0 * TOL, "decaying the no-decay group went unnoticed ({params:e})");

    let reference = Reference::load(&fx, &problem, "clipped");
    let (params, moments) =
        errors(&problem, &replay(&problem, reference.config.clone(), &reference.schedule, None), &reference);
    println!("skipping the clipping: max rel err params {params:e}, moments {moments:e}");
    assert!(params > 10.0 * TOL && moments > 10.0 * TOL, "skipping the clipping went unnoticed ({params:e})");
}

/// The per-tensor entry points compute what the flat ones do, bit for bit.
#[test]
fn tensor_entry_points_equal_the_flat_ones() {
    let fx = fixture("adamw.json");
    let problem = Problem::load(&fx);
    let reference = Reference::load(&fx, &problem, "clipped");
    let flat = replay(&problem, reference.config.clone(), &reference.schedule, reference.max_norm);

    let mut optimizer = AdamW::new(reference.config.clone(), &problem.specs).unwrap();
    let mut params = problem.initial.clone();
    for step in 0..problem.grads.len() {
        let mut grads = problem.grads[step].clone();
        let norm = {
            let mut views = split_mut(&optimizer, &mut grads);
            clip_grad_norm_tensors(&mut views, reference.max_norm.unwrap()).finite().unwrap()
        };
        assert_eq!(f64::from(norm), flat.clip_norms[step]);
        let lr = reference.schedule.lr(optimizer.step_count());
        let grad_views: Vec<&[f32]> = (0..problem.specs.len()).map(|i| &grads[optimizer.range(i)]).collect();
        let mut param_views = split_mut(&optimizer, &mut params);
        optimizer.step_tensors(&mut param_views, &grad_views, lr).unwrap();
        assert_eq!(bits(&params), bits(&flat.params[step]), "step {step}");
    }
    assert_eq!(bits(optimizer.exp_avg()), bits(flat.optimizer.exp_avg()));
    assert_eq!(bits(optimizer.exp_avg_sq()), bits(flat.optimizer.exp_avg_sq()));
}

/// One mutable slice per registered parameter of a flat buffer.
fn split_mut<'a>(optimizer: &AdamW, mut flat: &'a mut [f32]) -> Vec<&'a mut [f32]> {
    let mut views = Vec::new();
    for spec in optimizer.params() {
        let (head, rest) = flat.split_at_mut(spec.len);
        views.push(head);
        flat = rest;
    }
    views
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

// ------------------------------------------------------------------------------------------------
// Clipping
// ------------------------------------------------------------------------------------------------

#[test]
fn gradients_within_the_max_norm_are_left_bit_identical() {
    let mut grads = vec![0.1, -0.2, 0.3, 0.0, 1e-8];
    let before = grads.clone();
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!(!norm.clipped);
    assert!((f64::from(norm.total) - 0.14f64.sqrt()).abs() < 1e-7);
    assert_eq!(bits(&grads), bits(&before));
}

#[test]
fn gradients_beyond_the_max_norm_are_scaled_to_it() {
    let mut grads = vec![3.0, 4.0];
    let norm = clip_grad_norm(&mut grads, 1.0);
    assert!(norm.clipped);
    assert_eq!(norm.finite().unwrap(), 5.0);
    let clipped = (grads[0] * grads[0] + grads[1] * grads[1]).sqrt();
    assert!((clipped - 1.0).abs() < 1e-6, "{clipped}");
}

#[test]
fn a_non_finite_grad_norm_is_reported_and_not_applied() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut grads = vec![0.5, bad, 2.0];
        let before = grads.clone();
        let norm = clip_grad_norm(&mut grads, 1.0);
        assert!(!norm.total.is_finite() && !norm.clipped);
        assert_eq!(bits(&grads), bits(&before), "gradients must be left as they were");
        let err = norm.finite().unwrap_err();
        assert!(matches!(err, OptimError::NonFiniteGradNorm { .. }), "{err}");
        assert!(err.to_string().contains("NaN or an infinity"), "{err}");
    }
    // Finite values whose squares overflow f32 do not make the norm infinite.
    let mut grads = vec![3e30f32, 4e30];
    assert_eq!(clip_grad_norm(&mut grads, 1.0).finite().unwrap(), 5e30);
}

// ------------------------------------------------------------------------------------------------
// Schedules against transformers
// ------------------------------------------------------------------------------------------------

#[test]
fn schedules_match_transformers() {
    let fx = fixture("schedules.json");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut worst = 0.0f64;
    for case in cases {
        let (base_lr, warmup, total) =
            (case["base_lr"].as_f64().unwrap(), u64_of(&case["warmup"]), u64_of(&case["total"]));
        let kind = case["kind"].as_str().unwrap();
        let schedule = match kind {
            "linear" => Schedule::linear_with_warmup(base_lr, warmup, total),
            "cosine" if case["num_cycles"].as_f64() == Some(0.5) => {
                Schedule::cosine_with_warmup(base_lr, warmup, total)
            }
            "cosine" => Schedule::cosine_with_warmup_cycles(
                base_lr,
                warmup,
                total,
                case["num_cycles"].as_f64().unwrap(),
            ),
            "constant" => Schedule::constant_with_warmup(base_lr, warmup),
            kind => panic!("schedule {kind}"),
        };
        for (step, &expected) in exact_f64s(&case["lrs"]).iter().enumerate() {
            let lr = schedule.lr(step as u64);
            let err = if expected == 0.0 { lr.abs() } else { (lr - expected).abs() / expected.abs() };
            assert!(err <= LR_TOL, "{kind} warmup {warmup} total {total} step {step}: {lr} != {expected}");
            worst = worst.max(err);
        }
    }
    println!("schedules: max rel err {worst:e}");
}

#[test]
fn the_first_warmup_step_runs_at_zero_and_the_warmup_ends_at_the_base_lr() {
    let schedule = Schedule::linear_with_warmup(1e-3, 4, 10);
    assert_eq!(schedule.lr(0), 0.0);
    assert_eq!(schedule.lr(2), 0.5e-3);
    assert_eq!(schedule.lr(4), 1e-3);
    assert_eq!(schedule.lr(10), 0.0);
    assert_eq!(schedule.lr(1000), 0.0);
    assert_eq!(Schedule::constant_with_warmup(1e-3, 0).lr(0), 1e-3);
}

// ------------------------------------------------------------------------------------------------
// Save and resume
// ------------------------------------------------------------------------------------------------

/// Training 20 steps straight and training 8, saving, resuming into a new optimizer and training
/// 12 more give the same bits.
#[test]
fn resuming_from_a_saved_state_is_bit_identical_to_not_stopping() {
    let fx = fixture("adamw.json");
    let problem = Problem::load(&fx);
    let reference = Reference::load(&fx, &problem, "custom");
    let straight = replay(&problem, reference.config.clone(), &reference.schedule, reference.max_norm);

    let mut optimizer = AdamW::new(reference.config.clone(), &problem.specs).unwrap();
    let mut params = problem.initial.clone();
    let mut run = (Vec::new(), Vec::new(), Vec::new());
    let (schedule, max_norm) = (&reference.schedule, reference.max_norm);
    train(&problem, &mut optimizer, &mut params, schedule, max_norm, 0..8, &mut run);
    let path = temp_path("resume.safetensors");
    optimizer.save(&path).unwrap();
    drop(optimizer);

    let mut resumed = AdamW::load(&path, &problem.specs).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(resumed.step_count(), 8);
    assert_eq!(resumed.config(), &reference.config);
    train(&problem, &mut resumed, &mut params, schedule, max_norm, 8..problem.grads.len(), &mut run);

    for (step, (ours, straight)) in run.2.iter().zip(&straight.params).enumerate() {
        assert_eq!(bits(ours), bits(straight), "parameters after step {step}");
    }
    assert_eq!(run.1, straight.clip_norms);
    assert_eq!(bits(resumed.exp_avg()), bits(straight.optimizer.exp_avg()));
    assert_eq!(bits(resumed.exp_avg_sq()), bits(straight.optimizer.exp_avg_sq()));
    assert_eq!(resumed.step_count(), straight.optimizer.step_count());
}

#[test]
fn a_saved_state_names_its_tensors_after_the_parameters() {
    let specs = [ParamSpec::decay("w", 3), ParamSpec::no_decay("b", 2)];
    let mut optimizer = AdamW::new(AdamWConfig::default(), &specs).unwrap();
    optimizer.step(&mut [1.0; 5], &[0.5; 5], 1e-3).unwrap();
    let bytes = optimizer.to_safetensors().unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort_unstable();
    assert_eq!(names, ["exp_avg.b", "exp_avg.w", "exp_avg_sq.b", "exp_avg_sq.w"]);
    assert_eq!(file.tensor("exp_avg.w").unwrap().shape(), [3]);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(header.metadata().as_ref().unwrap()["step"], "1");
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("transformer-train-optim-{}-{name}", std::process::id()))
}

// ------------------------------------------------------------------------------------------------
// Errors
// ------------------------------------------------------------------------------------------------

fn three_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::no_decay("norm.weight", 7),
        ParamSpec::decay("proj.weight", 15),
        ParamSpec::no_decay("head.bias", 11),
    ]
}

#[test]
fn a_flat_buffer_of_the_wrong_length_is_an_error_and_changes_nothing() {
    let mut optimizer = AdamW::new(AdamWConfig::default(), &three_params()).unwrap();
    let mut params = vec![1.0; 33];
    let err = optimizer.step(&mut params, &[0.1; 32], 1e-3).unwrap_err();
    assert!(matches!(err, OptimError::FlatLength { what: "gradient", expected: 33, found: 32 }), "{err}");
    let err = optimizer.step(&mut params[..30], &[0.1; 33], 1e-3).unwrap_err();
    assert!(matches!(err, OptimError::FlatLength { what: "parameter", expected: 33, found: 30 }), "{err}");
    assert_eq!(optimizer.step_count(), 0);
    assert!(params.iter().all(|&p| p == 1.0) && optimizer.exp_avg().iter().all(|&m| m == 0.0));
}

#[test]
fn a_gradient_of_the_wrong_length_is_an_error_naming_its_parameter() {
    let mut optimizer = AdamW::new(AdamWConfig::default(), &three_params()).unwrap();
    let (mut a, mut b, mut c) = (vec![1.0; 7], vec![1.0; 15], vec![1.0; 11]);
    let grads: [&[f32]; 3] = [&[0.1; 7], &[0.1; 14], &[0.1; 11]];
    let err = optimizer.step_tensors(&mut [&mut a, &mut b, &mut c], &grads, 1e-3).unwrap_err();
    let OptimError::ParamLength { what, name, expected, found } = &err else { panic!("{err}") };
    assert_eq!((*what, name.as_str(), *expected, *found), ("gradient", "proj.weight", 15, 14));
    assert_eq!(err.to_string(), "the gradient of parameter `proj.weight` has 14 values, expected 15");

    let err = optimizer.step_tensors(&mut [&mut a, &mut b], &grads, 1e-3).unwrap_err();
    assert!(matches!(err, OptimError::TensorCount { what: "parameter", expected: 3, found: 2 }), "{err}");
    assert_eq!(optimizer.step_count(), 0);
    assert!(a.iter().chain(&b).chain(&c).all(|&p| p == 1.0));
}

#[test]
fn bad_hyperparameters_and_registrations_are_errors() {
    let err = AdamW::new(AdamWConfig::default(), &[ParamSpec::new("x", 3, 2)]).unwrap_err();
    assert!(matches!(&err, OptimError::UnknownGroup { name, group: 2, groups: 2 } if name == "x"), "{err}");
    let err = AdamW::new(AdamWConfig::default(), &[ParamSpec::decay("x", 3), ParamSpec::no_decay("x", 1)])
        .unwrap_err();
    assert!(matches!(&err, OptimError::DuplicateParam { name } if name == "x"), "{err}");
    let config = AdamWConfig { betas: (0.9, 1.0), ..AdamWConfig::default() };
    let err = AdamW::new(config, &[]).unwrap_err();
    assert!(matches!(&err, OptimError::InvalidConfig { what, .. } if what == "beta2"), "{err}");
    let config = AdamWConfig { groups: vec![GroupConfig::with_weight_decay(-0.1)], ..AdamWConfig::default() };
    let err = AdamW::new(config, &[]).unwrap_err();
    assert!(err.to_string().contains("group 0's weight_decay is -0.1"), "{err}");
    let mut optimizer = AdamW::new(AdamWConfig::default(), &[ParamSpec::decay("x", 1)]).unwrap();
    let err = optimizer.step(&mut [1.0], &[1.0], f64::NAN).unwrap_err();
    assert!(matches!(err, OptimError::InvalidLr { .. }), "{err}");
}

/// An optimizer over `three_params()` after two steps, saved.
fn saved_state() -> Vec<u8> {
    let mut optimizer = AdamW::new(AdamWConfig::default(), &three_params()).unwrap();
    let mut params = vec![1.0; 33];
    let grads: Vec<f32> = (0..33).map(|i| i as f32 / 33.0 - 0.5).collect();
    for _ in 0..2 {
        optimizer.step(&mut params, &grads, 1e-3).unwrap();
    }
    optimizer.to_safetensors().unwrap()
}

#[test]
fn resuming_without_a_moment_of_a_registered_parameter_is_an_error() {
    let bytes = saved_state();
    // A parameter the state was not saved with.
    let mut specs = three_params();
    specs.push(ParamSpec::decay("extra.weight", 4));
    let err = AdamW::from_safetensors(&bytes, &specs).unwrap_err();
    assert!(matches!(&err, OptimError::MissingTensor { name } if name == "exp_avg.extra.weight"), "{err}");

    // A state file with one moment removed.
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let kept: Vec<_> =
        file.tensors().into_iter().filter(|(name, _)| name != "exp_avg_sq.head.bias").collect();
    let stripped = safetensors::serialize(kept, header.metadata().clone()).unwrap();
    let err = AdamW::from_safetensors(&stripped, &three_params()).unwrap_err();
    assert!(matches!(&err, OptimError::MissingTensor { name } if name == "exp_avg_sq.head.bias"), "{err}");
    assert!(err.to_string().contains("no tensor `exp_avg_sq.head.bias`"), "{err}");
}

#[test]
fn resuming_with_an_unknown_or_mismatched_tensor_is_an_error() {
    let bytes = saved_state();
    // A tensor no registered parameter explains.
    let err = AdamW::from_safetensors(&bytes, &three_params()[..2]).unwrap_err();
    assert!(matches!(&err, OptimError::UnexpectedTensor { name } if name == "exp_avg.head.bias"), "{err}");

    // A moment of another length than its parameter's.
    let mut specs = three_params();
    specs[1].len = 16;
    let err = AdamW::from_safetensors(&bytes, &specs).unwrap_err();
    let OptimError::TensorShape { name, shape, expected, .. } = &err else { panic!("{err}") };
    assert_eq!((name.as_str(), shape.as_slice(), *expected), ("exp_avg.proj.weight", &[15][..], 16));

    // A safetensors file without the optimizer's metadata.
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let bare = safetensors::serialize(file.tensors(), None).unwrap();
    let err = AdamW::from_safetensors(&bare, &three_params()).unwrap_err();
    assert!(matches!(err, OptimError::Metadata { key: "format", .. }), "{err}");

    // Not a state file at all.
    let err = AdamW::from_safetensors(b"not safetensors", &three_params()).unwrap_err();
    assert!(matches!(err, OptimError::Safetensors(_)), "{err}");
    let err = AdamW::load(Path::new("/nonexistent/optimizer.safetensors"), &three_params()).unwrap_err();
    assert!(matches!(err, OptimError::Io { .. }), "{err}");

    // The state round-trips with the right parameters.
    let resumed = AdamW::from_safetensors(&bytes, &three_params()).unwrap();
    assert_eq!(resumed.step_count(), 2);
    assert!(resumed.exp_avg().iter().all(|&m| m != 0.0));
    let again = AdamW::from_safetensors(&resumed.to_safetensors().unwrap(), &three_params()).unwrap();
    assert_eq!(bits(again.exp_avg()), bits(resumed.exp_avg()));
    assert_eq!(bits(again.exp_avg_sq()), bits(resumed.exp_avg_sq()));
}
