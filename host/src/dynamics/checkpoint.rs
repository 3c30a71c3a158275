//! MD checkpoints: everything a run needs to continue bit for bit, in a safetensors
//! file (readable by `safetensors`, numpy or any JSON + binary reader).
//!
//! Format (version 1). The header's metadata holds
//! - `format` = `mlff-md-checkpoint`, `version` = `1`;
//! - `step`: steps taken (decimal);
//! - `settings`: JSON `{"timestep": fs, "seed": u64, "thermostat": {"kind": "none" |
//!   "langevin" | "nose-hoover-chain", "temperature": K, "friction": 1/fs, "damping": fs,
//!   "chain": n, "loops": n}, "barostat": null | {"pressure": eV/Å³, "time_constant": fs,
//!   "compressibility": Å³/eV, "coupling": "isotropic" | "anisotropic"}}`;
//! - `meta.KEY`: the caller's own entries ([`Checkpoint::metadata`]).
//!
//! Tensors (little-endian; N atoms, S structures):
//! `numbers` u32 [N]; `offsets` u64 [S+1]; `pbc` u8 [S,3]; `has_cell` u8 [S];
//! `cells` f64 [S,3,3] (Å, rows; zero without a cell); `origins` f64 [S,3];
//! `positions` f32 [N,3] (Å, relative to the origin); `velocities` f32 [N,3] (Å/fs);
//! `forces` f32 [N,3] (eV/Å); `potential` f64 [S] (eV); `ensemble` f64
//! [S, `mlff_kernels::md::ensemble::state::WORDS`] (cell, barostat heat, start volume,
//! scale, chain η and p); `heat` f64 [N] (eV the Langevin thermostat added per atom;
//! absent where untracked).

use super::{Barostat, Coupling, MdSettings, Report, Thermostat};
use crate::error::{invalid_input, Error, Result};
use crate::model::Model;
use crate::structure::{Batch, Structure};
use mlff_kernels::md::ensemble::state;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const FORMAT: &str = "mlff-md-checkpoint";
const VERSION: &str = "1";

