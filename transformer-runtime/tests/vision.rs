//! Vision input: patch unfolding against a direct convolution, the shaped embedding loader, and
//! `ImageProcessor` against Hugging Face `ViTImageProcessor` fixtures (transformers 4.57.1,
//! Pillow 13) plus an independent f64 formulation of Pillow's bilinear resize.

use std::path::{Path, PathBuf};

use image::RgbImage;
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::Value;
use transformer_runtime::layers::{Embedding, Linear};
use transformer_runtime::vision::{resize_bilinear, unfold_patches, ImageProcessor, Resample};
use transformer_runtime::{Activation, Error, Threads, WeightLoader, WeightProblem};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vit")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A small deterministic generator (xorshift64*), so the tests need no seeding API.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

fn temp_path(tag: &str, ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "transformer-runtime-vision-{tag}-{}-{:?}.{ext}",
        std::process::id(),
        std::thread::current().id()
    ))
}

// ---------------------------------------------------------------------------------------------
// Patch unfolding = Conv2d(kernel = stride = P)
// ---------------------------------------------------------------------------------------------

/// Direct convolution in f64: `out[d][py][px] = b[d] + Σ_{c,ky,kx} w[d][c][ky][kx] ·
/// image[c][py·P + ky][px·P + kx]`, with `w` as PyTorch stores it (`[D, C, P, P]`, row-major).
fn naive_conv(
    image: &[f32],
    c: usize,
    h: usize,
    w: usize,
    p: usize,
    weight: &[f32],
    bias: &[f32],
) -> Vec<f64> {
    let d = bias.len();
    let (rows, cols) = (h / p, w / p);
    let mut out = vec![0.0f64; rows * cols * d];
    for py in 0..rows {
        for px in 0..cols {
            for o in 0..d {
                let mut sum = bias[o] as f64;
                for ch in 0..c {
                    for ky in 0..p {
                        for kx in 0..p {
                            let wv = weight[((o * c + ch) * p + ky) * p + kx] as f64;
                            let iv = image[(ch * h + py * p + ky) * w + px * p + kx] as f64;
                            sum += wv * iv;
                        }
                    }
                }
                // Output in `[patch, D]` order: the conv output flattened and transposed.
                out[(py * cols + px) * d + o] = sum;
            }
        }
    }
    out
}

/// Unfolds a random `C×H×W` image into `P×P` patches and checks both the f64 dot products of each
/// patch row with the `[D, C·P·P]` view of a random conv weight, and a `Linear<K, D>` loaded from
/// that view, against the direct convolution.
macro_rules! unfold_case {
    ($name:ident, C = $c:literal, H = $h:literal, W = $w:literal, P = $p:literal, D = $d:literal, K = $k:literal) => {
        #[test]
        fn $name() {
            const C: usize = $c;
            const H: usize = $h;
            const W: usize = $w;
            const P: usize = $p;
            const D: usize = $d;
            const K: usize = $k;
            const N: usize = (H / P) * (W / P);
            assert_eq!(K, C * P * P);
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (C * 1000 + H * 100 + W * 10 + P) as u64);
            let mut image = Box::new([[[0.0f32; W]; H]; C]);
            for v in image.as_flattened_mut().as_flattened_mut() {
                *v = rng.unit();
            }
            let weight: Vec<f32> = (0..D * K).map(|_| rng.unit()).collect();
            let bias: Vec<f32> = (0..D).map(|_| rng.unit()).collect();
            let flat: Vec<f32> = image.as_flattened().as_flattened().to_vec();
            let want = naive_conv(&flat, C, H, W, P, &weight, &bias);

            let mut patches = vec![f32::NAN; N * K];
            unfold_patches::<C, H, W, P>(&image, &mut patches);

            // The unfolded rows dotted with the conv weight viewed as [D, C·P·P], in f64: the same
            // products as the convolution, so only the summation order differs.
            for (n, row) in patches.chunks_exact(K).enumerate() {
                for o in 0..D {
                    let dot: f64 = bias[o] as f64
                        + row
                            .iter()
                            .zip(&weight[o * K..][..K])
                            .map(|(&x, &w)| x as f64 * w as f64)
                            .sum::<f64>();
                    let expected = want[n * D + o];
                    assert!((dot - expected).abs() < 1e-9, "patch {n} output {o}: {dot} vs {expected}");
                }
            }

            // And through the runtime's Linear, whose weight is the conv weight as [OUT, IN].
            let weight_t: Vec<f32> = (0..K * D).map(|i| weight[(i % D) * K + i / D]).collect();
            let linear = Linear::<K, D>::from_parts(weight_t, Some(bias.clone()));
            let rows: &[[f32; K]] = patches.as_chunks::<K>().0;
            let mut out = vec![[0.0f32; D]; N];
            linear.forward(rows, &mut out, Activation::Identity, &Threads::sequential());
            for (n, row) in out.iter().enumerate() {
                for o in 0..D {
                    let expected = want[n * D + o];
                    assert!(
                        (row[o] as f64 - expected).abs() < 1e-4 * (1.0 + expected.abs()),
                        "linear: patch {n} output {o}: {} vs {expected}",
                        row[o]
                    );
                }
            }
        }
    };
}

