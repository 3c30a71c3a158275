#!/usr/bin/env python3
"""Convert a PyTorch StudentForceField checkpoint to mlff's safetensors layout.

    python3 tools/export_student.py CHECKPOINT.pt OUT.safetensors

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


def export(state, config, path, extra_metadata=None):
    """Write `state` (name -> array-like) as f32 safetensors with our metadata."""
    missing = [key for key in CONFIG_KEYS if key not in config]
    if missing:
        raise ValueError(f"config lacks {missing}")
    config = {key: config[key] for key in CONFIG_KEYS}
    if config["hidden_dim"] % 4:
        raise ValueError(f"hidden_dim {config['hidden_dim']} must be a multiple of 4")
    shapes = expected_shapes(config)
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
    metadata = {"architecture": ARCHITECTURE, "config": json.dumps(config)}
    metadata.update(extra_metadata or {})
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
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("loading a PyTorch checkpoint needs torch (pip install torch)", file=sys.stderr)
        return 2
    checkpoint = torch.load(argv[1], map_location="cpu", weights_only=False)
    state = {k: v.detach().cpu().numpy() for k, v in checkpoint["model_state_dict"].items()}
    export(state, checkpoint["config"], argv[2], {"source": f"converted from {argv[1]}"})
    print(f"wrote {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
