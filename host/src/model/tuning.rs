//! The GPU path's launch choices (atoms a tile, k-slices, channel groups, tensor
//! cores, what the adjoint keeps), as one struct: the defaults measured on the H100
//! (PERF.md, sessions 4 to 7), scaled by the device's SM count where the choice is
//! about filling the SMs, and optional environment overrides to measure the others.
//!
//! The environment is read once per process and every value is checked: a knob set
//! to something the kernels do not have is an error (it used to be ignored). The
//! variables:
//! - `MLFF_TILE_ATOMS=1|2|4|8|16`: atoms a tile of the student's update (16 needs
//!   H ≤ 128);
//! - `MLFF_READOUT_TILE_ATOMS=1|2|4|8`: atoms a tile of the student's readout;
//! - `MLFF_PAINN_TILE_ATOMS=2|4|8`: atoms a tile of PaiNN's atom kernels (8 needs
//!   F ≤ 128);
//! - `MLFF_SPLIT_K=1|2|4|8`: k-slices of the atom-tile kernels that split k (at most
//!   what each kernel's thread limit allows);
//! - `MLFF_CHANNEL_GROUPS=1|2|4|8`: channel groups of the edge kernels (H must be a
//!   multiple of 32 × groups, with at most 8 channels a lane);
//! - `MLFF_TENSOR_CORES=0|1`: the student's update on the tensor cores never, or
//!   wherever its kernels apply;
//! - `MLFF_KEEP_BLOCK_INPUTS=0|1`: whether the student's adjoint reuses the forward's
//!   block inputs and update activations;
//! - `MLFF_NO_GRAPH` (set to anything): every call enqueued eagerly, no CUDA graph
//!   (to profile).

use crate::error::{Error, Result};
pub use crate::gpu::DeviceProperties;
use std::sync::OnceLock;

/// Environment overrides of the measured choices; `None` keeps the measured one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `MLFF_TILE_ATOMS`.
    pub tile_atoms: Option<usize>,
    /// `MLFF_READOUT_TILE_ATOMS`.
    pub readout_tile_atoms: Option<usize>,
    /// `MLFF_PAINN_TILE_ATOMS`.
    pub painn_tile_atoms: Option<usize>,
    /// `MLFF_SPLIT_K`.
    pub split_k: Option<usize>,
    /// `MLFF_CHANNEL_GROUPS`.
    pub channel_groups: Option<usize>,
    /// `MLFF_TENSOR_CORES`.
    pub tensor_cores: Option<bool>,
    /// `MLFF_KEEP_BLOCK_INPUTS`.
    pub keep_activations: Option<bool>,
    /// `MLFF_NO_GRAPH` is set.
    pub no_graph: bool,
}

impl Overrides {
    /// The overrides in this process's environment (read once, then remembered).
    pub fn from_env() -> Result<Self> {
        static ENV: OnceLock<std::result::Result<Overrides, String>> = OnceLock::new();
        ENV.get_or_init(|| Overrides::parse(|name| std::env::var_os(name)).map_err(|e| e.to_string()))
            .clone()
            .map_err(Error::InvalidInput)
    }

    /// The overrides `lookup` (the environment, or a test's table) gives.
    pub fn parse(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Self> {
        let value = |name: &str, allowed: &[usize]| -> Result<Option<usize>> {
            let Some(raw) = lookup(name) else { return Ok(None) };
            let text = raw.to_string_lossy();
            match text.trim().parse::<usize>() {
                Ok(v) if allowed.contains(&v) => Ok(Some(v)),
                _ => Err(Error::InvalidInput(format!("{name}={text:?}: expected one of {allowed:?}"))),
            }
        };
        let switch = |name: &str| -> Result<Option<bool>> { Ok(value(name, &[0, 1])?.map(|v| v == 1)) };
        Ok(Overrides {
            tile_atoms: value("MLFF_TILE_ATOMS", &[1, 2, 4, 8, 16])?,
            readout_tile_atoms: value("MLFF_READOUT_TILE_ATOMS", &[1, 2, 4, 8])?,
            painn_tile_atoms: value("MLFF_PAINN_TILE_ATOMS", &[2, 4, 8])?,
            split_k: value("MLFF_SPLIT_K", &[1, 2, 4, 8])?,
            channel_groups: value("MLFF_CHANNEL_GROUPS", &[1, 2, 4, 8])?,
            tensor_cores: switch("MLFF_TENSOR_CORES")?,
            keep_activations: switch("MLFF_KEEP_BLOCK_INPUTS")?,
            no_graph: lookup("MLFF_NO_GRAPH").is_some(),
        })
    }
}

/// Below this many atoms the student keeps activations for the adjoint: each block's
/// input state (4H floats an atom a block: 2 KB at H = 128) instead of recomputing it
/// with one more update launch a block, and the update's [pre | g1 | g2] (3H floats:
/// 1.5 KB), so that its adjoint skips two of four products. Above, memory per atom
/// matters more (16 KB target; below, at most ~22 KB an atom, 180 MB). Measured
/// (PERF.md, session 7): the inputs 24 atoms −10 %, 1,000 atoms −3 %, 256 × 24 −9 %;
/// the update's activations a further −10 %, −4.3 % and −7 %.
pub const KEEP_ACTIVATIONS_BELOW_ATOMS: usize = 8192;

/// The launch choices of the GPU path for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub device: DeviceProperties,
    pub overrides: Overrides,
}

