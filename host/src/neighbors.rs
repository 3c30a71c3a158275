//! Neighbour search on the CPU: cell lists, O(N), for molecules and periodic
//! triclinic cells (mixed periodicity, cells smaller than the cutoff), batched.
//!
//! Binning is done in fractional coordinates of the cell (Cartesian for molecules), with
//! bins at least a (slightly enlarged) cutoff apart along each lattice-plane normal, so
//! every neighbour lies in a bin within ±m of the atom's own. Binning only proposes
//! candidates; whether a pair is an edge is decided by the canonical f32 edge vector of
//! `kernels::geometry`, the same formula the model and the GPU use, so the edge set is
//! defined by that formula alone and is symmetric bit for bit.

use crate::error::{invalid_input, Error, Result};
use crate::structure::{inverse, plane_spacing, Batch};
use mlff_kernels::geometry::{edge_vector, shift_vector};
use rayon::prelude::*;

/// Pairs closer than this are rejected: the model's gradient is singular at d = 0.
pub const MIN_DISTANCE: f32 = 1e-4;

/// Most bins (periodic images of the cell included) the search may visit around one
/// atom. A cell much smaller or thinner than the cutoff needs more: each is a
/// periodic image within reach, and the search (and the edge list) grows with them.
pub const MAX_VISITED_BINS: f64 = (1u64 << 20) as f64;

/// Most neighbours per atom a periodic structure may have within the cutoff: dense
/// matter has about 0.1 atoms/Å³, 11,000 neighbours at a 30 Å cutoff.
pub const MAX_NEIGHBORS_PER_ATOM: f64 = 5.0e4;

/// Most candidate pairs the search may examine in one batch (about 4 × 2³²: beyond,
/// the edges alone would overflow the 32-bit edge indices).
pub const MAX_CANDIDATE_PAIRS: f64 = 1.7e10;

/// Bytes the CPU neighbour list needs per edge while it is built: the per-row
/// candidates (32) and the final arrays (source, shift, geometry, reverse: 36), at
/// the moment both are held.
pub const CPU_BYTES_PER_EDGE: usize = 68;

/// Every ordered pair (j → i) with d ≤ cutoff, grouped by receiver i (CSR), in a
/// deterministic order: within a row, by sender j, then by image shift.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NeighborList {
    /// `row_ptr[i]..row_ptr[i + 1]` are the edges of receiver i.
    pub row_ptr: Vec<u32>,
    /// Sender j of each edge.
    pub src: Vec<u32>,
    /// Image shift S of each edge: r = R_j + S·cell − R_i.
    pub shift: Vec<[i32; 3]>,
    /// `[r_x, r_y, r_z, d]` of each edge.
    pub geom: Vec<[f32; 4]>,
    /// Index of the reverse edge (i → j, −S) of each edge.
    pub reverse: Vec<u32>,
}

impl NeighborList {
    pub fn num_edges(&self) -> usize {
        self.src.len()
    }

    pub fn row(&self, i: usize) -> std::ops::Range<usize> {
        self.row_ptr[i] as usize..self.row_ptr[i + 1] as usize
    }
}

/// Cutoff of the binning, a little larger than the model's so that f32 rounding of a
/// pair at d ≈ rc can never put it outside the searched bins.
fn binning_cutoff(cutoff: f32) -> f64 {
    cutoff as f64 * (1.0 + 1e-4) + 1e-4
}

/// One axis of the bin grid.
#[derive(Clone, Copy, Debug)]
struct Axis {
    periodic: bool,
    bins: usize,
    /// Fractional coordinate of the lower edge and the width of a bin.
    origin: f64,
    width: f64,
    /// Bins searched on each side.
    reach: i64,
}

/// Per-structure bin grid: each atom's bin and integer wrap, and bin contents.
struct Grid {
    axes: [Axis; 3],
    /// floor(fractional) along periodic axes (0 elsewhere).
    wrap: Vec<[i32; 3]>,
    bin_of: Vec<[i64; 3]>,
    bin_start: Vec<u32>,
    bin_atoms: Vec<u32>,
}

