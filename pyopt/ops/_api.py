"""The functional API over TensorFlow variables, and the one place that picks the backend."""

from __future__ import annotations

import math
import numbers
import os
from typing import Optional, Sequence

import tensorflow as tf

from . import _tf_math

# No pyopt._core here: the TF API needs only TensorFlow (and, for backend="fused", the op
# library), so it keeps working on the pure-TF backend when the compiled core is missing.
BACKENDS = ("auto", "fused", "tf")

# The valid range of each hyperparameter: (low, high, low included, high included) and the
# words of cpp/include/pyopt/rules.h (check_lr, check(MomentumHyper), ...), so that both
# backends, and Python numbers and tensors, give the same message ("lr must be a finite
# number >= 0, got -1"). tests/test_tf_api_checks.py compares them with pyopt._core's checks.
_RANGES = {
    "lr": (0.0, math.inf, True, False, "a finite number >= 0"),
    "momentum": (0.0, 1.0, True, True, "in [0, 1]"),
    "beta_1": (0.0, 1.0, True, False, "in [0, 1)"),
    "beta_2": (0.0, 1.0, True, False, "in [0, 1)"),
    "epsilon": (0.0, math.inf, False, False, "a finite number > 0"),
    "step": (1.0, math.inf, True, False, "an integer >= 1"),
    "weight_decay": (0.0, math.inf, True, False, "a finite number >= 0"),
}


class FusedBackendError(RuntimeError):
    """backend="fused" was requested for a step the fused ops cannot run."""

    # Autograph re-raises errors from tf.function code under their own type only when the
    # type keeps Exception.__init__; otherwise callers would get a StagingError.
    __init__ = Exception.__init__


def _fused_module():
    from . import _fused

    return _fused


def in_xla_context() -> bool:
    """True while tracing a function that XLA will compile (``jit_compile=True``)."""
    from tensorflow.python.ops import control_flow_util

    return tf.executing_eagerly() is False and control_flow_util.GraphOrParentsInXlaContext(
        tf.compat.v1.get_default_graph()
    )


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def fused_unsupported_reason(variables, grads) -> Optional[str]:
    """Why the fused ops cannot run this step, or None if they can."""
    if os.environ.get("PYOPT_BACKEND", "").lower() == "tf":
        return "PYOPT_BACKEND=tf forces the pure-TF backend"
    if in_xla_context():
        return "inside an XLA-compiled function (custom ops have no XLA kernel)"
    return _fused_module().supports(list(variables), list(grads))


def resolve_backend(backend: str, variables, grads) -> str:
    """The backend that runs this step: "fused" or "tf".

    "auto" picks "fused" when the op library is loaded and every variable is a CPU resource
    variable of a supported dtype outside XLA (gradients dense or IndexedSlices), else "tf". "fused" raises
    :class:`FusedBackendError` with the reason when it cannot run the step (except under
    PYOPT_BACKEND=tf, which always wins). "tf" always uses the pure-TF ops.
    """
    check_backend(backend)
    env = os.environ.get("PYOPT_BACKEND", "").lower()
    if backend == "tf" or env == "tf":
        return "tf"
    reason = fused_unsupported_reason(variables, grads)
    if reason is None:
        return "fused"
    if backend == "fused":
        raise FusedBackendError(f"backend='fused' cannot run this step: {reason}")
    return "tf"


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _in_range(rule: str, x, both=lambda a, b: a and b):
    """Whether ``x`` (a float, or a tensor with ``both=tf.logical_and``) lies in the range of
    ``rule``; False for NaN."""
    low, high, low_in, high_in, _ = _RANGES[rule]
    return both(x >= low if low_in else x > low, x <= high if high_in else x < high)


def _range_error(name: str, value: float, rule: Optional[str] = None) -> Optional[str]:
    """The message for a Python number outside the range of ``rule`` (default: ``name``), else None."""
    x = float(value)
    if _in_range(rule or name, x):
        return None
    return f"{name} must be {_RANGES[rule or name][4]}, got {x:.17g}"  # the core's fmt(): precision 17


