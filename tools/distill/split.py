"""The held-out split of the distillation data, shared by train.py and
heldout_frames.py so that both hold out the same frames."""


def held_out_split(rng, frames, fraction):
    """(held-out, training) frame indices: a permutation drawn from `rng`, the first
    `fraction` of it held out. train.py makes this its first draw from
    default_rng(seed), so a fresh default_rng(seed) gives the same split."""
    order = rng.permutation(frames)
    n_hold = int(round(fraction * frames))
    return order[:n_hold], order[n_hold:]
