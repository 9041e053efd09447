//! ViT against Hugging Face transformers (`ViTForImageClassification`, random weights from a fixed
//! seed, written by `scripts/reference/vit.py`): logits and final hidden states within 1e-4 for
//! pixel inputs, and the whole pipeline — PNG file → `ViTImageProcessor` → model — within 1e-4 of
//! the reference's logits for the same files. Configs: `small` (32², patch 8, 64 wide), `odd`
//! (30², patch 6, 48 wide with 12 heads of 4, eps 1e-6, ImageNet mean/std), and `mean` (mean
//! pooling without a class token; its reference is composed from transformers' own ViT modules).

use serde::Deserialize;
use transformer::vision::ImageProcessor;
use transformer::Workspace;

transformer::model! {
    /// `tests/fixtures/vit/small`.
    pub struct Small {
        image_size: 32,
        patch_size: 8,
        channels: 3,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 128,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: pre,
        positions: learned,
        attention: bidirectional,
        pooling: cls,
        labels: 10,
        weights: vit,
    }
}

transformer::model! {
    /// `tests/fixtures/vit/odd`.
    pub struct Odd {
        image_size: 30,
        patch_size: 6,
        channels: 3,
        d_model: 48,
        heads: 12,
        layers: 3,
        d_ff: 136,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-6,
        norm_placement: pre,
        positions: learned,
        attention: bidirectional,
        pooling: cls,
        labels: 7,
        weights: vit,
    }
}

