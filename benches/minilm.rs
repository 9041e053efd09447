//! all-MiniLM-L6-v2 forward (real weights) at batch 1 × 128 and 32 × 128 tokens.
//! `scripts/bench-compare.sh` runs this and PyTorch on the same inputs and prints the ratios.

use criterion::{criterion_group, criterion_main, Criterion};
use transformer::{Batch, Threads, Workspace};

#[path = "../examples/common/minilm.rs"]
mod minilm;

/// The token ids the PyTorch script uses too: [CLS], a deterministic spread of ids, [SEP].
fn inputs(batch: usize, seq: usize) -> Batch {
    let sequences: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..seq)
                .map(|i| match i {
                    0 => 101,
                    i if i == seq - 1 => 102,
                    i => 1000 + ((i * 7 + b * 13) % 20000) as u32,
                })
                .collect()
        })
        .collect();
    Batch::from_sequences(&sequences).expect("valid batch")
}

fn bench(c: &mut Criterion) {
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let model = minilm::load().with_threads(Threads::new(threads).expect("thread pool"));
    let mut group = c.benchmark_group("minilm_forward");
    group.sample_size(10);
    for (label, batch) in [("1x128", 1), ("32x128", 32)] {
        let input = inputs(batch, 128);
        let mut ws = Workspace::new();
        group.bench_function(label, |b| {
            b.iter(|| {
                let pooled = model.embed_into(&input, &mut ws).expect("forward");
                std::hint::black_box(pooled[0][0]);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
