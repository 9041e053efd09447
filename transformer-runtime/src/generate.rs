//! Text generation over any causal language model: prefill the prompts in one batched pass, then
//! one cached step per new token; greedy or sampled (temperature, top-k, top-p) with a seeded RNG.

use ndarray::ArrayView2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Batch, Error, KvCache, Result, Workspace};

/// What generation needs from a causal language model. Generated decoder models implement it.
pub trait CausalLm: Sync {
    /// Logits rows are this wide.
    fn vocab_size(&self) -> usize;

    /// Longest sequence (prompt plus generated tokens) the model can hold.
    fn max_positions(&self) -> usize;

    /// A cache for `batch` sequences with room for `max_positions` tokens each.
    fn new_cache(&self, batch: usize) -> KvCache;

    /// Runs `batch`'s tokens as the continuation of each cached sequence (sequence `b` starts at
    /// position `cache.lens()[b]`; right padding allowed), appends their keys and values to the
    /// cache, and returns the logits of each sequence's last real new token:
    /// `batch.batch_size() × vocab_size()` floats, row-major.
    fn step<'w>(&self, batch: &Batch, cache: &mut KvCache, workspace: &'w mut Workspace)
        -> Result<&'w [f32]>;
}

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties go to the lowest id, like `argmax`).
    Greedy,
    /// A draw from `softmax(logits / temperature)`, restricted to the `top_k` most likely tokens
    /// and then to the smallest set whose probability reaches `top_p`.
    Sample { temperature: f32, top_k: Option<usize>, top_p: Option<f32> },
}

/// Generation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Tokens to generate per prompt (fewer when a stop token comes first).
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Generation of a sequence ends after it produces one of these (the stop token is included).
    pub stop_tokens: Vec<u32>,
    /// Seed of the sampling RNG: the same seed, prompts and options give the same tokens.
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { max_new_tokens: 32, sampling: Sampling::Greedy, stop_tokens: Vec::new(), seed: 0 }
    }
}

/// Generates up to `options.max_new_tokens` tokens after each prompt and returns them (the new
/// tokens only, a stop token included), one `Vec` per prompt.
///
/// All prompts are prefilled in one batched [`CausalLm::step`] (right-padded), then every step
/// feeds one token per sequence. A sequence that produced a stop token stops growing (it is fed
/// its stop token again as a dummy while the others continue, and that output is ignored);
/// generation ends as soon as every sequence is finished. One cache and one workspace serve the
/// whole run.
///
/// Sampling is reproducible: sequence `b` draws from its own ChaCha8 stream `b` seeded with
/// `options.seed`, so its tokens depend only on its prompt, its index and the options.
///
/// Errors: [`Error::BadGenerateOption`] for an option out of range, [`Error::EmptyBatch`] /
/// [`Error::EmptySequence`] for no prompt or an empty one, [`Error::ContextFull`] (before any
/// work) when a prompt plus `max_new_tokens` exceeds `model.max_positions()`, and whatever the
/// model's `step` reports (e.g. a token id out of range).
pub fn generate<M: CausalLm + ?Sized>(
    model: &M,
    prompts: &[&[u32]],
    options: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    validate(model.max_positions(), prompts, options)?;
    let mut run = Run::new(model, prompts.len(), options);
    let mut outputs: Vec<Vec<u32>> =
        prompts.iter().map(|_| Vec::with_capacity(options.max_new_tokens)).collect();
    let mut batch = Batch::from_sequences(prompts)?;
    loop {
        run.step(&batch)?;
        for (b, out) in outputs.iter_mut().enumerate() {
            if run.live[b] {
                out.push(run.next[b][0]);
            }
        }
        if run.all_finished() {
            return Ok(outputs);
        }
        batch = Batch::from_sequences(&run.next)?;
    }
}

