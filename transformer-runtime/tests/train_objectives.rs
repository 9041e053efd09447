//! Dropout, masked-LM inputs, the pooling backward, the ranking loss and a sequence classifier's
//! head: against sentence-transformers, transformers and PyTorch's autograd where a reference
//! exists, against statistics where the result is random, and against naive twins.
//!
//! Parity: `scripts/reference/train_objectives.py` wrote `tests/fixtures/train/objectives.json`
//! (float32 inputs, float64 references, compared as f64). The ranking loss computes in f64 and
//! rounds once, so its loss and gradients must agree within [`RANKING_TOLERANCE`]; the pooling
//! and normalisation within [`TOLERANCE`]; the classifier head, whose GEMMs are f32, within
//! [`HEAD_TOLERANCE`]. Errors are relative to the reference's largest magnitude. Every parity
//! test also runs a deliberately wrong variant and checks that the same comparison rejects it, so
//! none of them can pass vacuously.
//!
//! Random results (dropout masks, masked-LM choices) are checked statistically: a fraction over
//! `n` draws must fall within five standard deviations of its probability (a false alarm once in
//! 1.7 million runs), and each such test shows that the bound rejects a slightly wrong rate.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;
use transformer_runtime::layers::pooling::{normalize_rows, pool, Pooling};
use transformer_runtime::train::dropout::{dropout_backward, dropout_mask, dropout_train, kept, mask_words};
use transformer_runtime::train::linear::{linear_backward, linear_train};
use transformer_runtime::train::loss::{softmax_cross_entropy, Reduction, IGNORE_INDEX};
use transformer_runtime::train::mlm::{mask_tokens, Masked, MaskedLm, Selection};
use transformer_runtime::train::objective::{
    multiple_negatives_ranking_loss, ranking_scratch_len, tanh_backward, RANKING_SCALE,
};
use transformer_runtime::train::pooling::{normalize_backward, pool_backward};
use transformer_runtime::train::rng::Stream;
use transformer_runtime::train::Store;
use transformer_runtime::{Batch, Error, Threads};

#[path = "common/fixture.rs"]
mod fixture;

use fixture::{as_rows, doubles, floats, number};

/// The pooling and normalisation (an f32 sum, a division or an f64 projection per value;
/// measured ≤ 1.1e-7).
const TOLERANCE: f64 = 1e-6;
/// The ranking loss, computed in f64 and rounded once (measured ≤ 5.5e-8: the rounding).
const RANKING_TOLERANCE: f64 = 2e-7;
/// The classifier head: f32 GEMMs and a tanh (measured ≤ 1.9e-7).
const HEAD_TOLERANCE: f64 = 1e-6;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| fixture::read("objectives.json"))
}

fn cases(op: &str) -> &'static [Value] {
    fixture::cases(fixture(), op)
}

/// max |ours − reference| / max |reference|, against the f64 reference (not its f32 rounding, so
/// the figure includes the rounding of our result).
fn relative_error(ours: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(ours.len(), reference.len(), "lengths differ");
    let scale = reference.iter().fold(0.0f64, |m, &r| m.max(r.abs())).max(f64::MIN_POSITIVE);
    let diff = ours.iter().zip(reference).fold(0.0f64, |m, (&a, &b)| m.max((f64::from(a) - b).abs()));
    diff / scale
}

fn assert_close(what: &str, ours: &[f32], reference: &[f64], tolerance: f64) {
    let error = relative_error(ours, reference);
    assert!(error <= tolerance, "{what}: relative error {error:.3e} > {tolerance:e}");
}

fn assert_rejected(what: &str, wrong: &[f32], reference: &[f64], tolerance: f64) {
    let error = relative_error(wrong, reference);
    assert!(
        error > tolerance,
        "{what}: a wrong variant passed (error {error:.3e}): the comparison cannot fail"
    );
}

fn loss_error(ours: f32, reference: f64) -> f64 {
    (f64::from(ours) - reference).abs() / reference.abs().max(1e-30)
}

/// A right-padded batch of the fixture's sequence lengths (the ids do not matter here).
fn batch_of(case: &Value) -> Batch {
    let lengths = case["lengths"].as_array().unwrap();
    let sequences: Vec<Vec<u32>> = lengths.iter().map(|l| vec![1; l.as_u64().unwrap() as usize]).collect();
    let batch = Batch::from_sequences(&sequences).unwrap();
    assert_eq!(batch.seq_len(), number(case, "seq"));
    batch
}

/// `|observed/n − p| ≤ 5·√(p(1−p)/n)`.
fn within_five_sigma(what: &str, observed: usize, n: usize, p: f64) -> std::result::Result<(), String> {
    let fraction = observed as f64 / n as f64;
    let sigma = (p * (1.0 - p) / n as f64).sqrt();
    if (fraction - p).abs() <= 5.0 * sigma {
        Ok(())
    } else {
        Err(format!("{what}: {observed} of {n} = {fraction:.5}, expected {p} ± {:.5} (5σ)", 5.0 * sigma))
    }
}

/// Values as bits: -0 differs from 0 and NaN equals itself.
fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

// ---- dropout -----------------------------------------------------------------------------------

/// Statistics of a dropout mask over `n` elements with probability `p`: the kept fraction overall
/// and at each of the 64 bit positions of a word (a packing bug shows there), and the fraction of
/// adjacent pairs both kept, which is `(1 − p)²` if neighbours are independent (the two halves of
/// one 64-bit draw are neighbours).
fn mask_statistics(mask: &[u64], n: usize, p: f64) -> std::result::Result<(), String> {
    let keep = 1.0 - p;
    let total = (0..n).filter(|&i| kept(mask, i)).count();
    within_five_sigma("kept", total, n, keep)?;
    for lane in 0..64 {
        let count = (lane..n).step_by(64).filter(|&i| kept(mask, i)).count();
        within_five_sigma(&format!("kept at bit {lane}"), count, n.div_ceil(64), keep)?;
    }
    let pairs = (0..n / 2).filter(|&k| kept(mask, 2 * k) && kept(mask, 2 * k + 1)).count();
    within_five_sigma("adjacent pairs kept", pairs, n / 2, keep * keep)
}

