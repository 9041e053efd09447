//! Concurrency: a model is `Send + Sync`, and sharing one between threads changes nothing.
//!
//! - One loaded all-MiniLM-L6-v2 (the real weights, `bash scripts/fetch-model.sh`) is shared by 8
//!   threads, each making 20 `embed` / `forward` / `forward_into` calls on its own inputs; every
//!   result must equal, bit for bit, the result computed single-threaded beforehand. Then the same
//!   with the model's own 2-thread pool (`with_threads(Threads::new(2)?)`), whose results must be
//!   the same bits again (results do not depend on the thread count).
//! - The GPT-2 fixture `tests/fixtures/gpt2/tiny` runs `generate` (greedy and seeded sampling,
//!   batched and single prompts) and `stream` from 8 threads at once, sequential and with a 2-thread
//!   pool; every token list must equal the single-threaded one.
//!
//! Inputs are small (a few short sequences) so the whole file runs in seconds.

use std::sync::Barrier;

use transformer::{Batch, GenerateOptions, Sampling, Threads, Workspace};

#[path = "../examples/common/minilm.rs"]
mod minilm;

use minilm::MiniLm;

transformer::model! {
    /// `tests/fixtures/gpt2/tiny`: 2 layers, 64 wide, 4 heads, tied head.
    pub struct Gpt2Tiny {
        vocab_size: 512,
        max_positions: 128,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 256,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}

const THREADS: usize = 8;
const ITERATIONS: usize = 20;

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<MiniLm>();
    send_sync::<Gpt2Tiny>();
};

/// A deterministic generator (SplitMix64) for token ids and lengths.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Input `i` of thread `t`: 1–3 sequences of 2–14 tokens ([CLS] … [SEP]), with token types.
fn minilm_batch(t: usize, i: usize) -> Batch {
    let mut rng = Rng((t * 1000 + i) as u64);
    let sequences: Vec<Vec<u32>> = (0..1 + rng.below(3))
        .map(|_| {
            let len = rng.below(13);
            let mut s = vec![101];
            s.extend((0..len).map(|_| 1000 + rng.below(29_000) as u32));
            s.push(102);
            s
        })
        .collect();
    let types: Vec<Vec<u32>> = sequences
        .iter()
        .map(|s| s.iter().enumerate().map(|(p, _)| u32::from(p > s.len() / 2)).collect())
        .collect();
    Batch::from_sequences(&sequences).unwrap().with_token_types(&types).unwrap()
}

fn bits<const N: usize>(rows: &[[f32; N]]) -> Vec<u32> {
    rows.iter().flatten().map(|v| v.to_bits()).collect()
}

/// Embeddings and hidden states of one input, as bits.
#[derive(PartialEq, Debug)]
struct MiniLmResult {
    embed: Vec<u32>,
    forward: Vec<u32>,
}

fn run_minilm(model: &MiniLm, batch: &Batch, workspace: &mut Workspace, i: usize) -> MiniLmResult {
    let embed = bits(&model.embed(batch).unwrap());
    // Alternate the owned and the workspace forms (the model's pool vs. the caller's workspace).
    let forward = if i.is_multiple_of(2) {
        bits(&model.forward(batch).unwrap())
    } else {
        bits(model.forward_into(batch, workspace).unwrap())
    };
    MiniLmResult { embed, forward }
}

/// Every thread runs its inputs against `model` at once (started together by a barrier) and
/// compares with `expected[t][i]`; returns the number of calls made.
fn hammer_minilm(model: &MiniLm, inputs: &[Vec<Batch>], expected: &[Vec<MiniLmResult>]) -> usize {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (barrier, inputs, expected) = (&barrier, &inputs[t], &expected[t]);
            scope.spawn(move || {
                let mut workspace = Workspace::new();
                barrier.wait();
                for (i, (batch, want)) in inputs.iter().zip(expected).enumerate() {
                    let got = run_minilm(model, batch, &mut workspace, i + t);
                    assert!(
                        got == *want,
                        "thread {t}, input {i}: result differs from the single-threaded one"
                    );
                }
            });
        }
    });
    THREADS * ITERATIONS * 2
}

