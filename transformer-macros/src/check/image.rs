//! Rules of image models (`image_size`, `patch_size`, `channels`, `labels`, `pooling`): the
//! patches tile the image, the positions cover the patches, and the patches see each other.

use proc_macro2::Span;

use super::{layout_conflict_with, Entries, Sizes};
use crate::ast::Entry;
use crate::ctxt::Ctxt;
use crate::spec::{Attention, ImageInput, Pooling};

/// An image model's input: the images (`None` where absent or invalid) and the positions they
/// take.
pub(super) struct Images {
    pub(super) input: Option<ImageInput>,
    pub(super) positions: Option<usize>,
}

/// The images' sizes (their patches tiling the image), and their positions: one per patch, plus
/// the class token's when pooling by it.
pub(super) fn images(cx: &mut Ctxt, entries: &Entries, sizes: &Sizes, pooling: Option<Pooling>) -> Images {
    let image = match (sizes.image_size, sizes.patch_size, sizes.channels) {
        (Some(image_size), Some(patch_size), Some(channels)) => {
            Some(ImageInput { image_size, patch_size, channels }).filter(|_| {
                patch_divides_image(cx, image_size, patch_size, entries["patch_size"].value.span())
            })
        }
        _ => None,
    };
    let image_positions = image.zip(pooling).map(|(i, p)| i.patches() + usize::from(p == Pooling::Cls));
    if let (Some(needed), Some(entry)) = (image_positions, entries.get("max_positions")) {
        positions_cover_the_patches(cx, needed, sizes.max_positions, entry);
    }
    Images { input: image, positions: image_positions }
}

/// Rule: an image model attends to all its patches.
pub(super) fn images_attend_both_ways(
    cx: &mut Ctxt,
    entries: &Entries,
    is_image: bool,
    attention: Option<Attention>,
) {
    if is_image && attention == Some(Attention::Causal) {
        layout_conflict_with(
            cx,
            entries,
            "attention",
            "image_size",
            "an image model attends to all patches: use `attention: bidirectional`",
            "image input declared here",
        );
    }
}

/// Rule: patches tile the image: `image_size` is a multiple of `patch_size`; else name the
/// nearest patch sizes that divide it.
/// `span` is the written patch size (a preset's entry, a composed `patch = …`).
pub fn patch_divides_image(cx: &mut Ctxt, image_size: usize, patch_size: usize, span: Span) -> bool {
    if image_size.is_multiple_of(patch_size) {
        return true;
    }
    let below = (1..patch_size).rev().find(|&p| image_size.is_multiple_of(p));
    let above = (patch_size + 1..=image_size).find(|&p| image_size.is_multiple_of(p));
    let nearest: Vec<String> = below.into_iter().chain(above).map(|p| p.to_string()).collect();
    cx.error(
        span,
        format!(
            "patches of {patch_size} do not tile an image of {image_size} ({image_size} / {patch_size} is not whole); \
             the nearest patch sizes that divide {image_size} are {}",
            nearest.join(" and ")
        ),
    );
    false
}

/// Rule: an image model's position table has one row per patch, plus one for the class token
/// when pooling by it.
fn positions_cover_the_patches(cx: &mut Ctxt, needed: usize, given: Option<usize>, entry: &Entry) {
    if let Some(given) = given.filter(|&g| g != needed) {
        cx.error(
            entry.value.span(),
            format!(
                "this image model has {needed} positions (its patches, plus the class token with \
                 `pooling: cls`), but `max_positions` is {given}: write `max_positions: {needed}` or leave it out"
            ),
        );
    }
}