unfold_case!(unfold_1x4x4_p2, C = 1, H = 4, W = 4, P = 2, D = 3, K = 4);
unfold_case!(unfold_3x6x9_p3, C = 3, H = 6, W = 9, P = 3, D = 5, K = 27);
unfold_case!(unfold_2x8x4_p4, C = 2, H = 8, W = 4, P = 4, D = 4, K = 32);
unfold_case!(unfold_3x5x5_p5, C = 3, H = 5, W = 5, P = 5, D = 2, K = 75);
unfold_case!(unfold_3x6x6_p1, C = 3, H = 6, W = 6, P = 1, D = 4, K = 3);
unfold_case!(unfold_3x32x16_p8, C = 3, H = 32, W = 16, P = 8, D = 7, K = 192);

#[test]
fn unfold_orders_patches_row_major_and_values_channel_ky_kx() {
    // image[c][y][x] = 100·c + 10·y + x, 2×4×4, P = 2: patch (py, px) row is
    // [c0 ky0 kx0, c0 ky0 kx1, c0 ky1 kx0, c0 ky1 kx1, c1 …].
    let mut image = [[[0.0f32; 4]; 4]; 2];
    for (c, plane) in image.iter_mut().enumerate() {
        for (y, row) in plane.iter_mut().enumerate() {
            for (x, v) in row.iter_mut().enumerate() {
                *v = (100 * c + 10 * y + x) as f32;
            }
        }
    }
    let mut out = [0.0f32; 4 * 8];
    unfold_patches::<2, 4, 4, 2>(&image, &mut out);
    // Patch 1 is (py 0, px 1); patch 2 is (py 1, px 0).
    assert_eq!(out[8..16], [2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0]);
    assert_eq!(out[16..24], [20.0, 21.0, 30.0, 31.0, 120.0, 121.0, 130.0, 131.0]);
}

#[test]
#[should_panic(expected = "wrong length")]
fn unfold_rejects_a_wrong_buffer_length() {
    let image = [[[0.0f32; 4]; 4]; 1];
    let mut out = [0.0f32; 15];
    unfold_patches::<1, 4, 4, 2>(&image, &mut out);
}

// ---------------------------------------------------------------------------------------------
// Embedding::load_shaped
// ---------------------------------------------------------------------------------------------

