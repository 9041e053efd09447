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

pub mod reformer;
pub mod seq2seq;

use proc_macro2::Span;

use crate::spec::{
    Activation, Attention, ImageInput, LmHead, NormKind, Placement, Pooling, Positions, Sparse, Spec,
    WeightScheme,
};

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

/// Lowers a validated spec and fuses; widths are checked by [`check_widths`].
pub fn lower(spec: &Spec) -> Graph {
    if spec.weights == WeightScheme::T5 {
        return seq2seq::encoder_only(spec);
    }
    if let Some(reversible) = &spec.reversible {
        return reformer::lower(spec, reversible);
    }
    let names = Names::of(spec.weights);
    let norm = match spec.norm.kind {
        NormKind::LayerNorm => FieldKind::LayerNorm { width: spec.d_model, eps: spec.norm.eps },
        NormKind::RmsNorm => FieldKind::RmsNorm { width: spec.d_model, eps: spec.norm.eps },
    };
    let (head, head_field) = match (spec.lm_head, spec.classifier) {
        (Some(head), _) => (Some(lm_head(spec, &names, head)), "lm_head"),
        (None, Some(_)) => (Some(classifier(spec, &names)), "classifier"),
        (None, None) => (None, ""),
    };
    Graph {
        embeddings: match spec.image {
            Some(image) => image_embeddings(spec, &names, image),
            None => embeddings(spec, &names, norm),
        },
        layer: layer(spec, &names, norm),
        layers: spec.layers,
        final_norm: (spec.norm.placement == Placement::Pre).then(|| Block {
            suffix: "FinalNorm",
            doc: "The norm after the last pre-norm layer.".into(),
            prefix: names.final_norm,
            fields: vec![Field {
                name: "norm",
                doc: "Final norm.",
                kind: norm,
                weights: vec![""],
                split: vec![],
            }],
            ops: vec![Op::Norm { field: "norm", input: x(spec), output: x(spec) }],
            rooted: true,
            output: None,
            cached: false,
        }),
        other_layers: vec![],
        layer_types: vec![],
        head,
        head_field,
        ignored: names.ignored.to_vec(),
        roots: names.roots,
    }
}

fn x(spec: &Spec) -> Value {
    Value::stream(spec.d_model)
}

/// Token + position (+ token type) embeddings, then a norm where the scheme has one.
fn embeddings(spec: &Spec, names: &Names, norm: FieldKind) -> Block {
    let (d, x) = (spec.d_model, x(spec));
    let mut fields = vec![Field {
        name: "word_embeddings",
        doc: "Token embeddings `[vocab_size, d_model]`.",
        kind: FieldKind::Embedding { rows: spec.vocab_size, width: d, batched: false },
        weights: vec![names.word_embeddings],
        split: vec![],
    }];
    let mut ops = vec![Op::Gather {
        field: "word_embeddings",
        index: Index::Token,
        output: x,
        accumulate: false,
        offset: 0,
    }];
    let positions = match spec.positions {
        Positions::Learned => Some(Field {
            name: "position_embeddings",
            doc: "Learned position embeddings `[max_positions, d_model]`.",
            kind: FieldKind::Embedding { rows: spec.max_positions, width: d, batched: false },
            weights: vec![names.position_embeddings],
            split: vec![],
        }),
        Positions::Sinusoidal => Some(Field {
            name: "position_embeddings",
            doc: "Fixed sinusoidal positions `[max_positions, d_model]`, computed at load.",
            kind: FieldKind::Sinusoidal { rows: spec.max_positions, width: d },
            weights: vec![],
            split: vec![],
        }),
        // Rotary positions and relative biases live in the attention, not in the embeddings.
        Positions::Rope { .. } | Positions::Relative { .. } | Positions::Alibi => None,
        Positions::Axial { .. } => unreachable!("a Reformer lowers through `graph::reformer`"),
    };
    if let Some(field) = positions {
        fields.push(field);
        ops.push(Op::Gather {
            field: "position_embeddings",
            index: Index::Position,
            output: x,
            accumulate: true,
            offset: 0,
        });
    }
    if let Some(types) = spec.type_vocab_size {
        fields.push(Field {
            name: "token_type_embeddings",
            doc: "Token-type (segment) embeddings `[type_vocab_size, d_model]`.",
            kind: FieldKind::Embedding { rows: types, width: d, batched: false },
            weights: vec![names.token_type_embeddings],
            split: vec![],
        });
        ops.push(Op::Gather {
            field: "token_type_embeddings",
            index: Index::TokenType,
            output: x,
            accumulate: true,
            offset: 0,
        });
    }
    if let Positions::Relative { buckets, max_distance } = spec.positions {
        fields.push(Field {
            name: "relative_attention_bias",
            doc: "Relative position bias per head and distance bucket, shared by every layer.",
            kind: FieldKind::RelativeBias {
                heads: spec.heads,
                buckets,
                max_distance,
                bidirectional: spec.attention == Attention::Bidirectional,
                max_positions: spec.max_positions,
            },
            weights: vec![relative_bias_name(spec.weights)],
            split: vec![],
        });
    }
    if spec.positions == Positions::Alibi {
        fields.push(Field {
            name: "alibi",
            doc: "ALiBi score bias per head and offset, shared by every layer.",
            kind: FieldKind::Alibi {
                heads: spec.heads,
                max_positions: spec.max_positions,
                bidirectional: spec.attention == Attention::Bidirectional,
            },
            weights: vec![],
            split: vec![],
        });
    }
    if let Some(norm_name) = names.embeddings_norm {
        fields.push(Field {
            name: "layer_norm",
            doc: "Norm over the summed embeddings.",
            kind: norm,
            weights: vec![norm_name],
            split: vec![],
        });
        ops.push(Op::Norm { field: "layer_norm", input: x, output: x });
    }
    Block {
        suffix: "Embeddings",
        doc: "Token and position embeddings, summed (and normalised where the checkpoint has a norm).".into(),
        prefix: names.embeddings,
        fields,
        ops,
        rooted: true,
        output: None,
        cached: spec.is_decoder(),
    }
}

