"""The cost of one TF call as a function of the time since the previous one.

At 16M elements the op's step often takes 1-2 ms longer than pyopt.kernels' on the same
data (paired), though the kernel inside the op runs about as fast. Much of the difference is
the ``tf.function`` call around it: a call of a tiny pyopt op costs 0.36-0.5 ms back to back
but 1.2-1.7 ms after a 4-16 ms pause (the previous step) on the 2-core Zen 3 VM of an earlier
run, 0.2-0.25 ms and 0.85-1.05 ms on the Zen 4 VM of the README's run, and the calling
thread's CPU time grows with it. Every TF implementation pays this on a
long step; a NumPy or torch call is far shorter, so it pays far less.

    python -m pyopt.benchmarks.dispatch_gap                      # pauses 0..16 ms, busy and sleeping
    python -m pyopt.benchmarks.dispatch_gap --pauses 0,4 --calls 50

For each pause: ``calls`` times, spend the pause (a Python busy loop, which keeps the core
busy, or time.sleep, which idles it), then time one call of a tf.function running a
pyopt gradient-descent op on a 16-element variable. Prints the median wall time per call
and the median CPU time of the calling thread per call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence


def busy_wait(seconds: float, clock: Callable[[], float] = time.perf_counter) -> None:
    end = clock() + seconds
    while clock() < end:
        pass


def time_after_pauses(
    call: Callable[[], object],
    pauses: Sequence[float],
    calls: int,
    pause: Callable[[float], None] = busy_wait,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.thread_time,
) -> list[dict[str, float]]:
    """Per pause (seconds): the median wall and calling-thread CPU seconds of ``call`` made
    right after that pause, over ``calls`` calls."""
    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}")
    if any(p < 0 for p in pauses):
        raise ValueError(f"pauses must be >= 0 seconds, got {list(pauses)}")
    rows = []
    for p in pauses:
        wall, cpu = [], []
        for _ in range(calls):
            if p:
                pause(p)
            c0, t0 = cpu_clock(), clock()
            call()
            t1, c1 = clock(), cpu_clock()
            wall.append(t1 - t0)
            cpu.append(c1 - c0)
        rows.append(dict(pause_s=p, wall_s=statistics.median(wall), cpu_s=statistics.median(cpu)))
    return rows


def tiny_op_call() -> Callable[[], object]:
    import numpy as np
    import tensorflow as tf

    import pyopt.ops as po

    var = tf.Variable(np.ones(16, np.float32))
    grad = tf.constant(np.ones(16, np.float32))
    fn = tf.function(lambda: po.gradient_descent_multi([var], [grad], lr=1e-3, backend="fused"))
    for _ in range(20):  # trace, then warm
        fn()
    return fn


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pauses", default="0,0.5,1,2,4,8,16", help="comma-separated pauses in ms")
    p.add_argument("--calls", type=int, default=30, help="calls per pause")
    p.add_argument("--no-sleep", action="store_true", help="busy pauses only")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        pauses = [float(x) / 1e3 for x in args.pauses.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--pauses must be comma-separated numbers of ms, got {args.pauses!r}") from None
    if args.calls < 1:
        raise SystemExit(f"--calls must be >= 1, got {args.calls}")
    if any(p < 0 for p in pauses):
        raise SystemExit(f"--pauses must be >= 0 ms, got {args.pauses!r}")
    call = tiny_op_call()
    kinds = {"busy": busy_wait} if args.no_sleep else {"busy": busy_wait, "sleep": time.sleep}
    print(f"one call of a tiny pyopt op in tf.function, after a pause; median of {args.calls} calls")
    print("| pause (ms) | " + " | ".join(f"{k}: wall (us) | {k}: thread CPU (us)" for k in kinds) + " |")
    print("|---:|" + "---:|---:|" * len(kinds))
    results = {k: time_after_pauses(call, pauses, args.calls, pause=fn) for k, fn in kinds.items()}
    for i, p in enumerate(pauses):
        cells = [f"{results[k][i]['wall_s'] * 1e6:.0f} | {results[k][i]['cpu_s'] * 1e6:.0f}" for k in kinds]
        print(f"| {p * 1e3:g} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
