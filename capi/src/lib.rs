//! The C ABI of mlff, as declared in `include/mlff.h`: opaque model handles, status
//! codes with a thread-local error message, and no panic across the boundary (every
//! entry point runs inside `catch_unwind`).
//!
//! Every pointer the caller passes is checked for null before use; the lengths of
//! the caller's arrays are implied by `num_atoms` (C cannot tell us more), and
//! `num_atoms` is checked against the engine's limit before any slice is formed.

use mlff::{AtomVirials, Device, Error, Model, Structure};
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `mlff_status` of the header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MlffStatus {
    Ok = 0,
    ErrorArgument = 1,
    ErrorInput = 2,
    ErrorModel = 3,
    ErrorDevice = 4,
    ErrorUnsupported = 5,
    ErrorInternal = 6,
}

/// `mlff_system` of the header.
#[repr(C)]
pub struct MlffSystem {
    pub num_atoms: usize,
    pub atomic_numbers: *const i32,
    pub positions: *const f64,
    pub cell: *const f64,
    pub pbc: *const i32,
    pub energy_weights: *const f64,
}

/// `mlff_results` of the header.
#[repr(C)]
pub struct MlffResults {
    pub energy: f64,
    pub virial: [f64; 9],
    pub forces: *mut f64,
    pub atom_energies: *mut f64,
    pub atom_virials: *mut f64,
}

/// `mlff_model` of the header: a model and the device it runs on.
pub struct MlffModel {
    model: Model,
    device: Device,
}

/// The engine's atom limit (32-bit indices, see `Batch::new`), checked before any
/// slice of the caller's arrays is formed.
const MAX_ATOMS: usize = u32::MAX as usize / 2;

/// A failure: the status to return and the message for `mlff_last_error`.
struct Failure(MlffStatus, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidInput(_) => MlffStatus::ErrorInput,
            Error::InvalidModel(_) | Error::Io { .. } | Error::Write { .. } => MlffStatus::ErrorModel,
            Error::NoGpu(_) | Error::Cuda { .. } | Error::ThreadPool(_) => MlffStatus::ErrorDevice,
            Error::Unsupported(_) => MlffStatus::ErrorUnsupported,
        };
        Failure(status, e.to_string())
    }
}

fn argument(message: impl Into<String>) -> Failure {
    Failure(MlffStatus::ErrorArgument, message.into())
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // A message with an interior NUL is cut there rather than lost.
    let bytes: Vec<u8> = message.bytes().take_while(|&b| b != 0).collect();
    let message = CString::new(bytes).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs `body`, turning its failure or panic into a status and the thread's message.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> MlffStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MlffStatus::Ok,
        Ok(Err(Failure(status, message))) => {
            set_last_error(&message);
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error in mlff (please report): {what}"));
            MlffStatus::ErrorInternal
        }
    }
}

/// A NUL-terminated string argument as UTF-8.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string.
unsafe fn string_arg<'a>(s: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if s.is_null() {
        return Err(argument(format!("{what} is a null pointer")));
    }
    // SAFETY: non-null, and the caller promises NUL termination.
    unsafe { CStr::from_ptr(s) }.to_str().map_err(|_| argument(format!("{what} is not UTF-8")))
}

/// # Safety
/// `model` is null or a handle from `mlff_model_load` not yet freed.
unsafe fn handle<'a>(model: *const MlffModel) -> Result<&'a MlffModel, Failure> {
    // SAFETY: null is rejected; otherwise the caller promises a live handle.
    unsafe { model.as_ref() }.ok_or_else(|| argument("model is a null pointer"))
}

#[no_mangle]
pub extern "C" fn mlff_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

#[no_mangle]
pub extern "C" fn mlff_last_error() -> *const c_char {
    // The pointer stays valid until this thread's next failure replaces the string.
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[no_mangle]
pub extern "C" fn mlff_gpu_count() -> i32 {
    catch_unwind(mlff::gpu::device_count).map_or(0, |n| n.min(i32::MAX as usize) as i32)
}

/// # Safety
/// `symbol` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mlff_atomic_number(symbol: *const c_char) -> i32 {
    catch_unwind(|| {
        // SAFETY: as the caller promises.
        let symbol = unsafe { string_arg(symbol, "symbol") }.ok()?;
        mlff::elements::atomic_number(symbol)
    })
    .ok()
    .flatten()
    .map_or(0, |z| z as i32)
}

/// `cpu`, `cpu:N` (N threads), `gpu`, `gpu:N`, `auto` (null: auto).
fn open_device(choice: Option<&str>) -> Result<Device, Failure> {
    let choice = choice.unwrap_or("auto").trim();
    if let Some(threads) = choice.strip_prefix("cpu:") {
        let threads: usize = threads
            .parse()
            .map_err(|_| argument(format!("device {choice:?}: expected cpu:N with N a number of threads")))?;
        return Ok(Device::Cpu(mlff::cpu::Cpu::new(threads)?));
    }
    match Device::parse(choice) {
        // A rank evaluates one structure (its domain) at a time, on one device.
        Ok(Device::Set(_)) => Err(argument(format!(
            "device {choice:?} is a set of devices; a model handle (a LAMMPS rank) uses one: gpu (by rank), gpu:N or cpu"
        ))),
        Ok(device) => Ok(device),
        Err(Error::InvalidInput(m)) => Err(argument(m)),
        Err(e) => Err(e.into()),
    }
}