/// Images as tokens: unfolded patches through the patch projection, a class token in front when
/// pooling by it, learned positions added.
fn image_embeddings(spec: &Spec, names: &Names, image: ImageInput) -> Block {
    let d = spec.d_model;
    let cls = spec.classifier.is_some_and(|c| c.pooling == Pooling::Cls);
    let mut fields = vec![Field {
        name: "patch_embeddings",
        doc: "Patch projection: the `Conv2d(kernel = stride = patch)` as a GEMM over unfolded patches.",
        kind: FieldKind::Linear {
            input: image.patch_width(),
            output: d,
            bias: true,
            layout: Layout::Conv2d { channels: image.channels, patch: image.patch_size },
        },
        weights: vec![names.patch_embeddings],
        split: vec![],
    }];
    if cls {
        fields.push(Field {
            name: "class_token",
            doc: "The class token prepended to every image's patches (`[1, 1, d_model]`).",
            kind: FieldKind::Embedding { rows: 1, width: d, batched: true },
            weights: vec![names.class_token],
            split: vec![],
        });
    }
    fields.push(Field {
        name: "position_embeddings",
        doc: "Learned positions, one per patch (and class token): `[1, positions, d_model]`.",
        kind: FieldKind::Embedding { rows: spec.max_positions, width: d, batched: true },
        weights: vec![names.position_embeddings],
        split: vec![],
    });
    Block {
        suffix: "Embeddings",
        doc: "Image patches as tokens: unfold, project, prepend the class token, add positions.".into(),
        prefix: names.embeddings,
        fields,
        ops: vec![Op::Patches {
            image,
            patches: "patch_embeddings",
            class_token: cls.then_some("class_token"),
            positions: "position_embeddings",
        }],
        rooted: true,
        output: None,
        cached: false,
    }
}

/// One transformer layer of a single-stack model, from the scheme's names.
fn layer(spec: &Spec, names: &Names, norm: FieldKind) -> Block {
    let qkv_layout = match spec.weights {
        WeightScheme::Bloom | WeightScheme::NeoX => Layout::HeadInterleaved { heads: spec.heads },
        _ => names.layout,
    };
    let plan = LayerPlan {
        d: spec.d_model,
        heads: spec.heads,
        kv_heads: spec.kv_heads,
        head_dim: spec.head_dim(),
        d_ff: spec.d_ff,
        activation: spec.activation,
        placement: spec.norm.placement,
        norm,
        bias: names.bias,
        layout: names.layout,
        rope: match spec.positions {
            Positions::Rope { theta, rotary_dims } => Some((spec.max_positions, theta, rotary_dims)),
            _ => None,
        },
        parallel: spec.parallel,
        causal: spec.attention == Attention::Causal,
        window: Window::of_layers(&spec.windows),
        sparse: Layouts::of_layers(&spec.sparse),
        relative_bias: matches!(spec.positions, Positions::Alibi | Positions::Relative { .. }),
        scaled: true,
        qkv: Linear { weights: names.qkv.to_vec(), layout: qkv_layout },
        attention_output: names.attention_output,
        attention_norm: names.attention_norm,
        cross: None,
        intermediate: names.intermediate,
        output: names.output,
        output_norm: names.output_norm,
        suffix: "Layer",
        prefix: names.layer,
    };
    let mut block = layer_block(&plan);
    block.cached = spec.is_decoder();
    block
}

/// A linear field's checkpoint names (one per fused part) and layout.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weights: Vec<&'static str>,
    pub layout: Layout,
}

