#!/usr/bin/env python3
"""Make the PaiNN test fixtures: small SchNetPack PaiNN models with random weights,
converted by export_student.py, and SchNetPack's own float64 energies and forces
on the bundled sample structures.

    python3 tools/painn_reference.py tests/data

Needs schnetpack (pip install schnetpack). Writes, for each model NAME,
NAME.safetensors (our layout, f32 weights) and NAME.extxyz (energy= and forces
from SchNetPack in float64, evaluated with the f32-rounded weights, so the only
difference left to the engine is its own f32 arithmetic).
"""
import json
import os
import sys

import numpy as np
import torch
import schnetpack as spk
import schnetpack.transform as trn
from ase.io import read, write

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_student as ex  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODELS = {
    # name: (F, T, K, cutoff, shared_interactions, shared_filters, offsets)
    "painn-f32-t3": (32, 3, 20, 5.0, False, False, True),
    "painn-f64-shared": (64, 2, 16, 4.5, True, True, False),
}


def build(f, t, k, cutoff, shared_interactions, shared_filters, offsets, seed):
    torch.manual_seed(seed)
    representation = spk.representation.PaiNN(
        n_atom_basis=f, n_interactions=t, radial_basis=spk.nn.GaussianRBF(n_rbf=k, cutoff=cutoff),
        cutoff_fn=spk.nn.CosineCutoff(cutoff), shared_interactions=shared_interactions, shared_filters=shared_filters)
    post = [trn.AddOffsets("energy", add_mean=True, add_atomrefs=True)] if offsets else []
    model = spk.model.NeuralNetworkPotential(
        representation=representation, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=f, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")],
        postprocessors=post)
    # Random biases and offsets too, so every term of the model is exercised; then
    # round every weight to f32, as the exported file stores them.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.05 * torch.randn_like(p))
        if offsets:
            post[0].mean.copy_(torch.tensor([-1.7]))
            post[0].atomref.copy_(torch.randn(post[0].atomref.shape) * 3.0)
        for tensor in list(model.parameters()) + list(model.buffers()):
            tensor.copy_(tensor.float().double())
    model.do_postprocessing = True
    return model.double().eval()


def main(out_dir):
    structures = read(os.path.join(ROOT, "data", "molecules.xyz"), ":")
    box = read(os.path.join(ROOT, "data", "water-box.xyz"))
    structures.append(box)
    rng = np.random.default_rng(7)
    for s in structures:
        s.positions += rng.normal(scale=0.05, size=s.positions.shape)
    for seed, (name, spec) in enumerate(MODELS.items()):
        torch.set_default_dtype(torch.float32)
        model = build(*spec, seed=seed)
        # PaiNN makes μ with the default dtype.
        torch.set_default_dtype(torch.float64)
        converter = spk.interfaces.AtomsConverter(neighbor_list=trn.ASENeighborList(cutoff=spec[3]), dtype=torch.float64)
        frames = []
        for s in structures:
            result = model(converter(s))
            frame = s.copy()
            frame.info = {"energy": float(result["energy"].detach()[0])}
            frame.arrays["forces"] = result["forces"].detach().numpy().copy()
            frames.append(frame)
        largest = max(float(np.abs(f.arrays["forces"]).max()) for f in frames)
        path = os.path.join(out_dir, name)
        write(path + ".extxyz", frames, format="extxyz")
        spk_state = {k: v.detach().cpu().double().numpy() for k, v in model.state_dict().items()}
        state, config = ex.painn_state(spk_state, add_mean=spec[6], add_atomrefs=spec[6])
        if spec[4]:
            config["shared_interactions"] = True
        ex.export_painn(state, config, path + ".safetensors",
                        {"source": f"tools/painn_reference.py: random SchNetPack {spk.__version__} PaiNN, seed {seed}"})
        print(f"{name}: {json.dumps(config)}; {len(frames)} structures, largest |F| {largest:.3g} eV/Å")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "data"))