#[test]
fn dropout_keeps_one_minus_p_and_scales_the_rest() {
    const N: usize = 1 << 20;
    let x: Vec<f32> = (0..N).map(|i| (i % 97) as f32 * 0.25 - 12.0).collect();
    let threads = Threads::new(2).unwrap();
    for (site, p) in [0.1f32, 0.5, 0.9].into_iter().enumerate() {
        let stream = Stream::new(7, 3, site as u64);
        let mut y = x.clone();
        let mut mask = vec![0; mask_words(N)];
        dropout_train(&mut y, p, stream, &mut mask, &threads).unwrap();
        mask_statistics(&mask, N, f64::from(p)).unwrap_or_else(|e| panic!("p = {p}: {e}"));
        let scale = 1.0 / (1.0 - f64::from(p)) as f32;
        for i in 0..N {
            let expected = x[i] * if kept(&mask, i) { scale } else { 0.0 };
            assert_eq!(y[i].to_bits(), expected.to_bits(), "p = {p}, element {i}");
        }

        // The same bounds reject a rate off by one point, and neighbours that are not independent.
        let mut off = vec![0; mask_words(N)];
        dropout_mask(N, p + 0.01, stream, &mut off, &threads).unwrap();
        assert!(mask_statistics(&off, N, f64::from(p)).is_err(), "p = {p}: a rate of p + 0.01 passed");
        const EVEN: u64 = 0x5555_5555_5555_5555;
        let copied: Vec<u64> = mask.iter().map(|w| (w & EVEN) | ((w & EVEN) << 1)).collect();
        assert!(mask_statistics(&copied, N, f64::from(p)).is_err(), "p = {p}: pairs of equal bits passed");
    }
}

#[test]
fn dropout_backward_is_mask_times_scale() {
    const N: usize = 1000;
    let (p, stream) = (0.3f32, Stream::new(1, 2, 3));
    let mut mask = vec![0; mask_words(N)];
    dropout_mask(N, p, stream, &mut mask, &Threads::sequential()).unwrap();
    let dy: Vec<f32> = (0..N).map(|i| (i as f32).sin()).collect();
    let scale = 1.0 / (1.0 - f64::from(p)) as f32;
    let expected: Vec<f32> = (0..N).map(|i| dy[i] * if kept(&mask, i) { scale } else { 0.0 }).collect();

    let mut dx = vec![f32::NAN; N];
    dropout_backward(&dy, p, &mask, &mut dx, Store::Overwrite).unwrap();
    assert_eq!(bits(&dx), bits(&expected));
    let mut added = vec![1.0f32; N];
    dropout_backward(&dy, p, &mask, &mut added, Store::Accumulate).unwrap();
    assert_eq!(added, expected.iter().map(|g| 1.0 + g).collect::<Vec<_>>());

    // The same comparison sees a backward that forgot the scale.
    let mut unscaled = vec![0.0; N];
    dropout_backward(&dy, 0.0, &mask, &mut unscaled, Store::Overwrite).unwrap();
    assert_ne!(unscaled, expected, "a backward without 1/(1-p) passed");
}

#[test]
fn dropout_is_deterministic_across_calls_and_thread_counts() {
    const N: usize = 200_003; // three tasks of 64 Ki elements and a ragged last word
    let x: Vec<f32> = (0..N).map(|i| i as f32).collect();
    let run = |stream: Stream, threads: &Threads| {
        let (mut y, mut mask) = (x.clone(), vec![0; mask_words(N)]);
        dropout_train(&mut y, 0.2, stream, &mut mask, threads).unwrap();
        (y, mask)
    };
    let stream = Stream::new(42, 10, 0);
    let (y, mask) = run(stream, &Threads::sequential());
    assert_eq!(mask.last().unwrap() >> (N % 64), 0, "the last word's unused bits are not clear");
    for threads in [Threads::sequential(), Threads::new(2).unwrap(), Threads::new(3).unwrap()] {
        assert_eq!(run(stream, &threads), (y.clone(), mask.clone()), "{} threads", threads.count());
        let mut regenerated = vec![0; mask_words(N)];
        dropout_mask(N, 0.2, stream, &mut regenerated, &threads).unwrap();
        assert_eq!(regenerated, mask, "dropout_mask differs from dropout_train's mask");
    }
    // The comparison can fail: another seed, step or site draws another mask.
    for other in [Stream::new(43, 10, 0), Stream::new(42, 11, 0), Stream::new(42, 10, 1)] {
        assert_ne!(run(other, &Threads::sequential()).1, mask, "{other:?} drew the same mask");
    }
}

#[test]
fn dropout_with_p_zero_is_the_identity() {
    let x = vec![1.5f32, -0.0, f32::MIN_POSITIVE, -3.25e30, f32::NAN, f32::INFINITY, 7.0];
    let mut y = x.clone();
    let mut mask = vec![0; 1];
    dropout_train(&mut y, 0.0, Stream::new(0, 0, 0), &mut mask, &Threads::sequential()).unwrap();
    assert_eq!(bits(&y), bits(&x));
    assert_eq!(mask, [0b111_1111]);
    let mut dx = vec![0.0; 7];
    dropout_backward(&x, 0.0, &mask, &mut dx, Store::Overwrite).unwrap();
    assert_eq!(bits(&dx), bits(&x));
    // A p just above zero is not the identity: some element of a large tensor is dropped.
    let mut z = vec![1.0f32; 100_000];
    let mut mask = vec![0; mask_words(z.len())];
    dropout_train(&mut z, 1e-3, Stream::new(0, 0, 0), &mut mask, &Threads::sequential()).unwrap();
    assert!(z.contains(&0.0), "p = 1e-3 dropped nothing of 100 000");
}

