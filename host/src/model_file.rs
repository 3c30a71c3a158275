//! The safetensors container of a model file, before the model reads its tensors:
//! read with a size cap (also from pipes and devices), and
//! a header whose tensors leave gaps in the data (an entry deleted from the header)
//! is made contiguous, so that the loader reports the tensor it misses by its own
//! name instead of the `safetensors` crate's "invalid offset" for the tensor after
//! the gap.

use crate::error::{Error, Result};
use crate::resources::{human_bytes, read_capped, MAX_MODEL_BYTES};
use std::io::Read;
use std::path::Path;

/// Largest header (the `safetensors` crate's own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Reads a model file of at most [`MAX_MODEL_BYTES`]. A pipe or device is read as
/// far as its header says the file goes: `/dev/zero` (a header of length 0) is
/// refused after 8 bytes, not after gigabytes.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_file() || meta.is_dir() {
        return read_capped(path, MAX_MODEL_BYTES, "a model file", false);
    }
    let invalid = |m: String| Error::InvalidModel(format!("{}: not a safetensors file: {m}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = vec![0u8; 8];
    file.read_exact(&mut bytes).map_err(|_| invalid("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
    if n == 0 || n > MAX_HEADER_BYTES {
        return Err(invalid(format!("a header of {n} bytes")));
    }
    bytes.resize(8 + n as usize, 0);
    file.read_exact(&mut bytes[8..]).map_err(|_| invalid("the file ends inside its header".into()))?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..]).map_err(|e| invalid(format!("the header is not JSON: {e}")))?;
    let data_end = header
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, entry)| entry.get("data_offsets")?.get(1)?.as_u64())
        .max()
        .unwrap_or(0);
    let total = (8 + n).saturating_add(data_end);
    if total > MAX_MODEL_BYTES {
        return Err(invalid(format!(
            "its header describes {}; a model file may have at most {}",
            human_bytes(total as f64),
            human_bytes(MAX_MODEL_BYTES as f64)
        )));
    }
    let start = bytes.len();
    bytes.resize(total as usize, 0);
    file.read_exact(&mut bytes[start..]).map_err(|_| invalid("the file ends before its tensors do".into()))?;
    let mut more = [0u8; 1];
    if matches!(file.read(&mut more), Ok(1)) {
        return Err(invalid("it goes on after the tensors its header describes".into()));
    }
    Ok(bytes)
}

/// `bytes` rebuilt without gaps between its tensors' data, or `None` where there are
/// none (or the header is malformed in another way, which `safetensors` reports).
pub fn without_gaps(bytes: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default())) else {
        return Ok(None);
    };
    let Some(header) = usize::try_from(n).ok().and_then(|n| bytes.get(8..8usize.checked_add(n)?)) else {
        return Ok(None);
    };
    let data = &bytes[8 + header.len()..];
    let Ok(serde_json::Value::Object(mut entries)) = serde_json::from_slice::<serde_json::Value>(header) else {
        return Ok(None);
    };
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    for (name, entry) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let offsets = entry.get("data_offsets").and_then(|o| o.as_array());
        let span = offsets.and_then(|o| Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize)));
        match span {
            Some((s, e)) if s <= e && e <= data.len() => spans.push((s, e, name.clone())),
            _ => return Ok(None),
        }
    }
    spans.sort();
    let contiguous = spans.iter().try_fold(0usize, |end, (s, e, _)| (*s == end).then_some(*e));
    if contiguous.is_some() || spans.windows(2).any(|w| w[1].0 < w[0].1) {
        // Contiguous (nothing to mend) or overlapping (invalid: let safetensors say so).
        return Ok(None);
    }
    let mut packed = Vec::with_capacity(data.len());
    for (s, e, name) in &spans {
        let start = packed.len();
        packed.extend_from_slice(&data[*s..*e]);
        if let Some(entry) = entries.get_mut(name) {
            entry["data_offsets"] = serde_json::json!([start, packed.len()]);
        }
    }
    let header =
        serde_json::to_vec(&entries).map_err(|e| Error::InvalidModel(format!("re-writing the header: {e}")))?;
    let mut out = Vec::with_capacity(8 + header.len() + packed.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&packed);
    Ok(Some(out))
}