/// [`generate`] for prompts given as a padded batch with an attention mask, as a tokenizer or
/// Python code produces them (Hugging Face's `generate(input_ids, attention_mask=…)`), padded on
/// the left or on the right: each row's prompt is the run of positions its mask marks (the ids
/// under mask 0, pad ids or not, are never read). The mask is checked as [`Batch::from_padded`]
/// checks it, and a row whose marked positions are not one contiguous run is
/// [`Error::MaskNotContiguous`]: a prompt cannot have holes.
pub fn generate_padded<M: CausalLm + ?Sized>(
    model: &M,
    ids: ArrayView2<'_, u32>,
    mask: ArrayView2<'_, u32>,
    options: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    Batch::from_padded(ids, mask, None)?;
    let prompts = ids
        .outer_iter()
        .zip(mask.outer_iter())
        .enumerate()
        .map(|(sequence, (ids, mask))| {
            let first = mask.iter().position(|&m| m == 1).unwrap_or(0);
            let end = mask.iter().rposition(|&m| m == 1).map_or(first, |last| last + 1);
            match (first..end).find(|&p| mask[p] == 0) {
                Some(position) => Err(Error::MaskNotContiguous { sequence, position }),
                None => Ok(ids.iter().skip(first).take(end - first).copied().collect::<Vec<u32>>()),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let prompts: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
    generate(model, &prompts, options)
}

/// Generates after one prompt token by token: the returned iterator yields each new token as soon
/// as it is sampled (the prompt is prefilled on the first `next`). Options and the context are
/// checked here, upfront, as in [`generate`]; the stream ends after `max_new_tokens` tokens, after
/// a stop token, or after yielding an error. It yields the same tokens as [`generate`] with this
/// prompt alone.
pub fn stream<'m, M: CausalLm + ?Sized>(
    model: &'m M,
    prompt: &[u32],
    options: &GenerateOptions,
) -> Result<TokenStream<'m, M>> {
    validate(model.max_positions(), &[prompt], options)?;
    Ok(TokenStream { run: Run::new(model, 1, options), prompt: Some(prompt.to_vec()), done: false })
}

/// The tokens of one generation as they are produced; see [`stream`].
pub struct TokenStream<'m, M: CausalLm + ?Sized> {
    run: Run<'m, M>,
    /// The prompt until the prefill has run.
    prompt: Option<Vec<u32>>,
    done: bool,
}

impl<M: CausalLm + ?Sized> std::fmt::Debug for TokenStream<'_, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenStream")
            .field("produced", &self.run.produced)
            .field("max_new_tokens", &self.run.options.max_new_tokens)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<M: CausalLm + ?Sized> Iterator for TokenStream<'_, M> {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Result<u32>> {
        if self.done {
            return None;
        }
        let batch = match self.prompt.take() {
            Some(prompt) => Batch::from_sequences(&[prompt]),
            None => Batch::from_sequences(&self.run.next),
        };
        match batch.and_then(|batch| self.run.step(&batch)) {
            Ok(_) => {
                self.done = self.run.all_finished();
                Some(Ok(self.run.next[0][0]))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (1, Some(self.run.options.max_new_tokens - self.run.produced))
        }
    }
}

/// Generation for a model without a KV cache (a Reformer): every prompt alone, and every new
/// token a full recompute of its sequence so far. `last_logits(batch, workspace, row)` runs the
/// model on `batch` (one sequence, no padding) and writes the logits of its last token into `row`
/// (`vocab` floats).
///
/// Options, errors and sampling are [`generate`]'s (prompt `b` draws from ChaCha8 stream `b`), so
/// greedy decoding gives what a cached model with the same logits would. Prompts run one at a
/// time because batching them would pad them, and a Reformer's padded length changes how its
/// tokens are chunked. Costs a forward pass over the whole sequence per token.
pub fn generate_by_recompute(
    vocab: usize,
    max_positions: usize,
    prompts: &[&[u32]],
    options: &GenerateOptions,
    mut last_logits: impl FnMut(&Batch, &mut Workspace, &mut [f32]) -> Result<()>,
) -> Result<Vec<Vec<u32>>> {
    validate(max_positions, prompts, options)?;
    let (mut workspace, mut row, mut scratch) = (Workspace::new(), vec![0.0; vocab], Vec::new());
    let mut outputs = Vec::with_capacity(prompts.len());
    for (b, prompt) in prompts.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
        rng.set_stream(b as u64);
        let mut sequence = prompt.to_vec();
        let mut out = Vec::with_capacity(options.max_new_tokens);
        while out.len() < options.max_new_tokens {
            last_logits(&Batch::from_sequences(&[&sequence])?, &mut workspace, &mut row)?;
            let token = sample_with(&row, &options.sampling, &mut rng, &mut scratch);
            out.push(token);
            sequence.push(token);
            if options.stop_tokens.contains(&token) {
                break;
            }
        }
        outputs.push(out);
    }
    Ok(outputs)
}