/// Fractional coordinates (Cartesian for a molecule) in f64.
fn fractional(positions: &[[f32; 3]], cell: Option<&[[f64; 3]; 3]>) -> Vec<[f64; 3]> {
    match cell {
        None => positions.iter().map(|p| p.map(|x| x as f64)).collect(),
        Some(cell) => {
            let inv = inverse(cell);
            positions.iter().map(|p| std::array::from_fn(|a| (0..3).map(|k| p[k] as f64 * inv[k][a]).sum())).collect()
        }
    }
}

/// The bin grid's axes of one structure: bins at least `cutoff` apart along each
/// plane normal, and how many to search on each side.
fn grid_axes(frac: &[[f64; 3]], cell: Option<&[[f64; 3]; 3]>, pbc: [bool; 3], cutoff: f64) -> [Axis; 3] {
    let n = frac.len();
    // Distance between adjacent lattice planes per unit of fractional coordinate.
    let spacing: [f64; 3] = match cell {
        None => [1.0; 3],
        Some(cell) => plane_spacing(&inverse(cell)),
    };
    let mut axes: [Axis; 3] = std::array::from_fn(|a| {
        if pbc[a] {
            Axis {
                periodic: true,
                bins: ((spacing[a] / cutoff).floor() as usize).max(1),
                origin: 0.0,
                width: 1.0,
                reach: 1,
            }
        } else {
            let lo = frac.iter().map(|f| f[a]).fold(f64::INFINITY, f64::min);
            let hi = frac.iter().map(|f| f[a]).fold(f64::NEG_INFINITY, f64::max);
            let extent = if n == 0 { 0.0 } else { (hi - lo) * spacing[a] };
            Axis {
                periodic: false,
                bins: ((extent / cutoff).floor() as usize).max(1),
                origin: if n == 0 { 0.0 } else { lo },
                width: 1.0,
                reach: 1,
            }
        }
    });
    // Keep the grid within a few bins per atom (sparse boxes): fewer, larger bins are
    // still correct, they only propose more candidates.
    let limit = 2 * n + 8;
    // Saturating: an atom far out (a diverging MD run) may ask for ~usize::MAX bins.
    while axes.iter().fold(1usize, |p, a| p.saturating_mul(a.bins)) > limit {
        let a = (0..3).max_by_key(|&a| axes[a].bins).unwrap_or(0);
        axes[a].bins = axes[a].bins.div_ceil(2);
    }
    for a in 0..3 {
        let axis = &mut axes[a];
        if axis.periodic {
            axis.width = 1.0 / axis.bins as f64;
        } else {
            let hi = frac.iter().map(|f| f[a]).fold(f64::NEG_INFINITY, f64::max);
            let extent = if n == 0 { 0.0 } else { hi - axis.origin };
            axis.width = (extent / axis.bins as f64).max(f64::MIN_POSITIVE);
        }
        // Bins to search on each side: enough to cover the cutoff along the plane normal.
        let plane_width = axis.width * spacing[a];
        // In f64 and clamped: a needle-thin cell would otherwise overflow the i64.
        axis.reach = if axis.periodic || axis.bins > 1 {
            (cutoff / plane_width).ceil().clamp(1.0, i64::MAX as f64 / 4.0) as i64
        } else {
            0
        };
    }
    axes
}

/// Bins visited around one atom: every periodic image within reach, and the grid's
/// own bins along open axes.
fn visited_bins(axes: &[Axis; 3]) -> f64 {
    axes.iter()
        .map(|a| {
            let span = 2.0 * a.reach as f64 + 1.0;
            if a.periodic {
                span
            } else {
                span.min(a.bins as f64)
            }
        })
        .product()
}

/// The size of a batch's neighbour search, estimated before anything is allocated.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SearchEstimate {
    /// Most bins (periodic images included) visited around one atom, over the structures.
    pub visited_bins_per_atom: f64,
    /// Candidate pairs examined: atoms × visited bins × mean atoms per bin, summed.
    pub candidate_pairs: f64,
}

