//! One error type for everything a user can reach.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable GPU: no driver library, no device, or the driver refused to start.
    #[error("no CUDA device: {0}")]
    NoGpu(String),
    /// A CUDA driver call failed; `during` says what we were doing.
    #[error("CUDA error while {during}: {source}")]
    Cuda {
        during: String,
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// The caller passed something the engine cannot compute with.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A model file is unreadable, inconsistent or of an unknown kind.
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The request is valid but this build cannot serve it (yet).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The CPU thread pool could not be created.
    #[error("cannot start the CPU thread pool: {0}")]
    ThreadPool(String),
}

impl Error {
    pub(crate) fn cuda(during: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
        let during = during.into();
        move |source| Error::Cuda { during, source }
    }

    /// The same error, an invalid-input message prefixed with where it arose
    /// ("MD step 12", "in.xyz: frames 0..40"); other kinds pass unchanged.
    pub fn in_context(self, context: impl std::fmt::Display) -> Error {
        match self {
            Error::InvalidInput(m) => Error::InvalidInput(format!("{context}: {m}")),
            other => other,
        }
    }
}

/// `Err(Error::InvalidInput)` with a formatted message.
macro_rules! invalid_input {
    ($($arg:tt)*) => { Err($crate::error::Error::InvalidInput(format!($($arg)*))) };
}
pub(crate) use invalid_input;
