//! A recurrent stack's parameters: one flat buffer in torch's `state_dict` order, named as torch
//! names them.

use std::ops::Range;

use crate::weights::WeightLoader;

/// One parameter tensor of a recurrent layer: its torch name (`weight_ih_l0`, `bias_hh_l1_reverse`,
/// …), shape, and where it lies in [`Lstm::params`](super::Lstm::params) (and in the gradient
/// buffer, which has the same layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamTensor {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no values (never, for a layer that exists).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its values' range in the flat parameter (and gradient) buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The dims every part of a stack shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dims {
    /// Width of layer 0's input.
    pub input: usize,
    pub hidden: usize,
    pub layers: usize,
    pub directions: usize,
    /// Gate blocks of `hidden` each (4 for an LSTM, 3 for a GRU).
    pub gates: usize,
}

impl Dims {
    /// Input width of `layer`: `input` for the first, the previous layer's `directions·hidden`
    /// output above it.
    pub fn input_of(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input
        } else {
            self.directions * self.hidden
        }
    }

    /// Width of the gate pre-activations: `gates·hidden`.
    pub fn gate_width(&self) -> usize {
        self.gates * self.hidden
    }

    /// Width of a layer's output: `directions·hidden`.
    pub fn output_width(&self) -> usize {
        self.directions * self.hidden
    }
}

/// The four tensors of one layer and direction, in `state_dict` order.
pub(super) const WEIGHT_IH: usize = 0;
pub(super) const WEIGHT_HH: usize = 1;
pub(super) const BIAS_IH: usize = 2;
pub(super) const BIAS_HH: usize = 3;

/// The tensors of a stack with these dims, in torch's `state_dict` order.
pub(super) fn layout(dims: Dims) -> Vec<ParamTensor> {
    let gate_width = dims.gate_width();
    let mut tensors = Vec::with_capacity(4 * dims.layers * dims.directions);
    let mut offset = 0;
    for layer in 0..dims.layers {
        for direction in 0..dims.directions {
            let suffix = if direction == 1 { "_reverse" } else { "" };
            let shapes = [
                ("weight_ih", vec![gate_width, dims.input_of(layer)]),
                ("weight_hh", vec![gate_width, dims.hidden]),
                ("bias_ih", vec![gate_width]),
                ("bias_hh", vec![gate_width]),
            ];
            for (kind, shape) in shapes {
                let tensor = ParamTensor { name: format!("{kind}_l{layer}{suffix}"), shape, offset };
                offset += tensor.len();
                tensors.push(tensor);
            }
        }
    }
    tensors
}

/// The index in [`layout`] of the first tensor of `layer`'s `direction`.
pub(super) fn first_tensor(dims: Dims, layer: usize, direction: usize) -> usize {
    4 * (layer * dims.directions + direction)
}

/// Every tensor of `tensors` taken from `loader` under `{prefix}.{name}` (just `{name}` for an
/// empty prefix), concatenated in order. Problems are recorded in the loader, which reports them
/// all, each naming its tensor and shape, at [`WeightLoader::finish`].
pub(super) fn load(loader: &mut WeightLoader, prefix: &str, tensors: &[ParamTensor]) -> Vec<f32> {
    let mut values = Vec::with_capacity(tensors.iter().map(ParamTensor::len).sum());
    for tensor in tensors {
        let name = if prefix.is_empty() { tensor.name.clone() } else { format!("{prefix}.{}", tensor.name) };
        values.extend(loader.take(&name, &tensor.shape));
    }
    values
}

/// Values drawn as torch's `reset_parameters` draws them for a recurrent layer: every parameter
/// uniform in `[−1/√H, 1/√H)`, here from a ChaCha8 stream seeded with `seed`.
pub(super) fn init(len: usize, hidden: usize, seed: u64) -> Vec<f32> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let bound = 1.0 / (hidden as f64).sqrt();
    (0..len).map(|_| ((2.0 * rng.random::<f64>() - 1.0) * bound) as f32).collect()
}