def _check_hyper(**values) -> None:
    """Checks of the hyperparameters when the step is built, the same for both backends: a
    Python number must lie in its range (ValueError, in the core's words); a tensor or variable
    must be a scalar where its shape is known (its value is checked when the step runs, see
    :func:`_hyper_asserts`)."""
    for name, value in values.items():
        if _is_number(value):
            error = _range_error(name, value)
            if error:
                raise ValueError(error)
        elif value is not None:
            shape = getattr(value, "shape", None)
            rank = None if shape is None else tf.TensorShape(shape).rank
            if rank not in (None, 0):
                raise ValueError(f"{name} must be a scalar, got shape {tf.TensorShape(shape).as_list()}")


def _hyper_asserts(hyper: dict) -> list:
    """One assertion per tensor- or variable-valued hyperparameter of ``hyper`` (Python
    numbers were checked by :func:`_check_hyper`), for the pure-TF backend (the fused ops check
    their inputs themselves): InvalidArgumentError naming the argument, e.g. "assertion failed:
    [lr must be a finite number >= 0, got] [-1]", before anything is written.

    Empty under XLA, which compiles Assert into a no-op (tf2xla's AssertOp): there a bad value
    cannot raise, as for the index checks of sparse gradients.
    """
    named = [(name, value) for name, value in hyper.items()
             if name in _RANGES and value is not None and not _is_number(value)]
    if not named or in_xla_context():
        return []
    checks = []
    for name, value in named:
        x = tf.cast(value, tf.float64)
        if x.shape.rank is None:
            x = tf.reshape(x, [])
        checks.append(tf.raw_ops.Assert(condition=_in_range(name, x, tf.logical_and),
                                        data=[f"{name} must be {_RANGES[name][4]}, got", x], summarize=1,
                                        name=f"check_{name}"))
    return checks


def _hyper_value(x):
    """A Python number as a float; a tensor or variable as it is (checked when the step runs)."""
    return float(x) if _is_number(x) else x


def _check_distinct(names_lists) -> None:
    """No variable may appear twice among the variables and slots (both backends; the fused
    ops refuse it too, the pure-TF maths would write garbage). Compares the resource
    ``tf.Variable`` objects: a Keras 3 variable counts as the ``tf.Variable`` it wraps.
    A Python check: it runs eagerly and when a tf.function is traced."""
    tf_variable = _fused_module()._tf_variable
    seen: dict = {}
    for list_name, items in names_lists:
        for i, x in enumerate(items or ()):
            inner = tf_variable(x)
            if inner is None:
                if not hasattr(x, "assign"):
                    continue  # a tensor: nothing is written to it
                inner = x
            name = f"{list_name}[{i}]"
            if id(inner) in seen:
                raise ValueError(f"{seen[id(inner)]} and {name} are the same variable; each must be separate")
            seen[id(inner)] = name


def _as_list(x, name: str) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    raise TypeError(f"{name} must be a list of variables/tensors, got {type(x).__name__}")


def _weight_decays(weight_decay, n: int) -> list:
    wds = list(weight_decay) if isinstance(weight_decay, (list, tuple)) else [weight_decay] * n
    if len(wds) != n:
        raise ValueError(f"weight_decay has {len(wds)} values but there are {n} variables")
    out = []
    for i, wd in enumerate(wds):
        if not _is_number(wd):
            raise TypeError(f"weight_decay must be a float or a list of floats, got {type(wd).__name__}")
        error = _range_error(f"weight_decay[{i}]" if isinstance(weight_decay, (list, tuple)) else "weight_decay",
                             wd, "weight_decay")
        if error:
            raise ValueError(error)
        out.append(float(wd))
    return out