/// Estimates the search of `batch` at `cutoff` and refuses, with the numbers, one
/// that cannot finish in bounded time and memory: a cell far smaller or thinner
/// than the cutoff (too many periodic images), a density that gives an absurd
/// number of neighbours, too many pairs in all. The CPU and GPU searches share it.
pub fn check_search(batch: &Batch, cutoff: f32) -> Result<SearchEstimate> {
    if !(cutoff > 0.0 && cutoff.is_finite()) {
        return invalid_input!("cutoff {cutoff} must be positive and finite");
    }
    let bin_cutoff = binning_cutoff(cutoff);
    let sphere = 4.0 / 3.0 * std::f64::consts::PI * (cutoff as f64).powi(3);
    let mut estimate = SearchEstimate::default();
    for s in 0..batch.num_structures() {
        let range = batch.offsets[s]..batch.offsets[s + 1];
        let n = range.len() as f64;
        let cell = batch.cells64[s].as_ref();
        let pbc = batch.pbc[s];
        if range.is_empty() {
            continue;
        }
        if let Some(c) = cell.filter(|_| pbc.iter().all(|&p| p)) {
            let volume = crate::structure::determinant(c).abs();
            let neighbors = n * sphere / volume;
            if neighbors > MAX_NEIGHBORS_PER_ATOM {
                return invalid_input!(
                    "structure {s}: {} atoms in a cell of {volume:.3e} Å³ ({:.3e} atoms/Å³) give about \
                     {neighbors:.2e} neighbours per atom within the {cutoff} Å cutoff (at most \
                     {MAX_NEIGHBORS_PER_ATOM:.0e}; dense matter has about 0.1 atoms/Å³); check the cell",
                    range.len(),
                    n / volume
                );
            }
        }
        let frac = fractional(&batch.positions[range.clone()], cell);
        let axes = grid_axes(&frac, cell, pbc, bin_cutoff);
        let bins = visited_bins(&axes);
        if bins > MAX_VISITED_BINS {
            let spacing = cell.map_or([f64::NAN; 3], |c| plane_spacing(&inverse(c)));
            return invalid_input!(
                "structure {s}: the cell is too small or too thin for the {cutoff} Å cutoff: its lattice planes \
                 are {:.3e}, {:.3e} and {:.3e} Å apart, so the neighbour search would visit {bins:.2e} periodic \
                 images around every atom (at most {MAX_VISITED_BINS:.0e}); check the cell",
                spacing[0],
                spacing[1],
                spacing[2]
            );
        }
        let grid_bins: f64 = axes.iter().map(|a| a.bins as f64).product();
        estimate.visited_bins_per_atom = estimate.visited_bins_per_atom.max(bins);
        estimate.candidate_pairs += n * bins * (n / grid_bins);
    }
    if estimate.candidate_pairs > MAX_CANDIDATE_PAIRS {
        return invalid_input!(
            "the neighbour search of this batch would examine about {:.2e} atom pairs (at most {:.1e}): \
             too many atoms too close together; split the batch or check the cells",
            estimate.candidate_pairs,
            MAX_CANDIDATE_PAIRS
        );
    }
    Ok(estimate)
}

fn build_grid(frac: &[[f64; 3]], cell: Option<&[[f64; 3]; 3]>, pbc: [bool; 3], cutoff: f64) -> Grid {
    let n = frac.len();
    let axes = grid_axes(frac, cell, pbc, cutoff);
    let mut wrap = vec![[0i32; 3]; n];
    let mut bin_of = vec![[0i64; 3]; n];
    for i in 0..n {
        for a in 0..3 {
            let axis = &axes[a];
            let mut f = frac[i][a];
            if axis.periodic {
                let k = f.floor();
                wrap[i][a] = k as i32;
                f -= k;
            }
            let b = ((f - axis.origin) / axis.width).floor() as i64;
            bin_of[i][a] = b.clamp(0, axis.bins as i64 - 1);
        }
    }
    // Counting sort of atoms by bin.
    let nbins: usize = axes.iter().map(|a| a.bins).product();
    let linear = |b: &[i64; 3]| ((b[0] as usize * axes[1].bins) + b[1] as usize) * axes[2].bins + b[2] as usize;
    let mut bin_start = vec![0u32; nbins + 1];
    for b in &bin_of {
        bin_start[linear(b) + 1] += 1;
    }
    for k in 0..nbins {
        bin_start[k + 1] += bin_start[k];
    }
    let mut fill = bin_start.clone();
    let mut bin_atoms = vec![0u32; n];
    for (i, b) in bin_of.iter().enumerate() {
        let slot = &mut fill[linear(b)];
        bin_atoms[*slot as usize] = i as u32;
        *slot += 1;
    }
    Grid { axes, wrap, bin_of, bin_start, bin_atoms }
}

