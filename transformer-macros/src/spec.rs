//! The validated model: every key present, every size in range, every name known. Codegen and
//! lowering read only this, never the raw syntax.

use proc_macro2::Span;
use syn::{Attribute, Ident, Visibility};

/// A validated `model!` declaration with concrete dims.
pub struct Spec {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    /// Token vocabulary (text models; 1 for image models, which have none).
    pub vocab_size: usize,
    /// Length of the position table: longest text sequence, or patches (+1 class token).
    pub max_positions: usize,
    pub type_vocab_size: Option<usize>,
    /// Images instead of tokens.
    pub image: Option<ImageInput>,
    pub d_model: usize,
    pub heads: usize,
    /// Width of one attention head: `d_model / heads` unless given (T5's `d_kv`).
    pub head_dim: usize,
    /// Key/value heads: `heads` for multi-head attention, fewer for grouped-query (1: multi-query).
    pub kv_heads: usize,
    /// Local attention, per layer (`None`: global). Causal: each query sees at most `w` keys,
    /// ending at itself (Mistral); bidirectional: the keys within `w / 2` on either side
    /// (Longformer). Empty or all `None`: global attention everywhere.
    pub windows: Vec<Option<usize>>,
    /// Block-sparse layouts (Sparse Transformer), per layer (`None`: dense, as GPT-3's
    /// alternating layers). Empty or all `None`: dense attention everywhere.
    pub sparse: Vec<Option<Sparse>>,
    pub layers: usize,
    pub d_ff: usize,
    pub activation: Activation,
    pub norm: Norm,
    pub positions: Positions,
    pub attention: Attention,
    pub weights: WeightScheme,
    /// Decoders end in a language-model head; text encoders have none.
    pub lm_head: Option<LmHead>,
    /// Image classifiers pool the sequence and project to labels.
    pub classifier: Option<Classifier>,
    /// Where `d_model` was written: generated row types of hidden states point there.
    pub d_model_span: Span,
    /// Where `vocab_size` was written: generated row types of logits point there.
    pub vocab_span: Span,
    /// Token embeddings are multiplied by `sqrt(d_model)` (the original Transformer, BART's
    /// `scale_embedding`).
    pub scale_embeddings: bool,
    /// Attention and feed-forward read the same normalised input and add to the residual together
    /// (GPT-J / GPT-NeoX), instead of one after the other.
    pub parallel: bool,
    /// Encoder-decoder models: the fields above describe the encoder; this, the decoder.
    pub seq2seq: Option<Seq2Seq>,
    /// A composed model's declared dims (each becomes an associated const); `None` for presets.
    pub dims: Option<Vec<(Ident, usize)>>,
    /// Reformers: reversible two-stream layers, each attending by LSH or locally.
    pub reversible: Option<Reversible>,
}

/// A Reformer's layers (`weights: reformer`): two residual streams, `Y1 = X1 + Attention(X2)` then
/// `Y2 = X2 + FeedForward(Y1)`, each layer's attention LSH or local.
#[derive(Clone, Debug)]
pub struct Reversible {
    /// Each layer's attention, in order.
    pub layers: Vec<ReformerAttention>,
    /// The LSH layers' geometry (present exactly when a layer is LSH).
    pub lsh: Option<ReformerLsh>,
    /// The local layers' geometry (present exactly when a layer is local).
    pub local: Option<ReformerLocal>,
}

/// The decoder of an encoder-decoder model and what joins it to the encoder.
#[derive(Clone, Debug)]
pub struct Seq2Seq {
    pub decoder: Stack,
    /// The token every decoded sequence starts from (`decoder_start_token_id`).
    pub decoder_start: u32,
    /// How the decoder's cross-attention scores the encoder's rows.
    pub cross: CrossKind,
    /// The decoder's self-attention window per layer (`None`: global; empty: global everywhere).
    pub decoder_windows: Vec<Option<usize>>,
}

