//! The long-range experiment of issue #20: a Transformer, an LSTM and a GRU of about the same
//! parameter count, trained with the same optimizer and the same number of steps on associative
//! recall whose answer lies `d` tokens back; accuracy at the answer against `d`, over seeds.
//!
//! ```text
//! cargo run --release --example recurrence -- --task recall --distances 4,16,64,256,1024 --seeds 3 \
//!     --steps 300 --batch 16 --jobs 2 --threads 1 \
//!     --plot docs/img/recurrence_accuracy.svg --out docs/recurrence_results.json
//! cargo run --release --example recurrence -- --smoke      # seconds: tiny distances and steps
//! ```
//!
//! Flags: `--models transformer,lstm,gru`, `--lr 3e-3` or `--lr transformer=3e-3,lstm=1e-2`
//! (each model's peak learning rate), `--eval N` held-out sequences per distance, `--jobs N` runs
//! at a time, `--threads N` per run, `--from results.json` to redraw the table and `--plot`
//! from a finished run without training.
//!
//! The task is in `recurrence/task.rs`, the recurrent models in `recurrence/rnn.rs`; the settings,
//! results and what they say are in `docs/RECURRENCE.md`.

#[path = "recurrence/rnn.rs"]
mod rnn;
#[path = "recurrence/task.rs"]
mod task;

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use transformer::recurrent::{Gru, Lstm};
use transformer::train::optim::{AdamW, AdamWConfig};
use transformer::train::schedule::Schedule;
use transformer::{Threads, Workspace};

use rnn::RnnLm;
use task::Examples;

transformer::model! {
    /// A LLaMA-shaped decoder (RoPE, RMSNorm, SwiGLU, untied head): 2 layers of 64, 2 heads of 32.
    /// Rotary positions carry no parameters, so the count does not grow with the context.
    pub struct RecallTransformer {
        vocab_size: 32,
        max_positions: 2056,
        d_model: 64,
        heads: 2,
        layers: 2,
        d_ff: 176,
        activation: swiglu,
        norm: rms_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: rope,
        rope_theta: 10000.0,
        attention: causal,
        weights: llama,
        lm_head: untied,
        training: causal_lm,
    }
}

/// Embedding 64 → one LSTM layer of 128 → head.
type LstmLm = RnnLm<Lstm<64, 128>, 64, 128>;
/// Embedding 64 → one GRU layer of 150 → head.
type GruLm = RnnLm<Gru<64, 150>, 64, 150>;

const MODELS: [&str; 3] = ["transformer", "lstm", "gru"];

/// Errors cross the worker threads.
type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

#[derive(Debug)]
struct Args {
    distances: Vec<usize>,
    seeds: u64,
    steps: u64,
    batch: usize,
    /// The peak learning rate of each model, in the order of `MODELS`.
    lr: [f64; 3],
    eval: usize,
    threads: usize,
    jobs: usize,
    models: Vec<String>,
    plot: Option<PathBuf>,
    out: Option<PathBuf>,
    /// Results to plot and tabulate again instead of training.
    from: Option<PathBuf>,
}

impl Args {
    /// Each model's best of {1e-3, 3e-3, 1e-2, 3e-2} in the pilot of docs/RECURRENCE.md.
    const DEFAULT_LR: [f64; 3] = [3e-3, 1e-2, 1e-2];
}

