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

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
MODEL = os.path.join(SHARED, "models", "student-orbv2-h128.safetensors")


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


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(tempfile.mkdtemp(), "exported.safetensors")
    tests = [lambda: test_round_trip(out), test_errors]
    failed = 0
    for test in tests:
        try:
            test()
        except Exception as e:  # report every failure, then fail
            failed += 1
            print(f"FAILED: {e!r}")
    print(f"export_student: {len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