/// Checks the options and the prompts against the model's positions before any work.
fn validate(max: usize, prompts: &[&[u32]], options: &GenerateOptions) -> Result<()> {
    let bad = |option, value: String, expected| Err(Error::BadGenerateOption { option, value, expected });
    if options.max_new_tokens == 0 {
        return bad("max_new_tokens", "0".into(), "generate at least 1 token");
    }
    if let Sampling::Sample { temperature, top_k, top_p } = options.sampling {
        if !(temperature.is_finite() && temperature > 0.0) {
            return bad("temperature", temperature.to_string(), "a finite number greater than 0");
        }
        if top_k == Some(0) {
            return bad("top_k", "0".into(), "at least 1 when given");
        }
        if let Some(p) = top_p {
            if !(p > 0.0 && p <= 1.0) {
                return bad("top_p", p.to_string(), "in (0, 1] when given");
            }
        }
    }
    if prompts.is_empty() {
        return Err(Error::EmptyBatch);
    }
    for (sequence, prompt) in prompts.iter().enumerate() {
        if prompt.is_empty() {
            return Err(Error::EmptySequence { sequence });
        }
        let needed = prompt.len().saturating_add(options.max_new_tokens);
        if needed > max {
            return Err(Error::ContextFull { sequence, needed, max });
        }
    }
    Ok(())
}

/// The state of one generation run over `batch` sequences: cache, workspace, one RNG per
/// sequence, the sampler's scratch, and the last token of each sequence.
struct Run<'m, M: ?Sized> {
    model: &'m M,
    options: GenerateOptions,
    cache: KvCache,
    workspace: Workspace,
    rngs: Vec<ChaCha8Rng>,
    scratch: Vec<(f32, u32)>,
    /// The token each sequence produced last (the next step's input), as one-token sequences.
    next: Vec<[u32; 1]>,
    finished: Vec<bool>,
    /// Which sequences were still live in the last step (their `next` is new output).
    live: Vec<bool>,
    /// Tokens produced per sequence so far (steps run).
    produced: usize,
}

impl<'m, M: CausalLm + ?Sized> Run<'m, M> {
    fn new(model: &'m M, batch: usize, options: &GenerateOptions) -> Self {
        let rngs = (0..batch)
            .map(|b| {
                let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
                rng.set_stream(b as u64);
                rng
            })
            .collect();
        Self {
            model,
            options: options.clone(),
            cache: model.new_cache(batch),
            workspace: Workspace::new(),
            rngs,
            scratch: Vec::new(),
            next: vec![[0]; batch],
            finished: vec![false; batch],
            live: vec![false; batch],
            produced: 0,
        }
    }

    /// Runs `batch` (the prompts, then the last tokens) through the model and samples the next
    /// token of every unfinished sequence into `next`; `live` tells which sequences produced one.
    fn step(&mut self, batch: &Batch) -> Result<()> {
        let vocab = self.model.vocab_size();
        let logits = self.model.step(batch, &mut self.cache, &mut self.workspace)?;
        assert_eq!(
            logits.len(),
            self.next.len() * vocab,
            "CausalLm::step returned {} logits, expected batch × vocab = {} × {vocab}",
            logits.len(),
            self.next.len()
        );
        self.produced += 1;
        for (b, row) in logits.chunks_exact(vocab).enumerate() {
            self.live[b] = !self.finished[b];
            if self.finished[b] {
                continue;
            }
            let token = sample_with(row, &self.options.sampling, &mut self.rngs[b], &mut self.scratch);
            self.next[b] = [token];
            self.finished[b] =
                self.options.stop_tokens.contains(&token) || self.produced >= self.options.max_new_tokens;
        }
        Ok(())
    }

