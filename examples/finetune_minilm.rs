//! Fine-tunes the real all-MiniLM-L6-v2 on a few dozen paraphrase pairs with the trainer
//! `training: contrastive` generates: sentence-transformers' `MultipleNegativesRankingLoss`, where
//! each sentence's paraphrase is its positive and every other pair's in the batch a negative.
//! Before and after, it prints the cosine similarities of held-out pairs that it never trains on.
//!
//! ```text
//! bash scripts/fetch-model.sh
//! cargo run --release --example finetune_minilm
//! cargo run --release --example finetune_minilm -- --save /tmp/minilm-tuned
//! MINILM_DIR=/tmp/minilm-tuned cargo run --release --example embed -- "…" "…"
//! ```
//!
//! The pairs are `examples/data/paraphrases.tsv` (training) and
//! `examples/data/paraphrases-held-out.tsv` (measured only): `anchor<TAB>positive` a line.
//! `--save DIR` writes a checkpoint directory (`save_pretrained`) with the tokenizer and
//! sentence-transformers files beside it, which `examples/embed.rs` reads through `MINILM_DIR`.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use transformer::text::Tokenizer;
use transformer::train::optim::AdamWConfig;
use transformer::train::schedule::Schedule;
use transformer::Threads;

#[path = "common/minilm.rs"]
mod minilm;

transformer::model! {
    /// `common/minilm.rs`'s all-MiniLM-L6-v2, with its trainer: in-batch-negatives contrastive
    /// learning over mean-pooled, L2-normalised embeddings.
    pub struct MiniLmTuned {
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
        training: contrastive,
    }
}

const TRAIN: &str = include_str!("data/paraphrases.tsv");
const HELD_OUT: &str = include_str!("data/paraphrases-held-out.tsv");

/// The files beside the weights that make `--save`'s directory a whole sentence-transformers model.
const MODEL_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
];

struct Args {
    epochs: u64,
    batch: usize,
    lr: f64,
    threads: usize,
    seed: u64,
    save: Option<PathBuf>,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args { epochs: 8, batch: 16, lr: 5e-5, threads: 2, seed: 0, save: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--epochs" => a.epochs = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--lr" => a.lr = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--save" => a.save = Some(value()?.into()),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    if a.batch < 2 {
        return Err("--batch needs at least 2 pairs: the other pairs are each anchor's negatives".into());
    }
    Ok(a)
}

/// `anchor<TAB>positive` lines; `#` starts a comment line.
fn pairs(tsv: &'static str) -> Result<Vec<(&'static str, &'static str)>, Box<dyn Error>> {
    tsv.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            line.split_once('\t')
                .ok_or_else(|| format!("line {}: no tab between the two sentences", i + 1).into())
        })
        .collect()
}

