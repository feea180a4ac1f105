"""The optimizer-step implementations compared by the benchmarks.

Each implementation turns (rule, clip, parameters, gradients) into a ``Runner``: ``step()``
runs one optimizer step (inside ``tf.function`` for the TensorFlow ones) and ``sample()``
reads the parameters at the check positions. TensorFlow implementations are written as an
*updater*: ``make_updater(rule, clip, variables)`` returns ``apply(grads)`` to call inside a
``tf.function``, so the same code serves the update-only cases (fixed gradients) and the
train steps (gradients from a tape).

A row-sparse workload (the Embedding) gives the TF implementations a ``tf.IndexedSlices``
gradient, the NumPy ones ``values`` and ``indices``, torch a sparse COO gradient (ids repeated,
uncoalesced, as ``nn.Embedding(sparse=True)`` gives). pyopt's implementations take the step with
the densified gradient there (``lazy=False``), their ``*_lazy`` twins the lazy one.

An implementation that cannot run here raises ``Unavailable`` with the reason (the test
turns it into a skip): pyopt's TF op library or Keras optimizers not built yet, torch not
installed, a combination that does not exist (TF has no fused Nadam op, torch no fused Lion).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .workloads import (
    BETA_1,
    BETA_2,
    CLIP,
    DTYPES,
    EPSILON,
    FIRST_RULES,
    INITIAL_ACCUMULATOR,
    LR,
    MOMENTUM,
    TABLE_ROWS,
    given,
    hyper,
    nadam_u,
    slot_init,
    slots_used,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Unavailable(Exception):
    """This implementation cannot run this case here; the message says why."""


@dataclass
class Runner:
    step: Callable[[], object]
    sample: Callable[[list], np.ndarray]  # positions -> float64 values
    form: str = "keras"  # the reference it is checked against (workloads.reference_step)


def _clip_kwargs(clip) -> dict:
    return {} if clip is None else {clip: CLIP}


# --------------------------------------------------------------------------- TensorFlow


def _tf():
    import tensorflow as tf

    return tf


def tf_variables(arrays, keras_variables: bool = False) -> list:
    if keras_variables:
        import keras

        return [keras.Variable(a, dtype=str(a.dtype)) for a in arrays]
    tf = _tf()
    return [tf.Variable(a) for a in arrays]


def tf_sample(variables) -> Callable[[list], np.ndarray]:
    tf = _tf()

    def sample(positions):
        out = []
        for t, i in positions:
            flat = tf.reshape(tf.convert_to_tensor(variables[t]), [-1])
            out.append(float(tf.cast(flat[i], tf.float64)))
        return np.array(out)

    return sample


def _zeros_like(variables, value: float = 0.0) -> list:
    tf = _tf()
    return [tf.Variable(tf.fill(v.shape, tf.constant(value, v.dtype))) for v in variables]


def _slot_lists(rule, make):
    """Per slot of the rule's row, ``make(slot)`` for the slots it uses, None for the others."""
    used = slots_used(rule)
    return [make(slot) if slot in used else None for slot in TABLE_ROWS[rule].slots]


def tf_grads(data) -> list:
    """The gradients as TF takes them: dense tensors, or tf.IndexedSlices (ids repeated, unsorted)."""
    tf = _tf()
    if not data.workload.sparse:
        return [tf.constant(g) for g in data.grads]
    return [
        tf.IndexedSlices(tf.constant(v), tf.constant(i), tf.constant(p.shape, tf.int64))
        for p, v, i in zip(data.params, data.values, data.indices, strict=True)
    ]