fn args() -> Res<Args> {
    let mut a = Args {
        distances: vec![4, 16, 64, 256, 1024],
        seeds: 3,
        steps: 300,
        batch: 16,
        lr: Args::DEFAULT_LR,
        eval: 256,
        threads: 1,
        jobs: 2,
        models: MODELS.map(String::from).to_vec(),
        plot: None,
        out: None,
        from: None,
    };
    let list = |s: String| s.split(',').map(str::to_owned).collect::<Vec<_>>();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--task" => {
                let task = value()?;
                if task != "recall" {
                    return Err(format!("unknown task {task}: the one task is `recall`").into());
                }
            }
            "--distances" => {
                a.distances = list(value()?).iter().map(|d| d.parse()).collect::<Result<_, _>>()?
            }
            "--seeds" => a.seeds = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--batch" => a.batch = value()?.parse()?,
            "--lr" => a.lr = learning_rates(&value()?)?,
            "--eval" => a.eval = value()?.parse()?,
            "--threads" => a.threads = value()?.parse()?,
            "--jobs" => a.jobs = value()?.parse()?,
            "--models" => a.models = list(value()?),
            "--plot" => a.plot = Some(value()?.into()),
            "--out" => a.out = Some(value()?.into()),
            "--from" => a.from = Some(value()?.into()),
            "--smoke" => {
                (a.distances, a.seeds, a.steps, a.batch, a.eval) = (vec![4, 16], 1, 10, 8, 16);
            }
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    for m in &a.models {
        if !MODELS.contains(&m.as_str()) {
            return Err(format!("unknown model {m}: one of {MODELS:?}").into());
        }
    }
    for &d in &a.distances {
        if d == 0 || task::seq_len(d) > RecallTransformer::MAX_POSITIONS {
            let most = RecallTransformer::MAX_POSITIONS - task::seq_len(0);
            return Err(format!("distance {d} is not in 1..={most}").into());
        }
    }
    if [a.seeds as usize, a.steps as usize, a.batch, a.eval, a.threads, a.jobs].contains(&0) {
        return Err("--seeds, --steps, --batch, --eval, --threads and --jobs must be positive".into());
    }
    Ok(a)
}

/// `--lr 3e-3` (every model) or `--lr transformer=3e-3,gru=1e-2` (the others keep their default).
fn learning_rates(text: &str) -> Res<[f64; 3]> {
    if let Ok(lr) = text.parse() {
        return Ok([lr; 3]);
    }
    let mut lr = Args::DEFAULT_LR;
    for item in text.split(',') {
        let (model, value) =
            item.split_once('=').ok_or_else(|| format!("--lr {text}: expected model=value"))?;
        let i =
            MODELS.iter().position(|m| *m == model).ok_or_else(|| format!("--lr: unknown model {model}"))?;
        lr[i] = value.parse()?;
    }
    Ok(lr)
}

fn lr_of(args: &Args, model: &str) -> f64 {
    args.lr[MODELS.iter().position(|m| *m == model).expect("models are checked")]
}

/// AdamW for every model: betas (0.9, 0.98), weight decay 0.01 on matrices and embeddings.
fn adamw_config() -> AdamWConfig {
    AdamWConfig { betas: (0.9, 0.98), ..AdamWConfig::with_weight_decay(0.01) }
}

/// Gradients are clipped to this global norm.
const MAX_NORM: f32 = 1.0;

/// One model under training, whichever its kind.
enum Learner {
    Transformer { trainer: Box<RecallTransformerTrainer>, adamw: AdamW, threads: Threads },
    Lstm(Box<LstmLm>),
    Gru(Box<GruLm>),
}

impl Learner {
    fn new(kind: &str, seed: u64, threads: usize) -> Res<Self> {
        Ok(match kind {
            "transformer" => {
                let trainer =
                    RecallTransformerTrainer::from_scratch(seed).with_threads(Threads::new(threads)?);
                let adamw = trainer.optimizer(adamw_config())?;
                Learner::Transformer { trainer: Box::new(trainer), adamw, threads: Threads::new(threads)? }
            }
            "lstm" => Learner::Lstm(Box::new(LstmLm::new(seed, adamw_config(), Threads::new(threads)?)?)),
            "gru" => Learner::Gru(Box::new(GruLm::new(seed, adamw_config(), Threads::new(threads)?)?)),
            other => unreachable!("model {other} was checked"),
        })
    }

