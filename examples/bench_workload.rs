//! One benchmark workload of ours (or a machine microbenchmark) in this process, as one JSON line.
//!
//! Driven by `scripts/harness/run.py` (see `docs/BENCHMARKS.md`), which starts one process per
//! (engine, workload, threads, round) so that peak RSS is per workload, and alternates our engine
//! with the peers round by round. Built once with `cargo build --release --example bench_workload`.
//!
//! ```text
//! bench_workload --workload NAME --threads N [--warmup W] [--runs R]
//! ```
//!
//! Workloads (inputs identical to `scripts/harness/peer.py`):
//! - `minilm_1x128`, `minilm_32x128`, `minilm_1x512`: all-MiniLM-L6-v2 (real weights) sentence
//!   embeddings (transformer + mean pooling + L2 normalisation), tokenisation excluded;
//! - `gpt2_prefill128`: GPT-2-small shape (random weights), one cached step over 128 tokens
//!   (logits of the last token only);
//! - `gpt2_decode128`: greedy generation of 128 new tokens after a 16-token prompt;
//! - `long_1024`, `long_2048`, `long_4096`: a MiniLM-shaped encoder declared with
//!   `max_positions: 4096` (random weights), token-level hidden states of one sequence;
//! - `t5_encode128`: t5-small shape (random weights), `encode` of one 128-token source (the
//!   encoder's output plus every decoder layer's cross-attention keys and values of it);
//! - `t5_decode32`: `generate` (encode the 128-token source, then 32 greedy tokens from
//!   `DECODER_START`); reports `total_ms` and `per_token_ms` = total / 32, and `encode_ms`;
//! - `fma_peak`: fp32 FMA throughput, `threads` OS threads each running independent FMA chains
//!   at the widest vector width the CPU has (AVX-512, else AVX2+FMA), best of `runs` trials;
//! - `bandwidth`: read bandwidth (AVX sum over a 1 GiB buffer split across `threads` threads) and
//!   copy bandwidth (256 MiB → 256 MiB), best of `runs` trials.
//!
//! Output: `{"workload", "engine":"ours", "threads", "warmup", "times_ms":[...], "median_ms",
//! "rss_mb" (peak RSS of the process, VmHWM), "rss_base_mb" (VmRSS after loading, before the first
//! call), "rss_run_peak_mb" (VmHWM reset after loading, read at the end: the peak while running),
//! "out_head" (first outputs, for a parity glance), ...}`; the harness adds GFLOP/s.

use std::time::Instant;

use transformer::{Batch, GenerateOptions, Threads, Workspace};

#[path = "common/minilm.rs"]
mod minilm;

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "common/gpt2_small.rs"]
mod gpt2_small;
use gpt2_small::Gpt2Small;

#[path = "common/t5_small.rs"]
mod t5_small;
use t5_small::T5Small;