fn safetensors_file(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| (*name, TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn load_shaped_keeps_checkpoint_shapes_as_tables() {
    let cls: Vec<f32> = (0..4).map(|i| i as f32).collect();
    let pos: Vec<f32> = (0..5 * 4).map(|i| 10.0 + i as f32).collect();
    let bytes = safetensors_file(&[
        ("vit.embeddings.cls_token", vec![1, 1, 4], cls.clone()),
        ("vit.embeddings.position_embeddings", vec![1, 5, 4], pos.clone()),
    ]);
    let mut loader = WeightLoader::from_bytes(bytes, "vit.safetensors").unwrap();
    let cls_token = Embedding::<4>::load_shaped(&mut loader, "vit.embeddings.cls_token", 1, &[1, 1, 4]);
    let positions =
        Embedding::<4>::load_shaped(&mut loader, "vit.embeddings.position_embeddings", 5, &[1, 5, 4]);
    loader.finish().unwrap();

    assert_eq!(cls_token.rows(), 1);
    assert_eq!(cls_token.row(0), &[0.0, 1.0, 2.0, 3.0]);
    assert_eq!(positions.rows(), 5);
    for r in 0..5 {
        assert_eq!(positions.row(r)[..], pos[r * 4..(r + 1) * 4]);
    }
    let mut x = [1.0f32; 4];
    positions.add_row(2, &mut x);
    assert_eq!(x, [19.0, 20.0, 21.0, 22.0]);
}

#[test]
fn load_shaped_reports_a_squeezed_checkpoint_shape() {
    // A checkpoint storing [5, 4] where [1, 5, 4] is expected is a shape mismatch, not silently
    // accepted; the table is zeros and loading continues.
    let bytes = safetensors_file(&[("pos", vec![5, 4], vec![1.0; 20])]);
    let mut loader = WeightLoader::from_bytes(bytes, "vit.safetensors").unwrap();
    let positions = Embedding::<4>::load_shaped(&mut loader, "pos", 5, &[1, 5, 4]);
    assert_eq!(positions.row(4), &[0.0; 4]);
    assert_eq!(
        loader.problems(),
        [WeightProblem::ShapeMismatch { name: "pos".into(), expected: vec![1, 5, 4], found: vec![5, 4] }]
    );
}

#[test]
#[should_panic(expected = "cannot be viewed as a [5, 4] table")]
fn load_shaped_asserts_the_shape_matches_the_table() {
    let bytes = safetensors_file(&[("pos", vec![1, 5, 4], vec![1.0; 20])]);
    let mut loader = WeightLoader::from_bytes(bytes, "vit.safetensors").unwrap();
    let _ = Embedding::<4>::load_shaped(&mut loader, "pos", 5, &[1, 6, 4]);
}

// ---------------------------------------------------------------------------------------------
// ImageProcessor against ViTImageProcessor fixtures
// ---------------------------------------------------------------------------------------------

fn u8_image(pixels: &Value) -> (usize, usize, Vec<u8>) {
    let rows = pixels.as_array().unwrap();
    let width = rows[0].as_array().unwrap().len();
    let mut bytes = Vec::with_capacity(rows.len() * width * 3);
    for row in rows {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), width);
        for px in row {
            bytes.extend(px.as_array().unwrap().iter().map(|v| u8::try_from(v.as_u64().unwrap()).unwrap()));
        }
    }
    (rows.len(), width, bytes)
}

#[test]
fn png_decoding_matches_pil() {
    let dir = fixtures();
    let images = read_json(&dir.join("images.json"));
    let images = images["images"].as_object().unwrap();
    assert!(images.len() >= 3, "expected the three fixture PNGs");
    for (file, entry) in images {
        let (h, w, want) = u8_image(&entry["pixels"]);
        let image = ImageProcessor::load_image(dir.join(file)).unwrap();
        assert_eq!((image.height() as usize, image.width() as usize), (h, w), "{file}");
        assert!(image.as_raw() == &want, "{file}: decoded pixels differ from PIL's");
    }
}