/// A decoder's cross-attention kind (`cross_attention_kind` in its section).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrossKind {
    /// Scaled dot-product multi-head attention (the default).
    #[default]
    MultiHead,
    /// Bahdanau's `energyᵀ tanh(W_q s + W_k h + b)`, an MLP of width `attention_dim`.
    Additive { attention_dim: usize },
    /// Luong's "location": `softmax(W_a s + b_a)` over source positions up to `max_positions`.
    Location,
    /// Bahdanau's scores plus convolved previous and cumulative alignments (Tacotron 2).
    LocationSensitive { attention_dim: usize, filters: usize, kernel: usize },
}

/// One stack's dims.
#[derive(Clone, Debug)]
pub struct Stack {
    pub d_model: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub d_ff: usize,
}

impl Stack {
    /// Width of the attention's concatenated heads (`heads × head_dim`), which T5 lets differ
    /// from `d_model`.
    pub fn inner(&self) -> usize {
        self.heads * self.head_dim
    }
}

impl Spec {
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Decoder-only: causal attention, one stack.
    pub fn is_decoder(&self) -> bool {
        self.attention == Attention::Causal && self.seq2seq.is_none()
    }

    /// The (encoder) stack's dims.
    pub fn stack(&self) -> Stack {
        Stack {
            d_model: self.d_model,
            heads: self.heads,
            head_dim: self.head_dim,
            layers: self.layers,
            d_ff: self.d_ff,
        }
    }
}

/// An image input cut into square patches, each patch a token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ImageInput {
    pub image_size: usize,
    pub patch_size: usize,
    pub channels: usize,
}

impl ImageInput {
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }

    pub fn patches(&self) -> usize {
        self.patches_per_side() * self.patches_per_side()
    }

    /// Floats in one flattened patch: `channels × patch_size²`.
    pub fn patch_width(&self) -> usize {
        self.channels * self.patch_size * self.patch_size
    }
}

/// How a classifier turns the sequence into one vector.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pooling {
    /// The class token's final state (a class token is prepended to the patches).
    Cls,
    /// The mean of the patch states (no class token).
    Mean,
}

/// A classification head: pooling then `[d_model → labels]`.
#[derive(Clone, Copy, Debug)]
pub struct Classifier {
    pub labels: usize,
    pub pooling: Pooling,
}

/// Feed-forward activation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Activation {
    GeluErf,
    GeluTanh,
    Relu,
    /// Gated: `down(silu(gate(x)) · up(x))` (LLaMA's SwiGLU feed-forward).
    SwiGlu,
    /// Gated: `down(gelu_tanh(gate(x)) · up(x))` (T5 v1.1's "gated-gelu").
    GeGluTanh,
    /// Gated: `down(gelu_erf(gate(x)) · up(x))`.
    GeGluErf,
}

impl Activation {
    /// Gated activations take two projections of the input (gate and up).
    pub fn is_gated(self) -> bool {
        matches!(self, Activation::SwiGlu | Activation::GeGluTanh | Activation::GeGluErf)
    }
}