transformer::model! {
    /// MiniLM's dims with a 4096-row position table: the long-sequence encoder workload.
    pub struct MiniLmLong {
        vocab_size: 30522,
        max_positions: 4096,
        type_vocab_size: 2,
        d_model: 384,
        heads: 12,
        layers: 6,
        d_ff: 1536,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

struct Args {
    workload: String,
    threads: usize,
    warmup: usize,
    runs: usize,
}

fn parse_args() -> Args {
    let mut args = Args { workload: String::new(), threads: 1, warmup: 1, runs: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| die(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--workload" => args.workload = value(),
            "--threads" => args.threads = value().parse().unwrap_or_else(|_| die("bad --threads")),
            "--warmup" => args.warmup = value().parse().unwrap_or_else(|_| die("bad --warmup")),
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| die("bad --runs")),
            "-h" | "--help" => {
                println!("bench_workload --workload NAME --threads N [--warmup W] [--runs R]");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    if args.workload.is_empty() {
        die("--workload is required");
    }
    args.runs = args.runs.max(1);
    args
}

fn die(msg: &str) -> ! {
    eprintln!("bench_workload: {msg}");
    std::process::exit(2)
}

/// A field of /proc/self/status in MiB (VmHWM: peak resident set; VmRSS: current).
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kb: f64 = rest.trim().trim_end_matches("kB").trim().parse().unwrap_or(f64::NAN);
            return kb / 1024.0;
        }
    }
    f64::NAN
}

/// After loading: returns (VmHWM so far, VmRSS now) and resets VmHWM to the current RSS (Linux
/// `clear_refs` 5), so VmHWM at the end is the peak while running the workload alone.
fn reset_hwm() -> (f64, f64) {
    let peak = status_mb("VmHWM");
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    (peak, status_mb("VmRSS"))
}

fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<&str> = s.split_whitespace().take(3).collect();
    format!("[{}]", v.join(","))
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn json_list(xs: &[f64]) -> String {
    let items: Vec<String> = xs.iter().map(|x| format!("{x:.4}")).collect();
    format!("[{}]", items.join(","))
}

/// Times `warmup + runs` calls of `f`; returns the timed ones in ms.
fn time_runs(warmup: usize, runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    let mut times = Vec::with_capacity(runs);
    for k in 0..warmup + runs {
        let t0 = Instant::now();
        f();
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if k >= warmup {
            times.push(ms);
        }
    }
    times
}

/// The MiniLM bench ids (also `benches/minilm.rs` and the Python peers): [CLS], a deterministic
/// spread of ids, [SEP]; no padding.
fn minilm_ids(batch: usize, seq: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            (0..seq)
                .map(|i| match i {
                    0 => 101,
                    i if i == seq - 1 => 102,
                    i => 1000 + ((i * 7 + b * 13) % 20000) as u32,
                })
                .collect()
        })
        .collect()
}

/// GPT-2 bench ids (also `benches/gpt2.rs` and the Python peers).
fn gpt2_ids(len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7 + 3) % 50257) as u32).collect()
}

/// T5 bench source ids (also the Python peer): GPT-2's spread, within t5-small's vocabulary.
fn t5_ids(len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7 + 3) % 32128) as u32).collect()
}

struct Measured {
    times_ms: Vec<f64>,
    load_peak_mb: f64,
    rss_base_mb: f64,
    out_head: Vec<f64>,
    extra: String,
}

fn run_minilm(a: &Args, batch: usize, seq: usize) -> Measured {
    let model = minilm::load().with_threads(Threads::new(a.threads).expect("thread pool"));
    let input = Batch::from_sequences(&minilm_ids(batch, seq)).expect("valid batch");
    let mut ws = Workspace::new();
    let (load_peak_mb, rss_base_mb) = reset_hwm();
    let times_ms = time_runs(a.warmup, a.runs, || {
        let pooled = model.embed_into(&input, &mut ws).expect("forward");
        std::hint::black_box(pooled[0][0]);
    });
    let pooled = model.embed_into(&input, &mut ws).expect("forward");
    let out_head = pooled[0][..8].iter().map(|&v| v as f64).collect();
    Measured { times_ms, load_peak_mb, rss_base_mb, out_head, extra: String::new() }
}

fn run_long(a: &Args, seq: usize) -> Measured {
    let model = common::with_random_weights(0.04, MiniLmLong::load)
        .with_threads(Threads::new(a.threads).expect("thread pool"));
    let input = Batch::from_sequences(&minilm_ids(1, seq)).expect("valid batch");
    let mut ws = Workspace::new();
    let (load_peak_mb, rss_base_mb) = reset_hwm();
    let times_ms = time_runs(a.warmup, a.runs, || {
        let hidden = model.forward_into(&input, &mut ws).expect("forward");
        std::hint::black_box(hidden[0][0]);
    });
    let hidden = model.forward_into(&input, &mut ws).expect("forward");
    let out_head = hidden[0][..4].iter().map(|&v| v as f64).collect();
    Measured { times_ms, load_peak_mb, rss_base_mb, out_head, extra: String::new() }
}

fn gpt2_model(threads: usize) -> Gpt2Small {
    common::with_random_weights(0.04, Gpt2Small::load)
        .with_threads(Threads::new(threads).expect("thread pool"))
}

