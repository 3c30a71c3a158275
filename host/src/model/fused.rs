//! The fused small-structure engine (`kernels::fused`): one thread block per
//! molecule, one launch per call, and for MD one launch per report.
//!
//! [`FusedStudentWeights`] holds the student kernel's weights as flat host arrays; the
//! GPU driver [`FusedStudentGpu`] uploads them once, and [`emulate_student`] runs the
//! very same kernel source on the CPU (one thread, or several OS threads with a
//! barrier standing in for a thread block), which is how the tests check the kernel
//! without a GPU. [`painn`] does the same for PaiNN. What does not depend on the
//! architecture (the emulated launch, the batch arrays on the GPU, scratch, launch
//! shape, fault messages) is here, generic over the `Architecture` trait.

use super::filter_table::inverse_spacing;
use super::student::filter::build;
use super::student::{Linear, StudentWeights};
use crate::error::{invalid_input, Error, Result};
use crate::gpu::{Gpu, Pinned};
use crate::structure::Batch;
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig};
use mlff_kernels::fused::painn::FusedPainnArgs;
use mlff_kernels::fused::student::{FusedLinear, FusedStudentArgs, FusedStudentBlock, StudentLayout};
use mlff_kernels::fused::team::{SerialTeam, Team};
use mlff_kernels::kernel::{Kernel, KernelArgs};
use mlff_kernels::md::Integrator;
use std::sync::Arc;

// `model::fused::painn`: the fused PaiNN engine (its file sits beside this one).
#[path = "fused_painn.rs"]
pub mod painn;

pub use painn::{emulate_painn, emulate_painn_md, FusedPainnGpu, FusedPainnWeights};

/// Largest molecule the fused engine takes (pairs are kept densely, n² slots).
pub const MAX_ATOMS: usize = 256;

/// Largest molecule the automatic choice sends to the fused engine: none (`None`). Measured on
/// the H200 (PERF.md, session 8), the fused engine is slower than the layered one at
/// every size tried (24 atoms: 1.42 ms against 0.19 ms; 256 × 24: 3.42 ms against
/// 1.24 ms; MD of the dimer: 2,368 against 8,859 steps/s): one thread block cannot
/// issue a molecule's work as fast as the layered engine's many. It stays available
/// through `MLFF_ENGINE=fused` or [`super::Model::with_engine`].
pub const AUTO_MAX_ATOMS: Option<usize> = None;

/// `MLFF_ENGINE=fused|layered|auto` forces the GPU engine (tests and benches compare
/// them); a batch the fused engine cannot take (periodic, or more than `MAX_ATOMS`
/// atoms, or PaiNN) stays on the layered one even when forced.
pub const ENGINE_ENV: &str = "MLFF_ENGINE";

/// Which GPU engine `ENGINE_ENV` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    Auto,
    Fused,
    Layered,
}

impl EngineChoice {
    pub fn from_env() -> Result<Self> {
        match std::env::var(ENGINE_ENV).as_deref().map(str::trim) {
            Err(_) | Ok("") | Ok("auto") => Ok(EngineChoice::Auto),
            Ok("fused") => Ok(EngineChoice::Fused),
            Ok("layered") => Ok(EngineChoice::Layered),
            Ok(other) => invalid_input!("{ENGINE_ENV}={other:?}: expected fused, layered or auto"),
        }
    }
}

/// Whether a structure of `atoms` atoms and periodicity `pbc` goes to the fused engine.
pub fn takes(choice: EngineChoice, atoms: usize, pbc: [bool; 3]) -> bool {
    let possible = !pbc.iter().any(|&p| p) && atoms <= MAX_ATOMS;
    match choice {
        EngineChoice::Layered => false,
        EngineChoice::Fused => possible,
        EngineChoice::Auto => possible && AUTO_MAX_ATOMS.is_some_and(|max| atoms <= max),
    }
}

/// Whether a whole batch of a model runs on the fused engine (MD keeps one engine).
pub fn takes_batch(model: &super::Model, batch: &Batch) -> Result<bool> {
    let choice = model.engine_choice()?;
    Ok(model.student_weights().is_some()
        && (0..batch.num_structures()).all(|s| takes(choice, batch.offsets[s + 1] - batch.offsets[s], batch.pbc[s])))
}

