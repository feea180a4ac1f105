"""In-place optimizer update rules on NumPy arrays, backed by pyopt's C++ core.

Every function updates ``param`` and its slots **in place**, in one fused pass per
tensor (plus one read pass over the gradient when clipping), multi-threaded for large
arrays, with the GIL released. Supported dtypes: float32, float64, and float16 /
bfloat16 (``ml_dtypes``) with the maths done in float32. All arrays of a call share one
dtype, are C-contiguous, and the updated ones are writeable and do not overlap anything.
Invalid input raises ``TypeError``/``ValueError`` naming the argument before any array
is touched. Hyperparameters are real numbers (Python or NumPy scalars; not bool), ``step``
an int, the flags (``nesterov``, ``skip_nonfinite``, ``lazy``) bool or ``numpy.bool_``.

Clipping (Keras semantics): ``clipnorm=c`` scales each gradient by ``c / max(||g||, c)``
with its own L2 norm; the ``*_multi`` forms also take ``global_clipnorm=c`` which uses
the norm over all gradients of the call. ``weight_decay=wd`` is decoupled (AdamW-style,
as Keras 3): ``p -= lr * wd * p`` before the update. ``skip_nonfinite=True`` leaves every
array untouched when any gradient holds NaN/Inf and returns False.

Each function returns True when the step was applied.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _rules
from ._config import core as _load_core
from ._rules import ADAM, GRADIENT_DESCENT, MOMENTUM, RULES

_core = _load_core()
# Each rule's _core functions: (dense, sparse).
_CORE = {rule.name: (getattr(_core, rule.core), getattr(_core, rule.core_sparse)) for rule in RULES.values()}
_ADAM = ADAM.defaults

__all__ = [
    "gradient_descent",
    "momentum",
    "adam",
    "gradient_descent_multi",
    "momentum_multi",
    "adam_multi",
]

WeightDecay = float | Sequence[float]


def gradient_descent(
    param: np.ndarray,
    grad: np.ndarray,
    *,
    lr: float,
    clipnorm: float | None = None,
    weight_decay: float = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """Gradient descent with optional clip-by-norm, in place.

    ``g = g * c / max(||g||_2, c)`` (if ``clipnorm=c``);  ``p = p - lr*wd*p - lr*g``.
    """
    return _step(
        GRADIENT_DESCENT,
        [[param], [grad]],
        dict(lr=lr),
        {},
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        skip_nonfinite=skip_nonfinite,
    )


def momentum(
    param: np.ndarray,
    grad: np.ndarray,
    velocity: np.ndarray,
    *,
    lr: float,
    momentum: float,
    nesterov: bool = False,
    clipnorm: float | None = None,
    weight_decay: float = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """Momentum, Keras form, in place on ``param`` and ``velocity``.

    ``m = momentum*m - lr*g``;  ``p = p - lr*wd*p + m``
    (Nesterov: ``p = p - lr*wd*p + momentum*m - lr*g`` with the updated ``m``).
    """
    return _step(
        MOMENTUM,
        [[param], [grad], [velocity]],
        dict(lr=lr, momentum=momentum),
        dict(nesterov=nesterov),
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        skip_nonfinite=skip_nonfinite,
    )


def adam(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    *,
    lr: float,
    beta_1: float = _ADAM["beta_1"],
    beta_2: float = _ADAM["beta_2"],
    epsilon: float = _ADAM["epsilon"],
    step: int,
    vhat: np.ndarray | None = None,
    clipnorm: float | None = None,
    weight_decay: float = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """Adam ("epsilon hat" form, as Keras), in place on ``param``, ``m``, ``v`` (and ``vhat``).

    ``step`` is the 1-based step number t (Keras: ``iterations + 1``)::

        alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
        m = m + (g - m) * (1 - beta_1)
        v = v + (g*g - v) * (1 - beta_2)
        vhat = max(vhat, v)                       # amsgrad, when vhat is given
        p = p - lr*wd*p - alpha * m / (sqrt(v or vhat) + epsilon)
    """
    return _step(
        ADAM,
        [[param], [grad], [m], [v], None if vhat is None else [vhat]],
        dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, step=step),
        {},
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        skip_nonfinite=skip_nonfinite,
    )


def gradient_descent_multi(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    *,
    lr: float,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    weight_decay: WeightDecay = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """:func:`gradient_descent` on every ``(params[i], grads[i])`` in one call.

    ``weight_decay`` is one value or one per parameter. ``global_clipnorm=c`` scales
    all gradients by ``c / max(sqrt(sum_i ||g_i||^2), c)``.
    """
    return _step(
        GRADIENT_DESCENT,
        [_list(params, "params"), _list(grads, "grads")],
        dict(lr=lr),
        {},
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        global_clipnorm=global_clipnorm,
        skip_nonfinite=skip_nonfinite,
    )


def momentum_multi(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    velocities: Sequence[np.ndarray],
    *,
    lr: float,
    momentum: float,
    nesterov: bool = False,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    weight_decay: WeightDecay = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """:func:`momentum` on every tensor in one call (see :func:`gradient_descent_multi`)."""
    return _step(
        MOMENTUM,
        [_list(params, "params"), _list(grads, "grads"), _list(velocities, "velocities")],
        dict(lr=lr, momentum=momentum),
        dict(nesterov=nesterov),
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        global_clipnorm=global_clipnorm,
        skip_nonfinite=skip_nonfinite,
    )


def adam_multi(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    ms: Sequence[np.ndarray],
    vs: Sequence[np.ndarray],
    *,
    lr: float,
    beta_1: float = _ADAM["beta_1"],
    beta_2: float = _ADAM["beta_2"],
    epsilon: float = _ADAM["epsilon"],
    step: int,
    vhats: Sequence[np.ndarray] | None = None,
    clipnorm: float | None = None,
    global_clipnorm: float | None = None,
    weight_decay: WeightDecay = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """:func:`adam` on every tensor in one call (amsgrad when ``vhats`` is given)."""
    return _step(
        ADAM,
        [
            _list(params, "params"),
            _list(grads, "grads"),
            _list(ms, "ms"),
            _list(vs, "vs"),
            None if vhats is None else _list(vhats, "vhats"),
        ],
        dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, step=step),
        {},
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        global_clipnorm=global_clipnorm,
        skip_nonfinite=skip_nonfinite,
    )


def _list(arrays, name: str) -> list:
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{name} must be a list of numpy arrays, got {type(arrays).__name__}")
    return list(arrays)


# --- Checks and the core call ------------------------------------------------------------
# Every hyperparameter and option is checked here by the rule table (pyopt._rules) before the
# core is called, so that a wrong type raises "lr must be a real number, got str: '0.1'"
# instead of pybind11's "incompatible function arguments" dump of the whole signature, and
# a value out of range the core's words. bool is not a number (lr=True is a mistake); the
# flags take bool or numpy.bool_. Arrays (dtypes, shapes, counts, overlaps) are the core's.


def _weight_decay(value):
    """A number, or one per tensor (list, tuple or 1-d array); the core checks the count."""
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [_rules.check(_rules.WEIGHT_DECAY, w, name=f"weight_decay[{i}]") for i, w in enumerate(value)]
    return _rules.check(_rules.WEIGHT_DECAY, value, what="a real number or a list of real numbers")


def _clip(param, value):
    return None if value is None else _rules.check(param, value, what="a real number or None")


def _step(
    rule,
    arrays: list,
    hyper: dict,
    flags: dict,
    *,
    weight_decay,
    clipnorm,
    global_clipnorm=None,
    skip_nonfinite,
    lazy=None,
    sparse=False,
) -> bool:
    """One call of the rule's _core function (``sparse``: its row-sparse one, with ``lazy``):
    ``arrays`` positional, the hyperparameters, flags and options checked, by keyword."""
    kwargs = {param.name: _rules.check(param, hyper[param.name]) for param in rule.params}
    kwargs.update((name, _rules.check_flag(name, value)) for name, value in flags.items())
    kwargs.update(
        weight_decay=_weight_decay(weight_decay),
        clipnorm=_clip(_rules.CLIPNORM, clipnorm),
        skip_nonfinite=_rules.check_flag("skip_nonfinite", skip_nonfinite),
    )
    if sparse:
        kwargs["lazy"] = _rules.check_flag("lazy", lazy)
    else:
        kwargs["global_clipnorm"] = _clip(_rules.GLOBAL_CLIPNORM, global_clipnorm)
    return _CORE[rule.name][sparse](*arrays, **kwargs)


# --- Row-sparse gradients -------------------------------------------------------------
# `values[k]` is the gradient of row `indices[k]` of `param` (shape (nnz,) + param.shape[1:]),
# as in tf.IndexedSlices. Duplicate indices are summed. By default the step equals the dense
# step with the densified gradient (Keras semantics: slots of absent rows decay, weight decay
# applies to all rows); ``lazy=True`` moves only the rows present (lazy Adam). Out-of-range
# indices raise ValueError before anything is written.


def gradient_descent_sparse(
    param, values, indices, *, lr, clipnorm=None, weight_decay=0.0, lazy=False, skip_nonfinite=False
) -> bool:
    """:func:`gradient_descent` with a row-sparse gradient ``(values, indices)``."""
    return _step(
        GRADIENT_DESCENT,
        [[param], [values], [indices]],
        dict(lr=lr),
        {},
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        skip_nonfinite=skip_nonfinite,
        lazy=lazy,
        sparse=True,
    )


def momentum_sparse(
    param,
    values,
    indices,
    velocity,
    *,
    lr,
    momentum,
    nesterov=False,
    clipnorm=None,
    weight_decay=0.0,
    lazy=False,
    skip_nonfinite=False,
) -> bool:
    """:func:`momentum` with a row-sparse gradient ``(values, indices)``."""
    return _step(
        MOMENTUM,
        [[param], [values], [indices], [velocity]],
        dict(lr=lr, momentum=momentum),
        dict(nesterov=nesterov),
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        skip_nonfinite=skip_nonfinite,
        lazy=lazy,
        sparse=True,
    )


def adam_sparse(
    param,
    values,
    indices,
    m,
    v,
    *,
    lr,
    beta_1=_ADAM["beta_1"],
    beta_2=_ADAM["beta_2"],
    epsilon=_ADAM["epsilon"],
    step,
    vhat=None,
    clipnorm=None,
    weight_decay=0.0,
    lazy=False,
    skip_nonfinite=False,
) -> bool:
    """:func:`adam` with a row-sparse gradient ``(values, indices)``; ``lazy=True`` is lazy Adam."""
    return _step(
        ADAM,
        [[param], [values], [indices], [m], [v], None if vhat is None else [vhat]],
        dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, step=step),
        {},
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        skip_nonfinite=skip_nonfinite,
        lazy=lazy,
        sparse=True,
    )


__all__ += ["gradient_descent_sparse", "momentum_sparse", "adam_sparse"]
