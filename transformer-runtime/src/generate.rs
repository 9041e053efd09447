//! Text generation over any causal language model: prefill the prompts in one batched pass, then
//! one cached step per new token; greedy or sampled (temperature, top-k, top-p) with a seeded RNG.

use crate::{Batch, KvCache, Result, Workspace};

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
    Sample {
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
    },
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
        Self {
            max_new_tokens: 32,
            sampling: Sampling::Greedy,
            stop_tokens: Vec::new(),
            seed: 0,
        }
    }
}