/// A decoder layer's cross-attention sublayer: query, memory key/value (applied once per source),
/// output projection and norm.
#[derive(Clone, Debug)]
pub struct CrossPlan {
    pub memory_width: usize,
    /// An additive or location kind instead of multi-head attention (`query` and `key_value`
    /// are then unused; `output` projects the context from the memory's width).
    pub additive: Option<AdditivePlan>,
    pub query: Linear,
    pub key_value: Linear,
    pub output: &'static str,
    pub norm: &'static str,
}

/// An additive or location cross-attention sublayer: the module (checkpoint name relative to the
/// layer) and the longest source its alignments cover.
#[derive(Clone, Copy, Debug)]
pub struct AdditivePlan {
    pub kind: AdditiveKind,
    pub module: &'static str,
    pub max_source: usize,
}

/// Everything that decides a layer's fields and ops.
#[derive(Clone, Debug)]
pub struct LayerPlan {
    pub d: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub activation: Activation,
    pub placement: Placement,
    pub norm: FieldKind,
    /// Whether the linears have biases.
    pub bias: bool,
    /// How the single (unfused) linears are stored.
    pub layout: Layout,
    /// Rotary positions: `(max_positions, theta, rotary_dims)`.
    pub rope: Option<(usize, f64, usize)>,
    /// Attention and feed-forward both read the layer's input and add to it together.
    pub parallel: bool,
    pub causal: bool,
    pub window: Window,
    pub sparse: Layouts,
    /// The self-attention adds the stack's relative position bias.
    pub relative_bias: bool,
    /// Scores are scaled by `1/sqrt(head_dim)`.
    pub scaled: bool,
    pub qkv: Linear,
    pub attention_output: &'static str,
    pub attention_norm: &'static str,
    pub cross: Option<CrossPlan>,
    /// One name, or gate then up for gated feed-forwards.
    pub intermediate: &'static [&'static str],
    pub output: &'static str,
    pub output_norm: &'static str,
    pub suffix: &'static str,
    pub prefix: &'static str,
}

