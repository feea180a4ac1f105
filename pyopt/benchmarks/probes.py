"""The STREAM-like bandwidth probes, 12 bytes per float32 element each (no pytest here:
``test_probe`` times them in the suites, ``paired --with-probe`` interleaves them with the
implementations of one case):

- ``probe_rmw_1t`` / ``probe_rmw_mt``: ``a += b`` with NumPy, on 1 thread / split in
  contiguous parts over as many Python threads as pyopt's kernels use (NumPy releases the
  GIL in ufunc loops). Read-modify-write, like an optimizer step: no write-allocate traffic.
- ``probe_triad``: ``_core.stream_triad`` (``a = b + s*c`` on the kernels' own thread pool),
  when the compiled core has it. Its store to ``a`` also costs a write-allocate read that
  the nominal 12 bytes do not count.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .implementations import Unavailable

PROBES = ("probe_rmw_1t", "probe_rmw_mt", "probe_triad")
PROBE_BYTES_PER_ELEMENT = 12
TRIAD_SCALE = 0.5


def threads() -> int:
    """The kernels' thread count (pyopt._core's, without pyopt.config(), which loads TensorFlow)."""
    from pyopt import _core

    return int(_core.num_threads() or 1)


_pools: dict = {}


def _pool(k: int) -> ThreadPoolExecutor:
    if k not in _pools:
        _pools[k] = ThreadPoolExecutor(k)
    return _pools[k]


def arrays(n: int, seed: int = 1) -> list:
    """The three float32 arrays of a probe of ``n`` elements."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n, dtype=np.float32) * np.float32(1e-3) for _ in range(3)]


def probe_step(name: str, a, b, c) -> Callable[[], object]:
    """One pass of the probe ``name`` over the arrays (``a`` written); Unavailable when this
    build of the core has no triad."""
    if name == "probe_rmw_1t":
        return lambda: np.add(a, b, out=a)
    if name == "probe_rmw_mt":
        k = threads()
        cuts = [a.size * i // k for i in range(k + 1)]
        parts = [(a[lo:hi], b[lo:hi]) for lo, hi in zip(cuts, cuts[1:])]
        pool = _pool(k)

        def run():
            for f in [pool.submit(np.add, x, y, out=x) for x, y in parts]:
                f.result()

        return run
    if name != "probe_triad":
        raise ValueError(f"unknown probe {name!r}; one of {', '.join(PROBES)}")
    from pyopt import _core

    if not hasattr(_core, "stream_triad"):
        raise Unavailable("this build of pyopt._core has no stream_triad")
    return lambda: _core.stream_triad(a, b, c, TRIAD_SCALE)


def expected_after(name: str, before, b, c):
    """``a`` after one pass from ``before``."""
    return b + np.float32(TRIAD_SCALE) * c if name == "probe_triad" else before + b