#[test]
fn one_minilm_shared_by_8_threads_gives_the_single_threaded_bits() {
    let started = std::time::Instant::now();
    let model = minilm::load();
    let inputs: Vec<Vec<Batch>> =
        (0..THREADS).map(|t| (0..ITERATIONS).map(|i| minilm_batch(t, i)).collect()).collect();
    let mut workspace = Workspace::new();
    let expected: Vec<Vec<MiniLmResult>> = inputs
        .iter()
        .enumerate()
        .map(|(t, batches)| {
            batches.iter().enumerate().map(|(i, b)| run_minilm(&model, b, &mut workspace, i + t)).collect()
        })
        .collect();
    let reference_time = started.elapsed();

    let calls = hammer_minilm(&model, &inputs, &expected);
    let pooled = model.with_threads(Threads::new(2).unwrap());
    let pooled_calls = hammer_minilm(&pooled, &inputs, &expected);
    eprintln!(
        "minilm: {} reference calls ({reference_time:.2?} incl. load), {calls} sequential-model + \
         {pooled_calls} pooled-model calls from {THREADS} threads, {:.2?} in all",
        THREADS * ITERATIONS * 2,
        started.elapsed()
    );
}

fn gpt2() -> Gpt2Tiny {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpt2/tiny/model.safetensors");
    Gpt2Tiny::from_safetensors(path).expect("fixture loads")
}

/// Job `j`: 1–3 prompts of 1–12 tokens and greedy or seeded-sampling options.
fn gpt2_job(j: usize) -> (Vec<Vec<u32>>, GenerateOptions) {
    let mut rng = Rng(0xfeed + j as u64);
    let prompts = (0..1 + rng.below(3))
        .map(|_| (0..1 + rng.below(12)).map(|_| rng.below(512) as u32).collect())
        .collect();
    let sampling = match j % 4 {
        0 => Sampling::Greedy,
        1 => Sampling::Sample { temperature: 0.8, top_k: None, top_p: None },
        2 => Sampling::Sample { temperature: 1.2, top_k: Some(40), top_p: None },
        _ => Sampling::Sample { temperature: 1.0, top_k: Some(100), top_p: Some(0.9) },
    };
    let options = GenerateOptions {
        max_new_tokens: 8 + rng.below(16),
        sampling,
        stop_tokens: if j.is_multiple_of(5) { vec![rng.below(512) as u32] } else { vec![] },
        seed: j as u64,
    };
    (prompts, options)
}

fn run_gpt2(model: &Gpt2Tiny, (prompts, options): &(Vec<Vec<u32>>, GenerateOptions)) -> Vec<Vec<u32>> {
    let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    model.generate(&refs, options).unwrap()
}

fn hammer_gpt2(model: &Gpt2Tiny, jobs: &[(Vec<Vec<u32>>, GenerateOptions)], expected: &[Vec<Vec<u32>>]) {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                // Each thread walks every job from its own offset, so different jobs run at once.
                for n in 0..jobs.len() {
                    let j = (n + t * 3) % jobs.len();
                    assert_eq!(run_gpt2(model, &jobs[j]), expected[j], "thread {t}, job {j}: tokens differ");
                    let (prompts, options) = &jobs[j];
                    if prompts.len() == 1 {
                        let streamed: Vec<u32> =
                            model.stream(&prompts[0], options).unwrap().collect::<Result<_, _>>().unwrap();
                        assert_eq!(streamed, expected[j][0], "thread {t}, job {j}: streamed tokens differ");
                    }
                }
            });
        }
    });
}

#[test]
fn one_gpt2_generating_from_8_threads_gives_the_single_threaded_tokens() {
    let started = std::time::Instant::now();
    let model = gpt2();
    let jobs: Vec<_> = (0..16).map(gpt2_job).collect();
    let expected: Vec<Vec<Vec<u32>>> = jobs.iter().map(|job| run_gpt2(&model, job)).collect();
    // Sampling with a seed is reproducible, and differs from greedy somewhere.
    assert_eq!(expected, jobs.iter().map(|job| run_gpt2(&model, job)).collect::<Vec<_>>());

    hammer_gpt2(&model, &jobs, &expected);
    let pooled = model.with_threads(Threads::new(2).unwrap());
    hammer_gpt2(&pooled, &jobs, &expected);
    eprintln!(
        "gpt2: {} generate jobs × {THREADS} threads × 2 models, {:.2?} in all",
        jobs.len(),
        started.elapsed()
    );
}
