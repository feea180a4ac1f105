"""The optimizer-step implementations compared by the benchmarks.

Each implementation turns (rule, clip, parameters, gradients) into a ``Runner``: ``step()``
runs one optimizer step (inside ``tf.function`` for the TensorFlow ones) and ``sample()``
reads the parameters at the check positions. TensorFlow implementations are written as an
*updater*: ``make_updater(rule, clip, variables)`` returns ``apply(grads)`` to call inside a
``tf.function``, so the same code serves the update-only cases (fixed gradients) and the
train steps (gradients from a tape).

An implementation that cannot run here raises ``Unavailable`` with the reason (the test
turns it into a skip): pyopt's TF op library or Keras optimizers not built yet, torch not
installed, a combination that does not exist.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .workloads import BETA_1, BETA_2, CLIP, DTYPES, EPSILON, LR, MOMENTUM, SLOTS_PER_RULE, TABLE_ROWS, hyper

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class Unavailable(Exception):
    """This implementation cannot run this case here; the message says why."""


@dataclass
class Runner:
    step: Callable[[], object]
    sample: Callable[[list], np.ndarray]  # positions -> float64 values


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


def _zeros_like(variables) -> list:
    tf = _tf()
    return [tf.Variable(tf.zeros(v.shape, v.dtype)) for v in variables]


def _pyopt_ops_updater(backend: str):
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
        slots = [None if slot.optional else _zeros_like(variables) for slot in row.slots]
        t = tf.Variable(0, dtype=tf.int64) if "step" in row.param_names else None

        def apply(grads):
            step = Step(row, variables, slots, backend=backend, **_clip_kwargs(clip))
            step(grads, hyper(rule, None if t is None else t.assign_add(1)))

        return apply

    return make


def _keras_optimizer(module_name: str, backend: str | None):
    """Keras' (or pyopt's drop-in) SGD / Adam, ``apply_gradients`` per step."""

    def make(rule, clip, variables):
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise Unavailable(f"{module_name} not importable: {exc}") from exc
        kw = dict(_clip_kwargs(clip), **({} if backend is None else {"backend": backend}))
        try:
            if rule == "adam":
                opt = module.Adam(learning_rate=LR, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPSILON, **kw)
            else:
                opt = module.SGD(learning_rate=LR, momentum=MOMENTUM if rule == "momentum" else 0.0, **kw)
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
    kw = _clip_kwargs(clip)
    opt = {
        "gd": lambda: ChapterGradientDescent(LR, **kw),
        "momentum": lambda: ChapterMomentum(LR, MOMENTUM, **kw),
        "adam": lambda: ChapterAdam(LR, BETA_1, BETA_2, EPSILON, **kw),
    }[rule]()
    opt.build(variables)
    return lambda grads: opt.apply_gradients(grads, variables)


def _tf_raw_updater(rule, clip, variables):
    """TF's own fused training ops, one per variable (gradients clipped with tf.clip_by_*)."""
    tf = _tf()
    kw = _clip_kwargs(clip)
    dtype = variables[0].dtype

    def const(x):
        return tf.constant(x, dtype)

    if rule == "gd":

        def apply(grads):
            clipped = _chapter_clip(grads, kw.get("clipnorm"), kw.get("global_clipnorm"))
            for g, var in zip(clipped, variables, strict=True):
                tf.raw_ops.ResourceApplyGradientDescent(var=var.handle, alpha=const(LR), delta=g)

        return apply
    if rule == "momentum":
        ms = _zeros_like(variables)

        def apply(grads):
            clipped = _chapter_clip(grads, kw.get("clipnorm"), kw.get("global_clipnorm"))
            for g, var, m in zip(clipped, variables, ms, strict=True):
                tf.raw_ops.ResourceApplyKerasMomentum(
                    var=var.handle, accum=m.handle, lr=const(LR), grad=g, momentum=const(MOMENTUM)
                )

        return apply
    ms, vs = _zeros_like(variables), _zeros_like(variables)
    t = tf.Variable(0.0, dtype=tf.float64)

    def apply(grads):
        step = t.assign_add(1.0)
        b1p, b2p = tf.cast(BETA_1**step, dtype), tf.cast(BETA_2**step, dtype)
        for g, var, m, v in zip(
            _chapter_clip(grads, kw.get("clipnorm"), kw.get("global_clipnorm")), variables, ms, vs, strict=True
        ):
            tf.raw_ops.ResourceApplyAdam(
                var=var.handle,
                m=m.handle,
                v=v.handle,
                beta1_power=b1p,
                beta2_power=b2p,
                lr=const(LR),
                beta1=const(BETA_1),
                beta2=const(BETA_2),
                epsilon=const(EPSILON),
                grad=g,
            )

    return apply


