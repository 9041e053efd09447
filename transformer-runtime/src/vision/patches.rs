//! Cutting an image into the non-overlapping patches a ViT embeds.
//!
//! A ViT's patch embedding is `Conv2d(C, D, kernel_size = P, stride = P)`. With the image unfolded
//! into one row per patch, each row flattened in the order of the conv weight's last three axes
//! (channel, ky, kx), that convolution is exactly a [`Linear<C·P·P, D>`](crate::layers::Linear)
//! whose `[D, C·P·P]` weight is the conv weight `[D, C, P, P]` viewed as two axes.

/// Writes the `(H/P)·(W/P)` patches of `image` (channel-first) into `out`, one row of `C·P·P`
/// values per patch. Patches are in row-major order (patch row, then patch column), as the
/// flattened conv output `[D, H/P, W/P] → [(H/P)·(W/P), D]` orders them; within a row the values
/// are in PyTorch `Conv2d` weight order: channel, then ky, then kx.
///
/// # Panics
///
/// If `P` is zero or does not divide `H` and `W`, or if `out.len()` is not
/// `(H/P)·(W/P)·C·P·P` (= `C·H·W`). Generated code fixes all of these at compile time.
pub fn unfold_patches<const C: usize, const H: usize, const W: usize, const P: usize>(
    image: &[[[f32; W]; H]; C],
    out: &mut [f32],
) {
    assert!(P > 0 && H.is_multiple_of(P) && W.is_multiple_of(P), "patch size {P} does not divide {H}×{W}");
    let (rows, cols) = (H / P, W / P);
    let row_len = C * P * P;
    assert_eq!(
        out.len(),
        rows * cols * row_len,
        "patch buffer for {rows}×{cols} patches of {C}×{P}×{P} has the wrong length"
    );
    for (patch, dst) in out.chunks_exact_mut(row_len).enumerate() {
        let (py, px) = (patch / cols, patch % cols);
        for (channel, dst) in image.iter().zip(dst.chunks_exact_mut(P * P)) {
            for (ky, dst) in dst.chunks_exact_mut(P).enumerate() {
                dst.copy_from_slice(&channel[py * P + ky][px * P..(px + 1) * P]);
            }
        }
    }
}