fn run_prefill(a: &Args) -> Measured {
    let model = gpt2_model(a.threads);
    let prefill = Batch::from_sequences(&[gpt2_ids(128)]).unwrap();
    let (mut ws, mut cache) = (Workspace::new(), model.new_cache(1));
    let (load_peak_mb, rss_base_mb) = reset_hwm();
    let times_ms = time_runs(a.warmup, a.runs, || {
        cache.reset();
        std::hint::black_box(model.step_into(&prefill, &mut cache, &mut ws).unwrap()[0][0]);
    });
    cache.reset();
    let out_head =
        model.step_into(&prefill, &mut cache, &mut ws).unwrap()[0][..4].iter().map(|&v| v as f64).collect();
    Measured { times_ms, load_peak_mb, rss_base_mb, out_head, extra: String::new() }
}

fn run_decode(a: &Args) -> Measured {
    let model = gpt2_model(a.threads);
    let options = GenerateOptions { max_new_tokens: 128, ..GenerateOptions::default() };
    let prompt = gpt2_ids(16);
    let (load_peak_mb, rss_base_mb) = reset_hwm();
    let mut produced = 0;
    let times_ms = time_runs(a.warmup, a.runs, || {
        let out = model.generate(&[&prompt], &options).unwrap();
        produced = out[0].len();
        std::hint::black_box(out);
    });
    assert_eq!(produced, 128, "generation stopped early");
    let extra = format!(",\"new_tokens\":128,\"tokens_per_s\":{:.3}", 128.0 / (median(&times_ms) / 1e3));
    Measured { times_ms, load_peak_mb, rss_base_mb, out_head: Vec::new(), extra }
}

fn t5_model(threads: usize) -> T5Small {
    common::with_random_weights(0.04, T5Small::load).with_threads(Threads::new(threads).expect("thread pool"))
}

fn run_t5_encode(a: &Args) -> Measured {
    let model = t5_model(a.threads);
    let source = Batch::from_sequences(&[t5_ids(128)]).unwrap();
    let (load_peak_mb, rss_base_mb) = reset_hwm();
    let times_ms = time_runs(a.warmup, a.runs, || {
        std::hint::black_box(model.encode(&source).unwrap());
    });
    // The encoder alone (no cross-attention keys and values), as Hugging Face's `model.encoder`.
    let mut ws = Workspace::new();
    let encoder_only = time_runs(1, a.runs, || {
        std::hint::black_box(model.encode_into(&source, &mut ws).unwrap()[0][0]);
    });
    let memory = model.encode(&source).unwrap();
    let out_head = model.encoder_hidden(&memory)[0][..4].iter().map(|&v| v as f64).collect();
    let extra = format!(",\"encoder_only_ms\":{:.4}", median(&encoder_only));
    Measured { times_ms, load_peak_mb, rss_base_mb, out_head, extra }
}

fn run_t5_decode(a: &Args) -> Measured {
    let model = t5_model(a.threads);
    let options = GenerateOptions { max_new_tokens: 32, ..GenerateOptions::default() };
    let source = t5_ids(128);
    let (load_peak_mb, rss_base_mb) = reset_hwm();
    let mut produced = 0;
    let times_ms = time_runs(a.warmup, a.runs, || {
        let out = model.generate(&[&source], &options).unwrap();
        produced = out[0].len();
        std::hint::black_box(out);
    });
    assert_eq!(produced, 32, "generation stopped early");
    // Where the time goes: the encode part of one call, timed alone.
    let batch = Batch::from_sequences(&[&source]).unwrap();
    let encode_ms = median(&time_runs(1, a.runs.min(3), || {
        std::hint::black_box(model.encode(&batch).unwrap());
    }));
    let total = median(&times_ms);
    let extra = format!(
        ",\"new_tokens\":32,\"total_ms\":{total:.4},\"per_token_ms\":{:.4},\"tokens_per_s\":{:.3},\
         \"encode_ms\":{encode_ms:.4},\"per_token_after_encode_ms\":{:.4}",
        total / 32.0,
        32.0 / (total / 1e3),
        (total - encode_ms) / 32.0
    );
    Measured { times_ms, load_peak_mb, rss_base_mb, out_head: Vec::new(), extra }
}

