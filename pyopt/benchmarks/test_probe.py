"""Memory-bandwidth probes, measured in the same run as the optimizers (the report's "% of probe").

STREAM-like loops over float32 arrays, 12 bytes per element each:
- ``probe_rmw_1t`` / ``probe_rmw_mt``: ``a += b`` with NumPy, on 1 thread / split in
  contiguous parts over as many Python threads as pyopt's kernels use (NumPy releases the
  GIL in ufunc loops). Read-modify-write, like an optimizer step: no write-allocate traffic.
- ``probe_triad``: ``_core.stream_triad`` (``a = b + s*c`` on the kernels' own thread pool),
  when the compiled core has it. Its store to ``a`` also costs a write-allocate read that
  the nominal 12 bytes do not count.
The report takes, per size, the best of the probes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .implementations import Unavailable
from .plugin import build_or_skip
from .workloads import QUICK_SIZES, SWEEP_SIZES, size_label

PROBES = ("probe_rmw_1t", "probe_rmw_mt", "probe_triad")


def pytest_generate_tests(metafunc):
    if "probe_case" not in metafunc.fixturenames:
        return
    wanted = metafunc.config.getoption("impl")
    sizes = QUICK_SIZES if metafunc.config.getoption("quick") else SWEEP_SIZES
    params = [(n, p) for n in sizes for p in PROBES if not wanted or "probe" in wanted]
    metafunc.parametrize("probe_case", params, ids=[f"{p}-dense_{size_label(n)}" for n, p in params])


def _threads() -> int:
    import pyopt

    return int(pyopt.config().get("numpy_threads") or 1)


_pools: dict = {}


def _pool(k: int) -> ThreadPoolExecutor:
    if k not in _pools:
        _pools[k] = ThreadPoolExecutor(k)
    return _pools[k]


def _probe(name, a, b, c):
    if name == "probe_rmw_1t":
        return lambda: np.add(a, b, out=a)
    if name == "probe_rmw_mt":
        k = _threads()
        cuts = [a.size * i // k for i in range(k + 1)]
        parts = [(a[lo:hi], b[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
        pool = _pool(k)

        def run():
            for f in [pool.submit(np.add, x, y, out=x) for x, y in parts]:
                f.result()

        return run
    from pyopt import _core

    if not hasattr(_core, "stream_triad"):
        raise Unavailable("this build of pyopt._core has no stream_triad")
    return lambda: _core.stream_triad(a, b, c, 0.5)


@pytest.fixture
def arrays(probe_case):
    n, _ = probe_case
    rng = np.random.default_rng(1)
    return [rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3) for _ in range(3)]


def test_probe(probe_case, arrays, timed, benchmark):
    n, name = probe_case
    benchmark.group = f"probe dense_{size_label(n)}"
    a, b, c = arrays
    step = build_or_skip(lambda: _probe(name, a, b, c))
    before = a.copy()
    step()
    expected = b + np.float32(0.5) * c if name == "probe_triad" else before + b
    np.testing.assert_allclose(a, expected, rtol=1e-6)
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
        bytes_per_step=12 * n,
        train=False,
    )
