//! A recurrent language model composed from the runtime's pieces: token embedding → one
//! [`Lstm`] or [`Gru`] layer → linear head, trained with softmax cross-entropy, global-norm
//! clipping and AdamW, as `torch.nn.Embedding` → `nn.LSTM`/`nn.GRU` → `nn.Linear` would be.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transformer::recurrent::{Gru, GruSaved, Lstm, LstmSaved, LstmStates, ParamTensor};
use transformer::train::embedding::embedding_backward;
use transformer::train::linear::{linear_backward, linear_train};
use transformer::train::loss::{softmax_cross_entropy, Reduction};
use transformer::train::optim::{clip_grad_norm_tensors, AdamW, AdamWConfig, ParamSpec};
use transformer::train::Store;
use transformer::Threads;

use super::task::{Examples, VOCAB};
use super::Res;

/// What the language model needs of a one-directional recurrent layer `IN → H`.
pub trait Recurrent<const IN: usize, const H: usize>: Sized {
    type Saved: Default;
    fn init(seed: u64) -> Self;
    fn tensors(&self) -> &[ParamTensor];
    fn params(&self) -> &[f32];
    fn params_mut(&mut self) -> &mut [f32];
    fn forward(&self, x: &[[f32; IN]], batch: usize, saved: &mut Self::Saved, threads: &Threads);
    fn output(saved: &Self::Saved) -> &[[f32; H]];
    fn backward(
        &self,
        x: &[[f32; IN]],
        saved: &mut Self::Saved,
        d_output: &[[f32; H]],
        d_input: &mut [[f32; IN]],
        grads: &mut [f32],
        threads: &Threads,
    );
}

impl<const IN: usize, const H: usize> Recurrent<IN, H> for Lstm<IN, H> {
    type Saved = LstmSaved<H>;
    fn init(seed: u64) -> Self {
        Lstm::init(1, seed)
    }
    fn tensors(&self) -> &[ParamTensor] {
        Lstm::tensors(self)
    }
    fn params(&self) -> &[f32] {
        Lstm::params(self)
    }
    fn params_mut(&mut self) -> &mut [f32] {
        Lstm::params_mut(self)
    }
    fn forward(&self, x: &[[f32; IN]], batch: usize, saved: &mut Self::Saved, threads: &Threads) {
        Lstm::forward(self, x, batch, LstmStates::ZERO, saved, threads);
    }
    fn output(saved: &Self::Saved) -> &[[f32; H]] {
        saved.output().as_flattened()
    }
    fn backward(
        &self,
        x: &[[f32; IN]],
        saved: &mut Self::Saved,
        d_output: &[[f32; H]],
        d_input: &mut [[f32; IN]],
        grads: &mut [f32],
        threads: &Threads,
    ) {
        let d_output = d_output.as_chunks::<1>().0;
        let d_input = Some((d_input, Store::Overwrite));
        Lstm::backward(self, x, saved, d_output, LstmStates::ZERO, d_input, grads, threads);
    }
}

impl<const IN: usize, const H: usize> Recurrent<IN, H> for Gru<IN, H> {
    type Saved = GruSaved<H>;
    fn init(seed: u64) -> Self {
        Gru::init(1, seed)
    }
    fn tensors(&self) -> &[ParamTensor] {
        Gru::tensors(self)
    }
    fn params(&self) -> &[f32] {
        Gru::params(self)
    }
    fn params_mut(&mut self) -> &mut [f32] {
        Gru::params_mut(self)
    }
    fn forward(&self, x: &[[f32; IN]], batch: usize, saved: &mut Self::Saved, threads: &Threads) {
        Gru::forward(self, x, batch, None, saved, threads);
    }
    fn output(saved: &Self::Saved) -> &[[f32; H]] {
        saved.output().as_flattened()
    }
    fn backward(
        &self,
        x: &[[f32; IN]],
        saved: &mut Self::Saved,
        d_output: &[[f32; H]],
        d_input: &mut [[f32; IN]],
        grads: &mut [f32],
        threads: &Threads,
    ) {
        let d_output = d_output.as_chunks::<1>().0;
        Gru::backward(self, x, saved, d_output, None, Some((d_input, Store::Overwrite)), grads, threads);
    }
}

/// The parameters (or their gradients) outside the recurrent layer.
#[derive(Clone, Debug)]
struct Outer<const E: usize, const H: usize> {
    /// `[VOCAB, E]`
    embedding: Vec<f32>,
    /// `[VOCAB, H]`
    head_weight: Vec<f32>,
    /// `[VOCAB]`
    head_bias: Vec<f32>,
}

impl<const E: usize, const H: usize> Outer<E, H> {
    fn zeros() -> Self {
        Outer {
            embedding: vec![0.0; VOCAB * E],
            head_weight: vec![0.0; VOCAB * H],
            head_bias: vec![0.0; VOCAB],
        }
    }

    fn fill(&mut self, value: f32) {
        for t in [&mut self.embedding, &mut self.head_weight, &mut self.head_bias] {
            t.fill(value);
        }
    }
}

/// Embedding → recurrent layer `R` (`E → H`) → linear head over the vocabulary, with its
/// gradients, AdamW state and activations.
#[derive(Debug)]
pub struct RnnLm<R: Recurrent<E, H>, const E: usize, const H: usize> {
    params: Outer<E, H>,
    rnn: R,
    grads: Outer<E, H>,
    rnn_grads: Vec<f32>,
    /// The recurrent layer's tensor sizes, in the order of its flat buffers.
    rnn_lens: Vec<usize>,
    adamw: AdamW,
    threads: Threads,
    // Activations, sized by the batch.
    x: Vec<[f32; E]>,
    dx: Vec<[f32; E]>,
    saved: R::Saved,
    logits: Vec<[f32; VOCAB]>,
    d_output: Vec<[f32; H]>,
    row_loss: Vec<f32>,
}

