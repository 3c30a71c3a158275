//! The GPU: one CUDA context, one stream, and the embedded PTX module loaded once.
//!
//! Launching a kernel and the asynchronous copies are `unsafe` and crate-private:
//! the GPU reads device addresses and host memory after the call returns, which
//! Rust's borrow checker cannot follow. The crate's typed wrappers (the neighbour
//! list, the model workspace, MD, the self-tests) own the buffers they pass, size
//! them for the launch and keep them alive for as long as the stream or a captured
//! CUDA graph may use them; what is public here is safe.

use crate::error::{Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use mlff_kernels::kernel::{Kernel, KernelArgs};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The PTX module built from `kernels-gpu` at compile time.
pub const KERNELS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
/// The architecture the PTX was generated for (`MLFF_CUDA_ARCH` at build time).
pub const KERNELS_ARCH: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_arch.txt"));

/// Threads per block for the 1-D launches.
pub const BLOCK_THREADS: u32 = 256;

/// Dynamic shared memory a kernel may take without opting in (bytes).
const DEFAULT_SHARED_BYTES: u32 = 48 * 1024;

/// What the launch choices need to know about a device (read from it when it opens).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceProperties {
    /// Streaming multiprocessors.
    pub sm_count: usize,
    /// Dynamic shared memory one block may opt in to, in bytes.
    pub max_shared_bytes: usize,
}

impl DeviceProperties {
    /// The H100 and H200 (SXM) the defaults were measured on: 132 SMs, 227 KB of
    /// shared memory a block.
    pub const H100: DeviceProperties = DeviceProperties { sm_count: 132, max_shared_bytes: 227 * 1024 };
}

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    name: String,
    properties: DeviceProperties,
    /// With `MLFF_PROFILE_LAUNCHES` set: per kernel, launches and seconds (each launch
    /// synchronised, so the times include launch latency); printed when dropped.
    profile: Option<Mutex<HashMap<&'static str, (usize, f64)>>>,
}

impl Drop for Gpu {
    fn drop(&mut self) {
        if let Some(profile) = &self.profile {
            let table = profile.lock().unwrap_or_else(|p| p.into_inner());
            let mut rows: Vec<_> = table.iter().collect();
            rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
            eprintln!("kernel launches (synchronised each):");
            for (name, (count, seconds)) in rows {
                eprintln!("  {name:40} {count:8} launches {:10.1} µs each", seconds / *count as f64 * 1e6);
            }
        }
    }
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({} #{})", self.name, self.ctx.ordinal())
    }
}

/// Why no GPU can be used here, or `None` if one can. Never panics (cudarc's loader
/// panics when the driver library is absent, so that is checked first).
pub fn unavailable_reason() -> Option<String> {
    // SAFETY: only tries to load the driver library (dlopen) and reports whether it
    // could; it calls nothing in it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("the CUDA driver library (libcuda.so) was not found".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Some("the CUDA driver reports no device".into()),
        Ok(_) => None,
        Err(e) => Some(format!("the CUDA driver failed to start: {e}")),
    }
}