/// Every image of `<dir>/preprocess.json`: our resized uint8 image equals PIL's exactly, and our
/// pixel values equal the processor's bit for bit.
fn check_config<const S: usize>(name: &str) {
    let dir = fixtures();
    let processor = ImageProcessor::from_json_file(dir.join(name).join("preprocessor_config.json")).unwrap();
    assert_eq!(processor.size, (S, S));
    assert_eq!(processor.resample, Resample::Bilinear);
    let reference = read_json(&dir.join(name).join("preprocess.json"));
    let entries = reference["images"].as_array().unwrap();
    let files: Vec<&str> = entries.iter().map(|e| e["file"].as_str().unwrap()).collect();
    for required in ["image.png", "image_exact.png"] {
        assert!(files.contains(&required), "{name}: no fixture for {required}");
    }
    for entry in entries {
        let file = entry["file"].as_str().unwrap();
        let image = ImageProcessor::load_image(dir.join(file)).unwrap();

        let (h, w, want) = u8_image(&entry["resized_uint8"]);
        assert_eq!((h, w), (S, S));
        let resized = resize_bilinear(&image, S as u32, S as u32);
        let differing = resized.as_raw().iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 0, "{name}/{file}: {differing} resized bytes differ from PIL's");

        let pixels = processor.process::<3, S, S>(&image).unwrap();
        let want = &entry["pixel_values"][0];
        let mut max_diff = 0.0f32;
        for c in 0..3 {
            for y in 0..S {
                for x in 0..S {
                    let expected = want[c][y][x].as_f64().unwrap() as f32;
                    max_diff = max_diff.max((pixels[c][y][x] - expected).abs());
                }
            }
        }
        // Bit-exact in practice (same f64 rescale, f32 normalise); the bound is the contract.
        assert!(max_diff <= 1e-5, "{name}/{file}: pixel values differ by up to {max_diff}");
        assert_eq!(max_diff, 0.0, "{name}/{file}: pixel values are no longer bit-identical");
    }
}

#[test]
fn processor_matches_vit_image_processor_small() {
    check_config::<32>("small");
}

#[test]
fn processor_matches_vit_image_processor_odd() {
    check_config::<30>("odd");
}

