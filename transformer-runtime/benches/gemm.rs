//! Our packed GEMM against `matrixmultiply` and the `gemm` crate on the linear-layer shapes of
//! all-MiniLM-L6-v2 (d = 384; 128, 512 and 32 × 128 = 4096 rows) and GPT-2 small (d = 768; 128
//! rows), on 1 and 2 threads, next to this machine's FMA peak measured the same way.
//!
//! Throughput is reported as elements = 2·m·k·n, so criterion's "elem/s" reads as FLOP/s; the
//! `fma_peak` group's elements are the flops of its FMA chains, so `gemm / fma_peak` is the
//! fraction of peak, measured within one run.
//!
//! Per shape (group `gemm_{m}x{k}x{n}`), ids `{engine}/t{threads}`:
//! * `ours`: `Linear::forward` without bias or activation, i.e. the row split (or, for few rows,
//!   the column split) the models run, over the packed kernel of the detected ISA;
//! * `ours_bias_gelu`: the same with bias + GELU fused in the epilogue (the FFN-up's work; the
//!   peers below compute the plain product only);
//! * `matrixmultiply`: `gemm::matmul` (`matrixmultiply::sgemm`); on 2 threads, rows split in two
//!   halves on a 2-thread pool, one `sgemm` each;
//! * `gemm_crate`: `gemm::gemm` (crates.io `gemm`, faer's kernels), `Parallelism::None` on the
//!   calling thread for 1, `Parallelism::Rayon(2)` inside a 2-thread pool for 2.
//!
//! Group `gemm_isa`: `matmul_packed` (one call, no thread split) per instruction set the CPU
//! supports, at m = 128; `GEMM_ISA=portable|avx2|avx512` restricts it to one.
//! Group `linear_m1`: one decode step's `Linear::forward` (memory bound: "B/s" of packed weights).
//!
//! Filter as usual: `cargo bench -p transformer-runtime --bench gemm -- 'gemm_128x|fma'`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;
use transformer_runtime::kernels::activation::Activation;
use transformer_runtime::kernels::gemm::{matmul, matmul_packed, Epilogue, GemmIsa, PackedB};
use transformer_runtime::layers::Linear;
use transformer_runtime::Threads;

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

/// The thread settings every engine is measured with: ours' `Threads` and a rayon pool of the same
/// size for the peers.
struct Pools {
    threads: usize,
    ours: Threads,
    peers: rayon::ThreadPool,
}

fn pools() -> Vec<Pools> {
    [1, 2]
        .into_iter()
        .map(|threads| Pools {
            threads,
            ours: Threads::new(threads).expect("thread pool"),
            peers: rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool"),
        })
        .collect()
}