def _pyopt_ops_updater(backend: str, lazy: bool = False):
    def make(rule, clip, variables):
        tf = _tf()
        try:
            import pyopt.ops as po

            if backend == "fused":
                reason = po.fused_unsupported_reason(variables, variables)
                if reason:
                    raise Unavailable(f"pyopt fused ops: {reason}")
        except ImportError as exc:
            raise Unavailable(f"pyopt fused ops not importable: {exc}") from exc
        from pyopt.ops._api import Step

        # What pyopt.ops.<rule>_multi does per call: a Step of the rule's table row, called once.
        row = TABLE_ROWS[rule]
        slots = _slot_lists(rule, lambda slot: _zeros_like(variables, slot_init(rule, slot)))
        t = tf.Variable(0, dtype=tf.int64) if "step" in row.param_names else None
        # Nadam: the running product u_1*...*u_t, advanced before each step's update (as Keras)
        u_product = tf.Variable(1.0, dtype=tf.float64) if "u_product" in row.param_names else None
        options = dict(_clip_kwargs(clip), weight_decay=row.weight_decay, lazy=lazy)

        def apply(grads):
            step = Step(row, variables, slots, backend=backend, **options)
            t_now = None if t is None else t.assign_add(1)
            product = None
            if u_product is not None:
                beta_1 = hyper(rule, 1)["beta_1"]
                product = u_product.assign(u_product * nadam_u(tf.cast(t_now, tf.float64), beta_1))
            step(grads, hyper(rule, t_now, u_product=product))

        return apply

    return make


# Keras's class per table row, and its constructor's arguments besides the learning rate.
KERAS_CLASSES = {
    "gradient_descent": "SGD",
    "momentum": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "rmsprop": "RMSprop",
    "adamax": "Adamax",
    "nadam": "Nadam",
    "lion": "Lion",
}


def keras_arguments(rule) -> tuple[str, dict]:
    """(class name, keyword arguments) of the Keras optimizer that takes ``rule``'s step with the
    benchmarks' hyperparameters (the same class names in keras.optimizers and pyopt.optimizers)."""
    row = TABLE_ROWS[rule]
    h = hyper(rule, 1)
    kw = {name: h[name] for name in ("momentum", "beta_1", "beta_2", "epsilon", "rho") if name in h}
    if row.name == "gradient_descent":
        kw["momentum"] = 0.0
    if row.name == "adagrad":
        kw["initial_accumulator_value"] = INITIAL_ACCUMULATOR
    if row.name == "rmsprop":  # a momentum buffer when momentum > 0
        kw["centered"] = "centered" in given(rule)
    if row.weight_decay:
        kw["weight_decay"] = row.weight_decay
    return KERAS_CLASSES[row.name], kw


def _keras_optimizer(module_name: str, backend: str | None, lazy: bool = False):
    """Keras' (or pyopt's drop-in) optimizer of the rule (:func:`keras_arguments`),
    ``apply_gradients`` per step; pyopt's with ``lazy`` for IndexedSlices gradients."""

    def make(rule, clip, variables):
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise Unavailable(f"{module_name} not importable: {exc}") from exc
        name, kw = keras_arguments(rule)
        kw.update(_clip_kwargs(clip))
        if backend is not None:
            kw.update(backend=backend, lazy=lazy)
        try:
            opt = getattr(module, name)(learning_rate=LR, **kw)
        except (ImportError, AttributeError) as exc:
            raise Unavailable(f"{module_name}: {exc}") from exc
        if backend == "fused":
            _require_fused(variables)
        opt.build(variables)
        return lambda grads: opt.apply_gradients(zip(grads, variables, strict=True))

    return make


def _require_fused(variables) -> None:
    try:
        import pyopt.ops as po

        reason = po.fused_unsupported_reason(variables, variables)
    except ImportError as exc:
        raise Unavailable(f"pyopt fused ops not importable: {exc}") from exc
    if reason:
        raise Unavailable(f"pyopt fused ops: {reason}")


# The optimizer classes as the chapter writes them: one small class per rule, slots as
# tf.Variables, apply_gradients(grads, vars) doing per-variable assign ops.


def _chapter_clip(grads, clipnorm, global_clipnorm):
    tf = _tf()
    if clipnorm:
        return [tf.clip_by_norm(g, clipnorm) for g in grads]
    if global_clipnorm:
        return tf.clip_by_global_norm(grads, global_clipnorm)[0]
    return grads


