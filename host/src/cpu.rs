//! The CPU: a rayon thread pool that runs the kernel bodies of `mlff-kernels`.

use crate::error::{invalid_input, Error, Result};
use crate::model::{Model, Weights};
use crate::neighbors::NeighborList;
use crate::structure::Batch;
use std::sync::Arc;

/// Most CPU threads: more than this only costs (each has its own stack and scratch).
pub const MAX_THREADS: usize = 1024;

#[derive(Clone)]
pub struct Cpu {
    pool: Arc<rayon::ThreadPool>,
}

impl std::fmt::Debug for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cpu({} threads)", self.threads())
    }
}

impl Cpu {
    /// A pool of `threads` workers (0: one per core), at most [`MAX_THREADS`].
    pub fn new(threads: usize) -> Result<Self> {
        if threads > MAX_THREADS {
            return invalid_input!("{threads} CPU threads asked for; at most {MAX_THREADS}");
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("mlff-cpu-{i}"))
            .build()
            .map_err(|e| Error::ThreadPool(e.to_string()))?;
        Ok(Cpu { pool: Arc::new(pool) })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `work` inside the pool, so its rayon iterators use these threads.
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }
}

/// Bytes the CPU path keeps per atom: for each of `layers` blocks its input and
/// intermediate states (`per_block` vectors of `width` f32), plus the current state,
/// the adjoint's and the outputs (`20 · width` f32, and 64 bytes of results).
fn bytes_per_atom(width: usize, layers: usize, per_block: usize) -> f64 {
    ((per_block * layers + 20) * width * 4 + 64) as f64
}

/// Refuses, with the numbers, a CPU evaluation of `batch` whose model state would
/// not fit in the available memory (checked after the neighbour list is built, so
/// with its exact edge count, before the model's arrays are allocated).
pub fn check_model_memory(model: &Model, batch: &Batch, list: &NeighborList, forces: bool) -> Result<()> {
    let per_atom = match model.weights() {
        // s, v (4 vectors) at the input and the middle of each block.
        Weights::Student(w) => bytes_per_atom(w.hidden_dim(), w.config.num_interactions, 8),
        // q, μ, the context x and the middle state: 11 vectors a block.
        Weights::Painn(w) => bytes_per_atom(w.features(), w.config.n_interactions, 11),
    };
    // ∂E/∂r of every edge, for the forces and the stress.
    let per_edge = if forces { 12.0 } else { 0.0 };
    let needed = per_atom * batch.num_atoms() as f64 + per_edge * list.num_edges() as f64;
    crate::resources::check_memory(needed, || {
        format!("evaluating {} atoms ({} edges) with this model on the CPU", batch.num_atoms(), list.num_edges())
    })
}
