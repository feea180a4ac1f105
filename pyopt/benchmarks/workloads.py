"""What the benchmarks run on: workloads (tensor shapes and dtype), their data, the rules,
and a float64 reference of the first step used to check every implementation once.

Every update-only case starts from the same state: parameters ``0.05 * N(0, 1)``, fixed
``N(0, 1)`` gradients (never recomputed), zero slots (Adagrad's accumulators at Keras's 0.1),
step 1. With ``CLIP = 1.0`` and gradients of norm ~sqrt(n) the clipped variants really scale
the gradients. The Embedding workload's gradient is row-sparse (``tf.IndexedSlices``): a
batch of ids drawn from a Zipf distribution, so that ids repeat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import ml_dtypes
import numpy as np

from .._rules import ADAM, RMSPROP
from .._rules import RULES as RULE_TABLE

# The rules by their short names ("gd", "momentum", "adam", "adagrad", ...), from the rule
# table, and RMSprop with both optional slots given (a momentum buffer, centered): its
# heaviest step, 36 bytes per element against the plain one's 20.
VARIANTS = {"rmsprop_cm": ("rmsprop", ("with_momentum", "centered"))}
TABLE_ROWS = {}
for _rule in RULE_TABLE.values():
    TABLE_ROWS[_rule.short] = _rule
    TABLE_ROWS.update({name: _rule for name, (short, _) in VARIANTS.items() if short == _rule.short})
RULES = tuple(TABLE_ROWS)
# The rules of every workload (size sweep, dtypes, MLP, train steps); the others (issue #20's)
# run at 16M and 200 x 10K, Adagrad and Adam also on the Embedding.
FIRST_RULES = ("gd", "momentum", "adam")
NEW_RULES = tuple(r for r in RULES if r not in FIRST_RULES)
EMBEDDING_RULES = ("adagrad", "adam")
CLIPS = (None, "clipnorm", "global_clipnorm")
LR = 1e-2
MOMENTUM = 0.9
BETA_1, BETA_2, EPSILON = (ADAM.defaults[name] for name in ("beta_1", "beta_2", "epsilon"))
RHO = RMSPROP.defaults["rho"]
INITIAL_ACCUMULATOR = 0.1  # Keras's Adagrad(initial_accumulator_value=0.1): every implementation starts there
CLIP = 1.0
# The hyperparameters every benchmark runs with: the row's defaults (Keras's), then these
# (step: 1, 2, ... per step taken; Nadam's u_product the running product up to it).
HYPER = {"lr": LR}
RULE_HYPER = {"momentum": {"momentum": MOMENTUM}, "rmsprop_cm": {"momentum": MOMENTUM}}


def given(rule: str) -> tuple:
    """The flags of the optional slots a rule's benchmarks give (RMSprop's variant: both)."""
    return VARIANTS[rule][1] if rule in VARIANTS else ()


def slots_used(rule: str) -> tuple:
    """The slots (``_rules.Slot``) a rule's step reads and writes: the required ones, then the
    optional ones it gives, in the row's order."""
    return tuple(s for s in TABLE_ROWS[rule].slots if not s.optional or s.given in given(rule))


def slot_init(rule: str, slot) -> float:
    """The value a slot starts at: 0, Adagrad's accumulators Keras's 0.1."""
    return INITIAL_ACCUMULATOR if TABLE_ROWS[rule].core == "adagrad" else 0.0


SLOTS_PER_RULE = {rule: len(slots_used(rule)) for rule in RULES}  # velocity; m and v; ...

# Bytes moved per float32 element, nominal (clipping's extra read of g not counted): p and g
# read and p written, each slot read and written (gd 12; momentum, Adagrad, RMSprop, Lion 20;
# Adam, AdamW, Adamax, Nadam 28; RMSprop centered + momentum 36).
BYTES_PER_F32_ELEMENT = {short: 4 * (3 + 2 * n) for short, n in SLOTS_PER_RULE.items()}


