//! Classifies an image file with a ViT checkpoint directory (`config.json`, `model.safetensors`,
//! `preprocessor_config.json`) and prints the top-5 labels.
//!
//! ```text
//! cargo run --release --example classify -- tests/fixtures/vit/small tests/fixtures/vit/image.png
//! ```
//!
//! The image is decoded (PNG or JPEG), resized and normalised exactly as Hugging Face's
//! `ViTImageProcessor` does. As with every model here, the binary is specialised: the example
//! declares ViT-Base/16 at 224² and the two test fixtures, and picks the one `config.json` matches.

use std::collections::HashMap;
use std::error::Error;
use std::path::Path;

use serde::Deserialize;
use transformer::vision::ImageProcessor;
use transformer::Threads;

/// Declares a ViT image classifier with the given dims.
macro_rules! vit {
    ($name:ident, image: $s:literal, patch: $p:literal, d_model: $d:literal, heads: $h:literal,
     layers: $l:literal, d_ff: $f:literal, eps: $eps:literal, labels: $n:literal) => {
        transformer::model! {
            pub struct $name {
                image_size: $s,
                patch_size: $p,
                channels: 3,
                d_model: $d,
                heads: $h,
                layers: $l,
                d_ff: $f,
                activation: gelu_erf,
                norm: layer_norm,
                norm_eps: $eps,
                norm_placement: pre,
                positions: learned,
                attention: bidirectional,
                pooling: cls,
                labels: $n,
                weights: vit,
            }
        }
    };
}

vit!(VitBase16, image: 224, patch: 16, d_model: 768, heads: 12, layers: 12, d_ff: 3072, eps: 1e-12, labels: 1000);
vit!(FixtureSmall, image: 32, patch: 8, d_model: 64, heads: 4, layers: 2, d_ff: 128, eps: 1e-12, labels: 10);
vit!(FixtureOdd, image: 30, patch: 6, d_model: 48, heads: 12, layers: 3, d_ff: 136, eps: 1e-6, labels: 7);

/// The fields of a Hugging Face ViT `config.json` that fix the architecture.
#[derive(Deserialize)]
struct Config {
    model_type: String,
    image_size: usize,
    patch_size: usize,
    num_channels: usize,
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    layer_norm_eps: f64,
    hidden_act: String,
    #[serde(default)]
    id2label: HashMap<String, String>,
}

type Failure = Box<dyn Error + Send + Sync>;

fn main() -> Result<(), Failure> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, image_path] = args.as_slice() else {
        return Err("usage: classify <checkpoint dir> <image file (PNG or JPEG)>".into());
    };
    let dir = Path::new(dir);
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    if config.model_type != "vit" || config.hidden_act != "gelu" || config.num_channels != 3 {
        return Err(format!(
            "{}: expected a ViT with 3 channels and exact GELU, found model_type {:?}, {} channels, hidden_act {:?}",
            dir.display(),
            config.model_type,
            config.num_channels,
            config.hidden_act
        )
        .into());
    }
    let processor = ImageProcessor::from_json_file(dir.join("preprocessor_config.json"))?;
    let image = ImageProcessor::load_image(image_path)?;
    let weights = dir.join("model.safetensors");
    let threads = Threads::all_cores()?;
    let labels = config.id2label.len();
    let shape = (config.image_size, config.patch_size, config.hidden_size, config.num_attention_heads);
    let depth = (config.num_hidden_layers, config.intermediate_size, labels);
    let eps_is = |e: f64| (config.layer_norm_eps - e).abs() <= e * 1e-6;
    // Each arm runs the same pipeline with a different statically shaped model.
    let logits: Vec<f32> = match (shape, depth) {
        ((224, 16, 768, 12), (12, 3072, 1000)) if eps_is(1e-12) => {
            let model = VitBase16::from_safetensors(weights)?.with_threads(threads);
            model.classify(&[&*processor.process::<3, 224, 224>(&image)?])?[0].to_vec()
        }
        ((32, 8, 64, 4), (2, 128, 10)) if eps_is(1e-12) => {
            let model = FixtureSmall::from_safetensors(weights)?.with_threads(threads);
            model.classify(&[&*processor.process::<3, 32, 32>(&image)?])?[0].to_vec()
        }
        ((30, 6, 48, 12), (3, 136, 7)) if eps_is(1e-6) => {
            let model = FixtureOdd::from_safetensors(weights)?.with_threads(threads);
            model.classify(&[&*processor.process::<3, 30, 30>(&image)?])?[0].to_vec()
        }
        _ => {
            return Err(format!(
                "no ViT declared in this example has image {}, patch {}, width {}, {} heads, {} layers, \
                 d_ff {}, {} labels, eps {}; add a `vit!(…)` line with these dims",
                config.image_size,
                config.patch_size,
                config.hidden_size,
                config.num_attention_heads,
                config.num_hidden_layers,
                config.intermediate_size,
                labels,
                config.layer_norm_eps
            )
            .into())
        }
    };
    print_top5(&logits, &config.id2label);
    Ok(())
}

/// The five most likely labels with their softmax probabilities.
fn print_top5(logits: &[f32], id2label: &HashMap<String, String>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let mut ranked: Vec<(usize, f32)> = logits.iter().map(|&l| (l - max).exp() / total).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (id, p) in ranked.into_iter().take(5) {
        let label = id2label.get(&id.to_string()).map_or("?", String::as_str);
        println!("{p:7.3}  {label} (id {id})");
    }
}
