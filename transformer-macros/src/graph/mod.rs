//! The typed op graph a spec lowers to, with every value's width inferred and checked, and the
//! fusion decisions made here rather than in codegen.
//!
//! A model is an embedding block, one layer block repeated `layers` times (one generated type, not
//! unrolled copies) and an optional final norm. A block owns weighted *fields* and a straight-line
//! list of *ops* over values of shape `[rows, width]`: the residual stream `x`, and scratch values
//! that live in the workspace. Lowering emits plain ops (linear, activation, add, norm, …);
//! [`fuse`] then folds an activation into the linear before it (a GEMM epilogue) and an add into
//! the norm after it (residual + LayerNorm in one pass).
//!
//! Encoder-decoder models lower to two stacks and a head ([`seq2seq`]); their layers are built by
//! the same [`layer_block`] from a [`LayerPlan`].
//!
//! This module is the graph's vocabulary (values, fields, ops, blocks); the phases over it live
//! beside it: [`stack`] lowers a single-stack spec, [`layer`] builds each preset's layer from a plan,
//! [`widths`] checks each op against its fields, [`names`] holds the presets' checkpoint names.

mod layer;
mod names;
pub mod reformer;
pub mod seq2seq;
mod stack;
mod widths;

pub use layer::{layer_block, AdditivePlan, CrossPlan, LayerPlan, Linear};
pub use names::{renames, Rename};
pub use stack::{lower, masked_lm_head};
pub use widths::check_widths;

use crate::spec::{Activation, ImageInput, Sparse};

/// A tensor of shape `[rows, width]` flowing through a block.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Value {
    pub name: &'static str,
    pub width: usize,
}

impl Value {
    /// The residual stream of width `d_model`, passed in by the caller; every other value is scratch.
    pub fn stream(width: usize) -> Self {
        Value { name: STREAM, width }
    }

    pub fn is_stream(&self) -> bool {
        self.name == STREAM
    }
}

pub const STREAM: &str = "x";

/// A reversible model's second residual stream (the Reformer's `X2`). It lives in the workspace
/// like scratch, but holds its value from the embeddings to the head.
pub const SECOND_STREAM: &str = "x2";

impl Value {
    pub fn second_stream(width: usize) -> Self {
        Value { name: SECOND_STREAM, width }
    }
}

/// A weighted part of a block: a field of the generated struct.
#[derive(Clone, Debug)]
pub struct Field {
    pub name: &'static str,
    pub doc: &'static str,
    pub kind: FieldKind,
    /// Checkpoint names relative to the block's prefix: one per fused part for linears, the table
    /// for embeddings, the module for norms.
    pub weights: Vec<&'static str>,
    /// Output rows of each fused part when they differ (grouped-query Q/K/V); empty: equal parts.
    pub split: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum FieldKind {
    Linear {
        input: usize,
        output: usize,
        bias: bool,
        layout: Layout,
    },
    LayerNorm {
        width: usize,
        eps: f64,
    },
    RmsNorm {
        width: usize,
        eps: f64,
    },
    /// Rotary tables, computed at load.
    Rope {
        max_positions: usize,
        head_dim: usize,
        rotary_dims: usize,
        theta: f64,
    },
    /// A `[rows, width]` table; `batched` when the checkpoint stores it `[1, rows, width]` (ViT).
    Embedding {
        rows: usize,
        width: usize,
        batched: bool,
    },
    Sinusoidal {
        rows: usize,
        width: usize,
    },
    /// An additive or location cross-attention (`layers::additive`) over `query`-wide decoder
    /// rows and `memory`-wide encoder rows, loaded under its module's name.
    Additive {
        kind: AdditiveKind,
        query: usize,
        memory: usize,
    },
    /// ALiBi's fixed per-head slopes, as a table per offset computed at load: `slope · (j − p)`
    /// (BLOOM), or `−slope · |j − p|` when `bidirectional` (MosaicBERT).
    Alibi {
        heads: usize,
        max_positions: usize,
        bidirectional: bool,
    },
    /// T5's learned bias per head and relative-distance bucket, expanded at load into a table
    /// per offset; shared by every layer of its stack.
    RelativeBias {
        heads: usize,
        buckets: usize,
        max_distance: usize,
        bidirectional: bool,
        max_positions: usize,
    },
    /// The Reformer's axial position table (`weights.0` `[s0, 1, d0]`, `weights.1` `[1, s1, d1]`
    /// under the field's name): `width = d0 + d1`, `shape[0] · shape[1]` positions.
    Axial {
        width: usize,
        shape: [usize; 2],
        dims: [usize; 2],
    },
    /// LSH attention's random rotations `[heads, head_dim, hashes, buckets / 2]`, loaded from the
    /// model's second file (Hugging Face draws them anew in every forward, so they are an input).
    Rotations {
        heads: usize,
        head_dim: usize,
        hashes: usize,
        buckets: usize,
    },
}

/// What an additive or location cross-attention scores with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AdditiveKind {
    /// Bahdanau: an MLP of width `attention`.
    Bahdanau { attention: usize },
    /// Luong's "location": one logit per source position up to `max_source`.
    Location { max_source: usize },
    /// Bahdanau plus `filters` convolutions of width `kernel` over the previous and cumulative
    /// alignments.
    LocationSensitive { attention: usize, filters: usize, kernel: usize },
}