// ---------------------------------------------------------------- per-op breakdown

/// Times one op `reps` times after one warm-up call; returns the median ms.
fn time_op(reps: usize, mut f: impl FnMut()) -> f64 {
    median(&time_runs(1, reps, &mut f))
}

fn weights(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| common::pseudo_random("w", i * 31 + salt) * 0.1).collect()
}

/// One op's row of the breakdown JSON.
fn op_json(name: &str, ms: f64, gflop: f64, bytes: f64) -> String {
    format!(
        "{{\"op\":\"{name}\",\"ms\":{ms:.4},\"gflop\":{gflop:.5},\"gflops\":{:.2},\"gbs\":{:.2}}}",
        gflop / (ms / 1e3),
        bytes / 1e9 / (ms / 1e3)
    )
}

/// The ops of one MiniLM-shaped layer (384 wide, 12 heads of 32, d_ff 1536) at `batch × seq`, each
/// timed alone through the library's public layers: the GEMMs (with their fused epilogues) and the
/// attention kernel. Shows where a forward pass's time goes (GEMM vs attention vs the rest).
fn run_parts_encoder(a: &Args, batch: usize, seq: usize) -> String {
    use transformer::layers::{self_attention, Linear};
    use transformer::Activation;
    let threads = Threads::new(a.threads).expect("thread pool");
    let rows = batch * seq;
    let input = Batch::from_sequences(&minilm_ids(batch, seq)).expect("valid batch");
    let qkv_l = Linear::<384, 1152>::from_parts(weights(384 * 1152, 1), Some(weights(1152, 2)));
    let out_l = Linear::<384, 384>::from_parts(weights(384 * 384, 3), Some(weights(384, 4)));
    let ff1 = Linear::<384, 1536>::from_parts(weights(384 * 1536, 5), Some(weights(1536, 6)));
    let ff2 = Linear::<1536, 384>::from_parts(weights(1536 * 384, 7), Some(weights(384, 8)));
    let x: Vec<[f32; 384]> =
        (0..rows).map(|r| std::array::from_fn(|c| ((r * 7 + c) % 13) as f32 * 0.05 - 0.3)).collect();
    let mut qkv = vec![[0f32; 1152]; rows];
    let mut o384 = vec![[0f32; 384]; rows];
    let mut h = vec![[0f32; 1536]; rows];
    let mut ctx = vec![0f32; rows * 384];
    let reps = a.runs;
    let r = rows as f64;
    let t_qkv = time_op(reps, || qkv_l.forward(&x, &mut qkv, Activation::Identity, &threads));
    let t_att = time_op(reps, || {
        self_attention::<32>(qkv.as_flattened(), &input, 12, 32f32.powf(-0.5), &mut ctx, &threads)
    });
    let t_out = time_op(reps, || out_l.forward(&x, &mut o384, Activation::Identity, &threads));
    let t_ff1 = time_op(reps, || ff1.forward(&x, &mut h, Activation::GeluErf, &threads));
    let t_ff2 = time_op(reps, || ff2.forward(&h, &mut o384, Activation::Identity, &threads));
    let g = |i: f64, o: f64| 2.0 * r * i * o / 1e9;
    let att_gflop = 4.0 * (seq * seq) as f64 * 384.0 * batch as f64 / 1e9;
    let io = |i: f64, o: f64| 4.0 * (r * i + i * o + r * o);
    let ops = [
        op_json("qkv 384x1152", t_qkv, g(384.0, 1152.0), io(384.0, 1152.0)),
        op_json("attention", t_att, att_gflop, 4.0 * r * (1152.0 + 384.0)),
        op_json("out 384x384", t_out, g(384.0, 384.0), io(384.0, 384.0)),
        op_json("ff1 384x1536+gelu", t_ff1, g(384.0, 1536.0), io(384.0, 1536.0)),
        op_json("ff2 1536x384", t_ff2, g(1536.0, 384.0), io(1536.0, 384.0)),
    ];
    let gemm_ms = t_qkv + t_out + t_ff1 + t_ff2;
    let gemm_gflop = g(384.0, 1152.0) + g(384.0, 384.0) + g(384.0, 1536.0) + g(1536.0, 384.0);
    format!(
        "{{\"workload\":\"{}\",\"engine\":\"ours\",\"threads\":{},\"runs\":{reps},\"per_layer_ops\":[{}],\
         \"gemm_ms_per_layer\":{gemm_ms:.4},\"gemm_gflops\":{:.2},\"attention_ms_per_layer\":{t_att:.4},\
         \"attention_gflops\":{:.2},\"attention_share_of_ops\":{:.4},\"loadavg\":{}}}",
        a.workload,
        a.threads,
        ops.join(","),
        gemm_gflop / (gemm_ms / 1e3),
        att_gflop / (t_att / 1e3),
        t_att / (t_att + gemm_ms),
        loadavg()
    )
}

