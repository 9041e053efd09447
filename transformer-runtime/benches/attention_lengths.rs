//! One attention layer call (4 heads × 64, batch 1, one thread) at sequence lengths 256..8192, for
//! each way of restricting the keys: full causal, causal sliding window (w = 256), full
//! bidirectional, centred window (w = 256, Longformer), the Sparse Transformer's strided and
//! fixed block layouts (causal, b = 64, ℓ = 8, fixed with c = 1), and Reformer's LSH attention
//! (causal, 2 hash rounds, chunks of 64 attending their own and the previous chunk, 2·S/64
//! buckets: HF's automatic choice). docs/ATTENTION_SCALING.md tabulates a run.
//!
//! Memory: before timing, each (kind, length) runs once under a counting allocator, which reports
//! the peak heap bytes of the buffers the call needs (the fused `[Q | K | V]` rows and the context
//! rows, allocated inside the counted region) plus anything the call itself allocates (nothing:
//! the kernel's scratch is a fixed ~19 KiB of stack), next to what one materialised `S×S` f32
//! score matrix per head would take. Printed as a Markdown table on stderr.
//!
//! `ATTENTION_LENGTHS=256,1024` restricts the lengths; `ATTENTION_KINDS=full_causal,fixed_b64_l8_c1`
//! the kinds. LSH's rotations are model weights, made before the counted region; its own heap
//! bytes are the per-call working memory `lsh_self_attention` allocates (sorted copies per round).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use transformer_runtime::kernels::attention::attention_isa;
use transformer_runtime::layers::lsh::{lsh_self_attention, LshShape};
use transformer_runtime::layers::{
    causal_self_attention_sparse, causal_self_attention_with, self_attention_with, AttentionShape, BlockSize,
    BlockSparse, SparsePattern,
};
use transformer_runtime::{Batch, Threads};

const HD: usize = 64;
const HEADS: usize = 4;
const LENGTHS: [usize; 6] = [256, 512, 1024, 2048, 4096, 8192];
const WINDOW: usize = 256;
const BLOCK: usize = 64;
const STRIDE: usize = 8;
const LSH_CHUNK: usize = 64;
const LSH_HASHES: usize = 2;