class ChapterGradientDescent:
    """p = p - lr*g (gradients clipped first if asked)."""

    def __init__(self, lr, clipnorm=None, global_clipnorm=None):
        self.lr, self.clipnorm, self.global_clipnorm = lr, clipnorm, global_clipnorm

    def build(self, variables):
        pass

    def apply_gradients(self, grads, variables):
        for g, var in zip(_chapter_clip(grads, self.clipnorm, self.global_clipnorm), variables, strict=True):
            var.assign_sub(self.lr * g)


class ChapterMomentum(ChapterGradientDescent):
    """m = beta*m - lr*g; p = p + m."""

    def __init__(self, lr, beta=0.9, **clip):
        super().__init__(lr, **clip)
        self.beta = beta

    def build(self, variables):
        self.velocities = _zeros_like(variables)

    def apply_gradients(self, grads, variables):
        clipped = _chapter_clip(grads, self.clipnorm, self.global_clipnorm)
        for g, var, m in zip(clipped, variables, self.velocities, strict=True):
            m.assign(self.beta * m - self.lr * g)
            var.assign_add(m)


class ChapterAdam(ChapterGradientDescent):
    """m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p = p - lr*sqrt(1-b2^t)/(1-b1^t) * m/(sqrt(v)+eps)."""

    def __init__(self, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **clip):
        super().__init__(lr, **clip)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, variables):
        tf = _tf()
        self.t = tf.Variable(0.0, dtype=tf.float64)
        self.ms, self.vs = _zeros_like(variables), _zeros_like(variables)

    def apply_gradients(self, grads, variables):
        tf = _tf()
        t = self.t.assign_add(1.0)
        alpha = self.lr * tf.sqrt(1 - self.beta_2**t) / (1 - self.beta_1**t)
        for g, var, m, v in zip(
            _chapter_clip(grads, self.clipnorm, self.global_clipnorm), variables, self.ms, self.vs, strict=True
        ):
            m.assign(self.beta_1 * m + (1 - self.beta_1) * g)
            v.assign(self.beta_2 * v + (1 - self.beta_2) * g * g)
            var.assign_sub(tf.cast(alpha, var.dtype) * m / (tf.sqrt(v) + self.epsilon))


def _chapter_updater(rule, clip, variables):
    if rule not in FIRST_RULES:
        raise Unavailable(f"the chapter writes classes for {', '.join(FIRST_RULES)} only")
    kw = _clip_kwargs(clip)
    opt = {
        "gd": lambda: ChapterGradientDescent(LR, **kw),
        "momentum": lambda: ChapterMomentum(LR, MOMENTUM, **kw),
        "adam": lambda: ChapterAdam(LR, BETA_1, BETA_2, EPSILON, **kw),
    }[rule]()
    opt.build(variables)
    return lambda grads: opt.apply_gradients(grads, variables)


# TF's fused training ops per rule: the same formulas as Keras's except where noted. AdamW,
# Nadam and Lion have none.
TF_RAW_OPS = {
    "gd": "ResourceApplyGradientDescent",
    "momentum": "ResourceApplyKerasMomentum",
    "adam": "ResourceApplyAdam",
    "adagrad": "ResourceApplyAdagradV2",  # p -= lr*g/(sqrt(acc) + eps): epsilon outside the root
    "rmsprop": "ResourceApplyRMSProp",  # always a momentum buffer (at momentum 0: b = inc, 28 bytes/element)
    "rmsprop_cm": "ResourceApplyCenteredRMSProp",
    "adamax": "ResourceApplyAdaMax",
}
# ... and for row-sparse gradients (their rows taken one index at a time: repeats summed first).
TF_RAW_SPARSE_OPS = {"adagrad": "ResourceSparseApplyAdagradV2"}


