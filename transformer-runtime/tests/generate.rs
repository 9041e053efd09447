//! Generation over a toy causal language model: the loop (batched prefill, one step per token,
//! stop tokens, limits, errors) and the sampler (greedy, temperature, top-k, top-p, seeds,
//! empirical frequencies).
//!
//! The toy model is honest about the cache: `step` writes every new token id into the `KvCache`
//! at `cache.lens()[b]..`, rebuilds each sequence's whole history from the cache, computes the
//! logits of its last token from that history, and advances the cache. Any mistake in how the
//! generator feeds tokens or positions therefore changes the logits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use transformer_runtime::generate::{generate, sample, stream};
use transformer_runtime::{Batch, CausalLm, Error, GenerateOptions, KvCache, Result, Sampling, Workspace};

/// Logits depend on the whole history (a hash of it), its last token and its length (position).
#[derive(Debug)]
struct Toy {
    vocab: usize,
    max_positions: usize,
    /// Calls to `step`, and the batch shape (sequences, padded length) of each.
    calls: AtomicUsize,
    shapes: Mutex<Vec<(usize, usize)>>,
}

impl Toy {
    fn new(vocab: usize, max_positions: usize) -> Self {
        Self { vocab, max_positions, calls: AtomicUsize::new(0), shapes: Mutex::new(Vec::new()) }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The logits after `history` (the reference the tests compute chains with).
    fn logits_for(&self, history: &[u32]) -> Vec<f32> {
        let mut h = 0xCBF2_9CE4_8422_2325u64;
        for &t in history {
            h = (h ^ u64::from(t)).wrapping_mul(0x0100_0000_01B3);
        }
        let last = u64::from(*history.last().unwrap());
        let pos = history.len() as u64 - 1;
        (0..self.vocab as u64)
            .map(|t| {
                let z = mix(h ^ mix(last * 1_000_003 + pos * 7919 + t));
                // Logits in [-4, 4), distinct enough that ties are rare.
                (z % 8000) as f32 / 1000.0 - 4.0
            })
            .collect()
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl CausalLm for Toy {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn max_positions(&self) -> usize {
        self.max_positions
    }

    fn new_cache(&self, batch: usize) -> KvCache {
        // One layer, one float per position: the token id.
        KvCache::new(1, batch, self.max_positions, 1)
    }

    fn step<'w>(
        &self,
        batch: &Batch,
        cache: &mut KvCache,
        workspace: &'w mut Workspace,
    ) -> Result<&'w [f32]> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.shapes.lock().unwrap().push((batch.batch_size(), batch.seq_len()));
        batch.validate(self.vocab, usize::MAX, None)?;
        assert_eq!(cache.batch_size(), batch.batch_size(), "one cache row per sequence");
        let new: Vec<usize> = (0..batch.batch_size()).map(|b| batch.len_of(b)).collect();
        for (b, &n) in new.iter().enumerate() {
            assert_eq!(batch.extent_of(b), n, "sequence {b} is not right-padded");
            let needed = cache.lens()[b] + n;
            if needed > self.max_positions {
                return Err(Error::ContextFull { sequence: b, needed, max: self.max_positions });
            }
        }
        let lens = cache.lens().to_vec();
        let seq = batch.seq_len();
        let mut histories = Vec::new();
        for (b, (keys, _)) in cache.layer_mut(0).enumerate() {
            for r in 0..new[b] {
                keys[lens[b] + r] = batch.ids()[b * seq + r] as f32;
            }
            histories.push(keys[..lens[b] + new[b]].iter().map(|&x| x as u32).collect::<Vec<_>>());
        }
        cache.advance(&new);
        let [logits] = workspace.carve([batch.batch_size() * self.vocab]);
        for (row, history) in logits.chunks_exact_mut(self.vocab).zip(&histories) {
            row.copy_from_slice(&self.logits_for(history));
        }
        Ok(logits)
    }
}

/// Lowest index of the maximum.
fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// The greedy continuation of `prompt` computed directly from the model's logits.
fn greedy_chain(model: &Toy, prompt: &[u32], max_new: usize, stops: &[u32]) -> Vec<u32> {
    let mut history = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..max_new {
        let t = argmax(&model.logits_for(&history));
        out.push(t);
        history.push(t);
        if stops.contains(&t) {
            break;
        }
    }
    out
}

fn greedy(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions { max_new_tokens, ..GenerateOptions::default() }
}

fn sampled(max_new_tokens: usize, temperature: f32, seed: u64) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: Sampling::Sample { temperature, top_k: None, top_p: None },
        stop_tokens: Vec::new(),
        seed,
    }
}

