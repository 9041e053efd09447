//! Hugging Face's `ViTImageProcessor`, reproduced exactly: resize (Pillow's bilinear, bit for
//! bit), rescale, normalise, channel-first.

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;
use serde_json::Value;

use super::resample::resize_bilinear;
use crate::{Error, Result};

/// The resampling filter of a resize. Only Pillow's bilinear (`resample: 2` in
/// `preprocessor_config.json`, the ViT default) is implemented; the others are rejected when the
/// config is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resample {
    /// `PIL.Image.BILINEAR` (2): triangle filter, widened when downscaling.
    Bilinear,
}

/// The preprocessing of a ViT image classifier, as `preprocessor_config.json` describes it:
/// `image → resize to size (if do_resize) → ·rescale_factor (if do_rescale) →
/// (x − mean) / std (if do_normalize) → [3, height, width]`.
///
/// [`Default`] is `ViTImageProcessor()`'s defaults: resize to 224×224 bilinear, rescale by 1/255,
/// normalise with mean 0.5 and std 0.5.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageProcessor {
    /// Resize images to [`size`](Self::size); if off, images must already have that size.
    pub do_resize: bool,
    /// Output size as (height, width).
    pub size: (usize, usize),
    /// Filter of the resize.
    pub resample: Resample,
    /// Multiply the 0..=255 values by [`rescale_factor`](Self::rescale_factor).
    pub do_rescale: bool,
    /// Usually 1/255.
    pub rescale_factor: f64,
    /// Subtract [`image_mean`](Self::image_mean) and divide by [`image_std`](Self::image_std),
    /// per channel.
    pub do_normalize: bool,
    /// Per-channel mean (R, G, B).
    pub image_mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub image_std: [f32; 3],
}

/// `IMAGENET_STANDARD_MEAN` / `IMAGENET_STANDARD_STD` of transformers, ViT's defaults.
const STANDARD_MEAN_STD: [f32; 3] = [0.5, 0.5, 0.5];

impl Default for ImageProcessor {
    fn default() -> Self {
        ImageProcessor {
            do_resize: true,
            size: (224, 224),
            resample: Resample::Bilinear,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: STANDARD_MEAN_STD,
            image_std: STANDARD_MEAN_STD,
        }
    }
}

/// The keys of `preprocessor_config.json` this processor reads; absent or `null` means the
/// `ViTImageProcessor` default. Other keys (`image_processor_type`, `do_convert_rgb`, …) are
/// ignored, except those asking for a step this processor does not do (`do_center_crop`).
#[derive(Deserialize)]
struct RawConfig {
    do_resize: Option<bool>,
    size: Option<Value>,
    resample: Option<i64>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<Value>,
    image_std: Option<Value>,
    do_center_crop: Option<bool>,
}

/// Pillow's names of the `resample` codes.
fn resample_name(code: i64) -> &'static str {
    match code {
        0 => "NEAREST",
        1 => "LANCZOS",
        2 => "BILINEAR",
        3 => "BICUBIC",
        4 => "BOX",
        5 => "HAMMING",
        _ => "unknown",
    }
}

