"""The pytest plugin of pyopt's benchmark suites: the ``--quick`` / ``--impl`` options, the
machine info, and the fixtures the suites share.

pytest reads ``pytest_addoption`` only from plugins and initial conftests, so the options live
here and ``pytest.ini`` beside this file loads it (``-p pyopt.benchmarks.plugin``); ``pyopt
bench`` passes that file with ``-c``, so the suites run the same from an installed package.

Each case is timed with ``benchmark.pedantic``: the first step (trace, graph optimisation,
the value check) and one warm-up step run untimed, then as many rounds as fit in the round
budget (at least ``MIN_ROUNDS``); the report uses the median. Per case, ``extra_info``
records what the report needs (implementation, rule, workload, bytes per step), the time
to the first step, and minor page faults per step (a proxy for per-step allocations: the
CPU allocators map fresh pages for every large temporary).
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time

import pytest

from .implementations import IMPLEMENTATIONS, Unavailable

ROUND_BUDGET_S = {False: 0.3, True: 0.15}
MIN_ROUNDS = {False: 7, True: 5}
MAX_ROUNDS = 2000


def pytest_addoption(parser):
    group = parser.getgroup("pyopt-bench")
    group.addoption(
        "--quick",
        action="store_true",
        default=False,
        help="pyopt bench: a subset of cases and fewer rounds (~3.5 minutes)",
    )
    group.addoption(
        "--impl",
        action="append",
        default=None,
        choices=sorted(IMPLEMENTATIONS) + ["probe"],
        help="pyopt bench: only these implementations (repeatable; 'probe': the bandwidth probes)",
    )


def pytest_configure(config):
    if not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError("pyopt's benchmark suites need pytest-benchmark: pip install 'pyopt[bench]'")


@pytest.hookimpl(optionalhook=True)  # without pytest-benchmark, pytest_configure says what is missing
def pytest_benchmark_update_machine_info(config, machine_info):
    import pyopt

    info = {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)) for k, v in pyopt.config().items()}
    versions = {}
    for name in ("numpy", "tensorflow", "keras", "torch"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    machine_info["pyopt"] = info
    machine_info["versions"] = versions
    machine_info["loadavg_at_end"] = os.getloadavg()  # pytest-benchmark asks at the end of the run
    machine_info["quick"] = bool(config.getoption("quick"))


@pytest.fixture
def quick(request) -> bool:
    return bool(request.config.getoption("quick"))


@pytest.fixture(autouse=True)
def _free_memory():
    """Free each case's tensors before the next one (64M-element Adam needs ~1.8 GB)."""
    yield
    gc.collect()
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
        gc.collect()


def selected(config, names):
    wanted = config.getoption("impl")
    return [n for n in names if not wanted or n in wanted]


def build_or_skip(build):
    try:
        return build()
    except Unavailable as exc:
        pytest.skip(str(exc))


def page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@pytest.fixture
def timed(benchmark, quick):
    """``timed(step, **extra_info)``: time ``step`` (already run once) and record extra_info."""

    def run(step, **extra):
        t0 = time.perf_counter()
        step()  # warm-up
        once = time.perf_counter() - t0
        rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS[quick], ROUND_BUDGET_S[quick] / max(once, 1e-6))))
        benchmark.extra_info.update(extra)
        benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
        n = 3 if once < 0.5 else 1
        before = page_faults()
        for _ in range(n):
            step()
        benchmark.extra_info["page_faults_per_step"] = (page_faults() - before) / n

    return run