/// One batch as `contrastive` takes it: the anchors, then their positives in the same order.
fn batch(tokenizer: &Tokenizer, pairs: &[(&str, &str)]) -> transformer::Result<transformer::Batch> {
    let texts: Vec<&str> = pairs.iter().map(|p| p.0).chain(pairs.iter().map(|p| p.1)).collect();
    minilm::encode(tokenizer, &texts)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let train = pairs(TRAIN)?;
    let held_out = pairs(HELD_OUT)?;
    let dir = minilm::model_dir();
    let tokenizer = minilm::tokenizer().map_err(|e| {
        format!("{e}\n(run `bash scripts/fetch-model.sh` to fetch all-MiniLM-L6-v2 into .cache/models)")
    })?;
    let threads = Threads::new(args.threads)?;

    // The pretrained model, as `examples/embed.rs` loads it, and the trainer, from the same files.
    let before =
        minilm::MiniLm::from_safetensors(dir.join("model.safetensors"))?.with_threads(threads.clone());
    let mut trainer = MiniLmTunedTrainer::from_pretrained(&dir)?.with_threads(threads.clone());
    let held_out_batch = batch(&tokenizer, &held_out)?;
    let loss_before = trainer.evaluate(&held_out_batch, held_out.len())?.loss;
    println!(
        "all-MiniLM-L6-v2, {:.1} M parameters; {} training pairs, {} held out\n",
        MiniLmTunedTrainer::PARAMETERS as f64 / 1e6,
        train.len(),
        held_out.len()
    );
    let margin_before = similarities("before fine-tuning", &before, &tokenizer, &held_out)?;

    // A last chunk of one pair has no in-batch negative, and is skipped.
    let steps_per_epoch = (train.len() / args.batch + usize::from(train.len() % args.batch >= 2)) as u64;
    let steps = args.epochs * steps_per_epoch;
    // As sentence-transformers' `fit`: AdamW with weight decay 0.01, a linear warmup (here over the
    // first tenth of the steps) and a linear decay to zero, gradients clipped to norm 1. Its rate is
    // 2e-5; 5e-5 moves further in 24 steps.
    let mut adamw = trainer.optimizer(AdamWConfig::with_weight_decay(0.01))?;
    let schedule = Schedule::linear_with_warmup(args.lr, steps.div_ceil(10), steps);
    let pairs_per_step = args.batch as f64;
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} step {pos}/{len} · {pairs_per_sec} pairs/s · ETA {eta} · {msg}",
        )?
        .with_key("pairs_per_sec", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}", state.per_sec() * pairs_per_step);
        }),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut order = train.clone();
    let mut losses = Vec::new();
    let started = Instant::now();
    for _ in 0..args.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(args.batch) {
            if chunk.len() < 2 {
                continue;
            }
            let step = trainer.steps();
            let report = trainer.step(
                &batch(&tokenizer, chunk)?,
                chunk.len(),
                &mut adamw,
                schedule.lr(step),
                Some(1.0),
            )?;
            losses.push(report.loss);
            bar.set_message(format!("loss {:.4}", report.loss));
            bar.inc(1);
        }
    }
    bar.finish();
    println!(
        "{} steps in {:.1} s; training loss {:.4} at the first step, {:.4} at the last\n",
        trainer.steps(),
        started.elapsed().as_secs_f64(),
        losses.first().copied().unwrap_or(f32::NAN),
        losses.last().copied().unwrap_or(f32::NAN)
    );

    // The trained weights, saved under BERT's names, load into the inference model.
    let saved = match &args.save {
        Some(out) => {
            trainer.save_pretrained(out)?;
            for file in MODEL_FILES {
                let to = out.join(file);
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::copy(dir.join(file), &to)
                    .map_err(|e| format!("{}: {e}", dir.join(file).display()))?;
            }
            out.join("model.safetensors")
        }
        None => {
            let path = std::env::temp_dir().join("minilm_tuned.safetensors");
            trainer.save(&path)?;
            path
        }
    };
    let after = minilm::MiniLm::from_safetensors(&saved)?.with_threads(threads);
    let margin_after = similarities("after fine-tuning", &after, &tokenizer, &held_out)?;
    let loss_after = trainer.evaluate(&held_out_batch, held_out.len())?.loss;
    println!("held-out pairs, before → after fine-tuning:");
    println!("  margin (mean diagonal − mean off-diagonal): {margin_before:.3} → {margin_after:.3}");
    println!("  MultipleNegativesRankingLoss:              {loss_before:.5} → {loss_after:.5}");
    if let Some(out) = &args.save {
        println!("\nsaved: {} (MINILM_DIR={0} cargo run --release --example embed -- …)", out.display());
    }
    Ok(())
}

/// Prints the cosine similarity of every held-out anchor (row) with every positive (column), and
/// returns the mean of the diagonal (each anchor with its own paraphrase) less the mean of the rest.
fn similarities(
    title: &str,
    model: &minilm::MiniLm,
    tokenizer: &Tokenizer,
    pairs: &[(&str, &str)],
) -> Result<f32, Box<dyn Error>> {
    let anchors: Vec<&str> = pairs.iter().map(|p| p.0).collect();
    let positives: Vec<&str> = pairs.iter().map(|p| p.1).collect();
    let a = model.embed_texts(tokenizer, &anchors)?;
    let p = model.embed_texts(tokenizer, &positives)?;
    let n = pairs.len();
    let (mut diagonal, mut rest) = (0.0, 0.0);
    println!("{title}: cosine similarity, held-out anchor (row) × paraphrase (column)");
    let header: String = (0..n).map(|j| format!("{:>7}", format!("[{j}]"))).collect();
    println!("{header}");
    for (i, anchor) in a.iter().enumerate() {
        let row: Vec<f32> = p.iter().map(|positive| dot(anchor, positive)).collect();
        for (j, s) in row.iter().enumerate() {
            if i == j {
                diagonal += s;
            } else {
                rest += s;
            }
        }
        let cells: String = row.iter().map(|s| format!("{s:7.3}")).collect();
        println!("{cells}   [{i}] {}", anchors[i]);
    }
    let margin = diagonal / n as f32 - rest / (n * (n - 1)) as f32;
    println!("margin (mean diagonal − mean off-diagonal): {margin:.3}\n");
    Ok(margin)
}

fn dot(a: &[f32; 384], b: &[f32; 384]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