impl Tuning {
    /// The measured choices, no overrides.
    pub fn measured(device: DeviceProperties) -> Self {
        Tuning { device, overrides: Overrides::default() }
    }

    /// The measured choices with the environment's overrides.
    pub fn from_env(device: DeviceProperties) -> Result<Self> {
        Ok(Tuning { device, overrides: Overrides::from_env()? })
    }

    /// Below this many atoms the atom-tile kernels (student and PaiNN) take tiles of 2
    /// atoms: tiles of 8 would leave most SMs idle (528 atoms on 132 SMs, measured on
    /// the H100: PERF.md, session 5).
    pub fn small_tiles_below_atoms(&self) -> usize {
        4 * self.device.sm_count
    }

    /// Below this many atoms the student's atom-tile kernels take tiles of one atom
    /// (one block an atom, k split over 8 slices): on the H100 (264 atoms) 24 atoms
    /// 274 → 256 µs against tiles of 2, 1,000 atoms 938 → 951 µs (PERF.md, session 7).
    pub fn single_atom_tiles_below_atoms(&self) -> usize {
        2 * self.device.sm_count
    }

    /// Fewest 16-atom tiles for which the student's update runs on the tensor cores:
    /// from where the CUDA-core path would take tiles of 8 atoms. A tensor-core block
    /// is latency-bound (16 warps, each a chain of ~250 HMMA); a forward + adjoint
    /// pair of launches takes ~65–80 µs whatever the input, against ~40 µs for the
    /// CUDA-core tiles of 1 or 2 atoms and ~87 µs for tiles of 8. Measured (PERF.md,
    /// session 7): 1,000 atoms 869 → 831 µs, 10,000 atoms 5.33 → 4.79 ms, 256 × 24
    /// 1.88 → 1.47 ms, and 24 atoms 243 → 316 µs (hence CUDA cores there).
    pub fn tensor_core_min_tiles(&self) -> usize {
        self.small_tiles_below_atoms().div_ceil(mlff_kernels::mma::TILE_ROWS)
    }

    /// Channel groups per atom for the edge kernels: at most 2 channels a lane, then
    /// enough warps to fill the GPU. Measured on the H100 (PERF.md, session 5): at 4
    /// channels a lane the edge adjoint ran 3.3× its forward (10,000 atoms 8.1 ms,
    /// against 5.7 ms at 2; PaiNN 13.7 against 10.0 ms). Each group adds 16 bytes per
    /// edge of adjoint accumulator: at 2 groups 1,000,000 atoms still fit 16 KB per
    /// atom.
    pub fn channel_groups(&self, hidden: usize, atoms: usize) -> Result<usize> {
        if let Some(g) = self.overrides.channel_groups {
            if !hidden.is_multiple_of(32 * g) || hidden / (32 * g) > 8 {
                return Err(Error::InvalidInput(format!(
                    "MLFF_CHANNEL_GROUPS={g} does not fit {hidden} channels (H must be a multiple of 32 × groups, \
                     with at most 8 channels a lane)"
                )));
            }
            return Ok(g);
        }
        let mut g = 1;
        while hidden / (32 * g) > 2 {
            g *= 2;
        }
        while atoms * g < 8192 && hidden / (32 * g * 2) >= 1 {
            g *= 2;
        }
        Ok(g)
    }