/// Normalisation layer and where it sits relative to the residual.
#[derive(Clone, Copy, Debug)]
pub struct Norm {
    pub kind: NormKind,
    pub eps: f64,
    pub placement: Placement,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NormKind {
    LayerNorm,
    /// Root-mean-square norm: scale only, no mean subtraction, no bias (LLaMA, T5).
    RmsNorm,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Placement {
    /// `x = norm(x + f(x))` (BERT, the original Transformer).
    Post,
    /// `x = x + f(norm(x))`, with a final norm after the last layer (GPT-2, ViT).
    Pre,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Positions {
    Learned,
    Sinusoidal,
    /// Rotary embeddings applied to queries and keys in every layer, with base `theta`.
    Rope {
        theta: f64,
        /// Leading dims of each head that rotate (the head width unless partial rotary).
        rotary_dims: usize,
    },
    /// ALiBi (BLOOM): a fixed per-head linear bias `slope_h · (key − query)` on the scores
    /// (`−slope_h · |key − query|` in a bidirectional stack, as in MosaicBERT).
    Alibi,
    /// T5's learned per-head bias over bucketed relative distances, in every self-attention.
    Relative {
        buckets: usize,
        max_distance: usize,
    },
    /// The Reformer's axial table: position `p` is `[a[p / shape[1]] | b[p % shape[1]]]`, with
    /// `a` of width `dims[0]` and `b` of width `dims[1]`; `shape[0] · shape[1]` positions.
    Axial {
        shape: [usize; 2],
        dims: [usize; 2],
    },
}

/// Which keys each query attends to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Attention {
    /// Every token sees every (unpadded) token: encoders.
    Bidirectional,
    /// Each token sees itself and the tokens before it: decoders, with a KV cache for generation.
    Causal,
}

/// A block-sparse attention layout over blocks of `block` positions (a multiple of the attention
/// kernel's 64-key tile).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Sparse {
    pub pattern: SparsePattern,
    pub block: usize,
    pub stride: usize,
}

/// The Sparse Transformer's two layouts (Child et al. 2019, §4.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SparsePattern {
    /// Key block `J` is visible to query block `I` iff `|I − J| < stride` or a multiple of it.
    Strided,
    /// Visible iff in the same group of `stride` blocks, or among the last `summary` blocks of a
    /// group.
    Fixed { summary: usize },
}

/// The projection from hidden states to vocabulary logits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LmHead {
    /// Shares the token-embedding matrix (GPT-2).
    Tied,
    /// Its own `[vocab_size, d_model]` matrix.
    Untied,
}

/// How tensors are named in the checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WeightScheme {
    /// Hugging Face `BertModel`: `embeddings.word_embeddings.weight`, `encoder.layer.{i}.…`.
    Bert,
    /// Hugging Face `ViTForImageClassification`: `vit.embeddings.…`, `vit.encoder.layer.{i}.…`,
    /// `classifier`.
    Vit,
    /// Hugging Face `LlamaForCausalLM` / `MistralForCausalLM`: `model.embed_tokens.weight`,
    /// `model.layers.{i}.self_attn.{q,k,v,o}_proj`, `mlp.{gate,up,down}_proj`, no biases.
    Llama,
    /// Hugging Face `GPT2LMHeadModel`: `[transformer.]wte.weight`, `[transformer.]h.{i}.…`, with
    /// Conv1D weights stored `[in, out]`.
    Gpt2,
    /// Hugging Face `BloomForCausalLM`: `[transformer.]word_embeddings.weight`,
    /// `[transformer.]h.{i}.self_attention.query_key_value` (Q, K, V interleaved per head), ALiBi.
    Bloom,
    /// Hugging Face `GPTNeoXForCausalLM`: `[gpt_neox.]embed_in.weight`, `[gpt_neox.]layers.{i}.…`
    /// (Q, K, V interleaved per head), `embed_out`.
    NeoX,
    /// Hugging Face `T5ForConditionalGeneration`: `shared.weight`, `encoder.block.{i}.layer.{n}.…`.
    T5,
    /// Hugging Face `BartForConditionalGeneration`: `model.shared.weight`,
    /// `model.{encoder,decoder}.layers.{i}.…`, `final_logits_bias`.
    Bart,
    /// `torch.nn.Transformer` under `transformer.`, with `embedding` (shared, scaled by
    /// `sqrt(d_model)`) and `generator` (the output linear) beside it.
    Torch,
    /// Hugging Face `ReformerModelWithLMHead` / `ReformerForMaskedLM`: `reformer.embeddings.…`,
    /// `reformer.encoder.layers.{i}.{attention,feed_forward}.…`, `lm_head.decoder.weight`.
    Reformer,
}

