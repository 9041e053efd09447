//! The reusable scratch memory of a forward pass.
//!
//! A forward pass needs a handful of activation buffers whose sizes depend on the static widths and
//! on the batch's rows. They are carved out of one arena that only ever grows, so after the first call
//! at a given batch shape (or any smaller one) a forward pass allocates nothing.

/// Scratch memory for forward passes; keep one per thread and reuse it.
#[derive(Debug, Default)]
pub struct Workspace {
    arena: Vec<f32>,
    growths: usize,
}

impl Workspace {
    /// An empty workspace; it grows on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Disjoint zero-initialised-on-growth buffers of the given lengths (contents are whatever the
    /// previous pass left: callers overwrite before reading).
    pub fn carve<const K: usize>(&mut self, sizes: [usize; K]) -> [&mut [f32]; K] {
        let total: usize = sizes.iter().sum();
        if self.arena.len() < total {
            self.growths += 1;
            self.arena.resize(total, 0.0);
        }
        let mut rest: &mut [f32] = &mut self.arena[..total];
        std::array::from_fn(|i| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(sizes[i]);
            rest = tail;
            head
        })
    }

    /// How many times the workspace had to grow (a test hook for "no allocation after warm-up").
    pub fn growths(&self) -> usize {
        self.growths
    }

    /// Floats currently reserved.
    pub fn capacity(&self) -> usize {
        self.arena.len()
    }
}

/// Workspaces a model keeps for its convenience methods (`forward`, `embed`), one per concurrent
/// caller, so that repeated calls reuse memory and several threads can share one model.
#[derive(Debug, Default)]
pub struct WorkspacePool {
    free: std::sync::Mutex<Vec<Workspace>>,
}

impl WorkspacePool {
    /// Runs `f` with a workspace taken from the pool (or a new one), then returns it to the pool.
    pub fn with<R>(&self, f: impl FnOnce(&mut Workspace) -> R) -> R {
        // A panic in another caller cannot leave a workspace half-valid (buffers are overwritten
        // before being read), so a poisoned lock is still usable.
        let taken = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut ws = taken.unwrap_or_default();
        let result = f(&mut ws);
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(ws);
        result
    }
}
