//! A ViT-Base/16-shaped classifier (224², 12 layers, 768 wide, 12 heads, 1000 labels; random
//! weights) at batch 1 and 8. `scripts/bench-compare.sh` runs this and PyTorch on the same inputs.

use criterion::{criterion_group, criterion_main, Criterion};
use transformer::{Threads, Workspace};

#[path = "../tests/common/mod.rs"]
mod common;

transformer::model! {
    /// ViT-Base/16 at 224².
    pub struct VitBase {
        image_size: 224,
        patch_size: 16,
        channels: 3,
        d_model: 768,
        heads: 12,
        layers: 12,
        d_ff: 3072,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: pre,
        positions: learned,
        attention: bidirectional,
        pooling: cls,
        labels: 1000,
        weights: vit,
    }
}

/// The pixel values the PyTorch script uses too.
fn image() -> Box<VitBaseImage> {
    let mut image = Box::new([[[0.0f32; 224]; 224]; 3]);
    for (c, channel) in image.iter_mut().enumerate() {
        for (y, row) in channel.iter_mut().enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = ((c * 7 + y * 3 + x) % 255) as f32 / 127.5 - 1.0;
            }
        }
    }
    image
}

fn bench(c: &mut Criterion) {
    let threads: usize = std::env::var("THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(2);
    let model = common::with_random_weights(0.04, VitBase::load)
        .with_threads(Threads::new(threads).expect("thread pool"));
    let image = image();
    let mut group = c.benchmark_group("vit_base");
    group.sample_size(10);
    let mut ws = Workspace::new();
    for (label, n) in [("b1", 1), ("b8", 8)] {
        let images: Vec<&VitBaseImage> = vec![&*image; n];
        group.bench_function(label, |b| {
            b.iter(|| std::hint::black_box(model.classify_into(&images, &mut ws).unwrap()[0][0]))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