/// What the Reformer's validators (`check/reformer.rs`, `compose/reformer.rs`) find: reversible
/// two-stream layers, each attending by LSH or locally, axial positions, a final LayerNorm over
/// both streams and an untied LM head. [`Reformer::into_spec`] makes it a [`Spec`] like any other.
pub struct Reformer {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub vocab_size: usize,
    /// The axial table's positions (`shape[0] · shape[1]`).
    pub max_positions: usize,
    pub d_model: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    /// Ungated: GELU (erf or tanh) or ReLU.
    pub activation: Activation,
    pub eps: f64,
    /// `ReformerModelWithLMHead` (`is_decoder`): keys after the query are masked.
    pub causal: bool,
    /// Each layer's attention, in order.
    pub layers: Vec<ReformerAttention>,
    /// The LSH layers' geometry (present exactly when a layer is LSH).
    pub lsh: Option<ReformerLsh>,
    /// The local layers' geometry (present exactly when a layer is local).
    pub local: Option<ReformerLocal>,
    pub axial_shape: [usize; 2],
    pub axial_dims: [usize; 2],
    /// Where `vocab_size` was written: generated logits rows point there.
    pub vocab_span: Span,
}

impl Reformer {
    /// The model as every declaration ends: a [`Spec`], pre-norm LayerNorm with axial positions
    /// and an untied head, its layers described by [`Spec::reversible`].
    pub fn into_spec(self) -> Spec {
        let attention = if self.causal { Attention::Causal } else { Attention::Bidirectional };
        Spec {
            attrs: self.attrs,
            vis: self.vis,
            d_model_span: self.name.span(),
            name: self.name,
            vocab_size: self.vocab_size,
            max_positions: self.max_positions,
            type_vocab_size: None,
            image: None,
            d_model: self.d_model,
            heads: self.heads,
            head_dim: self.head_dim,
            kv_heads: self.heads,
            windows: vec![],
            sparse: vec![],
            layers: self.layers.len(),
            d_ff: self.d_ff,
            activation: self.activation,
            norm: Norm { kind: NormKind::LayerNorm, eps: self.eps, placement: Placement::Pre },
            positions: Positions::Axial { shape: self.axial_shape, dims: self.axial_dims },
            attention,
            weights: WeightScheme::Reformer,
            lm_head: Some(LmHead::Untied),
            classifier: None,
            vocab_span: self.vocab_span,
            scale_embeddings: false,
            parallel: false,
            seq2seq: None,
            dims: None,
            reversible: Some(Reversible { layers: self.layers, lsh: self.lsh, local: self.local }),
        }
    }
}

/// The attention of one Reformer layer (HF `attn_layers`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReformerAttention {
    Lsh,
    Local,
}

/// LSH attention's chunking and hashing (HF `lsh_attn_chunk_length`, `lsh_num_chunks_before` /
/// `_after`, `num_buckets`, `num_hashes`).
#[derive(Clone, Copy, Debug)]
pub struct ReformerLsh {
    pub chunk: usize,
    pub chunks_before: usize,
    pub chunks_after: usize,
    pub buckets: usize,
    pub hashes: usize,
}

/// Local attention's chunking (HF `local_attn_chunk_length`, `local_num_chunks_before` / `_after`).
#[derive(Clone, Copy, Debug)]
pub struct ReformerLocal {
    pub chunk: usize,
    pub chunks_before: usize,
    pub chunks_after: usize,
}

/// How a composed encoder pools its per-token states into one row per sequence.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Pool {
    /// `mean_pool`: the mean over the sequence's real tokens (padding excluded).
    Mean,
    /// `max_pool`: the element-wise maximum over the real tokens.
    Max,
    /// `cls`: the first token's state.
    Cls,
}

/// One named output of a composed encoder written `-> (states, embedding)`.
#[derive(Clone, Debug)]
pub struct Output {
    pub name: proc_macro2::Ident,
    pub kind: OutputKind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OutputKind {
    /// The final per-token states (one row per token).
    States,
    /// A pooled vector per sequence, L2-normalised when `normalize` is set.
    Pooled { pool: Pool, normalize: bool },
}
