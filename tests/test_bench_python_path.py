"""pyopt.benchmarks.python_path: both paths give the same step, and a short run prints its table."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("keras")

from pyopt import _loader
from pyopt.benchmarks import python_path

BACKENDS = ["tf"] + (["fused"] if _loader._try_load() is not None else [])


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_paths_take_the_same_step(backend):
    paths = python_path.Paths(backend)
    assert [len(v.shape) for v in paths.model.trainable_variables] == [2, 1, 2, 1]  # W1, b1, W2, b2
    assert paths.check() < 1e-3  # bitwise equal to each other, close to the float64 reference
    assert paths.optimizer.last_backend == backend


def test_a_different_step_is_caught():
    paths = python_path.Paths("tf")
    paths.steps["bare"]()  # one step ahead
    with pytest.raises(AssertionError, match="differ"):
        paths.check()


def test_short_run_prints_times_and_ratios(capsys):
    assert python_path.main(["--rounds", "3", "--reps", "2", "--backend", "tf"]) == 0
    out = capsys.readouterr().out
    assert "3 rounds x 2 calls" in out and "(ran: tf)" in out
    for label in ("pyopt.ops.adam_multi", "pyopt.optimizers.Adam.apply_gradients", "Keras's apply, no update"):
        assert re.search(rf"\| {re.escape(label)} \| \d+\.\d{{3}} \| \d+\.\d{{3}} \| \d+\.\d\d \|", out), label
    assert re.search(r"keras / bare = \d+\.\d\d: Keras's apply \d+\.\d\d \+ pyopt's step -?\d+\.\d\d", out)