/// One dense layer as the fused kernel reads it.
#[derive(Clone, Debug)]
pub struct LinearArrays {
    pub weight_t: Vec<f32>,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl LinearArrays {
    fn new(l: &Linear) -> Self {
        LinearArrays { weight_t: l.weight_t.clone(), weight: l.weight(), bias: l.bias.clone() }
    }
}

/// The student's weights for the fused kernel: filter tables, update and head layers
/// in both layouts, embedding, atom reference energies.
#[derive(Clone, Debug)]
pub struct FusedStudentWeights {
    pub hidden: usize,
    pub cutoff: f32,
    pub tables: Vec<Vec<f32>>,
    pub update: Vec<[LinearArrays; 2]>,
    pub mixing: Vec<[f32; 9]>,
    pub head: [LinearArrays; 3],
    pub embedding: Vec<f32>,
    pub atomref: Option<Vec<f32>>,
}

impl FusedStudentWeights {
    pub fn new(w: &StudentWeights) -> Result<Self> {
        let t = w.config.num_interactions;
        Ok(FusedStudentWeights {
            hidden: w.hidden_dim(),
            cutoff: w.config.cutoff,
            tables: (0..t).map(|k| build(w, k)).collect::<Result<_>>()?,
            update: w
                .interactions
                .iter()
                .map(|b| [LinearArrays::new(&b.update_in), LinearArrays::new(&b.update_out)])
                .collect(),
            mixing: w.interactions.iter().map(|b| b.mixing).collect(),
            head: [0, 1, 2].map(|k| LinearArrays::new(&w.head[k])),
            embedding: w.embedding.clone(),
            atomref: w.atomref.clone(),
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.tables.len()
    }

    /// The largest atomic number the embedding has a row for.
    pub fn max_z(&self) -> usize {
        (self.embedding.len() / self.hidden.max(1)).saturating_sub(1)
    }
}

/// Every atomic number of `batch` within 1..=`max_z`: the fused kernels read the
/// embedding row of each unchecked.
fn check_batch_elements(max_z: usize, batch: &Batch) -> Result<()> {
    crate::model::student::check_elements(max_z, None, &batch.numbers, &batch.structure_of)
}

/// Scratch floats of one molecule of `atoms` atoms for the student.
pub fn scratch_floats(atoms: usize, hidden: usize, blocks: usize) -> usize {
    StudentLayout::new(atoms, hidden, blocks).floats
}

/// Per-structure scratch offsets (floats) of a batch for the student, and the total.
pub fn scratch_offsets(batch: &Batch, hidden: usize, blocks: usize) -> Result<(Vec<u64>, usize)> {
    layout_offsets(batch, |n| StudentLayout::new(n, hidden, blocks).floats)
}

/// Per-structure scratch offsets (floats) of a batch whose structure of n atoms takes
/// `floats(n)`, and the total.
fn layout_offsets(batch: &Batch, floats: impl Fn(usize) -> usize) -> Result<(Vec<u64>, usize)> {
    let mut offsets = Vec::with_capacity(batch.num_structures());
    let mut total = 0usize;
    for s in 0..batch.num_structures() {
        let n = batch.offsets[s + 1] - batch.offsets[s];
        if n > MAX_ATOMS {
            return invalid_input!("structure {s} has {n} atoms; the fused engine takes at most {MAX_ATOMS}");
        }
        offsets.push(total as u64);
        total =
            total.checked_add(floats(n)).ok_or_else(|| Error::InvalidInput("fused scratch size overflows".into()))?;
    }
    Ok((offsets, total))
}

/// A batch as the fused kernel takes it: every structure a molecule of at most
/// [`MAX_ATOMS`] atoms.
pub fn check_batch(batch: &Batch) -> Result<()> {
    for s in 0..batch.num_structures() {
        if batch.pbc[s].iter().any(|&p| p) {
            return invalid_input!("structure {s} is periodic; the fused engine takes molecules only");
        }
    }
    if batch.num_atoms() > u32::MAX as usize / 2 {
        return invalid_input!("{} atoms exceed the fused engine's 32-bit indices", batch.num_atoms());
    }
    Ok(())
}

/// The error a structure's fault bits stand for, with the atoms named as the cell
/// lists name them (`positions` are the batch's current ones).
pub fn explain_fault(batch: &Batch, positions: &[[f32; 3]], structure: usize, bits: u32, label: usize) -> Error {
    use mlff_kernels::fused::fault;
    let atoms = batch.offsets[structure]..batch.offsets[structure + 1];
    if bits & fault::NON_FINITE != 0 {
        let bad = atoms.clone().find(|&i| positions[i].iter().any(|x| !x.is_finite())).unwrap_or(atoms.start);
        return Error::InvalidInput(format!(
            "structure {label}: atom {} has a non-finite position {:?}",
            bad - atoms.start,
            positions.get(bad)
        ));
    }
    let mut closest = (0, 0, f32::INFINITY);
    for i in atoms.clone() {
        for j in i + 1..atoms.end {
            let (_, d) = mlff_kernels::geometry::edge_vector(positions[i], positions[j], [0.0; 3]);
            if d < closest.2 {
                closest = (i - atoms.start, j - atoms.start, d);
            }
        }
    }
    Error::InvalidInput(format!(
        "structure {label}: atoms {} and {} are closer than {:.0e} Å; atoms on top of each other have no defined forces",
        closest.0,
        closest.1,
        mlff_kernels::cell_list::MIN_DISTANCE
    ))
}

/// What one fused evaluation (or MD call) returns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FusedOutput {
    pub energies: Vec<f64>,
    pub atom_energies: Vec<f32>,
    pub forces: Vec<[f32; 3]>,
    /// Per structure: `kernels::fused::fault` bits (0: fine).
    pub faults: Vec<u32>,
    /// MD only (else empty): per structure, the step whose new positions faulted,
    /// where `faults` is nonzero; `u64::MAX` where the starting positions did.
    pub fault_steps: Vec<u64>,
}

/// An MD state on the host that one fused MD call integrates in place: the forces of
/// the positions, then `steps` steps from step `first_step`, as one MD launch does.
pub struct MdChunk<'a> {
    pub positions: &'a mut [[f32; 3]],
    pub velocities: &'a mut [[f32; 3]],
    pub masses: &'a [f32],
    pub integrator: Integrator,
    pub first_step: u64,
    pub steps: u32,
}

/// The name the emulation's MD tests know [`MdChunk`] by.
pub type EmulatedMd<'a> = MdChunk<'a>;

impl MdChunk<'_> {
    fn check(&self, batch: &Batch) -> Result<()> {
        let n = batch.num_atoms();
        if self.velocities.len() != n || self.masses.len() != n || self.positions.len() != n {
            return invalid_input!("an MD state of the wrong length for {n} atoms");
        }
        if let Some(i) = self.masses.iter().position(|&m| !(m > 0.0 && m.is_finite())) {
            return invalid_input!("atom {i} has mass {}; masses must be positive and finite", self.masses[i]);
        }
        Ok(())
    }
}

