#!/usr/bin/env python3
"""Convert a PyTorch checkpoint to mlff's safetensors layout.

    python3 tools/export_student.py CHECKPOINT.pt OUT.safetensors
    python3 tools/export_student.py --painn [--add-mean] [--add-atomrefs] MODEL.pt OUT.safetensors

The first form takes a StudentForceField checkpoint (MODEL.md architecture 1).
The second takes a SchNetPack PaiNN energy model (architecture 2): a whole
`NeuralNetworkPotential` saved with torch.save(model), or its state_dict. From a
whole model, whether the `AddOffsets` postprocessor adds the mean and the atomrefs
is read from the model; from a state_dict, say so with --add-mean / --add-atomrefs.

CHECKPOINT.pt is what MLFF-Distiller saves: torch.save({'model_state_dict': ...,
'config': {...}}). Keys and shapes are checked against the config (MODEL.md,
architecture 1) before anything is written. Loading a .pt needs torch; the conversion
itself (`export`) needs only numpy, so it can be used (and is tested) without torch.
"""
import json
import struct
import sys

import numpy as np

ARCHITECTURE = "mlff_distiller.StudentForceField"
CONFIG_KEYS = ("hidden_dim", "num_interactions", "num_rbf", "cutoff", "max_z")


def expected_shapes(config):
    """Every tensor the engine reads, with its shape (Linear weights are [out, in])."""
    h, k, t, z = config["hidden_dim"], config["num_rbf"], config["num_interactions"], config["max_z"]
    shapes = {"rbf.centers": (k,), "rbf.widths": (k,), "embedding.weight": (z + 1, h)}

    def linear(name, n_in, n_out):
        shapes[name + ".weight"] = (n_out, n_in)
        shapes[name + ".bias"] = (n_out,)

    for b in range(t):
        p = f"interactions.{b}."
        linear(p + "message.rbf_to_scalar.0", k, h)
        linear(p + "message.rbf_to_scalar.2", h, 3 * h)
        linear(p + "update.update_mlp.0", 2 * h, h)
        linear(p + "update.update_mlp.2", h, 3 * h)
        shapes[p + "update.mixing_matrix"] = (3, 3)
    linear("energy_head.0", h, h // 2)
    linear("energy_head.2", h // 2, h // 4)
    linear("energy_head.4", h // 4, 1)
    return shapes


def optional_shapes(config):
    """Tensors the engine reads when present: per-element reference energies (eV),
    added to every atom's energy."""
    return {"atomref": (config["max_z"] + 1,)}


def export(state, config, path, extra_metadata=None):
    """Write `state` (name -> array-like) as f32 safetensors with our metadata."""
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"config lacks {missing}")
    config = {key: config[key] for key in CONFIG_KEYS}
    if config["hidden_dim"] % 4:
        raise ValueError(f"hidden_dim {config['hidden_dim']} must be a multiple of 4")
    shapes = expected_shapes(config)
    optional = optional_shapes(config)
    shapes.update({name: shape for name, shape in optional.items() if name in state})
    arrays = checked_arrays(state, shapes)
    metadata = {"architecture": ARCHITECTURE, "config": json.dumps(config)}
    metadata.update(extra_metadata or {})
    write_safetensors(arrays, metadata, path)


PAINN_ARCHITECTURE = "schnetpack.PaiNN"


def painn_config(state):
    """PaiNN's config, read off the shapes of a SchNetPack state_dict (prefixes
    `representation.` and `output_modules.0.outnet.` already mapped to ours)."""
    f = state["embedding.weight"].shape[1]
    k = state["radial_basis.offsets"].shape[0]
    blocks = 0
    while f"interactions.{blocks}.interatomic_context_net.0.weight" in state:
        blocks += 1
    if blocks == 0:
        raise KeyError("no interactions.0.interatomic_context_net.0.weight: not a PaiNN state_dict")
    filter_rows = state["filter_net.weight"].shape[0]
    if filter_rows not in (3 * f, 3 * f * blocks):
        raise ValueError(f"filter_net has {filter_rows} outputs; PaiNN with F={f}, T={blocks} needs {3 * f} or {3 * f * blocks}")
    if "cutoff_fn.cutoff" not in state:
        raise KeyError("no representation.cutoff_fn.cutoff in the state_dict: the cutoff is unknown")
    cutoff = float(np.asarray(state["cutoff_fn.cutoff"]).reshape(-1)[0])
    return {"n_atom_basis": f, "n_interactions": blocks, "n_rbf": k, "cutoff": cutoff,
            "max_z": state["embedding.weight"].shape[0] - 1,
            "shared_interactions": False, "shared_filters": filter_rows == 3 * f and blocks > 1, "mean": 0.0}


def painn_shapes(config):
    """Every tensor the engine reads for PaiNN, with its shape ([out, in] weights)."""
    f, k, t, z = config["n_atom_basis"], config["n_rbf"], config["n_interactions"], config["max_z"]
    shapes = {"radial_basis.offsets": (k,), "radial_basis.widths": (k,), "embedding.weight": (z + 1, f)}
    filters = 1 if config["shared_filters"] else t
    shapes["filter_net.weight"] = (3 * f * filters, k)
    shapes["filter_net.bias"] = (3 * f * filters,)
    for b in range(1 if config["shared_interactions"] else t):
        for name, n_in, n_out in ((f"interactions.{b}.interatomic_context_net.0", f, f),
                                  (f"interactions.{b}.interatomic_context_net.1", f, 3 * f),
                                  (f"mixing.{b}.intraatomic_context_net.0", 2 * f, f),
                                  (f"mixing.{b}.intraatomic_context_net.1", f, 3 * f)):
            shapes[name + ".weight"] = (n_out, n_in)
            shapes[name + ".bias"] = (n_out,)
        shapes[f"mixing.{b}.mu_channel_mix.weight"] = (2 * f, f)
    shapes["readout.0.weight"] = (f // 2, f)
    shapes["readout.0.bias"] = (f // 2,)
    shapes["readout.1.weight"] = (1, f // 2)
    shapes["readout.1.bias"] = (1,)
    return shapes


def painn_state(spk_state, add_mean=False, add_atomrefs=False):
    """Our PaiNN tensors and config from a SchNetPack NeuralNetworkPotential state_dict."""
    state, mean, atomref = {}, 0.0, None
    for key, value in spk_state.items():
        value = np.asarray(value)
        if key.startswith("representation.electronic_embeddings."):
            raise ValueError(f"{key}: electronic (charge/spin) embeddings are not supported by mlff")
        if key.startswith("postprocessors.") and not key.endswith((".mean", ".atomref")):
            raise ValueError(f"{key}: only SchNetPack's AddOffsets postprocessor (mean, atomref) is supported")
        if key.startswith("representation."):
            state[key[len("representation."):]] = value
        elif key.startswith("output_modules.0.outnet."):
            state["readout." + key[len("output_modules.0.outnet."):]] = value
        elif key.startswith("postprocessors.") and key.endswith(".mean"):
            mean = float(value.reshape(-1)[0])
        elif key.startswith("postprocessors.") and key.endswith(".atomref"):
            atomref = value.reshape(-1)
    extra = [k for k in state if k.startswith("readout.") and k.split(".")[1] not in ("0", "1")]
    if extra:
        raise ValueError(f"the readout has more than two layers ({extra}); mlff reads F → F/2 → 1")
    config = painn_config(state)
    if add_mean:
        config["mean"] = mean
    if add_atomrefs:
        if atomref is None:
            raise KeyError("--add-atomrefs: the model has no postprocessor atomref")
        padded = np.zeros(config["max_z"] + 1)
        padded[:min(len(atomref), len(padded))] = atomref[:len(padded)]
        state["atomref"] = padded
    return state, config


def export_painn(state, config, path, extra_metadata=None):
    """Write PaiNN tensors (our names) as f32 safetensors with our metadata."""
    shapes = painn_shapes(config)
    if "atomref" in state:
        shapes["atomref"] = (config["max_z"] + 1,)
    arrays = checked_arrays(state, shapes)
    metadata = {"architecture": PAINN_ARCHITECTURE, "config": json.dumps(config)}
    metadata.update(extra_metadata or {})
    write_safetensors(arrays, metadata, path)


def checked_arrays(state, shapes):
    """name -> contiguous f32 array for every name of `shapes`, each present in
    `state`, of its shape and finite."""
    arrays = {}
    for name, shape in shapes.items():
        if name not in state:
            raise KeyError(f"checkpoint lacks tensor {name!r}")
        array = np.asarray(state[name], dtype=np.float32)
        if array.shape != shape:
            raise ValueError(f"tensor {name!r} has shape {array.shape}, the config needs {shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"tensor {name!r} has non-finite values")
        arrays[name] = np.ascontiguousarray(array)
    return arrays


def write_safetensors(arrays, metadata, path):
    header, offset = {"__metadata__": metadata}, 0
    for name in sorted(arrays):
        size = arrays[name].nbytes
        header[name] = {"dtype": "F32", "shape": list(arrays[name].shape), "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)))
        out.write(header_bytes)
        for name in sorted(arrays):
            out.write(arrays[name].astype("<f4").tobytes())


def read_safetensors(path):
    """(metadata, name -> f32 array) of a safetensors file, without the safetensors package."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    metadata = header.pop("__metadata__", {})
    dtypes = {"F32": "<f4", "F64": "<f8"}
    tensors = {}
    for name, info in header.items():
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
    return metadata, tensors


def main(argv):
    args = argv[1:]
    painn = "--painn" in args
    add_mean = "--add-mean" in args
    add_atomrefs = "--add-atomrefs" in args
    paths = [a for a in args if not a.startswith("--")]
    if len(paths) != 2 or any(a not in ("--painn", "--add-mean", "--add-atomrefs") for a in args if a.startswith("--")):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("loading a PyTorch checkpoint needs torch (pip install torch)", file=sys.stderr)
        return 2
    checkpoint = torch.load(paths[0], map_location="cpu", weights_only=False)
    if painn:
        if isinstance(checkpoint, torch.nn.Module):
            offsets = [m for m in getattr(checkpoint, "postprocessors", []) if hasattr(m, "add_mean")]
            add_mean = any(m.add_mean for m in offsets)
            add_atomrefs = any(m.add_atomrefs for m in offsets)
            checkpoint = checkpoint.state_dict()
        spk_state = {k: v.detach().cpu().double().numpy() for k, v in checkpoint.items()}
        state, config = painn_state(spk_state, add_mean, add_atomrefs)
        export_painn(state, config, paths[1], {"source": f"converted from {paths[0]} (SchNetPack)"})
    else:
        state = {k: v.detach().cpu().numpy() for k, v in checkpoint["model_state_dict"].items()}
        export(state, checkpoint["config"], paths[1], {"source": f"converted from {paths[0]}"})
    print(f"wrote {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