/// One edge of a row: sender, image shift, [r, d].
type RowEntry = (u32, [i32; 3], [f32; 4]);

/// Candidate edges of one receiver, checked against the canonical edge vector.
#[allow(clippy::too_many_arguments)]
fn row_of(
    i: usize,
    grid: &Grid,
    positions: &[[f32; 3]],
    cell32: &[f32; 9],
    cutoff: f32,
    offset: usize,
    structure: usize,
    budget: &EdgeBudget,
) -> Result<Vec<RowEntry>> {
    let axes = &grid.axes;
    let mut row = Vec::new();
    let home = grid.bin_of[i];
    let range = |a: usize| -axes[a].reach..=axes[a].reach;
    for o0 in range(0) {
        for o1 in range(1) {
            for o2 in range(2) {
                let offsets = [o0, o1, o2];
                let mut bin = [0usize; 3];
                let mut image = [0i32; 3];
                let mut inside = true;
                for a in 0..3 {
                    let b = home[a] + offsets[a];
                    let nb = axes[a].bins as i64;
                    if axes[a].periodic {
                        bin[a] = b.rem_euclid(nb) as usize;
                        image[a] = b.div_euclid(nb) as i32;
                    } else if (0..nb).contains(&b) {
                        bin[a] = b as usize;
                    } else {
                        inside = false;
                    }
                }
                if !inside {
                    continue;
                }
                let linear = (bin[0] * axes[1].bins + bin[1]) * axes[2].bins + bin[2];
                let members = grid.bin_start[linear] as usize..grid.bin_start[linear + 1] as usize;
                for &j in &grid.bin_atoms[members] {
                    let j = j as usize;
                    let shift: [i32; 3] = std::array::from_fn(|a| image[a] - grid.wrap[j][a] + grid.wrap[i][a]);
                    if j == i && shift == [0; 3] {
                        continue;
                    }
                    let (r, d) = edge_vector(positions[i], positions[j], shift_vector(shift, cell32));
                    if d <= cutoff {
                        if d < MIN_DISTANCE {
                            return if i == j {
                                invalid_input!(
                                    "structure {structure}: atom {i} and its own periodic image {shift:?} are \
                                     {d:.2e} Å apart (a lattice vector that short); atoms on top of each other \
                                     have no defined forces"
                                )
                            } else {
                                // Lowest first (with the image as seen from it): rows are
                                // searched in parallel, and whichever of the pair's two rows
                                // fails first must not change the message.
                                let (a, b, image) = if i < j { (i, j, shift) } else { (j, i, shift.map(|x| -x)) };
                                invalid_input!(
                                    "structure {structure}: atoms {a} and {b} are {d:.2e} Å apart (image \
                                     {image:?}); atoms on top of each other have no defined forces"
                                )
                            };
                        }
                        row.push(((offset + j) as u32, shift, [r[0], r[1], r[2], d]));
                    }
                }
            }
        }
    }
    budget.take(row.len())?;
    row.sort_unstable_by_key(|e| (e.0, e.1));
    Ok(row)
}

/// The edges the CPU search may still find: the memory available and the 32-bit
/// edge indices bound it. Rows take from it as they are found, so a search that
/// would exhaust the memory stops with the numbers instead.
#[derive(Default)]
struct EdgeBudget {
    found: std::sync::atomic::AtomicUsize,
    /// The limit and the memory it came from, asked for once the list is large.
    limit: std::sync::OnceLock<Result<(usize, Option<u64>), String>>,
}

impl EdgeBudget {
    fn limit(&self) -> Result<(usize, Option<u64>)> {
        self.limit
            .get_or_init(|| {
                let available = crate::resources::available_memory().map_err(|e| e.to_string())?;
                let by_memory = available.map_or(usize::MAX, |b| (b / CPU_BYTES_PER_EDGE as u64) as usize);
                Ok((by_memory.min(u32::MAX as usize), available))
            })
            .clone()
            .map_err(Error::InvalidInput)
    }