/// One architecture's fused kernels, as the emulation and the GPU driver call them.
trait Architecture {
    type Args: FusedArgs + KernelArgs;
    /// The kernels.
    const EVALUATE: Kernel<Self::Args>;
    const MD: Kernel<Self::Args>;
    /// # Safety
    /// `args` must cover the batch and `s` be one of its structures.
    unsafe fn evaluate<T: Team>(team: &T, args: &Self::Args, s: usize, want_forces: bool) -> u32;
    /// # Safety
    /// As `evaluate`, plus the MD arrays.
    unsafe fn md<T: Team>(team: &T, args: &Self::Args, s: usize);
}

/// The student's kernels.
struct Student;

impl Architecture for Student {
    type Args = FusedStudentArgs;
    const EVALUATE: Kernel<FusedStudentArgs> = EVALUATE;
    const MD: Kernel<FusedStudentArgs> = MD;
    unsafe fn evaluate<T: Team>(team: &T, args: &FusedStudentArgs, s: usize, want_forces: bool) -> u32 {
        mlff_kernels::fused::student::evaluate(team, args, s, want_forces)
    }
    unsafe fn md<T: Team>(team: &T, args: &FusedStudentArgs, s: usize) {
        mlff_kernels::fused::student::md(team, args, s)
    }
}

/// A launch's batch arrays (device addresses, or host ones in the emulation): the
/// fields both architectures' argument structs share.
#[derive(Clone, Copy)]
struct BatchPointers {
    offsets: *const u32,
    scratch_offsets: *const u64,
    numbers: *const u32,
    positions: *mut [f32; 3],
    forces: *mut [f32; 3],
    atom_energies: *mut f32,
    energies: *mut f64,
    faults: *mut u32,
    scratch: *mut f32,
    velocities: *mut [f32; 3],
    masses: *const f32,
    fault_steps: *mut u64,
    integrator: Integrator,
    first_step: u64,
    steps: u32,
    num_structures: u32,
    want_forces: u32,
}

/// A kernel argument struct that takes a batch's arrays.
trait FusedArgs: Copy {
    /// The per-structure fault words.
    fn faults(&self) -> *mut u32;
    fn with_batch(self, p: &BatchPointers) -> Self;
}

/// Both argument structs name their batch fields alike.
macro_rules! fused_args {
    ($($args:ty),*) => {$(
        impl FusedArgs for $args {
            fn faults(&self) -> *mut u32 {
                self.faults
            }
            fn with_batch(mut self, p: &BatchPointers) -> Self {
                self.offsets = p.offsets;
                self.scratch_offsets = p.scratch_offsets;
                self.numbers = p.numbers;
                self.positions = p.positions;
                self.forces = p.forces;
                self.atom_energies = p.atom_energies;
                self.energies = p.energies;
                self.faults = p.faults;
                self.scratch = p.scratch;
                self.velocities = p.velocities;
                self.masses = p.masses;
                self.fault_steps = p.fault_steps;
                self.integrator = p.integrator;
                self.first_step = p.first_step;
                self.steps = p.steps;
                self.num_structures = p.num_structures;
                self.want_forces = p.want_forces;
                self
            }
        }
    )*};
}
fused_args!(FusedStudentArgs, FusedPainnArgs);

/// What a launch computes.
#[derive(Clone, Copy)]
enum Body {
    /// An evaluation, with forces or not.
    Evaluate(bool),
    /// An evaluation of the starting positions, then the MD steps.
    Md,
}

impl Body {
    fn wants_forces(self) -> bool {
        matches!(self, Body::Evaluate(true) | Body::Md)
    }
}

/// # Safety
/// `args` must cover the batch and `s` be one of its structures.
unsafe fn run_body<A: Architecture, T: Team>(team: &T, args: &A::Args, s: usize, body: Body) {
    // As the evaluate entry does: the bits into faults[s] by thread 0.
    let faults = A::evaluate(team, args, s, body.wants_forces());
    if team.thread() == 0 {
        *args.faults().add(s) = faults;
    }
    team.sync();
    if matches!(body, Body::Md) && faults == 0 {
        A::md(team, args, s);
    }
}

/// Argument structs whose pointers the emulation's threads share.
struct SharedArgs<A>(A);
// SAFETY: the pointers are only dereferenced by the kernel body, whose threads write
// disjoint locations between barriers (the property the threaded emulation tests).
unsafe impl<A> Sync for SharedArgs<A> {}

/// A thread block played by OS threads: warps of one lane, a real barrier.
struct ThreadTeam<'a> {
    thread: usize,
    threads: usize,
    barrier: &'a std::sync::Barrier,
    any: &'a std::sync::atomic::AtomicBool,
}