def nadam_u(t, beta_1: float = BETA_1):
    """Nadam's momentum schedule u_t = beta_1*(1 - 0.5*0.96^t)."""
    return beta_1 * (1.0 - 0.5 * 0.96**t)


def nadam_u_product(step: int, beta_1: float = BETA_1) -> float:
    """u_1*...*u_step, the running product Keras's Nadam holds after that step's update."""
    return math.prod(nadam_u(i, beta_1) for i in range(1, step + 1))


def hyper(rule: str, step=None, u_product=None) -> dict:
    """The hyperparameters of ``rule`` (a short name) by the table's names; ``step`` for the
    step number t; Nadam's ``u_product`` computed from an int ``step`` unless given."""
    row = TABLE_ROWS[rule]
    values = {**row.defaults, **HYPER, **RULE_HYPER.get(rule, {})}
    out = {}
    for name in row.param_names:
        if name == "step":
            out[name] = step
        elif name == "u_product":
            out[name] = nadam_u_product(step, values["beta_1"]) if u_product is None else u_product
        else:
            out[name] = values[name]
    return out


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
    kind: str  # "dense" (size sweep), "dtype", "many", "mlp", "embedding"
    shapes: tuple
    dtype: str = "float32"
    # Optimizer steps per timed call. 1: one tf.function call per step, so a small step also
    # pays TF's per-call dispatch. K > 1: K steps in a loop inside one call (tf.range in the
    # graph, as Keras' steps_per_execution does), which leaves the update's own cost; the
    # report divides by K, so times are still per step.
    steps_per_call: int = 1
    # A row-sparse gradient (an Embedding's): this many ids per step, drawn with repeats; 0: dense.
    ids: int = 0

    @property
    def n_tensors(self) -> int:
        return len(self.shapes)

    @property
    def n_elements(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def sparse(self) -> bool:
        return self.ids > 0

    def bytes_per_step(self, rule: str) -> int:
        """The dense step's bytes (for a row-sparse gradient: the step with the densified gradient)."""
        return BYTES_PER_F32_ELEMENT[rule] * DTYPES[self.dtype].itemsize // 4 * self.n_elements


def dense(n: int, dtype: str = "float32", kind: str = "dense") -> Workload:
    prefix = "dense" if dtype == "float32" else f"dense_{dtype}"
    return Workload(f"{prefix}_{size_label(n)}", kind, ((n,),), dtype)


def many(count: int, n: int, steps_per_call: int = 1) -> Workload:
    label = f"{n // 1000}K" if n % 1000 == 0 else str(n)  # decimal: 200 x 10K = 2M elements
    suffix = f"_{steps_per_call}_per_call" if steps_per_call > 1 else ""
    return Workload(f"many_{count}x{label}{suffix}", "many", ((n,),) * count, steps_per_call=steps_per_call)


def embedding(rows: int, dim: int, ids: int) -> Workload:
    return Workload(f"embedding_{size_label(rows)}x{dim}", "embedding", ((rows, dim),), ids=ids)


# The chapter's MLP 13-4-1: W1 (13, 4), b1 (4,), W2 (4, 1), b2 (1,).
MLP_SHAPES = ((13, 4), (4,), (4, 1), (1,))
MLP_UPDATE = Workload("mlp_13_4_1", "mlp", MLP_SHAPES)
MLP_STEPS_PER_CALL = 100
MLP_UPDATE_LOOPED = Workload(
    f"mlp_13_4_1_{MLP_STEPS_PER_CALL}_per_call", "mlp", MLP_SHAPES, steps_per_call=MLP_STEPS_PER_CALL
)
MANY_STEPS_PER_CALL = 10
# An Embedding table of 1M rows x 64 (256 MiB in float32) and a batch of 4096 ids from a Zipf
# distribution (exponent 1): about 2400 distinct rows, the most frequent one ~290 times.
EMBEDDING = embedding(1 << 20, 64, 4096)
ZIPF_EXPONENT = 1.0

SWEEP_SIZES = tuple(1 << k for k in (10, 14, 18, 20, 22, 24, 26))  # 1K .. 64M
QUICK_SIZES = (1 << 14, 1 << 20, 1 << 24)
CLIP_SIZE = 1 << 24  # clipped variants: dense 16M (and 200 x 10K)
TARGET_SIZE = 1 << 24


# The implementations every case runs; the others (pyopt pure-TF, the chapter's classes,
# Keras under XLA, NumPy expressions) run where they matter most, to keep the default run
# under ~30 minutes on 2 cores: the unclipped float32 sweep, many small tensors, the MLP.
CORE_IMPLS = ("pyopt_op", "pyopt_keras", "pyopt_numpy", "keras", "tf_raw", "torch")
# --quick times issue #20's rules at 16M against the references of their targets only.
QUICK_NEW_RULE_IMPLS = ("pyopt_op", "pyopt_keras", "keras", "tf_raw")
# The Embedding: pyopt's step with the densified gradient (lazy=False) and its lazy step.
LAZY_IMPLS = ("pyopt_op_lazy", "pyopt_keras_lazy", "pyopt_numpy_lazy")
EMBEDDING_IMPLS = ("pyopt_op", "pyopt_keras", "pyopt_numpy", *LAZY_IMPLS, "keras", "tf_raw", "torch")
ALL_DENSE_IMPLS = (
    "pyopt_op",
    "pyopt_keras",
    "pyopt_tf",
    "keras",
    "keras_xla",
    "chapter",
    "tf_raw",
    "pyopt_numpy",
    "numpy",
    "torch",
)
SWEEP_SIZES_GD_MOMENTUM = (1 << 10, 1 << 20, 1 << 24, 1 << 26)


# Small steps also run the call floor: a tf.function call that takes the same variables
# and gradients and updates nothing (what every TF implementation pays per call, and per
# loop iteration at K steps per call).
FLOOR_IMPL = "tf_call_floor"


def case_impls(workload: Workload, rule: str, clip, quick: bool = False) -> tuple:
    """The implementations a case runs (the call floor: see runs_call_floor)."""
    if workload.sparse:
        return EMBEDDING_IMPLS
    if rule not in FIRST_RULES:
        return QUICK_NEW_RULE_IMPLS if quick else CORE_IMPLS
    if clip is not None or workload.kind == "dtype" and rule != "adam":
        return CORE_IMPLS
    return ALL_DENSE_IMPLS


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
        cases += [(dense(n), r, None) for r in FIRST_RULES if r == "adam" or n in SWEEP_SIZES_GD_MOMENTUM]
        if n == CLIP_SIZE:
            cases += [(dense(n), r, c) for r in FIRST_RULES for c in CLIPS[1:]]
        if n == TARGET_SIZE:
            cases += [(dense(n), r, None) for r in NEW_RULES]
    for dtype in ("bfloat16", "float64"):
        cases += [(dense(1 << 22, dtype, kind="dtype"), r, None) for r in FIRST_RULES]
    cases += [(many(200, 10_000), r, None) for r in RULES]
    cases += [(many(200, 10_000), "adam", c) for c in CLIPS[1:]]
    cases += [(many(200, 10_000, MANY_STEPS_PER_CALL), "adam", None)]
    cases += [(many(1000, 1000), "adam", None)]
    cases += [(MLP_UPDATE, r, None) for r in FIRST_RULES]
    cases += [(MLP_UPDATE_LOOPED, r, None) for r in FIRST_RULES]
    cases += [(EMBEDDING, r, None) for r in EMBEDDING_RULES]
    return cases


def zipf_ids(rng, rows: int, count: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    """``count`` row ids in [0, rows), id k drawn with probability proportional to 1/(k+1)^exponent
    (id 0 the most frequent, as in a vocabulary sorted by frequency), int64, in draw order."""
    cdf = np.cumsum(1.0 / np.arange(1, rows + 1, dtype=np.float64) ** exponent)
    return np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right").astype(np.int64)


class WorkloadData:
    """Initial parameters and fixed gradients of a workload (NumPy, the workload's dtype). A
    row-sparse workload has ``values`` and ``indices`` per tensor (``values[k]`` the gradient
    of row ``indices[k]``, ids repeated) and no dense ``grads``."""

    def __init__(self, workload: Workload, seed: int = 0, params=None, grads=None):
        rng = np.random.default_rng(seed)
        dtype = DTYPES[workload.dtype]
        self.workload = workload
        self.params = params if params is not None else [_normal(rng, s, dtype, 0.05) for s in workload.shapes]
        self.values = self.indices = None
        if workload.sparse:
            self.indices = [zipf_ids(rng, s[0], workload.ids) for s in workload.shapes]
            self.values = [_normal(rng, (workload.ids, *s[1:]), dtype, 1.0) for s in workload.shapes]
            self.grads = None
        else:
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
            return [1.0] * len(self.params)
        if self.workload.sparse:
            raise ValueError("the row-sparse workloads are not clipped")
        if clip == "global_clipnorm":
            norm = math.sqrt(sum(self.sum_squares))
            return [CLIP / max(norm, CLIP)] * len(self.grads)
        return [CLIP / max(math.sqrt(s), CLIP) for s in self.sum_squares]

    def positions(self) -> list:
        """(tensor index, flat index) pairs sampled by the value check. Row-sparse: the first and
        last column of the most repeated row, of a row present once and of a row absent."""
        picks = sorted({0, len(self.params) - 1})
        if not self.workload.sparse:
            return [(t, i) for t in picks for i in sorted({0, self.params[t].size // 2, self.params[t].size - 1})]
        out = []
        for t in picks:
            rows, dim = self.params[t].shape[0], self.params[t].size // self.params[t].shape[0]
            ids, counts = np.unique(self.indices[t], return_counts=True)
            absent = next(r for r in range(rows - 1, -1, -1) if r not in set(ids.tolist()))
            for row in (int(ids[np.argmax(counts)]), int(ids[np.argmin(counts)]), absent):
                out += [(t, row * dim), (t, row * dim + dim - 1)]
        return out

    def grad_at(self, t: int, i: int) -> tuple[float, float]:
        """The gradient at flat index ``i`` of tensor ``t`` (a row-sparse one densified: the sum
        over the row's repeats) and the sum of its repeats' squares (g*g when dense)."""
        if not self.workload.sparse:
            g = float(self.grads[t].reshape(-1)[i])
            return g, g * g
        dim = self.params[t].size // self.params[t].shape[0]
        row, col = divmod(i, dim)
        repeats = self.values[t][self.indices[t] == row, col].astype(np.float64)
        return float(repeats.sum()), float(np.dot(repeats, repeats))

    def expected_first_step(self, rule: str, clip, form: str = "keras", steps: int = 1) -> np.ndarray:
        """Parameters at the sampled positions after ``steps`` steps from the initial slots (the
        gradients are fixed), in float64, simulated element by element (see :func:`reference_step`)."""
        return self._simulate(rule, clip, form, steps)[0]

    def sign_ties(self, rule: str, clip, steps: int = 1) -> np.ndarray:
        """Per sampled position, how many of the ``steps`` steps had a sign argument (Lion's
        b1*m + (1-b1)*g) within rounding error of 0 (see :func:`reference_step`)."""
        return self._simulate(rule, clip, "keras", steps)[1]

    def _simulate(self, rule: str, clip, form: str, steps: int):
        scales = self.clip_scales(clip)
        out, ties = [], []
        for t, i in self.positions():
            p = float(self.params[t].reshape(-1)[i])
            g, g2 = self.grad_at(t, i)
            g, g2 = g * scales[t], g2 * scales[t] ** 2
            state = {"ties": 0}
            for step in range(1, steps + 1):
                p = reference_step(rule, p, g, state, step, form, g2)
            out.append(p)
            ties.append(state["ties"])
        return np.array(out), np.array(ties)

    def initial_sample(self) -> np.ndarray:
        return np.array([float(self.params[t].reshape(-1)[i]) for t, i in self.positions()])


# Reference forms (what an implementation computes besides Keras's formulas, see reference_step).
FORMS = ("keras", "torch", "tf", "keras_sparse")
# Lion's sign: an argument within this many float32 ulps of its terms' magnitude may round to
# either sign in a float32 kernel.
TIE_ULPS = 4


def reference_step(rule: str, p: float, g: float, state: dict, t: int, form: str = "keras", g2=None) -> float:
    """One step of ``rule`` on one element in float64: ``p`` after it; ``state`` holds the
    slots by name (starting at :func:`slot_init`) and is updated. Weight decay
    ``p = p - lr*wd*p`` first (the row's default). ``form``:

    - ``"keras"``: Keras 3's formulas (pyopt's);
    - ``"torch"``: torch's Adam/AdamW, ``p -= lr/(1-b1^t) * m/(sqrt(v/(1-b2^t)) + eps)``, and
      torch's Adagrad, ``p -= lr*g/(sqrt(acc) + eps)``;
    - ``"tf"``: TF's ``ApplyAdagradV2``, epsilon outside the square root as torch's;
    - ``"keras_sparse"``: Keras's on an IndexedSlices gradient with repeated ids, which squares
      each repeat's values before summing them: ``g2`` (the sum of the squares) in place of
      g*g (the square of the sum).

    ``state["ties"]`` counts Lion's steps whose sign argument lies within ``TIE_ULPS`` float32
    ulps of the magnitude of its terms (there either sign is a correct float32 result).
    """
    row = TABLE_ROWS[rule]
    h = hyper(rule, t)
    slots = {s.name: state.setdefault(s.name, slot_init(rule, s)) for s in slots_used(rule)}
    gg = g2 if form == "keras_sparse" and g2 is not None else g * g
    p -= h["lr"] * row.weight_decay * p
    name = row.core
    if name == "gradient_descent":
        return p - h["lr"] * g
    if name == "momentum":  # m = mu*m - lr*g; p += m
        state["velocity"] = h["momentum"] * slots["velocity"] - h["lr"] * g
        return p + state["velocity"]
    if name == "adam":
        b1, b2, eps = h["beta_1"], h["beta_2"], h["epsilon"]
        m = state["m"] = slots["m"] + (g - slots["m"]) * (1 - b1)
        v = state["v"] = slots["v"] + (gg - slots["v"]) * (1 - b2)
        if form == "torch":
            return p - h["lr"] / (1 - b1**t) * m / (math.sqrt(v / (1 - b2**t)) + eps)
        return p - h["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)
    if name == "adagrad":  # acc += g^2; p -= lr*g/sqrt(acc + eps)  (torch, TF's V2: sqrt(acc) + eps)
        acc = state["accumulator"] = slots["accumulator"] + gg
        denominator = math.sqrt(acc) + h["epsilon"] if form in ("torch", "tf") else math.sqrt(acc + h["epsilon"])
        return p - h["lr"] * g / denominator
    if name == "rmsprop":
        rho = h["rho"]
        v = state["velocity"] = rho * slots["velocity"] + (1 - rho) * gg
        denominator = v + h["epsilon"]
        if "average_gradient" in slots:  # centered: a = rho*a + (1-rho)*g; v - a^2 + eps
            a = state["average_gradient"] = rho * slots["average_gradient"] + (1 - rho) * g
            denominator = v - a * a + h["epsilon"]
        inc = h["lr"] * g / math.sqrt(denominator)
        if "momentum_buffer" in slots:  # b = mu*b + inc; p -= b
            inc = state["momentum_buffer"] = h["momentum"] * slots["momentum_buffer"] + inc
        return p - inc
    if name == "adamax":  # m += (g-m)(1-b1); u = max(b2*u, |g|); p -= lr/(1-b1^t) * m/(u+eps)
        b1 = h["beta_1"]
        m = state["m"] = slots["m"] + (g - slots["m"]) * (1 - b1)
        u = state["u"] = max(h["beta_2"] * slots["u"], abs(g))
        return p - h["lr"] / (1 - b1**t) * m / (u + h["epsilon"])
    if name == "nadam":
        b1, b2 = h["beta_1"], h["beta_2"]
        u_t, u_next = nadam_u(t, b1), nadam_u(t + 1, b1)
        u_product = state["u_product"] = state.get("u_product", 1.0) * u_t
        m = state["m"] = slots["m"] + (g - slots["m"]) * (1 - b1)
        v = state["v"] = slots["v"] + (gg - slots["v"]) * (1 - b2)
        m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
        return p - h["lr"] * m_hat / (math.sqrt(v / (1 - b2**t)) + h["epsilon"])
    if name == "lion":  # p -= lr*sign(b1*m + (1-b1)*g); m = b2*m + (1-b2)*g
        b1, b2 = h["beta_1"], h["beta_2"]
        terms = (b1 * slots["m"], (1 - b1) * g)
        argument = sum(terms)
        if abs(argument) <= TIE_ULPS * np.finfo(np.float32).eps * (abs(terms[0]) + abs(terms[1])):
            state["ties"] += 1
        state["m"] = b2 * slots["m"] + (1 - b2) * g
        return p - h["lr"] * float(np.sign(argument))
    raise ValueError(f"no reference for rule {rule!r}")


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
    data: WorkloadData, rule: str, clip, after: np.ndarray, form: str = "keras", steps: int = 1
) -> float:
    """Check the parameters after the first call (``steps`` steps) against the float64
    reference in ``form`` (see :func:`reference_step`); the max relative error of the update.
    Raises AssertionError when the step was a no-op or wrong.

    float32/float64: the update must match to 1e-3 (relative to the update) plus a few ulps
    of the parameter; for Lion, a position whose sign argument was a tie (within rounding
    error of 0) in k of the steps may also differ by up to 2*lr*k (the other sign), and only
    there. bfloat16: the update must have the right sign and be within a factor of 4
    (bfloat16 holds 0.999 as 0.996, so implementations legitimately differ here); the point of
    the check is that no benchmark times a no-op. ``ParamUnchanged`` when no checked
    parameter moved.
    """
    before = data.initial_sample()
    expected = data.expected_first_step(rule, clip, form, steps)
    ties = data.sign_ties(rule, clip, steps)
    want, got = expected - before, np.asarray(after, dtype=np.float64) - before
    if not np.any(want != 0):
        raise AssertionError("reference update is zero at every check position")
    if not np.any(got != 0):
        raise ParamUnchanged(f"parameters unchanged after step 1 (expected update {want})")
    if np.any(got[(want == 0) & (ties == 0)] != 0):
        raise AssertionError(f"update where the gradient is zero: expected {want}, got {got}")
    moved = want != 0
    dtype = DTYPES[data.workload.dtype]
    if dtype == DTYPES["bfloat16"]:
        ratio = got[moved] / want[moved]
        ok = np.all((ratio > 0.25) & (ratio < 4))
    else:
        ulp = np.finfo(dtype).eps * np.maximum(np.abs(before), np.abs(expected))
        slack = 2 * LR * ties  # the other sign at each tie
        ok = np.all(np.abs(got - want) <= 1e-3 * np.abs(want) + 4 * ulp + slack)
    if not ok:
        raise AssertionError(f"first step differs from the reference: expected update {want}, got {got}")
    return float((np.abs(got[moved] - want[moved]) / np.abs(want[moved])).max())


def check_runner(data: WorkloadData, rule: str, clip, impl_name: str, runner, steps: int = 1) -> float:
    """``check_first_step`` on the parameters a runner samples after its first call, against
    the reference in the runner's form (torch's Adam adds epsilon after the bias correction)."""
    form = getattr(runner, "form", "keras")
    return check_first_step(data, rule, clip, runner.sample(data.positions()), form=form, steps=steps)
