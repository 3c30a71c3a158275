//! The engine's errors as Python exceptions, with the engine's message.

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::PyErr;

/// `InvalidInput` and `InvalidModel` are the caller's to fix (`ValueError`); a file
/// that cannot be read is an `OSError` of the matching kind; the rest (no GPU, a CUDA
/// failure, an unsupported request, no thread pool) are `RuntimeError`s.
pub fn to_py(error: mlff::Error) -> PyErr {
    let message = error.to_string();
    match error {
        mlff::Error::InvalidInput(_) | mlff::Error::InvalidModel(_) => PyValueError::new_err(message),
        mlff::Error::Io { source, .. } | mlff::Error::Write { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
            _ => PyOSError::new_err(message),
        },
        mlff::Error::NoGpu(_) | mlff::Error::Cuda { .. } | mlff::Error::Unsupported(_) | mlff::Error::ThreadPool(_) => {
            PyRuntimeError::new_err(message)
        }
    }
}

/// Runs engine code and catches a panic, giving its message. The engine's contract
/// is that no input makes it panic, so one is a bug; PyO3 would raise it as a
/// `PanicException`, which derives from `BaseException` and so escapes the
/// `except Exception` of the caller's error handling.
pub fn catch_panic<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    // Unwind safety: what a panic can leave half-done is the engine's GPU state
    // behind its own mutex (which it recovers from a poisoned lock) or a `Dynamics`,
    // which `dynamics.rs` marks unusable after a panic.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into())
    })
}

/// The `RuntimeError` of an engine panic.
pub fn internal_error(message: &str) -> PyErr {
    PyRuntimeError::new_err(format!("internal error in the mlff engine (a bug; please report it): {message}"))
}

/// Engine code to a `PyResult`, errors and panics included.
pub fn guarded<T>(work: impl FnOnce() -> mlff::Result<T>) -> pyo3::PyResult<T> {
    match catch_panic(work) {
        Ok(result) => result.py(),
        Err(message) => Err(internal_error(&message)),
    }
}

/// `Result<T, mlff::Error>` into `PyResult<T>`.
pub trait IntoPyResult<T> {
    fn py(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPyResult<T> for mlff::Result<T> {
    fn py(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}

/// A `ValueError` with a formatted message.
macro_rules! value_error {
    ($($arg:tt)*) => { Err(pyo3::exceptions::PyValueError::new_err(format!($($arg)*))) };
}
pub(crate) use value_error;