/// One decode step's GEMVs of the GPT-2-small shape (one row through each linear of a layer, and
/// the 768 × 50257 LM head), timed alone: achieved weight-streaming bandwidth per op.
fn run_parts_decode(a: &Args) -> String {
    use transformer::layers::Linear;
    use transformer::Activation;
    let threads = Threads::new(a.threads).expect("thread pool");
    let x = vec![[0.01f32; 768]; 1];
    let mut o2304 = vec![[0f32; 2304]; 1];
    let mut o768 = vec![[0f32; 768]; 1];
    let mut o3072 = vec![[0f32; 3072]; 1];
    let h = vec![[0.01f32; 3072]; 1];
    let mut logits = vec![[0f32; 50257]; 1];
    let reps = a.runs.max(20);
    let mut ops = Vec::new();
    let mut step_ms = 0.0;
    macro_rules! gemv {
        ($name:expr, $in:literal, $out:literal, $x:expr, $y:expr, $act:expr, $count:expr) => {{
            let l = Linear::<$in, $out>::from_parts(weights($in * $out, $out), Some(weights($out, 9)));
            let t = time_op(reps, || l.forward($x, $y, $act, &threads));
            step_ms += t * $count as f64;
            ops.push(op_json(
                $name,
                t,
                2.0 * ($in * $out) as f64 / 1e9,
                4.0 * ($in * $out + $in + 2 * $out) as f64,
            ));
        }};
    }
    gemv!("c_attn 768x2304", 768, 2304, &x, &mut o2304, Activation::Identity, 12);
    gemv!("attn.c_proj 768x768", 768, 768, &x, &mut o768, Activation::Identity, 12);
    gemv!("c_fc 768x3072+gelu", 768, 3072, &x, &mut o3072, Activation::GeluTanh, 12);
    gemv!("mlp.c_proj 3072x768", 3072, 768, &h, &mut o768, Activation::Identity, 12);
    gemv!("lm_head 768x50257", 768, 50257, &x, &mut logits, Activation::Identity, 1);
    let bytes = 4.0 * (12.0 * 7_077_888.0 + 768.0 * 50257.0);
    format!(
        "{{\"workload\":\"parts_gpt2_decode\",\"engine\":\"ours\",\"threads\":{},\"runs\":{reps},\"ops\":[{}],\
         \"gemv_ms_per_token\":{step_ms:.4},\"weight_bytes_per_token\":{bytes},\"gemv_gbs\":{:.2},\"loadavg\":{}}}",
        a.threads,
        ops.join(","),
        bytes / 1e9 / (step_ms / 1e3),
        loadavg()
    )
}

// ---------------------------------------------------------------- machine microbenchmarks

const FMA_CHAINS: usize = 16;
/// AVX2 has 16 ymm registers: 16 accumulators plus the two operands would spill to the stack every
/// iteration (which measured 52.7 GFLOP/s on a Zen 3 core whose GEMM reached 72). Twelve chains
/// still cover the FMA latency × pipes (4 × 2 on Zen 3, 4 × 2 on Intel).
const FMA_CHAINS_AVX2: usize = 12;

