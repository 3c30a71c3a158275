//! Cell-list neighbour search as kernel bodies, run on the GPU one warp per atom
//! (the CPU path has its own f64 binning in `mlff-host`). Binning only proposes
//! candidates; membership is decided by the canonical f32 edge vector of
//! [`crate::geometry`], so the GPU and CPU lists are the same set, and sorting each
//! row by (sender, shift) makes them the same sequence.
//!
//! Per structure the host fills a [`StructureRecord`] (cell, inverse, periodicity,
//! atom range, slice of the bin arrays); the grid itself ([`GridRecord`]) is derived
//! on the device from the positions, so a rebuild needs no host copy of positions.

use crate::geometry::{edge_vector, shift_vector};
use crate::math::{ceil, floor};

/// Pairs closer than this are an error: the model's gradient is singular at d = 0.
pub const MIN_DISTANCE: f32 = 1e-4;

/// What the host knows about one structure of a batch (all fields 4 bytes wide).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StructureRecord {
    /// Lattice vectors as rows (zero for a molecule).
    pub cell: [f32; 9],
    /// Fractional coordinate a = Σ_k p_k · inverse[3k + a] (identity for a molecule).
    pub inverse: [f32; 9],
    /// Distance between adjacent lattice planes per unit fractional coordinate.
    pub plane_spacing: [f32; 3],
    /// 1 where periodic.
    pub periodic: [u32; 3],
    pub atom_start: u32,
    pub atom_end: u32,
    /// This structure's bins are `bin_base..bin_base + bin_capacity(atoms)`.
    pub bin_base: u32,
    pub pad: u32,
}

/// Bins a structure may use: a few per atom (sparse boxes get fewer, larger bins).
pub const fn bin_capacity(atoms: u32) -> u32 {
    2 * atoms + 8
}

/// The bin grid of one structure.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GridRecord {
    pub bins: [u32; 3],
    /// Bins searched on each side of an atom's own.
    pub reach: [i32; 3],
    /// Fractional coordinate of the grid's lower edge, and a bin's width.
    pub origin: [f32; 3],
    pub width: [f32; 3],
    /// 1 where periodic (the grid wraps around).
    pub periodic: [u32; 3],
}

/// Cutoff of the binning, a little larger than the model's so that rounding can never
/// put a pair at d ≈ rc outside the searched bins.
#[inline(always)]
pub fn binning_cutoff(cutoff: f32) -> f32 {
    cutoff * (1.0 + 1e-4) + 1e-4
}

/// Fractional coordinates of a position (Cartesian for a molecule).
#[inline(always)]
pub fn fractional(p: [f32; 3], rec: &StructureRecord) -> [f32; 3] {
    let m = &rec.inverse;
    core::array::from_fn(|a| (p[0] * m[a] + p[1] * m[3 + a]) + p[2] * m[6 + a])
}

/// The grid of a structure from the range [lo, hi] of its fractional coordinates
/// along the non-periodic axes.
pub fn grid(rec: &StructureRecord, lo: [f32; 3], hi: [f32; 3], cutoff: f32) -> GridRecord {
    let n = rec.atom_end - rec.atom_start;
    let cut = binning_cutoff(cutoff);
    let mut g = GridRecord::default();
    let count = |extent: f32| -> u32 {
        let b = floor(extent / cut);
        if b >= 1.0e6 {
            1_000_000
        } else if b >= 1.0 {
            b as u32
        } else {
            1
        }
    };
    g.periodic = rec.periodic;
    for a in 0..3 {
        let extent = if rec.periodic[a] != 0 {
            rec.plane_spacing[a]
        } else if n == 0 {
            0.0
        } else {
            (hi[a] - lo[a]) * rec.plane_spacing[a]
        };
        g.bins[a] = count(extent);
        g.origin[a] = if rec.periodic[a] != 0 || n == 0 { 0.0 } else { lo[a] };
    }
    let limit = bin_capacity(n) as u64;
    while (g.bins[0] as u64) * (g.bins[1] as u64) * (g.bins[2] as u64) > limit {
        let a = if g.bins[0] >= g.bins[1] && g.bins[0] >= g.bins[2] {
            0
        } else if g.bins[1] >= g.bins[2] {
            1
        } else {
            2
        };
        g.bins[a] = g.bins[a].div_ceil(2);
    }
    for a in 0..3 {
        let periodic = rec.periodic[a] != 0;
        let span = if periodic {
            1.0
        } else if n == 0 {
            0.0
        } else {
            hi[a] - g.origin[a]
        };
        g.width[a] = (span / g.bins[a] as f32).max(f32::MIN_POSITIVE);
        let plane_width = g.width[a] * rec.plane_spacing[a];
        g.reach[a] = if periodic || g.bins[a] > 1 {
            let r = ceil(cut / plane_width);
            if r >= 1.0e6 {
                1_000_000
            } else if r >= 1.0 {
                r as i32
            } else {
                1
            }
        } else {
            0
        };
    }
    g
}

/// An atom's bin (per axis) and its integer wrap into the home cell (periodic axes).
#[inline(always)]
pub fn bin_of(p: [f32; 3], rec: &StructureRecord, g: &GridRecord) -> ([i32; 3], [i32; 3]) {
    let f = fractional(p, rec);
    let mut bin = [0i32; 3];
    let mut wrap = [0i32; 3];
    for a in 0..3 {
        let mut x = f[a];
        if rec.periodic[a] != 0 {
            let k = floor(x);
            wrap[a] = k as i32;
            x -= k;
        }
        let b = floor((x - g.origin[a]) / g.width[a]);
        let top = g.bins[a] as f32 - 1.0;
        bin[a] = if b < 0.0 {
            0
        } else if b > top {
            top as i32
        } else {
            b as i32
        };
    }
    (bin, wrap)
}

