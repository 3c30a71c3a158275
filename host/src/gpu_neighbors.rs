//! Neighbour search on the GPU: the cell-list kernels of `kernels::neighbors`,
//! launched as count → scan → fill → sort → reverse, with every buffer sized by the
//! real pair count (an edge capacity that grows when a build overflows it; nothing is
//! ever dropped). The lists equal the CPU path's exactly, as sets and in order.

use crate::error::{invalid_input, Error, Result};
use crate::gpu::{grid_1d, warp_per_atom, Gpu, BLOCK_THREADS};
use crate::neighbors::NeighborList;
use crate::structure::{inverse, plane_spacing, Batch};
use cudarc::driver::{CudaSlice, LaunchConfig};
use mlff_kernels::cell_list::{bin_capacity, GridRecord, StructureRecord};
use mlff_kernels::kernel::Kernel;
use mlff_kernels::neighbors::args::{status, CellArgs, ScanArgs, SCAN_BLOCK_ELEMENTS, SCAN_BLOCK_THREADS};
use mlff_kernels::neighbors::entries as k;
use std::sync::Arc;

/// Per-structure records of a batch, as the kernels read them.
pub fn structure_records(batch: &Batch) -> Vec<StructureRecord> {
    (0..batch.num_structures())
        .map(|s| {
            let (start, end) = (batch.offsets[s] as u32, batch.offsets[s + 1] as u32);
            let mut rec = StructureRecord {
                cell: batch.cells[s],
                atom_start: start,
                atom_end: end,
                bin_base: 2 * start + 8 * s as u32,
                ..Default::default()
            };
            match &batch.cells64[s] {
                Some(cell) => {
                    let inv = inverse(cell);
                    rec.inverse = std::array::from_fn(|k| inv[k / 3][k % 3] as f32);
                    rec.plane_spacing = plane_spacing(&inv).map(|x| x as f32);
                }
                None => {
                    rec.inverse = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
                    rec.plane_spacing = [1.0; 3];
                }
            }
            rec.periodic = batch.pbc[s].map(u32::from);
            rec
        })
        .collect()
}

/// Reinterprets structure records (all fields 4 bytes wide) as words, for upload.
fn words(records: &[StructureRecord]) -> &[u32] {
    const _: () = assert!(size_of::<StructureRecord>().is_multiple_of(4) && align_of::<StructureRecord>() == 4);
    // SAFETY: `StructureRecord` is `#[repr(C)]` with only u32/f32 fields (no padding,
    // alignment 4, checked above), so its bytes are whole initialised u32 words.
    unsafe { std::slice::from_raw_parts(records.as_ptr() as *const u32, size_of_val(records) / 4) }
}

/// Scratch of a multi-level prefix sum over `len` elements.
struct Scan {
    levels: Vec<(usize, CudaSlice<u32>)>,
}

impl Scan {
    fn new(gpu: &Gpu, len: usize) -> Result<Self> {
        let mut levels = Vec::new();
        let mut n = len;
        loop {
            let blocks = n.div_ceil(SCAN_BLOCK_ELEMENTS).max(1);
            levels.push((n, gpu.zeros::<u32>(blocks)?));
            if blocks == 1 {
                break;
            }
            n = blocks;
        }
        Ok(Scan { levels })
    }

    /// In-place exclusive prefix sum of `data` (the length the scan was made for).
    fn run(&self, gpu: &Gpu, data: &CudaSlice<u32>) -> Result<()> {
        let len = self.levels[0].0;
        self.level(gpu, 0, gpu.device_ptr(data, len)?)
    }