impl Team for ThreadTeam<'_> {
    fn thread(&self) -> usize {
        self.thread
    }
    fn threads(&self) -> usize {
        self.threads
    }
    fn warp(&self) -> usize {
        self.thread
    }
    fn warps(&self) -> usize {
        self.threads
    }
    fn lane(&self) -> usize {
        0
    }
    fn lanes(&self) -> usize {
        1
    }
    fn sync(&self) {
        self.barrier.wait();
    }
    fn sync_any(&self, flag: bool) -> bool {
        use std::sync::atomic::Ordering;
        if flag {
            self.any.store(true, Ordering::SeqCst);
        }
        self.barrier.wait();
        let any = self.any.load(Ordering::SeqCst);
        self.barrier.wait();
        if self.thread == 0 {
            self.any.store(false, Ordering::SeqCst);
        }
        self.barrier.wait();
        any
    }
    fn warp_sum(&self, x: f32) -> f32 {
        x
    }
}

/// The MD arrays of an emulated launch.
struct MdPointers {
    velocities: *mut [f32; 3],
    masses: *const f32,
    integrator: Integrator,
    first_step: u64,
    steps: u32,
}

impl MdPointers {
    fn new(md: &mut MdChunk<'_>) -> Self {
        MdPointers {
            velocities: md.velocities.as_mut_ptr(),
            masses: md.masses.as_ptr(),
            integrator: md.integrator,
            first_step: md.first_step,
            steps: md.steps,
        }
    }
}

/// Runs an architecture's kernel body on the CPU over `batch` as a launch of one
/// block per structure would: with `threads` = 1 one thread plays each block, with
/// more, that many OS threads with a barrier do. `base` holds the weights' (host)
/// pointers; `floats(n)` is the scratch of a structure of n atoms.
fn emulate<A: Architecture>(
    base: A::Args,
    batch: &Batch,
    threads: usize,
    positions: &mut [[f32; 3]],
    md: Option<MdPointers>,
    body: Body,
    floats: impl Fn(usize) -> usize,
) -> Result<FusedOutput> {
    check_batch(batch)?;
    let (scratch_offsets, total) = layout_offsets(batch, floats)?;
    let mut scratch = vec![0.0f32; total.max(1)];
    let offsets: Vec<u32> = batch.offsets.iter().map(|&o| o as u32).collect();
    let (n, s) = (batch.num_atoms(), batch.num_structures());
    let mut out = FusedOutput {
        energies: vec![0.0; s],
        atom_energies: vec![0.0; n],
        forces: vec![[0.0; 3]; n],
        faults: vec![0; s],
        fault_steps: vec![u64::MAX; s],
    };
    let pointers = BatchPointers {
        offsets: offsets.as_ptr(),
        scratch_offsets: scratch_offsets.as_ptr(),
        numbers: batch.numbers.as_ptr(),
        positions: positions.as_mut_ptr(),
        forces: out.forces.as_mut_ptr(),
        atom_energies: out.atom_energies.as_mut_ptr(),
        energies: out.energies.as_mut_ptr(),
        faults: out.faults.as_mut_ptr(),
        scratch: scratch.as_mut_ptr(),
        velocities: md.as_ref().map_or(std::ptr::null_mut(), |m| m.velocities),
        masses: md.as_ref().map_or(std::ptr::null(), |m| m.masses),
        fault_steps: out.fault_steps.as_mut_ptr(),
        integrator: md.as_ref().map_or(Integrator::default(), |m| m.integrator),
        first_step: md.as_ref().map_or(0, |m| m.first_step),
        steps: md.as_ref().map_or(0, |m| m.steps),
        num_structures: s as u32,
        want_forces: body.wants_forces() as u32,
    };
    let args = SharedArgs(base.with_batch(&pointers));
    for structure in 0..s {
        if threads <= 1 {
            // SAFETY: every pointer in `args` points into a live buffer sized for this
            // batch (scratch by `layout_offsets`, weights by the caller), and
            // `structure < s`.
            unsafe { run_body::<A, _>(&SerialTeam, &args.0, structure, body) };
        } else {
            let barrier = std::sync::Barrier::new(threads);
            let any = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                for thread in 0..threads {
                    let (barrier, any, args) = (&barrier, &any, &args);
                    scope.spawn(move || {
                        let team = ThreadTeam { thread, threads, barrier, any };
                        // SAFETY: as above; the threads of the team write disjoint
                        // locations between barriers.
                        unsafe { run_body::<A, _>(&team, &args.0, structure, body) };
                    });
                }
            });
        }
    }
    if md.is_none() {
        out.fault_steps.clear();
    }
    Ok(out)
}

fn linear_pointers(l: &LinearArrays) -> FusedLinear {
    FusedLinear { weight_t: l.weight_t.as_ptr(), weight: l.weight.as_ptr(), bias: l.bias.as_ptr() }
}

/// The student's argument struct with its weights filled in and the batch pointers
/// null.
fn student_args(
    blocks: *const FusedStudentBlock,
    head: [FusedLinear; 3],
    embedding: *const f32,
    atomref: *const f32,
    w: (usize, usize, f32),
) -> FusedStudentArgs {
    let (hidden, num_blocks, cutoff) = w;
    FusedStudentArgs {
        blocks,
        head,
        embedding,
        atomref,
        offsets: std::ptr::null(),
        scratch_offsets: std::ptr::null(),
        numbers: std::ptr::null(),
        positions: std::ptr::null_mut(),
        forces: std::ptr::null_mut(),
        atom_energies: std::ptr::null_mut(),
        energies: std::ptr::null_mut(),
        faults: std::ptr::null_mut(),
        scratch: std::ptr::null_mut(),
        velocities: std::ptr::null_mut(),
        masses: std::ptr::null(),
        fault_steps: std::ptr::null_mut(),
        heat: std::ptr::null_mut(),
        integrator: Integrator::default(),
        first_step: 0,
        steps: 0,
        num_structures: 0,
        num_blocks: num_blocks as u32,
        hidden: hidden as u32,
        cutoff,
        table_inv_h: inverse_spacing(cutoff),
        want_forces: 0,
        pad: 0,
    }
}