    /// Atoms per block of the student's atom-tile kernels.
    ///
    /// 8 (measured against 16 on the H100, PERF.md, session 4: each thread walks one
    /// serial chain over k, so halving the atoms per tile halves the chain's work and
    /// doubles the blocks), 2 below [`Self::small_tiles_below_atoms`], where tiles of
    /// 8 leave most SMs idle (measured in session 5: 24 atoms 525 → 399 µs against
    /// TA = 8, 1,000 atoms a tie, 10,000 atoms 9.54 → 9.78 ms and 256 × 24 2.38 → 2.71
    /// ms worse), and 1 below [`Self::single_atom_tiles_below_atoms`].
    pub fn tile_atoms(&self, hidden: usize, atoms: usize) -> Result<usize> {
        match self.overrides.tile_atoms {
            Some(16) if hidden > 128 => {
                Err(Error::InvalidInput(format!("MLFF_TILE_ATOMS=16 needs H ≤ 128; this model has {hidden}")))
            }
            Some(t) => Ok(t),
            None if atoms < self.single_atom_tiles_below_atoms() => Ok(1),
            None if atoms < self.small_tiles_below_atoms() => Ok(2),
            None => Ok(8),
        }
    }

    /// Atoms per block of the student's readout: those of the update's tiles, but at
    /// most 2 (a chain of four small layers, so more blocks beat more reuse of each
    /// weight): measured against 8 (PERF.md, session 7), 1,000 atoms −2.4 %, 10,000
    /// atoms −0.7 %, 256 × 24 −1.0 %.
    pub fn readout_tile_atoms(&self, update_tile_atoms: usize) -> usize {
        self.overrides.readout_tile_atoms.unwrap_or(update_tile_atoms.min(2))
    }

    /// Atoms per block of PaiNN's atom-tile kernels: 8 (4 at F = 256, for shared
    /// memory), 2 for small inputs as the student (PERF.md, session 5: 24 atoms 1.03
    /// → 0.63 ms). 4 at F = 128 measured 7 % faster at 24 atoms but 8 % slower at
    /// 1,000 (session 4).
    pub fn painn_tile_atoms(&self, hidden: usize, atoms: usize) -> Result<usize> {
        match self.overrides.painn_tile_atoms {
            Some(8) if hidden > 128 => {
                Err(Error::InvalidInput(format!("MLFF_PAINN_TILE_ATOMS=8 needs F ≤ 128; this model has {hidden}")))
            }
            Some(t) => Ok(t),
            None if atoms < self.small_tiles_below_atoms() => Ok(2),
            None if hidden <= 128 => Ok(8),
            None => Ok(4),
        }
    }

    /// k-slices of the atom-tile kernels that split k (split-K): up to `max_slices`,
    /// at most `max_threads` threads a block (the split kernels' register count
    /// decides it), and only while the tiles alone leave the SMs short of work (fewer
    /// than 2 tiles an SM). Measured on the shared model on the H100 (PERF.md, session
    /// 4), S = 4 against 1: 24 atoms −19 %, 1,000 atoms (125 tiles) −6 %, but 10,000
    /// atoms +14 % and 256 × 24 atoms (768 tiles) +26 %. `MLFF_SPLIT_K` asks for a
    /// count, taken up to the thread limit.
    fn k_slices(&self, hidden: usize, max_threads: usize, tiles: usize, max_slices: usize) -> usize {
        let most = (max_threads / hidden).clamp(1, max_slices);
        match self.overrides.split_k {
            Some(s) => s.min(most),
            None if tiles < 2 * self.device.sm_count => most,
            None => 1,
        }
    }

    /// The student's update kernels: up to 1,024 threads and 8 slices at 1 atom a
    /// tile (48 registers a thread), 512 threads a block at 2 to 8 atoms a tile (at
    /// H = 256, (4 + 2)·H·8 floats is the 48 KB of shared memory a block may have
    /// without opting in); tiles of 16 atoms take 168 registers a thread and stay
    /// unsplit.
    pub fn update_slices(&self, hidden: usize, tile_atoms: usize, tiles: usize) -> usize {
        match tile_atoms {
            1 => self.k_slices(hidden, 1024, tiles, 8),
            2..=8 => self.k_slices(hidden, 512, tiles, 4),
            _ => 1,
        }
    }

    /// PaiNN's context and mixing kernels: at most 256 threads a block (the split
    /// mixing adjoint takes 166 registers a thread).
    pub fn painn_slices(&self, hidden: usize, tiles: usize) -> usize {
        self.k_slices(hidden, 256, tiles, 4)
    }