    fn parameters(&self) -> usize {
        match self {
            Learner::Transformer { .. } => RecallTransformerTrainer::PARAMETERS,
            Learner::Lstm(m) => m.parameters(),
            Learner::Gru(m) => m.parameters(),
        }
    }

    /// One optimizer step; the batch's loss.
    fn step(&mut self, examples: &Examples, lr: f64) -> Res<f32> {
        Ok(match self {
            Learner::Transformer { trainer, adamw, .. } => {
                trainer.step_labelled(&examples.batch, &examples.labels, adamw, lr, Some(MAX_NORM))?.loss
            }
            Learner::Lstm(m) => m.step(examples, lr, MAX_NORM)?,
            Learner::Gru(m) => m.step(examples, lr, MAX_NORM)?,
        })
    }

    /// Queries answered right over every batch of `eval`.
    fn correct(&mut self, eval: &[Examples]) -> Res<usize> {
        Ok(match self {
            Learner::Transformer { trainer, threads, .. } => {
                // The trained weights, saved under LLaMA's names, load into the inference model,
                // whose `logits_into` gives every row's logits.
                let name = format!(
                    "recurrence-{}-{:?}.safetensors",
                    std::process::id(),
                    std::thread::current().id()
                );
                let path = std::env::temp_dir().join(name.replace(['(', ')'], ""));
                trainer.save(&path)?;
                let model = RecallTransformer::from_safetensors(&path)?.with_threads(threads.clone());
                std::fs::remove_file(&path)?;
                let mut workspace = Workspace::new();
                let mut correct = 0;
                for examples in eval {
                    correct += examples.correct(model.logits_into(&examples.batch, &mut workspace)?);
                }
                correct
            }
            Learner::Lstm(m) => eval.iter().map(|e| m.correct(e)).sum(),
            Learner::Gru(m) => eval.iter().map(|e| m.correct(e)).sum(),
        })
    }
}

/// One trained model at one distance and seed.
#[derive(Debug, Clone)]
struct Run {
    model: String,
    d: usize,
    seed: u64,
    accuracy: f64,
    /// The mean training loss over the last tenth of the steps.
    final_loss: f64,
    train_seconds: f64,
    tokens_per_s: f64,
}

/// One run to make: a model at a distance from a seed.
#[derive(Debug)]
struct Job {
    d: usize,
    seed: u64,
    model: String,
}

