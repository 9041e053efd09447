//! After a warm-up call, a forward pass at the same batch shape allocates nothing: all
//! activations live in the reusable workspace. Counted with a global allocator that tallies this
//! thread's allocations (single-threaded run, so every allocation happens here).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use transformer::{Batch, Workspace};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call unchanged to the system allocator; the counter is thread-local
// plain data and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

transformer::model! {
    /// Small, BERT-shaped, with a head width that is not a power of two.
    pub struct Small {
        vocab_size: 100,
        max_positions: 64,
        type_vocab_size: 2,
        d_model: 48,
        heads: 4,
        layers: 2,
        d_ff: 96,
        activation: gelu_tanh,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: post,
        positions: learned,
        attention: bidirectional,
        weights: bert,
    }
}

#[test]
fn a_warm_forward_pass_allocates_nothing() {
    let model = common::with_random_weights(0.5, Small::load);
    let long: Vec<u32> = (0..50).map(|i| i % 100).collect();
    let batch = Batch::from_sequences(&[long.clone(), long[..20].to_vec(), long[..33].to_vec()]).unwrap();
    let smaller = Batch::from_sequences(&[long[..10].to_vec()]).unwrap();
    let mut ws = Workspace::new();

    model.embed_into(&batch, &mut ws).unwrap();
    let growths = ws.growths();
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..3 {
        model.embed_into(&batch, &mut ws).unwrap();
        model.forward_into(&smaller, &mut ws).unwrap();
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(allocations, 0, "warm forward passes allocated {allocations} times");
    assert_eq!(ws.growths(), growths, "the workspace grew after warm-up");
}

transformer::model! {
    /// `tests/fixtures/reformer/causal`: LSH and local layers, reversible streams.
    pub struct Reformer {
        vocab_size: 320,
        max_positions: 64,
        d_model: 64,
        heads: 2,
        layers: 4,
        d_ff: 128,
        activation: gelu_erf,
        norm_eps: 1e-12,
        attention: causal,
        weights: reformer,
        attn_layers: [lsh, local, lsh, local],
        lsh: { chunk: 8, chunks_before: 1, chunks_after: 0, buckets: 4, hashes: 2 },
        local: { chunk: 8, chunks_before: 1, chunks_after: 0 },
        axial_positions: { shape: [8, 8], dims: [16, 48] },
    }
}

/// A Reformer's forward pass too, HF's padding (27 → 32 positions) and the LSH kernels' per-head
/// working memory included.
#[test]
fn a_warm_reformer_forward_pass_allocates_nothing() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reformer/causal");
    let model =
        Reformer::from_safetensors(dir.join("model.safetensors"), dir.join("rotations.safetensors")).unwrap();
    let long: Vec<u32> = (0..27).map(|i| 3 + i * 7 % 300).collect();
    let batch = Batch::from_sequences(&[long.clone(), long[..20].to_vec()]).unwrap();
    let smaller = Batch::from_sequences(&[long[..16].to_vec()]).unwrap();
    let mut ws = Workspace::new();

    model.logits_into(&batch, &mut ws).unwrap();
    let growths = ws.growths();
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..3 {
        model.logits_into(&batch, &mut ws).unwrap();
        model.logits_into(&smaller, &mut ws).unwrap();
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(allocations, 0, "warm Reformer forward passes allocated {allocations} times");
    assert_eq!(ws.growths(), growths, "the workspace grew after warm-up");
}

#[path = "common/additive_presets.rs"]
mod additive_presets;

/// A location-sensitive encoder-decoder's teacher-forced pass too: its per-layer alignment states
/// come from the model's pool.
#[test]
fn a_warm_teacher_forced_location_sensitive_pass_allocates_nothing() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/additive_seq2seq/location_sensitive/model.safetensors");
    let model = additive_presets::PaperLocationSensitive::from_safetensors(path).unwrap();
    let sources = Batch::from_sequences(&[vec![5, 9, 12, 7, 2], vec![4, 8, 2]]).unwrap();
    let memory = model.encode(&sources).unwrap();
    let targets = Batch::from_sequences(&[vec![1, 6, 9, 3], vec![1, 7]]).unwrap();
    let mut ws = Workspace::new();

    model.logits_into(&memory, &targets, &mut ws).unwrap();
    let growths = ws.growths();
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..3 {
        model.logits_into(&memory, &targets, &mut ws).unwrap();
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(allocations, 0, "warm teacher-forced passes allocated {allocations} times");
    assert_eq!(ws.growths(), growths, "the workspace grew after warm-up");
}

transformer::model! {
    /// A small GPT-2-shaped decoder with a trainer.
    pub struct SmallGpt {
        vocab_size: 100,
        max_positions: 64,
        d_model: 48,
        heads: 4,
        layers: 2,
        d_ff: 96,
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

/// A warm training step (forward, backward, clipping, AdamW) allocates nothing: activations,
/// gradients and optimizer state are sized at the first step of a shape, and the training GEMMs
/// pack their operands into buffers kept per thread and reused (`train::linear`).
#[test]
fn a_warm_training_step_allocates_nothing() {
    let mut trainer = SmallGptTrainer::from_scratch(0);
    let mut adamw = trainer.optimizer(transformer::train::optim::AdamWConfig::default()).unwrap();
    let long: Vec<u32> = (0..40).map(|i| (i * 7) % 100).collect();
    let batch = Batch::from_sequences(&[long.clone(), long[..25].to_vec()]).unwrap();
    trainer.step(&batch, &mut adamw, 1e-3, Some(1.0)).unwrap();
    let before = ALLOCATIONS.with(Cell::get);
    for _ in 0..3 {
        trainer.step(&batch, &mut adamw, 1e-3, Some(1.0)).unwrap();
    }
    let allocations = ALLOCATIONS.with(Cell::get) - before;
    assert_eq!(allocations, 0, "3 warm training steps allocated {allocations} times");
}