/// `iters` × 16 independent chains of 16-lane FMAs: 512 flop per iteration.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_avx512(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(seed); FMA_CHAINS];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_add_ps(*a, _mm512_set1_ps(i as f32 * 1e-3));
    }
    let m = _mm512_set1_ps(0.999_999);
    let c = _mm512_set1_ps(1e-7);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm512_setzero_ps();
    for a in acc {
        s = _mm512_add_ps(s, a);
    }
    _mm512_reduce_add_ps(s)
}

/// The AVX2 fallback: 12 chains of 8-lane FMAs, 192 flop per iteration.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_avx2(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(seed); FMA_CHAINS_AVX2];
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm256_add_ps(*a, _mm256_set1_ps(i as f32 * 1e-3));
    }
    let m = _mm256_set1_ps(0.999_999);
    let c = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, m, c);
        }
    }
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    let mut out = [0f32; 8];
    // SAFETY: `out` has room for the 8 lanes stored.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// (isa name, flop per iteration, kernel)
fn fma_kernel() -> (&'static str, f64, fn(u64, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return ("avx512f", (FMA_CHAINS * 16 * 2) as f64, |n, s| unsafe { fma_avx512(n, s) });
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return ("avx2+fma", (FMA_CHAINS_AVX2 * 8 * 2) as f64, |n, s| unsafe { fma_avx2(n, s) });
        }
    }
    die("no AVX2/FMA: the FMA microbenchmark needs x86-64 with AVX2+FMA or AVX-512")
}

/// One trial: `threads` OS threads each run `iters` iterations; GFLOP/s over the slowest thread.
fn fma_trial(threads: usize, iters: u64) -> f64 {
    let (_, flop_per_iter, kernel) = fma_kernel();
    let barrier = std::sync::Barrier::new(threads);
    let t0 = Instant::now();
    let sums: Vec<f32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    kernel(iters, 1.0 + t as f32)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    std::hint::black_box(sums);
    flop_per_iter * iters as f64 * threads as f64 / secs / 1e9
}

fn run_fma(a: &Args) -> String {
    let (isa, flop_per_iter, _) = fma_kernel();
    let chains = if isa == "avx512f" { FMA_CHAINS } else { FMA_CHAINS_AVX2 };
    // Calibrate: about 0.25 s per trial.
    let mut iters: u64 = 1 << 20;
    loop {
        let t0 = Instant::now();
        fma_trial(1, iters);
        if t0.elapsed().as_secs_f64() > 0.05 {
            break;
        }
        iters *= 2;
    }
    iters *= 5;
    let trials: Vec<f64> =
        (0..a.warmup + a.runs).map(|_| fma_trial(a.threads, iters)).skip(a.warmup).collect();
    let best = trials.iter().cloned().fold(0.0, f64::max);
    format!(
        "{{\"workload\":\"fma_peak\",\"engine\":\"ours\",\"threads\":{},\"isa\":\"{isa}\",\"chains\":{chains},\
         \"flop_per_iter_per_thread\":{flop_per_iter},\"iters\":{iters},\"trials_gflops\":{},\"gflops\":{best:.2},\
         \"gflops_per_thread\":{:.2},\"loadavg\":{}}}",
        a.threads,
        json_list(&trials),
        best / a.threads as f64,
        loadavg()
    )
}

