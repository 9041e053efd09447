//! Thread control. A model runs its row-block and (sequence × query-block) loops through [`Threads`],
//! which is either sequential (one thread: no rayon at all, so no task allocation either) or a rayon
//! pool of a chosen size.

use std::sync::Arc;

use rayon::prelude::*;

use crate::{Error, Result};

/// How many threads a forward pass uses.
#[derive(Clone, Debug, Default)]
pub struct Threads {
    /// `None`: run on the calling thread.
    pool: Option<Arc<rayon::ThreadPool>>,
}

impl Threads {
    /// Everything on the calling thread.
    pub fn sequential() -> Self {
        Self { pool: None }
    }

    /// A pool of exactly `n` threads (`n == 1` is [`Threads::sequential`]).
    pub fn new(n: usize) -> Result<Self> {
        if n <= 1 {
            return Ok(Self::sequential());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| Error::ThreadPool { threads: n, reason: e.to_string() })?;
        Ok(Self { pool: Some(Arc::new(pool)) })
    }

    /// One thread per available core.
    pub fn all_cores() -> Result<Self> {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Number of threads work is spread over.
    pub fn count(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Calls `f(index, chunk)` for every `chunk_len`-sized chunk of `data` (the last may be shorter),
    /// in parallel when there is a pool.
    pub fn for_each_chunk<T, F>(&self, data: &mut [T], chunk_len: usize, f: F)
    where
        T: Send,
        F: Fn(usize, &mut [T]) + Send + Sync,
    {
        let chunk_len = chunk_len.max(1);
        match &self.pool {
            None => data.chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c)),
            Some(pool) => pool.install(|| {
                data.par_chunks_mut(chunk_len).enumerate().for_each(|(i, c)| f(i, c));
            }),
        }
    }

    /// Like [`Threads::for_each_chunk`] over two slices chunked in step: chunk `i` of `a` has
    /// `a_len` elements and chunk `i` of `b` has `b_len`.
    pub fn for_each_chunk_pair<A, B, F>(&self, a: &mut [A], a_len: usize, b: &mut [B], b_len: usize, f: F)
    where
        A: Send,
        B: Send,
        F: Fn(usize, &mut [A], &mut [B]) + Send + Sync,
    {
        let (a_len, b_len) = (a_len.max(1), b_len.max(1));
        match &self.pool {
            None => {
                a.chunks_mut(a_len).zip(b.chunks_mut(b_len)).enumerate().for_each(|(i, (x, y))| f(i, x, y))
            }
            Some(pool) => pool.install(|| {
                a.par_chunks_mut(a_len)
                    .zip(b.par_chunks_mut(b_len))
                    .enumerate()
                    .for_each(|(i, (x, y))| f(i, x, y));
            }),
        }
    }

    /// Runs `a` and `b` and returns both results: in parallel (`rayon::join`) when there is a pool,
    /// one after the other on the calling thread otherwise. Nests: calling it from inside `a` or
    /// `b` splits further on the same pool, which is how a task tree of any width is built without
    /// allocating a task list.
    pub fn join<A, B, RA, RB>(&self, a: A, b: B) -> (RA, RB)
    where
        A: FnOnce() -> RA + Send,
        B: FnOnce() -> RB + Send,
        RA: Send,
        RB: Send,
    {
        match &self.pool {
            None => (a(), b()),
            Some(pool) => pool.install(|| rayon::join(a, b)),
        }
    }
}