impl AdditiveKind {
    /// Width of each query row's scratch: its projection, or its location logits.
    pub fn scratch_width(self) -> usize {
        match self {
            AdditiveKind::Bahdanau { attention } | AdditiveKind::LocationSensitive { attention, .. } => {
                attention
            }
            AdditiveKind::Location { max_source } => max_source,
        }
    }
}

/// How a checkpoint stores a linear layer's weight.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layout {
    /// `nn.Linear`: `[out, in]`.
    Torch,
    /// GPT-2's `Conv1D`: `[in, out]`.
    Conv1d,
    /// A patch embedding's `Conv2d` with kernel = stride = `patch`: `[out, channels, patch, patch]`,
    /// the GEMM over unfolded patches.
    Conv2d { channels: usize, patch: usize },
    /// `nn.MultiheadAttention`'s packed `{name}_weight` `[total, in]` / `{name}_bias`: this linear
    /// is rows `first..first + out` (Q, or K and V of a cross-attention).
    InProj { total: usize, first: usize },
    /// BLOOM's fused `query_key_value`: `nn.Linear` rows ordered `[heads, 3, head_dim]` (each
    /// head's query, key and value together), reordered at load to `[Q | K | V]`.
    HeadInterleaved { heads: usize },
    /// `nn.Linear` weight with the bias from another tensor, `[1, out]` under the root (BART's
    /// `final_logits_bias`).
    BiasAt { bias: &'static str },
    /// An `nn.Linear` weight tensor named in full, its bias `[out]` under another name beside it
    /// (the Reformer's `lm_head.decoder.weight` with `lm_head.bias`).
    BiasBeside { bias: &'static str },
}

/// An attention's local window: how many keys (ending at the query when causal, centred on it
/// otherwise) each query sees.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Window {
    /// Every earlier key.
    Global,
    /// The same window in every layer.
    Fixed(usize),
    /// Layer `i` uses `windows[i]` (`None`: global), e.g. alternating local and global layers;
    /// the one layer type reads its entry by index.
    PerLayer(&'static [Option<usize>]),
}

impl Window {
    pub fn from_option(window: Option<usize>) -> Self {
        window.map_or(Window::Global, Window::Fixed)
    }

    /// One window per layer: the same everywhere is one value, otherwise a table (leaked once
    /// per expansion: it lives in `'static` graph data).
    pub fn of_layers(windows: &[Option<usize>]) -> Self {
        match windows.first() {
            None => Window::Global,
            Some(&first) if windows.iter().all(|&w| w == first) => Window::from_option(first),
            Some(_) => Window::PerLayer(Box::leak(windows.to_vec().into_boxed_slice())),
        }
    }
}

/// An attention's block-sparse layouts (Sparse Transformer) by layer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Layouts {
    /// No layout: every key the window and direction allow.
    Dense,
    /// The same layout in every layer.
    Fixed(Sparse),
    /// Layer `i` uses `layouts[i]` (`None`: dense), e.g. GPT-3's alternating dense and sparse
    /// layers; the one layer type reads its entry by index.
    PerLayer(&'static [Option<Sparse>]),
}

impl Layouts {
    pub fn from_option(layout: Option<Sparse>) -> Self {
        layout.map_or(Layouts::Dense, Layouts::Fixed)
    }

    /// One layout per layer: the same everywhere is one value, otherwise a table (leaked once
    /// per expansion, as [`Window::of_layers`]).
    pub fn of_layers(layouts: &[Option<Sparse>]) -> Self {
        match layouts.first() {
            None => Layouts::Dense,
            Some(&first) if layouts.iter().all(|&l| l == first) => Layouts::from_option(first),
            Some(_) => Layouts::PerLayer(Box::leak(layouts.to_vec().into_boxed_slice())),
        }
    }
}

/// Which id a gather looks up for each row.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Index {
    Token,
    /// The row's position in its sequence (padding repeats the last real position).
    Position,
    TokenType,
    /// The row's index in its sequence, padding included (the Reformer's positions in a batch
    /// it padded to whole chunks, as Hugging Face counts them).
    Slot,
}

