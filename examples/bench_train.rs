//! Training throughput on two real shapes, for `scripts/bench-train-big.sh` (issue #18): the
//! trainers `training: causal_lm` and `training: masked_lm` generate, timed over AdamW steps.
//!
//! ```text
//! bench_train --model gpt2|minilm_mlm --threads N [--steps S] [--warmup W] [--seed SEED]
//! ```
//!
//! - `gpt2`: GPT-2 small's shape (124M parameters, tied head), 4 sequences × 64 tokens per step,
//!   as llm.c's `train_gpt2.c` measures it; next-token cross-entropy.
//! - `minilm_mlm`: all-MiniLM-L6-v2's shape (6 layers, 384 wide) through `BertForMaskedLM`'s head,
//!   32 sequences × 128 tokens per step (`[CLS] … [SEP]`, no padding), about 15 % of the positions
//!   labelled by BERT's rule (`transformer::train::mlm`), `-100` elsewhere.
//!
//! Both start from random weights (`from_scratch(seed)`); the token batches are random too.
//! Each step is the loss and every gradient, `clip_grad_norm_(1.0)`, then AdamW at lr 1e-4 with
//! llm.c's hyperparameters (betas 0.9/0.999, eps 1e-8, no weight decay), the same in
//! `scripts/reference/train_bench_big.py` (PyTorch). `W` untimed steps first (default 2), then
//! `S` timed ones (default 5). Prints `tokens/s X` (B·T·S over the S steps' wall time) and
//! `peak_rss_mb Y` (VmHWM of this process, read after the last step), plus the losses on stderr.

use std::error::Error;
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transformer::train::mlm::{mask_tokens, MaskedLm};
use transformer::train::optim::{AdamW, AdamWConfig, GroupConfig};
use transformer::train::rng::Stream;
use transformer::{Batch, Threads};

transformer::model! {
    /// GPT-2 small's shape (examples/common/gpt2_small.rs) with a trainer.
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
        training: causal_lm,
    }
}

transformer::model! {
    /// all-MiniLM-L6-v2's shape (examples/common/minilm.rs), trained through BertForMaskedLM's head.
    pub struct MiniLmMlm {
        vocab_size: 30522,
        max_positions: 512,
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
        training: masked_lm,
    }
}

/// The learning rate and clipping norm of every step (llm.c's `train_gpt2.c` uses lr 1e-4).
const LR: f64 = 1e-4;
const MAX_NORM: f32 = 1.0;
/// Distinct random batches, cycled through (drawing them is kept out of the timed steps).
const BATCHES: usize = 4;
/// BERT's special ids in the uncased vocabulary: [PAD], [CLS], [SEP], [MASK].
const PAD: u32 = 0;
const CLS: u32 = 101;
const SEP: u32 = 102;
const MASK: u32 = 103;

struct Args {
    model: String,
    threads: usize,
    steps: usize,
    warmup: usize,
    seed: u64,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args { model: String::new(), threads: 1, steps: 5, warmup: 2, seed: 0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?,
            "--threads" => a.threads = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--warmup" => a.warmup = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.steps == 0 {
        return Err("--steps must be at least 1".into());
    }
    Ok(a)
}

/// llm.c's `gpt2_update(…, 1e-4, 0.9, 0.999, 1e-8, 0.0, …)`: no weight decay in either group.
fn adamw_config() -> AdamWConfig {
    AdamWConfig {
        betas: (0.9, 0.999),
        eps: 1e-8,
        groups: vec![GroupConfig::with_weight_decay(0.0), GroupConfig::with_weight_decay(0.0)],
    }
}

