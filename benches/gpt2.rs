//! A GPT-2-small-shaped decoder (12 layers, 768 wide, 12 heads, vocabulary 50257; random weights):
//! prefill of 128 tokens, and greedy decoding of 128 new tokens after a 16-token prompt.
//! `scripts/bench-compare.sh` runs this and Hugging Face `generate` on the same shapes and inputs.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use transformer::{Batch, GenerateOptions, Threads, WeightLoader, Workspace};

#[path = "../tests/common/mod.rs"]
mod common;

transformer::model! {
    /// GPT-2 small's shape.
    pub struct Gpt2Small {
        vocab_size: 50257,
        max_positions: 1024,
        d_model: 768,
        heads: 12,
        layers: 12,
        d_ff: 3072,
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

/// The prompt ids the PyTorch script uses too.
fn ids(len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7 + 3) % 50257) as u32).collect()
}

fn bench(c: &mut Criterion) {
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let tensors = common::wanted_tensors(|l| {
        Gpt2Small::load(l);
    });
    let bytes = common::safetensors_bytes(&tensors, |name, i| common::pseudo_random(name, i) * 0.04);
    let mut loader = WeightLoader::from_bytes(bytes, "random gpt2-small").expect("valid file");
    let model = Gpt2Small::load(&mut loader).with_threads(Threads::new(threads).expect("thread pool"));
    loader.finish().expect("complete weights");

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
