"""The Python path around the fused op: eager ``pyopt.optimizers.Adam.apply_gradients`` against
a bare ``pyopt.ops.adam_multi`` call on the same variables, timed paired in one process.

    python -m pyopt.benchmarks.python_path                      # 60 rounds x 50 calls, backend auto
    python -m pyopt.benchmarks.python_path --rounds 20 --backend tf

The model is the chapter's MLP (``keras.Sequential``: Input(13) -> Dense(4, relu) ->
Dense(1); 4 variables), the gradients fixed. Three steps are timed round by round in an
order that changes from round to round (:func:`pyopt.benchmarks.paired.time_rounds`):

- ``bare``: ``pyopt.ops.adam_multi`` on ``tf.Variable`` copies of the model's variables and
  their own m and v, ``lr`` and ``step`` as Python numbers (what a caller of the functional
  API writes);
- ``keras``: ``pyopt.optimizers.Adam.apply_gradients`` on the model's variables;
- ``keras_floor``: the same optimizer class with the update left out (its
  ``_backend_apply_gradients`` does nothing): what Keras's own ``apply`` costs around the
  update (iteration counter, learning-rate read, checks).

Printed: ms per call (median over rounds) and the medians of the per-round ratios keras /
bare and keras_floor / bare; the second is the part of the first that is Keras's, the rest
(keras - keras_floor) / bare is pyopt's step including the op. Before timing, both paths run
three steps from the same state and must give bitwise the same variables, which must match
the float64 reference of :mod:`pyopt.benchmarks.workloads` (the MLP's shapes are its
``mlp_13_4_1`` workload).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

from .paired import ratio_of, summarize, time_rounds
from .workloads import BETA_1, BETA_2, EPSILON, LR, MLP_UPDATE, WorkloadData, check_first_step

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHECK_STEPS = 3


def chapter_mlp(seed: int = 0):
    """The chapter's MLP 13-4-1 (Dense(4, relu) -> Dense(1)); its variables are W1, b1, W2, b2."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((13,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])


class Paths:
    """The model, its fixed gradients, and the three steps timed (see the module docstring)."""

    def __init__(self, backend: str = "auto", seed: int = 0):
        import tensorflow as tf

        import pyopt.ops as ops
        import pyopt.optimizers as po

        self.model = chapter_mlp(seed)
        variables = self.model.trainable_variables
        rng = np.random.default_rng(seed)
        self.initial = [v.numpy() for v in variables]
        self.grad_arrays = [rng.standard_normal(v.shape).astype(np.float32) for v in variables]
        grads = [tf.constant(g) for g in self.grad_arrays]

        optimizer = po.Adam(LR, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON, backend=backend)
        optimizer.build(variables)
        self.optimizer = optimizer

        class Floor(po.Adam):
            def _backend_apply_gradients(self, grads, trainable_variables):
                pass  # Keras's apply around an update that does nothing

        floor = Floor(LR, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON, backend=backend)
        floor.build(variables)

        self.bare_variables = [tf.Variable(x) for x in self.initial]
        ms = [tf.Variable(np.zeros_like(x)) for x in self.initial]
        vs = [tf.Variable(np.zeros_like(x)) for x in self.initial]
        # Keras keeps lr in a float32 variable: the same value here, so both paths compute alike
        lr = float(np.float32(LR))
        t = [0]

        def bare():
            t[0] += 1
            return ops.adam_multi(
                self.bare_variables,
                grads,
                ms,
                vs,
                lr=lr,
                beta_1=BETA_1,
                beta_2=BETA_2,
                epsilon=EPSILON,
                step=t[0],
                backend=backend,
            )

        self.steps = {
            "bare": bare,
            "keras": lambda: optimizer.apply_gradients(zip(grads, variables, strict=True)),
            "keras_floor": lambda: floor.apply_gradients(zip(grads, variables, strict=True)),
        }

    def check(self, steps: int = CHECK_STEPS) -> float:
        """``steps`` steps of each path from the initial state: bitwise the same variables, and
        the float64 reference's (its relative error returned). Call before any other step."""
        for _ in range(steps):
            self.steps["bare"]()
            self.steps["keras"]()
        keras_values = [v.numpy() for v in self.model.trainable_variables]
        bare_values = [v.numpy() for v in self.bare_variables]
        for i, (a, b) in enumerate(zip(keras_values, bare_values, strict=True)):
            if a.tobytes() != b.tobytes():
                raise AssertionError(f"variable {i}: the Keras optimizer and adam_multi differ after {steps} steps")
        data = WorkloadData(MLP_UPDATE, params=self.initial, grads=self.grad_arrays)
        after = np.array([float(keras_values[t].reshape(-1)[i]) for t, i in data.positions()])
        return check_first_step(data, "adam", None, after, steps=steps)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=60)
    p.add_argument("--reps", type=int, default=50, help="calls per step per round")
    p.add_argument("--backend", choices=("auto", "fused", "tf"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the model, the gradients and the round orders")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    paths = Paths(args.backend, args.seed)
    error = paths.check()
    for step in paths.steps.values():  # warm: the first calls build what later calls reuse
        for _ in range(10):
            step()
    times = time_rounds(paths.steps, args.rounds, args.reps, seed=args.seed)
    rows = {r["name"]: r for r in summarize(times)}
    keras_x, floor_x = ratio_of(times, "keras", "bare"), ratio_of(times, "keras_floor", "bare")
    print(
        f"Adam on the chapter MLP (4 variables), eager, backend={args.backend} (ran: "
        f"{paths.optimizer.last_backend}): {args.rounds} rounds x {args.reps} calls, interleaved; "
        f"{CHECK_STEPS} steps of both paths equal bitwise, max rel. error vs float64 {error:.1e}"
    )
    print("| step | ms/call (median) | ms/call (min) | x bare (median of rounds) |\n|---|---:|---:|---:|")
    labels = {
        "bare": "pyopt.ops.adam_multi",
        "keras": "pyopt.optimizers.Adam.apply_gradients",
        "keras_floor": "Keras's apply, no update",
    }
    for name, label in labels.items():
        x = {"bare": 1.0, "keras": keras_x, "keras_floor": floor_x}[name]
        print(f"| {label} | {rows[name]['median_s'] * 1e3:.3f} | {rows[name]['min_s'] * 1e3:.3f} | {x:.2f} |")
    pyopt_share = statistics.median(
        (k - f) / b for k, f, b in zip(times["keras"], times["keras_floor"], times["bare"], strict=True)
    )
    print(
        f"keras / bare = {keras_x:.2f}: Keras's apply {floor_x:.2f} + pyopt's step {pyopt_share:.2f} "
        "(medians of the per-round ratios)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
