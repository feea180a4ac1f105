"""pyopt.kernels from several Python threads: same bits as serial runs, and the GIL is released.

The kernels release the GIL and share one C++ thread pool; a call that finds the pool busy
runs inline. None of that may change a result: each thread's arrays must end bitwise equal
to the same steps run serially. No timing is asserted anywhere.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import reference as ref
from kernel_cases import DTYPES, HYPER, STEPPED, at_step, call_multi, copies, random_state, same_bits

import pyopt
from pyopt import _core, kernels

STEPS = 20
JOIN_TIMEOUT = 120  # seconds; only reached on a deadlock
# One thread per rule (case of reference.SLOTS).
RULES = list(ref.SLOTS)


def _workload(index):
    """Thread `index`'s job: a rule, dtype and sizes (some span several chunks)."""
    rule = RULES[index % len(RULES)]
    dtype = list(DTYPES)[index % len(DTYPES)]
    sizes = [70_001 + index, 17, 40_000] if index % 2 else [100_003 + index]
    rng = np.random.default_rng(index)
    states = [random_state(rule, n, DTYPES[dtype], rng) for n in sizes]
    options = dict(clipnorm=50.0) if index % 3 == 0 else dict(global_clipnorm=50.0, weight_decay=0.1)
    return rule, states, options


def _run(rule, states, options):
    """STEPS multi-tensor steps in place (the gradient is reused; the step count advances)."""
    for step in range(1, STEPS + 1):
        hyper = dict(HYPER[rule], **options)
        if rule in STEPPED:
            hyper = at_step(rule, hyper, step)
        params, grads, slots = [s[0] for s in states], [s[1] for s in states], [s[2] for s in states]
        assert call_multi(rule, params, grads, slots, **hyper) is True


def _run_threads(jobs, extra=None):
    """Runs every job in its own thread, started together; re-raises the first error."""
    errors = []
    barrier = threading.Barrier(len(jobs) + (extra is not None))

    def wrap(fn):
        def target():
            try:
                barrier.wait()
                fn()
            except BaseException as e:  # re-raised in the main thread
                errors.append(e)

        return target

    threads = [threading.Thread(target=wrap(j)) for j in jobs + ([extra] if extra else [])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    if errors:
        raise errors[0]


@pytest.fixture
def restore_threads():
    old = _core.num_threads()
    yield
    pyopt.set_num_threads(old)


@pytest.mark.parametrize("pool_threads", [1, 2])
def test_concurrent_calls_equal_serial(pool_threads, restore_threads):
    pyopt.set_num_threads(pool_threads)
    jobs = [_workload(i) for i in range(len(RULES))]
    serial = [copies(states) for _, states, _ in jobs]
    for (rule, _, options), states in zip(jobs, serial):
        _run(rule, states, options)
    _run_threads([lambda j=j: _run(*j) for j in jobs])
    for (rule, states, _), expected in zip(jobs, serial):
        for got, want in zip(states, expected):
            assert all(same_bits(a, b) for a, b in zip([got[0], *got[2]], [want[0], *want[2]])), rule


def test_resizing_the_pool_while_threads_step(restore_threads):
    """set_num_threads from another thread mid-run: no deadlock, no change in the results."""
    jobs = [_workload(i) for i in range(4)]
    serial = [copies(states) for _, states, _ in jobs]
    for (rule, _, options), states in zip(jobs, serial):
        _run(rule, states, options)
    done = threading.Event()

    def resize():
        n = 0
        while not done.is_set() and n < 200:
            pyopt.set_num_threads(1 + n % 3)
            n += 1

    def steps():
        try:
            _run_threads([lambda j=j: _run(*j) for j in jobs])
        finally:
            done.set()

    _run_threads([steps], extra=resize)
    for (rule, states, _), expected in zip(jobs, serial):
        for got, want in zip(states, expected):
            assert all(same_bits(a, b) for a, b in zip([got[0], *got[2]], [want[0], *want[2]])), rule


def test_shared_read_only_gradient_across_threads(restore_threads):
    """Threads may read one gradient array at the same time (each updates its own param)."""
    pyopt.set_num_threads(2)
    rng = np.random.default_rng(0)
    grad = rng.standard_normal(200_003).astype(np.float32)
    grad.flags.writeable = False
    params = [rng.standard_normal(grad.size).astype(np.float32) for _ in range(4)]
    expected = [ref.gradient_descent(p, grad, lr=0.01, clipnorm=100.0) for p in params]
    singles = copies(params)
    for p in singles:
        kernels.gradient_descent(p, grad, lr=0.01, clipnorm=100.0)
    _run_threads([lambda p=p: kernels.gradient_descent(p, grad, lr=0.01, clipnorm=100.0) for p in params])
    for p, s, e in zip(params, singles, expected):
        assert same_bits(p, s)
        np.testing.assert_allclose(p, e, rtol=1e-6, atol=1e-6)


def test_gil_is_released_during_a_call(restore_threads):
    """Another Python thread runs while a kernel call is in progress.

    Gradient descent with g = 1 on an array of equal values leaves all values equal after
    every call; only a call in progress can show p[0] != p[-1] (the front is updated, the back
    not yet). A watcher thread that ever sees that ran Python code during a call, which it
    could not do if the call held the GIL. With one pool thread the caller walks the array
    front to back, ~4 ms per call here; the loop gives the watcher up to 500 calls to look.
    """
    pyopt.set_num_threads(1)
    n = 1 << 22
    param = np.zeros(n, np.float32)
    grad = np.ones(n, np.float32)
    seen_mid_call = threading.Event()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if param[0] != param[-1]:
                seen_mid_call.set()
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(500):
            assert kernels.gradient_descent(param, grad, lr=1.0) is True
            if seen_mid_call.is_set():
                break
    finally:
        stop.set()
        watcher.join(JOIN_TIMEOUT)
    assert param[0] == param[-1] == -float(_ + 1)  # every call completed on every element
    assert seen_mid_call.is_set(), "no Python thread ran during 500 kernel calls: is the GIL held?"