    /// Whether the student's update for `atoms` atoms runs on the tensor cores, where
    /// it `can` (its weights in the fragment layout, H ≤ 128, the adjoint's shared
    /// memory within the device's): from [`Self::tensor_core_min_tiles`] tiles of 16
    /// atoms on.
    pub fn tensor_core_updates(&self, can: bool, atoms: usize) -> bool {
        match self.overrides.tensor_cores {
            Some(forced) => forced && can,
            None => can && atoms.div_ceil(mlff_kernels::mma::TILE_ROWS) >= self.tensor_core_min_tiles(),
        }
    }

    /// Whether a student workspace for `atoms` atoms keeps activations for the
    /// adjoint (see [`KEEP_ACTIVATIONS_BELOW_ATOMS`]).
    pub fn keeps_activations(&self, atoms: usize) -> bool {
        self.overrides.keep_activations.unwrap_or(atoms < KEEP_ACTIVATIONS_BELOW_ATOMS)
    }

    /// Whether repeated calls of a shape replay a CUDA graph.
    pub fn use_graphs(&self) -> bool {
        !self.overrides.no_graph
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The measured choices on the H100, whatever the environment of the test.
    fn h100() -> Tuning {
        Tuning::measured(DeviceProperties::H100)
    }

    fn overrides(pairs: &[(&str, &str)]) -> Result<Overrides> {
        let table: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Overrides::parse(|name| table.get(name).map(Into::into))
    }

    #[test]
    fn edge_kernels_take_at_most_two_channels_a_lane() {
        // (hidden, atoms) → groups: ≤ 2 channels a lane, more groups for small inputs.
        for (h, atoms, groups) in [
            (128, 24, 4),
            (128, 1_000, 4),
            (128, 10_000, 2),
            (128, 1_000_000, 2),
            (256, 1_000_000, 4),
            (64, 1_000_000, 1),
            (32, 24, 1),
        ] {
            let g = h100().channel_groups(h, atoms).unwrap();
            assert_eq!(g, groups, "H={h}, {atoms} atoms");
            assert!(h / (32 * g) <= 2 && h % (32 * g) == 0);
        }
    }

    #[test]
    fn small_inputs_take_small_tiles() {
        let t = h100();
        for (atoms, tile) in [(24, 1), (263, 1), (264, 2), (527, 2), (528, 8), (10_000, 8)] {
            assert_eq!(t.tile_atoms(128, atoms).unwrap(), tile, "{atoms} atoms");
        }
        assert_eq!(t.painn_tile_atoms(128, 24).unwrap(), 2);
        assert_eq!(t.painn_tile_atoms(128, 10_000).unwrap(), 8);
        assert_eq!(t.painn_tile_atoms(256, 10_000).unwrap(), 4);
        assert_eq!(t.readout_tile_atoms(8), 2);
        assert_eq!(t.readout_tile_atoms(1), 1);
        assert_eq!(t.tensor_core_min_tiles(), 33);
        // 33 tiles of 16 atoms: from 513 atoms on.
        assert!(!t.tensor_core_updates(true, 512) && t.tensor_core_updates(true, 513));
        assert!(!t.tensor_core_updates(false, 10_000));
        assert!(t.keeps_activations(8191) && !t.keeps_activations(8192));
    }

    #[test]
    fn k_slices_split_small_inputs_within_the_thread_limits() {
        let t = h100();
        // (hidden, tiles) → slices, for the student at 8 and 16 atoms a tile and PaiNN.
        for (h, student8, painn) in [(32, 4, 4), (64, 4, 4), (128, 4, 2), (256, 2, 1)] {
            assert_eq!(t.update_slices(h, 8, 3), student8, "student H={h}");
            assert_eq!(t.update_slices(h, 1, 3), (1024 / h).min(8), "one-atom tiles H={h}");
            assert_eq!(t.update_slices(h, 16, 3), 1, "16-atom tiles H={h}");
            assert_eq!(t.painn_slices(h, 3), painn, "PaiNN H={h}");
            assert_eq!(t.update_slices(h, 8, 264), 1);
            assert_eq!(t.painn_slices(h, 264), 1);
        }
    }

    #[test]
    fn thresholds_follow_the_sm_count() {
        // A device of half the SMs fills up with half the atoms.
        let half = Tuning::measured(DeviceProperties { sm_count: 66, ..DeviceProperties::H100 });
        assert_eq!(half.tile_atoms(128, 131).unwrap(), 1);
        assert_eq!(half.tile_atoms(128, 132).unwrap(), 2);
        assert_eq!(half.tile_atoms(128, 264).unwrap(), 8);
        assert_eq!(half.painn_tile_atoms(128, 264).unwrap(), 8);
        assert_eq!(half.tensor_core_min_tiles(), 17);
        assert_eq!(half.update_slices(128, 8, 131), 4);
        assert_eq!(half.update_slices(128, 8, 132), 1);
    }

    #[test]
    fn overrides_are_parsed_and_checked() {
        assert_eq!(overrides(&[]).unwrap(), Overrides::default());
        let o = overrides(&[
            ("MLFF_TILE_ATOMS", "16"),
            ("MLFF_READOUT_TILE_ATOMS", " 4 "),
            ("MLFF_PAINN_TILE_ATOMS", "4"),
            ("MLFF_SPLIT_K", "8"),
            ("MLFF_CHANNEL_GROUPS", "2"),
            ("MLFF_TENSOR_CORES", "0"),
            ("MLFF_KEEP_BLOCK_INPUTS", "1"),
            ("MLFF_NO_GRAPH", ""),
        ])
        .unwrap();
        assert_eq!(
            o,
            Overrides {
                tile_atoms: Some(16),
                readout_tile_atoms: Some(4),
                painn_tile_atoms: Some(4),
                split_k: Some(8),
                channel_groups: Some(2),
                tensor_cores: Some(false),
                keep_activations: Some(true),
                no_graph: true,
            }
        );
        for (name, bad) in [
            ("MLFF_TILE_ATOMS", "3"),
            ("MLFF_TILE_ATOMS", "eight"),
            ("MLFF_READOUT_TILE_ATOMS", "16"),
            ("MLFF_PAINN_TILE_ATOMS", "1"),
            ("MLFF_SPLIT_K", "0"),
            ("MLFF_CHANNEL_GROUPS", "3"),
            ("MLFF_TENSOR_CORES", "yes"),
            ("MLFF_KEEP_BLOCK_INPUTS", "2"),
        ] {
            let err = overrides(&[(name, bad)]).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains("expected one of"), "{name}={bad}: {err}");
        }
    }