fn one(model: &Toy, prompt: &[u32], options: &GenerateOptions) -> Vec<u32> {
    generate(model, &[prompt], options).unwrap().pop().unwrap()
}

// ------------------------------------------------------------------------------------------------
// the generation loop
// ------------------------------------------------------------------------------------------------

#[test]
fn greedy_follows_the_argmax_chain() {
    let model = Toy::new(16, 64);
    let prompt = [3, 1, 4, 1, 5];
    let got = one(&model, &prompt, &greedy(12));
    assert_eq!(got, greedy_chain(&model, &prompt, 12, &[]));
    // One prefill of the whole prompt, then one single-token step per further token.
    assert_eq!(model.calls(), 12);
    let shapes = model.shapes.lock().unwrap().clone();
    assert_eq!(shapes[0], (1, 5));
    assert!(shapes[1..].iter().all(|&s| s == (1, 1)), "{shapes:?}");
}

#[test]
fn batched_generation_equals_each_prompt_alone() {
    let model = Toy::new(16, 64);
    let prompts: [&[u32]; 4] = [&[7], &[1, 2, 3, 4, 5], &[9, 9, 2], &[0, 15, 3, 8, 8, 1, 2]];
    let batched = generate(&model, &prompts, &greedy(10)).unwrap();
    // One batched prefill (padded to the longest prompt), then 9 steps of one token each.
    assert_eq!(model.calls(), 10);
    assert_eq!(model.shapes.lock().unwrap()[0], (4, 7));
    for (b, prompt) in prompts.iter().enumerate() {
        assert_eq!(batched[b], one(&model, prompt, &greedy(10)), "prompt {b}");
        assert_eq!(batched[b], greedy_chain(&model, prompt, 10, &[]), "prompt {b}");
    }
}

/// Sequence b samples from its own RNG stream, so its tokens depend only on its prompt, its index
/// and the options: the first prompt sampled in a batch equals it sampled alone, and replacing
/// another prompt (or letting it stop early) changes nothing.
#[test]
fn sampled_sequences_are_independent_of_each_other() {
    let model = Toy::new(16, 64);
    let options = sampled(12, 1.5, 99);
    let (a, b, c): (&[u32], &[u32], &[u32]) = (&[1, 2, 3], &[4], &[5, 6, 7, 8]);
    let ab = generate(&model, &[a, b], &options).unwrap();
    let ac = generate(&model, &[a, c], &options).unwrap();
    let cb = generate(&model, &[c, b], &options).unwrap();
    assert_eq!(ab[0], one(&model, a, &options));
    assert_eq!(ab[0], ac[0]);
    assert_eq!(ab[1], cb[1]);
    let stop_early = GenerateOptions { stop_tokens: vec![ac[1][0]], ..options.clone() };
    let early = generate(&model, &[a, c], &stop_early).unwrap();
    assert_eq!(early[1], vec![ac[1][0]]);
    let a_until_stop: Vec<u32> = match ab[0].iter().position(|&t| t == ac[1][0]) {
        Some(i) => ab[0][..=i].to_vec(),
        None => ab[0].clone(),
    };
    assert_eq!(early[0], a_until_stop);
}

/// Picks two prompts and a stop token that the first prompt's greedy chain reaches at index 2 and
/// the second's never does within `max_new` tokens.
fn stop_setup(model: &Toy, max_new: usize) -> (Vec<u32>, Vec<u32>, u32) {
    for seed in 0..200u32 {
        let a = vec![seed % 16, (seed / 16) % 16, 3];
        let b = vec![(seed * 7 + 1) % 16];
        let chain_a = greedy_chain(model, &a, max_new, &[]);
        let chain_b = greedy_chain(model, &b, max_new, &[]);
        let stop = chain_a[2];
        if !chain_a[..2].contains(&stop) && !chain_b.contains(&stop) {
            return (a, b, stop);
        }
    }
    panic!("no stop-token setup found");
}

