//! A GPT-2-small-shaped decoder (12 layers, 768 wide, 12 heads, vocabulary 50257; random weights):
//! prefill of 128 tokens, and greedy decoding of 128 new tokens after a 16-token prompt.
//! `scripts/bench-compare.sh` runs this and Hugging Face `generate` on the same shapes and inputs.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use transformer::{Batch, GenerateOptions, Threads, Workspace};

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "../examples/common/gpt2_small.rs"]
mod gpt2_small;
use gpt2_small::Gpt2Small;

/// The prompt ids the PyTorch script uses too.
fn ids(len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7 + 3) % 50257) as u32).collect()
}

fn bench(c: &mut Criterion) {
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let model = common::with_random_weights(0.04, Gpt2Small::load)
        .with_threads(Threads::new(threads).expect("thread pool"));

    let mut group = c.benchmark_group("gpt2_small");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    let prefill = Batch::from_sequences(&[ids(128)]).unwrap();
    let (mut ws, mut cache) = (Workspace::new(), model.new_cache(1));
    group.bench_function("prefill_128", |b| {
        b.iter(|| {
            cache.reset();
            std::hint::black_box(model.step_into(&prefill, &mut cache, &mut ws).unwrap()[0][0]);
        })
    });
    let options = GenerateOptions { max_new_tokens: 128, ..GenerateOptions::default() };
    let prompt = ids(16);
    group.bench_function("decode_16_plus_128", |b| {
        b.iter(|| std::hint::black_box(model.generate(&[&prompt], &options).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