/// Runs the student's fused kernel body on the CPU over `batch` (molecules only):
/// with `threads` = 1 one thread plays each block, with more, that many OS threads
/// with a barrier do. For tests of the kernel source; the CPU path proper is
/// `model::cpu`.
pub fn emulate_student(
    w: &FusedStudentWeights,
    batch: &Batch,
    threads: usize,
    want_forces: bool,
) -> Result<FusedOutput> {
    let mut positions = batch.positions.clone();
    emulate_student_body(w, batch, threads, &mut positions, None, Body::Evaluate(want_forces))
}

/// MD on the student's fused kernel body on the CPU (see [`emulate_student`]): the
/// forces of the positions, then `steps` steps from step `first_step`, as one MD
/// launch does.
pub fn emulate_student_md(
    w: &FusedStudentWeights,
    batch: &Batch,
    threads: usize,
    mut md: MdChunk<'_>,
) -> Result<FusedOutput> {
    md.check(batch)?;
    let pointers = MdPointers::new(&mut md);
    emulate_student_body(w, batch, threads, md.positions, Some(pointers), Body::Md)
}

fn emulate_student_body(
    w: &FusedStudentWeights,
    batch: &Batch,
    threads: usize,
    positions: &mut [[f32; 3]],
    md: Option<MdPointers>,
    body: Body,
) -> Result<FusedOutput> {
    check_batch_elements(w.max_z(), batch)?;
    let (h, t) = (w.hidden, w.num_blocks());
    let blocks: Vec<FusedStudentBlock> = (0..t)
        .map(|k| FusedStudentBlock {
            table: w.tables[k].as_ptr(),
            update_in: linear_pointers(&w.update[k][0]),
            update_out: linear_pointers(&w.update[k][1]),
            mixing: w.mixing[k],
            pad: 0,
        })
        .collect();
    let base = student_args(
        blocks.as_ptr(),
        [0, 1, 2].map(|k| linear_pointers(&w.head[k])),
        w.embedding.as_ptr(),
        w.atomref.as_ref().map_or(std::ptr::null(), |r| r.as_ptr()),
        (h, t, w.cutoff),
    );
    emulate::<Student>(base, batch, threads, positions, md, body, |n| StudentLayout::new(n, h, t).floats)
}

/// Threads per block for molecules of up to `atoms` atoms: a warp per receiver row
/// where that fits, at least 4 and at most 16 warps, and at most `limit` threads (the
/// kernel's register use bounds the block).
pub fn block_threads(atoms: usize, limit: u32) -> u32 {
    (32 * atoms.clamp(4, 16) as u32).min(limit / 32 * 32).max(32)
}

/// The most threads a block of both kernels may have (their registers bound it).
fn block_limit<A: KernelArgs>(gpu: &Gpu, kernels: [Kernel<A>; 2]) -> Result<u32> {
    Ok(gpu.max_threads_per_block(kernels[0])?.min(gpu.max_threads_per_block(kernels[1])?))
}

struct DeviceLinear {
    weight_t: CudaSlice<f32>,
    weight: CudaSlice<f32>,
    bias: CudaSlice<f32>,
}

impl DeviceLinear {
    fn new(gpu: &Gpu, l: &LinearArrays) -> Result<Self> {
        Ok(DeviceLinear {
            weight_t: gpu.upload(&l.weight_t)?,
            weight: gpu.upload(&l.weight)?,
            bias: gpu.upload(&l.bias)?,
        })
    }
    fn pointers(&self, gpu: &Gpu) -> FusedLinear {
        FusedLinear {
            weight_t: gpu.address(&self.weight_t),
            weight: gpu.address(&self.weight),
            bias: gpu.address(&self.bias),
        }
    }
}

/// The scratch buffer of a fused engine on the GPU, kept and grown across calls.
#[derive(Default)]
struct DeviceScratch(Option<CudaSlice<f32>>);

impl DeviceScratch {
    /// Makes the buffer hold at least `floats`.
    fn reserve(&mut self, gpu: &Gpu, floats: usize) -> Result<()> {
        if self.0.as_ref().is_none_or(|s| s.len() < floats) {
            // Free the old buffer before allocating the new one.
            self.0 = None;
            self.0 = Some(gpu.zeros::<f32>(floats.max(1))?);
        }
        Ok(())
    }

    fn address(&self, gpu: &Gpu) -> Result<*mut f32> {
        let scratch = self.0.as_ref().ok_or_else(|| Error::Unsupported("no fused scratch".into()))?;
        Ok(gpu.address(scratch))
    }
}

/// Consecutive byte segments of one buffer, each starting 16-byte aligned.
struct Segments<const K: usize> {
    start: [usize; K],
    len: [usize; K],
    total: usize,
}

impl<const K: usize> Segments<K> {
    fn new(len: [usize; K]) -> Self {
        let mut start = [0; K];
        let mut at = 0;
        for k in 0..K {
            start[k] = at;
            at = (at + len[k]).div_ceil(16) * 16;
        }
        Segments { start, len, total: at.max(16) }
    }

    fn write(&self, buffer: &mut [u8], k: usize, bytes: &[u8]) {
        buffer[self.start[k]..self.start[k] + bytes.len()].copy_from_slice(bytes);
    }