#[test]
fn dropout_refuses_p_outside_the_unit_interval() {
    let threads = Threads::sequential();
    for p in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY] {
        let mut x = vec![2.0f32; 10];
        let mut mask = vec![7; 1];
        let err = dropout_train(&mut x, p, Stream::new(0, 0, 0), &mut mask, &threads).unwrap_err();
        assert!(matches!(err, Error::BadTrainOption { option: "the dropout probability", .. }), "{err:?}");
        assert!(err.to_string().contains("expected a value in [0, 1)"), "{err}");
        assert_eq!((x, mask), (vec![2.0; 10], vec![7]), "p = {p}: a refused call wrote");
        let err = dropout_backward(&[1.0], p, &[1], &mut [0.0], Store::Overwrite).unwrap_err();
        assert!(matches!(err, Error::BadTrainOption { .. }), "{err:?}");
    }
    // The twin: the largest f32 below 1 is accepted.
    let mut x = vec![2.0f32; 10];
    dropout_train(&mut x, 1.0 - f32::EPSILON / 2.0, Stream::new(0, 0, 0), &mut [0], &threads).unwrap();
}

/// Dropout element by element: keep `i` when its half of `bits(i / 2)` is at least `p·2³²`.
fn naive_dropout(x: &[f32], p: f32, stream: Stream) -> (Vec<f32>, Vec<bool>) {
    let scale = 1.0 / (1.0 - f64::from(p)) as f32;
    let keep: Vec<bool> = (0..x.len())
        .map(|i| {
            let half = (stream.bits((i / 2) as u64) >> (32 * (i % 2))) as u32;
            f64::from(half) >= f64::from(p) * 2f64.powi(32)
        })
        .collect();
    (x.iter().zip(&keep).map(|(&v, &k)| v * if k { scale } else { 0.0 }).collect(), keep)
}

// ---- masked-LM inputs -------------------------------------------------------------------------

const VOCAB: usize = 30522;
const PAD: u32 = 0;
const CLS: u32 = 101;
const SEP: u32 = 102;
const MASK: u32 = 103;
const SPECIAL: [u32; 3] = [PAD, CLS, SEP];

/// `batch` right-padded sequences of `seq`: [CLS], ordinary ids, [SEP], padding; lengths vary.
fn mlm_batch(batch: usize, seq: usize, seed: u64) -> (Vec<u32>, Vec<bool>) {
    let stream = Stream::new(seed, 0, 99);
    let (mut ids, mut mask) = (vec![PAD; batch * seq], vec![false; batch * seq]);
    for b in 0..batch {
        let len = 2 + stream.below(b as u64, (seq - 1) as u64) as usize; // 2..=seq
        let row = &mut ids[b * seq..][..seq];
        row[0] = CLS;
        for (t, id) in row[1..len - 1].iter_mut().enumerate() {
            *id = 1000 + stream.below((1 << 40) + (b * seq + t) as u64, 29_000) as u32;
        }
        row[len - 1] = SEP;
        mask[b * seq..][..len].fill(true);
    }
    (ids, mask)
}

/// Counts from the ids alone: (chosen, became [MASK], became another id, kept).
fn observed(original: &[u32], ids: &[u32], labels: &[i64]) -> (usize, usize, usize, usize) {
    let (mut chosen, mut masked, mut random, mut same) = (0, 0, 0, 0);
    for ((&o, &id), &label) in original.iter().zip(ids).zip(labels) {
        if label == IGNORE_INDEX {
            continue;
        }
        assert_eq!(label, i64::from(o), "a label is not the original id");
        chosen += 1;
        match id {
            MASK => masked += 1,
            id if id == o => same += 1,
            _ => random += 1,
        }
    }
    (chosen, masked, random, same)
}

/// The proportions of BERT's rule within five standard deviations. A random id equal to the
/// original or to [MASK] (probability 1/30522 each) moves a fraction by far less than σ.
fn bert_proportions(
    config: &MaskedLm,
    counts: Masked,
    seen: (usize, usize, usize, usize),
) -> std::result::Result<(), String> {
    let (chosen, masked, random, same) = seen;
    if chosen != counts.chosen {
        return Err(format!("{chosen} labelled positions, but {} reported", counts.chosen));
    }
    within_five_sigma("chosen", chosen, counts.eligible, config.probability)?;
    within_five_sigma("masked", masked, chosen, config.mask_fraction)?;
    within_five_sigma("random", random, chosen, config.random_fraction)?;
    within_five_sigma("kept", same, chosen, 1.0 - config.mask_fraction - config.random_fraction)?;
    within_five_sigma("reported masked", counts.masked, chosen, config.mask_fraction)?;
    within_five_sigma("reported random", counts.random, chosen, config.random_fraction)
}

#[test]
fn masked_lm_follows_berts_proportions() {
    let (original, attention) = mlm_batch(4096, 64, 1);
    let config = MaskedLm::bert(MASK, VOCAB, &SPECIAL);
    let run = |config: &MaskedLm| {
        let (mut ids, mut labels) = (original.clone(), vec![0; original.len()]);
        let counts =
            mask_tokens(config, &mut ids, Some(&attention), 64, Stream::new(5, 0, 0), &mut labels).unwrap();
        (counts, observed(&original, &ids, &labels))
    };
    let (counts, seen) = run(&config);
    assert!(counts.eligible > 100_000, "only {} eligible positions", counts.eligible);
    bert_proportions(&config, counts, seen).unwrap();
    // The same bounds reject 16 % chosen, and 75/15/10.
    let (counts, seen) = run(&MaskedLm { probability: 0.16, ..config });
    assert!(bert_proportions(&config, counts, seen).is_err(), "16 % chosen passed for 15 %");
    let (counts, seen) = run(&MaskedLm { mask_fraction: 0.75, random_fraction: 0.15, ..config });
    assert!(bert_proportions(&config, counts, seen).is_err(), "75/15/10 passed for 80/10/10");
}