def _tf_raw_updater(rule, clip, variables):
    """TF's own fused training ops, one per variable (gradients clipped with tf.clip_by_*)."""
    tf = _tf()
    kw = _clip_kwargs(clip)
    dtype = variables[0].dtype
    if rule not in TF_RAW_OPS:
        raise Unavailable(f"TF has no fused training op for {TABLE_ROWS[rule].name}")
    h = hyper(rule, 1)

    def const(name):
        return tf.constant(h[name], dtype)

    def clipped(grads):
        return _chapter_clip(grads, kw.get("clipnorm"), kw.get("global_clipnorm"))

    if rule == "gd":

        def apply(grads):
            for g, var in zip(clipped(grads), variables, strict=True):
                tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=const("lr"), delta=g)

        return apply
    if rule == "momentum":
        ms = _zeros_like(variables)

        def apply(grads):
            for g, var, m in zip(clipped(grads), variables, ms, strict=True):
                tf.raw_ops.ResourceApplyKerasMomentum(
                    var=var.handle, accum=m.handle, lr=const("lr"), grad=g, momentum=const("momentum")
                )

        return apply
    if rule == "adagrad":
        accs = _zeros_like(variables, INITIAL_ACCUMULATOR)

        def apply(grads):
            for g, var, acc in zip(clipped(grads), variables, accs, strict=True):
                if isinstance(g, tf.IndexedSlices):  # as tf.keras did: repeats summed, then the op
                    rows, where = tf.unique(g.indices)
                    summed = tf.math.unsorted_segment_sum(g.values, where, tf.size(rows))
                    tf.raw_ops.ResourceSparseApplyAdagradV2(
                        var=var.handle,
                        accum=acc.handle,
                        lr=const("lr"),
                        epsilon=const("epsilon"),
                        grad=summed,
                        indices=rows,
                    )
                else:
                    tf.raw_ops.ResourceApplyAdagradV2(
                        var=var.handle, accum=acc.handle, lr=const("lr"), epsilon=const("epsilon"), grad=g
                    )

        return apply
    if rule in ("rmsprop", "rmsprop_cm"):
        ms, moms = _zeros_like(variables), _zeros_like(variables)
        mgs = _zeros_like(variables) if "centered" in given(rule) else None

        def apply(grads):
            for k, (g, var) in enumerate(zip(clipped(grads), variables, strict=True)):
                common = dict(
                    var=var.handle,
                    ms=ms[k].handle,
                    mom=moms[k].handle,
                    lr=const("lr"),
                    rho=const("rho"),
                    momentum=const("momentum"),
                    epsilon=const("epsilon"),
                    grad=g,
                )
                if mgs is None:
                    tf.raw_ops.ResourceApplyRMSProp(**common)
                else:
                    tf.raw_ops.ResourceApplyCenteredRMSProp(mg=mgs[k].handle, **common)

        return apply
    ms, vs = _zeros_like(variables), _zeros_like(variables)
    t = tf.Variable(0.0, dtype=tf.float64)

    def apply(grads):
        step = t.assign_add(1.0)
        b1p, b2p = tf.cast(h["beta_1"] ** step, dtype), tf.cast(h["beta_2"] ** step, dtype)
        for g, var, m, v in zip(clipped(grads), variables, ms, vs, strict=True):
            if rule == "adamax":  # m, u; p -= lr/(1-b1^t) * m/(u+eps)
                tf.raw_ops.ResourceApplyAdaMax(
                    var=var.handle,
                    m=m.handle,
                    v=v.handle,
                    beta1_power=b1p,
                    lr=const("lr"),
                    beta1=const("beta_1"),
                    beta2=const("beta_2"),
                    epsilon=const("epsilon"),
                    grad=g,
                )
                continue
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=b1p,
                beta2_power=b2p,
                lr=const("lr"),
                beta1=const("beta_1"),
                beta2=const("beta_2"),
                epsilon=const("epsilon"),
                grad=g,
            )

    return apply


def _keras_form(rule, sparse: bool) -> str:
    """Keras on IndexedSlices squares each repeat of a row before summing them."""
    return "keras_sparse" if sparse else "keras"


def _tf_raw_form(rule, sparse: bool) -> str:
    return "tf" if TABLE_ROWS[rule].core == "adagrad" else "keras"


