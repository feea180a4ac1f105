"""What the benchmarks run on: workloads (tensor shapes and dtype), their data, the rules,
and a float64 reference of the first step used to check every implementation once.

Every update-only case starts from the same state: parameters ``0.05 * N(0, 1)``, fixed
``N(0, 1)`` gradients (never recomputed), zero slots, step 1. With ``CLIP = 1.0`` and
gradients of norm ~sqrt(n) the clipped variants really scale the gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import ml_dtypes
import numpy as np

from .._rules import ADAM
from .._rules import RULES as RULE_TABLE

# The rules by their short names ("gd", "momentum", "adam"), from the rule table.
TABLE_ROWS = {rule.short: rule for rule in RULE_TABLE.values()}
RULES = tuple(TABLE_ROWS)
CLIPS = (None, "clipnorm", "global_clipnorm")
LR = 1e-2
MOMENTUM = 0.9
BETA_1, BETA_2, EPSILON = (ADAM.defaults[name] for name in ("beta_1", "beta_2", "epsilon"))
CLIP = 1.0
# The hyperparameters every benchmark runs with (step: 1, 2, ... per step taken).
HYPER = {"lr": LR, "momentum": MOMENTUM, "beta_1": BETA_1, "beta_2": BETA_2, "epsilon": EPSILON}

SLOTS_PER_RULE = {short: len(rule.required_slots) for short, rule in TABLE_ROWS.items()}  # velocity; m and v

# Bytes moved per float32 element, nominal (clipping's extra read of g not counted): p and g
# read and p written, each slot read and written (gd 12, momentum 20, adam 28).
BYTES_PER_F32_ELEMENT = {short: 4 * (3 + 2 * n) for short, n in SLOTS_PER_RULE.items()}


def hyper(rule: str, step=None) -> dict:
    """The hyperparameters of ``rule`` (a short name) by the table's names; ``step`` for Adam's t."""
    row = TABLE_ROWS[rule]
    return {name: step if name == "step" else HYPER[name] for name in row.param_names}


DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def size_label(n: int) -> str:
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


@dataclass(frozen=True)
class Workload:
    """A list of tensor shapes of one dtype; ``kind`` groups workloads in the report."""

    name: str
    kind: str  # "dense" (size sweep), "dtype", "many", "mlp"
    shapes: tuple
    dtype: str = "float32"
    # Optimizer steps per timed call. 1: one tf.function call per step, so a small step also
    # pays TF's per-call dispatch. K > 1: K steps in a loop inside one call (tf.range in the
    # graph, as Keras' steps_per_execution does), which leaves the update's own cost; the
    # report divides by K, so times are still per step.
    steps_per_call: int = 1

    @property
    def n_tensors(self) -> int:
        return len(self.shapes)

    @property
    def n_elements(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def bytes_per_step(self, rule: str) -> int:
        return BYTES_PER_F32_ELEMENT[rule] * DTYPES[self.dtype].itemsize // 4 * self.n_elements


def dense(n: int, dtype: str = "float32", kind: str = "dense") -> Workload:
    prefix = "dense" if dtype == "float32" else f"dense_{dtype}"
    return Workload(f"{prefix}_{size_label(n)}", kind, ((n,),), dtype)


def many(count: int, n: int, steps_per_call: int = 1) -> Workload:
    label = f"{n // 1000}K" if n % 1000 == 0 else str(n)  # decimal: 200 x 10K = 2M elements
    suffix = f"_{steps_per_call}_per_call" if steps_per_call > 1 else ""
    return Workload(f"many_{count}x{label}{suffix}", "many", ((n,),) * count, steps_per_call=steps_per_call)


# The chapter's MLP 13-4-1: W1 (13, 4), b1 (4,), W2 (4, 1), b2 (1,).
MLP_SHAPES = ((13, 4), (4,), (4, 1), (1,))
MLP_UPDATE = Workload("mlp_13_4_1", "mlp", MLP_SHAPES)
MLP_STEPS_PER_CALL = 100
MLP_UPDATE_LOOPED = Workload(
    f"mlp_13_4_1_{MLP_STEPS_PER_CALL}_per_call", "mlp", MLP_SHAPES, steps_per_call=MLP_STEPS_PER_CALL
)
MANY_STEPS_PER_CALL = 10

SWEEP_SIZES = tuple(1 << k for k in (10, 14, 18, 20, 22, 24, 26))  # 1K .. 64M
QUICK_SIZES = (1 << 14, 1 << 20, 1 << 24)
CLIP_SIZE = 1 << 24  # clipped variants: dense 16M (and 200 x 10K)
TARGET_SIZE = 1 << 24


# The implementations every case runs; the others (pyopt pure-TF, the chapter's classes,
# Keras under XLA, NumPy expressions) run where they matter most, to keep the default run
# under ~25 minutes on 2 cores: the unclipped float32 sweep, many small tensors, the MLP.
CORE_IMPLS = ("pyopt_op", "pyopt_keras", "pyopt_numpy", "keras", "tf_raw", "torch")
SWEEP_SIZES_GD_MOMENTUM = (1 << 10, 1 << 20, 1 << 24, 1 << 26)


# Small steps also run the call floor: a tf.function call that takes the same variables
# and gradients and updates nothing (what every TF implementation pays per call, and per
# loop iteration at K steps per call).
FLOOR_IMPL = "tf_call_floor"


def case_impls(workload: Workload, rule: str, clip) -> tuple | None:
    """The implementations a case runs (None: all of them; the call floor see runs_call_floor)."""
    if clip is not None or workload.kind == "dtype" and rule != "adam":
        return CORE_IMPLS
    return None


def runs_call_floor(workload: Workload, clip) -> bool:
    """Small steps, unclipped: measured next to the call floor (at K steps per call, the floor
    of K loop iterations that take the same inputs)."""
    return workload.kind in ("many", "mlp") and clip is None and workload.n_tensors <= 200


def update_cases(quick: bool) -> list:
    """(workload, rule, clip) for the update-only benchmarks, grouped by workload."""
    cases = []
    adam_only = ("adam",)
    if quick:
        for n in QUICK_SIZES:
            rules = RULES if n == TARGET_SIZE else adam_only
            cases += [(dense(n), r, None) for r in rules]
        cases += [(dense(CLIP_SIZE), "adam", c) for c in CLIPS[1:]]
        cases += [(many(200, 10_000), "adam", None), (many(200, 10_000, MANY_STEPS_PER_CALL), "adam", None)]
        cases += [(MLP_UPDATE, "adam", None), (MLP_UPDATE_LOOPED, "adam", None)]
        return cases
    for n in SWEEP_SIZES:
        cases += [(dense(n), r, None) for r in RULES if r == "adam" or n in SWEEP_SIZES_GD_MOMENTUM]
        if n == CLIP_SIZE:
            cases += [(dense(n), r, c) for r in RULES for c in CLIPS[1:]]
    for dtype in ("bfloat16", "float64"):
        cases += [(dense(1 << 22, dtype, kind="dtype"), r, None) for r in RULES]
    cases += [(many(200, 10_000), r, None) for r in RULES]
    cases += [(many(200, 10_000), "adam", c) for c in CLIPS[1:]]
    cases += [(many(200, 10_000, MANY_STEPS_PER_CALL), "adam", None)]
    cases += [(many(1000, 1000), "adam", None)]
    cases += [(MLP_UPDATE, r, None) for r in RULES]
    cases += [(MLP_UPDATE_LOOPED, r, None) for r in RULES]
    return cases


class WorkloadData:
    """Initial parameters and fixed gradients of a workload (NumPy, the workload's dtype)."""

    def __init__(self, workload: Workload, seed: int = 0, params=None, grads=None):
        rng = np.random.default_rng(seed)
        dtype = DTYPES[workload.dtype]
        self.workload = workload
        self.params = params if params is not None else [_normal(rng, s, dtype, 0.05) for s in workload.shapes]
        self.grads = grads if grads is not None else [_normal(rng, s, dtype, 1.0) for s in workload.shapes]

    @cached_property
    def sum_squares(self) -> list:
        """Per-gradient sum of squares in float64 (chunked: no float64 copy of big tensors)."""
        out = []
        for g in self.grads:
            flat = g.reshape(-1)
            total = 0.0
            for i in range(0, flat.size, 1 << 22):
                chunk = flat[i : i + (1 << 22)].astype(np.float64)
                total += float(np.dot(chunk, chunk))
            out.append(total)
        return out

    def clip_scales(self, clip) -> list:
        """Keras' clip factors ``c / max(norm, c)`` per gradient (1.0 when not clipping)."""
        if clip is None:
            return [1.0] * len(self.grads)
        if clip == "global_clipnorm":
            norm = math.sqrt(sum(self.sum_squares))
            return [CLIP / max(norm, CLIP)] * len(self.grads)
        return [CLIP / max(math.sqrt(s), CLIP) for s in self.sum_squares]

    def positions(self) -> list:
        """(tensor index, flat index) pairs sampled by the value check."""
        picks = sorted({0, len(self.params) - 1})
        return [(t, i) for t in picks for i in sorted({0, self.params[t].size // 2, self.params[t].size - 1})]

    def expected_first_step(self, rule: str, clip, torch_epsilon: bool = False, steps: int = 1) -> np.ndarray:
        """Parameters at the sampled positions after ``steps`` steps from zero slots (the
        gradients are fixed), in float64, simulated element by element.

        ``torch_epsilon``: Adam as torch writes it, ``p -= lr/(1-b1^t) * m/(sqrt(v/(1-b2^t)) + eps)``
        (epsilon added after the bias correction; differs from Keras when |g| ~ eps).
        """
        scales = self.clip_scales(clip)
        out = []
        for t, i in self.positions():
            p = float(self.params[t].reshape(-1)[i])
            g = float(self.grads[t].reshape(-1)[i]) * scales[t]
            m = v = 0.0
            for step in range(1, steps + 1):
                if rule == "gd":
                    p -= LR * g
                elif rule == "momentum":  # m = mu*m - lr*g; p += m
                    m = MOMENTUM * m - LR * g
                    p += m
                else:
                    m, v = m + (g - m) * (1 - BETA_1), v + (g * g - v) * (1 - BETA_2)
                    if torch_epsilon:
                        p -= LR / (1 - BETA_1**step) * m / (math.sqrt(v / (1 - BETA_2**step)) + EPSILON)
                    else:
                        alpha = LR * math.sqrt(1 - BETA_2**step) / (1 - BETA_1**step)
                        p -= alpha * m / (math.sqrt(v) + EPSILON)
            out.append(p)
        return np.array(out)

    def initial_sample(self) -> np.ndarray:
        return np.array([float(self.params[t].reshape(-1)[i]) for t, i in self.positions()])


def _normal(rng, shape, dtype, scale):
    x = rng.standard_normal(shape, dtype=np.float32)
    if scale != 1.0:
        x *= np.float32(scale)
    return x.astype(dtype, copy=False)


class ParamUnchanged(AssertionError):
    """The step left every checked parameter unchanged (a bfloat16 step that rounds to zero)."""


_cache: dict = {}


def data_for(workload: Workload) -> WorkloadData:
    """The workload's data; only the latest workload is kept, so big ones are freed."""
    if workload not in _cache:
        _cache.clear()
        _cache[workload] = WorkloadData(workload)
    return _cache[workload]


def check_first_step(
    data: WorkloadData, rule: str, clip, after: np.ndarray, torch_epsilon: bool = False, steps: int = 1
) -> float:
    """Check the parameters after the first call (``steps`` steps) against the float64
    reference; the max relative error of the update. Raises AssertionError when the step was
    a no-op or wrong.

    float32/float64: the update must match to 1e-3 (relative to the update) plus a few ulps
    of the parameter. bfloat16: the update must have the right sign and be within a factor
    of 4 (bfloat16 holds 0.999 as 0.996, so implementations legitimately differ here); the
    point of the check is that no benchmark times a no-op. ``ParamUnchanged`` when no checked
    parameter moved.
    """
    before = data.initial_sample()
    expected = data.expected_first_step(rule, clip, torch_epsilon, steps)
    want, got = expected - before, np.asarray(after, dtype=np.float64) - before
    if not np.any(want != 0):
        raise AssertionError("reference update is zero at every check position")
    if not np.any(got != 0):
        raise ParamUnchanged(f"parameters unchanged after step 1 (expected update {want})")
    if np.any(got[want == 0] != 0):
        raise AssertionError(f"update where the gradient is zero: expected {want}, got {got}")
    got, want = got[want != 0], want[want != 0]
    rel = np.abs(got - want) / np.abs(want)
    dtype = DTYPES[data.workload.dtype]
    if dtype == DTYPES["bfloat16"]:
        ratio = got / want
        ok = np.all((ratio > 0.25) & (ratio < 4))
    else:
        ulp = np.finfo(dtype).eps * np.maximum(np.abs(before), np.abs(expected))[expected != before]
        ok = np.all(np.abs(got - want) <= 1e-3 * np.abs(want) + 4 * ulp)
    if not ok:
        raise AssertionError(f"first step differs from the reference: expected update {want}, got {got}")
    return float(rel.max())


def check_runner(data: WorkloadData, rule: str, clip, impl_name: str, runner, steps: int = 1) -> float:
    """``check_first_step`` on the parameters a runner samples after its first call; torch's
    Adam adds epsilon after the bias correction, so it is checked against that form."""
    return check_first_step(
        data, rule, clip, runner.sample(data.positions()), torch_epsilon=impl_name == "torch", steps=steps
    )