/// Special and padding positions untouched and unlabelled; unchosen positions untouched.
fn untouched_outside_choice(
    original: &[u32],
    attention: &[bool],
    ids: &[u32],
    labels: &[i64],
) -> std::result::Result<(), String> {
    for (i, ((&o, &id), &label)) in original.iter().zip(ids).zip(labels).enumerate() {
        if (!attention[i] || SPECIAL.contains(&o)) && label != IGNORE_INDEX {
            return Err(format!("position {i} (id {o}, real {}) was chosen", attention[i]));
        }
        if label == IGNORE_INDEX && id != o {
            return Err(format!("position {i} was not chosen but changed from {o} to {id}"));
        }
    }
    Ok(())
}

#[test]
fn masked_lm_never_chooses_special_tokens_or_padding() {
    let (original, attention) = mlm_batch(512, 40, 2);
    // Padding after [SEP] has id 0; give some padding an ordinary id, so only the mask excludes it.
    let mut original = original;
    for (i, id) in original.iter_mut().enumerate() {
        if !attention[i] && i % 3 == 0 {
            *id = 2000;
        }
    }
    for selection in [Selection::Independent, Selection::PerSequence] {
        let config = MaskedLm { probability: 0.5, selection, ..MaskedLm::bert(MASK, VOCAB, &SPECIAL) };
        let (mut ids, mut labels) = (original.clone(), vec![0; original.len()]);
        mask_tokens(&config, &mut ids, Some(&attention), 40, Stream::new(9, 1, 0), &mut labels).unwrap();
        untouched_outside_choice(&original, &attention, &ids, &labels).unwrap();
        observed(&original, &ids, &labels);

        // Without the special ids, or without the attention mask, the check sees the difference.
        let no_special = MaskedLm { special: &[], ..config };
        let (mut ids, mut labels) = (original.clone(), vec![0; original.len()]);
        mask_tokens(&no_special, &mut ids, Some(&attention), 40, Stream::new(9, 1, 0), &mut labels).unwrap();
        assert!(
            untouched_outside_choice(&original, &attention, &ids, &labels).is_err(),
            "[CLS]/[SEP] never chosen"
        );
        let (mut ids, mut labels) = (original.clone(), vec![0; original.len()]);
        mask_tokens(&config, &mut ids, None, 40, Stream::new(9, 1, 0), &mut labels).unwrap();
        assert!(
            untouched_outside_choice(&original, &attention, &ids, &labels).is_err(),
            "padding never chosen"
        );
    }
}

#[test]
fn masked_lm_per_sequence_chooses_round_fifteen_percent() {
    let (original, attention) = mlm_batch(300, 50, 3);
    let per_sequence = |selection| {
        let config = MaskedLm { selection, ..MaskedLm::bert(MASK, VOCAB, &SPECIAL) };
        let (mut ids, mut labels) = (original.clone(), vec![0; original.len()]);
        mask_tokens(&config, &mut ids, Some(&attention), 50, Stream::new(4, 0, 0), &mut labels).unwrap();
        labels.chunks_exact(50).map(|l| l.iter().filter(|&&y| y != IGNORE_INDEX).count()).collect::<Vec<_>>()
    };
    let expected: Vec<usize> = (0..300)
        .map(|b| {
            let eligible = (0..50)
                .filter(|&t| attention[b * 50 + t] && !SPECIAL.contains(&original[b * 50 + t]))
                .count();
            if eligible == 0 {
                0
            } else {
                ((0.15 * eligible as f64).round() as usize).clamp(1, eligible)
            }
        })
        .collect();
    assert_eq!(per_sequence(Selection::PerSequence), expected);
    assert_ne!(per_sequence(Selection::Independent), expected, "independent choices gave the exact counts");
}

#[test]
fn masked_lm_is_a_function_of_its_stream() {
    let (original, attention) = mlm_batch(64, 32, 4);
    let config = MaskedLm::bert(MASK, VOCAB, &SPECIAL);
    let run = |stream| {
        let (mut ids, mut labels) = (original.clone(), vec![0; original.len()]);
        mask_tokens(&config, &mut ids, Some(&attention), 32, stream, &mut labels).unwrap();
        (ids, labels)
    };
    assert_eq!(run(Stream::new(1, 7, 0)), run(Stream::new(1, 7, 0)));
    assert_ne!(run(Stream::new(1, 7, 0)), run(Stream::new(1, 8, 0)), "the next epoch masked the same");
}

/// Each id's share of `counts` within five standard deviations of uniform.
fn uniform_histogram(counts: &[usize]) -> std::result::Result<(), String> {
    let n = counts.iter().sum();
    counts
        .iter()
        .enumerate()
        .try_for_each(|(id, &c)| within_five_sigma(&format!("id {id}"), c, n, 1.0 / counts.len() as f64))
}

#[test]
fn masked_lm_random_ids_are_uniform_over_the_vocabulary() {
    const SMALL: usize = 20;
    let ids_in = vec![5u32; 200_000];
    let config = MaskedLm {
        probability: 1.0,
        mask_fraction: 0.0,
        random_fraction: 1.0,
        ..MaskedLm::bert(3, SMALL, &[0, 1, 2])
    };
    let (mut ids, mut labels) = (ids_in.clone(), vec![0; ids_in.len()]);
    let counts = mask_tokens(&config, &mut ids, None, 1000, Stream::new(11, 0, 0), &mut labels).unwrap();
    assert_eq!(counts.random, ids.len());
    let mut histogram = [0usize; SMALL];
    ids.iter().for_each(|&id| histogram[id as usize] += 1);
    uniform_histogram(&histogram).unwrap();
    // The twin: ids taken modulo 16, which never draws 16..20, fail the same check.
    let mut modulo = [0usize; SMALL];
    (0..ids.len() as u64).for_each(|i| modulo[(Stream::new(11, 0, 0).bits(i) % 16) as usize] += 1);
    assert!(uniform_histogram(&modulo).is_err(), "a histogram missing four ids passed");
}