/// The state of an MD run at one step (see the module documentation for the file).
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub settings: MdSettings,
    pub barostat: Option<Barostat>,
    pub step: u64,
    pub offsets: Vec<usize>,
    pub numbers: Vec<u32>,
    pub pbc: Vec<[bool; 3]>,
    pub cells: Vec<Option<[[f64; 3]; 3]>>,
    pub origins: Vec<[f64; 3]>,
    pub positions: Vec<[f32; 3]>,
    pub velocities: Vec<[f32; 3]>,
    pub forces: Vec<[f32; 3]>,
    pub potential: Vec<f64>,
    pub ensemble: Vec<f64>,
    /// Per atom; empty where the run did not track it.
    pub heat: Vec<f64>,
    /// The caller's own entries (the CLI keeps its target step count here).
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    pub(super) fn from_report(r: &Report) -> Self {
        Checkpoint {
            settings: *r.settings,
            barostat: r.barostat.copied(),
            step: r.step,
            offsets: r.offsets.to_vec(),
            numbers: r.numbers.to_vec(),
            pbc: r.pbc.to_vec(),
            cells: r.cells.to_vec(),
            origins: r.origins.to_vec(),
            positions: r.positions.to_vec(),
            velocities: r.velocities.to_vec(),
            forces: r.forces.to_vec(),
            potential: r.potential.to_vec(),
            ensemble: r.ensemble.to_vec(),
            heat: r.heat.to_vec(),
            metadata: BTreeMap::new(),
        }
    }

    pub fn num_atoms(&self) -> usize {
        self.numbers.len()
    }

    pub fn num_structures(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The structures as they are at the checkpoint (absolute positions, current cells).
    pub fn structures(&self) -> Vec<Structure> {
        (0..self.num_structures())
            .map(|s| {
                let atoms = self.offsets[s]..self.offsets[s + 1];
                Structure {
                    numbers: self.numbers[atoms.clone()].to_vec(),
                    positions: crate::structure::absolute(self.origins[s], &self.positions[atoms]),
                    cell: self.cells[s],
                    pbc: self.pbc[s],
                }
            })
            .collect()
    }

    /// Checks the arrays agree with each other.
    fn check(&self) -> Result<()> {
        let (n, s) = (self.num_atoms(), self.num_structures());
        if self.offsets.first() != Some(&0)
            || self.offsets.last() != Some(&n)
            || self.offsets.windows(2).any(|w| w[0] > w[1])
        {
            return invalid_input!("checkpoint: the structure offsets do not cover the {n} atoms in order");
        }
        let per_atom =
            [("positions", self.positions.len()), ("velocities", self.velocities.len()), ("forces", self.forces.len())];
        for (name, len) in per_atom {
            if len != n {
                return invalid_input!("checkpoint: {len} {name} for {n} atoms");
            }
        }
        if !self.heat.is_empty() && self.heat.len() != n {
            return invalid_input!("checkpoint: {} heat values for {n} atoms", self.heat.len());
        }
        let per_structure = [
            ("pbc", self.pbc.len()),
            ("cells", self.cells.len()),
            ("origins", self.origins.len()),
            ("potential", self.potential.len()),
        ];
        for (name, len) in per_structure {
            if len != s {
                return invalid_input!("checkpoint: {len} {name} for {s} structures");
            }
        }
        if self.ensemble.len() != s * state::WORDS {
            return invalid_input!(
                "checkpoint: {} ensemble words for {s} structures of {}",
                self.ensemble.len(),
                state::WORDS
            );
        }
        let finite = |x: f64| x.is_finite();
        if !self.positions.iter().chain(&self.velocities).chain(&self.forces).flatten().all(|x| x.is_finite())
            || !self.origins.iter().flatten().copied().all(finite)
            || !self.ensemble.iter().chain(&self.heat).chain(&self.potential).copied().all(finite)
        {
            return invalid_input!("checkpoint: it holds non-finite numbers");
        }
        Ok(())
    }

    /// The batch to continue with: validated as any input is, with the exact relative
    /// positions, origins and cells of the checkpoint.
    pub(super) fn batch(&self, model: &Model) -> Result<Batch> {
        self.check()?;
        let mut batch = model.prepare_batch(&self.structures()).map_err(|e| e.in_context("checkpoint"))?;
        batch.positions.clone_from(&self.positions);
        batch.origins.clone_from(&self.origins);
        batch.cells64.clone_from(&self.cells);
        batch.cells = self
            .cells
            .iter()
            .map(|c| {
                let c = c.unwrap_or([[0.0; 3]; 3]);
                std::array::from_fn(|k| c[k / 3][k % 3] as f32)
            })
            .collect();
        Ok(batch)
    }

    /// Refuses to continue where the model gives other energies than the run had: a
    /// different model (bit-identical on the same kind of device; within f32 rounding
    /// across devices).
    pub(super) fn check_energies(&self, recomputed: &[f64]) -> Result<()> {
        for (s, (&had, &now)) in self.potential.iter().zip(recomputed).enumerate() {
            let atoms = (self.offsets[s + 1] - self.offsets[s]).max(1) as f64;
            if (had - now).abs() > 1e-4 * atoms.max(had.abs()) {
                return invalid_input!(
                    "checkpoint: structure {s} had a potential energy of {had} eV, this model gives {now} eV at the \
                     same positions: a run continues only with the model it was made with"
                );
            }
        }
        Ok(())
    }

    /// The checkpoint as the bytes of its file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.check()?;
        let (n, s) = (self.num_atoms(), self.num_structures());
        let points = |v: &[[f32; 3]]| -> Vec<u8> { v.iter().flatten().flat_map(|x| x.to_le_bytes()).collect() };
        let f64s = |v: &mut dyn Iterator<Item = f64>| -> Vec<u8> { v.flat_map(|x| x.to_le_bytes()).collect() };
        let mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            ("numbers", Dtype::U32, vec![n], self.numbers.iter().flat_map(|x| x.to_le_bytes()).collect()),
            ("offsets", Dtype::U64, vec![s + 1], self.offsets.iter().flat_map(|&x| (x as u64).to_le_bytes()).collect()),
            ("pbc", Dtype::U8, vec![s, 3], self.pbc.iter().flatten().map(|&p| p as u8).collect()),
            ("has_cell", Dtype::U8, vec![s], self.cells.iter().map(|c| c.is_some() as u8).collect()),
            (
                "cells",
                Dtype::F64,
                vec![s, 3, 3],
                f64s(&mut self.cells.iter().flat_map(|c| c.unwrap_or([[0.0; 3]; 3]).into_iter().flatten())),
            ),
            ("origins", Dtype::F64, vec![s, 3], f64s(&mut self.origins.iter().flatten().copied())),
            ("positions", Dtype::F32, vec![n, 3], points(&self.positions)),
            ("velocities", Dtype::F32, vec![n, 3], points(&self.velocities)),
            ("forces", Dtype::F32, vec![n, 3], points(&self.forces)),
            ("potential", Dtype::F64, vec![s], f64s(&mut self.potential.iter().copied())),
            ("ensemble", Dtype::F64, vec![s, state::WORDS], f64s(&mut self.ensemble.iter().copied())),
        ];
        if !self.heat.is_empty() {
            tensors.push(("heat", Dtype::F64, vec![n], f64s(&mut self.heat.iter().copied())));
        }
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, data)| Ok((*name, TensorView::new(*dtype, shape.clone(), data)?)))
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|e| Error::Unsupported(format!("internal: checkpoint tensor: {e}")))?;
        let mut metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("version".to_string(), VERSION.to_string()),
            ("step".to_string(), self.step.to_string()),
            ("settings".to_string(), settings_json(&self.settings, self.barostat.as_ref()).to_string()),
        ]);
        for (k, v) in &self.metadata {
            metadata.insert(format!("meta.{k}"), v.clone());
        }
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::Unsupported(format!("internal: writing a checkpoint: {e}")))
    }

    /// A checkpoint from the bytes of its file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |m: String| Error::InvalidInput(format!("not an mlff MD checkpoint: {m}"));
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad("no `format` = mlff-md-checkpoint in its metadata".into()));
        }
        if meta.get("version").map(String::as_str) != Some(VERSION) {
            return Err(bad(format!("version {:?}; this build reads version {VERSION}", meta.get("version"))));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let tensor = |name: &str, dtype: Dtype, width: usize| -> Result<Option<Vec<u8>>> {
            let t = match st.tensor(name) {
                Ok(t) => t,
                Err(_) => return Ok(None),
            };
            let inner: usize = t.shape().iter().skip(1).product();
            if t.dtype() != dtype || (t.shape().len() > 1 && inner != width) {
                return Err(bad(format!("tensor `{name}` is {:?} {:?}", t.dtype(), t.shape())));
            }
            Ok(Some(t.data().to_vec()))
        };
        let need = |name: &str, dtype: Dtype, width: usize| -> Result<Vec<u8>> {
            tensor(name, dtype, width)?.ok_or_else(|| bad(format!("no tensor `{name}`")))
        };
        let f32s = |b: Vec<u8>| -> Vec<f32> {
            b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        let f64s = |b: Vec<u8>| -> Vec<f64> {
            b.chunks_exact(8).map(|c| f64::from_le_bytes(std::array::from_fn(|k| c[k]))).collect()
        };
        let points = |b: Vec<u8>| -> Vec<[f32; 3]> { f32s(b).chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect() };
        let numbers: Vec<u32> = need("numbers", Dtype::U32, 1)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let offsets = need("offsets", Dtype::U64, 1)?
            .chunks_exact(8)
            .map(|c| usize::try_from(u64::from_le_bytes(std::array::from_fn(|k| c[k]))).unwrap_or(usize::MAX))
            .collect::<Vec<_>>();
        let pbc: Vec<[bool; 3]> =
            need("pbc", Dtype::U8, 3)?.chunks_exact(3).map(|c| [c[0] != 0, c[1] != 0, c[2] != 0]).collect();
        let has_cell = need("has_cell", Dtype::U8, 1)?;
        let cells_flat = f64s(need("cells", Dtype::F64, 9)?);
        let cells = has_cell
            .iter()
            .zip(cells_flat.chunks_exact(9))
            .map(|(&has, c)| (has != 0).then(|| std::array::from_fn(|r| std::array::from_fn(|k| c[3 * r + k]))))
            .collect();
        let origins = f64s(need("origins", Dtype::F64, 3)?).chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        let step = meta
            .get("step")
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| bad("no `step` in its metadata".into()))?;
        let settings_value: Value = meta
            .get("settings")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no readable `settings` in its metadata".into()))?;
        let (settings, barostat) = settings_from_json(&settings_value).map_err(bad)?;
        let checkpoint = Checkpoint {
            settings,
            barostat,
            step,
            offsets,
            numbers,
            pbc,
            cells,
            origins,
            positions: points(need("positions", Dtype::F32, 3)?),
            velocities: points(need("velocities", Dtype::F32, 3)?),
            forces: points(need("forces", Dtype::F32, 3)?),
            potential: f64s(need("potential", Dtype::F64, 1)?),
            ensemble: f64s(need("ensemble", Dtype::F64, state::WORDS)?),
            heat: tensor("heat", Dtype::F64, 1)?.map(f64s).unwrap_or_default(),
            metadata: meta
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("meta.")?.to_string(), v.clone())))
                .collect(),
        };
        checkpoint.check()?;
        Ok(checkpoint)
    }

    /// Reads a checkpoint file.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::resources::read_capped(path, 64 << 30, "a checkpoint", false)?;
        Self::from_bytes(&bytes).map_err(|e| e.in_context(path.display()))
    }

    /// Writes the checkpoint to `path` whole: into a temporary file beside it, then
    /// renamed over it, so that a crash leaves the previous checkpoint.
    pub fn write(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        let bytes = self.to_bytes()?;
        let error = |source| Error::Write { path: path.to_path_buf(), source };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        let mut file = std::fs::File::create(&temp).map_err(error)?;
        let written = file.write_all(&bytes).and_then(|_| file.sync_all()).and_then(|_| std::fs::rename(&temp, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(error(e));
        }
        Ok(())
    }
}

