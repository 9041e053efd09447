//! Packed GEMM with the fused bias + GELU epilogue vs `matrixmultiply` followed by a separate
//! `bias_activation` pass, single thread, at the linear-layer shapes of all-MiniLM-L6-v2.
//! Throughput is reported as elements = 2·m·k·n, i.e. criterion's "elem/s" reads as FLOP/s.
//!
//! `GEMM_ISA=portable|avx2|avx512` restricts the packed kernel to one instruction set (default: all
//! supported ones).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use transformer_runtime::kernels::activation::{bias_activation, Activation};
use transformer_runtime::kernels::gemm::{matmul, matmul_packed, Epilogue, GemmIsa, PackedB};
use transformer_runtime::layers::Linear;
use transformer_runtime::Threads;

/// (k, n) of the MiniLM linears: fused QKV, attention output, FFN up, FFN down.
const SHAPES: [(usize, usize); 4] = [(384, 1152), (384, 384), (384, 1536), (1536, 384)];
const ROWS: [usize; 2] = [128, 4096];

fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

fn isas() -> Vec<GemmIsa> {
    let wanted = std::env::var("GEMM_ISA").ok();
    GemmIsa::supported()
        .into_iter()
        .filter(|isa| {
            matches!(
                (wanted.as_deref(), isa),
                (None, _)
                    | (Some("portable"), GemmIsa::Portable)
                    | (Some("avx2"), GemmIsa::Avx2Fma)
                    | (Some("avx512"), GemmIsa::Avx512)
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let act = Activation::GeluErf;
    for m in ROWS {
        let mut group = c.benchmark_group(format!("gemm_m{m}"));
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(if m > 1000 { 3 } else { 1 }));
        for (k, n) in SHAPES {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            let mut out = vec![0.0f32; m * n];
            group.throughput(Throughput::Elements((2 * m * k * n) as u64));
            let label = format!("{k}x{n}");
            group.bench_function(BenchmarkId::new("matrixmultiply+bias_gelu", &label), |bench| {
                bench.iter(|| {
                    matmul(black_box(&a), &b, &mut out, m, k, n, false);
                    bias_activation(&mut out, &bias, act);
                    black_box(out[0]);
                })
            });
            for isa in isas() {
                let packed = PackedB::pack_for(isa, &b, k, n);
                let name = format!("packed_{isa:?}");
                group.bench_function(BenchmarkId::new(name, &label), |bench| {
                    bench.iter(|| {
                        matmul_packed(black_box(&a), m, &packed, &mut out, Epilogue::new(Some(&bias), act));
                        black_box(out[0]);
                    })
                });
            }
        }
        group.finish();
    }
}

/// One decode step's `Linear::forward` (m = 1 row, GPT-2-small widths) on 1 and 2 threads. Memory
/// bound: the throughput is the packed weight streamed per call, 4·k·n bytes ("B/s").
fn decode_linear<const IN: usize, const OUT: usize>(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_m1");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Bytes((4 * IN * OUT) as u64));
    let layer = Linear::<IN, OUT>::from_parts(values(IN * OUT, 2), Some(values(OUT, 3)));
    let row = values(IN, 1);
    let x: Vec<[f32; IN]> = vec![std::array::from_fn(|i| row[i])];
    let mut out = vec![[0.0f32; OUT]; 1];
    for threads in [1, 2] {
        let pool = Threads::new(threads).expect("thread pool");
        let label = format!("{IN}x{OUT}_t{threads}");
        group.bench_function(BenchmarkId::new("forward", &label), |bench| {
            bench.iter(|| {
                layer.forward(black_box(&x), &mut out, Activation::GeluTanh, &pool);
                black_box(out[0][0]);
            })
        });
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    decode_linear::<768, 2304>(c);
    decode_linear::<768, 3072>(c);
    decode_linear::<3072, 768>(c);
    decode_linear::<768, 50257>(c);
}

criterion_group!(benches, bench, bench_decode);
criterion_main!(benches);