    #[test]
    fn overrides_replace_the_measured_choices() {
        let t = |pairs: &[(&str, &str)]| Tuning { overrides: overrides(pairs).unwrap(), ..h100() };
        assert_eq!(t(&[("MLFF_TILE_ATOMS", "4")]).tile_atoms(128, 24).unwrap(), 4);
        assert!(t(&[("MLFF_TILE_ATOMS", "16")]).tile_atoms(256, 24).is_err());
        assert_eq!(t(&[("MLFF_PAINN_TILE_ATOMS", "4")]).painn_tile_atoms(128, 10_000).unwrap(), 4);
        assert!(t(&[("MLFF_PAINN_TILE_ATOMS", "8")]).painn_tile_atoms(256, 24).is_err());
        assert_eq!(t(&[("MLFF_READOUT_TILE_ATOMS", "8")]).readout_tile_atoms(1), 8);
        // Split-K asks for a count, up to what the kernel's thread limit allows.
        assert_eq!(t(&[("MLFF_SPLIT_K", "8")]).update_slices(128, 1, 10_000), 8);
        assert_eq!(t(&[("MLFF_SPLIT_K", "8")]).update_slices(128, 8, 10_000), 4);
        assert_eq!(t(&[("MLFF_SPLIT_K", "2")]).painn_slices(128, 3), 2);
        assert_eq!(t(&[("MLFF_CHANNEL_GROUPS", "1")]).channel_groups(128, 24).unwrap(), 1);
        assert!(t(&[("MLFF_CHANNEL_GROUPS", "8")]).channel_groups(128, 24).is_err());
        assert!(t(&[("MLFF_TENSOR_CORES", "1")]).tensor_core_updates(true, 24));
        assert!(!t(&[("MLFF_TENSOR_CORES", "1")]).tensor_core_updates(false, 24));
        assert!(!t(&[("MLFF_TENSOR_CORES", "0")]).tensor_core_updates(true, 10_000));
        assert!(!t(&[("MLFF_KEEP_BLOCK_INPUTS", "0")]).keeps_activations(24));
        assert!(t(&[("MLFF_KEEP_BLOCK_INPUTS", "1")]).keeps_activations(100_000));
        assert!(!t(&[("MLFF_NO_GRAPH", "1")]).use_graphs());
        assert!(h100().use_graphs());
    }
}
