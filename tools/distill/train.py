#!/usr/bin/env python3
"""Train a StudentForceField (MODEL.md architecture 1) on GFN2-xTB labels and export
it in mlff's safetensors layout.

    python3 tools/distill/train.py SAMPLES.extxyz OUT.safetensors [--epochs 300]

The model is trained smooth and rotation-invariant by construction: the filter
network has no biases (so φ(d) → 0 at the cutoff with all its derivatives that
fc has) and every mixing matrix is the identity (a multiple of the identity is the
only 3×3 matrix that commutes with rotations). Per-element reference energies
(least squares on the training set) are exported as `atomref`, so the model
predicts total GFN2-xTB energies. Frames are split by a seeded permutation into
training and held-out sets; the held-out errors are printed as JSON and written into
the model's metadata.

Needs torch and numpy only (no ASE), so it runs on a GPU machine with PyTorch.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_student import export  # noqa: E402
from split import held_out_split  # noqa: E402

SYMBOLS = ["X", "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl"]


def read_frames(path):
    """(numbers, positions, energy, forces, info) of each frame of our extended XYZ."""
    frames = []
    with open(path) as f:
        lines = f.read().splitlines()
    k = 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        n = int(lines[k])
        comment = lines[k + 1]
        info = {}
        for token in comment.split():
            if "=" in token:
                key, value = token.split("=", 1)
                info[key] = value.strip('"')
        rows = [line.split() for line in lines[k + 2:k + 2 + n]]
        numbers = np.array([SYMBOLS.index(r[0]) for r in rows])
        data = np.array([[float(x) for x in r[1:7]] for r in rows])
        frames.append((numbers, data[:, :3], float(info["energy"]), data[:, 3:6], info))
        k += 2 + n
    return frames


class Student(torch.nn.Module):
    """Architecture 1 with zero filter biases and identity mixing (fixed)."""

    def __init__(self, hidden, blocks, rbf, cutoff, max_z, atomref):
        super().__init__()
        self.hidden, self.blocks, self.cutoff = hidden, blocks, cutoff
        centers = torch.linspace(0.0, cutoff, rbf)
        self.register_buffer("centers", centers)
        self.register_buffer("widths", torch.full((rbf,), float(centers[1] - centers[0])))
        self.register_buffer("atomref", torch.as_tensor(atomref, dtype=torch.float32))
        self.embedding = torch.nn.Embedding(max_z + 1, hidden)
        lin = torch.nn.Linear
        self.filter_in = torch.nn.ModuleList(lin(rbf, hidden, bias=False) for _ in range(blocks))
        self.filter_out = torch.nn.ModuleList(lin(hidden, 3 * hidden, bias=False) for _ in range(blocks))
        self.update_in = torch.nn.ModuleList(lin(2 * hidden, hidden) for _ in range(blocks))
        self.update_out = torch.nn.ModuleList(lin(hidden, 3 * hidden) for _ in range(blocks))
        self.head = torch.nn.Sequential(lin(hidden, hidden // 2), torch.nn.SiLU(), lin(hidden // 2, hidden // 4),
                                        torch.nn.SiLU(), lin(hidden // 4, 1))
        for layer in self.update_out:
            # Start near s'' = s' + a, v'' = v' (g1 + g2 = 1 with identity mixing).
            torch.nn.init.zeros_(layer.weight)
            layer.bias.data[hidden:2 * hidden] = 0.5
            layer.bias.data[2 * hidden:] = 0.5
            layer.bias.data[:hidden] = 0.0

    def forward(self, Z, R, src, dst, batch, nstruct):
        H = self.hidden
        silu = torch.nn.functional.silu
        s = self.embedding(Z)
        v = torch.zeros(len(Z), 3, H, device=R.device, dtype=R.dtype)
        r = R[src] - R[dst]
        d = r.norm(dim=1)
        u = r / (d[:, None] + 1e-8)
        fc = 0.5 * (torch.cos(math.pi * d / self.cutoff) + 1) * (d < self.cutoff)
        e = torch.exp(-(d[:, None] - self.centers) ** 2 / self.widths ** 2) * fc[:, None]
        for t in range(self.blocks):
            phi = self.filter_out[t](silu(self.filter_in[t](e)))
            fs, fv1, fv2 = phi.split(H, dim=1)
            s = s + torch.zeros_like(s).index_add(0, dst, s[src] * fs)
            v = v + torch.zeros_like(v).index_add(0, dst, v[src] * fv1[:, None] + u[:, :, None] * fv2[:, None])
            upd = self.update_out[t](silu(self.update_in[t](torch.cat([s, v.norm(dim=1)], 1))))
            a, g1, g2 = upd.split(H, dim=1)
            s = s + a
            v = v * (g1 + g2)[:, None]  # identity mixing: v∘g1 + (I v)∘g2
        atom_energy = self.head(s)[:, 0] + self.atomref[Z]
        return torch.zeros(nstruct, device=R.device, dtype=atom_energy.dtype).index_add(0, batch, atom_energy)

    def state_for_export(self):
        """Our layout's tensors (PyTorch `Linear` names of MLFF-Distiller's model)."""
        out = {"rbf.centers": self.centers, "rbf.widths": self.widths,
               "embedding.weight": self.embedding.weight, "atomref": self.atomref}
        for t in range(self.blocks):
            p = f"interactions.{t}."
            out[p + "message.rbf_to_scalar.0.weight"] = self.filter_in[t].weight
            out[p + "message.rbf_to_scalar.0.bias"] = torch.zeros(self.hidden)
            out[p + "message.rbf_to_scalar.2.weight"] = self.filter_out[t].weight
            out[p + "message.rbf_to_scalar.2.bias"] = torch.zeros(3 * self.hidden)
            out[p + "update.update_mlp.0.weight"] = self.update_in[t].weight
            out[p + "update.update_mlp.0.bias"] = self.update_in[t].bias
            out[p + "update.update_mlp.2.weight"] = self.update_out[t].weight
            out[p + "update.update_mlp.2.bias"] = self.update_out[t].bias
            out[p + "update.mixing_matrix"] = torch.eye(3)
        for k, layer in zip((0, 2, 4), (self.head[0], self.head[2], self.head[4])):
            out[f"energy_head.{k}.weight"] = layer.weight
            out[f"energy_head.{k}.bias"] = layer.bias
        return {k: v.detach().cpu().float().numpy() for k, v in out.items()}


def collate(frames, idx, cutoff, device):
    """One batch: concatenated atoms, all pairs within the cutoff (molecules are small)."""
    Z, R, F, E, batch, src, dst, n = [], [], [], [], [], [], [], 0
    for b, k in enumerate(idx):
        numbers, pos, energy, forces, _ = frames[k]
        d = np.linalg.norm(pos[:, None] - pos[None], axis=2)
        j, i = np.nonzero((d <= cutoff) & ~np.eye(len(pos), dtype=bool))
        src.append(j + n); dst.append(i + n)
        Z.append(numbers); R.append(pos); F.append(forces); E.append(energy)
        batch.append(np.full(len(pos), b)); n += len(pos)
    t = lambda x, dt: torch.as_tensor(np.concatenate(x), dtype=dt, device=device)
    return (t(Z, torch.long), t(R, torch.float32), t(src, torch.long), t(dst, torch.long), t(batch, torch.long),
            torch.as_tensor(np.array(E), dtype=torch.float64, device=device), t(F, torch.float32),
            torch.as_tensor([len(frames[k][0]) for k in idx], device=device))


def evaluate(model, frames, idx, cutoff, device, batch_size=64):
    """Energy MAE per atom (eV), force MAE and RMSE (eV/Å), energy MAE per structure."""
    e_err, f_err, atoms = [], [], []
    for start in range(0, len(idx), batch_size):
        Z, R, src, dst, batch, E, F, n = collate(frames, idx[start:start + batch_size], cutoff, device)
        R.requires_grad_(True)
        pred = model(Z, R, src, dst, batch, len(n))
        grad, = torch.autograd.grad(pred.sum(), R)
        e_err.append((pred.double() - E).detach().cpu().numpy())
        atoms.append(n.cpu().numpy())
        f_err.append((-grad - F).detach().cpu().numpy())
    e, n, f = np.concatenate(e_err), np.concatenate(atoms), np.concatenate(f_err)
    return dict(energy_mae_ev_per_atom=float(np.mean(np.abs(e) / n)), energy_mae_ev=float(np.mean(np.abs(e))),
                force_mae_ev_per_a=float(np.mean(np.abs(f))), force_rmse_ev_per_a=float(np.sqrt(np.mean(f ** 2))),
                frames=len(idx))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("samples")
    ap.add_argument("out")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--rbf", type=int, default=12)
    ap.add_argument("--cutoff", type=float, default=5.0)
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--force-weight", type=float, default=10.0)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    frames = read_frames(a.samples)
    held, train = held_out_split(rng, len(frames), a.holdout)
    max_z = max(SYMBOLS.index("Cl"), max(int(f[0].max()) for f in frames))
    # Per-element reference energies: least squares of E against element counts.
    counts = np.array([[np.sum(frames[k][0] == z) for z in range(max_z + 1)] for k in train], dtype=float)
    energies = np.array([frames[k][2] for k in train])
    present = counts.sum(0) > 0
    ref = np.zeros(max_z + 1)
    ref[present] = np.linalg.lstsq(counts[:, present], energies, rcond=None)[0]
    model = Student(a.hidden, a.blocks, a.rbf, a.cutoff, max_z, ref).to(a.device)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    steps = a.epochs * math.ceil(len(train) / a.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=steps, pct_start=0.05)
    batches = [train[k:k + a.batch] for k in range(0, len(train), a.batch)]
    cached = [collate(frames, b, a.cutoff, a.device) for b in batches]
    start = time.time()
    for epoch in range(a.epochs):
        total = 0.0
        for k in rng.permutation(len(cached)):
            Z, R, src, dst, batch, E, F, n = cached[k]
            R = R.clone().requires_grad_(True)
            pred = model(Z, R, src, dst, batch, len(n))
            grad, = torch.autograd.grad(pred.sum(), R, create_graph=True)
            loss = (((pred.double() - E) / n) ** 2).mean().float() + a.force_weight * ((-grad - F) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if epoch % 10 == 0 or epoch == a.epochs - 1:
            print(f"epoch {epoch} loss {total / len(cached):.5f} ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    held_errors = evaluate(model, frames, held, a.cutoff, a.device)
    train_errors = evaluate(model, frames, train[:len(held)], a.cutoff, a.device)
    report = dict(held_out=held_errors, training_subset=train_errors)
    print(json.dumps(report))
    config = dict(hidden_dim=a.hidden, num_interactions=a.blocks, num_rbf=a.rbf, cutoff=a.cutoff, max_z=max_z)
    elements = " ".join(SYMBOLS[z] for z in range(max_z + 1) if present[z])
    metadata = {
        "teacher": "GFN2-xTB (tblite)",
        "data": f"{os.path.basename(a.samples)}: {len(frames)} frames, {len(train)} training / {len(held)} held out",
        "training": json.dumps(dict(epochs=a.epochs, batch=a.batch, lr=a.lr, force_weight=a.force_weight,
                                    seed=a.seed, loss="mse(E/N) + w*mse(F)", optimizer="Adam, one-cycle")),
        "held_out_errors": json.dumps(held_errors),
        "elements": elements,
        "description": "Student distilled from GFN2-xTB on small organic molecules (tools/distill/)",
    }
    export(model.state_for_export(), config, a.out, metadata)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