@dataclass(frozen=True)
class TFImpl:
    name: str
    label: str
    make_updater: Callable
    keras_variables: bool = False
    jit_compile: bool = False
    max_tensors: int | None = None  # above this, skip: the first step (tracing / compiling) takes minutes
    too_many_reason: str = ""
    lazy: bool = False  # pyopt's lazy step: only for row-sparse gradients
    form: Callable[[str, bool], str] = lambda rule, sparse: "keras"  # (rule, sparse) -> reference form
    sparse_rules: tuple | None = None  # the rules it takes row-sparse gradients for (None: all)

    kind = "tf"

    def check(self, workload, rule=None) -> None:
        if self.lazy and not workload.sparse:
            raise Unavailable(f"{self.label}: lazy concerns row-sparse gradients only")
        if workload.sparse and self.sparse_rules is not None and rule not in self.sparse_rules:
            raise Unavailable(f"{self.label}: nothing for row-sparse gradients of {TABLE_ROWS[rule].name}")
        if self.max_tensors is not None and workload.n_tensors > self.max_tensors:
            raise Unavailable(
                f"{self.label}: skipped above {self.max_tensors} tensors ({self.too_many_reason}; "
                "keeps the default run short)"
            )

    def updater(self, rule, clip, variables):
        return self.make_updater(rule, clip, variables)

    def function(self, fn):
        return _tf().function(fn, jit_compile=self.jit_compile or None)

    def build(self, rule, clip, data, steps_per_call: int = 1) -> Runner:
        self.check(data.workload, rule)
        tf = _tf()
        variables = tf_variables(data.params, self.keras_variables)
        grads = tf_grads(data)
        apply = self.updater(rule, clip, variables)

        def step():
            if steps_per_call == 1:
                apply(grads)
            else:  # a tf.while_loop in the graph (autograph), as Keras' steps_per_execution
                for _ in tf.range(steps_per_call):
                    apply(grads)

        return Runner(self.function(step), tf_sample(variables), self.form(rule, data.workload.sparse))


def _call_floor_updater(rule, clip, variables):
    """No update: a step that takes the variables, the rule's slots and the gradients as inputs
    of one node that computes nothing, i.e. the cost of calling a tf.function with them and of
    running one node with that many inputs (the floor under every TF implementation's time per
    call: a multi-tensor op is one such node, per-variable ops are more). The node is a
    stateful Assert(true) whose data are every handle and gradient: they become inputs of the
    graph (captured, passed on each call; control dependencies on eager handles would capture
    nothing), and a stateful node is not pruned, as TF's graph optimizer prunes an IdentityN
    with no consumer (side by side at 200 x 10K Adam, that floor took 17% less time per call
    than this one: it timed the call but not the node)."""
    tf = _tf()
    slots = [_zeros_like(variables) for _ in slots_used(rule)]

    def apply(grads):
        inputs = [v.handle for v in variables] + [v.handle for s in slots for v in s] + list(grads)
        tf.raw_ops.Assert(condition=tf.constant(True), data=inputs, summarize=0)

    return apply


# --------------------------------------------------------------------------- NumPy


def _pyopt_numpy_runner(rule, clip, data, lazy: bool = False) -> Runner:
    import pyopt.kernels as pk

    row = TABLE_ROWS[rule]
    ps = [p.copy() for p in data.params]
    slots = _slot_lists(rule, lambda slot: [np.full_like(p, slot_init(rule, slot)) for p in ps])
    t, u_product = [0], [1.0]

    def hyper_now():
        t[0] += 1
        if "u_product" in row.param_names:  # the running product, advanced before the update (as Keras)
            u_product[0] *= nadam_u(t[0], hyper(rule, 1)["beta_1"])
        return hyper(rule, t[0], u_product=u_product[0])

    if data.workload.sparse:
        # pyopt.kernels.<rule>_sparse per tensor: values and indices, the step with the densified
        # gradient (lazy=False) or the lazy one
        sparse = getattr(pk, f"{row.name}_sparse")
        used = slots_used(rule)

        def step():
            h = hyper_now()
            for k, (p, values, indices) in enumerate(zip(ps, data.values, data.indices, strict=True)):
                arrays = [s[k] for s in slots if s is not None]
                required = [a for a, slot in zip(arrays, used, strict=True) if not slot.optional]
                optional = {slot.name: a for a, slot in zip(arrays, used, strict=True) if slot.optional}
                sparse(p, values, indices, *required, **optional, **h, lazy=lazy)

        return Runner(step, _numpy_sample(ps))

    # What pyopt.kernels.<rule>_multi does: its checks and the rule's _core call, by the table row.
    kw = dict(dict(clipnorm=None, global_clipnorm=None), **_clip_kwargs(clip))

    def step():
        pk._step(
            row, [ps, data.grads, *slots], hyper_now(), {}, weight_decay=row.weight_decay, skip_nonfinite=False, **kw
        )

    return Runner(step, _numpy_sample(ps))