/// Linear index of a bin within its structure.
#[inline(always)]
pub fn linear_bin(bin: [i32; 3], g: &GridRecord) -> u32 {
    (bin[0] as u32 * g.bins[1] + bin[1] as u32) * g.bins[2] + bin[2] as u32
}

/// Walks the candidate senders of receiver `i` the way a warp does: bin by bin (the
/// bins within `reach`, in a fixed order), 32 candidates at a time. `visit(valid, j,
/// shift)` is called on every lane for every chunk, lane `lane` holding the chunk's
/// candidate `lane`; `valid` is false past the bin's end and for i's own image (i, 0).
/// The chunk loop is uniform over the warp (it depends on i only), so `visit` may vote
/// and shuffle, and a ballot's lowest lane is the earliest candidate of the walk.
///
/// `bin_start`/`bin_atoms` are this structure's (already offset by its `bin_base`);
/// `wrap` is indexed by global atom.
///
/// # Safety
/// The arrays must hold the bins and atoms the grid names.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn for_each_candidate_chunk(
    i: u32,
    lane: u32,
    home: [i32; 3],
    g: &GridRecord,
    bin_start: *const u32,
    bin_atoms: *const u32,
    wrap: *const [i32; 3],
    mut visit: impl FnMut(bool, u32, [i32; 3]),
) {
    let wrap_i = *wrap.add(i as usize);
    let mut o0 = -g.reach[0];
    while o0 <= g.reach[0] {
        let mut o1 = -g.reach[1];
        while o1 <= g.reach[1] {
            let mut o2 = -g.reach[2];
            while o2 <= g.reach[2] {
                let offsets = [o0, o1, o2];
                let mut bin = [0i32; 3];
                let mut image = [0i32; 3];
                let mut inside = true;
                for a in 0..3 {
                    let b = home[a] + offsets[a];
                    let nb = g.bins[a] as i32;
                    if g.periodic[a] != 0 {
                        bin[a] = b.rem_euclid(nb);
                        image[a] = b.div_euclid(nb);
                    } else if b >= 0 && b < nb {
                        bin[a] = b;
                    } else {
                        inside = false;
                    }
                }
                if inside {
                    let linear = linear_bin(bin, g) as usize;
                    let (start, end) = (*bin_start.add(linear), *bin_start.add(linear + 1));
                    let mut chunk = start;
                    while chunk < end {
                        let k = chunk + lane;
                        let (j, shift) = if k < end {
                            let j = *bin_atoms.add(k as usize);
                            let wrap_j = *wrap.add(j as usize);
                            (j, core::array::from_fn(|a| image[a] - wrap_j[a] + wrap_i[a]))
                        } else {
                            (i, [0; 3])
                        };
                        let own_image = j == i && shift == [0; 3];
                        visit(!own_image, j, shift);
                        chunk += 32;
                    }
                }
                o2 += 1;
            }
            o1 += 1;
        }
        o0 += 1;
    }
}

/// Sender `j` with image `shift` as seen from receiver `i`: r and d.
///
/// # Safety
/// `positions` must hold atoms `i` and `j`.
#[inline(always)]
pub unsafe fn candidate_geometry(
    i: u32,
    j: u32,
    shift: [i32; 3],
    positions: *const [f32; 3],
    cell: &[f32; 9],
) -> ([f32; 3], f32) {
    edge_vector(*positions.add(i as usize), *positions.add(j as usize), shift_vector(shift, cell))
}

/// Whether edge a comes before edge b in a sorted row: by sender, then shift.
#[inline(always)]
pub fn edge_key_less(a: (u32, [i32; 3]), b: (u32, [i32; 3])) -> bool {
    if a.0 != b.0 {
        return a.0 < b.0;
    }
    for x in 0..3 {
        if a.1[x] != b.1[x] {
            return a.1[x] < b.1[x];
        }
    }
    false
}

/// Insertion sort of one row by (sender, shift): rows are short (tens of edges).
///
/// # Safety
/// `src` and `shift` must hold `len` elements, written by this thread only.
#[inline(always)]
pub unsafe fn sort_row(src: *mut u32, shift: *mut [i32; 3], len: u32) {
    let mut k = 1;
    while k < len as usize {
        let key = (*src.add(k), *shift.add(k));
        let mut m = k;
        while m > 0 {
            let prev = (*src.add(m - 1), *shift.add(m - 1));
            if !edge_key_less(key, prev) {
                break;
            }
            *src.add(m) = prev.0;
            *shift.add(m) = prev.1;
            m -= 1;
        }
        *src.add(m) = key.0;
        *shift.add(m) = key.1;
        k += 1;
    }
}

/// Index of the edge (i → j, −S) in the sorted row of j, or `u32::MAX` if absent.
///
/// # Safety
/// `row_ptr` must hold atom j's row bounds and `src`, `shift` the edges within them.
#[inline(always)]
pub unsafe fn reverse_edge(
    i: u32,
    j: u32,
    s: [i32; 3],
    row_ptr: *const u32,
    src: *const u32,
    shift: *const [i32; 3],
) -> u32 {
    let key = (i, [-s[0], -s[1], -s[2]]);
    let (mut lo, mut hi) = (*row_ptr.add(j as usize), *row_ptr.add(j as usize + 1));
    let end = hi;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if edge_key_less((*src.add(mid as usize), *shift.add(mid as usize)), key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo < end && !edge_key_less(key, (*src.add(lo as usize), *shift.add(lo as usize))) && *src.add(lo as usize) == i {
        lo
    } else {
        u32::MAX
    }
}
