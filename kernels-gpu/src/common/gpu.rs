//! The GPU kernels every architecture shares: the embedding, ∂E/∂r of each edge from
//! the accumulated edge adjoints (with the atom's virial), the forces, and the
//! per-structure sums.

use super::args::{EdgeGradientArgs, EmbedArgs, ForcesArgs, StructureSumsArgs, STRUCTURE_OUT_WORDS};
use super::edges::warp_row;
use crate::device::gpu;
use crate::geometry::{edge_gradient, edge_vector, shift_vector};
use crate::math::fma;

/// s = embedding[Z], v = 0; one thread per (atom, channel).
#[inline(always)]
pub unsafe fn embed(a: &EmbedArgs) {
    let h = a.hidden as usize;
    let t = gpu::global_id();
    if t >= a.num_atoms as usize * h {
        return;
    }
    let (i, c) = (t / h, t % h);
    *a.s.add(t) = *a.embedding.add(*a.numbers.add(i) as usize * h + c);
    for x in 0..3 {
        *a.v.add((i * 3 + x) * h + c) = 0.0;
    }
}

/// ∂E/∂r of every edge of receiver i from its accumulated [∂E/∂d, ∂E/∂u], and the
/// atom's share of the virial Σ r ⊗ ∂E/∂r (lane partial sums, then a warp sum).
#[inline(always)]
pub unsafe fn edge_gradients(args: &EdgeGradientArgs) {
    let a = &args.rows;
    let Some((i, row)) = warp_row(a.row_ptr, a.num_atoms, a.edge_capacity) else { return };
    let cell = (*a.records.add(*a.structure_of.add(i) as usize)).cell;
    let ri = *a.positions.add(i);
    let mut virial = [0.0f32; 9];
    let mut e = row.start + gpu::lane_id();
    while e < row.end {
        let j = *a.src.add(e) as usize;
        let (r, d) = edge_vector(ri, *a.positions.add(j), shift_vector(*a.shift.add(e), &cell));
        let mut adj = [0.0f32; 4];
        for g in 0..a.groups as usize {
            let part = *args.edge_adjoint.add(g * a.edge_capacity as usize + e);
            for q in 0..4 {
                adj[q] += part[q];
            }
        }
        let grad = if d <= a.cutoff {
            edge_gradient(r, d, adj[0], [adj[1], adj[2], adj[3]], a.unit_epsilon)
        } else {
            [0.0; 3]
        };
        *args.edge_grad.add(e) = [grad[0], grad[1], grad[2], 0.0];
        for x in 0..3 {
            for y in 0..3 {
                virial[3 * x + y] = fma(r[x], grad[y], virial[3 * x + y]);
            }
        }
        e += 32;
    }
    let virial = virial.map(gpu::warp_reduce_sum);
    if gpu::lane_id() == 0 {
        *args.atom_virial.add(i) = virial;
    }
}

/// F_i = Σ_{e in row i} (∂E/∂r_e − ∂E/∂r_rev(e)), since r_e = R_j − R_i; and, where
/// `pair_virial` is given, ½ Σ_{e in row i} r_e ⊗ (∂E/∂r_e − ∂E/∂r_rev(e)): atom i's
/// half of each edge it receives (r_e ⊗ ∂E/∂r_e) and of each it sends (the reverse
/// edge, r_rev = −r_e).
#[inline(always)]
pub unsafe fn forces(a: &ForcesArgs) {
    let Some((i, row)) = warp_row(a.row_ptr, a.num_atoms, a.edge_capacity) else { return };
    // Uniform over the warp, so every lane takes part in the reductions below.
    let split_virial = !a.pair_virial.is_null();
    let mut f = [0.0f32; 3];
    let mut virial = [0.0f32; 9];
    let mut e = row.start + gpu::lane_id();
    while e < row.end {
        let (g, back) = (*a.edge_grad.add(e), *a.edge_grad.add(*a.reverse.add(e) as usize));
        let net: [f32; 3] = core::array::from_fn(|x| g[x] - back[x]);
        for x in 0..3 {
            f[x] += net[x];
        }
        if split_virial {
            let cell = (*a.records.add(*a.structure_of.add(i) as usize)).cell;
            let j = *a.src.add(e) as usize;
            let (r, _) = edge_vector(*a.positions.add(i), *a.positions.add(j), shift_vector(*a.shift.add(e), &cell));
            for x in 0..3 {
                for y in 0..3 {
                    virial[3 * x + y] = fma(r[x], net[y], virial[3 * x + y]);
                }
            }
        }
        e += 32;
    }
    let f = f.map(gpu::warp_reduce_sum);
    if gpu::lane_id() == 0 {
        *a.forces.add(i) = f;
    }
    if split_virial {
        let virial = virial.map(gpu::warp_reduce_sum);
        if gpu::lane_id() == 0 {
            *a.pair_virial.add(i) = virial.map(|x| 0.5 * x);
        }
    }
}

/// One block per structure: energy and virial summed in f64, in a fixed order.
/// Shared memory: `STRUCTURE_OUT_WORDS` f64 per thread.
#[inline(always)]
pub unsafe fn structure_sums(a: &StructureSumsArgs) {
    let s = gpu::block_idx();
    if s >= a.num_structures as usize {
        return;
    }
    let rec = &*a.records.add(s);
    let t = gpu::thread_idx();
    let threads = gpu::block_dim();
    let mut acc = [0.0f64; STRUCTURE_OUT_WORDS];
    let mut i = rec.atom_start as usize + t;
    while i < rec.atom_end as usize {
        acc[0] += *a.atom_energy.add(i) as f64;
        if !a.atom_virial.is_null() {
            let w = *a.atom_virial.add(i);
            for q in 0..9 {
                acc[1 + q] += w[q] as f64;
            }
        }
        i += threads;
    }
    let total = gpu::block_sum_f64(acc);
    if t == 0 {
        for (q, x) in total.iter().enumerate() {
            *a.structure_out.add(s * STRUCTURE_OUT_WORDS + q) = *x;
        }
    }
}
