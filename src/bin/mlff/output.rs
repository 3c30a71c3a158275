//! Output that never damages or loses a file, and a progress line for long inputs.
//!
//! A regular file (or a new one) is written to a temporary file beside it and renamed
//! into place when complete: a failed or interrupted run leaves the old file as it
//! was and no temporary behind. A symbolic link is followed, so the file it points to
//! is replaced and the link kept. A file that is not regular (`/dev/null`, a FIFO, a
//! terminal, `/dev/stdout`) is written directly: renaming over it would replace the
//! device by a plain file. An existing file keeps its permissions (and, where we may,
//! its owner); a new one gets 0666 less the umask, as any program's output does.

use crate::signals;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> mlff::Error + '_ {
    move |source| mlff::Error::Write { path: path.to_path_buf(), source }
}

/// Where an output path leads once its symbolic links are followed.
#[derive(Debug)]
pub enum Destination {
    /// A regular file, existing or not: replaced through a temporary file.
    Regular { target: PathBuf, existing: Option<std::fs::Metadata> },
    /// Anything else that can be opened for writing: written in place.
    Special(PathBuf),
}

/// Follows `path`'s symbolic links (at most 40, as the kernel does) and says what is
/// there. Paths under /dev and /proc are always written in place (`/dev/stdout` may
/// lead to a regular file that the shell opened: it must not be replaced).
pub fn resolve(path: &Path) -> mlff::Result<Destination> {
    let error = |source| mlff::Error::Write { path: path.to_path_buf(), source };
    if path.starts_with("/dev") || path.starts_with("/proc") {
        return Ok(Destination::Special(path.to_path_buf()));
    }
    let mut target = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let link = std::fs::read_link(&target).map_err(error)?;
                target = match target.parent() {
                    Some(dir) if link.is_relative() => dir.join(link),
                    _ => link,
                };
            }
            Ok(meta) if meta.is_dir() => {
                return Err(error(std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a directory")))
            }
            Ok(meta) if meta.is_file() => {
                return Ok(Destination::Regular { target, existing: Some(meta) });
            }
            Ok(_) => return Ok(Destination::Special(target)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = directory_of(&target);
                return match std::fs::metadata(dir) {
                    Ok(meta) if meta.is_dir() => Ok(Destination::Regular { target, existing: None }),
                    Ok(_) => Err(error(std::io::Error::new(
                        std::io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", dir.display()),
                    ))),
                    Err(_) => Err(error(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no such directory: {}", dir.display()),
                    ))),
                };
            }
            Err(e) => return Err(error(e)),
        }
    }
    Err(error(std::io::Error::other("too many levels of symbolic links")))
}

fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether two paths lead to the same file (or would: for files not there yet, the
/// same name in the same directory). Files that are not regular are never "the
/// same": `--log /dev/null --traj /dev/null` is fine.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (resolve(a), resolve(b)) {
        (Ok(Destination::Regular { target: ta, .. }), Ok(Destination::Regular { target: tb, .. })) => {
            if ta.exists() && tb.exists() {
                return same_file::is_same_file(&ta, &tb).unwrap_or(false);
            }
            let canonical = |t: &Path| {
                std::fs::canonicalize(directory_of(t)).ok().map(|d| d.join(t.file_name().unwrap_or_default()))
            };
            canonical(&ta).is_some() && canonical(&ta) == canonical(&tb)
        }
        _ => false,
    }
}

/// An output being written: see the module documentation.
pub struct AtomicFile {
    /// The path as the user gave it (for messages).
    path: PathBuf,
    sink: Sink,
}

enum Sink {
    Stdout(std::io::Stdout),
    /// Written in place (a device, a FIFO), or a regular file already published.
    Direct(File),
    Temporary {
        temp: tempfile::NamedTempFile,
        target: PathBuf,
    },
    /// After a failed publish: nothing more can be written.
    Closed,
}