    /// `count` values of segment k.
    fn read<T: Copy + Default>(&self, buffer: &[u8], k: usize, count: usize) -> Vec<T> {
        let size = std::mem::size_of::<T>();
        let bytes = &buffer[self.start[k]..self.start[k] + self.len[k].min(count * size)];
        let mut out = vec![T::default(); bytes.len() / size];
        // SAFETY: `out` holds exactly `bytes.len()` bytes of plain values (f64, u32,
        // f32, [f32; 3]), every bit pattern of which is valid.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, bytes.len()) };
        out
    }
}

/// Pinned host and device buffers for a call's inputs and outputs.
struct StagedIo {
    input: CudaSlice<u8>,
    output: CudaSlice<u8>,
    input_host: Pinned<u8>,
    output_host: Pinned<u8>,
}

impl StagedIo {
    fn new(gpu: &Gpu, input: usize, output: usize) -> Result<Self> {
        // Room to grow, so that a slightly larger batch does not reallocate.
        let (input, output) = (input + input / 2, output + output / 2);
        Ok(StagedIo {
            input: gpu.zeros(input)?,
            output: gpu.zeros(output)?,
            input_host: Pinned::new(input)?,
            output_host: Pinned::new(output)?,
        })
    }

    fn fits<const I: usize, const O: usize>(&self, input: &Segments<I>, output: &Segments<O>) -> bool {
        self.input.len() >= input.total && self.output.len() >= output.total
    }
}

/// `data` on the device, or one `placeholder` where it is empty (a zero-length
/// buffer has no address to pass).
fn upload_or<T: DeviceRepr + Copy>(gpu: &Gpu, data: &[T], placeholder: T) -> Result<CudaSlice<T>> {
    if data.is_empty() {
        gpu.upload(&[placeholder])
    } else {
        gpu.upload(data)
    }
}

/// A batch's arrays on the GPU for one fused call.
struct DeviceBatch {
    offsets: CudaSlice<u32>,
    scratch_offsets: CudaSlice<u64>,
    numbers: CudaSlice<u32>,
    positions: CudaSlice<[f32; 3]>,
    forces: CudaSlice<[f32; 3]>,
    atom_energies: CudaSlice<f32>,
    energies: CudaSlice<f64>,
    faults: CudaSlice<u32>,
    fault_steps: CudaSlice<u64>,
    atoms: usize,
    structures: usize,
    /// Atoms of the largest structure, and the scratch floats of all.
    largest: usize,
    scratch_floats: usize,
}

impl DeviceBatch {
    /// Uploads `batch` with `positions` (the batch's, or an MD state's).
    fn new(gpu: &Gpu, batch: &Batch, positions: &[[f32; 3]], floats: impl Fn(usize) -> usize) -> Result<Self> {
        check_batch(batch)?;
        let (scratch_offsets, scratch_floats) = layout_offsets(batch, floats)?;
        let (n, s) = (batch.num_atoms(), batch.num_structures());
        let offsets: Vec<u32> = batch.offsets.iter().map(|&o| o as u32).collect();
        let largest = batch.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        Ok(DeviceBatch {
            offsets: gpu.upload(&offsets)?,
            scratch_offsets: upload_or(gpu, &scratch_offsets, 0)?,
            numbers: upload_or(gpu, &batch.numbers, 0)?,
            positions: upload_or(gpu, positions, [0.0; 3])?,
            forces: gpu.zeros(n.max(1))?,
            atom_energies: gpu.zeros(n.max(1))?,
            energies: gpu.zeros(s.max(1))?,
            faults: gpu.zeros(s.max(1))?,
            fault_steps: gpu.upload(&vec![u64::MAX; s.max(1)])?,
            atoms: n,
            structures: s,
            largest,
            scratch_floats,
        })
    }

    fn pointers(&self, gpu: &Gpu, scratch: *mut f32, want_forces: bool) -> BatchPointers {
        BatchPointers {
            offsets: gpu.address(&self.offsets),
            scratch_offsets: gpu.address(&self.scratch_offsets),
            numbers: gpu.address(&self.numbers),
            positions: gpu.address(&self.positions),
            forces: gpu.address(&self.forces),
            atom_energies: gpu.address(&self.atom_energies),
            energies: gpu.address(&self.energies),
            faults: gpu.address(&self.faults),
            scratch,
            velocities: std::ptr::null_mut(),
            masses: std::ptr::null(),
            fault_steps: gpu.address(&self.fault_steps),
            integrator: Integrator::default(),
            first_step: 0,
            steps: 0,
            num_structures: self.structures as u32,
            want_forces: want_forces as u32,
        }
    }

    /// One block per structure, threads for the largest one within `max_threads`.
    fn launch_config(&self, max_threads: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.structures.max(1) as u32, 1, 1),
            block_dim: (block_threads(self.largest, max_threads), 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn output(&self, gpu: &Gpu, want_forces: bool, md: bool) -> Result<FusedOutput> {
        let (n, s) = (self.atoms, self.structures);
        let mut out = FusedOutput {
            energies: gpu.download(&self.energies)?,
            atom_energies: gpu.download(&self.atom_energies)?,
            forces: if want_forces { gpu.download(&self.forces)? } else { Vec::new() },
            faults: gpu.download(&self.faults)?,
            fault_steps: if md { gpu.download(&self.fault_steps)? } else { Vec::new() },
        };
        out.energies.truncate(s);
        out.faults.truncate(s);
        out.fault_steps.truncate(s);
        out.atom_energies.truncate(n);
        out.forces.truncate(n);
        Ok(out)
    }
}

/// A fused engine's device state that does not depend on the architecture.
struct Engine {
    gpu: Arc<Gpu>,
    scratch: DeviceScratch,
    /// Staging buffers of the last evaluation, kept for the next.
    io: Option<StagedIo>,
    /// The most threads a block of the evaluate and MD kernels may have.
    max_threads: u32,
}

impl Engine {
    fn new<A: Architecture>(gpu: Arc<Gpu>) -> Result<Self> {
        let max_threads = block_limit(&gpu, [A::EVALUATE, A::MD])?;
        Ok(Engine { gpu, scratch: DeviceScratch::default(), max_threads, io: None })
    }

