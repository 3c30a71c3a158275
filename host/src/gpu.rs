//! The GPU: one CUDA context, one stream, and the embedded PTX module loaded once.

use crate::error::{Error, Result};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr, LaunchConfig,
    ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The PTX module built from `kernels-gpu` at compile time.
pub const KERNELS_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
/// The architecture the PTX was generated for (`MLFF_CUDA_ARCH` at build time).
pub const KERNELS_ARCH: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_arch.txt"));

/// Threads per block for the 1-D launches.
pub const BLOCK_THREADS: u32 = 256;

pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    name: String,
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
        let stream = ctx.new_stream().map_err(Error::cuda("creating a stream"))?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(KERNELS_PTX))
            .map_err(Error::cuda("loading the embedded PTX module"))?;
        Ok(Gpu { ctx, stream, module, functions: Mutex::new(HashMap::new()), name })
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

    /// The kernel `name` of the embedded module (looked up once, then cached).
    pub fn function(&self, name: &'static str) -> Result<CudaFunction> {
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

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(Error::cuda("waiting for the GPU"))
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

/// Length as the `u32` the kernels take, or a clear error.
pub fn len_u32(len: usize, what: &str) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::InvalidInput(format!("{what}: {len} elements exceed the kernels' 32-bit indexing")))
}
