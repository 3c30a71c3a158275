#!/usr/bin/env python3
"""Tests of export_student.py's numpy path (CI has no torch): round trip of the shared
trained model, and clear errors for bad checkpoints.

    python3 tools/test_export_student.py OUT.safetensors
writes the round-tripped model to OUT for the Rust test `exported_model_matches_reference`.
"""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_student as ex  # noqa: E402

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "student-orbv2-h128.safetensors")


def checkpoint_from_shared():
    metadata, tensors = ex.read_safetensors(MODEL)
    return {k: v.copy() for k, v in tensors.items()}, json.loads(metadata["config"])


def test_round_trip(out_path):
    state, config = checkpoint_from_shared()
    ex.export(state, config, out_path, {"source": "round trip test"})
    metadata, tensors = ex.read_safetensors(out_path)
    assert metadata["architecture"] == ex.ARCHITECTURE
    assert json.loads(metadata["config"]) == config
    assert set(tensors) == set(state)
    for name in state:
        assert (tensors[name] == state[name]).all(), name


def expect_error(state, config, needle):
    with tempfile.TemporaryDirectory() as d:
        try:
            ex.export(state, config, os.path.join(d, "bad.safetensors"))
        except (KeyError, ValueError) as e:
            assert needle in str(e), f"{needle!r} not in {e!r}"
            return
    raise AssertionError(f"no error for {needle}")


def test_errors():
    state, config = checkpoint_from_shared()
    missing = dict(state)
    del missing["interactions.1.update.mixing_matrix"]
    expect_error(missing, config, "interactions.1.update.mixing_matrix")
    wrong = dict(state)
    wrong["energy_head.2.weight"] = wrong["energy_head.2.weight"].T
    expect_error(wrong, config, "energy_head.2.weight")
    expect_error(state, {k: v for k, v in config.items() if k != "cutoff"}, "cutoff")


PAINN_FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "painn-f32-t3.safetensors")


def schnetpack_state_of(tensors, config):
    """The fixture's tensors under SchNetPack's state_dict names."""
    spk = {}
    for name, value in tensors.items():
        if name.startswith("readout."):
            spk["output_modules.0.outnet." + name[len("readout."):]] = value
        elif name == "atomref":
            spk["postprocessors.0.atomref"] = value
        else:
            spk["representation." + name] = value
    spk["postprocessors.0.mean"] = [config["mean"]]
    spk["representation.cutoff_fn.cutoff"] = [config["cutoff"]]
    return spk


def test_painn_round_trip():
    metadata, tensors = ex.read_safetensors(PAINN_FIXTURE)
    config = json.loads(metadata["config"])
    state, derived = ex.painn_state(schnetpack_state_of(tensors, config), add_mean=True, add_atomrefs=True)
    assert derived == config, (derived, config)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "painn.safetensors")
        ex.export_painn(state, derived, path)
        meta2, tensors2 = ex.read_safetensors(path)
    assert meta2["architecture"] == ex.PAINN_ARCHITECTURE
    assert set(tensors2) == set(tensors)
    for name in tensors:
        assert (tensors2[name] == tensors[name]).all(), name
    # Without the flags, neither offset is taken.
    _, plain = ex.painn_state(schnetpack_state_of(tensors, config))
    assert plain["mean"] == 0.0


def test_painn_errors():
    metadata, tensors = ex.read_safetensors(PAINN_FIXTURE)
    config = json.loads(metadata["config"])
    spk = schnetpack_state_of(tensors, config)
    deep = dict(spk, **{"output_modules.0.outnet.2.weight": [[0.0]]})
    try:
        ex.painn_state(deep)
        raise AssertionError("a three-layer readout was accepted")
    except ValueError as e:
        assert "two layers" in str(e), e
    for extra, needle in (("postprocessors.1.scale", "AddOffsets"), ("representation.electronic_embeddings.0.linear.weight", "electronic")):
        try:
            ex.painn_state(dict(spk, **{extra: [1.0]}))
            raise AssertionError(f"{extra} was accepted")
        except ValueError as e:
            assert needle in str(e), e
    state, derived = ex.painn_state(spk)
    del state["mixing.2.mu_channel_mix.weight"]
    try:
        ex.export_painn(state, derived, os.path.join(tempfile.mkdtemp(), "bad.safetensors"))
        raise AssertionError("a missing tensor was accepted")
    except KeyError as e:
        assert "mixing.2.mu_channel_mix.weight" in str(e), e


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "exported.safetensors")
    tests = [lambda: test_round_trip(out), test_errors, test_painn_round_trip, test_painn_errors]
    failed = 0
    for test in tests:
        try:
            test()
        except Exception as e:  # report every failure, then fail
            failed += 1
            print(f"FAILED: {e!r}")
    print(f"export_student: {len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