def _clip_options(clipnorm, global_clipnorm):
    for name, value in (("clipnorm", clipnorm), ("global_clipnorm", global_clipnorm)):
        if value is not None and not _is_number(value):
            # Whether to clip, and how, is fixed when the step is built (one op or another).
            raise TypeError(f"{name} must be a Python number > 0 or None, got {type(value).__name__}")
        if value is not None and not 0 < value < float("inf"):
            raise ValueError(f"{name} must be a finite number > 0 (or None), got {value!r}")
    if clipnorm is not None and global_clipnorm is not None:
        raise ValueError("clipnorm and global_clipnorm are mutually exclusive: set at most one")
    return (float(clipnorm) if clipnorm else None, float(global_clipnorm) if global_clipnorm else None)


def _check_lengths(names_lists) -> int:
    (first_name, first), *rest = names_lists
    for name, items in rest:
        if items is not None and len(items) != len(first):
            raise ValueError(f"{name} has {len(items)} entries but {first_name} has {len(first)}")
    return len(first)


def _is_sparse(grad) -> bool:
    return isinstance(grad, tf.IndexedSlices)


def _check_sparse(variables, grads) -> None:
    """IndexedSlices gradients need integer indices and a variable with rows (rank >= 1)."""
    for i, (var, grad) in enumerate(zip(variables, grads)):
        if not _is_sparse(grad):
            continue
        if grad.indices.dtype not in (tf.int32, tf.int64):
            raise TypeError(f"grads[{i}] is a tf.IndexedSlices with {grad.indices.dtype.name} indices; "
                            "int32 or int64 needed")
        if var.shape.rank == 0:
            raise ValueError(f"grads[{i}] is a tf.IndexedSlices but variables[{i}] is a scalar; "
                             "row-sparse gradients need a variable of rank >= 1")


def _groups(variables, grads) -> list:
    """``(sparse, indices)`` of the variables grouped by (device, dtype, sparse gradient), in
    first-seen order."""
    groups: dict = {}
    for i, (var, grad) in enumerate(zip(variables, grads)):
        groups.setdefault((getattr(var, "device", ""), var.dtype, _is_sparse(grad)), []).append(i)
    return [(key[2], idx) for key, idx in groups.items()]


def _check_dtypes_and_shapes(variables, grads, slots: dict) -> None:
    """Same checks on both backends, before anything runs: a gradient (or slot) has its
    variable's dtype, and, where shapes are known when the step is built, its shape."""
    for i, (var, grad) in enumerate(zip(variables, grads)):
        var_dtype, var_shape = tf.as_dtype(var.dtype), tf.TensorShape(var.shape)
        values = grad.values if isinstance(grad, tf.IndexedSlices) else grad
        named = [(f"grads[{i}]", values, not isinstance(grad, tf.IndexedSlices))]
        named += [(f"{name}[{i}]", items[i], True) for name, items in slots.items() if items is not None]
        for name, x, check_shape in named:
            dtype = getattr(x, "dtype", None)
            if dtype is not None and tf.as_dtype(dtype) != var_dtype:
                raise TypeError(f"{name} has dtype {tf.as_dtype(dtype).name} but variables[{i}] has dtype "
                                f"{var_dtype.name}")
            shape = tf.TensorShape(getattr(x, "shape", None))
            if check_shape and not shape.is_compatible_with(var_shape):
                raise ValueError(f"{name} has shape {shape.as_list()} but variables[{i}] has shape "
                                 f"{var_shape.as_list()}")