fn main() -> Res<()> {
    let args = args()?;
    if args.from.is_some() {
        return replot(args);
    }
    let mut parameters = Vec::new();
    for kind in &args.models {
        parameters.push((kind.clone(), Learner::new(kind, 0, 1)?.parameters()));
    }
    println!("task: associative recall, vocabulary {}, chance 1/{}", task::VOCAB, task::VALUES);
    for (kind, count) in &parameters {
        println!("{kind:>12}: {count} parameters, peak lr {}", lr_of(&args, kind));
    }
    println!(
        "{} steps of {} sequences, AdamW (warmup 5 %, cosine), clip {MAX_NORM}; {} runs at a time on {} threads each; {} held-out sequences per distance",
        args.steps, args.batch, args.jobs, args.threads, args.eval
    );

    // Held out: the same sequences for every model and seed at a distance.
    let mut eval = Vec::new();
    for &d in &args.distances {
        let mut rng = ChaCha8Rng::seed_from_u64(1_000_000 + d as u64);
        let size = args.batch.max(32);
        let batches: Vec<Examples> = (0..args.eval.div_ceil(size))
            .map(|i| Examples::sample(d, size.min(args.eval - i * size), &mut rng))
            .collect::<Result<_, _>>()?;
        eval.push((d, batches));
    }
    // The longest sequences first: with several runs at a time, the long ones do not end up last
    // and alone.
    let mut jobs = Vec::new();
    for &d in &args.distances {
        for seed in 0..args.seeds {
            for model in &args.models {
                jobs.push(Job { d, seed, model: model.clone() });
            }
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse((j.d, j.model == "transformer")));

    let bar = ProgressBar::new(jobs.len() as u64 * args.steps);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} steps · {msg} · elapsed {elapsed_precise} · ETA {eta}",
    )?);
    let started = Instant::now();
    let runs: Mutex<Vec<Run>> = Mutex::new(Vec::new());
    let next = AtomicUsize::new(0);
    let worker = || -> Res<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else { return Ok(()) };
            let eval = &eval.iter().find(|e| e.0 == job.d).expect("every distance has a held-out set").1;
            let run = train(&args, job, eval, &bar)?;
            let line = format!(
                "{:>12} d={:<5} seed={}: accuracy {:.3}, final loss {:.3}, {:.0} s, {:.0} tokens/s",
                run.model, run.d, run.seed, run.accuracy, run.final_loss, run.train_seconds, run.tokens_per_s
            );
            // A bar on a terminal prints above itself; without one (output to a file) it is hidden
            // and prints nothing.
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
            let mut runs = runs.lock().expect("no worker panicked");
            runs.push(run);
            // Written after every run, so a run cut short keeps what it measured.
            if let Some(out) = &args.out {
                write_json(out, &args, &parameters, &runs, started.elapsed().as_secs_f64())?;
            }
        }
    };
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.jobs).map(|_| scope.spawn(worker)).collect();
        workers.into_iter().map(|w| w.join().expect("a worker panicked")).collect::<Res<Vec<()>>>()
    })?;
    bar.finish();
    let total = started.elapsed().as_secs_f64();
    let runs = runs.into_inner().expect("no worker panicked");
    println!("\n{}", table(&args, &runs));
    println!("total {total:.0} s");
    if let Some(out) = &args.out {
        write_json(out, &args, &parameters, &runs, total)?;
        println!("results: {}", out.display());
    }
    if let Some(path) = &args.plot {
        plot(path, &args, &parameters, &runs)?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

/// The table and (with `--plot`) the plot of the results file `--from` names, which this command
/// wrote.
fn replot(mut args: Args) -> Res<()> {
    let from = args.from.take().expect("replot is asked for with --from");
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&from)?)?;
    let bad = || format!("{}: not a results file of this command", from.display());
    let settings = &value["settings"];
    let number = |v: &serde_json::Value| v.as_u64().ok_or_else(bad);
    args.distances = settings["distances"]
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|d| number(d).map(|d| d as usize))
        .collect::<Result<_, _>>()?;
    (args.seeds, args.steps, args.batch) =
        (number(&settings["seeds"])?, number(&settings["steps"])?, number(&settings["batch"])? as usize);
    let mut parameters = Vec::new();
    for m in value["models"].as_array().ok_or_else(bad)? {
        parameters
            .push((m["model"].as_str().ok_or_else(bad)?.to_owned(), number(&m["parameters"])? as usize));
    }
    args.models = parameters.iter().map(|p| p.0.clone()).collect();
    let mut runs = Vec::new();
    for r in value["runs"].as_array().ok_or_else(bad)? {
        let float = |key: &str| r[key].as_f64().ok_or_else(bad);
        runs.push(Run {
            model: r["model"].as_str().ok_or_else(bad)?.to_owned(),
            d: number(&r["d"])? as usize,
            seed: number(&r["seed"])?,
            accuracy: float("accuracy")?,
            final_loss: float("final_loss")?,
            train_seconds: float("train_seconds")?,
            tokens_per_s: float("tokens_per_s")?,
        });
    }
    println!("{}", table(&args, &runs));
    if let Some(path) = &args.plot {
        plot(path, &args, &parameters, &runs)?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

/// Trains `job`'s model for `args.steps` steps and scores it on `eval`.
fn train(args: &Args, job: &Job, eval: &[Examples], bar: &ProgressBar) -> Res<Run> {
    let Job { d, seed, ref model } = *job;
    let mut learner = Learner::new(model, seed, args.threads)?;
    let schedule = Schedule::cosine_with_warmup(lr_of(args, model), args.steps / 20, args.steps);
    // Every model at this distance and seed sees the same training batches.
    let mut rng = ChaCha8Rng::seed_from_u64(seed * 100_003 + d as u64);
    let (mut losses, mut seconds, mut tokens) = (Vec::new(), 0.0, 0usize);
    for step in 0..args.steps {
        let examples = Examples::sample(d, args.batch, &mut rng)?;
        let t = Instant::now();
        let loss = learner.step(&examples, schedule.lr(step))?;
        seconds += t.elapsed().as_secs_f64();
        tokens += examples.tokens();
        losses.push(f64::from(loss));
        bar.set_message(format!("{model} d={d} seed={seed} loss {loss:.3}"));
        bar.inc(1);
    }
    let correct = learner.correct(eval)?;
    let tail = &losses[losses.len() - (losses.len() / 10).max(1)..];
    Ok(Run {
        model: model.clone(),
        d,
        seed,
        accuracy: correct as f64 / args.eval as f64,
        final_loss: tail.iter().sum::<f64>() / tail.len() as f64,
        train_seconds: seconds,
        tokens_per_s: tokens as f64 / seconds,
    })
}

/// Mean, sample standard deviation, min and max.
fn stats(values: &[f64]) -> (f64, f64, f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, var.sqrt(), min, max)
}