/// `C = A·B` with the `gemm` crate, all row-major.
fn gemm_crate(a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize), threads: usize) {
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: dst is m×n with row stride n, lhs m×k with row stride k, rhs k×n with row stride n
    // (column stride 1 each), all inside their slices (checked above); `c` is a unique borrow, so
    // dst aliases neither input. `read_dst = false`: dst is overwritten with 1·A·B.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// One `(m, K → N)` shape: every engine on every thread count.
fn shape<const K: usize, const N: usize>(c: &mut Criterion, m: usize, pools: &[Pools]) {
    let mut group = c.benchmark_group(format!("gemm_{m}x{K}x{N}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_millis(if m * K * N > 1 << 30 { 2000 } else { 700 }));
    group.throughput(Throughput::Elements((2 * m * K * N) as u64));
    let a = values(m * K, 1);
    let b = values(K * N, 2);
    let bias = values(N, 3);
    let x: Vec<[f32; K]> = a.chunks_exact(K).map(|r| r.try_into().expect("K floats")).collect();
    let mut y = vec![[0.0f32; N]; m];
    let mut out = vec![0.0f32; m * N];
    let plain = Linear::<K, N>::from_parts(b.clone(), None);
    let fused = Linear::<K, N>::from_parts(b.clone(), Some(bias));
    for p in pools {
        let t = p.threads;
        group.bench_function(BenchmarkId::new("ours", format!("t{t}")), |bench| {
            bench.iter(|| {
                plain.forward(black_box(&x), &mut y, Activation::Identity, &p.ours);
                black_box(y[0][0]);
            })
        });
        group.bench_function(BenchmarkId::new("ours_bias_gelu", format!("t{t}")), |bench| {
            bench.iter(|| {
                fused.forward(black_box(&x), &mut y, Activation::GeluErf, &p.ours);
                black_box(y[0][0]);
            })
        });
        let rows = m.div_ceil(t);
        group.bench_function(BenchmarkId::new("matrixmultiply", format!("t{t}")), |bench| {
            bench.iter(|| {
                if t == 1 {
                    matmul(black_box(&a), &b, &mut out, m, K, N, false);
                } else {
                    p.peers.install(|| {
                        use rayon::prelude::*;
                        out.par_chunks_mut(rows * N).zip(a.par_chunks(rows * K)).for_each(|(c, a)| {
                            matmul(black_box(a), &b, c, a.len() / K, K, N, false);
                        });
                    });
                }
                black_box(out[0]);
            })
        });
        group.bench_function(BenchmarkId::new("gemm_crate", format!("t{t}")), |bench| {
            bench.iter(|| {
                if t == 1 {
                    gemm_crate(black_box(&a), &b, &mut out, (m, K, N), 1);
                } else {
                    p.peers.install(|| gemm_crate(black_box(&a), &b, &mut out, (m, K, N), t));
                }
                black_box(out[0]);
            })
        });
    }
    group.finish();
}

fn bench_shapes(c: &mut Criterion) {
    let pools = pools();
    for m in [128, 512, 4096] {
        // MiniLM: fused QKV, attention output, FFN up, FFN down.
        shape::<384, 1152>(c, m, &pools);
        shape::<384, 384>(c, m, &pools);
        shape::<384, 1536>(c, m, &pools);
        shape::<1536, 384>(c, m, &pools);
    }
    // GPT-2 small, one 128-token sequence.
    shape::<768, 2304>(c, 128, &pools);
    shape::<768, 768>(c, 128, &pools);
    shape::<768, 3072>(c, 128, &pools);
    shape::<3072, 768>(c, 128, &pools);
}

/// `matmul_packed` on each supported instruction set (one call, one thread), bias + GELU fused.
fn bench_isas(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_isa");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_millis(700));
    let m = 128;
    for (k, n) in [(384, 1152), (1536, 384), (768, 3072), (3072, 768)] {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let bias = values(n, 3);
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        for isa in isas() {
            let packed = PackedB::pack_for(isa, &b, k, n);
            let epilogue = Epilogue::new(Some(&bias), Activation::GeluErf);
            group.bench_function(BenchmarkId::new(format!("{isa:?}"), format!("{m}x{k}x{n}")), |bench| {
                bench.iter(|| {
                    matmul_packed(black_box(&a), m, &packed, &mut out, epilogue);
                    black_box(out[0]);
                })
            });
        }
    }
    group.finish();
}

/// Independent FMA chains per thread, as many as the registers allow without spilling: the
/// machine's fp32 peak, to divide the GEMM rates by.
fn bench_fma_peak(c: &mut Criterion) {
    let Some((isa, flops_per_iter, kernel)) = fma::kernel() else {
        return;
    };
    let mut group = c.benchmark_group("fma_peak");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(200));
    group.measurement_time(Duration::from_millis(700));
    const ITERS: u64 = 1 << 20;
    for p in pools() {
        let t = p.threads;
        group.throughput(Throughput::Elements(flops_per_iter * ITERS * t as u64));
        group.bench_function(BenchmarkId::new(isa, format!("t{t}")), |bench| {
            bench.iter(|| {
                let mut sums = [0.0f32; 2];
                if t == 1 {
                    sums[0] = kernel(ITERS, 0.0);
                } else {
                    p.peers.install(|| {
                        use rayon::prelude::*;
                        sums[..t].par_iter_mut().enumerate().for_each(|(i, s)| *s = kernel(ITERS, i as f32));
                    });
                }
                black_box(sums);
            })
        });
    }
    group.finish();
}

/// (ISA name, flops per iteration, `kernel(iterations, seed)`).
type FmaKernel = (&'static str, u64, fn(u64, f32) -> f32);

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// (ISA name, flops per iteration, kernel) for the widest FMA this CPU has.
    pub fn kernel() -> Option<super::FmaKernel> {
        if std::is_x86_feature_detected!("avx512f") {
            Some(("avx512f", 16 * 16 * 2, avx512))
        } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            Some(("avx2_fma", 12 * 8 * 2, avx2))
        } else {
            None
        }
    }

    fn avx512(iters: u64, seed: f32) -> f32 {
        // SAFETY: only returned by `kernel` when the CPU has AVX-512F.
        unsafe { avx512_chains(iters, seed) }
    }

    fn avx2(iters: u64, seed: f32) -> f32 {
        // SAFETY: only returned by `kernel` when the CPU has AVX2 and FMA.
        unsafe { avx2_chains(iters, seed) }
    }

    /// 16 chains of 16-lane FMAs.
    #[target_feature(enable = "avx512f")]
    fn avx512_chains(iters: u64, seed: f32) -> f32 {
        let mut acc: [__m512; 16] = std::array::from_fn(|i| _mm512_set1_ps(seed + i as f32));
        let (m, c) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, m, c);
            }
        }
        _mm512_reduce_add_ps(acc.into_iter().fold(_mm512_setzero_ps(), |s, a| _mm512_add_ps(s, a)))
    }

    /// 12 chains of 8-lane FMAs (16 spill on AVX2's 16 registers).
    #[target_feature(enable = "avx2,fma")]
    fn avx2_chains(iters: u64, seed: f32) -> f32 {
        let mut acc: [__m256; 12] = std::array::from_fn(|i| _mm256_set1_ps(seed + i as f32));
        let (m, c) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, m, c);
            }
        }
        let s = acc.into_iter().fold(_mm256_setzero_ps(), |s, a| _mm256_add_ps(s, a));
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` has 8 writable floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), s) };
        lanes.iter().sum()
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod fma {
    pub fn kernel() -> Option<super::FmaKernel> {
        None
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

criterion_group!(benches, bench_fma_peak, bench_shapes, bench_isas, bench_decode);
criterion_main!(benches);