#[derive(Deserialize)]
struct Reference {
    /// `[image][channel][row][column]`
    pixel_values: Vec<Vec<Vec<Vec<f32>>>>,
    logits: Vec<Vec<f32>>,
    last_hidden_state_image0: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Preprocess {
    images: Vec<ProcessedImage>,
}

#[derive(Deserialize)]
struct ProcessedImage {
    file: String,
    logits: Vec<f32>,
}

fn fixture(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit").join(path)
}

fn json<T: serde::de::DeserializeOwned>(path: &str) -> T {
    serde_json::from_str(&std::fs::read_to_string(fixture(path)).expect("fixture present")).expect("parses")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A nested-list image as the model's typed array.
fn image<const S: usize>(pixels: &[Vec<Vec<f32>>]) -> Box<[[[f32; S]; S]; 3]> {
    let mut out = Box::new([[[0.0f32; S]; S]; 3]);
    for (c, channel) in pixels.iter().enumerate() {
        for (y, row) in channel.iter().enumerate() {
            out[c][y].copy_from_slice(row);
        }
    }
    out
}

macro_rules! parity_tests {
    ($module:ident, $model:ident, $name:literal, $side:literal) => {
        mod $module {
            use super::*;

            fn model() -> $model {
                $model::from_safetensors(fixture(concat!($name, "/model.safetensors")))
                    .expect("fixture loads")
            }

            #[test]
            fn logits_and_hidden_states_match_transformers() {
                let (model, r) = (model(), json::<Reference>(concat!($name, "/reference.json")));
                let images: Vec<Box<[[[f32; $side]; $side]; 3]>> =
                    r.pixel_values.iter().map(|p| image::<$side>(p)).collect();
                let refs: Vec<&[[[f32; $side]; $side]; 3]> = images.iter().map(|i| &**i).collect();
                let logits = model.classify(&refs).unwrap();
                for (i, (ours, theirs)) in logits.iter().zip(&r.logits).enumerate() {
                    let diff = max_abs_diff(ours, theirs);
                    assert!(diff <= 1e-4, "image {i}: logits max |diff| {diff:e}");
                }
                let mut ws = Workspace::new();
                let hidden = model.forward_into(&refs[..1], &mut ws).unwrap();
                for (row, (ours, theirs)) in hidden.iter().zip(&r.last_hidden_state_image0).enumerate() {
                    let diff = max_abs_diff(ours, theirs);
                    assert!(diff <= 1e-4, "hidden state {row}: max |diff| {diff:e}");
                }
            }

            /// `from_pretrained` reads the fixture's directory (config.json checked, then the
            /// weights, in either generation of names) and runs as `from_safetensors` does.
            #[test]
            fn from_pretrained_reads_the_directory() {
                let pretrained = $model::from_pretrained(fixture($name)).expect("the fixture's config fits");
                let r = json::<Reference>(concat!($name, "/reference.json"));
                let image = image::<$side>(&r.pixel_values[0]);
                assert!(pretrained.classify(&[&*image]).unwrap() == model().classify(&[&*image]).unwrap());
            }

            #[test]
            fn png_files_through_the_processor_match_transformers() {
                let model = model();
                let processor =
                    ImageProcessor::from_json_file(fixture(concat!($name, "/preprocessor_config.json")))
                        .unwrap();
                for expected in json::<Preprocess>(concat!($name, "/preprocess.json")).images {
                    let img = ImageProcessor::load_image(fixture(&expected.file)).unwrap();
                    let pixels = processor.process::<3, $side, $side>(&img).unwrap();
                    let logits = model.classify(&[&*pixels]).unwrap();
                    let diff = max_abs_diff(&logits[0], &expected.logits);
                    assert!(diff <= 1e-4, "{}: logits max |diff| {diff:e}", expected.file);
                }
            }
        }
    };
}

parity_tests!(small, Small, "small", 32);
parity_tests!(odd, Odd, "odd", 30);
// As transformers 5.25.0 saves them with its own module names (`vit.layers.{i}.attention.q_proj`,
// `mlp.fc1`, …): the same declarations read them.
parity_tests!(small_v5, Small, "small_v5", 32);
parity_tests!(odd_v5, Odd, "odd_v5", 30);

/// The same ViTs as composed blocks: `patch_embedding` is Hugging Face's `ViTEmbeddings`
/// (projection, class token, positions), the head a linear of the pooled final states.
macro_rules! composed_vit {
    ($name:ident, { $($dims:tt)* }, eps = $eps:literal, class_token = $cls:literal, $pool:ident,
     $embedding_weights:tt) => {
        transformer::model! {
            pub struct $name { $($dims)* }

            fn forward(image) -> logits {
                #[weights $embedding_weights]
                let x = patch_embedding(image, d_model, size = image_size, patch = patch_size,
                                        channels = channels, class_token = $cls);
                #[weights = "vit.encoder.layer.{layer}"]
                for layer in 0..layers {
                    #[weights = "layernorm_before"]
                    let h = layer_norm(x, eps = $eps);
                    #[weights = "attention.attention.query"]
                    let q = linear(h, d_model);
                    #[weights = "attention.attention.key"]
                    let k = linear(h, d_model);
                    #[weights = "attention.attention.value"]
                    let v = linear(h, d_model);
                    #[weights = "attention.output.dense"]
                    x = x + linear(attention(q, k, v, heads = heads), d_model);
                    #[weights = "layernorm_after"]
                    let h = layer_norm(x, eps = $eps);
                    #[weights("intermediate.dense", "output.dense")]
                    x = x + linear(gelu(linear(h, d_ff)), d_model);
                }
                #[weights = "vit.layernorm"]
                let x = layer_norm(x, eps = $eps);
                #[weights = "classifier"]
                linear($pool(x), labels)
            }
        }
    };
}

composed_vit!(
    ComposedSmall,
    { image_size: 32, patch_size: 8, channels: 3, d_model: 64, heads: 4, d_ff: 128, layers: 2, labels: 10 },
    eps = 1e-12, class_token = true, cls,
    ("vit.embeddings.patch_embeddings.projection", "vit.embeddings.cls_token", "vit.embeddings.position_embeddings")
);
composed_vit!(
    ComposedOdd,
    { image_size: 30, patch_size: 6, channels: 3, d_model: 48, heads: 12, d_ff: 136, layers: 3, labels: 7 },
    eps = 1e-6, class_token = true, cls,
    ("vit.embeddings.patch_embeddings.projection", "vit.embeddings.cls_token", "vit.embeddings.position_embeddings")
);
composed_vit!(
    ComposedMean,
    { image_size: 32, patch_size: 8, channels: 3, d_model: 64, heads: 4, d_ff: 128, layers: 2, labels: 5 },
    eps = 1e-12, class_token = false, mean_pool,
    ("vit.embeddings.patch_embeddings.projection", "vit.embeddings.position_embeddings")
);

parity_tests!(composed_small, ComposedSmall, "small", 32);
parity_tests!(composed_odd, ComposedOdd, "odd", 30);

fn bits(rows: &[impl AsRef<[f32]>]) -> Vec<u32> {
    rows.iter().flat_map(|r| r.as_ref().iter().map(|v| v.to_bits())).collect()
}

/// Composed ViTs lower to the preset's graph: logits and hidden states bit for bit, on the
/// fixtures' images.
macro_rules! bit_identical {
    ($test:ident, $preset:ident, $composed:ident, $name:literal, $side:literal) => {
        #[test]
        fn $test() {
            let path = fixture(concat!($name, "/model.safetensors"));
            let (preset, composed) =
                ($preset::from_safetensors(&path).unwrap(), $composed::from_safetensors(&path).unwrap());
            let r = json::<Reference>(concat!($name, "/reference.json"));
            let images: Vec<Box<[[[f32; $side]; $side]; 3]>> =
                r.pixel_values.iter().map(|p| image::<$side>(p)).collect();
            let refs: Vec<&[[[f32; $side]; $side]; 3]> = images.iter().map(|i| &**i).collect();
            assert_eq!(
                bits(&composed.classify(&refs).unwrap()),
                bits(&preset.classify(&refs).unwrap()),
                "logits"
            );
            let (mut w1, mut w2) = (Workspace::new(), Workspace::new());
            let (ours, theirs) = (
                composed.forward_into(&refs, &mut w1).unwrap(),
                preset.forward_into(&refs, &mut w2).unwrap(),
            );
            assert_eq!(bits(ours), bits(theirs), "hidden states");
        }
    };
}

bit_identical!(composed_small_is_bit_identical_to_the_preset, Small, ComposedSmall, "small", 32);
bit_identical!(composed_odd_is_bit_identical_to_the_preset, Odd, ComposedOdd, "odd", 30);

#[test]
fn a_processor_for_another_resolution_is_an_error() {
    let processor = ImageProcessor::from_json_file(fixture("odd/preprocessor_config.json")).unwrap();
    let img = ImageProcessor::load_image(fixture("image.png")).unwrap();
    let err = processor.process::<3, 32, 32>(&img).unwrap_err();
    assert!(err.to_string().contains("30"), "{err}");
}

#[test]
fn an_empty_batch_of_images_is_an_error() {
    let model = Small::from_safetensors(fixture("small/model.safetensors")).unwrap();
    assert!(matches!(model.classify(&[]), Err(transformer::Error::EmptyBatch)));
}

transformer::model! {
    /// `tests/fixtures/vit/mean`: no class token, the classifier reads the mean of the patch states.
    pub struct Mean {
        image_size: 32,
        patch_size: 8,
        channels: 3,
        d_model: 64,
        heads: 4,
        layers: 2,
        d_ff: 128,
        activation: gelu_erf,
        norm: layer_norm,
        norm_eps: 1e-12,
        norm_placement: pre,
        positions: learned,
        attention: bidirectional,
        pooling: mean,
        labels: 5,
        weights: vit,
    }
}

/// transformers has no mean-pooled ViT, so `scripts/reference/vit.py` composes its
/// `ViTPatchEmbeddings`, `ViTEncoder`, final `LayerNorm` and classifier without the class token.
#[test]
fn mean_pooling_matches_a_reference_built_from_transformers_modules() {
    let model = Mean::from_safetensors(fixture("mean/model.safetensors")).expect("fixture loads");
    let r = json::<Reference>("mean/reference.json");
    let images: Vec<Box<[[[f32; 32]; 32]; 3]>> = r.pixel_values.iter().map(|p| image::<32>(p)).collect();
    let refs: Vec<&[[[f32; 32]; 32]; 3]> = images.iter().map(|i| &**i).collect();
    let logits = model.classify(&refs).unwrap();
    assert_eq!(logits.len(), r.logits.len());
    for (i, (ours, theirs)) in logits.iter().zip(&r.logits).enumerate() {
        let diff = max_abs_diff(ours, theirs);
        assert!(diff <= 1e-4, "image {i}: logits max |diff| {diff:e}");
    }
    let mut ws = Workspace::new();
    let hidden = model.forward_into(&refs[..1], &mut ws).unwrap();
    assert_eq!(hidden.len(), Mean::PATCHES, "one row per patch, no class token");
    assert_eq!(hidden.len(), r.last_hidden_state_image0.len());
    for (row, (ours, theirs)) in hidden.iter().zip(&r.last_hidden_state_image0).enumerate() {
        let diff = max_abs_diff(ours, theirs);
        assert!(diff <= 1e-4, "hidden state {row}: max |diff| {diff:e}");
    }
}

bit_identical!(composed_mean_is_bit_identical_to_the_preset, Mean, ComposedMean, "mean", 32);