fn settings_json(settings: &MdSettings, barostat: Option<&Barostat>) -> Value {
    let thermostat = match settings.thermostat {
        Thermostat::None => json!({"kind": "none"}),
        Thermostat::Langevin { temperature, friction } => {
            json!({"kind": "langevin", "temperature": temperature, "friction": friction})
        }
        Thermostat::NoseHooverChain { temperature, damping, chain, loops } => json!({
            "kind": "nose-hoover-chain", "temperature": temperature, "damping": damping, "chain": chain, "loops": loops
        }),
    };
    let barostat = barostat.map(|b| {
        json!({
            "pressure": b.pressure,
            "time_constant": b.time_constant,
            "compressibility": b.compressibility,
            "coupling": match b.coupling { Coupling::Isotropic => "isotropic", Coupling::Anisotropic => "anisotropic" },
        })
    });
    json!({"timestep": settings.timestep, "seed": settings.seed, "thermostat": thermostat, "barostat": barostat})
}

fn settings_from_json(v: &Value) -> std::result::Result<(MdSettings, Option<Barostat>), String> {
    let number =
        |v: &Value, key: &str| v.get(key).and_then(Value::as_f64).ok_or_else(|| format!("settings: no `{key}`"));
    let count = |v: &Value, key: &str| {
        v.get(key).and_then(Value::as_u64).map(|x| x as usize).ok_or_else(|| format!("settings: no `{key}`"))
    };
    let t = v.get("thermostat").ok_or("settings: no `thermostat`")?;
    let thermostat = match t.get("kind").and_then(Value::as_str) {
        Some("none") => Thermostat::None,
        Some("langevin") => {
            Thermostat::Langevin { temperature: number(t, "temperature")?, friction: number(t, "friction")? }
        }
        Some("nose-hoover-chain") => Thermostat::NoseHooverChain {
            temperature: number(t, "temperature")?,
            damping: number(t, "damping")?,
            chain: count(t, "chain")?,
            loops: count(t, "loops")?,
        },
        other => return Err(format!("settings: thermostat {other:?}")),
    };
    let settings = MdSettings {
        timestep: number(v, "timestep")?,
        thermostat,
        seed: v.get("seed").and_then(Value::as_u64).ok_or("settings: no `seed`")?,
    };
    let barostat = match v.get("barostat") {
        None | Some(Value::Null) => None,
        Some(b) => Some(Barostat {
            pressure: number(b, "pressure")?,
            time_constant: number(b, "time_constant")?,
            compressibility: number(b, "compressibility")?,
            coupling: match b.get("coupling").and_then(Value::as_str) {
                Some("isotropic") => Coupling::Isotropic,
                Some("anisotropic") => Coupling::Anisotropic,
                other => return Err(format!("settings: barostat coupling {other:?}")),
            },
        }),
    };
    Ok((settings, barostat))
}
