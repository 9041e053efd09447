//! The task: associative recall of one key at distance `d` (the single-query case of Zoology's
//! multi-query associative recall, Arora et al. 2023; H3's associative recall, Fu et al. 2023).
//!
//! ```text
//! position   0 … 5      6     7       8 … d+6          d+7
//! token      noise      KEY   value   noise (d−1)      KEY   → label: value
//! ```
//!
//! A sequence is `d + 8` tokens: six noise tokens, the key, its value, `d − 1` noise tokens and the
//! key again as the query. The only label is at the query, and it is the value, which is exactly
//! `d` positions back. Values are 16 tokens; noise is drawn uniformly from every token but the key,
//! values included, so the model has to pick out the value that follows the key, not just the only
//! value it saw. Chance is 1/16.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use transformer::train::loss::IGNORE_INDEX;
use transformer::Batch;

/// Values are the tokens `0..VALUES`.
pub const VALUES: u32 = 16;
/// The key: the marker before the value, and the query at the end.
pub const KEY: u32 = 31;
/// Values, 15 noise-only tokens and the key.
pub const VOCAB: usize = 32;
/// Noise tokens before the key.
const PREFIX: usize = 6;

/// Tokens in a sequence whose answer is `d` positions before the query.
pub fn seq_len(d: usize) -> usize {
    PREFIX + d + 2
}

/// A batch of sequences at one distance, its labels (the value at each query row, `-100`
/// elsewhere) and the answers in sequence order.
#[derive(Debug)]
pub struct Examples {
    pub batch: Batch,
    pub labels: Vec<i64>,
    pub answers: Vec<u32>,
}

impl Examples {
    /// `sequences` fresh sequences at distance `d` (at least 1), drawn from `rng`.
    pub fn sample(d: usize, sequences: usize, rng: &mut ChaCha8Rng) -> transformer::Result<Self> {
        assert!(d >= 1, "the distance is at least 1");
        let t = seq_len(d);
        let mut all = Vec::with_capacity(sequences);
        let mut labels = vec![IGNORE_INDEX; sequences * t];
        let mut answers = Vec::with_capacity(sequences);
        for b in 0..sequences {
            let mut s: Vec<u32> = (0..t).map(|_| rng.random_range(0..KEY)).collect();
            let value = rng.random_range(0..VALUES);
            s[PREFIX] = KEY;
            s[PREFIX + 1] = value;
            s[t - 1] = KEY;
            labels[b * t + t - 1] = i64::from(value);
            answers.push(value);
            all.push(s);
        }
        Ok(Examples { batch: Batch::from_sequences(&all)?, labels, answers })
    }

    /// Tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.batch.rows()
    }

    /// The query rows, one per sequence (its last token).
    pub fn query_rows(&self) -> impl Iterator<Item = usize> + '_ {
        let t = self.batch.seq_len();
        (0..self.batch.batch_size()).map(move |b| b * t + t - 1)
    }

    /// How many queries `logits` (one row per token) answer right: the argmax over the whole
    /// vocabulary is the value.
    pub fn correct<L: AsRef<[f32]>>(&self, logits: &[L]) -> usize {
        self.query_rows()
            .zip(&self.answers)
            .filter(|&(row, &answer)| argmax(logits[row].as_ref()) == answer)
            .count()
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}