impl AtomicFile {
    /// Standard output where `path` is `None`.
    pub fn create(path: Option<&Path>) -> mlff::Result<Self> {
        let Some(path) = path else {
            return Ok(AtomicFile { path: PathBuf::from("<stdout>"), sink: Sink::Stdout(std::io::stdout()) });
        };
        let error = write_error(path);
        let sink = match resolve(path)? {
            Destination::Special(target) => {
                // Append: /dev/stdout may be a file the shell opened with `>>`.
                Sink::Direct(std::fs::OpenOptions::new().append(true).open(target).map_err(error)?)
            }
            Destination::Regular { target, existing } => {
                // The umask applies to the 0666 asked for here, as to any new file.
                let temp = tempfile::Builder::new()
                    .prefix(".mlff-")
                    .suffix(".partial")
                    .permissions(std::fs::Permissions::from_mode(0o666))
                    .tempfile_in(directory_of(&target))
                    .map_err(error)?;
                signals::register_temp(temp.path());
                if let Some(meta) = existing {
                    keep_owner_and_mode(temp.as_file(), &meta).map_err(write_error(path))?;
                }
                Sink::Temporary { temp, target }
            }
        };
        Ok(AtomicFile { path: path.to_path_buf(), sink })
    }

    pub fn write(&mut self, bytes: &[u8]) -> mlff::Result<()> {
        let result = match &mut self.sink {
            Sink::Stdout(out) => out.lock().write_all(bytes),
            Sink::Direct(file) => file.write_all(bytes),
            Sink::Temporary { temp, .. } => temp.write_all(bytes),
            Sink::Closed => Err(std::io::Error::other("the output was closed after an error")),
        };
        result.map_err(write_error(&self.path))
    }

    /// Puts what was written so far in place of the destination now; later writes go
    /// straight to it (an MD trajectory, complete at every report).
    pub fn publish(&mut self) -> mlff::Result<()> {
        let sink = std::mem::replace(&mut self.sink, Sink::Closed);
        self.sink = match sink {
            Sink::Temporary { temp, target } => {
                let temp_path = temp.path().to_path_buf();
                let persisted = signals::uninterrupted(|| temp.persist(&target));
                signals::forget_temp(&temp_path);
                Sink::Direct(persisted.map_err(|e| mlff::Error::Write { path: self.path.clone(), source: e.error })?)
            }
            other => other,
        };
        Ok(())
    }

    /// Completes the output: on disk (fsync) and in place.
    pub fn commit(mut self) -> mlff::Result<()> {
        self.sync()?;
        self.publish()
    }

    /// What was written so far, on disk (fsync).
    pub fn sync(&mut self) -> mlff::Result<()> {
        let synced = match &mut self.sink {
            Sink::Stdout(out) => out.lock().flush(),
            // A device or FIFO may not support fsync; what matters is that it was written.
            Sink::Direct(file) => file.sync_all().or_else(|e| if is_regular(file) { Err(e) } else { Ok(()) }),
            Sink::Temporary { temp, .. } => temp.as_file().sync_all(),
            Sink::Closed => Ok(()),
        };
        synced.map_err(write_error(&self.path))
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        // Not committed: the temporary file removes itself (NamedTempFile's drop).
        if let Sink::Temporary { temp, .. } = &self.sink {
            signals::forget_temp(temp.path());
        }
    }
}

fn is_regular(file: &File) -> bool {
    file.metadata().map(|m| m.is_file()).unwrap_or(false)
}

/// Gives the replacement the mode of the file it replaces, and its owner and group
/// where we may (as root; otherwise the file is ours, as any rewrite makes it).
fn keep_owner_and_mode(file: &File, existing: &std::fs::Metadata) -> std::io::Result<()> {
    let _ = std::os::unix::fs::fchown(file, Some(existing.uid()), Some(existing.gid()));
    file.set_permissions(std::fs::Permissions::from_mode(existing.mode() & 0o7777))
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