    fn take(&self, edges: usize) -> Result<()> {
        let total = self.found.fetch_add(edges, std::sync::atomic::Ordering::Relaxed) + edges;
        if (total * CPU_BYTES_PER_EDGE) as f64 <= crate::resources::UNCHECKED_BYTES {
            return Ok(());
        }
        let (limit, available) = self.limit()?;
        if total <= limit {
            return Ok(());
        }
        let memory = crate::resources::human_bytes((total * CPU_BYTES_PER_EDGE) as f64);
        match available {
            Some(a) if limit < u32::MAX as usize => invalid_input!(
                "the neighbour list needs more than {total} edges, more than {memory} of memory; {} are \
                 available (set {} to change the limit); split the batch",
                crate::resources::human_bytes(a as f64),
                crate::resources::MEMORY_LIMIT_ENV
            ),
            _ => invalid_input!("more than {total} edges exceed the engine's 32-bit edge indices; split the batch"),
        }
    }
}

/// The neighbour list of a whole batch (structures never see each other).
pub fn neighbor_list(batch: &Batch, cutoff: f32) -> Result<NeighborList> {
    check_search(batch, cutoff)?;
    let budget = EdgeBudget::default();
    let bin_cutoff = binning_cutoff(cutoff);
    // Rows of every atom, structure by structure (each parallel over its atoms).
    let mut rows: Vec<Vec<RowEntry>> = Vec::with_capacity(batch.num_atoms());
    for s in 0..batch.num_structures() {
        let range = batch.offsets[s]..batch.offsets[s + 1];
        let positions = &batch.positions[range.clone()];
        let cell = batch.cells64[s].as_ref();
        let frac = fractional(positions, cell);
        let grid = build_grid(&frac, cell, batch.pbc[s], bin_cutoff);
        let structure_rows: Result<Vec<_>> = (0..positions.len())
            .into_par_iter()
            .map(|i| row_of(i, &grid, positions, &batch.cells[s], cutoff, range.start, s, &budget))
            .collect();
        rows.extend(structure_rows?);
    }
    let num_edges: usize = rows.iter().map(|r| r.len()).sum();
    if num_edges > u32::MAX as usize {
        return invalid_input!("{num_edges} edges exceed the engine's 32-bit edge indices; split the batch");
    }
    let mut list = NeighborList {
        row_ptr: Vec::with_capacity(rows.len() + 1),
        src: Vec::with_capacity(num_edges),
        shift: Vec::with_capacity(num_edges),
        geom: Vec::with_capacity(num_edges),
        reverse: Vec::new(),
    };
    list.row_ptr.push(0);
    for row in rows {
        for (j, shift, geom) in row {
            list.src.push(j);
            list.shift.push(shift);
            list.geom.push(geom);
        }
        list.row_ptr.push(list.src.len() as u32);
    }
    list.reverse = reverse_edges(&list)?;
    Ok(list)
}

/// For each edge (j → i, S), the index of (i → j, −S), found by binary search in the
/// sorted row of j.
fn reverse_edges(list: &NeighborList) -> Result<Vec<u32>> {
    let num_atoms = list.row_ptr.len() - 1;
    (0..num_atoms)
        .into_par_iter()
        .flat_map_iter(|i| list.row(i).map(move |e| (i, e)))
        .map(|(i, e)| {
            let j = list.src[e] as usize;
            let key = (i as u32, list.shift[e].map(|x| -x));
            let row = list.row(j);
            let (mut lo, mut hi) = (row.start, row.end);
            while lo < hi {
                let mid = (lo + hi) / 2;
                if (list.src[mid], list.shift[mid]) < key {
                    lo = mid + 1
                } else {
                    hi = mid
                }
            }
            if lo < row.end && (list.src[lo], list.shift[lo]) == key {
                Ok(lo as u32)
            } else {
                Err(Error::InvalidInput(format!(
                    "internal: edge {j}→{i} {:?} has no reverse; the neighbour list is not symmetric",
                    list.shift[e]
                )))
            }
        })
        .collect()
}