    /// Level k of the scan over `data`, which holds the level's length (checked by
    /// `run` for level 0; level k + 1 scans level k's block sums, sized for it).
    fn level(&self, gpu: &Gpu, k: usize, data: *mut u32) -> Result<()> {
        let (len, sums) = &self.levels[k];
        let blocks = len.div_ceil(SCAN_BLOCK_ELEMENTS).max(1);
        let args = ScanArgs { data, block_sums: gpu.device_ptr(sums, blocks)?, len: *len as u32, pad: 0 };
        let config = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (SCAN_BLOCK_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: `data` holds `len` elements (see above) and `block_sums` one per
        // block; both outlive the launch (the scan and the list own them, and a
        // captured graph is dropped with the list's owner).
        unsafe { gpu.launch(k::SCAN_BLOCK, config, &args)? };
        if blocks > 1 {
            self.level(gpu, k + 1, args.block_sums)?;
            // SAFETY: as above.
            unsafe { gpu.launch(k::SCAN_ADD, grid_1d(*len, BLOCK_THREADS)?, &args)? };
        }
        Ok(())
    }
}

/// A neighbour list of a fixed batch shape resident on the GPU, rebuilt from the
/// positions in [`GpuCellList::positions`] without a host round trip.
pub struct GpuCellList {
    gpu: Arc<Gpu>,
    num_atoms: usize,
    num_structures: usize,
    cutoff: f32,
    skin: f32,
    pub(crate) records: CudaSlice<u32>,
    grids: CudaSlice<u32>,
    pub(crate) structure_of: CudaSlice<u32>,
    /// Positions (N×3), written by the caller before a build.
    pub(crate) positions: CudaSlice<f32>,
    reference: CudaSlice<f32>,
    atom_home: CudaSlice<i32>,
    wrap: CudaSlice<i32>,
    atom_bin: CudaSlice<u32>,
    bin_start: CudaSlice<u32>,
    bin_fill: CudaSlice<u32>,
    bin_atoms: CudaSlice<u32>,
    pub(crate) row_ptr: CudaSlice<u32>,
    pub(crate) src: CudaSlice<u32>,
    pub(crate) shift: CudaSlice<i32>,
    pub(crate) reverse: CudaSlice<u32>,
    geom: Option<CudaSlice<f32>>,
    with_geometry: bool,
    pub(crate) status: CudaSlice<u32>,
    /// Bins of all structures (the bin arrays hold one more, for the scan's total).
    total_bins: usize,
    bin_scan: Scan,
    row_scan: Scan,
    edge_capacity: usize,
}

/// What a build found, read back after the stream has passed it.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildStatus {
    pub words: [u32; status::WORDS],
    pub num_edges: u32,
}

impl GpuCellList {
    /// Buffers for `batch`'s shape; `skin` widens the search beyond `cutoff` for reuse
    /// across MD steps. `with_geometry` also stores [r, d] per edge.
    pub fn new(gpu: Arc<Gpu>, batch: &Batch, cutoff: f32, skin: f32, with_geometry: bool) -> Result<Self> {
        if !(cutoff > 0.0 && cutoff.is_finite() && skin >= 0.0 && skin.is_finite()) {
            return invalid_input!("cutoff {cutoff} must be positive and skin {skin} non-negative, both finite");
        }
        // The search's size, bounded before any buffer is made (shared with the CPU search).
        crate::neighbors::check_search(batch, cutoff + skin)?;
        let n = batch.num_atoms();
        let s = batch.num_structures();
        let records = structure_records(batch);
        let total_bins: usize = records.iter().map(|r| bin_capacity(r.atom_end - r.atom_start) as usize).sum();
        let structure_of = batch.structure_of.clone();
        // A first guess at the edges (organic density at 5 Å gives ~50 per atom); a
        // build that finds more grows the buffers and fills again.
        let edge_capacity = (n * 48).max(1024);
        let mut list = GpuCellList {
            num_atoms: n,
            num_structures: s,
            cutoff,
            skin,
            records: gpu.upload(words(&records))?,
            grids: gpu.zeros::<u32>(s.max(1) * std::mem::size_of::<GridRecord>() / 4)?,
            structure_of: gpu.upload(&if structure_of.is_empty() { vec![0] } else { structure_of })?,
            positions: gpu.zeros::<f32>(3 * n.max(1))?,
            reference: gpu.zeros::<f32>(3 * n.max(1))?,
            atom_home: gpu.zeros::<i32>(3 * n.max(1))?,
            wrap: gpu.zeros::<i32>(3 * n.max(1))?,
            atom_bin: gpu.zeros::<u32>(n.max(1))?,
            bin_start: gpu.zeros::<u32>(total_bins + 1)?,
            bin_fill: gpu.zeros::<u32>(total_bins + 1)?,
            bin_atoms: gpu.zeros::<u32>(n.max(1))?,
            row_ptr: gpu.zeros::<u32>(n + 1)?,
            src: gpu.zeros::<u32>(1)?,
            shift: gpu.zeros::<i32>(3)?,
            reverse: gpu.zeros::<u32>(1)?,
            geom: None,
            with_geometry,
            status: gpu.zeros::<u32>(status::WORDS)?,
            bin_scan: Scan::new(&gpu, total_bins + 1)?,
            total_bins,
            row_scan: Scan::new(&gpu, n + 1)?,
            edge_capacity: 0,
            gpu,
        };
        list.reserve_edges(edge_capacity)?;
        Ok(list)
    }