    /// Energies, atom energies, (forces) and fault bits of every molecule of `batch`:
    /// one copy of the inputs to the device, one launch, one copy of the results back
    /// (through staging buffers kept for the next call).
    fn evaluate<A: Architecture>(
        &mut self,
        base: A::Args,
        batch: &Batch,
        want_forces: bool,
        floats: impl Fn(usize) -> usize,
    ) -> Result<FusedOutput> {
        check_batch(batch)?;
        let (n, s) = (batch.num_atoms(), batch.num_structures());
        if s == 0 {
            return Ok(FusedOutput::default());
        }
        let (scratch_offsets, total) = layout_offsets(batch, floats)?;
        let gpu = self.gpu.clone();
        self.scratch.reserve(&gpu, total)?;
        let inputs = Segments::new([4 * (s + 1), 8 * s, 4 * n, 12 * n]);
        let outputs = Segments::new([8 * s, 4 * s, 4 * n, 12 * n]);
        let mut io = match self.io.take() {
            Some(io) if io.fits(&inputs, &outputs) => io,
            old => {
                drop(old);
                StagedIo::new(&gpu, inputs.total, outputs.total)?
            }
        };
        let offsets: Vec<u32> = batch.offsets.iter().map(|&o| o as u32).collect();
        inputs.write(&mut io.input_host, 0, as_bytes(&offsets));
        inputs.write(&mut io.input_host, 1, as_bytes(&scratch_offsets));
        inputs.write(&mut io.input_host, 2, as_bytes(&batch.numbers));
        inputs.write(&mut io.input_host, 3, as_bytes(&batch.positions));
        let (input, output) = (gpu.address(&io.input), gpu.address(&io.output));
        // Pointer arithmetic only: each segment lies inside its buffer (`fits`).
        let at = |buffer: *mut u8, start: usize| buffer.wrapping_add(start);
        let pointers = BatchPointers {
            offsets: at(input, inputs.start[0]) as *const u32,
            scratch_offsets: at(input, inputs.start[1]) as *const u64,
            numbers: at(input, inputs.start[2]) as *const u32,
            positions: at(input, inputs.start[3]) as *mut [f32; 3],
            energies: at(output, outputs.start[0]) as *mut f64,
            faults: at(output, outputs.start[1]) as *mut u32,
            atom_energies: at(output, outputs.start[2]) as *mut f32,
            forces: at(output, outputs.start[3]) as *mut [f32; 3],
            scratch: self.scratch.address(&gpu)?,
            velocities: std::ptr::null_mut(),
            masses: std::ptr::null(),
            fault_steps: std::ptr::null_mut(),
            integrator: Integrator::default(),
            first_step: 0,
            steps: 0,
            num_structures: s as u32,
            want_forces: want_forces as u32,
        };
        let args = base.with_batch(&pointers);
        let largest = batch.offsets.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        let config = LaunchConfig {
            grid_dim: (s as u32, 1, 1),
            block_dim: (block_threads(largest, self.max_threads), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: pinned staging owned by this engine, not touched again before the
        // synchronise below; the launch's addresses: the weights of `base` (the
        // architecture's own buffers, uploaded for its sizes), the batch's segments
        // inside the staged buffers (sized by this batch's atoms and structures), the
        // scratch holding every structure's layout at its offset. All outlive the
        // launch: the call synchronises before it returns.
        unsafe {
            gpu.copy_to_device(&mut io.input, &io.input_host[..inputs.total])?;
            gpu.launch(A::EVALUATE, config, &args)?;
            gpu.copy_to_host(&mut io.output_host[..outputs.total], &io.output)?;
        }
        gpu.synchronize()?;
        let out = FusedOutput {
            energies: outputs.read(&io.output_host, 0, s),
            faults: outputs.read(&io.output_host, 1, s),
            atom_energies: outputs.read(&io.output_host, 2, n),
            forces: if want_forces { outputs.read(&io.output_host, 3, n) } else { Vec::new() },
            fault_steps: Vec::new(),
        };
        self.io = Some(io);
        Ok(out)
    }

    /// MD of every molecule of `batch` from the state in `md`, which it leaves at the
    /// last step: an evaluation of the starting positions, then one launch of all the
    /// steps.
    fn md<A: Architecture>(
        &mut self,
        base: A::Args,
        batch: &Batch,
        md: MdChunk<'_>,
        floats: impl Fn(usize) -> usize,
    ) -> Result<FusedOutput> {
        md.check(batch)?;
        let gpu = self.gpu.clone();
        let device = DeviceBatch::new(&gpu, batch, md.positions, floats)?;
        self.scratch.reserve(&gpu, device.scratch_floats)?;
        let velocities = upload_or(&gpu, md.velocities, [0.0; 3])?;
        let masses = upload_or(&gpu, md.masses, 1.0)?;
        let mut pointers = device.pointers(&gpu, self.scratch.address(&gpu)?, true);
        pointers.velocities = gpu.address(&velocities);
        pointers.masses = gpu.address(&masses);
        pointers.integrator = md.integrator;
        pointers.first_step = md.first_step;
        pointers.steps = md.steps;
        let args = base.with_batch(&pointers);
        if device.structures > 0 {
            let config = device.launch_config(self.max_threads);
            // SAFETY: the addresses are the weights of `base` and this call's device
            // batch, velocities and masses (each sized for the batch), and the scratch
            // reserved for its layouts; the downloads below synchronise before they
            // are dropped.
            unsafe {
                gpu.launch(A::EVALUATE, config, &args)?;
                // The MD kernel leaves a structure whose starting positions faulted alone.
                if md.steps > 0 {
                    gpu.launch(A::MD, config, &args)?;
                }
            }
        }
        if device.atoms > 0 {
            md.positions.copy_from_slice(&gpu.download(&device.positions)?[..device.atoms]);
            md.velocities.copy_from_slice(&gpu.download(&velocities)?[..device.atoms]);
        }
        device.output(&gpu, true, true)
    }
}

/// The fused student on one GPU: weights uploaded once; per call one upload of the
/// inputs, one launch, one download of the results.
pub struct FusedStudentGpu {
    engine: Engine,
    hidden: usize,
    blocks: usize,
    cutoff: f32,
    _tables: Vec<CudaSlice<f32>>,
    _update: Vec<[DeviceLinear; 2]>,
    head: [DeviceLinear; 3],
    block_params: CudaSlice<u8>,
    embedding: CudaSlice<f32>,
    atomref: Option<CudaSlice<f32>>,
    /// The largest atomic number the embedding has a row for.
    max_z: usize,
}

/// The student's evaluate and MD kernels.
pub(crate) use mlff_kernels::fused::entries::{STUDENT_EVALUATE as EVALUATE, STUDENT_MD as MD};

/// The bytes of a slice of plain `#[repr(C)]` values (pointers and floats).
fn as_bytes<T: Copy>(values: &[T]) -> &[u8] {
    // SAFETY: T is Copy and #[repr(C)] with no padding-dependent invariants; reading
    // its bytes (for an upload) is reading initialised memory of that length.
    unsafe { std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values)) }
}

impl FusedStudentGpu {
    pub fn new(gpu: Arc<Gpu>, w: &FusedStudentWeights) -> Result<Self> {
        let tables = w.tables.iter().map(|t| gpu.upload(t)).collect::<Result<Vec<_>>>()?;
        let update = w
            .update
            .iter()
            .map(|[a, b]| Ok([DeviceLinear::new(&gpu, a)?, DeviceLinear::new(&gpu, b)?]))
            .collect::<Result<Vec<_>>>()?;
        let params: Vec<FusedStudentBlock> = (0..w.num_blocks())
            .map(|k| FusedStudentBlock {
                table: gpu.address(&tables[k]),
                update_in: update[k][0].pointers(&gpu),
                update_out: update[k][1].pointers(&gpu),
                mixing: w.mixing[k],
                pad: 0,
            })
            .collect();
        let block_params = gpu.upload(as_bytes(&params))?;
        let head = [
            DeviceLinear::new(&gpu, &w.head[0])?,
            DeviceLinear::new(&gpu, &w.head[1])?,
            DeviceLinear::new(&gpu, &w.head[2])?,
        ];
        Ok(FusedStudentGpu {
            hidden: w.hidden,
            max_z: w.max_z(),
            blocks: w.num_blocks(),
            cutoff: w.cutoff,
            _tables: tables,
            _update: update,
            head,
            block_params,
            embedding: gpu.upload(&w.embedding)?,
            atomref: w.atomref.as_ref().map(|r| gpu.upload(r)).transpose()?,
            engine: Engine::new::<Student>(gpu)?,
        })
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.engine.gpu
    }

    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks
    }

