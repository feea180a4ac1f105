"""Memory-bandwidth probes, measured in the same run as the optimizers (the report's "% of probe").

The probes are :mod:`pyopt.benchmarks.probes`' (STREAM-like loops over float32 arrays, 12
bytes per element each). The report takes, per size, the best of the probes.
"""

from __future__ import annotations

import numpy as np
import pytest

from .plugin import build_or_skip
from .probes import PROBE_BYTES_PER_ELEMENT, PROBES, expected_after, probe_step
from .probes import arrays as probe_arrays
from .workloads import QUICK_SIZES, SWEEP_SIZES, size_label


def pytest_generate_tests(metafunc):
    if "probe_case" not in metafunc.fixturenames:
        return
    wanted = metafunc.config.getoption("impl")
    sizes = QUICK_SIZES if metafunc.config.getoption("quick") else SWEEP_SIZES
    params = [(n, p) for n in sizes for p in PROBES if not wanted or "probe" in wanted]
    metafunc.parametrize("probe_case", params, ids=[f"{p}-dense_{size_label(n)}" for n, p in params])


@pytest.fixture
def arrays(probe_case):
    n, _ = probe_case
    return probe_arrays(n)


def test_probe(probe_case, arrays, timed, benchmark):
    n, name = probe_case
    benchmark.group = f"probe dense_{size_label(n)}"
    a, b, c = arrays
    step = build_or_skip(lambda: probe_step(name, a, b, c))
    before = a.copy()
    step()
    np.testing.assert_allclose(a, expected_after(name, before, b, c), rtol=1e-6)
    timed(
        step,
        impl=name,
        label=name.replace("_", " "),
        rule="probe",
        clip=None,
        workload=f"dense_{size_label(n)}",
        kind="probe",
        dtype="float32",
        n_tensors=1,
        n_elements=n,
        bytes_per_step=PROBE_BYTES_PER_ELEMENT * n,
        train=False,
    )