/// Counts live and peak heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are this allocator's; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: forwarded unchanged (the caller upholds `GlobalAlloc::alloc`'s contract).
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged: `ptr` came from `alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap bytes above the current level while `f` runs.
fn peak_bytes_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    FullCausal,
    CausalWindow,
    FullBidirectional,
    CentredWindow,
    Strided,
    Fixed,
    Lsh,
}

const KINDS: [Kind; 7] = [
    Kind::FullCausal,
    Kind::CausalWindow,
    Kind::FullBidirectional,
    Kind::CentredWindow,
    Kind::Strided,
    Kind::Fixed,
    Kind::Lsh,
];

/// Reformer's LSH geometry at length `s`: HF's automatic bucket count, one chunk before.
fn lsh_shape(s: usize) -> LshShape {
    LshShape {
        heads: HEADS,
        hashes: LSH_HASHES,
        buckets: (2 * s / LSH_CHUNK).max(2),
        chunk: LSH_CHUNK,
        chunks_before: 1,
        chunks_after: 0,
        causal: true,
    }
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::FullCausal => "full_causal",
            Kind::CausalWindow => "causal_window_256",
            Kind::FullBidirectional => "full_bidirectional",
            Kind::CentredWindow => "centred_window_256",
            Kind::Strided => "strided_b64_l8",
            Kind::Fixed => "fixed_b64_l8_c1",
            Kind::Lsh => "lsh_c64_h2",
        }
    }

    /// Floats per row of the projection the kind reads: `[Q | K | V]`, or LSH's `[QK | V]`.
    fn qkv_width(self) -> usize {
        let width = HEADS * HD;
        if self == Kind::Lsh {
            2 * width
        } else {
            3 * width
        }
    }

    fn layout(self) -> Option<BlockSparse> {
        let stride = NonZeroUsize::new(STRIDE).expect("positive stride");
        let pattern = match self {
            Kind::Strided => SparsePattern::Strided { stride },
            Kind::Fixed => SparsePattern::Fixed { stride, summary: 1 },
            _ => return None,
        };
        Some(BlockSparse::new(pattern, BlockSize::new(BLOCK).expect("64 is one key tile")))
    }

    fn shape(self) -> AttentionShape {
        let window = matches!(self, Kind::CausalWindow | Kind::CentredWindow).then_some(WINDOW);
        AttentionShape { heads: HEADS, kv_heads: HEADS, window }
    }

    /// One layer call: `ctx = attention(qkv)` over one sequence of `batch.seq_len()` tokens.
    fn run(self, qkv: &[f32], rotations: &[f32], batch: &Batch, ctx: &mut [f32], threads: &Threads) {
        let (shape, scale) = (self.shape(), 1.0 / (HD as f32).sqrt());
        match (self, self.layout()) {
            (Kind::Lsh, _) => {
                lsh_self_attention::<HD>(qkv, batch, lsh_shape(batch.seq_len()), rotations, ctx, threads)
            }
            (_, Some(layout)) => {
                causal_self_attention_sparse::<HD>(qkv, batch, shape, layout, None, scale, ctx, threads)
            }
            (Kind::FullBidirectional | Kind::CentredWindow, None) => {
                self_attention_with::<HD>(qkv, batch, shape, None, scale, ctx, threads)
            }
            (_, None) => causal_self_attention_with::<HD>(qkv, batch, shape, None, scale, ctx, threads),
        }
    }

    /// Average number of keys a query sees (no padding), from the masks' definitions.
    fn keys_per_query(self, s: usize) -> f64 {
        let half = WINDOW / 2;
        let total: usize = (0..s)
            .map(|p| match self {
                Kind::FullCausal => p + 1,
                Kind::CausalWindow => (p + 1).min(WINDOW),
                Kind::FullBidirectional => s,
                Kind::CentredWindow => (p + half).min(s - 1) + 1 - p.saturating_sub(half),
                Kind::Strided | Kind::Fixed => {
                    let layout = self.layout().expect("a block layout");
                    (0..=p / BLOCK)
                        .filter(|&j| layout.block_sees(p / BLOCK, j, true))
                        .map(|j| if j == p / BLOCK { p % BLOCK + 1 } else { BLOCK })
                        .sum()
                }
                // Slots scored per round: its own chunk and the one before (an upper bound on
                // distinct keys: rounds can repeat a key, causality drops later ones).
                Kind::Lsh => LSH_HASHES * 2 * LSH_CHUNK.min(s),
            })
            .sum();
        total as f64 / s as f64
    }
}

fn selected<T: Copy>(var: &str, all: &[T], name: impl Fn(T) -> String) -> Vec<T> {
    match std::env::var(var) {
        Ok(list) => all.iter().copied().filter(|&x| list.split(',').any(|n| n.trim() == name(x))).collect(),
        Err(_) => all.to_vec(),
    }
}

fn bench(c: &mut Criterion) {
    let lengths = selected("ATTENTION_LENGTHS", &LENGTHS, |s| s.to_string());
    let kinds = selected("ATTENTION_KINDS", &KINDS, |k| k.name().to_string());
    let threads = Threads::sequential();
    // The kernel's stack arrays: transposed key tile, score tile, scaled queries, accumulators,
    // compacted key indices (KEY_TILE = 64 keys, Q_BLOCK = 4 query rows).
    let stack_scratch = HD * 64 * 4 + 4 * 64 * 4 + 2 * 4 * HD * 4 + 64 * 8;
    eprintln!(
        "attention_lengths: {HEADS} heads × {HD}, batch 1, one thread, ISA {}; kernel stack scratch ≈ {} B",
        attention_isa(),
        stack_scratch
    );
    eprintln!("| kind | S | keys/query | heap bytes (qkv + ctx + call) | call's own heap bytes | S×S f32 scores, {HEADS} heads |");
    // One group per length, every kind in it: the kinds a ratio compares are timed minutes apart
    // at most, so a shared machine's load drifts less between them.
    for &s in &lengths {
        let mut group = c.benchmark_group(format!("attention_lengths/{s}"));
        // Flat sampling: 10 samples of equal iteration counts, so an 8192-token call (seconds)
        // runs ~10 times rather than linear sampling's 55.
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(200));
        group.measurement_time(Duration::from_millis(800));
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        eprintln!("S = {s}: load average {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
        let batch = Batch::uniform(1, s).expect("a non-empty batch");
        let width = HEADS * HD;
        let rotations = values(lsh_shape(s).rotations_len(HD), 2);
        for &kind in &kinds {
            // Memory: the buffers a layer call needs, allocated and used inside the counted region.
            let mut call_bytes = 0;
            let total = peak_bytes_of(|| {
                let qkv = values(s * kind.qkv_width(), 1);
                let mut ctx = vec![0.0f32; s * width];
                call_bytes = peak_bytes_of(|| kind.run(&qkv, &rotations, &batch, &mut ctx, &threads));
                black_box(&ctx);
            });
            eprintln!(
                "| {} | {s} | {:.1} | {total} | {call_bytes} | {} |",
                kind.name(),
                kind.keys_per_query(s),
                HEADS * s * s * 4
            );

            let qkv = values(s * kind.qkv_width(), 1);
            let mut ctx = vec![0.0f32; s * width];
            group.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
                b.iter(|| {
                    kind.run(black_box(&qkv), &rotations, &batch, &mut ctx, &threads);
                    black_box(ctx[0]);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