def _numpy_sample(arrays):
    return lambda positions: np.array([float(arrays[t].reshape(-1)[i]) for t, i in positions])


def _numpy_runner(rule, clip, data) -> Runner:
    """The same update as NumPy expressions, in place (``out=``), one scratch buffer per tensor."""
    if rule not in FIRST_RULES or data.workload.sparse:
        raise Unavailable(f"NumPy expressions are written for dense {', '.join(FIRST_RULES)} only")
    ps = [p.copy() for p in data.params]
    gs = data.grads
    tmps = [np.empty_like(p) for p in ps]
    gtmps = [np.empty_like(p) for p in ps] if clip else gs
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    t = [0]

    def norm(g):
        g = g.reshape(-1)
        g32 = g if g.dtype.itemsize >= 4 else g.astype(np.float32)
        return float(np.sqrt(np.dot(g32, g32)))

    def clipped():
        if clip is None:
            return gs
        norms = [norm(g) for g in gs]
        if clip == "global_clipnorm":
            total = float(np.sqrt(sum(n * n for n in norms)))
            scales = [CLIP / max(total, CLIP)] * len(gs)
        else:
            scales = [CLIP / max(n, CLIP) for n in norms]
        for g, out, s in zip(gs, gtmps, scales, strict=True):
            np.multiply(g, s, out=out)
        return gtmps

    def step():
        t[0] += 1
        alpha = LR * np.sqrt(1 - BETA_2 ** t[0]) / (1 - BETA_1 ** t[0])
        for p, g, m, v, tmp in zip(ps, clipped(), ms, vs, tmps, strict=True):
            if rule == "gd":  # p -= lr*g
                np.multiply(g, LR, out=tmp)
                p -= tmp
            elif rule == "momentum":  # m = mu*m - lr*g; p += m
                m *= MOMENTUM
                np.multiply(g, LR, out=tmp)
                m -= tmp
                p += m
            else:  # m += (g-m)*(1-b1); v += (g*g-v)*(1-b2); p -= alpha*m/(sqrt(v)+eps)
                np.subtract(g, m, out=tmp)
                tmp *= 1 - BETA_1
                m += tmp
                np.multiply(g, g, out=tmp)
                tmp -= v
                tmp *= 1 - BETA_2
                v += tmp
                np.sqrt(v, out=tmp)
                tmp += EPSILON
                np.divide(m, tmp, out=tmp)
                tmp *= alpha
                p -= tmp

    return Runner(step, _numpy_sample(ps))


@dataclass(frozen=True)
class FnImpl:
    """An implementation over NumPy arrays or torch tensors: ``run(rule, clip, data) -> Runner``."""

    name: str
    label: str
    run: Callable
    kind: str = "numpy"
    lazy: bool = False  # pyopt's lazy step: only for row-sparse gradients

    def build(self, rule, clip, data, steps_per_call: int = 1) -> Runner:
        if self.lazy and not data.workload.sparse:
            raise Unavailable(f"{self.label}: lazy concerns row-sparse gradients only")
        runner = self.run(rule, clip, data)
        if steps_per_call == 1:
            return runner

        def steps():
            for _ in range(steps_per_call):
                runner.step()

        return Runner(steps, runner.sample, runner.form)


# --------------------------------------------------------------------------- PyTorch


def torch_module():
    try:
        import torch
    except ImportError as exc:
        raise Unavailable("torch is not installed (optional: pip install torch)") from exc
    return torch