#[test]
fn stop_token_ends_one_sequence_while_the_other_continues() {
    let model = Toy::new(16, 64);
    let (a, b, stop) = stop_setup(&model, 8);
    let options = GenerateOptions { stop_tokens: vec![stop], ..greedy(8) };
    let got = generate(&model, &[&a, &b], &options).unwrap();
    // The stop token is included, and nothing follows it.
    assert_eq!(got[0], greedy_chain(&model, &a, 8, &[stop]));
    assert_eq!(got[0].len(), 3);
    assert_eq!(*got[0].last().unwrap(), stop);
    assert_eq!(got[1], greedy_chain(&model, &b, 8, &[]));
    assert_eq!(got[1].len(), 8);
    assert_eq!(model.calls(), 8, "stepping continues for the unfinished sequence");
}

#[test]
fn generation_stops_as_soon_as_every_sequence_is_finished() {
    let model = Toy::new(16, 64);
    let (a, _, stop) = stop_setup(&model, 8);
    let options = GenerateOptions { stop_tokens: vec![stop], ..greedy(8) };
    assert_eq!(generate(&model, &[&a], &options).unwrap()[0].len(), 3);
    assert_eq!(model.calls(), 3, "prefill, then two steps");
    let streamed: Vec<u32> = stream(&model, &a, &options).unwrap().map(|t| t.unwrap()).collect();
    assert_eq!(streamed.len(), 3);
}

#[test]
fn max_new_tokens_is_respected() {
    for n in [1, 2, 7, 20] {
        let model = Toy::new(16, 64);
        let got = generate(&model, &[&[1u32, 2][..], &[3]], &sampled(n, 1.0, 5)).unwrap();
        assert!(got.iter().all(|g| g.len() == n), "n = {n}: {got:?}");
        assert_eq!(model.calls(), n);
    }
}

#[test]
fn context_overflow_is_reported_upfront() {
    let model = Toy::new(16, 16);
    let prompts: [&[u32]; 2] = [&[1, 2], &[1; 10]];
    match generate(&model, &prompts, &greedy(7)) {
        Err(Error::ContextFull { sequence: 1, needed: 17, max: 16 }) => {}
        other => panic!("expected ContextFull for sequence 1, got {other:?}"),
    }
    assert!(matches!(stream(&model, &[1; 10], &greedy(7)), Err(Error::ContextFull { sequence: 0, .. })));
    assert_eq!(model.calls(), 0, "nothing runs before the check");
    // Exactly full fits (the finished sequence's dummy steps stay inside the cache too).
    let got = generate(&model, &prompts, &greedy(6)).unwrap();
    assert_eq!(got[1].len(), 6);
}

#[test]
fn each_bad_option_is_named() {
    let model = Toy::new(16, 64);
    let sample = |temperature, top_k, top_p| GenerateOptions {
        sampling: Sampling::Sample { temperature, top_k, top_p },
        ..greedy(4)
    };
    let cases = [
        (greedy(0), "max_new_tokens"),
        (sample(0.0, None, None), "temperature"),
        (sample(-1.0, None, None), "temperature"),
        (sample(f32::NAN, None, None), "temperature"),
        (sample(f32::INFINITY, None, None), "temperature"),
        (sample(1.0, Some(0), None), "top_k"),
        (sample(1.0, None, Some(0.0)), "top_p"),
        (sample(1.0, None, Some(-0.5)), "top_p"),
        (sample(1.0, None, Some(1.5)), "top_p"),
        (sample(1.0, Some(3), Some(f32::NAN)), "top_p"),
    ];
    for (options, name) in cases {
        match generate(&model, &[&[1u32][..]], &options) {
            Err(e @ Error::BadGenerateOption { option, .. }) => {
                assert_eq!(option, name, "{options:?}");
                assert!(e.to_string().contains(name), "{e}");
            }
            other => panic!("{options:?}: expected BadGenerateOption({name}), got {other:?}"),
        }
        assert!(
            matches!(stream(&model, &[1], &options), Err(Error::BadGenerateOption { option, .. }) if option == name)
        );
    }
    // The boundaries themselves are fine.
    for options in [sample(1e-3, Some(1), Some(1.0)), sample(100.0, Some(1000), Some(1e-9))] {
        generate(&model, &[&[1u32][..]], &options).unwrap();
    }
    assert!(matches!(generate(&model, &[], &greedy(2)), Err(Error::EmptyBatch)));
    assert!(matches!(
        generate(&model, &[&[1u32][..], &[]], &greedy(2)),
        Err(Error::EmptySequence { sequence: 1 })
    ));
}

