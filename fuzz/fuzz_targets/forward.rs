//! Arbitrary calls into two small models declared with the macro: a BERT-style encoder (token
//! types, learned positions, 72 positions so sequences cross the attention kernel's 32-row query
//! blocks and 64-key tiles) and a GPT-2-style decoder (tied head, KV cache, generation). Token ids
//! (in and out of range), lengths (0, past `max_positions`), masks (any u32), token types, start
//! positions, cached steps and generation options (`max_new_tokens`, temperature including
//! NaN/negative/infinite, `top_k`, `top_p`) come from the input.
//!
//! Every call must return `Ok` or a typed `Err`, never panic; every output must be finite and of
//! the documented size; the 2-thread encoder must agree bit for bit with the sequential one; a
//! single-prompt `stream` must yield exactly what `generate` returns.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use ndarray::Array2;
use transformer::{Batch, GenerateOptions, Sampling, Threads, WeightLoader, Workspace};

#[path = "../../tests/common/mod.rs"]
mod common;

transformer::model! {
    /// A tiny BERT-style encoder.
    pub struct Encoder {
        vocab_size: 50,
        max_positions: 72,
        type_vocab_size: 2,
        d_model: 16,
        heads: 2,
        layers: 2,
        d_ff: 24,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

transformer::model! {
    /// A tiny GPT-2-style decoder.
    pub struct Decoder {
        vocab_size: 40,
        max_positions: 40,
        d_model: 16,
        heads: 4,
        layers: 2,
        d_ff: 32,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-5,
        norm_placement: pre,
        positions: learned,
        attention: causal,
        weights: gpt2,
        lm_head: tied,
    }
}

struct Models {
    encoder: Encoder,
    encoder_threaded: Encoder,
    decoder: Decoder,
}

fn load<M>(load: impl Fn(&mut WeightLoader) -> M) -> M {
    let tensors = common::wanted_tensors(|l| {
        load(l);
    });
    let bytes = common::safetensors_bytes(&tensors, common::pseudo_random);
    let mut loader = WeightLoader::from_bytes(bytes, "fuzz").expect("a valid file");
    let model = load(&mut loader);
    loader.finish().expect("every tensor present");
    model
}

fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| Models {
        encoder: load(Encoder::load),
        encoder_threaded: load(Encoder::load).with_threads(Threads::new(2).expect("a 2-thread pool")),
        decoder: load(Decoder::load),
    })
}

/// A token id: mostly near the vocabulary (in range or just past it), sometimes anything.
#[derive(Debug, Clone, Copy)]
struct Tok(u32);

impl<'a> Arbitrary<'a> for Tok {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let raw = u16::arbitrary(u)?;
        Ok(Tok(if raw < 0xF000 { u32::from(raw) % 52 } else { u32::MAX - u32::from(raw & 0xFF) }))
    }
}

/// A mask value: mostly 0 or 1, sometimes any u32.
#[derive(Debug, Clone, Copy)]
struct MaskValue(u32);

impl<'a> Arbitrary<'a> for MaskValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let raw = u8::arbitrary(u)?;
        Ok(MaskValue(match raw {
            0..=99 => 1,
            100..=199 => 0,
            200..=250 => u32::from(raw),
            _ => u32::arbitrary(u)?,
        }))
    }
}

/// A count: mostly small, sometimes any `usize` (huge values must be errors, not allocations).
#[derive(Debug, Clone, Copy)]
struct Count(usize);

impl<'a> Arbitrary<'a> for Count {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Count(if bool::arbitrary(u)? {
            usize::from(u8::arbitrary(u)? % 48)
        } else {
            usize::arbitrary(u)?
        }))
    }
}

/// How a batch is built.
#[derive(Debug, Arbitrary)]
enum BatchIn {
    Sequences {
        seqs: Vec<Vec<Tok>>,
        types: Option<Vec<Vec<u32>>>,
        starts: Option<Vec<Count>>,
    },
    Padded {
        batch: u8,
        seq: u8,
        ids: Vec<Tok>,
        mask: Vec<MaskValue>,
        mask_shape: Option<(u8, u8)>,
        types: Option<Vec<u8>>,
    },
}

impl BatchIn {
    /// The batch, or the typed error its constructor gave.
    fn build(&self) -> Option<Batch> {
        let result = match self {
            BatchIn::Sequences { seqs, types, starts } => {
                let seqs: Vec<Vec<u32>> =
                    seqs.iter().take(6).map(|s| s.iter().take(90).map(|t| t.0).collect()).collect();
                Batch::from_sequences(&seqs)
                    .and_then(|b| match types {
                        Some(t) => b.with_token_types(t),
                        None => Ok(b),
                    })
                    .and_then(|b| match starts {
                        Some(s) => b.with_starts(&s.iter().map(|c| c.0).collect::<Vec<_>>()),
                        None => Ok(b),
                    })
            }
            BatchIn::Padded { batch, seq, ids, mask, mask_shape, types } => {
                let (b, s) = (usize::from(*batch % 6), usize::from(*seq % 90));
                let (mb, ms) = mask_shape.map_or((b, s), |(x, y)| (usize::from(x % 6), usize::from(y % 90)));
                let cycle = |n: usize, f: &dyn Fn(usize) -> u32| (0..n).map(f).collect::<Vec<u32>>();
                let ids = cycle(b * s, &|i| if ids.is_empty() { 1 } else { ids[i % ids.len()].0 });
                let mask = cycle(mb * ms, &|i| if mask.is_empty() { 1 } else { mask[i % mask.len()].0 });
                let ids = Array2::from_shape_vec((b, s), ids).expect("b × s ids");
                let mask = Array2::from_shape_vec((mb, ms), mask).expect("mb × ms mask");
                let types = types.as_ref().map(|t| {
                    let v = cycle(b * s, &|i| if t.is_empty() { 0 } else { u32::from(t[i % t.len()] % 3) });
                    Array2::from_shape_vec((b, s), v).expect("b × s types")
                });
                Batch::from_padded(ids.view(), mask.view(), types.as_ref().map(|t| t.view()))
            }
        };
        match result {
            Ok(batch) => Some(batch),
            Err(err) => {
                let _ = err.to_string();
                None
            }
        }
    }
}