impl ImageProcessor {
    /// Reads a `preprocessor_config.json`.
    ///
    /// Fails with [`Error::PreprocessorConfig`] if the file cannot be read or is not a valid
    /// config, and [`Error::UnsupportedResample`] if it asks for a filter other than bilinear.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let label = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::PreprocessorConfig { config: label.clone(), reason: e.to_string() })?;
        Self::parse(&text, label)
    }

    /// [`from_json_file`](Self::from_json_file) from the file's text; errors name it `<string>`.
    pub fn from_json_str(json: &str) -> Result<Self> {
        Self::parse(json, "<string>".to_owned())
    }

    fn parse(json: &str, config: String) -> Result<Self> {
        let bad = |reason: String| Error::PreprocessorConfig { config: config.clone(), reason };
        let raw: RawConfig = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let mut processor = ImageProcessor::default();

        if raw.do_center_crop == Some(true) {
            return Err(bad(
                "do_center_crop = true is not supported (ViTImageProcessor does not crop)".into()
            ));
        }
        if let Some(code) = raw.resample {
            if code != 2 {
                return Err(Error::UnsupportedResample { config, resample: code, name: resample_name(code) });
            }
        }
        if let Some(size) = &raw.size {
            processor.size = parse_size(size).map_err(bad)?;
        }
        if let Some(value) = &raw.image_mean {
            processor.image_mean = per_channel("image_mean", value).map_err(bad)?;
        }
        if let Some(value) = &raw.image_std {
            processor.image_std = per_channel("image_std", value).map_err(bad)?;
        }
        processor.do_resize = raw.do_resize.unwrap_or(processor.do_resize);
        processor.do_rescale = raw.do_rescale.unwrap_or(processor.do_rescale);
        processor.rescale_factor = raw.rescale_factor.unwrap_or(processor.rescale_factor);
        processor.do_normalize = raw.do_normalize.unwrap_or(processor.do_normalize);

        if !processor.rescale_factor.is_finite() {
            return Err(bad(format!("rescale_factor = {} is not finite", processor.rescale_factor)));
        }
        if let Some(c) = processor.image_std.iter().position(|s| *s == 0.0) {
            return Err(bad(format!("image_std[{c}] is 0: normalising would divide by zero")));
        }
        Ok(processor)
    }

    /// Opens a PNG or JPEG file (the format is read from its contents) and converts it to 8-bit
    /// RGB, as `PIL.Image.open(path).convert("RGB")` does (alpha is dropped, grey is replicated).
    ///
    /// 8-bit PNGs decode to exactly PIL's pixels. JPEG decoding is not bit-identical across
    /// decoders: this one (zune-jpeg) and PIL's libjpeg-turbo differ by a few levels in some
    /// pixels, most where chroma is subsampled (4:2:0), so for JPEG input the pixel values match
    /// `ViTImageProcessor` closely but not exactly.
    ///
    /// Fails with [`Error::ImageRead`], naming the path, if the file cannot be read or decoded.
    pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
        let path = path.as_ref();
        let fail = |reason: String| Error::ImageRead { path: path.to_path_buf(), reason };
        let reader = image::ImageReader::open(path)
            .map_err(|e| fail(e.to_string()))?
            .with_guessed_format()
            .map_err(|e| fail(e.to_string()))?;
        if reader.format().is_none() {
            return Err(fail("not a PNG or JPEG image".into()));
        }
        Ok(reader.decode().map_err(|e| fail(e.to_string()))?.to_rgb8())
    }

    /// Checks that this processor produces a `[C, H, W]` tensor: fails with
    /// [`Error::ProcessorShapeMismatch`] (naming both shapes) unless `C` is 3 and `(H, W)` is
    /// [`size`](Self::size).
    pub fn check_shape<const C: usize, const H: usize, const W: usize>(&self) -> Result<()> {
        let processor = [3, self.size.0, self.size.1];
        if [C, H, W] != processor {
            return Err(Error::ProcessorShapeMismatch { model: [C, H, W], processor });
        }
        Ok(())
    }

    /// Preprocesses `image` into a new channel-first `[C, H, W]` tensor (allocated directly on the
    /// heap). See [`process_into`](Self::process_into) for the errors.
    pub fn process<const C: usize, const H: usize, const W: usize>(
        &self,
        image: &RgbImage,
    ) -> Result<Box<[[[f32; W]; H]; C]>> {
        self.check_shape::<C, H, W>()?;
        let mut out = bytemuck::zeroed_box::<[[[f32; W]; H]; C]>();
        self.process_into(image, &mut out)?;
        Ok(out)
    }

    /// Preprocesses `image` into `out` (channel-first), exactly as `ViTImageProcessor` does:
    /// Pillow's bilinear resize of the uint8 image when its size differs from
    /// [`size`](Self::size), then `x · rescale_factor` computed in f64 and rounded to f32, then
    /// `(x − mean) / std` in f32.
    ///
    /// Fails with [`Error::ProcessorShapeMismatch`] if `[C, H, W]` is not `[3, size]`,
    /// [`Error::EmptyImage`] for an image without pixels, and [`Error::ImageSizeMismatch`] if the
    /// image's size differs while `do_resize` is off (never cropped or padded silently).
    pub fn process_into<const C: usize, const H: usize, const W: usize>(
        &self,
        image: &RgbImage,
        out: &mut [[[f32; W]; H]; C],
    ) -> Result<()> {
        self.check_shape::<C, H, W>()?;
        let (width, height) = (image.width() as usize, image.height() as usize);
        if width == 0 || height == 0 {
            return Err(Error::EmptyImage { width, height });
        }
        let resized;
        let image = if (height, width) == (H, W) {
            image
        } else if self.do_resize {
            // H and W equal the processor's size, which came from a config or the caller as usize;
            // a size beyond u32 is no image any decoder produces.
            let (Ok(w), Ok(h)) = (u32::try_from(W), u32::try_from(H)) else {
                return Err(Error::ImageSizeMismatch { expected: (H, W), found: (height, width) });
            };
            resized = resize_bilinear(image, w, h);
            &resized
        } else {
            return Err(Error::ImageSizeMismatch { expected: (H, W), found: (height, width) });
        };

        let pixels = image.as_raw().as_chunks::<3>().0;
        for (c, plane) in out.iter_mut().enumerate() {
            let (mean, std) = (self.image_mean[c], self.image_std[c]);
            for (row, src) in plane.iter_mut().zip(pixels.chunks_exact(W)) {
                for (x, p) in row.iter_mut().zip(src) {
                    let mut v = if self.do_rescale {
                        (p[c] as f64 * self.rescale_factor) as f32
                    } else {
                        p[c] as f32
                    };
                    if self.do_normalize {
                        v = (v - mean) / std;
                    }
                    *x = v;
                }
            }
        }
        Ok(())
    }
}