#[test]
fn model_errors_are_returned() {
    let model = Toy::new(16, 64);
    assert!(matches!(generate(&model, &[&[1u32, 99][..]], &greedy(3)), Err(Error::TokenOutOfRange { .. })));
    let mut s = stream(&model, &[99], &greedy(3)).unwrap();
    assert!(matches!(s.next(), Some(Err(Error::TokenOutOfRange { .. }))));
    assert!(s.next().is_none(), "a stream ends after its error");
}

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let model = Toy::new(16, 64);
    let prompts: [&[u32]; 2] = [&[1, 2, 3], &[4]];
    let run = |seed| generate(&model, &prompts, &sampled(20, 2.0, seed)).unwrap();
    assert_eq!(run(7), run(7));
    // 40 draws from a temperature-2 distribution over 16 tokens: identical outputs for two seeds
    // would be a (far below 1e-10) coincidence.
    assert_ne!(run(7), run(8));
    assert_ne!(run(7)[0], run(7)[1][..]);
}

#[test]
fn top_k_1_and_tiny_top_p_equal_greedy() {
    let model = Toy::new(16, 64);
    let prompts: [&[u32]; 3] = [&[1, 2, 3], &[4], &[9, 8]];
    let want = generate(&model, &prompts, &greedy(15)).unwrap();
    for (top_k, top_p) in [(Some(1), None), (None, Some(1e-6)), (Some(5), Some(1e-6))] {
        for seed in [0, 1, 2] {
            let options = GenerateOptions {
                sampling: Sampling::Sample { temperature: 3.0, top_k, top_p },
                seed,
                ..greedy(15)
            };
            assert_eq!(generate(&model, &prompts, &options).unwrap(), want, "{top_k:?} {top_p:?}");
        }
    }
}

#[test]
fn streaming_yields_the_same_tokens_as_generate() {
    let model = Toy::new(16, 64);
    let (a, _, stop) = stop_setup(&model, 10);
    let options = [
        greedy(10),
        sampled(10, 1.0, 3),
        GenerateOptions { stop_tokens: vec![stop], ..greedy(10) },
        GenerateOptions {
            sampling: Sampling::Sample { temperature: 0.8, top_k: Some(4), top_p: Some(0.9) },
            ..sampled(10, 1.0, 11)
        },
    ];
    for options in options {
        let want = one(&model, &a, &options);
        let calls = model.calls();
        let mut s = stream(&model, &a, &options).unwrap();
        assert_eq!(model.calls(), calls, "the prefill waits for the first `next`");
        let first = s.next().unwrap().unwrap();
        assert_eq!(model.calls(), calls + 1, "one step per yielded token");
        let rest: Vec<u32> = s.map(|t| t.unwrap()).collect();
        assert_eq!([vec![first], rest].concat(), want, "{options:?}");
    }
}

// ------------------------------------------------------------------------------------------------
// the sampler
// ------------------------------------------------------------------------------------------------

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[test]
fn greedy_ties_go_to_the_lowest_id_and_nan_is_minus_infinity() {
    let mut r = rng(0);
    assert_eq!(sample(&[1.0, 3.0, 3.0, 2.0], &Sampling::Greedy, &mut r), 1);
    assert_eq!(sample(&[f32::NAN, -1.0, f32::NAN, -0.5], &Sampling::Greedy, &mut r), 3);
    assert_eq!(sample(&[f32::NAN, f32::NAN], &Sampling::Greedy, &mut r), 0);
    assert_eq!(sample(&[f32::NEG_INFINITY, f32::INFINITY, f32::INFINITY], &Sampling::Greedy, &mut r), 1);
}

#[test]
fn sampling_never_draws_nan_or_minus_infinity() {
    let mut r = rng(1);
    let logits = [f32::NAN, 0.0, f32::NEG_INFINITY, 0.0, f32::NAN];
    for top_p in [None, Some(0.99)] {
        let s = Sampling::Sample { temperature: 1.0, top_k: None, top_p };
        for _ in 0..500 {
            let t = sample(&logits, &s, &mut r);
            assert!(t == 1 || t == 3, "drew {t}");
        }
    }
    // `sample` itself does not validate; out-of-range options still give a token in range.
    for (temperature, top_k, top_p) in
        [(0.0, Some(0), Some(-1.0)), (f32::NAN, None, Some(f32::NAN)), (-2.0, Some(0), None)]
    {
        let s = Sampling::Sample { temperature, top_k, top_p };
        assert!((sample(&[0.5, 1.0, f32::NAN], &s, &mut r) as usize) < 3);
    }
    // A temperature so small that the scaled logits overflow is the greedy choice.
    let s = Sampling::Sample { temperature: 1e-38, top_k: None, top_p: None };
    assert_eq!(sample(&[1.0, 5.0, 4.0], &s, &mut r), 1);
}

