//! Spreading a call over the members of a device set: the structures are cut into
//! contiguous runs of the input with nearly equal atom counts (whole structures), one
//! run per device; each device works on its run in its own thread; the results are
//! joined in input order, and an error names the structure by its index in the input.
//!
//! Contiguous runs, rather than any balanced assignment, because they keep what a
//! single device would see: results join by concatenation, a run is a sub-slice of
//! the input (no copies), and an MD run's atoms keep their global numbering (the
//! Langevin noise of atom i depends on i; see `Integrator::first_atom`).

use crate::device::Device;
use crate::error::{Error, Result};
use std::ops::Range;

/// `parts` contiguous ranges covering `0..sizes.len()`, in order, whose sums of
/// `sizes` (atoms; an empty structure counts as one) are as equal as whole items
/// allow: each boundary is the one nearest its share of the total, so a range is off
/// its share by less than its largest item. Where there are at least `parts` items no
/// range is empty; with fewer, the last ranges are.
pub fn balanced_ranges(sizes: &[usize], parts: usize) -> Vec<Range<usize>> {
    let n = sizes.len();
    if parts <= 1 {
        return std::iter::once(0..n).collect();
    }
    let mut prefix = Vec::with_capacity(n + 1);
    prefix.push(0u128);
    for &s in sizes {
        prefix.push(prefix[prefix.len() - 1] + s.max(1) as u128);
    }
    let total = prefix[n];
    let mut bounds = vec![0usize];
    for m in 1..parts {
        let previous = bounds[m - 1];
        if n < parts {
            // One structure each while they last.
            bounds.push(m.min(n));
            continue;
        }
        // The boundary nearest m/parts of the total, comparing m·total with parts·prefix
        // so that no rounding enters.
        let target = total * m as u128;
        let scaled = |k: usize| prefix[k] * parts as u128;
        let above = prefix.partition_point(|&p| p * (parts as u128) < target).min(n);
        let nearest = if above > 0 && target - scaled(above - 1) < scaled(above) - target { above - 1 } else { above };
        // Every range keeps at least one structure.
        bounds.push(nearest.clamp(previous + 1, n - (parts - m)));
    }
    bounds.push(n);
    bounds.windows(2).map(|w| w[0]..w[1]).collect()
}

/// Runs `work(member, range)` for every member of `device` and its range of
/// `ranges`, each non-empty one on a thread of its own (one alone runs on the calling
/// thread); the results come back in member order, `None` for an empty range. Every
/// thread runs to its end, whatever the others do.
pub(crate) fn on_each<T: Send>(
    device: &Device,
    ranges: &[Range<usize>],
    work: impl Fn(&Device, Range<usize>) -> Result<T> + Sync,
) -> Vec<Option<Result<T>>> {
    let members = device.members();
    let busy = ranges.iter().filter(|r| !r.is_empty()).count();
    if busy <= 1 {
        return members
            .iter()
            .zip(ranges)
            .map(|(m, r)| (!r.is_empty()).then(|| bind(m).and_then(|()| work(m, r.clone()))))
            .collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = members
            .iter()
            .zip(ranges)
            .map(|(m, r)| {
                let work = &work;
                (!r.is_empty()).then(|| {
                    std::thread::Builder::new()
                        .name(format!("mlff-device-{}", describe_short(m)))
                        .spawn_scoped(scope, move || bind(m).and_then(|()| work(m, r.clone())))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                None => None,
                Some(Err(e)) => Some(Err(Error::ThreadPool(format!("cannot start a device thread: {e}")))),
                // A panic is a bug: it goes on unwinding in the caller.
                Some(Ok(h)) => Some(h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))),
            })
            .collect()
    })
}

/// Joins per-member lists of per-structure results in input order, or returns the
/// error of the earliest failing member, its structure numbers made global (see
/// [`in_input_terms`]).
pub(crate) fn join_in_order<T>(
    device: &Device,
    ranges: &[Range<usize>],
    results: Vec<Option<Result<Vec<T>>>>,
) -> Result<Vec<T>> {
    let mut joined = Vec::with_capacity(ranges.last().map_or(0, |r| r.end));
    let failed = results.iter().filter(|r| matches!(r, Some(Err(_)))).count();
    for ((member, range), result) in device.members().iter().zip(ranges).zip(results) {
        match result {
            None => {}
            Some(Ok(part)) if part.len() == range.len() => joined.extend(part),
            Some(Ok(part)) => {
                return Err(Error::Unsupported(format!(
                    "internal: {} returned {} results for {} structures",
                    member.describe(),
                    part.len(),
                    range.len()
                )))
            }
            Some(Err(e)) => {
                let e = in_input_terms(e, member, range);
                return Err(if failed > 1 {
                    e.in_context(format!("{failed} devices of the set failed; the first"))
                } else {
                    e
                });
            }
        }
    }
    Ok(joined)
}