/// # Safety
/// `path` and `device` are null or NUL-terminated strings; `model` is null or points
/// to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn mlff_model_load(
    path: *const c_char,
    device: *const c_char,
    model: *mut *mut MlffModel,
) -> MlffStatus {
    guard(|| {
        if model.is_null() {
            return Err(argument("model (the output handle) is a null pointer"));
        }
        // SAFETY: non-null, and the caller promises storage for one pointer.
        unsafe { model.write(std::ptr::null_mut()) };
        // SAFETY: as the caller promises.
        let path = unsafe { string_arg(path, "path") }?;
        let choice = if device.is_null() {
            None
        } else {
            // SAFETY: non-null and NUL-terminated, as the caller promises.
            Some(unsafe { string_arg(device, "device") }?)
        };
        let loaded = if path == "default" { mlff::default_model()? } else { Model::load(path)? };
        let device = open_device(choice)?;
        let handle = Box::new(MlffModel { model: loaded, device });
        // SAFETY: checked non-null above.
        unsafe { model.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// # Safety
/// `model` is null or a handle from `mlff_model_load` not yet freed; it must not be
/// used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mlff_model_free(model: *mut MlffModel) {
    if model.is_null() {
        return;
    }
    // Dropping releases device memory; a panic there must not cross into C.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: a live handle from Box::into_raw, freed exactly once by contract.
        drop(unsafe { Box::from_raw(model) })
    }));
}

/// # Safety
/// `model` as for `mlff_model_free` (not freed); `cutoff` null or writable.
#[no_mangle]
pub unsafe extern "C" fn mlff_model_cutoff(model: *const MlffModel, cutoff: *mut f64) -> MlffStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(model) }?;
        // SAFETY: null is rejected; otherwise writable by contract.
        let out = unsafe { cutoff.as_mut() }.ok_or_else(|| argument("cutoff is a null pointer"))?;
        *out = h.model.cutoff() as f64;
        Ok(())
    })
}

/// # Safety
/// `model` as for `mlff_model_free` (not freed); `blocks` null or writable.
#[no_mangle]
pub unsafe extern "C" fn mlff_model_num_interactions(model: *const MlffModel, blocks: *mut i32) -> MlffStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(model) }?;
        // SAFETY: null is rejected; otherwise writable by contract.
        let out = unsafe { blocks.as_mut() }.ok_or_else(|| argument("blocks is a null pointer"))?;
        *out = h.model.num_interactions().min(i32::MAX as usize) as i32;
        Ok(())
    })
}

/// # Safety
/// `model` as for `mlff_model_free` (not freed).
#[no_mangle]
pub unsafe extern "C" fn mlff_model_check_element(model: *const MlffModel, atomic_number: i32) -> MlffStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(model) }?;
        let z = u32::try_from(atomic_number).map_err(|_| argument(format!("atomic number {atomic_number}")))?;
        Ok(h.model.check_element(z)?)
    })
}

/// # Safety
/// `model` as for `mlff_model_free` (not freed); `buffer` null or `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn mlff_model_device(model: *const MlffModel, buffer: *mut c_char, size: usize) -> MlffStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(model) }?;
        if buffer.is_null() {
            return Err(argument("buffer is a null pointer"));
        }
        let text = h.device.describe();
        if text.len() + 1 > size {
            return Err(argument(format!("buffer of {size} bytes; the device description needs {}", text.len() + 1)));
        }
        // SAFETY: `buffer` holds `size` ≥ len + 1 bytes by contract.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buffer as *mut u8, text.len());
            buffer.add(text.len()).write(0);
        }
        Ok(())
    })
}

