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
    /// A file could not be read (missing, unreadable, a directory, …).
    #[error("cannot read {path}: {}", describe(source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An output could not be written (disk full, broken pipe, read-only, a directory, …).
    #[error("cannot write {path}: {}", describe(source))]
    Write {
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

/// The system's message, with a plain word first for the failures users meet most.
fn describe(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let why = match e.kind() {
        StorageFull => "the disk is full",
        QuotaExceeded => "the disk quota is exceeded",
        BrokenPipe => "broken pipe (the reading end was closed)",
        IsADirectory => "it is a directory",
        ReadOnlyFilesystem => "the file system is read-only",
        PermissionDenied => "permission denied",
        NotFound => "no such file or directory",
        _ => return e.to_string(),
    };
    match e.raw_os_error() {
        Some(code) => format!("{why} (os error {code})"),
        // Our own errors (no OS code) carry their plain message already.
        None => e.to_string(),
    }
}

/// `Err(Error::InvalidInput)` with a formatted message.
macro_rules! invalid_input {
    ($($arg:tt)*) => { Err($crate::error::Error::InvalidInput(format!($($arg)*))) };
}
pub(crate) use invalid_input;
