//! A block's ops as a trainer runs them. The inference forward overwrites its scratch values and
//! updates the stream in place; a backward needs what each op read. So every value an op writes
//! gets a fresh *version* here (`x_0`, `x_1`, `qkv_0`, …), each its own saved buffer, and each op
//! becomes a [`Step`] over versions. The backward walks the steps in reverse with one gradient
//! buffer per version. An op without a backward is an error naming it, never skipped.

use crate::graph::{Block, Index, Op, Value, Window};
use crate::spec::Activation;

/// One version of a value: its buffer's name and width.
#[derive(Clone, Debug)]
pub struct Version {
    /// The value's name (`x`, `qkv`, …): the buffer is `{value}_{k}` for its k-th version.
    pub value: &'static str,
    pub name: String,
    pub width: usize,
    /// The value is the block's output (a head's logits): its gradient comes from the caller.
    pub output: bool,
}

/// One op over versions (indices into [`Plan::versions`]).
#[derive(Clone, Debug)]
pub enum Step {
    /// `out = act(input·Wᵀ + b)`; `pre` keeps the pre-activation when there is an activation.
    Linear {
        field: &'static str,
        input: usize,
        pre: Option<(usize, Activation)>,
        output: usize,
    },
    Norm {
        field: &'static str,
        input: usize,
        output: usize,
        stats: usize,
    },
    /// `sum = stream + sublayer`, `output = norm(sum)`.
    AddNorm {
        field: &'static str,
        stream: usize,
        sublayer: usize,
        sum: usize,
        output: usize,
        stats: usize,
    },
    Add {
        stream: usize,
        sublayer: usize,
        output: usize,
    },
    Attention {
        qkv: usize,
        output: usize,
        lse: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        causal: bool,
        window: Option<usize>,
        scale: f32,
    },
    Rope {
        field: &'static str,
        input: usize,
        output: usize,
        heads: usize,
        kv_heads: usize,
    },
    Glu {
        input: usize,
        output: usize,
        act: Activation,
    },
    Gather {
        field: &'static str,
        index: Index,
        offset: usize,
        input: Option<usize>,
        output: usize,
    },
    Scale {
        input: usize,
        output: usize,
        factor: f32,
    },
    Activation {
        input: usize,
        output: usize,
        act: Activation,
    },
    /// `output = dropout(input)` with the trainer's probability (a copy when it is 0); `site`
    /// numbers the block's dropouts, so each draws its own stream.
    Dropout {
        input: usize,
        output: usize,
        site: usize,
    },
}

/// A block's training plan.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub versions: Vec<Version>,
    pub steps: Vec<Step>,
    /// Norm statistics buffers (one per norm step).
    pub stats: usize,
    /// Log-sum-exp buffers: the heads of each attention step.
    pub lse: Vec<usize>,
    /// The stream's version on entry (`None`: the block starts the stream, as embeddings do, or
    /// does not read it).
    pub input: Option<usize>,
    /// The stream's version on exit, when the block writes the stream.
    pub last_stream: Option<usize>,
    /// The block's output value's version (a head's logits).
    pub output: Option<usize>,
    /// Dropout steps (each with a saved mask).
    pub dropouts: usize,
}

impl Plan {
    fn version(&mut self, value: Value, output: bool) -> usize {
        let k = self.versions.iter().filter(|v| v.value == value.name).count();
        self.versions.push(Version {
            value: value.name,
            name: format!("{}_{k}", value.name),
            width: value.width,
            output,
        });
        self.versions.len() - 1
    }
}

/// The latest version of each value while the ops are walked.
struct Walk<'b> {
    block: &'b Block,
    plan: Plan,
    current: Vec<(&'static str, usize)>,
}

impl Walk<'_> {
    /// The version an op reads: the latest, or the block's input for the stream.
    fn read(&mut self, value: Value) -> Result<usize, String> {
        if let Some(&(_, v)) = self.current.iter().rev().find(|(n, _)| *n == value.name) {
            return Ok(v);
        }
        if value.is_stream() {
            let v = self.plan.version(value, false);
            self.plan.input = Some(v);
            self.current.push((value.name, v));
            return Ok(v);
        }
        Err(format!("`{}` is read before any op writes it", value.name))
    }

    /// A new version of `value`, now its latest.
    fn write(&mut self, value: Value) -> usize {
        let output = Some(value) == self.block.output;
        let v = self.plan.version(value, output);
        self.current.push((value.name, v));
        if value.is_stream() {
            self.plan.last_stream = Some(v);
        }
        if output {
            self.plan.output = Some(v);
        }
        v
    }

    /// A version that only the plan names (a residual sum before its norm).
    fn temporary(&mut self, name: &'static str, width: usize) -> usize {
        self.plan.version(Value { name, width }, false)
    }
}

/// Where a block drops activations out while training (GPT-2's `embd_pdrop` / `resid_pdrop`,
/// BERT's `hidden_dropout_prob`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropouts {
    None,
    /// Each sublayer's output, before it is added to the stream.
    Residual,
    /// The stream the block hands on (the embeddings' output).
    Output,
}