    /// The most threads a block may have (the kernels' register use bounds it).
    pub fn max_threads(&self) -> u32 {
        self.engine.max_threads
    }

    /// The argument struct with the weights filled in and the batch pointers null.
    pub(crate) fn base_args(&self) -> FusedStudentArgs {
        let g = &self.engine.gpu;
        student_args(
            g.address(&self.block_params) as *const FusedStudentBlock,
            [0, 1, 2].map(|k| self.head[k].pointers(g)),
            g.address(&self.embedding),
            self.atomref.as_ref().map_or(std::ptr::null(), |r| g.address(r)),
            (self.hidden, self.blocks, self.cutoff),
        )
    }

    /// Makes the scratch buffer hold at least `floats` (kept and grown across calls).
    pub(crate) fn reserve_scratch(&mut self, floats: usize) -> Result<()> {
        self.engine.scratch.reserve(&self.engine.gpu, floats)
    }

    pub(crate) fn scratch_address(&self) -> Result<*mut f32> {
        self.engine.scratch.address(&self.engine.gpu)
    }

    /// Energies, atom energies, (forces) and fault bits of every molecule of `batch`.
    pub fn evaluate(&mut self, batch: &Batch, want_forces: bool) -> Result<FusedOutput> {
        check_batch_elements(self.max_z, batch)?;
        let (h, t) = (self.hidden, self.blocks);
        let base = self.base_args();
        self.engine.evaluate::<Student>(base, batch, want_forces, |n| StudentLayout::new(n, h, t).floats)
    }
}