/// # Safety
/// `model` as for `mlff_model_free` (not freed); `system` and `results` null or valid,
/// with every non-null array of the length the header gives.
#[no_mangle]
pub unsafe extern "C" fn mlff_evaluate(
    model: *mut MlffModel,
    system: *const MlffSystem,
    results: *mut MlffResults,
) -> MlffStatus {
    guard(|| {
        // SAFETY: as the caller promises.
        let h = unsafe { handle(model) }?;
        // SAFETY: null is rejected; otherwise valid by contract.
        let system = unsafe { system.as_ref() }.ok_or_else(|| argument("system is a null pointer"))?;
        // SAFETY: as above.
        let results = unsafe { results.as_mut() }.ok_or_else(|| argument("results is a null pointer"))?;
        // SAFETY: the arrays of `system` have the header's lengths by contract.
        let (structure, weights) = unsafe { read_system(system) }?;
        let virials = if results.atom_virials.is_null() { AtomVirials::Skip } else { AtomVirials::Compute };
        let p = h.model.evaluate_weighted(&h.device, &structure, &weights, virials)?;
        let n = structure.len();
        results.energy = p.energy;
        results.virial = std::array::from_fn(|k| p.virial[k / 3][k % 3]);
        // SAFETY (all three): non-null outputs hold 3n, n and 9n doubles by contract,
        // and n ≤ MAX_ATOMS keeps the byte counts far below isize::MAX.
        if !results.forces.is_null() {
            let forces = unsafe { std::slice::from_raw_parts_mut(results.forces, 3 * n) };
            for (out, f) in forces.chunks_exact_mut(3).zip(&p.forces) {
                out.copy_from_slice(f);
            }
        }
        if !results.atom_energies.is_null() {
            unsafe { std::slice::from_raw_parts_mut(results.atom_energies, n) }.copy_from_slice(&p.atom_energies);
        }
        if let (false, Some(atom_virials)) = (results.atom_virials.is_null(), &p.atom_virials) {
            let out = unsafe { std::slice::from_raw_parts_mut(results.atom_virials, 9 * n) };
            for (o, w) in out.chunks_exact_mut(9).zip(atom_virials) {
                for (k, x) in o.iter_mut().enumerate() {
                    *x = w[k / 3][k % 3];
                }
            }
        }
        Ok(())
    })
}

/// The caller's arrays as a structure and its energy weights.
///
/// # Safety
/// Every non-null array of `system` has the length the header gives for `num_atoms`.
unsafe fn read_system(system: &MlffSystem) -> Result<(Structure, Vec<f64>), Failure> {
    let n = system.num_atoms;
    if n > MAX_ATOMS {
        return Err(argument(format!("{n} atoms exceed the engine's limit of {MAX_ATOMS}")));
    }
    let array = |ptr: *const f64, len: usize, what: &str| -> Result<&[f64], Failure> {
        match (ptr.is_null(), len) {
            (_, 0) => Ok(&[]),
            (true, _) => Err(argument(format!("{what} is a null pointer"))),
            // SAFETY: non-null, `len` elements by contract, len ≤ 9 · MAX_ATOMS.
            (false, _) => Ok(unsafe { std::slice::from_raw_parts(ptr, len) }),
        }
    };
    let numbers: &[i32] = match (system.atomic_numbers.is_null(), n) {
        (_, 0) => &[],
        (true, _) => return Err(argument("atomic_numbers is a null pointer")),
        // SAFETY: non-null, n elements by contract.
        (false, _) => unsafe { std::slice::from_raw_parts(system.atomic_numbers, n) },
    };
    let numbers = numbers
        .iter()
        .enumerate()
        .map(|(i, &z)| u32::try_from(z).map_err(|_| argument(format!("atom {i} has atomic number {z}"))))
        .collect::<Result<Vec<u32>, Failure>>()?;
    let positions = array(system.positions, 3 * n, "positions")?.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
    let cell = if system.cell.is_null() {
        None
    } else {
        let c = array(system.cell, 9, "cell")?;
        Some(std::array::from_fn(|a| std::array::from_fn(|b| c[3 * a + b])))
    };
    let pbc = if system.pbc.is_null() {
        [false; 3]
    } else {
        // SAFETY: non-null, 3 flags by contract.
        let flags = unsafe { std::slice::from_raw_parts(system.pbc, 3) };
        std::array::from_fn(|a| flags[a] != 0)
    };
    let weights = if system.energy_weights.is_null() {
        vec![1.0; n]
    } else {
        array(system.energy_weights, n, "energy_weights")?.to_vec()
    };
    Ok((Structure { numbers, positions, cell, pbc }, weights))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        // SAFETY: mlff_last_error returns a NUL-terminated string owned by this thread.
        unsafe { CStr::from_ptr(mlff_last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let status = guard(|| panic!("boom at the boundary"));
        assert_eq!(status, MlffStatus::ErrorInternal);
        assert!(last_error().contains("boom at the boundary"), "{}", last_error());
        // Messages are per thread.
        let other = std::thread::spawn(last_error).join().unwrap();
        assert_eq!(other, "");
    }

    #[test]
    fn engine_errors_map_to_their_codes() {
        assert_eq!(guard(|| Err(Error::InvalidInput("x".into()).into())), MlffStatus::ErrorInput);
        assert_eq!(guard(|| Err(Error::InvalidModel("x".into()).into())), MlffStatus::ErrorModel);
        assert_eq!(guard(|| Err(Error::NoGpu("x".into()).into())), MlffStatus::ErrorDevice);
        assert_eq!(guard(|| Err(Error::Unsupported("x".into()).into())), MlffStatus::ErrorUnsupported);
        assert_eq!(guard(|| Err(argument("a\0b"))), MlffStatus::ErrorArgument);
        assert_eq!(last_error(), "a", "a message is cut at an interior NUL");
    }
}