/// Sums `data` with 8 (AVX) accumulators; the compiler vectorises the chunked loop.
fn sum_f32(data: &[f32]) -> f32 {
    let mut acc = [0f32; 64];
    let (chunks, rest) = data.as_chunks::<64>();
    for c in chunks {
        for i in 0..64 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_f32_avx512(data: &[f32]) -> f32 {
    sum_f32(data)
}

fn sum_dispatch(data: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { sum_f32_avx512(data) };
    }
    sum_f32(data)
}

fn run_bandwidth(a: &Args) -> String {
    let n = (1usize << 30) / 4; // 1 GiB of f32
    let buf: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let chunk = n.div_ceil(a.threads);
    let mut read = Vec::new();
    for _ in 0..a.warmup + a.runs {
        let t0 = Instant::now();
        let s: f32 = std::thread::scope(|sc| {
            let hs: Vec<_> = buf.chunks(chunk).map(|c| sc.spawn(move || sum_dispatch(c))).collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        std::hint::black_box(s);
        read.push((n * 4) as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    let read = read.split_off(a.warmup);
    let m = (256usize << 20) / 4;
    let src = &buf[..m];
    let mut dst = vec![0f32; m];
    let mut copy = Vec::new();
    for _ in 0..a.warmup + a.runs {
        let t0 = Instant::now();
        let cchunk = m.div_ceil(a.threads);
        std::thread::scope(|sc| {
            for (d, s) in dst.chunks_mut(cchunk).zip(src.chunks(cchunk)) {
                sc.spawn(move || d.copy_from_slice(s));
            }
        });
        std::hint::black_box(&dst);
        copy.push((2 * m * 4) as f64 / t0.elapsed().as_secs_f64() / 1e9);
    }
    let copy = copy.split_off(a.warmup);
    format!(
        "{{\"workload\":\"bandwidth\",\"engine\":\"ours\",\"threads\":{},\"read_buffer_mb\":1024,\"read_gbs_trials\":{},\
         \"read_gbs\":{:.2},\"copy_buffer_mb\":256,\"copy_gbs_trials\":{},\"copy_gbs\":{:.2},\"loadavg\":{}}}",
        a.threads,
        json_list(&read),
        read.iter().cloned().fold(0.0, f64::max),
        json_list(&copy),
        copy.iter().cloned().fold(0.0, f64::max),
        loadavg()
    )
}

fn main() {
    let a = parse_args();
    match a.workload.as_str() {
        "fma_peak" => {
            println!("{}", run_fma(&a));
            return;
        }
        "bandwidth" => {
            println!("{}", run_bandwidth(&a));
            return;
        }
        "parts_minilm_1x128" | "parts_minilm_32x128" | "parts_minilm_1x512" | "parts_long_4096" => {
            let (batch, seq) = match a.workload.as_str() {
                "parts_minilm_1x128" => (1, 128),
                "parts_minilm_32x128" => (32, 128),
                "parts_minilm_1x512" => (1, 512),
                _ => (1, 4096),
            };
            println!("{}", run_parts_encoder(&a, batch, seq));
            return;
        }
        "parts_gpt2_decode" => {
            println!("{}", run_parts_decode(&a));
            return;
        }
        _ => {}
    }
    let load_before = loadavg();
    let t_start = Instant::now();
    let cpu0 = cpu_seconds();
    let m = match a.workload.as_str() {
        "minilm_1x128" => run_minilm(&a, 1, 128),
        "minilm_32x128" => run_minilm(&a, 32, 128),
        "minilm_1x512" => run_minilm(&a, 1, 512),
        "gpt2_prefill128" => run_prefill(&a),
        "gpt2_decode128" => run_decode(&a),
        "long_1024" => run_long(&a, 1024),
        "long_2048" => run_long(&a, 2048),
        "long_4096" => run_long(&a, 4096),
        "t5_encode128" => run_t5_encode(&a),
        "t5_decode32" => run_t5_decode(&a),
        other => die(&format!("unknown workload {other}")),
    };
    let wall = t_start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"workload\":\"{}\",\"engine\":\"ours\",\"threads\":{},\"warmup\":{},\"runs\":{},\"times_ms\":{},\
         \"median_ms\":{:.4},\"rss_mb\":{:.1},\"rss_run_peak_mb\":{:.1},\"rss_base_mb\":{:.1},\"out_head\":{},\"cpu_per_wall\":{:.3},\
         \"loadavg_before\":{},\"loadavg_after\":{}{}}}",
        a.workload,
        a.threads,
        a.warmup,
        a.runs,
        json_list(&m.times_ms),
        median(&m.times_ms),
        status_mb("VmHWM").max(m.load_peak_mb),
        status_mb("VmHWM"),
        m.rss_base_mb,
        json_list(&m.out_head),
        cpu / wall,
        load_before,
        loadavg(),
        m.extra
    );
}

/// User + system CPU time of this process (all threads), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is index 0, utime is field 14 overall → index 11 here.
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}