/// An error of one member, working on `range` of the input, in the caller's terms:
/// "structure k" of the member's part becomes "structure range.start + k"; a device
/// failure (CUDA, no GPU) names the device and the structures it held.
pub(crate) fn in_input_terms(error: Error, member: &Device, range: &Range<usize>) -> Error {
    let holding = || format!("{} (structures {}..{} of the input)", member.describe(), range.start, range.end);
    match error {
        Error::InvalidInput(_) => renumber_structures(error, |k| Some(range.start + k)),
        Error::Cuda { during, source } => Error::Cuda { during: format!("{during} on {}", holding()), source },
        Error::NoGpu(m) => Error::NoGpu(format!("{m} ({})", holding())),
        Error::Unsupported(m) => Error::Unsupported(format!("{m} ({})", holding())),
        other => other,
    }
}

/// An invalid-input error about "structure k" (its first mention, wherever it is in
/// the message) renamed to "structure `index(k)`"; other errors pass unchanged.
pub(crate) fn renumber_structures(error: Error, index: impl Fn(usize) -> Option<usize>) -> Error {
    let Error::InvalidInput(message) = error else { return error };
    const WORD: &str = "structure ";
    let mut from = 0;
    while let Some(at) = message[from..].find(WORD).map(|p| from + p) {
        let digits_at = at + WORD.len();
        let digits = message[digits_at..].bytes().take_while(u8::is_ascii_digit).count();
        let starts_word = !message[..at].chars().next_back().is_some_and(char::is_alphanumeric);
        if digits > 0 && starts_word {
            if let Some(k) = message[digits_at..digits_at + digits].parse().ok().and_then(&index) {
                return Error::InvalidInput(format!(
                    "{}structure {k}{}",
                    &message[..at],
                    &message[digits_at + digits..]
                ));
            }
            break;
        }
        from = digits_at;
    }
    Error::InvalidInput(message)
}

/// Makes `device`'s context current on the calling thread, where it is a GPU (see
/// [`crate::gpu::Gpu::bind_to_thread`]).
pub(crate) fn bind(device: &Device) -> Result<()> {
    match device {
        Device::Gpu(g) => g.bind_to_thread(),
        _ => Ok(()),
    }
}

/// `gpu0` or `cpu`, for thread names.
pub(crate) fn describe_short(device: &Device) -> String {
    match device {
        Device::Gpu(g) => format!("gpu{}", g.ordinal()),
        _ => "cpu".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(sizes: &[usize], ranges: &[Range<usize>]) -> Vec<usize> {
        ranges.iter().map(|r| sizes[r.clone()].iter().sum()).collect()
    }

    #[test]
    fn ranges_cover_the_input_in_order_with_nearly_equal_atoms() {
        let sizes: Vec<usize> = (0..1000).map(|k| 3 + (k * 7919) % 60).collect();
        for parts in 1..=8 {
            let ranges = balanced_ranges(&sizes, parts);
            assert_eq!(ranges.len(), parts);
            assert_eq!(ranges[0].start, 0);
            assert_eq!(ranges[parts - 1].end, sizes.len());
            assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
            let total: usize = sizes.iter().sum();
            for (m, s) in sums(&sizes, &ranges).into_iter().enumerate() {
                let share = total as f64 / parts as f64;
                assert!((s as f64 - share).abs() <= 62.0, "{parts} parts: part {m} has {s} atoms, share {share}");
            }
        }
    }

    #[test]
    fn a_large_structure_gets_a_device_to_itself() {
        let ranges = balanced_ranges(&[1000, 10, 10, 10, 10], 2);
        assert_eq!(ranges, vec![0..1, 1..5]);
        // More devices than needed: still one structure at least each.
        let ranges = balanced_ranges(&[1000, 1, 1, 1], 3);
        assert!(ranges.iter().all(|r| !r.is_empty()), "{ranges:?}");
    }

    #[test]
    fn fewer_structures_than_devices_leave_the_last_devices_idle() {
        assert_eq!(balanced_ranges(&[5, 6], 4), vec![0..1, 1..2, 2..2, 2..2]);
        assert_eq!(balanced_ranges(&[], 2), vec![0..0, 0..0]);
    }

    #[test]
    fn errors_name_the_structure_by_its_place_in_the_input() {
        let e = Error::InvalidInput("MD step 3: structure 2: atoms 0 and 1 are 1e-5 Å apart".into());
        let e = renumber_structures(e, |k| Some(k + 40));
        assert_eq!(e.to_string(), "invalid input: MD step 3: structure 42: atoms 0 and 1 are 1e-5 Å apart");
        // "structures" and a word ending in "structure" are not a structure's number.
        let e = Error::InvalidInput("md with 3 structures: substructure 5, structure 1".into());
        let e = renumber_structures(e, |k| Some(k + 10));
        assert_eq!(e.to_string(), "invalid input: md with 3 structures: substructure 5, structure 11");
    }
}