/// `size` as transformers' `get_size_dict` reads it for ViT: an integer (square), a
/// `[height, width]` list, or `{"height": h, "width": w}`.
fn parse_size(value: &Value) -> std::result::Result<(usize, usize), String> {
    let positive = |v: &Value, what: &str| match v.as_u64() {
        Some(n) if n > 0 => usize::try_from(n).map_err(|_| format!("size {what} = {n} is too large")),
        _ => Err(format!("size {what} = {v} is not a positive integer")),
    };
    match value {
        Value::Number(_) => {
            let n = positive(value, "")?;
            Ok((n, n))
        }
        Value::Array(hw) if hw.len() == 2 => Ok((positive(&hw[0], "height")?, positive(&hw[1], "width")?)),
        Value::Object(map) if map.contains_key("height") && map.contains_key("width") => {
            Ok((positive(&map["height"], "height")?, positive(&map["width"], "width")?))
        }
        _ => Err(format!(
            "size = {value} is not supported: ViTImageProcessor needs {{\"height\": h, \"width\": w}} or an integer"
        )),
    }
}

/// `image_mean` / `image_std`: three numbers, or one for all channels.
fn per_channel(key: &str, value: &Value) -> std::result::Result<[f32; 3], String> {
    let number = |v: &Value| {
        v.as_f64()
            .map(|x| x as f32)
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("{key} = {value}: {v} is not a finite number"))
    };
    match value {
        Value::Number(_) => Ok([number(value)?; 3]),
        Value::Array(items) if items.len() == 3 => {
            Ok([number(&items[0])?, number(&items[1])?, number(&items[2])?])
        }
        _ => Err(format!("{key} = {value} is not supported: give three numbers (R, G, B) or one")),
    }
}