@dataclass(frozen=True)
class TFImpl:
    name: str
    label: str
    make_updater: Callable
    keras_variables: bool = False
    jit_compile: bool = False
    max_tensors: int | None = None  # above this, skip: the first step (tracing / compiling) takes minutes
    too_many_reason: str = ""

    kind = "tf"

    def check(self, workload) -> None:
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
        self.check(data.workload)
        tf = _tf()
        variables = tf_variables(data.params, self.keras_variables)
        grads = [tf.constant(g) for g in data.grads]
        apply = self.updater(rule, clip, variables)

        def step():
            if steps_per_call == 1:
                apply(grads)
            else:  # a tf.while_loop in the graph (autograph), as Keras' steps_per_execution
                for _ in tf.range(steps_per_call):
                    apply(grads)

        return Runner(self.function(step), tf_sample(variables))


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
    slots = [_zeros_like(variables) for _ in range(SLOTS_PER_RULE[rule])]

    def apply(grads):
        inputs = [v.handle for v in variables] + [v.handle for s in slots for v in s] + list(grads)
        tf.raw_ops.Assert(condition=tf.constant(True), data=inputs, summarize=0)

    return apply


# --------------------------------------------------------------------------- NumPy


def _pyopt_numpy_runner(rule, clip, data) -> Runner:
    import pyopt.kernels as pk

    # What pyopt.kernels.<rule>_multi does: its checks and the rule's _core call, by the table row.
    row = TABLE_ROWS[rule]
    ps = [p.copy() for p in data.params]
    slots = [None if slot.optional else [np.zeros_like(p) for p in ps] for slot in row.slots]
    kw = dict(dict(clipnorm=None, global_clipnorm=None), **_clip_kwargs(clip))
    t = [0]

    def step():
        t[0] += 1
        pk._step(row, [ps, data.grads, *slots], hyper(rule, t[0]), {}, weight_decay=0.0, skip_nonfinite=False, **kw)

    return Runner(step, _numpy_sample(ps))


def _numpy_sample(arrays):
    return lambda positions: np.array([float(arrays[t].reshape(-1)[i]) for t, i in positions])


def _numpy_runner(rule, clip, data) -> Runner:
    """The same update as NumPy expressions, in place (``out=``), one scratch buffer per tensor."""
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

    def build(self, rule, clip, data, steps_per_call: int = 1) -> Runner:
        runner = self.run(rule, clip, data)
        if steps_per_call == 1:
            return runner

        def steps():
            for _ in range(steps_per_call):
                runner.step()

        return Runner(steps, runner.sample)


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


def torch_optimizer(rule, params):
    torch = torch_module()
    if rule == "adam":
        return torch.optim.Adam(params, lr=LR, betas=(BETA_1, BETA_2), eps=EPSILON, fused=True)
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM if rule == "momentum" else 0.0, fused=True)


def torch_clip(clip, params) -> None:
    """clip_grad_norm_ (global) or per tensor (clipnorm), in place on .grad."""
    torch = torch_module()
    if clip == "global_clipnorm":
        torch.nn.utils.clip_grad_norm_(params, CLIP, foreach=True)
    elif clip == "clipnorm":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], CLIP)


def _torch_runner(rule, clip, data) -> Runner:
    """torch.optim.Adam / SGD with fused=True (torch's SGD momentum is m = mu*m + g; p -= lr*m:
    the same memory traffic, the same first step)."""
    torch = torch_module()
    params = [torch.nn.Parameter(torch_tensor(p)) for p in data.params]
    for p, g in zip(params, data.grads, strict=True):
        p.grad = torch_tensor(g)
    opt = torch_optimizer(rule, params)

    @torch.no_grad()
    def step():
        torch_clip(clip, params)
        opt.step()

    def sample(positions):
        return np.array([float(params[t].detach().reshape(-1)[i].float()) for t, i in positions])

    return Runner(step, sample)


# --------------------------------------------------------------------------- registry

XLA_MAX_TENSORS = 8
GRAPH_MAX_TENSORS = 200  # per-variable TF graphs: tracing + graph optimisation grow faster than linearly
XLA_REASON = "XLA compilation of the step took 155 s at 1000 tensors on the dev machine"
GRAPH_REASON = "tracing + first run of the per-variable graph took 149 s (Keras built-in) at 1000 tensors"

IMPLEMENTATIONS = {
    impl.name: impl
    for impl in (
        TFImpl("pyopt_op", "pyopt op (fused)", _pyopt_ops_updater("fused")),
        TFImpl(
            "pyopt_keras", "pyopt Keras (fused)", _keras_optimizer("pyopt.optimizers", "fused"), keras_variables=True
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
        ),
        TFImpl(
            "keras_xla",
            "Keras built-in, XLA",
            _keras_optimizer("keras.optimizers", None),
            keras_variables=True,
            jit_compile=True,
            max_tensors=XLA_MAX_TENSORS,
            too_many_reason=XLA_REASON,
        ),
        TFImpl(
            "chapter", "chapter classes", _chapter_updater, max_tensors=GRAPH_MAX_TENSORS, too_many_reason=GRAPH_REASON
        ),
        TFImpl("tf_raw", "TF ResourceApply*", _tf_raw_updater),
        TFImpl("tf_call_floor", "tf.function call, no update (floor)", _call_floor_updater),
        FnImpl("pyopt_numpy", "pyopt NumPy kernels", _pyopt_numpy_runner),
        FnImpl("numpy", "NumPy expressions", _numpy_runner),
        FnImpl("torch", "torch fused", _torch_runner, kind="torch"),
    )
}