/// How many CUDA devices the driver reports (0 where no driver or device is usable).
pub fn device_count() -> usize {
    if unavailable_reason().is_some() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

impl Gpu {
    /// Opens device `ordinal` and loads the kernels.
    pub fn new(ordinal: usize) -> Result<Self> {
        if let Some(reason) = unavailable_reason() {
            return Err(Error::NoGpu(reason));
        }
        let count = CudaContext::device_count().map_err(Error::cuda("counting devices"))?;
        if ordinal >= count as usize {
            return Err(Error::NoGpu(format!("device #{ordinal} requested but only {count} present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(Error::cuda("creating the CUDA context"))?;
        let name = ctx.name().map_err(Error::cuda("reading the device name"))?;
        let (major, minor) = ctx.compute_capability().map_err(Error::cuda("reading the compute capability"))?;
        let built_for: u32 = KERNELS_ARCH.trim_start_matches("sm_").parse().unwrap_or(0);
        if ((major * 10 + minor) as u32) < built_for {
            return Err(Error::NoGpu(format!(
                "{name} is sm_{major}{minor} but the kernels were built for {KERNELS_ARCH}; rebuild with MLFF_CUDA_ARCH=sm_{major}{minor}"
            )));
        }
        let attribute = |attribute: CUdevice_attribute, what: &str| -> Result<usize> {
            let value = ctx.attribute(attribute).map_err(Error::cuda(format!("reading the device's {what}")))?;
            usize::try_from(value).map_err(|_| Error::NoGpu(format!("{name} reports {value} as its {what}")))
        };
        let properties = DeviceProperties {
            sm_count: attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "SM count")?,
            max_shared_bytes: attribute(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                "shared memory per block",
            )?,
        };
        // Everything runs on one stream in order, so cudarc's per-buffer events (which
        // would also be recorded into captured CUDA graphs) are not needed.
        // SAFETY: cudarc's buffers then do not wait for their last use before being
        // freed or read on another stream; this crate uses one stream per context, and
        // its wrappers keep every buffer a launch, copy or captured graph uses alive
        // for as long as that work may run (see the module comment).
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(Error::cuda("creating a stream"))?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(KERNELS_PTX))
            .map_err(Error::cuda("loading the embedded PTX module"))?;
        let profile = std::env::var_os("MLFF_PROFILE_LAUNCHES").map(|_| Mutex::new(HashMap::new()));
        Ok(Gpu { ctx, stream, module, functions: Mutex::new(HashMap::new()), name, properties, profile })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    /// SM count and shared memory, as the device reports them.
    pub fn properties(&self) -> DeviceProperties {
        self.properties
    }

    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Makes this GPU's context the calling thread's current one. cudarc binds it
    /// before its own calls, but the raw copies and pinned allocations here use the
    /// current context: a thread that serves a GPU of a device set binds it first.
    pub fn bind_to_thread(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(Error::cuda(format!("making GPU {}'s context current", self.ordinal())))
    }

    /// (free, total) device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(Error::cuda("querying memory"))
    }

    /// The entry point of `kernel` in the embedded module (looked up once, then cached).
    fn function<A: KernelArgs>(&self, kernel: Kernel<A>) -> Result<CudaFunction> {
        let name = kernel.name();
        let mut cache = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = cache.get(name) {
            return Ok(f.clone());
        }
        let f = self.module.load_function(name).map_err(Error::cuda(format!("finding kernel `{name}` in the PTX")))?;
        cache.insert(name, f.clone());
        Ok(f)
    }

    /// The most threads a block of `kernel` may have (its registers bound it).
    pub(crate) fn max_threads_per_block<A: KernelArgs>(&self, kernel: Kernel<A>) -> Result<u32> {
        let limit = self
            .function(kernel)?
            .max_threads_per_block()
            .map_err(Error::cuda(format!("reading the block limit of {}", kernel.name())))?;
        Ok(limit.max(32) as u32)
    }

    /// Lets `f` take `bytes` of dynamic shared memory: beyond 48 KB a kernel must opt
    /// in, and no block may take more than the device has.
    fn allow_shared_memory(&self, f: &CudaFunction, kernel: &str, bytes: u32) -> Result<()> {
        if bytes as usize > self.properties.max_shared_bytes {
            return Err(Error::Unsupported(format!(
                "{kernel} needs {bytes} bytes of shared memory a block; {} has {}",
                self.name, self.properties.max_shared_bytes
            )));
        }
        if bytes <= DEFAULT_SHARED_BYTES {
            return Ok(());
        }
        f.set_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
            .map_err(Error::cuda(format!("allowing {kernel} {bytes} bytes of shared memory")))
    }

    pub fn upload<T: DeviceRepr>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(data).map_err(Error::cuda(format!("copying {} elements to the device", data.len())))
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(len).map_err(Error::cuda(format!("allocating {len} elements on the device")))
    }

    pub fn download<T: DeviceRepr + Clone + Default>(&self, buffer: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(buffer).map_err(Error::cuda("copying results from the device"))
    }

    /// Launches `kernel` with `args`, its argument struct, passed by value.
    ///
    /// # Safety
    /// Every device address in `args` must point into a buffer of this GPU that holds
    /// at least what the kernel reads or writes given the other fields of `args`
    /// (counts, strides, capacities; [`Gpu::device_ptr`] checks a length when the
    /// address is taken), and each buffer must stay allocated, and not be written by
    /// the host, until the stream has passed the launch, or for as long as a CUDA
    /// graph it was captured into may be replayed.
    pub(crate) unsafe fn launch<A: KernelArgs>(&self, kernel: Kernel<A>, config: LaunchConfig, args: &A) -> Result<()> {
        let f = self.function(kernel)?;
        let kernel = kernel.name();
        self.allow_shared_memory(&f, kernel, config.shared_mem_bytes)?;
        let by_value = ByValue(*args);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&by_value);
        let profile = self.profile.as_ref().filter(|_| !self.capturing());
        let start = profile.map(|_| {
            let _ = self.stream.synchronize();
            std::time::Instant::now()
        });
        // SAFETY: `f` takes one parameter, `A` by value (the `Kernel<A>` handle says so,
        // written beside the entry point by `kernels!`); the addresses in it are valid
        // for the kernel by this function's contract.
        unsafe { launch.launch(config) }.map_err(Error::cuda(format!("launching {kernel}")))?;
        if let (Some(profile), Some(start)) = (profile, start) {
            self.synchronize()?;
            let mut table = profile.lock().unwrap_or_else(|p| p.into_inner());
            let entry = table.entry(kernel).or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += start.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Device address of a buffer, for the kernels' argument structs.
    pub(crate) fn address<T>(&self, buffer: &CudaSlice<T>) -> *mut T {
        let (ptr, _sync) = buffer.device_ptr(&self.stream);
        ptr as *mut T
    }

    /// Device address of a buffer that a kernel will use `len` elements of, checked:
    /// an error (not an out-of-bounds access) if the buffer is shorter.
    pub(crate) fn device_ptr<T>(&self, buffer: &CudaSlice<T>, len: usize) -> Result<*mut T> {
        if buffer.len() < len {
            return Err(Error::Unsupported(format!(
                "internal: a kernel would use {len} elements of a device buffer of {}",
                buffer.len()
            )));
        }
        Ok(self.address(buffer))
    }

    /// Zeroes a buffer on the stream.
    pub(crate) fn clear<T: DeviceRepr + ValidAsZeroBits>(&self, buffer: &mut CudaSlice<T>) -> Result<()> {
        self.stream.memset_zeros(buffer).map_err(Error::cuda("clearing a device buffer"))
    }

    /// Enqueues a copy from host memory (pinned, for it to be asynchronous).
    ///
    /// # Safety
    /// `host` must stay allocated and unchanged until the stream has passed the copy,
    /// or for as long as a CUDA graph the copy was captured into may be replayed.
    pub(crate) unsafe fn copy_to_device<T>(&self, device: &mut CudaSlice<T>, host: &[T]) -> Result<()> {
        if host.len() > device.len() {
            return crate::error::invalid_input!("copy of {} elements into a buffer of {}", host.len(), device.len());
        }
        let (ptr, _sync) = device.device_ptr_mut(&self.stream);
        // SAFETY: the destination holds `host.len()` elements (checked above); the
        // source stays valid for the copy by this function's contract.
        unsafe { cudarc::driver::result::memcpy_htod_async(ptr, host, self.stream.cu_stream()) }
            .map_err(Error::cuda("copying to the device"))
    }

    /// Enqueues a copy into host memory (pinned, for it to be asynchronous).
    ///
    /// # Safety
    /// `host` must stay allocated, and be neither read nor written, until the stream
    /// has passed the copy (or a CUDA graph it was captured into has finished a replay).
    pub(crate) unsafe fn copy_to_host<T>(&self, host: &mut [T], device: &CudaSlice<T>) -> Result<()> {
        if host.len() > device.len() {
            return crate::error::invalid_input!("copy of {} elements from a buffer of {}", host.len(), device.len());
        }
        let (ptr, _sync) = device.device_ptr(&self.stream);
        // SAFETY: the source holds `host.len()` elements (checked above); the
        // destination stays valid and untouched for the copy by this function's contract.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(host, ptr, self.stream.cu_stream()) }
            .map_err(Error::cuda("copying from the device"))
    }

    /// Whether the stream is capturing a CUDA graph (no synchronisation allowed).
    pub(crate) fn capturing(&self) -> bool {
        matches!(
            self.stream.capture_status(),
            Ok(cudarc::driver::sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_ACTIVE)
        )
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(Error::cuda("waiting for the GPU"))
    }

    /// Records the work enqueued so far; `wait_for` blocks until the GPU has passed it
    /// (the host can work on earlier results meanwhile).
    pub(crate) fn mark(&self) -> Result<cudarc::driver::CudaEvent> {
        self.stream.record_event(None).map_err(Error::cuda("recording an event"))
    }

    pub(crate) fn wait_for(&self, mark: &cudarc::driver::CudaEvent) -> Result<()> {
        mark.synchronize().map_err(Error::cuda("waiting for the GPU"))
    }

    /// Captures what `enqueue` puts on the stream as one CUDA graph (not launched).
    pub(crate) fn capture(&self, enqueue: impl FnOnce() -> Result<()>) -> Result<Graph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(Error::cuda("starting a CUDA graph capture"))?;
        let enqueued = enqueue();
        let captured = self.stream.end_capture(CUgraphInstantiate_flags(0));
        enqueued?;
        captured
            .map_err(Error::cuda("instantiating the CUDA graph"))?
            .map(Graph)
            .ok_or_else(|| Error::Unsupported("the CUDA graph capture came back empty".into()))
    }
}

/// A captured, instantiated CUDA graph, replayed on the stream it was captured on.
/// Unlike cudarc's `CudaGraph` it may move to another thread, so that a model's or an
/// MD run's GPU state can be driven from the thread that serves its GPU in a device set.
pub(crate) struct Graph(cudarc::driver::CudaGraph);

// SAFETY: the driver lets a graph and its executable instance be used from any thread,
// as long as calls on one graph are not concurrent (CUDA programming guide, "Graph
// object thread safety"); cudarc binds the graph's context to the calling thread before
// each launch and before the destruction. `Graph` is not `Sync`, so only its one owner
// can launch it, one call at a time.
unsafe impl Send for Graph {}

impl Graph {
    /// Replays the graph on its stream.
    pub(crate) fn launch(&self) -> std::result::Result<(), cudarc::driver::DriverError> {
        self.0.launch()
    }
}

/// A kernel argument struct, passed by value (its layout is `#[repr(C)]` in
/// `mlff-kernels`, shared with the device code).
#[repr(transparent)]
struct ByValue<A>(A);
// SAFETY: `KernelArgs` types are `#[repr(C)]` plain values and device addresses, so
// their bytes are what the kernel's parameter expects (`repr(transparent)` keeps them).
unsafe impl<A: KernelArgs> DeviceRepr for ByValue<A> {}

/// Page-locked host memory, so copies are asynchronous and can overlap.
pub(crate) struct Pinned<T: Copy + Default> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: `Pinned` owns its allocation like a `Box<[T]>`; moving or sharing it across
// threads is as safe as for the `T`s in it.
unsafe impl<T: Copy + Default + Send> Send for Pinned<T> {}
// SAFETY: as above.
unsafe impl<T: Copy + Default + Sync> Sync for Pinned<T> {}

impl<T: Copy + Default> Pinned<T> {
    pub(crate) fn new(len: usize) -> Result<Self> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        // SAFETY: a plain allocation of `bytes` bytes of page-locked memory; the
        // pointer is checked by cudarc (an error, not null).
        let ptr = unsafe { cudarc::driver::result::malloc_host(bytes, 0) }
            .map_err(Error::cuda(format!("allocating {bytes} bytes of pinned host memory")))?
            as *mut T;
        for k in 0..len.max(1) {
            // SAFETY: k < len.max(1), within the allocation, which `malloc_host` aligns
            // for any `T` (page alignment).
            unsafe { ptr.add(k).write(T::default()) };
        }
        Ok(Pinned { ptr, len })
    }
}

impl<T: Copy + Default> std::ops::Deref for Pinned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised elements (written in `new`), owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Copy + Default> std::ops::DerefMut for Pinned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy + Default> Drop for Pinned<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `malloc_host` and is freed once; whoever enqueued
        // copies into or out of it waited for them before dropping it.
        unsafe {
            let _ = cudarc::driver::result::free_host(self.ptr as *mut std::ffi::c_void);
        }
    }
}

/// A 1-D launch covering `n` threads in blocks of `block` (a multiple of 32).
pub(crate) fn grid_1d(n: usize, block: u32) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(block as usize).max(1);
    if blocks > i32::MAX as usize {
        return crate::error::invalid_input!("{n} threads exceed the largest 1-D grid");
    }
    Ok(LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 })
}

/// One warp per atom (the row kernels: neighbour rows, edge gradients, forces), in
/// blocks of 128 threads.
pub(crate) fn warp_per_atom(atoms: usize) -> Result<LaunchConfig> {
    grid_1d(32 * atoms, 128)
}

/// Length as the `u32` the kernels take, or a clear error.
pub(crate) fn len_u32(len: usize, what: &str) -> Result<u32> {
    u32::try_from(len)
        .map_err(|_| Error::InvalidInput(format!("{what}: {len} elements exceed the kernels' 32-bit indexing")))
}
