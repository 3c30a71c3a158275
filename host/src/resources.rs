//! What the machine can give: the memory a job may still take, and reading files
//! with a size cap, so that a hostile input (`/dev/zero`, a 100 GB file, a gzip bomb)
//! is refused with the numbers instead of growing until the process is killed.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Environment variable that caps the memory a job may plan to use (bytes, or with
/// a suffix k, M, G, T in powers of 1024); without it, the memory the operating
/// system reports as available (within the cgroup's limit, where there is one).
pub const MEMORY_LIMIT_ENV: &str = "MLFF_MEMORY_LIMIT";

/// Largest model file read (4 GiB: a billion f32 parameters, far beyond a student).
pub const MAX_MODEL_BYTES: u64 = 4 << 30;

/// Largest structure file read (16 GiB of text, about 200 million atoms); files
/// that are not regular (pipes, devices) are read up to this many bytes too.
pub const MAX_INPUT_BYTES: u64 = 16 << 30;

/// Parses `MLFF_MEMORY_LIMIT`'s value.
fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (k, 'k' | 'K') => (&text[..k], 10),
        (k, 'm' | 'M') => (&text[..k], 20),
        (k, 'g' | 'G') => (&text[..k], 30),
        (k, 't' | 'T') => (&text[..k], 40),
        _ => (text, 0),
    };
    let value: f64 = digits.trim().parse().ok()?;
    let bytes = value * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Bytes a job may still allocate: `MLFF_MEMORY_LIMIT` if set, else the available
/// memory (the smaller of the system's and the cgroup's); `None` if unknown.
pub fn available_memory() -> Result<Option<u64>> {
    if let Ok(text) = std::env::var(MEMORY_LIMIT_ENV) {
        return match parse_bytes(&text) {
            Some(bytes) => Ok(Some(bytes)),
            None => Err(Error::InvalidInput(format!(
                "{MEMORY_LIMIT_ENV}={text:?} is not a size (bytes, or a number with k, M, G or T)"
            ))),
        };
    }
    let Ok(mut system) = sysinfo::System::new() else { return Ok(None) };
    system.refresh_memory();
    let mut available = system.available_memory();
    if let Some(cgroup) = system.cgroup_limits() {
        available = available.min(cgroup.free_memory);
    }
    Ok((available > 0).then_some(available))
}

/// A size in human units: "3.2 GB", "640 MB".
pub fn human_bytes(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else if bytes >= 1e6 {
        format!("{:.0} MB", bytes / 1e6)
    } else {
        format!("{:.0} kB", (bytes / 1e3).ceil())
    }
}

/// Jobs below this many bytes are not checked: asking the system costs tens of
/// microseconds, as much as evaluating a small molecule.
pub const UNCHECKED_BYTES: f64 = 64e6;

/// Refuses a job that would need more than the available memory; `what` names it
/// ("evaluating 1000000 atoms on the CPU").
pub fn check_memory(needed: f64, what: impl FnOnce() -> String) -> Result<()> {
    if needed < UNCHECKED_BYTES {
        return Ok(());
    }
    if let Some(available) = available_memory()? {
        if needed > available as f64 {
            return Err(Error::InvalidInput(format!(
                "{} needs about {} of memory; {} are available (set {MEMORY_LIMIT_ENV} to change the limit)",
                what(),
                human_bytes(needed),
                human_bytes(available as f64)
            )));
        }
    }
    Ok(())
}

