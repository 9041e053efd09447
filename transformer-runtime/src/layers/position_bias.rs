//! Additive position biases on the attention scores: T5's learned relative-position buckets
//! ([`RelativeBias`]) and ALiBi's fixed linear slopes ([`Alibi`]).
//!
//! Both depend only on the offset `key − query` (and the head), so each is expanded once, at load,
//! into a [`PositionBias`] table of one row per head over the offsets
//! `−(max_positions − 1)..=(max_positions − 1)`. The attention kernel then adds
//! `table[h·span + center + j − p]` to each score: no bucket logarithm or slope multiply per score,
//! and a cached decode step looks up the same entries a full recompute does.

use crate::kernels::attention::PositionBias;
use crate::WeightLoader;

/// T5's relative position buckets (HF `T5Attention._relative_position_bucket`, reproduced exactly incl. its float32 log arithmetic).
///
/// `relative` is `key position − query position`. Bidirectional (encoder): half of the buckets are
/// for keys after the query (`relative > 0`); unidirectional (decoder): keys after the query all
/// share bucket 0 with offset 0. Of the `n` buckets of a direction, the first `n/2` are the exact
/// distances `0..n/2`, the rest are logarithmically wider bins up to `max_distance`, past which
/// every distance lands in the last bucket.
///
/// The bin of a large distance `d` is, as in transformers (torch float32 ops, then truncation):
/// `n/2 + trunc(f32(ln(f32(d) / f32(n/2)) / f32(ln(max_distance / (n/2))) · f32(n − n/2)))`.
/// Rounding matters: for T5's defaults (32 buckets, distance 128) the distances 16, 32 and 64 sit
/// exactly on bin boundaries, where the f32 and the exact quotient can truncate differently, and
/// the bucket is an integer that must match torch's. The test fixture
/// (`scripts/reference/position_bias.py`) checks every offset in −300..=300 for several settings.
///
/// # Panics
///
/// If a direction has fewer than 2 buckets (`buckets < 4` bidirectional, `< 2` unidirectional) or
/// `max_distance ≤ n/2`: transformers divides by zero (or by a non-positive logarithm) there. These
/// are model-configuration constants, checked before any weight is loaded.
pub fn t5_bucket(relative: i64, bidirectional: bool, buckets: usize, max_distance: usize) -> usize {
    let n = if bidirectional { buckets / 2 } else { buckets };
    let max_exact = n / 2;
    assert!(
        max_exact >= 1 && max_distance > max_exact,
        "T5 relative buckets: {buckets} buckets (bidirectional: {bidirectional}) and max distance \
         {max_distance} need at least 2 buckets per direction and max_distance > {max_exact}"
    );
    let (offset, distance) = if bidirectional {
        (if relative > 0 { n } else { 0 }, relative.unsigned_abs())
    } else {
        (0, relative.min(0).unsigned_abs())
    };
    if distance < max_exact as u64 {
        return offset + distance as usize;
    }
    // torch: `relative_position.float() / max_exact` (f32), `torch.log` (f32), divided by the
    // Python float `math.log(max_distance / max_exact)` (cast to f32 by the op) and multiplied by
    // the int `num_buckets − max_exact`, then `.to(torch.long)` (truncation; the value is ≥ 0).
    let log_ratio = (distance as f32 / max_exact as f32).ln();
    let log_max = (max_distance as f64 / max_exact as f64).ln() as f32;
    let large = max_exact + (log_ratio / log_max * (n - max_exact) as f32) as usize;
    offset + large.min(n - 1)
}

/// The offsets `−(max_positions − 1)..=(max_positions − 1)` of a table: `(span, center)`.
fn offsets(max_positions: usize) -> (usize, usize) {
    assert!(max_positions >= 1, "position bias: max_positions must be positive");
    let span = max_positions
        .checked_mul(2)
        .and_then(|x| x.checked_sub(1))
        .expect("position bias: 2 · max_positions overflows usize");
    (span, max_positions - 1)
}

/// T5's learned relative attention bias, expanded at load into a per-offset table for offsets −(max_positions−1)..=(max_positions−1): span = 2·max_positions − 1, center = max_positions − 1.
///
/// Entry `center + d` of head `h`'s row is `weight[t5_bucket(d, …)][h]`. T5 computes the bias in
/// its first layer and every layer reuses it, so one `RelativeBias` serves the whole stack (one
/// for the encoder, bidirectional; one for the decoder, unidirectional).
#[derive(Clone, Debug)]
pub struct RelativeBias {
    table: Vec<f32>,
    heads: usize,
    span: usize,
    center: usize,
}

impl RelativeBias {
    /// `name` is the `[buckets, heads]` tensor `…relative_attention_bias.weight`.
    ///
    /// A missing or misshapen tensor is recorded by the loader (reported by `finish`), and the
    /// table is built from its zeros meanwhile. Panics as [`t5_bucket`] on an invalid bucket
    /// configuration.
    pub fn load(
        loader: &mut WeightLoader,
        name: &str,
        heads: usize,
        buckets: usize,
        max_distance: usize,
        bidirectional: bool,
        max_positions: usize,
    ) -> Self {
        let shape = [buckets, heads];
        let weight = loader.take(name, &shape);
        Self::from_weight(&weight, heads, buckets, max_distance, bidirectional, max_positions)
    }