#[test]
fn config_defaults_and_size_forms() {
    let p = ImageProcessor::from_json_str("{}").unwrap();
    assert_eq!(p, ImageProcessor::default());
    assert_eq!(p.size, (224, 224));
    // The old `ViTFeatureExtractor` form: an integer size, a scalar mean.
    let p = ImageProcessor::from_json_str(r#"{"size": 384, "image_mean": 0.25, "resample": 2}"#).unwrap();
    assert_eq!(p.size, (384, 384));
    assert_eq!(p.image_mean, [0.25; 3]);
    let p = ImageProcessor::from_json_str(r#"{"size": {"height": 20, "width": 40}}"#).unwrap();
    assert_eq!(p.size, (20, 40));
    let err = ImageProcessor::from_json_str(r#"{"size": {"shortest_edge": 224}}"#).unwrap_err();
    assert!(matches!(err, Error::PreprocessorConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("shortest_edge"), "{err}");
    let err = ImageProcessor::from_json_str(r#"{"image_std": [0.5, 0.0, 0.5]}"#).unwrap_err();
    assert!(err.to_string().contains("image_std[1]"), "{err}");
    let err = ImageProcessor::from_json_str(r#"{"image_mean": [0.5, 0.5]}"#).unwrap_err();
    assert!(err.to_string().contains("image_mean"), "{err}");
    let err = ImageProcessor::from_json_str(r#"{"do_center_crop": true}"#).unwrap_err();
    assert!(err.to_string().contains("do_center_crop"), "{err}");
    let err = ImageProcessor::from_json_str("not json").unwrap_err();
    assert!(matches!(&err, Error::PreprocessorConfig { config, .. } if config == "<string>"), "{err:?}");
}

#[test]
fn unsupported_resample_is_an_error_at_load() {
    let err = ImageProcessor::from_json_str(r#"{"resample": 3}"#).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedResample { resample: 3, name: "BICUBIC", .. }),
        "expected UnsupportedResample, got {err:?}"
    );
    assert!(err.to_string().contains("resample = 3 (BICUBIC)"), "{err}");

    let path = temp_path("resample", "json");
    std::fs::write(&path, r#"{"resample": 0, "size": {"height": 32, "width": 32}}"#).unwrap();
    let err = ImageProcessor::from_json_file(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(
        matches!(&err, Error::UnsupportedResample { config, resample: 0, .. } if config == &path.display().to_string()),
        "{err:?}"
    );
}

#[test]
fn missing_config_file_names_the_path() {
    let path = fixtures().join("no-such-dir/preprocessor_config.json");
    let err = ImageProcessor::from_json_file(&path).unwrap_err();
    assert!(matches!(err, Error::PreprocessorConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn wrong_size_without_resize_is_an_error() {
    let mut processor = ImageProcessor::from_json_str(r#"{"size": {"height": 32, "width": 32}}"#).unwrap();
    processor.do_resize = false;
    let exact = ImageProcessor::load_image(fixtures().join("image_exact.png")).unwrap();
    processor.process::<3, 32, 32>(&exact).unwrap();

    let image = ImageProcessor::load_image(fixtures().join("image.png")).unwrap(); // 45 × 27
    let err = processor.process::<3, 32, 32>(&image).unwrap_err();
    assert!(
        matches!(err, Error::ImageSizeMismatch { expected: (32, 32), found: (27, 45) }),
        "expected ImageSizeMismatch, got {err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("27×45") && message.contains("32×32"), "{message}");
}

#[test]
fn without_rescale_and_normalize_values_are_the_bytes() {
    let processor = ImageProcessor {
        do_rescale: false,
        do_normalize: false,
        size: (32, 32),
        ..ImageProcessor::default()
    };
    let image = ImageProcessor::load_image(fixtures().join("image_exact.png")).unwrap();
    let pixels = processor.process::<3, 32, 32>(&image).unwrap();
    for (i, p) in image.pixels().enumerate() {
        let (y, x) = (i / 32, i % 32);
        for c in 0..3 {
            assert_eq!(pixels[c][y][x], p.0[c] as f32);
        }
    }
}

#[test]
fn non_image_file_is_an_error_naming_the_path() {
    // A JSON file is not an image.
    let path = fixtures().join("small/preprocessor_config.json");
    let err = ImageProcessor::load_image(&path).unwrap_err();
    assert!(matches!(&err, Error::ImageRead { path: p, .. } if p == &path), "{err:?}");
    assert!(err.to_string().contains("preprocessor_config.json"), "{err}");

    // Bytes that claim to be a PNG but are truncated.
    let path = temp_path("truncated", "png");
    let png = std::fs::read(fixtures().join("image.png")).unwrap();
    std::fs::write(&path, &png[..png.len() / 2]).unwrap();
    let err = ImageProcessor::load_image(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(&err, Error::ImageRead { path: p, .. } if p == &path), "{err:?}");

    let path = fixtures().join("missing.png");
    let err = ImageProcessor::load_image(&path).unwrap_err();
    assert!(err.to_string().contains("missing.png"), "{err}");
}

#[test]
fn model_shape_mismatch_is_an_error() {
    let processor = ImageProcessor::from_json_str(r#"{"size": {"height": 32, "width": 32}}"#).unwrap();
    let image = RgbImage::new(40, 40);
    let err = processor.process::<1, 32, 32>(&image).unwrap_err();
    assert!(
        matches!(err, Error::ProcessorShapeMismatch { model: [1, 32, 32], processor: [3, 32, 32] }),
        "{err:?}"
    );
    let err = processor.process::<3, 224, 224>(&image).unwrap_err();
    assert!(
        matches!(err, Error::ProcessorShapeMismatch { model: [3, 224, 224], processor: [3, 32, 32] }),
        "{err:?}"
    );
    assert!(err.to_string().contains("3×224×224") && err.to_string().contains("3×32×32"), "{err}");
    let err = processor.process::<3, 32, 16>(&image).unwrap_err();
    assert!(matches!(err, Error::ProcessorShapeMismatch { .. }), "{err:?}");
}

#[test]
fn empty_image_is_an_error() {
    let processor = ImageProcessor { size: (8, 8), ..ImageProcessor::default() };
    let err = processor.process::<3, 8, 8>(&RgbImage::new(0, 5)).unwrap_err();
    assert!(matches!(err, Error::EmptyImage { width: 0, height: 5 }), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Pillow's bilinear resize against an independent f64 formulation
// ---------------------------------------------------------------------------------------------

/// One axis of Pillow's BILINEAR resample written from its definition, in f64, over every input
/// sample (the triangle is zero outside its support, so no window bookkeeping): output `i` is
/// centred at `(i + 0.5)·in/out`; input `j` (centred at `j + 0.5`) has weight
/// `max(0, 1 − |j + 0.5 − center| / max(in/out, 1))`; the result is the weighted mean.
/// Returns the exact mean and the number of inputs with a non-zero weight.
fn naive_axis(line: &[u8], out: usize) -> Vec<(f64, usize)> {
    let scale = line.len() as f64 / out as f64;
    let filterscale = scale.max(1.0);
    (0..out)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let (mut num, mut den, mut taps) = (0.0, 0.0, 0);
            for (j, &v) in line.iter().enumerate() {
                let w = (1.0 - ((j as f64 + 0.5 - center) / filterscale).abs()).max(0.0);
                if w > 0.0 {
                    num += w * v as f64;
                    den += w;
                    taps += 1;
                }
            }
            (num / den, taps)
        })
        .collect()
}

/// Pillow rounds `value` to a byte through 22-bit fixed-point weights: equal to
/// `floor(value + 0.5)` except within the weights' rounding error of a half-way point, where
/// either neighbour is correct. That error is at most half a unit in the last place of each of the
/// `taps` weights times 255 (plus one tap for the window edge).
#[track_caller]
fn assert_pillow_rounding(got: u8, value: f64, taps: usize, what: &str) {
    let rounded = (value + 0.5).floor().clamp(0.0, 255.0);
    if got as f64 == rounded {
        return;
    }
    let tolerance = (taps + 1) as f64 * 255.0 * 0.5 / (1u64 << 22) as f64 + 1e-9;
    let near_half = ((value - value.floor()) - 0.5).abs() <= tolerance;
    assert!(
        near_half && (got as f64 - value).abs() <= 0.5 + tolerance,
        "{what}: got {got}, exact value {value} rounds to {rounded}"
    );
}

fn rgb(width: usize, height: usize, bytes: Vec<u8>) -> RgbImage {
    RgbImage::from_raw(width as u32, height as u32, bytes).unwrap()
}

/// Checks one pass of `resize_bilinear`: `image` resized along one axis only (the other keeps its
/// size, so Pillow runs exactly one pass) against `naive_axis` on every line.
fn check_one_pass(image: &RgbImage, out_w: usize, out_h: usize) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    assert!(w == out_w || h == out_h);
    let got = resize_bilinear(image, out_w as u32, out_h as u32);
    let src = image.as_raw();
    if w != out_w {
        for y in 0..h {
            for c in 0..3 {
                let line: Vec<u8> = (0..w).map(|x| src[(y * w + x) * 3 + c]).collect();
                for (x, (value, taps)) in naive_axis(&line, out_w).into_iter().enumerate() {
                    let what = format!("{w}→{out_w} horizontal, row {y}, x {x}, channel {c}");
                    assert_pillow_rounding(got.as_raw()[(y * out_w + x) * 3 + c], value, taps, &what);
                }
            }
        }
    } else if h != out_h {
        for x in 0..w {
            for c in 0..3 {
                let line: Vec<u8> = (0..h).map(|y| src[(y * w + x) * 3 + c]).collect();
                for (y, (value, taps)) in naive_axis(&line, out_h).into_iter().enumerate() {
                    let what = format!("{h}→{out_h} vertical, column {x}, y {y}, channel {c}");
                    assert_pillow_rounding(got.as_raw()[(y * w + x) * 3 + c], value, taps, &what);
                }
            }
        }
    } else {
        assert_eq!(&got, image, "a same-size resize is a copy");
    }
}

fn image_strategy(max_w: usize, max_h: usize) -> impl Strategy<Value = RgbImage> {
    (1..=max_w, 1..=max_h).prop_flat_map(|(w, h)| {
        prop::collection::vec(any::<u8>(), w * h * 3).prop_map(move |bytes| rgb(w, h, bytes))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Up- and downscaling of rows, including strong reductions (wide filters).
    #[test]
    fn horizontal_pass_matches_the_f64_definition(
        image in image_strategy(120, 3),
        out_w in prop_oneof![1usize..=16, 1usize..=240],
    ) {
        let h = image.height() as usize;
        check_one_pass(&image, out_w, h);
    }

    #[test]
    fn vertical_pass_matches_the_f64_definition(
        image in image_strategy(3, 120),
        out_h in prop_oneof![1usize..=16, 1usize..=240],
    ) {
        let w = image.width() as usize;
        check_one_pass(&image, w, out_h);
    }

    /// A two-axis resize is the two one-axis passes through an 8-bit intermediate image, in
    /// Pillow 13's order: vertical first iff the height shrinks by more than twice as many pixels
    /// as the width. With the one-pass properties above, this pins the whole resize.
    #[test]
    fn two_axis_resize_is_two_passes_in_pillow_order(
        image in image_strategy(48, 48),
        out_w in 1usize..=64,
        out_h in 1usize..=64,
    ) {
        let (w, h) = (image.width() as usize, image.height() as usize);
        let got = resize_bilinear(&image, out_w as u32, out_h as u32);
        let shrink_h = h as i64 - out_h as i64;
        let shrink_w = w as i64 - out_w as i64;
        let expected = if shrink_h > 0 && shrink_h > 2 * shrink_w {
            let mid = resize_bilinear(&image, w as u32, out_h as u32);
            check_one_pass(&mid, out_w, out_h);
            resize_bilinear(&mid, out_w as u32, out_h as u32)
        } else {
            let mid = resize_bilinear(&image, out_w as u32, h as u32);
            check_one_pass(&mid, out_w, out_h);
            resize_bilinear(&mid, out_w as u32, out_h as u32)
        };
        prop_assert_eq!(got, expected);
    }
}

/// Exact values Pillow 13 gives (checked with `PIL.Image.resize`), as regression anchors
/// independent of the fixtures' generator: a 2-pixel ramp stretched to 4 and shrunk back.
#[test]
fn resize_known_values() {
    let ramp = rgb(2, 1, vec![0, 0, 0, 255, 255, 255]);
    let up = resize_bilinear(&ramp, 4, 1);
    let r: Vec<u8> = up.pixels().map(|p| p.0[0]).collect();
    // Centres at 0.25, 0.75, 1.25, 1.75 in input pixels: weights (1, 0), (.75, .25), (.25, .75), (0, 1).
    assert_eq!(r, [0, 64, 191, 255]);
    let down = resize_bilinear(&up, 2, 1);
    let r: Vec<u8> = down.pixels().map(|p| p.0[0]).collect();
    // Filter half-width 2: output 0 (centre 1.0) reads 0, 64, 191 with weights .75, .75, .25:
    // 95.75 / 1.75 = 54.7 → 55.
    assert_eq!(r, [55, 200]);
}
