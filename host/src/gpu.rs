//! The GPU: one CUDA context, one stream, and the embedded PTX module loaded once.

use crate::error::{Error, Result};
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

/// Lets `f` take `bytes` of dynamic shared memory: beyond 48 KB a kernel must opt in.
pub fn allow_shared_memory(f: &CudaFunction, kernel: &str, bytes: u32) -> Result<()> {
    if bytes <= DEFAULT_SHARED_BYTES {
        return Ok(());
    }
    f.set_attribute(
        cudarc::driver::sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        bytes as i32,
    )
    .map_err(Error::cuda(format!("allowing {kernel} {bytes} bytes of shared memory")))
}

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    name: String,
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
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("the CUDA driver library (libcuda.so) was not found".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Some("the CUDA driver reports no device".into()),
        Ok(_) => None,
        Err(e) => Some(format!("the CUDA driver failed to start: {e}")),
    }
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
        // Everything runs on one stream in order, so cudarc's per-buffer events (which
        // would also be recorded into captured CUDA graphs) are not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(Error::cuda("creating a stream"))?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(KERNELS_PTX))
            .map_err(Error::cuda("loading the embedded PTX module"))?;
        let profile = std::env::var_os("MLFF_PROFILE_LAUNCHES").map(|_| Mutex::new(HashMap::new()));
        Ok(Gpu { ctx, stream, module, functions: Mutex::new(HashMap::new()), name, profile })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ordinal(&self) -> usize {
        self.ctx.ordinal()
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// (free, total) device memory in bytes.
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.ctx.mem_get_info().map_err(Error::cuda("querying memory"))
    }

    /// The entry point of `kernel` in the embedded module (looked up once, then cached).
    pub fn function<A: KernelArgs>(&self, kernel: Kernel<A>) -> Result<CudaFunction> {
        let name = kernel.name();
        let mut cache = self.functions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(f) = cache.get(name) {
            return Ok(f.clone());
        }
        let f = self.module.load_function(name).map_err(Error::cuda(format!("finding kernel `{name}` in the PTX")))?;
        cache.insert(name, f.clone());
        Ok(f)
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

    /// Launches `kernel` with its argument struct passed by value.
    pub fn launch<A: KernelArgs>(&self, kernel: Kernel<A>, config: LaunchConfig, args: &A) -> Result<()> {
        let f = self.function(kernel)?;
        let kernel = kernel.name();
        allow_shared_memory(&f, kernel, config.shared_mem_bytes)?;
        let by_value = ByValue(*args);
        let mut launch = self.stream.launch_builder(&f);
        launch.arg(&by_value);
        let profile = self.profile.as_ref().filter(|_| !self.capturing());
        let start = profile.map(|_| {
            let _ = self.stream.synchronize();
            std::time::Instant::now()
        });
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
    pub fn address<T>(&self, buffer: &CudaSlice<T>) -> *mut T {
        let (ptr, _sync) = buffer.device_ptr(&self.stream);
        ptr as *mut T
    }

    /// Zeroes a buffer on the stream.
    pub fn clear<T: DeviceRepr + ValidAsZeroBits>(&self, buffer: &mut CudaSlice<T>) -> Result<()> {
        self.stream.memset_zeros(buffer).map_err(Error::cuda("clearing a device buffer"))
    }

    /// Enqueues a copy from (pinned) host memory; `host` must stay alive and unchanged
    /// until the stream has passed it.
    pub fn copy_to_device<T>(&self, device: &mut CudaSlice<T>, host: &[T]) -> Result<()> {
        if host.len() > device.len() {
            return crate::error::invalid_input!("copy of {} elements into a buffer of {}", host.len(), device.len());
        }
        let (ptr, _sync) = device.device_ptr_mut(&self.stream);
        unsafe { cudarc::driver::result::memcpy_htod_async(ptr, host, self.stream.cu_stream()) }
            .map_err(Error::cuda("copying to the device"))
    }

    /// Enqueues a copy into (pinned) host memory; read `host` only after a synchronize.
    pub fn copy_to_host<T>(&self, host: &mut [T], device: &CudaSlice<T>) -> Result<()> {
        if host.len() > device.len() {
            return crate::error::invalid_input!("copy of {} elements from a buffer of {}", host.len(), device.len());
        }
        let (ptr, _sync) = device.device_ptr(&self.stream);
        unsafe { cudarc::driver::result::memcpy_dtoh_async(host, ptr, self.stream.cu_stream()) }
            .map_err(Error::cuda("copying from the device"))
    }

    /// Whether the stream is capturing a CUDA graph (no synchronisation allowed).
    pub fn capturing(&self) -> bool {
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
    pub fn mark(&self) -> Result<cudarc::driver::CudaEvent> {
        self.stream.record_event(None).map_err(Error::cuda("recording an event"))
    }

    pub fn wait_for(&self, mark: &cudarc::driver::CudaEvent) -> Result<()> {
        mark.synchronize().map_err(Error::cuda("waiting for the GPU"))
    }

    /// Captures what `enqueue` puts on the stream as one CUDA graph (not launched).
    pub fn capture(&self, enqueue: impl FnOnce() -> Result<()>) -> Result<cudarc::driver::CudaGraph> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(Error::cuda("starting a CUDA graph capture"))?;
        let enqueued = enqueue();
        let captured = self.stream.end_capture(CUgraphInstantiate_flags(0));
        enqueued?;
        captured
            .map_err(Error::cuda("instantiating the CUDA graph"))?
            .ok_or_else(|| Error::Unsupported("the CUDA graph capture came back empty".into()))
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
pub struct Pinned<T: Copy + Default> {
    ptr: *mut T,
    len: usize,
}

unsafe impl<T: Copy + Default + Send> Send for Pinned<T> {}
unsafe impl<T: Copy + Default + Sync> Sync for Pinned<T> {}

impl<T: Copy + Default> Pinned<T> {
    pub fn new(len: usize) -> Result<Self> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        let ptr = unsafe { cudarc::driver::result::malloc_host(bytes, 0) }
            .map_err(Error::cuda(format!("allocating {bytes} bytes of pinned host memory")))?
            as *mut T;
        for k in 0..len.max(1) {
            unsafe { ptr.add(k).write(T::default()) };
        }
        Ok(Pinned { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Copy + Default> std::ops::Deref for Pinned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Copy + Default> std::ops::DerefMut for Pinned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy + Default> Drop for Pinned<T> {
    fn drop(&mut self) {
        unsafe {
            let _ = cudarc::driver::result::free_host(self.ptr as *mut std::ffi::c_void);
        }
    }
}

/// A 1-D launch covering `n` threads in blocks of `block` (a multiple of 32).
pub fn grid_1d(n: usize, block: u32) -> Result<LaunchConfig> {
    let blocks = n.div_ceil(block as usize).max(1);
    if blocks > i32::MAX as usize {
        return crate::error::invalid_input!("{n} threads exceed the largest 1-D grid");
    }
    Ok(LaunchConfig { grid_dim: (blocks as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 })
}

/// One warp per atom (the row kernels: neighbour rows, edge gradients, forces), in
/// blocks of 128 threads.
pub fn warp_per_atom(atoms: usize) -> Result<LaunchConfig> {
    grid_1d(32 * atoms, 128)
}

/// Length as the `u32` the kernels take, or a clear error.
pub fn len_u32(len: usize, what: &str) -> Result<u32> {
    u32::try_from(len)
        .map_err(|_| Error::InvalidInput(format!("{what}: {len} elements exceed the kernels' 32-bit indexing")))
}