    pub fn num_atoms(&self) -> usize {
        self.num_atoms
    }

    pub fn edge_capacity(&self) -> usize {
        self.edge_capacity
    }

    /// Cutoff + skin: the radius the list is built with.
    pub fn search_radius(&self) -> f32 {
        self.cutoff + self.skin
    }

    /// Grows the edge buffers to hold `capacity` edges.
    pub fn reserve_edges(&mut self, capacity: usize) -> Result<()> {
        let capacity = crate::gpu::len_u32(capacity, "edge capacity")? as usize;
        let gpu = &self.gpu;
        self.src = gpu.zeros::<u32>(capacity)?;
        self.shift = gpu.zeros::<i32>(3 * capacity)?;
        self.reverse = gpu.zeros::<u32>(capacity)?;
        self.geom = if self.with_geometry { Some(gpu.zeros::<f32>(4 * capacity)?) } else { None };
        self.edge_capacity = capacity;
        Ok(())
    }

    /// The kernels' arguments: this list's buffers, each checked to hold what the
    /// kernels use of it for this shape (atoms, structures, bins, edge capacity).
    fn args(&self) -> Result<CellArgs> {
        let (g, n, cap) = (&self.gpu, self.num_atoms, self.edge_capacity);
        let record_words = |records: usize, size: usize| records * size / 4;
        Ok(CellArgs {
            records: g.device_ptr(&self.records, record_words(self.num_structures, size_of::<StructureRecord>()))?
                as *const StructureRecord,
            grids: g.device_ptr(&self.grids, record_words(self.num_structures, size_of::<GridRecord>()))?
                as *mut GridRecord,
            positions: g.device_ptr(&self.positions, 3 * n)? as *const [f32; 3],
            structure_of: g.device_ptr(&self.structure_of, n)?,
            atom_home: g.device_ptr(&self.atom_home, 3 * n)? as *mut [i32; 3],
            wrap: g.device_ptr(&self.wrap, 3 * n)? as *mut [i32; 3],
            atom_bin: g.device_ptr(&self.atom_bin, n)?,
            bin_start: g.device_ptr(&self.bin_start, self.total_bins + 1)?,
            bin_fill: g.device_ptr(&self.bin_fill, self.total_bins + 1)?,
            bin_atoms: g.device_ptr(&self.bin_atoms, n)?,
            row_ptr: g.device_ptr(&self.row_ptr, n + 1)?,
            src: g.device_ptr(&self.src, cap)?,
            shift: g.device_ptr(&self.shift, 3 * cap)? as *mut [i32; 3],
            reverse: g.device_ptr(&self.reverse, cap)?,
            geom: match &self.geom {
                Some(b) => g.device_ptr(b, 4 * cap)? as *mut [f32; 4],
                None => std::ptr::null_mut(),
            },
            status: g.device_ptr(&self.status, status::WORDS)?,
            reference: g.device_ptr(&self.reference, 3 * n)? as *mut [f32; 3],
            num_atoms: n as u32,
            num_structures: self.num_structures as u32,
            edge_capacity: cap as u32,
            cutoff: self.search_radius(),
            half_skin_sq: 0.25 * self.skin * self.skin,
            pad: 0,
        })
    }