#[derive(Debug, Arbitrary)]
struct SamplingIn {
    temperature: f32,
    top_k: Option<Count>,
    top_p: Option<f32>,
}

#[derive(Debug, Arbitrary)]
enum Call {
    Embed {
        batch: BatchIn,
        threaded: bool,
    },
    Forward {
        batch: BatchIn,
        threaded: bool,
    },
    Logits {
        batch: BatchIn,
    },
    Steps {
        cache_batch: u8,
        steps: Vec<BatchIn>,
    },
    Generate {
        prompts: Vec<Vec<Tok>>,
        max_new_tokens: Count,
        sampling: Option<SamplingIn>,
        stop: Vec<Tok>,
        seed: u64,
    },
}

fn all_finite<const N: usize>(rows: &[[f32; N]]) -> bool {
    rows.iter().flatten().all(|v| v.is_finite())
}

fn bits<const N: usize>(rows: &[[f32; N]]) -> Vec<u32> {
    rows.iter().flatten().map(|v| v.to_bits()).collect()
}

fn report<T>(result: transformer::Result<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(err) => {
            let _ = (err.to_string(), format!("{err:?}"));
            None
        }
    }
}

fuzz_target!(|calls: Vec<Call>| {
    let m = models();
    for call in calls.iter().take(4) {
        match call {
            Call::Embed { batch, threaded } | Call::Forward { batch, threaded } => {
                let Some(batch) = batch.build() else { continue };
                let embed = matches!(call, Call::Embed { .. });
                let run = |model: &Encoder| if embed { model.embed(&batch) } else { model.forward(&batch) };
                let Some(rows) = report(run(&m.encoder)) else { continue };
                assert_eq!(rows.len(), if embed { batch.batch_size() } else { batch.rows() });
                assert!(all_finite(&rows), "non-finite encoder output for {batch:?}");
                if embed {
                    for row in &rows {
                        let norm: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                        assert!(norm <= 1.0 + 1e-4, "embedding norm {norm}");
                    }
                }
                if *threaded {
                    let other = run(&m.encoder_threaded)
                        .expect("the threaded model accepts what the sequential one did");
                    assert_eq!(bits(&rows), bits(&other), "threads changed the result");
                }
            }
            Call::Logits { batch } => {
                let Some(batch) = batch.build() else { continue };
                let Some(rows) = report(m.decoder.logits(&batch)) else { continue };
                assert_eq!(rows.len(), batch.rows());
                assert!(all_finite(&rows), "non-finite logits for {batch:?}");
            }
            Call::Steps { cache_batch, steps } => {
                let mut cache = m.decoder.new_cache(usize::from(cache_batch % 5));
                let mut ws = Workspace::new();
                for step in steps.iter().take(6) {
                    let Some(batch) = step.build() else { continue };
                    let before = cache.lens().to_vec();
                    match m.decoder.step_into(&batch, &mut cache, &mut ws) {
                        Ok(logits) => {
                            assert_eq!(logits.len(), batch.batch_size());
                            assert!(all_finite(logits), "non-finite step logits for {batch:?}");
                            for (b, (&old, &new)) in before.iter().zip(cache.lens()).enumerate() {
                                assert_eq!(new, old + batch.extent_of(b));
                            }
                        }
                        Err(err) => {
                            let _ = err.to_string();
                            assert_eq!(cache.lens(), &before[..], "a failed step changed the cache");
                        }
                    }
                    assert!(cache.lens().iter().all(|&l| l <= Decoder::MAX_POSITIONS));
                }
            }
            Call::Generate { prompts, max_new_tokens, sampling, stop, seed } => {
                let prompts: Vec<Vec<u32>> =
                    prompts.iter().take(4).map(|p| p.iter().take(48).map(|t| t.0).collect()).collect();
                let prompts: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
                let sampling = match sampling {
                    None => Sampling::Greedy,
                    Some(s) => Sampling::Sample {
                        temperature: s.temperature,
                        top_k: s.top_k.map(|c| c.0),
                        top_p: s.top_p,
                    },
                };
                let options = GenerateOptions {
                    max_new_tokens: max_new_tokens.0,
                    sampling,
                    stop_tokens: stop.iter().take(4).map(|t| t.0).collect(),
                    seed: *seed,
                };
                let Some(out) = report(m.decoder.generate(&prompts, &options)) else { continue };
                assert_eq!(out.len(), prompts.len());
                for tokens in &out {
                    assert!(!tokens.is_empty() && tokens.len() <= options.max_new_tokens);
                    assert!(tokens.iter().all(|&t| (t as usize) < Decoder::VOCAB_SIZE), "{tokens:?}");
                    let stops = tokens.iter().filter(|t| options.stop_tokens.contains(t)).count();
                    assert!(
                        stops <= 1 && (stops == 0 || options.stop_tokens.contains(tokens.last().unwrap()))
                    );
                }
                if let [prompt] = prompts[..] {
                    let streamed: Vec<u32> = m
                        .decoder
                        .stream(prompt, &options)
                        .expect("stream accepts what generate did")
                        .collect::<Result<_, _>>()
                        .expect("stream succeeds where generate did");
                    assert_eq!(streamed, out[0], "stream and generate disagree");
                }
            }
        }
    }
});