# Plain Python over tensors (no data-dependent control flow): autograph need not convert it,
# nor recurse from here into the loader (which it cannot parse where stdlib sources are absent).
@tf.autograph.experimental.do_not_convert
def _apply(rule: str, backend: str, variables, grads, slots: dict, hyper: dict, weight_decay, clipnorm,
           global_clipnorm, skip_nonfinite, use_locking, lazy) -> str:
    """Validate, pick the backend, and run ``<rule>_multi`` of the fused or pure-TF module.

    ``slots`` maps slot-list names to lists (positional after grads, except "vhats").
    On the fused path one op runs per (device, dtype, dense/sparse) group; a global_clipnorm
    spanning several groups is applied to the gradients first so every group sees the joint
    norm (likewise the skip_nonfinite test).
    """
    n = _check_lengths([("variables", variables), ("grads", grads), *slots.items()])
    _check_distinct([("variables", variables), *slots.items()])
    _check_sparse(variables, grads)
    _check_dtypes_and_shapes(variables, grads, slots)
    clipnorm, global_clipnorm = _clip_options(clipnorm, global_clipnorm)
    common = dict(clipnorm=clipnorm, global_clipnorm=global_clipnorm, skip_nonfinite=bool(skip_nonfinite),
                  use_locking=bool(use_locking))
    weight_decay = _weight_decays(weight_decay, n)
    if n == 0:
        return "tf"
    chosen = resolve_backend(backend, variables, grads)
    if rule == "adam":
        hyper = dict(hyper, vhats=slots.pop("vhats", None))
    if chosen == "tf":
        # Every op of the step (reads included) waits for the checks of tensor hyperparameters.
        with tf.control_dependencies(_hyper_asserts(hyper)):
            getattr(_tf_math, f"{rule}_multi")(variables, grads, *slots.values(), **hyper, weight_decay=weight_decay,
                                               lazy=bool(lazy), **common)
        return chosen
    groups = _groups(variables, grads)
    if len(groups) > 1 and any(sparse for sparse, _ in groups):
        # Several op calls: check every index first, so that a bad one writes nothing.
        with tf.control_dependencies(_tf_math.index_checks(variables, grads)):
            return _run_fused(rule, groups, variables, grads, slots, hyper, weight_decay, common, global_clipnorm,
                              skip_nonfinite, lazy)
    return _run_fused(rule, groups, variables, grads, slots, hyper, weight_decay, common, global_clipnorm,
                      skip_nonfinite, lazy)


def _run_fused(rule, groups, variables, grads, slots, hyper, weight_decay, common, global_clipnorm, skip_nonfinite,
               lazy) -> str:
    if len(groups) > 1 and (global_clipnorm or skip_nonfinite):
        grads, ok = _tf_math.scaled_gradients(grads, global_clipnorm, skip_nonfinite)
        common.update(global_clipnorm=None, skip_nonfinite=False)
        _tf_math._run(ok, lambda: _run_groups(rule, groups, variables, grads, slots, hyper, weight_decay, common,
                                              lazy))
    else:
        _run_groups(rule, groups, variables, grads, slots, hyper, weight_decay, common, lazy)
    return "fused"


def _run_groups(rule, groups, variables, grads, slots, hyper, weight_decay, common, lazy):
    """One fused op call per group: the dense op, or the sparse op for IndexedSlices."""
    fused = getattr(_fused_module(), f"{rule}_multi")
    ops = []
    for sparse, idx in groups:
        pick = lambda items: [items[i] for i in idx]  # noqa: E731
        group_hyper = dict(hyper)
        if group_hyper.get("vhats") is not None:
            group_hyper["vhats"] = pick(group_hyper["vhats"])
        ops.append(fused(pick(variables), pick(grads), *(pick(s) for s in slots.values()), **group_hyper,
                         weight_decay=pick(weight_decay), lazy=bool(lazy) if sparse else None, **common))
    return [op for op in ops if op is not None]