/// The plan of `block`'s ops, or what has no backward yet.
pub fn plan(block: &Block, dropouts: Dropouts) -> Result<Plan, String> {
    let mut w = Walk { block, plan: Plan::default(), current: Vec::new() };
    for op in &block.ops {
        if dropouts == Dropouts::Residual {
            if let Op::Add { sublayer, .. } | Op::AddNorm { sublayer, .. } = *op {
                w.drop_out(sublayer)?;
            }
        }
        let step = step(&mut w, op)?;
        w.plan.steps.push(step);
    }
    if dropouts == Dropouts::Output {
        let stream =
            w.plan.last_stream.map(|v| Value { name: crate::graph::STREAM, width: w.plan.versions[v].width });
        if let Some(stream) = stream {
            w.drop_out(stream)?;
        }
    }
    Ok(w.plan)
}

impl Walk<'_> {
    /// A dropout of `value`'s latest version into a new one.
    fn drop_out(&mut self, value: Value) -> Result<(), String> {
        let input = self.read(value)?;
        let output = self.write(value);
        self.plan.steps.push(Step::Dropout { input, output, site: self.plan.dropouts });
        self.plan.dropouts += 1;
        Ok(())
    }
}

fn step(w: &mut Walk<'_>, op: &Op) -> Result<Step, String> {
    Ok(match *op {
        Op::Linear { field, input, output, act } => {
            let input = w.read(input)?;
            let pre = act.map(|a| (w.temporary("pre_activation", output.width), a));
            Step::Linear { field, input, pre, output: w.write(output) }
        }
        Op::Norm { field, input, output } => {
            let input = w.read(input)?;
            w.plan.stats += 1;
            Step::Norm { field, input, output: w.write(output), stats: w.plan.stats - 1 }
        }
        Op::AddNorm { field, stream, sublayer } => {
            let (s, u) = (w.read(stream)?, w.read(sublayer)?);
            let sum = w.temporary("residual_sum", stream.width);
            w.plan.stats += 1;
            Step::AddNorm {
                field,
                stream: s,
                sublayer: u,
                sum,
                output: w.write(stream),
                stats: w.plan.stats - 1,
            }
        }
        Op::Add { stream, sublayer } => {
            let (s, u) = (w.read(stream)?, w.read(sublayer)?);
            Step::Add { stream: s, sublayer: u, output: w.write(stream) }
        }
        Op::Attention { qkv, output, heads, kv_heads, head_dim, causal, window, sparse, bias, scaled } => {
            if bias {
                return Err(
                    "the attention's position bias (relative buckets or ALiBi) has no gradient yet".into()
                );
            }
            if sparse != crate::graph::Layouts::Dense {
                return Err("block-sparse attention has no backward yet".into());
            }
            let window = match window {
                Window::Global => None,
                Window::Fixed(w) => Some(w),
                Window::PerLayer(_) => {
                    return Err("attention windows that differ by layer have no backward yet".into())
                }
            };
            let qkv = w.read(qkv)?;
            w.plan.lse.push(heads);
            let scale = if scaled { (1.0 / (head_dim as f64).sqrt()) as f32 } else { 1.0 };
            let lse = w.plan.lse.len() - 1;
            Step::Attention {
                qkv,
                output: w.write(output),
                lse,
                heads,
                kv_heads,
                head_dim,
                causal,
                window,
                scale,
            }
        }
        Op::Rope { field, qkv, heads, kv_heads } => {
            let input = w.read(qkv)?;
            Step::Rope { field, input, output: w.write(qkv), heads, kv_heads }
        }
        Op::Glu { input, output, act } => {
            let input = w.read(input)?;
            Step::Glu { input, output: w.write(output), act }
        }
        Op::Gather { field, index, output, accumulate, offset } => {
            let input = if accumulate { Some(w.read(output)?) } else { None };
            Step::Gather { field, index, offset, input, output: w.write(output) }
        }
        Op::Scale { value, factor } => {
            let input = w.read(value)?;
            Step::Scale { input, output: w.write(value), factor: factor as f32 }
        }
        Op::Activation { value, act } => {
            let input = w.read(value)?;
            Step::Activation { input, output: w.write(value), act }
        }
        Op::CrossAttention { .. } => return Err("cross-attention has no backward yet".into()),
        Op::AdditiveCross { .. } => return Err("additive cross-attention has no backward yet".into()),
        Op::Concat { .. } => return Err("a concatenation has no backward yet".into()),
        Op::Slice { .. } => return Err("a slice has no backward yet".into()),
        Op::LshAttention { .. } => return Err("LSH attention has no backward yet".into()),
        Op::LocalAttention { .. } => return Err("chunked local attention has no backward yet".into()),
        Op::Patches { .. } => return Err("the image patch embedding has no backward yet".into()),
    })
}
