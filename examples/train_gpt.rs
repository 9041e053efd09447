//! Pre-trains a small byte-level GPT from scratch on a public-domain novel, Jane Austen's *Pride
//! and Prejudice*, with the trainer `training: causal_lm` generates; then saves it, loads the file
//! into the inference model and lets it write.
//!
//! ```text
//! bash scripts/fetch-text.sh        # the six novels, from Debian's r-cran-janeaustenr
//! cargo run --release --example train_gpt -- --steps 600 --plot docs/img/train_gpt_loss.png
//! ```
//!
//! The text is read as bytes (vocabulary 256); `--text FILE` trains on another one. The last
//! tenth is held out: its loss, every `--eval-every` steps, is the curve that says whether the
//! model learns the language or memorises the batches. `--eval-every 0` skips it (for timing:
//! `scripts/bench-train.sh` compares the training steps with PyTorch's on the same model). The
//! loss curve is a PNG or an SVG, as `--plot`'s extension says.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
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

/// Bytes in one training step: `batch` windows of the model's whole context.
fn tokens_per_step(batch: usize) -> usize {
    batch * ByteGpt::MAX_POSITIONS
}

struct Args {
    text: PathBuf,
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
        text: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".cache/text/austen/prideprejudice.txt"),
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
            "--text" => a.text = value()?.into(),
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

/// The text's bytes, or how to fetch the default one.
fn read_text(path: &Path) -> Result<Vec<u8>, Box<dyn Error>> {
    let text = std::fs::read(path).map_err(|e| {
        format!(
            "{}: {e}\n(run `bash scripts/fetch-text.sh` to fetch the novels into .cache/text)",
            path.display()
        )
    })?;
    if text.len() < 10 * (ByteGpt::MAX_POSITIONS + 1) {
        return Err(format!("{}: {} bytes is too short to train on", path.display(), text.len()).into());
    }
    Ok(text)
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
    let text = read_text(&args.text)?;
    let split = text.len() * 9 / 10;
    let (train, held_out) = text.split_at(split);
    let mut trainer = ByteGptTrainer::from_scratch(args.seed).with_threads(Threads::new(args.threads)?);
    let mut adamw =
        trainer.optimizer(AdamWConfig { betas: (0.9, 0.95), ..AdamWConfig::with_weight_decay(0.1) })?;
    let schedule = Schedule::cosine_with_warmup(args.lr, args.steps / 20, args.steps);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut eval_rng = ChaCha8Rng::seed_from_u64(args.seed + 1);
    let eval_batches: Vec<Batch> =
        (0..4).map(|_| sample(held_out, args.batch, &mut eval_rng)).collect::<Result<_, _>>()?;
    println!(
        "{} parameters; {}: {} bytes ({} for training, {} held out); {} steps of {}×{} bytes",
        ByteGptTrainer::PARAMETERS,
        args.text.file_name().unwrap_or_default().to_string_lossy(),
        text.len(),
        train.len(),
        held_out.len(),
        args.steps,
        args.batch,
        ByteGpt::MAX_POSITIONS
    );

    let step_tokens = tokens_per_step(args.batch) as f64;
    let bar = ProgressBar::new(args.steps);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} step {pos}/{len} · {tokens_per_sec} tokens/s · ETA {eta} · {msg}",
        )?
        .with_key("tokens_per_sec", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}", state.per_sec() * step_tokens);
        }),
    );
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
        bar.set_message(match eval_curve.last() {
            Some((_, held_out)) => format!("loss {:.3} · held-out {held_out:.3}", report.loss),
            None => format!("loss {:.3}", report.loss),
        });
        bar.inc(1);
    }
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let tokens = args.steps as f64 * step_tokens;
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
    let sample = generate_text(&model, "Elizabeth ", 300, args.seed)?;
    println!("sample: {sample:?}");

    if let Some(path) = &args.plot {
        plot(path, &train_curve, &eval_curve)?;
        println!("loss curve: {}", path.display());
    }
    Ok(())
}

/// `prompt` and `new` sampled bytes after it. The context holds 128 bytes, so the model writes in
/// chunks of 64, each continuing the last 64 bytes written.
fn generate_text(model: &ByteGpt, prompt: &str, new: usize, seed: u64) -> Result<String, Box<dyn Error>> {
    const CHUNK: usize = ByteGpt::MAX_POSITIONS / 2;
    let mut bytes: Vec<u32> = prompt.bytes().map(u32::from).collect();
    let end = bytes.len() + new;
    while bytes.len() < end {
        let options = GenerateOptions {
            max_new_tokens: CHUNK.min(end - bytes.len()),
            sampling: Sampling::Sample { temperature: 0.8, top_k: Some(20), top_p: None },
            stop_tokens: vec![],
            seed: seed + bytes.len() as u64,
        };
        let context = &bytes[bytes.len().saturating_sub(CHUNK)..];
        let written = model.generate(&[context], &options)?;
        bytes.extend(&written[0]);
    }
    let bytes: Vec<u8> = bytes.iter().map(|&t| t as u8).collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The training loss (a moving average over 20 steps) and the held-out loss against the step,
/// as a PNG (drawn with the DejaVu Sans that the `dejavu` crate embeds, so no system font is
/// needed) or, for any other extension, an SVG.
fn plot(path: &Path, train: &[(u64, f32)], eval: &[(u64, f32)]) -> Result<(), Box<dyn Error>> {
    use plotters::prelude::*;
    const SIZE: (u32, u32) = (720, 400);
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")) {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "DejaVu Sans is not a font ab_glyph reads")?;
        let mut pixels = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
        draw(BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area(), train, eval)?;
        let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, pixels)
            .ok_or("the plot's buffer has the wrong size")?;
        Ok(image.save(path)?)
    } else {
        draw(SVGBackend::new(path, SIZE).into_drawing_area(), train, eval)
    }
}

fn draw<B: plotters::prelude::DrawingBackend>(
    root: plotters::prelude::DrawingArea<B, plotters::coord::Shift>,
    train: &[(u64, f32)],
    eval: &[(u64, f32)],
) -> Result<(), Box<dyn Error>>
where
    B::ErrorType: 'static,
{
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
    root.fill(&WHITE)?;
    let caption = format!(
        "Byte-level GPT ({:.2} M parameters) trained from scratch on Pride and Prejudice",
        ByteGptTrainer::PARAMETERS as f64 / 1e6
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
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
        .label("held-out tenth of the text")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED));
    chart.draw_series(eval.iter().map(|&p| Circle::new(p, 3, RED.filled())))?;
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