def torch_tensor(array):
    torch = torch_module()
    if array.dtype == DTYPES["bfloat16"]:
        return torch.from_numpy(array.astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(array.copy())


def torch_form(rule) -> str:
    """torch's Adam/AdamW add epsilon after the bias correction, its Adagrad outside the root."""
    return "torch" if TABLE_ROWS[rule].core in ("adam", "adagrad") else "keras"


def torch_optimizer(rule, params, sparse: bool = False):
    """torch's fused optimizer of the rule (dense gradients), or the one that takes sparse
    gradients (SparseAdam, Adagrad); Unavailable where torch has none."""
    torch = torch_module()
    row = TABLE_ROWS[rule]
    h = hyper(rule, 1)
    if sparse:
        if row.name == "adam":  # lazy Adam, Keras's "epsilon hat" form (eps added to sqrt(v))
            return torch.optim.SparseAdam(params, lr=LR, betas=(h["beta_1"], h["beta_2"]), eps=h["epsilon"])
        if row.name == "adagrad":  # no fused form for sparse gradients
            return torch.optim.Adagrad(params, lr=LR, eps=h["epsilon"], initial_accumulator_value=INITIAL_ACCUMULATOR)
        raise Unavailable(f"torch has no optimizer for sparse gradients of {row.name}")
    if row.name in ("adam", "adamw"):
        cls = torch.optim.AdamW if row.name == "adamw" else torch.optim.Adam
        return cls(
            params,
            lr=LR,
            betas=(h["beta_1"], h["beta_2"]),
            eps=h["epsilon"],
            weight_decay=row.weight_decay,
            fused=True,
        )
    if row.name == "adagrad":
        return torch.optim.Adagrad(
            params, lr=LR, eps=h["epsilon"], initial_accumulator_value=INITIAL_ACCUMULATOR, fused=True
        )
    if row.name in ("gradient_descent", "momentum"):
        return torch.optim.SGD(params, lr=LR, momentum=h.get("momentum", 0.0), fused=True)
    raise Unavailable(f"torch has no fused {row.name} (fused=True: SGD, Adam, AdamW, Adagrad)")


def torch_clip(clip, params) -> None:
    """clip_grad_norm_ (global) or per tensor (clipnorm), in place on .grad."""
    torch = torch_module()
    if clip == "global_clipnorm":
        torch.nn.utils.clip_grad_norm_(params, CLIP, foreach=True)
    elif clip == "clipnorm":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], CLIP)


def _torch_runner(rule, clip, data) -> Runner:
    """torch.optim.Adam / AdamW / Adagrad / SGD with fused=True (torch's SGD momentum is
    m = mu*m + g; p -= lr*m: the same memory traffic, the same steps). Row-sparse: a sparse COO
    gradient with the ids repeated (uncoalesced, as nn.Embedding(sparse=True) gives; the
    optimizer coalesces it each step) for SparseAdam or Adagrad."""
    torch = torch_module()
    sparse = data.workload.sparse
    opt_params = [torch.nn.Parameter(torch_tensor(p)) for p in data.params]
    if sparse:
        for p, values, indices in zip(opt_params, data.values, data.indices, strict=True):
            p.grad = torch.sparse_coo_tensor(
                torch.from_numpy(indices)[None],
                torch_tensor(values),
                tuple(p.shape),
                is_coalesced=False,
                check_invariants=False,  # the ids are in range (zipf_ids)
            )
    else:
        for p, g in zip(opt_params, data.grads, strict=True):
            p.grad = torch_tensor(g)
    opt = torch_optimizer(rule, opt_params, sparse=sparse)
    if rule == "adagrad" and sparse:
        form = "torch"
    else:
        form = "keras" if sparse else torch_form(rule)

    @torch.no_grad()
    def step():
        torch_clip(clip, opt_params)
        opt.step()

    def sample(positions):
        return np.array([float(opt_params[t].detach().reshape(-1)[i].float()) for t, i in positions])

    return Runner(step, sample, form)


# --------------------------------------------------------------------------- registry


