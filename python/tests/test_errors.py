"""Bad input raises a Python exception with the engine's message; nothing crashes
the interpreter, and the objects stay usable afterwards."""

from __future__ import annotations

import numpy as np
import pytest

import mlff

OK = ([8, 1, 1], [[0.0, 0.0, 0.1], [0.0, 0.76, -0.5], [0.0, -0.76, -0.5]])

BAD_STRUCTURES = [
    (([118], [[0.0, 0.0, 0.0]]), ValueError, "not covered by the model"),
    (([0], [[0.0, 0.0, 0.0]]), ValueError, "atomic number 0"),
    (([-1], [[0.0, 0.0, 0.0]]), ValueError, "atomic number -1, which is no element"),
    (([2**40], [[0.0, 0.0, 0.0]]), ValueError, "which is no element"),
    (([2**70], [[0.0, 0.0, 0.0]]), TypeError, "must be integers"),
    (([3], [[0.0, 0.0, 0.0]]), ValueError, "not in the model's training data"),
    ((["Xx"], [[0.0, 0.0, 0.0]]), ValueError, 'unknown element symbol "Xx"'),
    (([1.0], [[0.0, 0.0, 0.0]]), TypeError, "must be integers or element symbols, not float64"),
    (([[1]], [[0.0, 0.0, 0.0]]), ValueError, "one-dimensional"),
    (([1, 1], [[0.0, 0.0, np.nan], [0.0, 0.0, 1.0]]), ValueError, "non-finite position"),
    (([1, 1], [[0.0, 0.0, np.inf], [0.0, 0.0, 1.0]]), ValueError, "non-finite position"),
    (([1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), ValueError, "on top of each other"),
    (([1, 1], [[0.0, 0.0, 0.0], [1e-5, 0.0, 0.0]]), ValueError, "on top of each other"),
    (([1], [[0.0, 0.0]]), ValueError, "shape (N, 3)"),
    (([1], [0.0, 0.0, 0.0]), ValueError, "shape (N, 3)"),
    (([1, 1], [[0.0, 0.0, 0.0]]), ValueError, "2 atomic numbers but 1 positions"),
    (([1], [[0j, 0.0, 0.0]]), TypeError, "real numbers, not complex128"),
    (([1], [["a", "b", "c"]]), TypeError, "real numbers"),
    (([1], [[0.0, 0.0, 0.0]], np.zeros((3, 3)), True), ValueError, "singular"),
    (([1], [[0.0, 0.0, 0.0]], np.eye(3) * np.nan, True), ValueError, "non-finite"),
    (([1], [[0.0, 0.0, 0.0]], np.eye(2), True), ValueError, "3×3"),
    (([1], [[0.0, 0.0, 0.0]], None, True), ValueError, "periodic boundaries need a cell"),
    (([1], [[0.0, 0.0, 0.0]], np.eye(3), [True, False]), ValueError, "one boolean or three"),
    # A cell in the wrong unit: ~5e11 neighbour pairs; refused before any is built.
    (([1], [[0.0, 0.0, 0.0]], np.eye(3) * 1e-3, True), ValueError, "is the cell in Å?"),
    ((OK[0],), TypeError, "a structure is an ase.Atoms or a tuple"),
    ("water", TypeError, "a structure or a list"),
    ([np.zeros((3, 3))], TypeError, "a structure is an ase.Atoms or a tuple"),
]


@pytest.mark.parametrize("structure, error, message", BAD_STRUCTURES)
def test_bad_structures_raise(default_model, structure, error, message):
    with pytest.raises(error) as info:
        default_model.evaluate(structure)
    assert message in str(info.value), str(info.value)
    # The model is still fine.
    assert np.isfinite(default_model.evaluate(OK).energy)


def test_absurd_cells_are_an_exception_or_right(default_model):
    """A cell of 1e300 Å has an infinite volume: a ValueError, not a panic. One atom in
    a cell of 1e30 Å sees no neighbour and no image of itself: the isolated atom's
    energy and no force (this used to panic in the neighbour search)."""
    with pytest.raises(ValueError, match="singular"):
        default_model.evaluate(([1], [[0.0, 0.0, 0.0]], np.eye(3) * 1e300, True))
    alone = default_model.evaluate(([1], [[0.0, 0.0, 0.0]]))
    huge = default_model.evaluate(([1], [[0.0, 0.0, 0.0]], np.eye(3) * 1e30, True))
    assert huge.energy == pytest.approx(alone.energy, rel=1e-12)
    assert np.all(huge.forces == 0.0)
    assert np.isfinite(default_model.evaluate(OK).energy)


def test_a_bad_structure_in_a_batch_names_it(default_model):
    with pytest.raises(ValueError, match="structure 2"):
        default_model.evaluate([OK, OK, ([1, 1], [[0, 0, 0], [0, 0, 0]])])


def test_empty_inputs(default_model):
    assert default_model.evaluate([]) == []
    empty = default_model.evaluate((np.zeros(0, dtype=int), np.zeros((0, 3))))
    assert empty.energy == 0.0 and empty.forces.shape == (0, 3)


def test_bad_files_and_devices(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot read"):
        mlff.Model(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a safetensors file"):
        mlff.Model(junk)
    with pytest.raises(ValueError, match="not a safetensors file"):
        mlff.Model(b"garbage")
    with pytest.raises(TypeError):
        mlff.Model(3.5)
    with pytest.raises(ValueError, match="unknown device"):
        mlff.device("tpu")
    with pytest.raises(ValueError, match="bad GPU ordinal"):
        mlff.device("gpu:x")
    with pytest.raises(TypeError):
        mlff.device(0)
    with pytest.raises(FileNotFoundError):
        mlff.read_extxyz(tmp_path / "missing.xyz")
    bad = tmp_path / "bad.xyz"
    bad.write_text("2\n\nH 0 0 0\nXx 1 0 0\n")
    with pytest.raises(ValueError, match="bad.xyz:4: unknown element `Xx`"):
        mlff.read_extxyz(bad)


def test_a_gpu_without_one_is_a_runtime_error():
    from mlff import _mlff

    try:
        _mlff.Device("gpu:7")
    except RuntimeError as e:
        assert "CUDA" in str(e) or "device" in str(e)
    except ValueError as e:  # an existing GPU machine with fewer than 8 devices
        assert "ordinal" in str(e)


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (dict(timestep=0.0), ValueError, "time step"),
        (dict(timestep=-1.0), ValueError, "time step"),
        (dict(timestep=float("nan")), ValueError, "time step"),
        (dict(timestep=1e10), ValueError, "time step"),
        (dict(thermostat="nose-hoover"), ValueError, "thermostat"),
        (dict(thermostat="langevin"), ValueError, "needs a temperature"),
        (dict(thermostat="langevin", temperature=-5.0), ValueError, "temperature"),
        (dict(thermostat="langevin", temperature=300.0, friction=float("inf")), ValueError, "friction"),
        (dict(temperature=float("nan")), ValueError, "temperature"),
        (dict(replicas=0), ValueError, "replicas must be at least 1"),
        (dict(replicas=2.5), TypeError, "replicas must be an integer"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(velocities=np.zeros((2, 3))), ValueError, "velocities must have shape (3, 3)"),
        (dict(velocities=np.full((3, 3), np.nan)), ValueError, "not finite"),
    ],
)
def test_bad_md_settings_raise(default_model, settings, error, message):
    with pytest.raises(error) as info:
        default_model.md(OK, **settings)
    assert message in str(info.value), str(info.value)


def test_bad_run_arguments_raise(default_model):
    md = default_model.md(OK, temperature=300)
    for steps, every, error, message in [
        (-1, 1, ValueError, "steps must be at least 0"),
        (10, 0, ValueError, "every must be at least 1"),
        (2**64, 1, ValueError, "too large"),
        (1.5, 1, TypeError, "integer"),
        (True, 1, TypeError, "integer"),
    ]:
        with pytest.raises(error, match=message):
            md.run(steps, every)
    assert md.run(0, 1).steps == 0
    assert md.run(4, 2).steps == 4
    with pytest.raises(ValueError, match="fmax"):
        default_model.relax(OK, fmax=-1.0)
    with pytest.raises(ValueError, match="max_move"):
        default_model.relax(OK, max_move=float("nan"))
    with pytest.raises(ValueError, match="steps must be at least 0"):
        default_model.relax(OK, steps=-3)


def test_atoms_on_top_of_each_other_stop_md_and_relax(default_model):
    on_top = ([1, 1], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="on top of each other"):
        default_model.md(on_top)
    with pytest.raises(ValueError, match="on top of each other"):
        default_model.relax(on_top)