/// How a chunked attention groups its (sorted, for LSH) positions: chunks of `chunk`, each
/// attending to itself and `before` / `after` neighbouring chunks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Chunking {
    pub chunk: usize,
    pub before: usize,
    pub after: usize,
}

/// One step of a block's forward pass.
#[derive(Clone, Debug)]
pub enum Op {
    /// `output = input·Wᵀ + b`, then `act` (an activation fused as the GEMM epilogue).
    Linear { field: &'static str, input: Value, output: Value, act: Option<Activation> },
    /// `value = act(value)`; fused away into the preceding linear when it wrote `value`.
    Activation { value: Value, act: Activation },
    /// Multi-head attention over `qkv` (`[Q | K | V]` rows) into `output`; `causal` limits each
    /// query to the keys at or before it (and lets a KV cache serve generation); `bias`: scores
    /// get the stack's relative position bias; `scaled`: scores are multiplied by
    /// `1/sqrt(head_dim)` (T5 folds that into its weights instead).
    Attention {
        qkv: Value,
        output: Value,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        causal: bool,
        window: Window,
        /// The block-sparse layouts the scores also obey.
        sparse: Layouts,
        bias: bool,
        scaled: bool,
    },
    /// Cross-attention: queries `q` over the encoder memory's keys and values (projected once per
    /// source by the field `kv`, outside the step) into `output`.
    CrossAttention { q: Value, kv: &'static str, output: Value, heads: usize, head_dim: usize, scaled: bool },
    /// Additive or location cross-attention (the field `field`): each `input` row attends to the
    /// raw encoder rows (keys projected once per source); `scores` holds its projected query or
    /// location logits, `alignments` its weights (`[rows, max_source]`, the first
    /// `rows × source length` used), `output` the context `Σ α_j h_j` (the memory's width).
    AdditiveCross { field: &'static str, input: Value, scores: Value, alignments: Value, output: Value },
    /// `value *= factor` (scaled embeddings, T5's tied-head rescale).
    Scale { value: Value, factor: f64 },
    /// Rotates the query and key heads of `qkv` in place by their positions.
    Rope { field: &'static str, qkv: Value, heads: usize, kv_heads: usize },
    /// `output = act(gate) · up` from `input` rows of `[gate | up]` (`act`: a gated activation).
    Glu { input: Value, output: Value, act: Activation },
    /// `stream += sublayer`.
    Add { stream: Value, sublayer: Value },
    /// `output = norm(input)` (in place when they are the same value).
    Norm { field: &'static str, input: Value, output: Value },
    /// `stream = norm(stream + sublayer)`: [`Op::Add`] then [`Op::Norm`] fused.
    AddNorm { field: &'static str, stream: Value, sublayer: Value },
    /// `output[row] (+)= table[index(row) + offset]` (BART's positions start at row 2).
    Gather { field: &'static str, index: Index, output: Value, accumulate: bool, offset: usize },
    /// `output = [inputs[0] | inputs[1] | …]` along the feature axis (each row copied).
    Concat { inputs: &'static [Value], output: Value },
    /// `output = input[:, start..start + output.width]` (a copy).
    Slice { input: Value, start: usize, output: Value },
    /// The Reformer's LSH self-attention over `qkv` (`[QK | V]` rows: queries are keys): positions
    /// hashed into `buckets` by the `rotations` field in each of `hashes` rounds, sorted by
    /// bucket, attended in chunks; `output` gets the heads' context.
    LshAttention {
        rotations: &'static str,
        qkv: Value,
        output: Value,
        heads: usize,
        head_dim: usize,
        buckets: usize,
        hashes: usize,
        chunking: Chunking,
        causal: bool,
    },
    /// The Reformer's local self-attention over `qkv` (`[Q | K | V]` rows): each chunk of
    /// positions attends to itself and its neighbours.
    LocalAttention {
        qkv: Value,
        output: Value,
        heads: usize,
        head_dim: usize,
        chunking: Chunking,
        causal: bool,
    },
    /// Images → the stream: unfold each image into patches, project them (`patches`, a linear),
    /// prepend the class token if any, add positions.
    Patches {
        image: ImageInput,
        patches: &'static str,
        class_token: Option<&'static str>,
        positions: &'static str,
    },
}

/// A block: fields, scratch values and ops; `prefix` is its checkpoint prefix (with `{i}` for the
/// layer index in repeated blocks).
#[derive(Clone, Debug)]
pub struct Block {
    pub suffix: &'static str,
    pub doc: String,
    pub prefix: &'static str,
    pub fields: Vec<Field>,
    pub ops: Vec<Op>,
    /// Whether `prefix` sits under the checkpoint's root (see [`Graph::roots`]).
    pub rooted: bool,
    /// The value the block produces besides the stream (a head's logits), written to an output
    /// argument rather than to scratch.
    pub output: Option<Value>,
    /// The block also runs as cached steps of a decoder: positions continue each cache's length,
    /// and a causal attention gets a `forward_cached`.
    pub cached: bool,
}

impl Block {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Whether an op varies by layer index (the forward pass then takes the layer's index).
    pub fn per_layer(&self) -> bool {
        self.ops.iter().any(|op| {
            matches!(
                op,
                Op::Attention { window: Window::PerLayer(_), .. }
                    | Op::Attention { sparse: Layouts::PerLayer(_), .. }
            )
        })
    }

    /// Scratch values the ops use, in first-use order, each once.
    pub fn scratch(&self) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        for op in &self.ops {
            for v in op.values() {
                if !v.is_stream() && Some(v) != self.output && !out.iter().any(|o| o.name == v.name) {
                    out.push(v);
                }
            }
        }
        out
    }
}

impl Op {
    /// Whether the op writes the residual stream.
    pub fn writes_stream(&self) -> bool {
        match *self {
            Op::Linear { output, .. } | Op::Norm { output, .. } | Op::Gather { output, .. } => {
                output.is_stream()
            }
            Op::Activation { value, .. } => value.is_stream(),
            Op::Attention { output, .. } | Op::CrossAttention { output, .. } => output.is_stream(),
            Op::LshAttention { output, .. } | Op::LocalAttention { output, .. } => output.is_stream(),
            Op::AdditiveCross { output, .. } => output.is_stream(),
            Op::Scale { value, .. } => value.is_stream(),
            Op::Rope { qkv, .. } => qkv.is_stream(),
            Op::Glu { output, .. } => output.is_stream(),
            Op::Concat { output, .. } | Op::Slice { output, .. } => output.is_stream(),
            Op::Add { .. } | Op::AddNorm { .. } | Op::Patches { .. } => true,
        }
    }

    /// The values the op reads or writes.
    pub fn values(&self) -> Vec<Value> {
        match *self {
            Op::Linear { input, output, .. } | Op::Norm { input, output, .. } => vec![input, output],
            Op::Activation { value, .. } => vec![value],
            Op::Attention { qkv, output, .. }
            | Op::LshAttention { qkv, output, .. }
            | Op::LocalAttention { qkv, output, .. } => vec![qkv, output],
            Op::CrossAttention { q, output, .. } => vec![q, output],
            Op::AdditiveCross { input, scores, alignments, output, .. } => {
                vec![input, scores, alignments, output]
            }
            Op::Scale { value, .. } => vec![value],
            Op::Add { stream, sublayer } | Op::AddNorm { stream, sublayer, .. } => vec![stream, sublayer],
            Op::Gather { output, .. } => vec![output],
            Op::Patches { .. } => vec![],
            Op::Concat { inputs, output } => inputs.iter().copied().chain([output]).collect(),
            Op::Slice { input, output, .. } => vec![input, output],
            Op::Rope { qkv, .. } => vec![qkv],
            Op::Glu { input, output, .. } => vec![input, output],
        }
    }
}

/// The whole model.
#[derive(Clone, Debug)]
pub struct Graph {
    pub embeddings: Block,
    pub layer: Block,
    pub layers: usize,
    /// Pre-norm models normalise the stream once more after the last layer.
    pub final_norm: Option<Block>,
    /// Layer types besides `layer`, when layers differ in their fields (a Reformer's LSH and
    /// local layers); empty for every other model.
    pub other_layers: Vec<Block>,
    /// With `other_layers`: layer `i` is of type `layer_types[i]`, 0 for `layer` and `k` for
    /// `other_layers[k - 1]`.
    pub layer_types: Vec<usize>,
    /// Decoders project the stream to vocabulary logits; image classifiers project the pooled
    /// stream to label logits.
    pub head: Option<Block>,
    /// The model's field name for the head.
    pub head_field: &'static str,
    /// Checkpoint tensors the model knows and deliberately does not use; `{i}` stands for each
    /// layer index.
    pub ignored: Vec<&'static str>,
    /// Prefixes the checkpoint may put before every name, tried in order (e.g. `transformer` for
    /// a `GPT2LMHeadModel` save, none for a bare `GPT2Model`).
    pub roots: &'static [&'static str],
}

impl Graph {
    /// Every block, in forward order.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        [Some(&self.embeddings), Some(&self.layer)]
            .into_iter()
            .chain(self.other_layers.iter().map(Some))
            .chain([self.final_norm.as_ref(), self.head.as_ref()])
            .flatten()
    }
}

/// Fusion on the op list: `Linear → Activation` on the same value becomes a linear with an
/// epilogue; `Add → Norm` in place on the stream becomes one residual-norm pass.
pub fn fuse(ops: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::with_capacity(ops.len());
    for op in ops {
        match (out.last_mut(), &op) {
            (Some(Op::Linear { output, act: act @ None, .. }), Op::Activation { value, act: a })
                if *output == *value =>
            {
                *act = Some(*a);
            }
            (Some(Op::Add { stream, sublayer }), Op::Norm { field, input, output })
                if input == stream && output == stream =>
            {
                let fused = Op::AddNorm { field, stream: *stream, sublayer: *sublayer };
                *out.last_mut().expect("matched Some above") = fused;
            }
            _ => out.push(op),
        }
    }
    out
}