/// Deterministic pseudo-random logits in [-3, 3).
fn random_logits(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64).map(|i| (mix(seed * 1_000 + i) % 6000) as f32 / 1000.0 - 3.0).collect()
}

#[test]
fn top_k_never_samples_outside_the_top_k() {
    let mut r = rng(2);
    for (case, k) in [(0u64, 1usize), (1, 3), (2, 7)] {
        let logits = random_logits(case, 50);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let top: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
        let s = Sampling::Sample { temperature: 5.0, top_k: Some(k), top_p: None };
        let mut seen = vec![false; logits.len()];
        for _ in 0..5_000 {
            let t = sample(&logits, &s, &mut r);
            assert!(top.contains(&t), "top_k = {k} drew {t}, outside {top:?}");
            seen[t as usize] = true;
        }
        // At temperature 5 every one of the top k has probability ≥ 1/k · e^-1.2: all appear.
        assert!(top.iter().all(|&t| seen[t as usize]), "top_k = {k}: not every top token drawn");
    }
}

#[test]
fn tiny_top_p_is_greedy() {
    let mut r = rng(3);
    for case in 0..50 {
        let logits = random_logits(100 + case, 40);
        let s = Sampling::Sample { temperature: 1.0, top_k: None, top_p: Some(1e-7) };
        assert_eq!(sample(&logits, &s, &mut r), sample(&logits, &Sampling::Greedy, &mut r));
    }
}

/// The distribution the sampler should draw from, in f64: softmax(logits / T) restricted to the
/// top k, then to the smallest descending prefix reaching top_p, renormalised.
fn reference_distribution(logits: &[f32], t: f64, top_k: Option<usize>, top_p: Option<f64>) -> Vec<f64> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order.truncate(top_k.unwrap_or(logits.len()));
    let max = f64::from(logits[order[0]]) / t;
    let w: Vec<f64> = order.iter().map(|&i| (f64::from(logits[i]) / t - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut kept = order.len();
    if let Some(p) = top_p {
        let mut cum = 0.0;
        for (i, x) in w.iter().enumerate() {
            cum += x / total;
            if cum >= p {
                kept = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = w[..kept].iter().sum();
    let mut probs = vec![0.0; logits.len()];
    for (j, &i) in order[..kept].iter().enumerate() {
        probs[i] = w[j] / kept_total;
    }
    probs
}

/// Empirical frequencies over 20,000 draws match the reference probabilities: each within
/// 5 standard deviations (sqrt(p(1−p)/N) ≤ 0.0036) plus 1/N, and a token outside the support is
/// never drawn. A wrong temperature, filter or off-by-one in the cumulative draw moves some
/// frequency by far more (e.g. T = 1 vs 0.5 shifts the top probability here by > 0.1).
#[test]
fn empirical_frequencies_match_the_distribution() {
    const N: usize = 20_000;
    let logits = [1.0f32, 2.0, 0.5, -1.0, 2.2, 0.0, 1.7, -3.0];
    let cases: [(f32, Option<usize>, Option<f32>); 5] = [
        (1.0, None, None),
        (0.5, None, None),
        (2.0, Some(4), None),
        (1.0, None, Some(0.8)),
        (0.7, Some(5), Some(0.9)),
    ];
    for (case, (t, top_k, top_p)) in cases.into_iter().enumerate() {
        let want = reference_distribution(&logits, f64::from(t), top_k, top_p.map(f64::from));
        let s = Sampling::Sample { temperature: t, top_k, top_p };
        let mut r = rng(1000 + case as u64);
        let mut counts = [0usize; 8];
        for _ in 0..N {
            counts[sample(&logits, &s, &mut r) as usize] += 1;
        }
        for (i, (&c, &p)) in counts.iter().zip(&want).enumerate() {
            let f = c as f64 / N as f64;
            if p == 0.0 {
                assert_eq!(c, 0, "case {case}: token {i} is outside the support but was drawn {c} times");
            }
            let tol = 5.0 * (p * (1.0 - p) / N as f64).sqrt() + 1.0 / N as f64;
            assert!((f - p).abs() <= tol, "case {case} token {i}: frequency {f}, probability {p}, tol {tol}");
        }
    }
}