#[test]
fn masked_lm_refuses_bad_settings_before_writing() {
    let bert = MaskedLm::bert(MASK, VOCAB, &SPECIAL);
    let mut ids = vec![CLS, 2000, 2001, SEP];
    let mut labels = vec![5; 4];
    let stream = Stream::new(0, 0, 0);
    for (config, option) in [
        (MaskedLm { probability: 1.5, ..bert }, "the masking probability"),
        (MaskedLm { probability: f64::NAN, ..bert }, "the masking probability"),
        (MaskedLm { mask_fraction: -0.1, ..bert }, "the mask fraction"),
        (MaskedLm { mask_fraction: 0.8, random_fraction: 0.3, ..bert }, "the random fraction"),
        (MaskedLm { mask_token: VOCAB as u32, ..bert }, "the mask token id"),
        (MaskedLm { vocab: 0, ..bert }, "the vocabulary size"),
    ] {
        let err = mask_tokens(&config, &mut ids, None, 4, stream, &mut labels).unwrap_err();
        assert!(matches!(err, Error::BadTrainOption { option: o, .. } if o == option), "{option}: {err:?}");
    }
    let err = mask_tokens(&bert, &mut ids, None, 4, stream, &mut labels[..3]).unwrap_err();
    assert!(matches!(err, Error::LabelCountMismatch { labels: 3, rows: 4 }), "{err:?}");
    let err = mask_tokens(&bert, &mut ids, Some(&[true; 5][..]), 4, stream, &mut labels).unwrap_err();
    assert!(matches!(err, Error::LabelCountMismatch { labels: 5, rows: 4 }), "{err:?}");
    assert_eq!((ids.as_slice(), labels.as_slice()), ([CLS, 2000, 2001, SEP].as_slice(), [5; 4].as_slice()));
    // The twin: BERT's own settings are accepted.
    mask_tokens(&bert, &mut ids, None, 4, stream, &mut labels).unwrap();
}

// ---- pooling and normalisation -------------------------------------------------------------------

const POOL_D: usize = 16;

fn pooling_mode(name: &str) -> Pooling {
    match name {
        "mean" => Pooling::Mean,
        "cls" => Pooling::Cls,
        "max" => Pooling::Max,
        other => panic!("unknown pooling {other}"),
    }
}

#[test]
fn pooling_backward_matches_sentence_transformers() {
    for case in cases("pooling") {
        assert_eq!(number(case, "d"), POOL_D);
        let mode = case["mode"].as_str().unwrap();
        let pooling = pooling_mode(mode);
        let batch = batch_of(case);
        let x = as_rows::<POOL_D>(&floats(case, "x"));
        let dy = as_rows::<POOL_D>(&floats(case, "dy"));
        let mut y = vec![[0.0; POOL_D]; batch.batch_size()];
        pool(&x, &batch, pooling, &mut y);
        assert_close(&format!("{mode} pooling forward"), y.as_flattened(), &doubles(case, "y"), TOLERANCE);

        let reference = doubles(case, "dx");
        let mut dx = vec![[f32::NAN; POOL_D]; x.len()];
        pool_backward(&x, &batch, pooling, &dy, &mut dx, Store::Overwrite);
        assert_close(&format!("{mode} pooling dx"), dx.as_flattened(), &reference, TOLERANCE);
        let mut added = vec![[0.5; POOL_D]; x.len()];
        pool_backward(&x, &batch, pooling, &dy, &mut added, Store::Accumulate);
        let shifted: Vec<f64> = reference.iter().map(|g| g + 0.5).collect();
        assert_close(&format!("{mode} pooling dx added"), added.as_flattened(), &shifted, TOLERANCE);

        // Wrong variants: padding pooled as if real (mean, max), or the gradient of another pooling (cls).
        let mut wrong = vec![[0.0; POOL_D]; x.len()];
        let unpadded = Batch::uniform(batch.batch_size(), batch.seq_len()).unwrap();
        match pooling {
            Pooling::Cls => pool_backward(&x, &batch, Pooling::Mean, &dy, &mut wrong, Store::Overwrite),
            _ => pool_backward(&x, &unpadded, pooling, &dy, &mut wrong, Store::Overwrite),
        }
        assert_rejected(
            &format!("{mode} pooling's wrong variant"),
            wrong.as_flattened(),
            &reference,
            TOLERANCE,
        );
    }
}

#[test]
fn normalize_backward_matches_sentence_transformers() {
    for case in cases("normalize") {
        let name = case["name"].as_str().unwrap();
        let x = as_rows::<POOL_D>(&floats(case, "x"));
        let dy = as_rows::<POOL_D>(&floats(case, "dy"));
        let mut y = x.clone();
        normalize_rows(&mut y);
        assert_close(
            &format!("normalize ({name}) forward"),
            y.as_flattened(),
            &doubles(case, "y"),
            TOLERANCE,
        );
        let reference = doubles(case, "dx");
        let mut dx = vec![[0.0; POOL_D]; x.len()];
        normalize_backward(&x, &dy, &mut dx, Store::Overwrite);
        assert_close(&format!("normalize ({name}) dx"), dx.as_flattened(), &reference, TOLERANCE);

        // Wrong: above eps, the projection forgotten (dx = dy/‖x‖); below it, the projection
        // applied with the unclamped norm (and a zero row given no gradient).
        let wrong: Vec<f32> = x
            .iter()
            .zip(&dy)
            .flat_map(|(x, dy)| {
                let norm = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
                let along = x.iter().zip(dy).map(|(&v, &g)| f64::from(v) * f64::from(g)).sum::<f64>() / norm;
                let project = name != "regular";
                dy.iter().zip(x).map(move |(&g, &v)| match (project, norm == 0.0) {
                    (false, _) => (f64::from(g) / norm) as f32,
                    (true, true) => 0.0,
                    (true, false) => ((f64::from(g) - f64::from(v) / norm * along) / norm) as f32,
                })
            })
            .collect();
        assert_rejected(&format!("normalize ({name}) wrong variant"), &wrong, &reference, TOLERANCE);
    }
}