/// One transformer layer: self-attention, (cross-attention,) feed-forward, each with a residual
/// and a norm, placed before (pre-norm) or after (post-norm) the sublayer.
pub fn layer_block(p: &LayerPlan) -> Block {
    let (d, hd) = (p.d, p.head_dim);
    let x = Value::stream(d);
    let inner = p.heads * hd;
    let kv_width = p.kv_heads * hd;
    let qkv = Value { name: "qkv", width: inner + 2 * kv_width };
    let context = Value { name: "context", width: inner };
    let attention_out = Value { name: "attention_out", width: d };
    let gated = p.activation.is_gated();
    let gate_up = Value { name: "gate_up", width: 2 * p.d_ff };
    let intermediate = Value { name: "intermediate", width: p.d_ff };
    let ffn_out = Value { name: "ffn_out", width: d };
    let normed = Value { name: "normed", width: d };
    let cross_q = Value { name: "cross_q", width: inner };
    let linear = |name, doc, input, output, l: &Linear, split: Vec<usize>| Field {
        name,
        doc,
        kind: FieldKind::Linear { input, output, bias: p.bias, layout: l.layout },
        weights: l.weights.clone(),
        split,
    };
    let norm_field =
        |name, doc, weight| Field { name, doc, kind: p.norm, weights: vec![weight], split: vec![] };
    let plain = |weights: &[&'static str]| Linear { weights: weights.to_vec(), layout: p.layout };
    // Grouped-query projections have narrower K and V parts than Q.
    let qkv_split = if p.qkv.weights.len() == 3 { vec![inner, kv_width, kv_width] } else { vec![] };
    let mut fields = vec![
        linear("qkv", "Query, key and value projections as one GEMM.", d, qkv.width, &p.qkv, qkv_split),
        linear(
            "attention_output",
            "Attention output projection.",
            inner,
            d,
            &plain(std::slice::from_ref(&p.attention_output)),
            vec![],
        ),
        norm_field("attention_norm", "Norm of the attention sublayer.", p.attention_norm),
    ];
    if let Some(CrossPlan { additive: Some(additive), memory_width, output, norm, .. }) = &p.cross {
        fields.push(Field {
            name: "cross_attention",
            doc: "Additive or location cross-attention over the encoder's rows.",
            kind: FieldKind::Additive { kind: additive.kind, query: d, memory: *memory_width },
            weights: vec![additive.module],
            split: vec![],
        });
        fields.push(linear(
            "cross_output",
            "Cross-attention output projection of the context (memory width → d_model).",
            *memory_width,
            d,
            &plain(std::slice::from_ref(output)),
            vec![],
        ));
        fields.push(norm_field("cross_norm", "Norm of the cross-attention sublayer.", norm));
    } else if let Some(cross) = &p.cross {
        fields.push(linear(
            "cross_query",
            "Cross-attention query projection.",
            d,
            inner,
            &cross.query,
            vec![],
        ));
        fields.push(linear(
            "cross_key_value",
            "Cross-attention key and value projections of the encoder output, applied once per source.",
            cross.memory_width,
            2 * inner,
            &cross.key_value,
            vec![],
        ));
        fields.push(linear(
            "cross_output",
            "Cross-attention output projection.",
            inner,
            d,
            &plain(std::slice::from_ref(&cross.output)),
            vec![],
        ));
        fields.push(norm_field("cross_norm", "Norm of the cross-attention sublayer.", cross.norm));
    }
    fields.push(if gated {
        linear(
            "intermediate",
            "Feed-forward gate and up projections as one GEMM to `2·d_ff`.",
            d,
            gate_up.width,
            &plain(p.intermediate),
            vec![],
        )
    } else {
        linear(
            "intermediate",
            "Feed-forward up-projection to `d_ff`.",
            d,
            p.d_ff,
            &plain(p.intermediate),
            vec![],
        )
    });
    fields.push(linear(
        "output",
        "Feed-forward down-projection back to `d_model`.",
        p.d_ff,
        d,
        &plain(std::slice::from_ref(&p.output)),
        vec![],
    ));
    fields.push(norm_field("output_norm", "Norm of the feed-forward sublayer.", p.output_norm));
    if let Some((max_positions, theta, rotary_dims)) = p.rope {
        fields.push(Field {
            name: "rope",
            doc: "Rotary position tables (cos/sin per position), computed at load.",
            kind: FieldKind::Rope { max_positions, head_dim: hd, rotary_dims, theta },
            weights: vec![],
            split: vec![],
        });
    }
    let attention = |input| {
        let mut ops = vec![Op::Linear { field: "qkv", input, output: qkv, act: None }];
        if p.rope.is_some() {
            ops.push(Op::Rope { field: "rope", qkv, heads: p.heads, kv_heads: p.kv_heads });
        }
        ops.push(Op::Attention {
            qkv,
            output: context,
            heads: p.heads,
            kv_heads: p.kv_heads,
            head_dim: hd,
            causal: p.causal,
            window: p.window,
            sparse: p.sparse,
            bias: p.relative_bias,
            scaled: p.scaled,
        });
        ops.push(Op::Linear { field: "attention_output", input: context, output: attention_out, act: None });
        ops
    };
    let additive_attention = |input| {
        let Some(CrossPlan { additive: Some(additive), memory_width, .. }) = &p.cross else {
            return Vec::new();
        };
        let context = Value { name: "cross_context", width: *memory_width };
        vec![
            Op::AdditiveCross {
                field: "cross_attention",
                input,
                scores: Value { name: "cross_scores", width: additive.kind.scratch_width() },
                alignments: Value { name: "alignments", width: additive.max_source },
                output: context,
            },
            Op::Linear { field: "cross_output", input: context, output: attention_out, act: None },
        ]
    };
    let cross_attention = |input| {
        vec![
            Op::Linear { field: "cross_query", input, output: cross_q, act: None },
            Op::CrossAttention {
                q: cross_q,
                kv: "cross_key_value",
                output: context,
                heads: p.heads,
                head_dim: hd,
                scaled: p.scaled,
            },
            Op::Linear { field: "cross_output", input: context, output: attention_out, act: None },
        ]
    };
    let feed_forward = |input| {
        if gated {
            vec![
                Op::Linear { field: "intermediate", input, output: gate_up, act: None },
                Op::Glu { input: gate_up, output: intermediate, act: p.activation },
                Op::Linear { field: "output", input: intermediate, output: ffn_out, act: None },
            ]
        } else {
            vec![
                Op::Linear { field: "intermediate", input, output: intermediate, act: None },
                Op::Activation { value: intermediate, act: p.activation },
                Op::Linear { field: "output", input: intermediate, output: ffn_out, act: None },
            ]
        }
    };
    // Each sublayer with its residual and norm, in the layer's order.
    type Sublayer<'a> = (&'a dyn Fn(Value) -> Vec<Op>, &'static str, Value);
    let mut sublayers: Vec<Sublayer> = vec![(&attention, "attention_norm", attention_out)];
    match &p.cross {
        Some(CrossPlan { additive: Some(_), .. }) => {
            sublayers.push((&additive_attention, "cross_norm", attention_out));
        }
        Some(_) => sublayers.push((&cross_attention, "cross_norm", attention_out)),
        None => {}
    }
    sublayers.push((&feed_forward, "output_norm", ffn_out));
    let mut ops = Vec::new();
    if p.parallel {
        // x = x + attention(norm₁(x)) + ffn(norm₂(x)): both sublayers read x before either adds.
        for (sublayer, norm, _) in &sublayers {
            ops.push(Op::Norm { field: norm, input: x, output: normed });
            ops.extend(sublayer(normed));
        }
        ops.extend(sublayers.iter().map(|&(_, _, out)| Op::Add { stream: x, sublayer: out }));
    } else {
        for (sublayer, norm, out) in sublayers {
            match p.placement {
                Placement::Post => {
                    ops.extend(sublayer(x));
                    ops.push(Op::Add { stream: x, sublayer: out });
                    ops.push(Op::Norm { field: norm, input: x, output: x });
                }
                Placement::Pre => {
                    ops.push(Op::Norm { field: norm, input: x, output: normed });
                    ops.extend(sublayer(normed));
                    ops.push(Op::Add { stream: x, sublayer: out });
                }
            }
        }
    }
    let doc = match (p.placement, p.cross.is_some()) {
        _ if p.parallel => {
            "One layer, parallel residual: `x = x + attention(norm₁(x)) + ffn(norm₂(x))`."
        }
        (Placement::Post, false) => "One layer, post-norm: `x = norm(x + attention(x)); x = norm(x + ffn(x))`.",
        (Placement::Pre, false) => "One layer, pre-norm: `x = x + attention(norm(x)); x = x + ffn(norm(x))`.",
        (Placement::Post, true) => {
            "One decoder layer, post-norm: `x = norm(x + attention(x)); x = norm(x + cross(x, memory)); x = norm(x + ffn(x))`."
        }
        (Placement::Pre, true) => {
            "One decoder layer, pre-norm: `x = x + attention(norm(x)); x = x + cross(norm(x), memory); x = x + ffn(norm(x))`."
        }
    };
    Block {
        suffix: p.suffix,
        doc: doc.into(),
        prefix: p.prefix,
        fields,
        ops: fuse(ops),
        rooted: true,
        output: None,
        cached: false,
    }
}

/// Hidden states → vocabulary logits, tied to the token embeddings or with its own matrix.
fn lm_head(spec: &Spec, names: &Names, head: LmHead) -> Block {
    let logits = Value { name: "logits", width: spec.vocab_size };
    let (prefix, rooted, weight, doc) = match head {
        LmHead::Tied => {
            (names.embeddings, true, names.tied_head, "Logits from the token-embedding matrix (tied).")
        }
        LmHead::Untied => {
            ("", false, names.untied_head, "Logits from the head's own `[vocab_size, d_model]` matrix.")
        }
    };
    Block {
        suffix: "LmHead",
        doc: doc.into(),
        prefix,
        fields: vec![Field {
            name: "lm_head",
            doc: "`[d_model → vocab_size]`, no bias.",
            kind: FieldKind::Linear {
                input: spec.d_model,
                output: spec.vocab_size,
                bias: false,
                layout: Layout::Torch,
            },
            weights: vec![weight],
            split: vec![],
        }],
        ops: vec![Op::Linear { field: "lm_head", input: x(spec), output: logits, act: None }],
        rooted,
        output: Some(logits),
        cached: false,
    }
}

/// Pooled stream → label logits.
fn classifier(spec: &Spec, names: &Names) -> Block {
    let labels = spec.classifier.map_or(1, |c| c.labels);
    let logits = Value { name: "logits", width: labels };
    Block {
        suffix: "Classifier",
        doc: "Pooled hidden state to label logits.".into(),
        prefix: "",
        fields: vec![Field {
            name: "classifier",
            doc: "`[d_model → labels]` with bias.",
            kind: FieldKind::Linear {
                input: spec.d_model,
                output: labels,
                bias: true,
                layout: Layout::Torch,
            },
            weights: vec![names.classifier],
            split: vec![],
        }],
        ops: vec![Op::Linear { field: "classifier", input: x(spec), output: logits, act: None }],
        rooted: false,
        output: Some(logits),
        cached: false,
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

/// Checks that every op's inputs have the widths its field expects. Presets are right by
/// construction; this is what turns a composed block's mismatch into a spanned compile error.
pub fn check_widths<'g>(blocks: impl Iterator<Item = &'g Block>, span: Span) -> Result<(), syn::Error> {
    let mut errors: Vec<syn::Error> = Vec::new();
    for block in blocks {
        for op in &block.ops {
            if let Err(message) = check_op(block, op) {
                errors.push(syn::Error::new(span, format!("in block `{}`: {message}", block.suffix)));
            }
        }
    }
    let mut errors = errors.into_iter();
    match errors.next() {
        None => Ok(()),
        Some(mut first) => {
            errors.for_each(|e| first.combine(e));
            Err(first)
        }
    }
}

fn check_op(block: &Block, op: &Op) -> Result<(), String> {
    let field = |name: &str| block.field(name).map(|f| f.kind).ok_or_else(|| format!("no field `{name}`"));
    let same = |a: Value, b: Value| {
        if a.width == b.width {
            Ok(())
        } else {
            Err(format!("cannot add [S, {}] (`{}`) and [S, {}] (`{}`)", a.width, a.name, b.width, b.name))
        }
    };
    match *op {
        Op::Linear { field: f, input, output, .. } => match field(f)? {
            FieldKind::Linear { input: i, output: o, .. } if i == input.width && o == output.width => Ok(()),
            FieldKind::Linear { input: i, output: o, .. } => Err(format!(
                "linear `{f}` maps {i} to {o} features but is applied to [S, {}] (`{}`) writing [S, {}] (`{}`)",
                input.width, input.name, output.width, output.name
            )),
            _ => Err(format!("`{f}` is not a linear layer")),
        },
        Op::Attention { qkv, output, heads, kv_heads, head_dim, .. } => {
            if qkv.width != (heads + 2 * kv_heads) * head_dim || output.width != heads * head_dim {
                return Err(format!(
                    "attention with {heads} heads of {head_dim} needs [S, {}] projections and writes [S, {}], got [S, {}] and [S, {}]",
                    (heads + 2 * kv_heads) * head_dim,
                    heads * head_dim,
                    qkv.width,
                    output.width
                ));
            }
            Ok(())
        }
        Op::CrossAttention { q, kv, output, heads, head_dim, .. } => {
            if q.width != heads * head_dim || output.width != heads * head_dim {
                return Err(format!(
                    "cross-attention with {heads} heads of {head_dim} needs [S, {}] queries and writes [S, {}], got [S, {}] and [S, {}]",
                    heads * head_dim,
                    heads * head_dim,
                    q.width,
                    output.width
                ));
            }
            match field(kv)? {
                FieldKind::Linear { output, .. } if output == 2 * heads * head_dim => Ok(()),
                FieldKind::Linear { output, .. } => Err(format!(
                    "cross-attention `{kv}` projects the memory to {output} features, but {heads} heads of {head_dim} need keys and values of {}",
                    2 * heads * head_dim
                )),
                _ => Err(format!("`{kv}` is not a linear layer")),
            }
        }
        Op::AdditiveCross { field: f, input, scores, output, .. } => match field(f)? {
            FieldKind::Additive { kind, query, memory }
                if query == input.width && memory == output.width && kind.scratch_width() == scores.width =>
            {
                Ok(())
            }
            FieldKind::Additive { kind, query, memory } => Err(format!(
                "cross-attention `{f}` reads [S, {query}] queries over [M, {memory}] memory rows with [S, {}] \
                 scores, but is applied to [S, {}] (`{}`) writing [S, {}] (`{}`) with [S, {}] (`{}`)",
                kind.scratch_width(),
                input.width,
                input.name,
                output.width,
                output.name,
                scores.width,
                scores.name
            )),
            _ => Err(format!("`{f}` is not an additive attention")),
        },
        Op::Scale { .. } => Ok(()),
        Op::Concat { inputs, output } if inputs.iter().map(|v| v.width).sum::<usize>() == output.width => Ok(()),
        Op::Concat { inputs, output } => Err(format!(
            "concatenating widths {:?} gives {}, not [S, {}] (`{}`)",
            inputs.iter().map(|v| v.width).collect::<Vec<_>>(),
            inputs.iter().map(|v| v.width).sum::<usize>(),
            output.width,
            output.name
        )),
        Op::Slice { input, start, output } if start + output.width <= input.width => Ok(()),
        Op::Slice { input, start, output } => Err(format!(
            "columns {start}..{} are outside [S, {}] (`{}`)",
            start + output.width,
            input.width,
            input.name
        )),
        Op::Add { stream, sublayer } => same(stream, sublayer),
        Op::AddNorm { field: f, stream, sublayer } => {
            same(stream, sublayer)?;
            norm_fits(f, field(f)?, stream)
        }
        Op::Norm { field: f, input, output } => {
            same(input, output)?;
            norm_fits(f, field(f)?, input)
        }
                Op::Activation { .. } => Ok(()),
        Op::Rope { field: f, .. } => match field(f)? {
            FieldKind::Rope { .. } => Ok(()),
            _ => Err(format!("`{f}` is not a rotary table")),
        },
        Op::Glu { input, output, .. } if input.width == 2 * output.width => Ok(()),
        Op::Glu { input, output, .. } => Err(format!(
            "a gated unit halves its input: [S, {}] (`{}`) cannot give [S, {}] (`{}`)",
            input.width, input.name, output.width, output.name
        )),
        Op::LshAttention { rotations, qkv, output, heads, head_dim, buckets, hashes, .. } => {
            chunked_widths("LSH", qkv, 2, output, heads, head_dim)?;
            match field(rotations)? {
                FieldKind::Rotations { heads: h, head_dim: hd, hashes: n, buckets: b }
                    if (h, hd, n, b) == (heads, head_dim, hashes, buckets) =>
                {
                    Ok(())
                }
                _ => Err(format!("`{rotations}` is not this attention's rotations")),
            }
        }
        Op::LocalAttention { qkv, output, heads, head_dim, .. } => {
            chunked_widths("local", qkv, 3, output, heads, head_dim)
        }
        Op::Patches { image, patches, .. } => match field(patches)? {
            FieldKind::Linear { input, .. } if input == image.patch_width() => Ok(()),
            _ => Err(format!("patch projection `{patches}` does not take {} inputs", image.patch_width())),
        },
        Op::Gather { field: f, output, .. } => match field(f)? {
            FieldKind::Embedding { width, .. }
            | FieldKind::Sinusoidal { width, .. }
            | FieldKind::Axial { width, .. }
                if width == output.width =>
            {
                Ok(())
            }
            _ => Err(format!("embedding `{f}` does not produce [S, {}]", output.width)),
        },
    }
}

/// A chunked attention reads `parts` projections of `heads × head_dim` (LSH: `[QK | V]`, local:
/// `[Q | K | V]`) and writes the heads' context.
fn chunked_widths(
    kind: &str,
    qkv: Value,
    parts: usize,
    output: Value,
    heads: usize,
    head_dim: usize,
) -> Result<(), String> {
    let inner = heads * head_dim;
    if qkv.width == parts * inner && output.width == inner {
        Ok(())
    } else {
        Err(format!(
            "{kind} attention with {heads} heads of {head_dim} needs [S, {}] projections and writes [S, {inner}], got [S, {}] and [S, {}]",
            parts * inner,
            qkv.width,
            output.width
        ))
    }
}

fn norm_fits(name: &str, kind: FieldKind, value: Value) -> Result<(), String> {
    match kind {
        FieldKind::LayerNorm { width, .. } | FieldKind::RmsNorm { width, .. } if width == value.width => {
            Ok(())
        }
        FieldKind::LayerNorm { width, .. } | FieldKind::RmsNorm { width, .. } => {
            Err(format!("norm `{name}` of width {width} applied to [S, {}]", value.width))
        }
        _ => Err(format!("`{name}` is not a norm")),
    }
}

/// Where a single-stack scheme keeps a T5-style relative bias table `[buckets, heads]`, relative
/// to the embeddings block: like T5, in the first layer's self-attention, shared by every layer
/// (`model.layers.0.self_attn…`, `[transformer.]h.0.attn…`, `[gpt_neox.]layers.0.attention…`);
/// BERT's embeddings block sits under `embeddings.`, so its table takes the position table's place
/// there (`embeddings.relative_attention_bias.weight`).
fn relative_bias_name(scheme: WeightScheme) -> &'static str {
    match scheme {
        WeightScheme::Llama => "layers.0.self_attn.relative_attention_bias.weight",
        WeightScheme::Gpt2 => "h.0.attn.relative_attention_bias.weight",
        WeightScheme::NeoX => "layers.0.attention.relative_attention_bias.weight",
        // BERT; `check.rs` rejects relative positions on ViT.
        _ => "relative_attention_bias.weight",
    }
}

/// A checkpoint naming scheme: where each field's tensors live, relative to its block's prefix.
struct Names {
    roots: &'static [&'static str],
    layout: Layout,
    /// Whether the layers' linears have biases.
    bias: bool,
    embeddings: &'static str,
    word_embeddings: &'static str,
    position_embeddings: &'static str,
    token_type_embeddings: &'static str,
    embeddings_norm: Option<&'static str>,
    layer: &'static str,
    /// One name per fused part: three separate projections, or one already fused.
    qkv: &'static [&'static str],
    attention_output: &'static str,
    attention_norm: &'static str,
    /// One name, or gate then up for gated feed-forwards.
    intermediate: &'static [&'static str],
    output: &'static str,
    output_norm: &'static str,
    final_norm: &'static str,
    /// Relative to the embeddings block.
    tied_head: &'static str,
    /// Outside any root: Hugging Face keeps `lm_head` beside `transformer`.
    untied_head: &'static str,
    patch_embeddings: &'static str,
    class_token: &'static str,
    /// Outside any root.
    classifier: &'static str,
    ignored: &'static [&'static str],
}

