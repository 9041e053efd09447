//! The one error type of the runtime: every way user input can be wrong, each naming the value.

use crate::weights::WeightError;

/// What went wrong, with the offending value named.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The weight file could not be read, or its tensors do not fit the model.
    #[error(transparent)]
    Weights(#[from] WeightError),

    /// The checkpoint's config.json cannot be read, or describes another model than the
    /// declaration (every differing key listed).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// A text longer than the model's positions, with truncation refused (the default).
    #[error("text {text} is {tokens} tokens with its special tokens, more than the model's maximum of {max} positions: shorten it, or ask for `Truncation::Cut`")]
    TextTooLong { text: usize, tokens: usize, max: usize },

    /// The tokenizer could not read its file, or failed on a text.
    #[error("tokenizer: {reason}")]
    Tokenizer { reason: String },

    /// A batch with no sequence in it.
    #[error("the batch is empty: give at least one sequence")]
    EmptyBatch,

    /// A sequence with no (unmasked) token in it.
    #[error("sequence {sequence} is empty: every sequence needs at least one token")]
    EmptySequence { sequence: usize },

    /// A token id the vocabulary does not have.
    #[error("token id {token} at sequence {sequence}, position {position} is out of range: the vocabulary has {vocab} ids (0..{vocab})")]
    TokenOutOfRange { sequence: usize, position: usize, token: u32, vocab: usize },

    /// A token-type (segment) id the model does not have.
    #[error("token type id {type_id} at sequence {sequence}, position {position} is out of range: the model has {type_vocab} token types (0..{type_vocab})")]
    TokenTypeOutOfRange { sequence: usize, position: usize, type_id: u32, type_vocab: usize },

    /// Token type ids given to a model declared without a token-type vocabulary.
    #[error("token type ids were given, but this model has no token-type embedding (declare `type_vocab_size` to use them)")]
    TokenTypesNotSupported,

    /// A sequence longer than the model's position table.
    #[error("sequence {sequence} has {len} tokens, more than the model's maximum of {max} positions")]
    SequenceTooLong { sequence: usize, len: usize, max: usize },

    /// Two parts of the input that must agree in length do not.
    #[error(
        "{what} of sequence {sequence} has length {found}, expected {expected} (the length of its token ids)"
    )]
    LengthMismatch { what: &'static str, sequence: usize, expected: usize, found: usize },

    /// Two parts of the input that must agree in batch size do not.
    #[error("{what} has {found} sequences, expected {expected} (the number of token id sequences)")]
    BatchSizeMismatch { what: &'static str, expected: usize, found: usize },

    /// A mask value other than 0 or 1.
    #[error("attention mask value {value} at sequence {sequence}, position {position}: expected 0 or 1")]
    BadMaskValue { sequence: usize, position: usize, value: u32 },

    /// A prompt's attention mask with a 0 between two 1s.
    #[error("attention mask of sequence {sequence} has a 0 at position {position}, between real tokens: a prompt's tokens must be one contiguous run (padding on the left or on the right)")]
    MaskNotContiguous { sequence: usize, position: usize },

    /// Generation or a cached step would run past the model's position table.
    #[error("sequence {sequence} would reach {needed} positions, more than the model's maximum of {max} (prompt plus new tokens must fit)")]
    ContextFull { sequence: usize, needed: usize, max: usize },

    /// A batch that, padded to a multiple of a Reformer's chunk lengths as Hugging Face pads it,
    /// would be longer than the position table.
    #[error("the batch is {width} positions wide and this model pads it to {padded} (a multiple of its chunk lengths), more than its maximum of {max} positions: drop trailing padding")]
    PaddedTooLong { width: usize, padded: usize, max: usize },

    /// A cached step needs each sequence's real tokens first and padding after them.
    #[error("sequence {sequence} has padding before a real token; a cached step needs right padding (real tokens first)")]
    NotRightPadded { sequence: usize },

    /// A decoder batch whose sequences do not pair one-to-one with the encoder memory's sources.
    #[error("the decoder batch has {targets} sequences but the encoder memory holds {sources} sources: decode one sequence per source, in the same order")]
    MemoryMismatch { sources: usize, targets: usize },

    /// A cached decoding step whose sources are padded to another length than those of the
    /// cache's earlier steps (a location-sensitive cross-attention carries alignments over them).
    #[error(
        "the cache holds steps decoded against sources padded to {cached} positions, this memory's are padded \
         to {sources}: continue with the memory the cache started with, or reset the cache"
    )]
    CacheSourcesMismatch { cached: usize, sources: usize },

    /// A generation option outside its range.
    #[error("generation option `{option}` = {value} is invalid: {expected}")]
    BadGenerateOption { option: &'static str, value: String, expected: &'static str },

    /// A thread pool could not be built.
    #[error("cannot build a thread pool of {threads} threads: {reason}")]
    ThreadPool { threads: usize, reason: String },

    /// An image file that could not be read or decoded (missing, unreadable, not a PNG or JPEG).
    #[error("cannot read image {}: {reason}", path.display())]
    ImageRead { path: std::path::PathBuf, reason: String },

    /// A `preprocessor_config.json` that could not be read, parsed, or asks for something the
    /// image processor does not do. `config` is the file's path (or `<string>`).
    #[error("preprocessor config {config}: {reason}")]
    PreprocessorConfig { config: String, reason: String },

    /// A `preprocessor_config.json` asking for a resampling filter other than bilinear (`2`).
    #[error(
        "preprocessor config {config}: resample = {resample} ({name}) is not supported; only 2 (BILINEAR) is"
    )]
    UnsupportedResample { config: String, resample: i64, name: &'static str },

    /// The image processor's output shape (`[channels, height, width]`) differs from the model's
    /// input shape.
    #[error("the image processor produces {}×{}×{} (channels×height×width) but the model takes {}×{}×{}", processor[0], processor[1], processor[2], model[0], model[1], model[2])]
    ProcessorShapeMismatch { model: [usize; 3], processor: [usize; 3] },

    /// An image whose size differs from the processor's while resizing is off (`do_resize: false`);
    /// it is never cropped or padded silently.
    #[error("image is {}×{} (height×width) but the processor expects {}×{} and resizing is off (do_resize = false)", found.0, found.1, expected.0, expected.1)]
    ImageSizeMismatch { expected: (usize, usize), found: (usize, usize) },

    /// An image with no pixels (zero width or height).
    #[error("image is {width}×{height} (width×height): it has no pixels")]
    EmptyImage { width: usize, height: usize },

    /// A training label outside the vocabulary (and not the ignore index `-100`).
    #[error("label {label} at row {row} is out of range: the output has {classes} classes (0..{classes}); use -100 to ignore a position")]
    LabelOutOfRange { row: usize, label: i64, classes: usize },

    /// Labels whose count differs from the number of rows they label.
    #[error("{labels} labels were given for {rows} rows of logits: give one label (or -100) per row")]
    LabelCountMismatch { labels: usize, rows: usize },

    /// A training step's loss is NaN or infinite; the weights were not updated.
    #[error("training step {step}: the loss is {loss}; the weights were left as they were (lower the learning rate, or look for a NaN in the inputs)")]
    NonFiniteLoss { step: u64, loss: f32 },

    /// An audio file that could not be read: missing, unreadable, not a WAV file, or cut short.
    #[error("cannot read audio file {}: {reason}", path.display())]
    AudioRead { path: std::path::PathBuf, reason: String },

    /// A WAV file whose sample format is not one the reader decodes (`found` names it).
    #[error("audio file {}: {found} is not supported; expected a WAV file of 8-, 16-, 24- or 32-bit integer PCM or 32-bit IEEE float samples, at a sample rate above 0 Hz", path.display())]
    UnsupportedAudio { path: std::path::PathBuf, found: String },

    /// Audio that cannot be resampled between these rates.
    #[error("cannot resample audio from {from} Hz to {to} Hz: {reason}")]
    Resample { from: u32, to: u32, reason: String },

    /// An audio sample that is NaN or infinite, which would turn every feature into NaN.
    #[error("audio sample {index} is {value}: samples must be finite")]
    AudioNotFinite { index: usize, value: f32 },

    /// A frame or spectrum buffer of the wrong length for a transform.
    #[error("{what} has length {found}, expected {expected}")]
    FrameLength { what: &'static str, expected: usize, found: usize },

    /// A training option outside its range: a dropout probability, a masking proportion, a
    /// loss's scale.
    #[error("{option} is {value}, expected {expected}")]
    BadTrainOption { option: &'static str, value: f64, expected: &'static str },

    /// A step over accumulated gradients asked for before any micro-batch was accumulated.
    #[error("no micro-batch was accumulated since the last step: call `accumulate` at least once before `step_accumulated`")]
    NothingAccumulated,

    /// A ranking loss given fewer candidate embeddings than anchors, or no anchors.
    #[error("{candidates} candidate embeddings for {anchors} anchors: give at least one anchor, then each anchor's positive (in the anchors' order), then any hard negatives")]
    RankingCandidates { anchors: usize, candidates: usize },

    /// The optimizer refused a step, a configuration or a saved state.
    #[error(transparent)]
    Optim(#[from] crate::train::optim::OptimError),
}
