//! Pre-trains a small byte-level GPT from scratch on this repository's own documentation, with the
//! trainer `training: causal_lm` generates; then saves it, loads the file into the inference
//! model and lets it write.
//!
//! ```text
//! cargo run --release --example train -- --steps 600 --plot docs/img/train_loss.svg
//! ```
//!
//! The corpus is the README and the guide (`docs/*.md`), read as bytes (vocabulary 256). The
//! last tenth is held out: its loss, every `--eval-every` steps, is the curve that says whether
//! the model learns the text or memorises the batches. `--eval-every 0` skips it (for timing:
//! `scripts/bench-train.sh` compares the training steps with PyTorch's on the same model).

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transformer::train::optim::AdamWConfig;
use transformer::train::schedule::Schedule;
use transformer::{Batch, GenerateOptions, Sampling, Threads};

transformer::model! {
    /// A GPT-2-shaped byte model: 4 layers of 128, 4 heads, 128 bytes of context.
    pub struct ByteGpt {
        vocab_size: 256,
        max_positions: 128,
        d_model: 128,
        heads: 4,
        layers: 4,
        d_ff: 512,
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

const CORPUS: &[&str] = &[
    include_str!("../README.md"),
    include_str!("../docs/keys.md"),
    include_str!("../docs/encoders.md"),
    include_str!("../docs/decoders.md"),
    include_str!("../docs/encoder-decoders.md"),
    include_str!("../docs/composed.md"),
    include_str!("../docs/checkpoints.md"),
    include_str!("../docs/weights.md"),
    include_str!("../docs/training.md"),
    include_str!("../docs/vision.md"),
    include_str!("../docs/reformer.md"),
];

struct Args {
    steps: u64,
    batch: usize,
    lr: f64,
    eval_every: u64,
    threads: usize,
    seed: u64,
    plot: Option<PathBuf>,
    save: PathBuf,
}

fn args() -> Result<Args, Box<dyn Error>> {
    let mut a = Args {
        steps: 600,
        batch: 16,
        lr: 2e-3,
        eval_every: 50,
        threads: 2,
        seed: 0,
        plot: None,
        save: std::env::temp_dir().join("byte_gpt.safetensors"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--steps" => a.steps = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--lr" => a.lr = value()?.parse()?,
            "--eval-every" => a.eval_every = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--seed" => a.seed = value()?.parse()?,
            "--plot" => a.plot = Some(value()?.into()),
            "--save" => a.save = value()?.into(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(a)
}

/// `batch` windows of `max_positions` bytes from `text`, at positions drawn from `rng`.
fn sample(text: &[u8], batch: usize, rng: &mut ChaCha8Rng) -> Result<Batch, Box<dyn Error>> {
    let seq = ByteGpt::MAX_POSITIONS;
    let windows: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            let start = rng.random_range(0..text.len() - seq);
            text[start..start + seq].iter().map(|&b| u32::from(b)).collect()
        })
        .collect();
    Ok(Batch::from_sequences(&windows)?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = args()?;
    let corpus: Vec<u8> = CORPUS.concat().into_bytes();
    let split = corpus.len() * 9 / 10;
    let (train, held_out) = corpus.split_at(split);
    let mut trainer = ByteGptTrainer::from_scratch(args.seed).with_threads(Threads::new(args.threads)?);
    let mut adamw =
        trainer.optimizer(AdamWConfig { betas: (0.9, 0.95), ..AdamWConfig::with_weight_decay(0.1) })?;
    let schedule = Schedule::cosine_with_warmup(args.lr, args.steps / 20, args.steps);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut eval_rng = ChaCha8Rng::seed_from_u64(args.seed + 1);
    let eval_batches: Vec<Batch> =
        (0..4).map(|_| sample(held_out, args.batch, &mut eval_rng)).collect::<Result<_, _>>()?;
    println!(
        "{} parameters; corpus {} bytes ({} for training, {} held out); {} steps of {}×{} bytes",
        ByteGptTrainer::PARAMETERS,
        corpus.len(),
        train.len(),
        held_out.len(),
        args.steps,
        args.batch,
        ByteGpt::MAX_POSITIONS
    );

    let bar = ProgressBar::new(args.steps);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} steps · {per_sec} · ETA {eta} · {msg}",
    )?);
    let (mut train_curve, mut eval_curve) = (Vec::new(), Vec::new());
    let started = Instant::now();
    for step in 0..args.steps {
        let evaluate = args.eval_every > 0 && (step % args.eval_every == 0 || step + 1 == args.steps);
        if evaluate {
            let mut total = 0.0;
            for batch in &eval_batches {
                total += trainer.evaluate(batch)?.loss;
            }
            eval_curve.push((step, total / eval_batches.len() as f32));
        }
        let batch = sample(train, args.batch, &mut rng)?;
        let report = trainer.step(&batch, &mut adamw, schedule.lr(step), Some(1.0))?;
        train_curve.push((step, report.loss));
        bar.set_message(format!(
            "loss {:.3} · held-out {:.3}",
            report.loss,
            eval_curve.last().map_or(0.0, |e| e.1)
        ));
        bar.inc(1);
    }
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let tokens = args.steps as f64 * (args.batch * ByteGpt::MAX_POSITIONS) as f64;
    println!("{:.0} tokens/s over {seconds:.1} s", tokens / seconds);
    for (step, loss) in &eval_curve {
        println!(
            "step {step:>5}: held-out loss {loss:.4} ({:.3} bits per byte)",
            loss / std::f32::consts::LN_2
        );
    }

    // The trained weights, saved under GPT-2's names, load into the inference model.
    trainer.save(&args.save)?;
    let model = ByteGpt::from_safetensors(&args.save)?;
    let prompt: Vec<u32> = "The trainer ".bytes().map(u32::from).collect();
    let options = GenerateOptions {
        max_new_tokens: 100,
        sampling: Sampling::Sample { temperature: 0.8, top_k: Some(20), top_p: None },
        stop_tokens: vec![],
        seed: args.seed,
    };
    let text = model.generate(&[&prompt], &options)?;
    let bytes: Vec<u8> = prompt.iter().chain(&text[0]).map(|&t| t as u8).collect();
    println!("sample: {:?}", String::from_utf8_lossy(&bytes));

    if let Some(path) = &args.plot {
        plot(path, &train_curve, &eval_curve)?;
        println!("loss curve: {}", path.display());
    }
    Ok(())
}

/// The training loss (a moving average over 20 steps) and the held-out loss against the step.
fn plot(path: &PathBuf, train: &[(u64, f32)], eval: &[(u64, f32)]) -> Result<(), Box<dyn Error>> {
    use plotters::prelude::*;
    let smooth: Vec<(u64, f32)> = train
        .iter()
        .enumerate()
        .map(|(i, &(step, _))| {
            let window = &train[i.saturating_sub(19)..=i];
            (step, window.iter().map(|w| w.1).sum::<f32>() / window.len() as f32)
        })
        .collect();
    let max_step = train.last().map_or(1, |t| t.0 + 1);
    let max_loss = train.iter().chain(eval).map(|p| p.1).fold(0.0f32, f32::max).min(6.0);
    let root = SVGBackend::new(path, (720, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Byte-level GPT (0.84 M parameters) trained from scratch on the docs", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0u64..max_step, 0f32..max_loss)?;
    chart.configure_mesh().x_desc("step").y_desc("cross-entropy (nats per byte)").draw()?;
    chart
        .draw_series(LineSeries::new(smooth, &BLUE))?
        .label("training batches (moving average of 20)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    chart
        .draw_series(LineSeries::new(eval.iter().copied(), RED.stroke_width(2)))?
        .label("held-out tenth of the corpus")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart.draw_series(eval.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