    fn all_finished(&self) -> bool {
        self.finished.iter().all(|&f| f)
    }
}

/// Picks the next token from one row of logits.
///
/// [`Sampling::Greedy`]: the argmax, lowest id on ties, NaN treated as −∞ (all NaN gives 0).
/// [`Sampling::Sample`]: logits divided by the temperature; then, if `top_k` is given, only the
/// `top_k` largest (ties to the lower id); then, if `top_p` is given, only the smallest prefix of
/// those sorted by descending probability whose probability reaches `top_p` (at least one token);
/// then one draw from the softmax over what is left. NaN logits are never drawn. If the scaled
/// logits overflow to +∞ (a tiny temperature) this is the greedy choice.
///
/// The options are not validated here ([`generate`] does that); out-of-range values never panic:
/// `top_k = 0` acts as 1, `top_p ≤ 0` keeps one token, a NaN `top_p` keeps all.
pub fn sample(logits: &[f32], sampling: &Sampling, rng: &mut ChaCha8Rng) -> u32 {
    sample_with(logits, sampling, rng, &mut Vec::new())
}

/// [`sample`] with a reusable scratch buffer (no allocation once it has grown to the vocabulary).
fn sample_with(
    logits: &[f32],
    sampling: &Sampling,
    rng: &mut ChaCha8Rng,
    scratch: &mut Vec<(f32, u32)>,
) -> u32 {
    let Sampling::Sample { temperature, top_k, top_p } = *sampling else {
        return argmax(logits);
    };
    let inv_t = 1.0 / temperature;
    let scaled = |x: f32| {
        let z = x * inv_t;
        if z.is_nan() {
            f32::NEG_INFINITY
        } else {
            z
        }
    };
    let max = logits.iter().map(|&x| scaled(x)).fold(f32::NEG_INFINITY, f32::max);
    if max.is_infinite() {
        // +∞: the temperature limit is the greedy choice; −∞: nothing is drawable.
        return argmax(logits);
    }
    let weight = |z: f32| f64::from((z - max).exp());

    if top_k.is_none() && top_p.is_none() {
        // Plain softmax draw: two passes, no scratch.
        let total: f64 = logits.iter().map(|&x| weight(scaled(x))).sum();
        let mut u = rng.random::<f64>() * total;
        let mut last = 0;
        for (i, &x) in logits.iter().enumerate() {
            let w = weight(scaled(x));
            if w > 0.0 {
                last = i;
                if u < w {
                    return i as u32;
                }
                u -= w;
            }
        }
        return last as u32;
    }

    scratch.clear();
    scratch.extend(
        logits
            .iter()
            .enumerate()
            .map(|(i, &x)| (scaled(x), i as u32))
            .filter(|&(z, _)| z > f32::NEG_INFINITY),
    );
    // Descending by scaled logit, ties to the lower id: a total order, so the result is
    // deterministic.
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if let Some(k) = top_k.map(|k| k.max(1)) {
        if k < scratch.len() {
            scratch.select_nth_unstable_by(k - 1, order);
            scratch.truncate(k);
        }
    }
    scratch.sort_unstable_by(order);
    let total: f64 = scratch.iter().map(|&(z, _)| weight(z)).sum();
    let mut kept = scratch.len();
    let mut kept_total = total;
    if let Some(p) = top_p {
        let target = f64::from(p) * total;
        let mut cum = 0.0;
        for (i, &(z, _)) in scratch.iter().enumerate() {
            cum += weight(z);
            if cum >= target {
                kept = i + 1;
                kept_total = cum;
                break;
            }
        }
    }
    let mut u = rng.random::<f64>() * kept_total;
    for &(z, id) in &scratch[..kept] {
        let w = weight(z);
        if u < w {
            return id;
        }
        u -= w;
    }
    // Rounding left `u` just past the last weight.
    scratch[kept - 1].1
}

/// Index of the largest logit, the lowest on ties; NaN counts as −∞; 0 when nothing is larger
/// than −∞.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &x) in logits.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0 as u32
}