def case_note(name: str, rule: str, workload) -> str | None:
    """What the report should say about an implementation's step beside its time, if anything."""
    core = TABLE_ROWS[rule].core
    if name == "tf_raw" and core == "adagrad":
        return "ApplyAdagradV2 adds epsilon outside the square root (p -= lr*g/(sqrt(acc) + eps)): a timing peer"
    if name == "tf_raw" and rule == "rmsprop":
        return "ResourceApplyRMSProp always keeps a momentum buffer (28 bytes/element at momentum 0, not 20)"
    if name == "tf_raw" and workload.sparse:
        return "repeated ids summed first (tf.unique + unsorted_segment_sum, as tf.keras did), then the op"
    if name in ("keras", "keras_xla") and workload.sparse:
        return (
            "Keras on IndexedSlices squares each repeat of an id before summing them (its step differs from the "
            "densified gradient's on repeated rows)"
        )
    if name == "torch" and workload.sparse:
        return "torch.optim.SparseAdam (lazy) / Adagrad (lazy, no fused form) on an uncoalesced sparse gradient"
    return None


XLA_MAX_TENSORS = 8
GRAPH_MAX_TENSORS = 200  # per-variable TF graphs: tracing + graph optimisation grow faster than linearly
XLA_REASON = "XLA compilation of the step took 155 s at 1000 tensors on the dev machine"
GRAPH_REASON = "tracing + first run of the per-variable graph took 149 s (Keras built-in) at 1000 tensors"

IMPLEMENTATIONS = {
    impl.name: impl
    for impl in (
        TFImpl("pyopt_op", "pyopt op (fused)", _pyopt_ops_updater("fused")),
        TFImpl("pyopt_op_lazy", "pyopt op (fused), lazy", _pyopt_ops_updater("fused", lazy=True), lazy=True),
        TFImpl(
            "pyopt_keras", "pyopt Keras (fused)", _keras_optimizer("pyopt.optimizers", "fused"), keras_variables=True
        ),
        TFImpl(
            "pyopt_keras_lazy",
            "pyopt Keras (fused), lazy",
            _keras_optimizer("pyopt.optimizers", "fused", lazy=True),
            keras_variables=True,
            lazy=True,
        ),
        TFImpl(
            "pyopt_tf",
            "pyopt pure-TF",
            _pyopt_ops_updater("tf"),
            max_tensors=GRAPH_MAX_TENSORS,
            too_many_reason=GRAPH_REASON,
        ),
        TFImpl(
            "keras",
            "Keras built-in",
            _keras_optimizer("keras.optimizers", None),
            keras_variables=True,
            max_tensors=GRAPH_MAX_TENSORS,
            too_many_reason=GRAPH_REASON,
            form=_keras_form,
        ),
        TFImpl(
            "keras_xla",
            "Keras built-in, XLA",
            _keras_optimizer("keras.optimizers", None),
            keras_variables=True,
            jit_compile=True,
            max_tensors=XLA_MAX_TENSORS,
            too_many_reason=XLA_REASON,
            form=_keras_form,
        ),
        TFImpl(
            "chapter",
            "chapter classes",
            _chapter_updater,
            max_tensors=GRAPH_MAX_TENSORS,
            too_many_reason=GRAPH_REASON,
            sparse_rules=(),
        ),
        TFImpl(
            "tf_raw", "TF ResourceApply*", _tf_raw_updater, form=_tf_raw_form, sparse_rules=tuple(TF_RAW_SPARSE_OPS)
        ),
        TFImpl("tf_call_floor", "tf.function call, no update (floor)", _call_floor_updater, sparse_rules=()),
        FnImpl("pyopt_numpy", "pyopt NumPy kernels", _pyopt_numpy_runner),
        FnImpl(
            "pyopt_numpy_lazy",
            "pyopt NumPy kernels, lazy",
            lambda rule, clip, data: _pyopt_numpy_runner(rule, clip, data, lazy=True),
            lazy=True,
        ),
        FnImpl("numpy", "NumPy expressions", _numpy_runner),
        FnImpl("torch", "torch fused", _torch_runner, kind="torch"),
    )
}