impl<R: Recurrent<E, H>, const E: usize, const H: usize> RnnLm<R, E, H> {
    /// torch's initialisation from `seed`: embeddings N(0, 1), the recurrent layer and the head
    /// uniform in ±1/√fan_in (the head's bias too).
    pub fn new(seed: u64, config: AdamWConfig, threads: Threads) -> Res<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut params = Outer::zeros();
        params.embedding.iter_mut().for_each(|v| *v = normal(&mut rng));
        let bound = 1.0 / (H as f32).sqrt();
        for v in params.head_weight.iter_mut().chain(&mut params.head_bias) {
            *v = (2.0 * rng.random::<f32>() - 1.0) * bound;
        }
        let rnn = R::init(seed);
        // Matrices and embeddings decay, biases do not (as the transformer's trainer groups them).
        let mut specs = vec![ParamSpec::decay("embedding.weight", VOCAB * E)];
        for t in rnn.tensors() {
            let spec = if t.shape.len() == 2 { ParamSpec::decay } else { ParamSpec::no_decay };
            specs.push(spec(format!("rnn.{}", t.name), t.len()));
        }
        specs.push(ParamSpec::decay("head.weight", VOCAB * H));
        specs.push(ParamSpec::no_decay("head.bias", VOCAB));
        let adamw = AdamW::new(config, &specs)?;
        let rnn_grads = vec![0.0; rnn.params().len()];
        let rnn_lens = rnn.tensors().iter().map(ParamTensor::len).collect();
        Ok(RnnLm {
            params,
            rnn,
            grads: Outer::zeros(),
            rnn_grads,
            rnn_lens,
            adamw,
            threads,
            x: Vec::new(),
            dx: Vec::new(),
            saved: R::Saved::default(),
            logits: Vec::new(),
            d_output: Vec::new(),
            row_loss: Vec::new(),
        })
    }

    /// Every parameter.
    pub fn parameters(&self) -> usize {
        self.params.embedding.len() + self.rnn.params().len() + self.params.head_weight.len() + VOCAB
    }

    /// Embedding, recurrent layer and head: the logits of every row into `self.logits`.
    fn forward(&mut self, examples: &Examples) {
        let batch = &examples.batch;
        let rows = batch.rows();
        self.x.resize(rows, [0.0; E]);
        for (x, &id) in self.x.iter_mut().zip(batch.ids()) {
            x.copy_from_slice(&self.params.embedding[id as usize * E..][..E]);
        }
        self.rnn.forward(&self.x, batch.batch_size(), &mut self.saved, &self.threads);
        self.logits.resize(rows, [0.0; VOCAB]);
        let (weight, bias) = (&self.params.head_weight, &self.params.head_bias);
        linear_train::<H, VOCAB>(R::output(&self.saved), weight, Some(bias), &mut self.logits, &self.threads);
    }

    /// One training step: the loss over the labelled rows, the backward through time, clipping to
    /// `max_norm` and AdamW's update. Returns the loss.
    pub fn step(&mut self, examples: &Examples, lr: f64, max_norm: f32) -> Res<f32> {
        self.forward(examples);
        let rows = examples.batch.rows();
        self.row_loss.resize(rows, 0.0);
        let loss = softmax_cross_entropy(
            self.logits.as_flattened_mut(),
            VOCAB,
            &examples.labels,
            Reduction::Mean,
            &mut self.row_loss,
            &self.threads,
        )?;
        // The logits now hold the loss's gradient.
        self.grads.fill(0.0);
        self.rnn_grads.fill(0.0);
        self.d_output.resize(rows, [0.0; H]);
        self.dx.resize(rows, [0.0; E]);
        linear_backward::<H, VOCAB>(
            R::output(&self.saved),
            &self.logits,
            &self.params.head_weight,
            Some((&mut self.d_output, Store::Overwrite)),
            &mut self.grads.head_weight,
            Some(&mut self.grads.head_bias),
            &self.threads,
        );
        self.rnn.backward(
            &self.x,
            &mut self.saved,
            &self.d_output,
            &mut self.dx,
            &mut self.rnn_grads,
            &self.threads,
        );
        embedding_backward(examples.batch.ids(), &self.dx, &mut self.grads.embedding, None);

        let mut grads = vec![&mut self.grads.embedding[..]];
        grads.extend(split_tensors(&mut self.rnn_grads, &self.rnn_lens));
        grads.push(&mut self.grads.head_weight);
        grads.push(&mut self.grads.head_bias);
        clip_grad_norm_tensors(&mut grads, max_norm).finite()?;
        let grads: Vec<&[f32]> = grads.into_iter().map(|g| &*g).collect();
        let mut params = vec![&mut self.params.embedding[..]];
        params.extend(split_tensors(self.rnn.params_mut(), &self.rnn_lens));
        params.push(&mut self.params.head_weight);
        params.push(&mut self.params.head_bias);
        self.adamw.step_tensors(&mut params, &grads, lr)?;
        Ok(loss.loss)
    }

    /// How many queries of `examples` the model answers right.
    pub fn correct(&mut self, examples: &Examples) -> usize {
        self.forward(examples);
        examples.correct(&self.logits)
    }
}

/// `buffer` cut into one slice per tensor of these lengths (they lie in order, back to back).
fn split_tensors<'a>(mut buffer: &'a mut [f32], lens: &[usize]) -> Vec<&'a mut [f32]> {
    let mut out = Vec::with_capacity(lens.len());
    for &len in lens {
        let (head, rest) = buffer.split_at_mut(len);
        out.push(head);
        buffer = rest;
    }
    out
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