/// Peak resident set size of this process in MB (VmHWM, Linux).
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs `warmup` then `steps` calls of `step(i)`, returning the timed steps' seconds.
fn timed(
    warmup: usize,
    steps: usize,
    mut step: impl FnMut(usize) -> Result<f32, Box<dyn Error>>,
) -> Result<f64, Box<dyn Error>> {
    for i in 0..warmup {
        let loss = step(i)?;
        eprintln!("warmup step {i}: loss {loss:.4}");
    }
    let started = Instant::now();
    let mut losses = Vec::with_capacity(steps);
    for i in warmup..warmup + steps {
        losses.push(step(i)?);
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("timed losses: {losses:.4?}");
    Ok(seconds)
}

fn gpt2(args: &Args, rng: &mut ChaCha8Rng) -> Result<(usize, f64), Box<dyn Error>> {
    const B: usize = 4;
    const T: usize = 64;
    let mut trainer = Gpt2SmallTrainer::from_scratch(args.seed).with_threads(Threads::new(args.threads)?);
    let mut adamw: AdamW = trainer.optimizer(adamw_config())?;
    let batches: Vec<Batch> = (0..BATCHES)
        .map(|_| {
            let rows: Vec<Vec<u32>> = (0..B)
                .map(|_| (0..T).map(|_| rng.random_range(0..Gpt2Small::VOCAB_SIZE as u32)).collect())
                .collect();
            Batch::from_sequences(&rows)
        })
        .collect::<Result<_, _>>()?;
    eprintln!("gpt2: {} parameters, {B} × {T} tokens per step", Gpt2SmallTrainer::PARAMETERS);
    let seconds = timed(args.warmup, args.steps, |i| {
        Ok(trainer.step(&batches[i % BATCHES], &mut adamw, LR, Some(MAX_NORM))?.loss)
    })?;
    Ok((B * T, seconds))
}

fn minilm_mlm(args: &Args, rng: &mut ChaCha8Rng) -> Result<(usize, f64), Box<dyn Error>> {
    const B: usize = 32;
    const T: usize = 128;
    let mut trainer = MiniLmMlmTrainer::from_scratch(args.seed).with_threads(Threads::new(args.threads)?);
    let mut adamw: AdamW = trainer.optimizer(adamw_config())?;
    let vocab = MiniLmMlm::VOCAB_SIZE;
    let config = MaskedLm::bert(MASK, vocab, &[PAD, CLS, SEP, MASK]);
    let mut batches = Vec::with_capacity(BATCHES);
    let mut labelled = 0;
    for b in 0..BATCHES {
        // [CLS], 126 ids past the special ones, [SEP]; then BERT's 15 % / 80-10-10 masking.
        let mut ids: Vec<u32> = Vec::with_capacity(B * T);
        for _ in 0..B {
            ids.push(CLS);
            ids.extend((1..T - 1).map(|_| rng.random_range(999..vocab as u32)));
            ids.push(SEP);
        }
        let mut labels = vec![0i64; B * T];
        let masked =
            mask_tokens(&config, &mut ids, None, T, Stream::new(args.seed, b as u64, 0), &mut labels)?;
        labelled += masked.chosen;
        let rows: Vec<&[u32]> = ids.chunks_exact(T).collect();
        batches.push((Batch::from_sequences(&rows)?, labels));
    }
    eprintln!(
        "minilm_mlm: {} parameters, {B} × {T} tokens per step, {:.1} % labelled",
        MiniLmMlmTrainer::PARAMETERS,
        100.0 * labelled as f64 / (BATCHES * B * T) as f64
    );
    let seconds = timed(args.warmup, args.steps, |i| {
        let (batch, labels) = &batches[i % BATCHES];
        Ok(trainer.step(batch, labels, &mut adamw, LR, Some(MAX_NORM))?.loss)
    })?;
    Ok((B * T, seconds))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let (tokens_per_step, seconds) = match args.model.as_str() {
        "gpt2" => gpt2(&args, &mut rng)?,
        "minilm_mlm" => minilm_mlm(&args, &mut rng)?,
        other => return Err(format!("--model must be gpt2 or minilm_mlm, not {other:?}").into()),
    };
    println!("tokens/s {:.1}", (tokens_per_step * args.steps) as f64 / seconds);
    println!("peak_rss_mb {:.1}", peak_rss_mb());
    Ok(())
}