// ---- ranking loss --------------------------------------------------------------------------------

/// Loss and both gradients of one fixture case, at `scale`, with `threads`.
fn ranking<const D: usize>(case: &Value, scale: f32, threads: &Threads) -> (f32, Vec<f32>, Vec<f32>) {
    let a = as_rows::<D>(&floats(case, "a"));
    let c = as_rows::<D>(&floats(case, "c"));
    let (mut da, mut dc) = (vec![[f32::NAN; D]; a.len()], vec![[f32::NAN; D]; c.len()]);
    let mut scratch = vec![0.0; ranking_scratch_len(a.len(), c.len())];
    let loss = multiple_negatives_ranking_loss(
        &a,
        &c,
        scale,
        &mut da,
        &mut dc,
        Store::Overwrite,
        &mut scratch,
        threads,
    )
    .unwrap();
    (loss, da.into_flattened(), dc.into_flattened())
}

fn check_ranking<const D: usize>(case: &Value) {
    let name = case["name"].as_str().unwrap();
    let scale = case["scale"].as_f64().unwrap() as f32;
    let reference = case["loss"].as_f64().unwrap();
    let (ref_a, ref_c) = (doubles(case, "d_a"), doubles(case, "d_c"));
    for threads in [Threads::sequential(), Threads::new(2).unwrap()] {
        let (loss, da, dc) = ranking::<D>(case, scale, &threads);
        let error = loss_error(loss, reference);
        assert!(error <= RANKING_TOLERANCE, "{name}: loss {loss} vs {reference}: relative error {error:.3e}");
        assert_close(&format!("{name} d_anchors"), &da, &ref_a, RANKING_TOLERANCE);
        assert_close(&format!("{name} d_candidates"), &dc, &ref_c, RANKING_TOLERANCE);
    }
    // Wrong: the temperature passed as the scale (sentence-transformers' scale is 1/temperature).
    let (loss, da, dc) = ranking::<D>(case, 1.0 / scale, &Threads::sequential());
    assert!(loss_error(loss, reference) > RANKING_TOLERANCE, "{name}: the loss at 1/scale passed");
    assert_rejected(&format!("{name} d_anchors at 1/scale"), &da, &ref_a, RANKING_TOLERANCE);
    assert_rejected(&format!("{name} d_candidates at 1/scale"), &dc, &ref_c, RANKING_TOLERANCE);
}

#[test]
fn ranking_loss_matches_sentence_transformers() {
    for case in cases("ranking") {
        match number(case, "d") {
            16 => check_ranking::<16>(case),
            32 => check_ranking::<32>(case),
            d => panic!("no instantiation for d = {d}"),
        }
    }
}

#[test]
fn ranking_loss_gradients_can_be_added() {
    let case = &cases("ranking")[1];
    const D: usize = 32;
    let a = as_rows::<D>(&floats(case, "a"));
    let c = as_rows::<D>(&floats(case, "c"));
    let (mut da, mut dc) = (vec![[1.0; D]; a.len()], vec![[-2.0; D]; c.len()]);
    let mut scratch = vec![0.0; ranking_scratch_len(a.len(), c.len())];
    multiple_negatives_ranking_loss(
        &a,
        &c,
        RANKING_SCALE,
        &mut da,
        &mut dc,
        Store::Accumulate,
        &mut scratch,
        &Threads::sequential(),
    )
    .unwrap();
    let plus = |v: Vec<f64>, k: f64| v.into_iter().map(|g| g + k).collect::<Vec<_>>();
    assert_close("d_anchors added", da.as_flattened(), &plus(doubles(case, "d_a"), 1.0), RANKING_TOLERANCE);
    assert_close(
        "d_candidates added",
        dc.as_flattened(),
        &plus(doubles(case, "d_c"), -2.0),
        RANKING_TOLERANCE,
    );
    assert_rejected("d_candidates not added", dc.as_flattened(), &doubles(case, "d_c"), RANKING_TOLERANCE);
}

#[test]
fn ranking_loss_refuses_bad_inputs_before_writing() {
    let rows = [[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]];
    let threads = Threads::sequential();
    let call = |anchors: &[[f32; 2]], candidates: &[[f32; 2]], scale: f32| {
        let (mut da, mut dc) = (vec![[9.0; 2]; anchors.len()], vec![[9.0; 2]; candidates.len()]);
        let mut scratch = vec![0.0; ranking_scratch_len(anchors.len(), candidates.len())];
        let result = multiple_negatives_ranking_loss(
            anchors,
            candidates,
            scale,
            &mut da,
            &mut dc,
            Store::Overwrite,
            &mut scratch,
            &threads,
        );
        assert!(result.is_ok() || da.iter().chain(&dc).all(|r| r == &[9.0; 2]), "a refused call wrote");
        result
    };
    let err = call(&rows, &rows[..2], 20.0).unwrap_err();
    assert!(matches!(err, Error::RankingCandidates { anchors: 3, candidates: 2 }), "{err:?}");
    assert!(err.to_string().contains("2 candidate embeddings for 3 anchors"), "{err}");
    let err = call(&[], &rows, 20.0).unwrap_err();
    assert!(matches!(err, Error::RankingCandidates { anchors: 0, candidates: 3 }), "{err:?}");
    let err = call(&rows[..1], &rows, f32::INFINITY).unwrap_err();
    assert!(matches!(err, Error::BadTrainOption { .. }), "{err:?}");
    // The twin: one anchor with a positive and two hard negatives is a valid batch.
    call(&rows[..1], &rows, 20.0).unwrap();
}