/// Reads a whole file of at most `limit` bytes. A regular file's size is checked
/// before reading; anything else (a pipe, `/dev/zero`) is read in chunks until
/// `limit` (or a quarter of the available memory, if less) and refused beyond.
/// With `text`, a file that does not start as a compressed one must not hold NUL
/// bytes (`/dev/zero`, a binary file given by mistake): refused at the first chunk.
pub fn read_capped(path: &Path, limit: u64, what: &str, text: bool) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a directory")));
    }
    let limit = if meta.is_file() { limit } else { limit.min(available_memory()?.map_or(limit, |a| a / 4)) };
    let too_large = |size: String| {
        Err(Error::InvalidInput(format!(
            "{}: {size} is too large for {what} (the limit is {})",
            path.display(),
            human_bytes(limit as f64)
        )))
    };
    if meta.is_file() && meta.len() > limit {
        return too_large(human_bytes(meta.len() as f64));
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(if meta.is_file() { meta.len() as usize } else { 0 });
    let mut chunk = vec![0u8; 1 << 20];
    // Whether NUL bytes are refused: decided on the first bytes (a pipe may deliver
    // them one at a time), which say whether the file is compressed.
    let mut refuse_nul: Option<bool> = None;
    let not_text = || {
        Err(Error::InvalidInput(format!(
            "{}: holds NUL bytes, so it is not a text file; is it {what}?",
            path.display()
        )))
    };
    loop {
        let read = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        if (bytes.len() + read) as u64 > limit {
            return too_large(format!("more than {}", human_bytes(limit as f64)));
        }
        bytes.extend_from_slice(&chunk[..read]);
        match refuse_nul {
            None if bytes.len() >= 8 => {
                let refuse = text && !is_compressed(&bytes);
                if refuse && bytes.contains(&0) {
                    return not_text();
                }
                refuse_nul = Some(refuse);
            }
            Some(true) if chunk[..read].contains(&0) => return not_text(),
            _ => {}
        }
    }
    if refuse_nul.is_none() && text && !is_compressed(&bytes) && bytes.contains(&0) {
        return not_text();
    }
    Ok(bytes)
}

/// Decompresses gzip `bytes` (several members, as `cat a.gz b.gz` makes, included),
/// refusing more than `limit` bytes of output (a gzip bomb).
pub fn gunzip_capped(bytes: &[u8], path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::InvalidInput(format!("{}: not a valid gzip file: {e}", path.display())))?;
    if out.len() as u64 > limit {
        return Err(Error::InvalidInput(format!(
            "{}: decompresses to more than {} (the limit)",
            path.display(),
            human_bytes(limit as f64)
        )));
    }
    Ok(out)
}

/// Whether a file's first bytes announce gzip or another compression.
pub fn is_compressed(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b]) || compression_of(bytes).is_some()
}

/// The compression a file's first bytes announce, other than gzip.
pub fn compression_of(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => Some("xz"),
        [b'B', b'Z', b'h', ..] => Some("bzip2"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
        [b'P', b'K', 3, 4, ..] => Some("zip"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("2k"), Some(2048));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes(" 3 M "), Some(3 << 20));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("1e30T"), None);
        assert_eq!(parse_bytes(""), None);
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile_dir();
        let path = dir.join("ten");
        std::fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_capped(&path, 10, "a test", true).unwrap().len(), 10);
        let e = read_capped(&path, 9, "a test", true).unwrap_err().to_string();
        assert!(e.contains("too large for a test"), "{e}");
        // A character device never ends: read up to the cap, then refused; as text,
        // its NUL bytes are refused at once.
        if Path::new("/dev/zero").exists() {
            let e = read_capped(Path::new("/dev/zero"), 1 << 22, "a test", false).unwrap_err().to_string();
            assert!(e.contains("more than 4 MB"), "{e}");
            let e = read_capped(Path::new("/dev/zero"), u64::MAX, "a test", true).unwrap_err().to_string();
            assert!(e.contains("not a text file"), "{e}");
        }
        let binary = dir.join("binary");
        std::fs::write(&binary, b"3\nabc\0def\n").unwrap();
        assert!(read_capped(&binary, 100, "a test", true).unwrap_err().to_string().contains("NUL"));
        assert_eq!(read_capped(&binary, 100, "a test", false).unwrap().len(), 10);
        let e = read_capped(&dir, 10, "a test", true).unwrap_err().to_string();
        assert!(e.contains("cannot read") && e.contains("directory"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn gzip_bombs_are_refused() {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&vec![b'x'; 1 << 20]).unwrap();
        let packed = z.finish().unwrap();
        assert_eq!(gunzip_capped(&packed, Path::new("a.gz"), 1 << 20).unwrap().len(), 1 << 20);
        let e = gunzip_capped(&packed, Path::new("a.gz"), 1000).unwrap_err().to_string();
        assert!(e.contains("decompresses to more than"), "{e}");
        assert!(gunzip_capped(b"\x1f\x8bnot gzip", Path::new("a.gz"), 1000).is_err());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mlff-resources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
