//! Output that never leaves a partial file behind, and a progress line for long inputs.

use std::io::{IsTerminal, Write};
use std::path::Path;

/// Writes to a temporary file beside the destination and renames it into place on
/// `commit`; dropped without a commit (an error), it leaves nothing. Without a path
/// it writes to standard output.
pub enum AtomicFile {
    File { temp: tempfile::NamedTempFile, path: std::path::PathBuf },
    Stdout(std::io::Stdout),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> mlff::Error + '_ {
    move |source| mlff::Error::Io { path: path.to_path_buf(), source }
}

impl AtomicFile {
    pub fn create(path: Option<&Path>) -> mlff::Result<Self> {
        let Some(path) = path else { return Ok(AtomicFile::Stdout(std::io::stdout())) };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let temp =
            tempfile::Builder::new().prefix(".mlff-").suffix(".partial").tempfile_in(dir).map_err(io_error(path))?;
        Ok(AtomicFile::File { temp, path: path.to_path_buf() })
    }

    pub fn write(&mut self, bytes: &[u8]) -> mlff::Result<()> {
        match self {
            AtomicFile::File { temp, path } => temp.write_all(bytes).map_err(io_error(path)),
            AtomicFile::Stdout(out) => out.lock().write_all(bytes).map_err(io_error(Path::new("<stdout>"))),
        }
    }

    pub fn commit(self) -> mlff::Result<()> {
        match self {
            AtomicFile::File { temp, path } => {
                temp.as_file().sync_all().map_err(io_error(&path))?;
                temp.persist(&path).map_err(|e| mlff::Error::Io { path: path.clone(), source: e.error })?;
                Ok(())
            }
            AtomicFile::Stdout(out) => out.lock().flush().map_err(io_error(Path::new("<stdout>"))),
        }
    }
}

/// "eval: 512/1000 frames" on a terminal's standard error, nothing otherwise.
pub struct Progress {
    what: &'static str,
    total: usize,
    done: usize,
    shown: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Self {
        Progress { what, total, done: 0, shown: std::io::stderr().is_terminal() }
    }

    pub fn advance(&mut self, by: usize) {
        self.done += by;
        if self.shown {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            eprint!(
                "\r{}: [{}{}] {}/{}",
                self.what,
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.done,
                self.total
            );
        }
    }

    pub fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}