/// The runs of one model at one distance.
fn of<'a>(runs: &'a [Run], model: &'a str, d: usize) -> impl Iterator<Item = &'a Run> + 'a {
    runs.iter().filter(move |r| r.model == model && r.d == d)
}

/// A Markdown table: accuracy mean ± std (min–max) and training tokens/s per model and distance.
fn table(args: &Args, runs: &[Run]) -> String {
    let mut s =
        String::from("| d | model | accuracy, mean ± std | min – max | seeds | training tokens/s |\n");
    s += "|---|---|---|---|---|---|\n";
    for &d in &args.distances {
        for m in &args.models {
            let acc: Vec<f64> = of(runs, m, d).map(|r| r.accuracy).collect();
            if acc.is_empty() {
                continue;
            }
            let speed: Vec<f64> = of(runs, m, d).map(|r| r.tokens_per_s).collect();
            let (mean, std, min, max) = stats(&acc);
            s += &format!(
                "| {d} | {m} | {mean:.3} ± {std:.3} | {min:.3} – {max:.3} | {} | {:.0} |\n",
                acc.len(),
                stats(&speed).0
            );
        }
    }
    s
}

fn write_json(
    path: &PathBuf,
    args: &Args,
    parameters: &[(String, usize)],
    runs: &[Run],
    seconds: f64,
) -> Res<()> {
    let mut summary = Vec::new();
    for &d in &args.distances {
        for m in &args.models {
            let acc: Vec<f64> = of(runs, m, d).map(|r| r.accuracy).collect();
            if acc.is_empty() {
                continue;
            }
            let speed: Vec<f64> = of(runs, m, d).map(|r| r.tokens_per_s).collect();
            let (mean, std, min, max) = stats(&acc);
            summary.push(json!({
                "model": m, "d": d, "seeds": acc.len(), "accuracy_mean": mean, "accuracy_std": std,
                "accuracy_min": min, "accuracy_max": max, "tokens_per_s_mean": stats(&speed).0,
            }));
        }
    }
    let config = adamw_config();
    let value = json!({
        "task": {
            "name": "associative recall, one key, value d positions before the query",
            "sequence": "6 noise, KEY, value, d-1 noise, KEY (query); d + 8 tokens",
            "vocabulary": task::VOCAB, "values": task::VALUES, "chance": 1.0 / f64::from(task::VALUES),
        },
        "settings": {
            "distances": args.distances, "seeds": args.seeds, "steps": args.steps, "batch": args.batch,
            "peak_lr": MODELS.iter().zip(args.lr).filter(|(m, _)| args.models.iter().any(|a| a == *m)).map(|(m, lr)| json!({ "model": m, "lr": lr })).collect::<Vec<_>>(),
            "schedule": "linear warmup over 5 % of the steps, then cosine to 0",
            "adamw": { "betas": [config.betas.0, config.betas.1], "eps": config.eps,
                       "weight_decay": config.groups[0].weight_decay },
            "max_grad_norm": MAX_NORM, "eval_sequences": args.eval, "threads_per_run": args.threads, "runs_at_a_time": args.jobs,
        },
        "models": parameters.iter().map(|(m, p)| json!({ "model": m, "parameters": p, "shape": shape(m) })).collect::<Vec<_>>(),
        "summary": summary,
        "runs": runs.iter().map(|r| json!({
            "model": r.model, "d": r.d, "seed": r.seed, "accuracy": r.accuracy, "final_loss": r.final_loss,
            "train_seconds": r.train_seconds, "tokens_per_s": r.tokens_per_s,
        })).collect::<Vec<_>>(),
        "total_seconds": seconds,
    });
    std::fs::write(path, format!("{value:#}\n"))?;
    Ok(())
}