def gradient_descent_multi(variables: Sequence, grads: Sequence, *, lr, weight_decay=0.0,
                           clipnorm: Optional[float] = None, global_clipnorm: Optional[float] = None,
                           skip_nonfinite: bool = False, use_locking: bool = True, backend: str = "auto",
                           lazy: bool = False) -> str:
    """Gradient descent on every variable in one step: ``p = p - lr*wd*p - lr*g``.

    Gradients are clipped first (``clipnorm``: each by its own norm, ``global_clipnorm``:
    all by their joint norm, ``g *= c / max(norm, c)``). ``lr`` may be a float or a scalar
    tensor or variable (so may ``momentum``, ``beta_1``, ``beta_2``, ``epsilon`` and ``step``
    of the other rules); ``weight_decay``, ``clipnorm`` and ``global_clipnorm`` are Python
    numbers. Returns the backend that ran the step ("fused" or "tf").

    Both backends check the call before anything runs: list lengths, dtypes, shapes, no
    variable twice among variables and slots (ValueError), Python-number hyperparameters in
    range (ValueError); a tensor hyperparameter out of range raises InvalidArgumentError when
    the step runs, with nothing written (except under XLA, where assertions are no-ops).

    Gradients may be ``tf.IndexedSlices`` (row-sparse, e.g. from ``Embedding``), mixed with
    dense ones. Rows listed twice are summed. ``lazy=False`` (default) gives the dense step with
    the densified gradient, as Keras does: rows without a gradient get g = 0 (their slots decay,
    weight decay applies to every row). ``lazy=True`` moves only the rows present and their
    slots (lazy Adam). Clipping uses the norm of the summed gradient. An index outside
    ``[0, rows)`` raises InvalidArgumentError and nothing is written.
    """
    _check_hyper(lr=lr)
    return _apply("gradient_descent", backend, _as_list(variables, "variables"), _as_list(grads, "grads"), {},
                  dict(lr=lr), weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking, lazy)


def momentum_multi(variables: Sequence, grads: Sequence, velocities: Sequence, *, lr, momentum: float,
                   nesterov: bool = False, weight_decay=0.0, clipnorm: Optional[float] = None,
                   global_clipnorm: Optional[float] = None, skip_nonfinite: bool = False, use_locking: bool = True,
                   backend: str = "auto", lazy: bool = False) -> str:
    """Momentum (Keras form) on every variable: ``m = mu*m - lr*g; p = p - lr*wd*p + m``
    (nesterov: ``p = p - lr*wd*p + mu*m - lr*g``). Returns the backend used.

    IndexedSlices gradients and ``lazy``: as in :func:`gradient_descent_multi`.
    """
    _check_hyper(lr=lr, momentum=momentum)
    return _apply("momentum", backend, _as_list(variables, "variables"), _as_list(grads, "grads"),
                  {"velocities": _as_list(velocities, "velocities")},
                  dict(lr=lr, momentum=_hyper_value(momentum), nesterov=bool(nesterov)),
                  weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking, lazy)


def adam_multi(variables: Sequence, grads: Sequence, ms: Sequence, vs: Sequence, *, lr, beta_1: float = 0.9,
               beta_2: float = 0.999, epsilon: float = 1e-7, step, vhats: Optional[Sequence] = None,
               weight_decay=0.0, clipnorm: Optional[float] = None, global_clipnorm: Optional[float] = None,
               skip_nonfinite: bool = False, use_locking: bool = True, backend: str = "auto",
               lazy: bool = False) -> str:
    """Adam (Keras' "epsilon hat" form) on every variable; ``step`` is 1-based::

        alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t)
        m = m + (g-m)*(1-beta_1);  v = v + (g^2-v)*(1-beta_2);  [vhat = max(vhat, v)]
        p = p - lr*wd*p - alpha*m/(sqrt(v or vhat)+epsilon)

    ``vhats`` given means amsgrad. Returns the backend used. IndexedSlices gradients and
    ``lazy`` (``True``: lazy Adam): as in :func:`gradient_descent_multi`.
    """
    if isinstance(step, (bool, float)):
        raise TypeError(f"step must be an int >= 1 or an integer tensor, got {type(step).__name__}")
    _check_hyper(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, step=step)
    slots = {"ms": _as_list(ms, "ms"), "vs": _as_list(vs, "vs")}
    if vhats is not None:
        slots["vhats"] = _as_list(vhats, "vhats")
    hyper = dict(lr=lr, beta_1=_hyper_value(beta_1), beta_2=_hyper_value(beta_2), epsilon=_hyper_value(epsilon),
                 step=step)
    return _apply("adam", backend, _as_list(variables, "variables"), _as_list(grads, "grads"), slots, hyper,
                  weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking, lazy)