    /// The table from the `[buckets, heads]` embedding weight (row-major, as `nn.Embedding` stores
    /// it). Panics if `weight` has not `buckets · heads` floats, or as [`t5_bucket`].
    pub fn from_weight(
        weight: &[f32],
        heads: usize,
        buckets: usize,
        max_distance: usize,
        bidirectional: bool,
        max_positions: usize,
    ) -> Self {
        assert!(heads > 0, "T5 relative bias: heads must be positive");
        assert_eq!(
            Some(weight.len()),
            buckets.checked_mul(heads),
            "T5 relative bias: weight has {} floats, expected buckets × heads = {buckets} × {heads}",
            weight.len()
        );
        let (span, center) = offsets(max_positions);
        let mut table =
            vec![0.0; heads.checked_mul(span).expect("T5 relative bias: table size overflows usize")];
        for i in 0..span {
            let bucket = t5_bucket(i as i64 - center as i64, bidirectional, buckets, max_distance);
            for (h, &w) in weight[bucket * heads..][..heads].iter().enumerate() {
                table[h * span + i] = w;
            }
        }
        Self { table, heads, span, center }
    }

    /// The table as the attention kernels take it.
    pub fn bias(&self) -> PositionBias<'_> {
        PositionBias { table: &self.table, span: self.span, center: self.center }
    }

    /// Number of heads (rows of the table).
    pub fn heads(&self) -> usize {
        self.heads
    }
}

/// ALiBi (BLOOM / Press et al.): score += slope_h · (j − p), slopes as HF `build_alibi_tensor` (closest power of two + interleaved extra slopes for non-power-of-two head counts).
///
/// BLOOM adds `slope_h · j` (the key's position only); the softmax of a row is unchanged by the
/// constant `−slope_h · p`, and `j − p` is what keeps the table a function of the offset (and the
/// scores small at long positions). Offsets `−(max_positions − 1)..=(max_positions − 1)`.
#[derive(Clone, Debug)]
pub struct Alibi {
    table: Vec<f32>,
    heads: usize,
    span: usize,
    center: usize,
}

impl Alibi {
    /// The table for `heads` heads and positions `0..max_positions`.
    pub fn new(heads: usize, max_positions: usize) -> Self {
        let slopes = Self::slopes(heads);
        let (span, center) = offsets(max_positions);
        let mut table = vec![0.0; heads.checked_mul(span).expect("ALiBi: table size overflows usize")];
        for (row, &slope) in table.chunks_exact_mut(span).zip(&slopes) {
            for (i, x) in row.iter_mut().enumerate() {
                *x = slope * (i as i64 - center as i64) as f32;
            }
        }
        Self { table, heads, span, center }
    }

    /// The table of a bidirectional model (MosaicBERT): `−slope_h · |j − p|`, so keys on either
    /// side of the query are penalised by their distance. For keys at or before the query
    /// (`j ≤ p`) it equals [`Alibi::new`]'s table bit for bit (`slope · (−d)` and `−(slope · d)`
    /// round alike), so a causal model may use either.
    pub fn symmetric(heads: usize, max_positions: usize) -> Self {
        let mut alibi = Self::new(heads, max_positions);
        let center = alibi.center;
        for row in alibi.table.chunks_exact_mut(alibi.span) {
            for x in &mut row[center + 1..] {
                *x = -*x;
            }
        }
        alibi
    }

    /// The per-head slopes of `build_alibi_tensor`: with `c` the largest power of two ≤ `heads`,
    /// `base^1..=base^c` for `base = 2^(−8/c)`, then for the remaining `heads − c` heads the odd
    /// powers `b^1, b^3, …` of `b = 2^(−8/(2c))` (the slopes a model of `2c` heads would have that
    /// fall between the first ones).
    ///
    /// `base` is rounded to f32 as torch does, and each power is the correctly rounded f32 of the
    /// exact power of that base. torch's vectorised `pow` is within 1 ulp of it and agrees for
    /// every head count up to 31; from 32 heads on a few slopes differ by 1 ulp (e.g. the 15th of
    /// 32), which changes a score by at most `1 ulp · |j − p|` of the slope's share.
    pub fn slopes(heads: usize) -> Vec<f32> {
        assert!(heads > 0, "ALiBi: heads must be positive");
        let closest = 1usize << heads.ilog2();
        // Python: `2 ** (-(2 ** -(math.log2(c) - 3)))` in double, then a float32 tensor.
        let powers = |c: usize, exponents: &mut dyn Iterator<Item = usize>| -> Vec<f32> {
            let base = 2f64.powf(-(2f64.powf(-((c as f64).log2() - 3.0)))) as f32;
            exponents.map(|k| f64::from(base).powf(k as f64) as f32).collect()
        };
        let mut slopes = powers(closest, &mut (1..=closest));
        if closest != heads {
            let remaining = closest.min(heads - closest);
            slopes.extend(powers(2 * closest, &mut (1..2 * remaining).step_by(2)));
        }
        slopes
    }

    /// The table as the attention kernels take it.
    pub fn bias(&self) -> PositionBias<'_> {
        PositionBias { table: &self.table, span: self.span, center: self.center }
    }

    /// Number of heads (rows of the table).
    pub fn heads(&self) -> usize {
        self.heads
    }
}