/// The ranking loss and its gradients in f64, written out: normalised copies, the score matrix,
/// its softmax, and the chain rule through the normalisation as a Jacobian product.
fn naive_ranking(a: &[Vec<f64>], c: &[Vec<f64>], scale: f64) -> (f64, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let normalize = |v: &Vec<f64>| {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        (v.iter().map(|x| x / norm).collect::<Vec<f64>>(), norm)
    };
    let (ah, an): (Vec<_>, Vec<_>) = a.iter().map(normalize).unzip();
    let (ch, cn): (Vec<_>, Vec<_>) = c.iter().map(normalize).unzip();
    let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f64>();
    let (b, d) = (a.len(), a[0].len());
    let mut loss = 0.0;
    let mut d_ah = vec![vec![0.0; d]; b];
    let mut d_ch = vec![vec![0.0; d]; c.len()];
    for i in 0..b {
        let s: Vec<f64> = ch.iter().map(|cj| scale * dot(&ah[i], cj)).collect();
        let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = s.iter().map(|v| (v - max).exp()).sum();
        loss += (max + sum.ln() - s[i]) / b as f64;
        for (j, sj) in s.iter().enumerate() {
            let g = ((sj - max).exp() / sum - if i == j { 1.0 } else { 0.0 }) / b as f64;
            for k in 0..d {
                d_ah[i][k] += scale * g * ch[j][k];
                d_ch[j][k] += scale * g * ah[i][k];
            }
        }
    }
    // dx_k = Σ_m dŷ_m ∂ŷ_m/∂x_k with ∂ŷ_m/∂x_k = (δ_mk − ŷ_m ŷ_k)/‖x‖.
    let back = |hat: &[Vec<f64>], norms: &[f64], d_hat: &[Vec<f64>]| -> Vec<Vec<f64>> {
        hat.iter()
            .zip(norms)
            .zip(d_hat)
            .map(|((y, &n), g)| {
                (0..d)
                    .map(|k| (0..d).map(|m| g[m] * ((m == k) as u8 as f64 - y[m] * y[k]) / n).sum())
                    .collect()
            })
            .collect()
    };
    (loss, back(&ah, &an, &d_ah), back(&ch, &cn, &d_ch))
}

// ---- sequence classification ---------------------------------------------------------------------

const HEAD_D: usize = 16;
const CLASSES: usize = 3;

/// How [`classifier_head`] runs: right, or with one plausible mistake.
#[derive(Clone, Copy, PartialEq)]
enum Head {
    Right,
    /// BERT's pooler without tanh's derivative.
    NoTanh,
    /// The mean pooling's backward over every position, padding included.
    PaddingCounted,
}

