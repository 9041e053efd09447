//! `y = act(x·Wᵀ + b)` with static widths, the GEMM run in row blocks so that the bias and activation
//! epilogue touches each output block while it is still in cache.

use crate::kernels::activation::{activation_only, bias_activation, Activation};
use crate::kernels::gemm::matmul;
use crate::{Threads, WeightLoader};

/// Rows per GEMM task: large enough for the microkernel to amortise packing, small enough that a
/// 128-token sequence still splits across two cores.
const ROW_BLOCK: usize = 64;

/// A linear layer from `IN` to `OUT` features.
#[derive(Clone, Debug)]
pub struct Linear<const IN: usize, const OUT: usize> {
    /// `[IN, OUT]` row-major: PyTorch's `[OUT, IN]` weight transposed once at load, so the GEMM
    /// streams it along its contiguous axis.
    weight_t: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl<const IN: usize, const OUT: usize> Linear<IN, OUT> {
    /// Loads `{prefix}.weight` (`[OUT, IN]`, as `nn.Linear` stores it) and, if `bias`, `{prefix}.bias`.
    pub fn load(loader: &mut WeightLoader, prefix: &str, bias: bool) -> Self {
        Self::load_fused(loader, &[prefix], bias)
    }

    /// Loads several `nn.Linear`s with the same input and concatenates their outputs, e.g. the query,
    /// key and value projections into one `[IN, 3·D]` GEMM. Each part has `OUT / parts` outputs.
    pub fn load_fused(loader: &mut WeightLoader, prefixes: &[&str], bias: bool) -> Self {
        assert!(
            !prefixes.is_empty() && OUT.is_multiple_of(prefixes.len()),
            "{OUT} outputs cannot be split into {} equal parts",
            prefixes.len()
        );
        let part = OUT / prefixes.len();
        let mut weight_t = vec![0.0; IN * OUT];
        let mut fused_bias = bias.then(|| Vec::with_capacity(OUT));
        for (p, prefix) in prefixes.iter().enumerate() {
            let w = loader.take(&format!("{prefix}.weight"), &[part, IN]);
            for o in 0..part {
                for i in 0..IN {
                    weight_t[i * OUT + p * part + o] = w[o * IN + i];
                }
            }
            if let Some(b) = &mut fused_bias {
                b.extend(loader.take(&format!("{prefix}.bias"), &[part]));
            }
        }
        Self {
            weight_t,
            bias: fused_bias,
        }
    }

    /// From a `[IN, OUT]` row-major matrix (already transposed) and an optional bias; for tests and
    /// weights built in code.
    pub fn from_parts(weight_t: Vec<f32>, bias: Option<Vec<f32>>) -> Self {
        assert_eq!(
            weight_t.len(),
            IN * OUT,
            "weight must be [IN = {IN}, OUT = {OUT}]"
        );
        if let Some(b) = &bias {
            assert_eq!(b.len(), OUT, "bias must have OUT = {OUT} elements");
        }
        Self { weight_t, bias }
    }

    /// `out[r] = act(x[r]·Wᵀ + b)` for every row.
    pub fn forward(&self, x: &[[f32; IN]], out: &mut [[f32; OUT]], act: Activation, threads: &Threads) {
        assert_eq!(
            x.len(),
            out.len(),
            "linear {IN}->{OUT}: input and output row counts differ"
        );
        let x = x.as_flattened();
        threads.for_each_chunk(out.as_flattened_mut(), ROW_BLOCK * OUT, |block, out| {
            let rows = out.len() / OUT;
            let x = &x[block * ROW_BLOCK * IN..][..rows * IN];
            matmul(x, &self.weight_t, out, rows, IN, OUT, false);
            match &self.bias {
                Some(b) => bias_activation(out, b, act),
                None => activation_only(out, act),
            }
        });
    }
}