    /// Launches one of the neighbour-search kernels.
    fn launch(&self, kernel: Kernel<CellArgs>, config: LaunchConfig, args: &CellArgs) -> Result<()> {
        // SAFETY: `args` comes from `Self::args`, which takes every address from this
        // list's own buffers after checking each holds what the kernels use for this
        // shape. The buffers are freed in stream order after the launch (one stream),
        // and a workspace that captures these launches into a CUDA graph owns the list.
        unsafe { self.gpu.launch(kernel, config, args) }
    }

    /// Enqueues a full build from the current positions (no synchronisation): bins,
    /// counts, row pointers, rows sorted by (sender, shift), reverse edges.
    pub fn enqueue_build(&mut self) -> Result<()> {
        let gpu = self.gpu.clone();
        gpu.clear(&mut self.bin_start)?;
        gpu.clear(&mut self.bin_fill)?;
        gpu.clear(&mut self.status)?;
        let args = self.args()?;
        let atoms = grid_1d(self.num_atoms, BLOCK_THREADS)?;
        if self.num_structures > 0 {
            let per_structure = LaunchConfig {
                grid_dim: (self.num_structures as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            self.launch(k::GRID, per_structure, &args)?;
        }
        self.launch(k::BIN, atoms, &args)?;
        self.bin_scan.run(&gpu, &self.bin_start)?;
        self.launch(k::SCATTER, atoms, &args)?;
        self.launch(k::COUNT, warp_per_atom(self.num_atoms)?, &args)?;
        self.row_scan.run(&gpu, &self.row_ptr)?;
        self.enqueue_fill()?;
        gpu.stream()
            .memcpy_dtod(&self.positions, &mut self.reference)
            .map_err(Error::cuda("keeping the build's positions"))?;
        Ok(())
    }

    /// Enqueues the fill, sort and reverse passes (after counts and row pointers).
    fn enqueue_fill(&self) -> Result<()> {
        let args = self.args()?;
        let rows = warp_per_atom(self.num_atoms)?;
        self.launch(k::FILL, rows, &args)?;
        self.launch(k::REVERSE, rows, &args)
    }

    /// Edges the last build found (`row_ptr[N]`; synchronises, copies one word).
    pub fn num_edges(&self) -> Result<usize> {
        let last = self.row_ptr.slice(self.num_atoms..);
        let total = self.gpu.stream().clone_dtoh(&last).map_err(Error::cuda("reading the edge count"))?;
        Ok(total[0] as usize)
    }

    /// Reads the status words and the edge count (synchronises).
    pub fn read_status(&self) -> Result<BuildStatus> {
        let words = self.gpu.download(&self.status)?;
        let mut out = BuildStatus { num_edges: self.num_edges()? as u32, ..Default::default() };
        out.words.copy_from_slice(&words[..status::WORDS]);
        Ok(out)
    }

    /// Turns a build's status into an error, naming the structure and atoms.
    pub fn check(&self, build: &BuildStatus, structure_of: &[u32], offsets: &[usize]) -> Result<()> {
        let w = &build.words;
        if w[status::TOO_CLOSE] != 0 {
            // Lowest first: which of the pair's two edges the search met first depends on
            // the batch (and its split over devices); the message must not.
            let (a, b) = (w[status::CLOSE_I] as usize, w[status::CLOSE_J] as usize);
            let (i, j) = (a.min(b), a.max(b));
            let s = structure_of.get(i).copied().unwrap_or(0) as usize;
            let base = offsets.get(s).copied().unwrap_or(0);
            let which = if i == j {
                format!("atom {} and its own periodic image are", i.saturating_sub(base))
            } else {
                format!("atoms {} and {} are", i.saturating_sub(base), j.saturating_sub(base))
            };
            return invalid_input!(
                "structure {s}: {which} closer than {:.0e} Å; atoms on top of each other have no defined forces",
                mlff_kernels::cell_list::MIN_DISTANCE
            );
        }
        if w[status::ASYMMETRIC] != 0 {
            return Err(Error::InvalidInput("internal: the GPU neighbour list is not symmetric".into()));
        }
        Ok(())
    }

    /// Builds from `positions` and, if the edges overflowed the capacity, grows it and
    /// fills again; returns the number of edges.
    pub fn build(&mut self, positions: &[[f32; 3]], structure_of: &[u32], offsets: &[usize]) -> Result<usize> {
        self.set_positions(positions)?;
        self.enqueue_build()?;
        let gpu = self.gpu.clone();
        let mut st = self.read_status()?;
        self.check(&st, structure_of, offsets)?;
        if st.words[status::OVERFLOW] != 0 {
            self.reserve_edges(st.num_edges as usize + st.num_edges as usize / 8)?;
            gpu.clear(&mut self.status)?;
            self.enqueue_fill()?;
            st = self.read_status()?;
            self.check(&st, structure_of, offsets)?;
        }
        Ok(st.num_edges as usize)
    }

    /// Enqueues the O(N²) pair count (no images) that the cell list replaces: the
    /// benches' scaling contrast. Counts land in the row-pointer buffer.
    pub fn enqueue_brute_force_count(&self) -> Result<()> {
        let args = self.args()?;
        self.launch(k::BRUTE_FORCE_COUNT, grid_1d(self.num_atoms, BLOCK_THREADS)?, &args)
    }

    /// Replaces the positions (N×3) without rebuilding.
    pub fn set_positions(&mut self, positions: &[[f32; 3]]) -> Result<()> {
        if positions.len() != self.num_atoms {
            return invalid_input!("{} positions for a list of {} atoms", positions.len(), self.num_atoms);
        }
        let flat: Vec<f32> = positions.iter().flatten().copied().collect();
        let gpu = self.gpu.clone();
        // SAFETY: `flat` lives to the end of this function, after the synchronisation
        // that waits for the copy.
        unsafe { gpu.copy_to_device(&mut self.positions, &flat)? };
        gpu.synchronize()
    }

    /// Whether any atom moved more than skin/2 since the last build (a GPU-side
    /// check; only one status word comes back).
    pub fn moved_beyond_skin(&mut self) -> Result<bool> {
        let args = self.args()?;
        self.launch(k::MOVED, grid_1d(self.num_atoms, BLOCK_THREADS)?, &args)?;
        let words = self.gpu.download(&self.status)?;
        Ok(words[status::MOVED] != 0)
    }

    /// The list as the CPU path stores it (downloads everything).
    pub fn to_host(&self, num_edges: usize) -> Result<NeighborList> {
        if num_edges > self.edge_capacity {
            return invalid_input!("{num_edges} edges asked for, the list holds at most {}", self.edge_capacity);
        }
        let g = &self.gpu;
        let row_ptr = g.download(&self.row_ptr)?;
        let src = g.download(&self.src)?;
        let shift = g.download(&self.shift)?;
        let reverse = g.download(&self.reverse)?;
        let geom = match &self.geom {
            Some(b) => g.download(b)?,
            None => vec![0.0; 4 * self.edge_capacity],
        };
        Ok(NeighborList {
            row_ptr,
            src: src[..num_edges].to_vec(),
            shift: (0..num_edges).map(|e| [shift[3 * e], shift[3 * e + 1], shift[3 * e + 2]]).collect(),
            geom: (0..num_edges).map(|e| [geom[4 * e], geom[4 * e + 1], geom[4 * e + 2], geom[4 * e + 3]]).collect(),
            reverse: reverse[..num_edges].to_vec(),
        })
    }
}

/// The neighbour list of a batch, computed on the GPU and copied back.
pub fn gpu_neighbor_list(gpu: &Arc<Gpu>, batch: &Batch, cutoff: f32) -> Result<NeighborList> {
    let mut list = GpuCellList::new(gpu.clone(), batch, cutoff, 0.0, true)?;
    let edges = list.build(&batch.positions, &batch.structure_of, &batch.offsets)?;
    list.to_host(edges)
}