/// The head's forward and backward over one fixture case: (logits, loss, d_hidden, d_w, d_b,
/// d_pooler_w, d_pooler_b).
#[allow(clippy::type_complexity)]
fn classifier_head(
    case: &Value,
    head: Head,
) -> (Vec<f32>, f32, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let threads = Threads::sequential();
    let batch = batch_of(case);
    let hidden = as_rows::<HEAD_D>(&floats(case, "hidden"));
    let labels: Vec<i64> = case["labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let (w, b) = (floats(case, "w"), floats(case, "b"));
    let bert = case["pooling"].as_str().unwrap() == "cls_pooler";
    let pooling = if bert { Pooling::Cls } else { Pooling::Mean };
    let n = batch.batch_size();

    // Forward: pool, [tanh(dense(·))], classifier.
    let mut pooled = vec![[0.0; HEAD_D]; n];
    pool(&hidden, &batch, pooling, &mut pooled);
    let mut features = pooled.clone();
    if bert {
        linear_train::<HEAD_D, HEAD_D>(
            &pooled,
            &floats(case, "pooler_w"),
            Some(&floats(case, "pooler_b")),
            &mut features,
            &threads,
        );
        features.as_flattened_mut().iter_mut().for_each(|v| *v = v.tanh());
    }
    let mut logits = vec![[0.0; CLASSES]; n];
    linear_train::<HEAD_D, CLASSES>(&features, &w, Some(&b), &mut logits, &threads);
    let forward = logits.as_flattened().to_vec();

    // Backward, in reverse.
    let mut row_loss = vec![0.0; n];
    let loss = softmax_cross_entropy(
        logits.as_flattened_mut(),
        CLASSES,
        &labels,
        Reduction::Mean,
        &mut row_loss,
        &threads,
    )
    .unwrap();
    let (mut dw, mut db) = (vec![0.0; CLASSES * HEAD_D], vec![0.0; CLASSES]);
    let mut d_features = vec![[0.0; HEAD_D]; n];
    linear_backward::<HEAD_D, CLASSES>(
        &features,
        &logits,
        &w,
        Some((&mut d_features, Store::Overwrite)),
        &mut dw,
        Some(&mut db),
        &threads,
    );
    let (mut dpw, mut dpb) = (vec![0.0; HEAD_D * HEAD_D], vec![0.0; HEAD_D]);
    let mut d_pooled = d_features.clone();
    if bert {
        if head != Head::NoTanh {
            tanh_backward(features.as_flattened(), d_features.as_flattened_mut());
        }
        let pw = floats(case, "pooler_w");
        linear_backward::<HEAD_D, HEAD_D>(
            &pooled,
            &d_features,
            &pw,
            Some((&mut d_pooled, Store::Overwrite)),
            &mut dpw,
            Some(&mut dpb),
            &threads,
        );
    }
    let mut d_hidden = vec![[0.0; HEAD_D]; hidden.len()];
    let unpadded = Batch::uniform(n, batch.seq_len()).unwrap();
    let pooled_over = if head == Head::PaddingCounted { &unpadded } else { &batch };
    pool_backward(&hidden, pooled_over, pooling, &d_pooled, &mut d_hidden, Store::Overwrite);
    (forward, loss.loss, d_hidden.into_flattened(), dw, db, dpw, dpb)
}

#[test]
fn sequence_classification_head_matches_torch() {
    for case in cases("classifier") {
        assert_eq!((number(case, "d"), number(case, "classes")), (HEAD_D, CLASSES));
        let name = case["pooling"].as_str().unwrap();
        let (logits, loss, d_hidden, dw, db, dpw, dpb) = classifier_head(case, Head::Right);
        assert_close(&format!("{name} logits"), &logits, &doubles(case, "logits"), HEAD_TOLERANCE);
        let error = loss_error(loss, case["loss"].as_f64().unwrap());
        assert!(error <= HEAD_TOLERANCE, "{name} loss: relative error {error:.3e}");
        let reference = doubles(case, "d_hidden");
        assert_close(&format!("{name} d_hidden"), &d_hidden, &reference, HEAD_TOLERANCE);
        assert_close(&format!("{name} d_w"), &dw, &doubles(case, "d_w"), HEAD_TOLERANCE);
        assert_close(&format!("{name} d_b"), &db, &doubles(case, "d_b"), HEAD_TOLERANCE);
        if name == "cls_pooler" {
            assert_close("pooler d_w", &dpw, &doubles(case, "d_pooler_w"), HEAD_TOLERANCE);
            assert_close("pooler d_b", &dpb, &doubles(case, "d_pooler_b"), HEAD_TOLERANCE);
            let (_, _, wrong, ..) = classifier_head(case, Head::NoTanh);
            assert_rejected("BERT head without tanh's derivative", &wrong, &reference, HEAD_TOLERANCE);
        } else {
            let (_, _, wrong, ..) = classifier_head(case, Head::PaddingCounted);
            assert_rejected("mean head with padding counted", &wrong, &reference, HEAD_TOLERANCE);
        }
    }
}

// ---- property tests against naive twins -------------------------------------------------------

fn check_dropout(len: usize, p: f32, threads: usize, seed: u64) -> std::result::Result<(), TestCaseError> {
    let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
    let stream = Stream::new(seed, 1, 2);
    let (expected, keep) = naive_dropout(&x, p, stream);
    let (mut y, mut mask) = (x.clone(), vec![0; mask_words(len)]);
    dropout_train(&mut y, p, stream, &mut mask, &Threads::new(threads).unwrap()).unwrap();
    prop_assert!(bits(&y) == bits(&expected), "values differ from the naive dropout");
    prop_assert!((0..len).all(|i| kept(&mask, i) == keep[i]), "mask differs from the naive dropout");
    Ok(())
}

fn check_ranking_naive<const D: usize>(
    a: &[[f32; D]],
    c: &[[f32; D]],
    scale: f32,
    threads: usize,
) -> std::result::Result<(), TestCaseError> {
    let (mut da, mut dc) = (vec![[0.0; D]; a.len()], vec![[0.0; D]; c.len()]);
    let mut scratch = vec![0.0; ranking_scratch_len(a.len(), c.len())];
    let threads = Threads::new(threads).unwrap();
    let loss = multiple_negatives_ranking_loss(
        a,
        c,
        scale,
        &mut da,
        &mut dc,
        Store::Overwrite,
        &mut scratch,
        &threads,
    )
    .unwrap();
    let to64 = |rows: &[[f32; D]]| rows.iter().map(|r| r.map(f64::from).to_vec()).collect::<Vec<_>>();
    let (naive_loss, naive_a, naive_c) = naive_ranking(&to64(a), &to64(c), f64::from(scale));
    let loss_error = (f64::from(loss) - naive_loss).abs() / naive_loss.abs().max(1.0);
    prop_assert!(loss_error <= RANKING_TOLERANCE, "loss {loss} vs {naive_loss}");
    let ea = relative_error(da.as_flattened(), &naive_a.concat());
    let ec = relative_error(dc.as_flattened(), &naive_c.concat());
    prop_assert!(
        ea <= RANKING_TOLERANCE && ec <= RANKING_TOLERANCE,
        "gradient relative errors {ea:e}, {ec:e}"
    );
    Ok(())
}

fn check_masking_invariants(
    batch: usize,
    seq: usize,
    probability: f64,
    mask_fraction: f64,
    selection: Selection,
    seed: u64,
) -> std::result::Result<(), TestCaseError> {
    let (original, attention) = mlm_batch(batch, seq, seed);
    let config = MaskedLm {
        probability,
        mask_fraction,
        random_fraction: (1.0 - mask_fraction) / 2.0,
        selection,
        ..MaskedLm::bert(MASK, VOCAB, &SPECIAL)
    };
    let (mut ids, mut labels) = (original.clone(), vec![0; original.len()]);
    let stream = Stream::new(seed, 0, 1);
    let counts = mask_tokens(&config, &mut ids, Some(&attention), seq, stream, &mut labels).unwrap();
    prop_assert!(untouched_outside_choice(&original, &attention, &ids, &labels).is_ok());
    let (chosen, masked, random, same) = observed(&original, &ids, &labels);
    prop_assert_eq!(chosen, counts.chosen);
    prop_assert!(counts.masked <= masked && masked + random + same == chosen);
    prop_assert!(counts.chosen <= counts.eligible);
    prop_assert!(ids.iter().all(|&id| (id as usize) < VOCAB));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn dropout_matches_naive(len in 0usize..140_000, p in 0.0f32..0.95, threads in 1usize..4,
                             seed in any::<u64>()) {
        check_dropout(len, p, threads, seed)?;
    }

    #[test]
    fn ranking_loss_matches_naive(anchors in 1usize..40, negatives in 0usize..3, threads in 1usize..4,
                                  scale in 0.5f32..60.0,
                                  seed in prop::collection::vec(-2.0f32..2.0, 40 * 4 * 8)) {
        const D: usize = 8;
        let a = as_rows::<D>(&seed[..anchors * D]);
        let c = as_rows::<D>(&seed[40 * D..][..anchors * (1 + negatives) * D]);
        check_ranking_naive(&a, &c, scale, threads)?;
    }

    #[test]
    fn masked_lm_keeps_its_invariants(batch in 1usize..20, seq in 2usize..40, probability in 0.0f64..=1.0,
                                      mask_fraction in 0.0f64..=1.0, per_sequence in any::<bool>(),
                                      seed in any::<u64>()) {
        let selection = if per_sequence { Selection::PerSequence } else { Selection::Independent };
        check_masking_invariants(batch, seq, probability, mask_fraction, selection, seed)?;
    }
}