fn shape(model: &str) -> &'static str {
    match model {
        "transformer" => {
            "LLaMA-style decoder: d_model 64, 2 layers, 4 heads, SwiGLU d_ff 176, RMSNorm, RoPE, untied head"
        }
        "lstm" => "embedding 64 -> LSTM(64, 128), 1 layer -> linear 128 -> 32",
        _ => "embedding 64 -> GRU(64, 150), 1 layer -> linear 150 -> 32",
    }
}

/// Accuracy against distance (log scale): the mean over seeds, a bar from the worst seed to the
/// best, and chance.
fn plot(path: &PathBuf, args: &Args, parameters: &[(String, usize)], runs: &[Run]) -> Res<()> {
    use plotters::prelude::*;
    let (lo, hi) =
        (*args.distances.iter().min().unwrap() as f64, *args.distances.iter().max().unwrap() as f64);
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "Associative recall at distance d: {} steps of {} sequences, {} seeds",
        args.steps, args.batch, args.seeds
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        // Up to 1.3: the legend sits above the data, which ends at 1.
        .build_cartesian_2d(
            (lo / 1.5..hi * 1.5)
                .log_scale()
                .with_key_points(args.distances.iter().map(|&d| d as f64).collect()),
            0f64..1.3,
        )?;
    chart
        .configure_mesh()
        .x_desc("d: tokens between the value and the query (log scale)")
        .y_desc("accuracy at the answer")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_labels(14)
        .y_label_formatter(&|y| if *y <= 1.0 + 1e-9 { format!("{y:.1}") } else { String::new() })
        .draw()?;
    let chance = 1.0 / f64::from(task::VALUES);
    chart
        .draw_series(LineSeries::new([(lo / 1.5, chance), (hi * 1.5, chance)], BLACK.mix(0.5)))?
        .label("chance (1/16)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.mix(0.5)));
    let colors = [BLUE, RED, RGBColor(0, 150, 0)];
    for (i, m) in args.models.iter().enumerate() {
        let color = colors[MODELS.iter().position(|k| k == m).unwrap_or(i) % colors.len()];
        // Models side by side at each distance, so their bars do not overlap.
        let shift = 1.0 + 0.06 * (i as f64 - (args.models.len() as f64 - 1.0) / 2.0);
        let mut points = Vec::new();
        for &d in &args.distances {
            let acc: Vec<f64> = of(runs, m, d).map(|r| r.accuracy).collect();
            if acc.is_empty() {
                continue;
            }
            let (mean, _, min, max) = stats(&acc);
            let x = d as f64 * shift;
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, min), (x, max)],
                color.stroke_width(2),
            )))?;
            points.push((x, mean));
        }
        let count = parameters.iter().find(|p| &p.0 == m).map_or(0, |p| p.1);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{m} ({:.0}k parameters)", count as f64 / 1000.0))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