impl Names {
    fn of(scheme: WeightScheme) -> Self {
        match scheme {
            WeightScheme::Reformer => {
                unreachable!("a Reformer lowers through `graph::reformer`, which names its own")
            }
            // Hugging Face `BertModel` (and the encoder inside sentence-transformers models).
            WeightScheme::Bert => Names {
                roots: &[""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "embeddings",
                word_embeddings: "word_embeddings",
                position_embeddings: "position_embeddings",
                token_type_embeddings: "token_type_embeddings",
                embeddings_norm: Some("LayerNorm"),
                layer: "encoder.layer.{i}",
                qkv: &["attention.self.query", "attention.self.key", "attention.self.value"],
                attention_output: "attention.output.dense",
                attention_norm: "attention.output.LayerNorm",
                intermediate: &["intermediate.dense"],
                output: "output.dense",
                output_norm: "output.LayerNorm",
                final_norm: "encoder.LayerNorm",
                tied_head: "word_embeddings",
                untied_head: "cls.predictions.decoder",
                patch_embeddings: "",
                class_token: "",
                classifier: "classifier",
                // A registered buffer, and BertPooler (CLS → dense → tanh), which sentence
                // embeddings do not use.
                ignored: &["embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"],
            },
            // Hugging Face `GPT2LMHeadModel` (`transformer.` root) or `GPT2Model` (no root).
            WeightScheme::Gpt2 => Names {
                roots: &["transformer", ""],
                layout: Layout::Conv1d,
                bias: true,
                embeddings: "",
                word_embeddings: "wte",
                position_embeddings: "wpe",
                token_type_embeddings: "wtte",
                embeddings_norm: None,
                layer: "h.{i}",
                qkv: &["attn.c_attn"],
                attention_output: "attn.c_proj",
                attention_norm: "ln_1",
                intermediate: &["mlp.c_fc"],
                output: "mlp.c_proj",
                output_norm: "ln_2",
                final_norm: "ln_f",
                tied_head: "wte",
                untied_head: "lm_head",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                // Causal-mask buffers that older transformers versions saved with the weights.
                ignored: &["h.{i}.attn.bias", "h.{i}.attn.masked_bias"],
            },
            // Hugging Face `ViTForImageClassification`.
            WeightScheme::Vit => Names {
                roots: &[""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "vit.embeddings",
                word_embeddings: "",
                position_embeddings: "position_embeddings",
                token_type_embeddings: "",
                embeddings_norm: None,
                layer: "vit.encoder.layer.{i}",
                qkv: &["attention.attention.query", "attention.attention.key", "attention.attention.value"],
                attention_output: "attention.output.dense",
                attention_norm: "layernorm_before",
                intermediate: &["intermediate.dense"],
                output: "output.dense",
                output_norm: "layernorm_after",
                final_norm: "vit.layernorm",
                tied_head: "",
                untied_head: "",
                patch_embeddings: "patch_embeddings.projection",
                class_token: "cls_token",
                classifier: "classifier",
                ignored: &[],
            },
            WeightScheme::T5 | WeightScheme::Bart | WeightScheme::Torch => {
                unreachable!("encoder-decoder formats lower through `graph::seq2seq`")
            }
            // Hugging Face `GPTNeoXForCausalLM` (`gpt_neox.` root; `embed_out` beside it).
            WeightScheme::NeoX => Names {
                roots: &["gpt_neox", ""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "",
                word_embeddings: "embed_in",
                position_embeddings: "",
                token_type_embeddings: "",
                embeddings_norm: None,
                layer: "layers.{i}",
                qkv: &["attention.query_key_value"],
                attention_output: "attention.dense",
                attention_norm: "input_layernorm",
                intermediate: &["mlp.dense_h_to_4h"],
                output: "mlp.dense_4h_to_h",
                output_norm: "post_attention_layernorm",
                final_norm: "final_layer_norm",
                tied_head: "embed_in",
                untied_head: "embed_out",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                // Buffers some transformers versions saved with the weights.
                ignored: &[
                    "layers.{i}.attention.bias",
                    "layers.{i}.attention.masked_bias",
                    "layers.{i}.attention.rotary_emb.inv_freq",
                ],
            },
            // Hugging Face `BloomForCausalLM` (`transformer.` root) or `BloomModel` (no root).
            WeightScheme::Bloom => Names {
                roots: &["transformer", ""],
                layout: Layout::Torch,
                bias: true,
                embeddings: "",
                word_embeddings: "word_embeddings",
                position_embeddings: "",
                token_type_embeddings: "",
                embeddings_norm: Some("word_embeddings_layernorm"),
                layer: "h.{i}",
                qkv: &["self_attention.query_key_value"],
                attention_output: "self_attention.dense",
                attention_norm: "input_layernorm",
                intermediate: &["mlp.dense_h_to_4h"],
                output: "mlp.dense_4h_to_h",
                output_norm: "post_attention_layernorm",
                final_norm: "ln_f",
                tied_head: "word_embeddings",
                untied_head: "lm_head",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                ignored: &[],
            },
            // Hugging Face `LlamaForCausalLM` and `MistralForCausalLM` (same names).
            WeightScheme::Llama => Names {
                roots: &[""],
                layout: Layout::Torch,
                bias: false,
                embeddings: "model",
                word_embeddings: "embed_tokens",
                position_embeddings: "",
                token_type_embeddings: "",
                embeddings_norm: None,
                layer: "model.layers.{i}",
                qkv: &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
                attention_output: "self_attn.o_proj",
                attention_norm: "input_layernorm",
                intermediate: &["mlp.gate_proj", "mlp.up_proj"],
                output: "mlp.down_proj",
                output_norm: "post_attention_layernorm",
                final_norm: "model.norm",
                tied_head: "embed_tokens",
                untied_head: "lm_head",
                patch_embeddings: "",
                class_token: "",
                classifier: "score",
                // Rotary frequencies that some transformers versions saved with the weights.
                ignored: &["model.layers.{i}.self_attn.rotary_emb.inv_freq"],
            },
        }
    }
}
