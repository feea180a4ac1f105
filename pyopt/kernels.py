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

import numbers
from typing import Optional, Sequence, Union

import numpy as np

from ._config import core as _load_core

_core = _load_core()

__all__ = [
    "gradient_descent",
    "momentum",
    "adam",
    "gradient_descent_multi",
    "momentum_multi",
    "adam_multi",
]

WeightDecay = Union[float, Sequence[float]]


def gradient_descent(
    param: np.ndarray,
    grad: np.ndarray,
    *,
    lr: float,
    clipnorm: Optional[float] = None,
    weight_decay: float = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """Gradient descent with optional clip-by-norm, in place.

    ``g = g * c / max(||g||_2, c)`` (if ``clipnorm=c``);  ``p = p - lr*wd*p - lr*g``.
    """
    return _core.gradient_descent(
        [param], [grad], **_hyper(lr=lr, weight_decay=weight_decay, clipnorm=clipnorm, skip_nonfinite=skip_nonfinite)
    )


def momentum(
    param: np.ndarray,
    grad: np.ndarray,
    velocity: np.ndarray,
    *,
    lr: float,
    momentum: float,
    nesterov: bool = False,
    clipnorm: Optional[float] = None,
    weight_decay: float = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """Momentum, Keras form, in place on ``param`` and ``velocity``.

    ``m = momentum*m - lr*g``;  ``p = p - lr*wd*p + m``
    (Nesterov: ``p = p - lr*wd*p + momentum*m - lr*g`` with the updated ``m``).
    """
    return _core.momentum(
        [param],
        [grad],
        [velocity],
        **_hyper(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            skip_nonfinite=skip_nonfinite,
        ),
    )


def adam(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    *,
    lr: float,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    step: int,
    vhat: Optional[np.ndarray] = None,
    clipnorm: Optional[float] = None,
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
    return _core.adam(
        [param],
        [grad],
        [m],
        [v],
        None if vhat is None else [vhat],
        **_hyper(
            lr=lr,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            step=step,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            skip_nonfinite=skip_nonfinite,
        ),
    )


def gradient_descent_multi(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    *,
    lr: float,
    clipnorm: Optional[float] = None,
    global_clipnorm: Optional[float] = None,
    weight_decay: WeightDecay = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """:func:`gradient_descent` on every ``(params[i], grads[i])`` in one call.

    ``weight_decay`` is one value or one per parameter. ``global_clipnorm=c`` scales
    all gradients by ``c / max(sqrt(sum_i ||g_i||^2), c)``.
    """
    return _core.gradient_descent(
        _list(params, "params"),
        _list(grads, "grads"),
        **_hyper(
            lr=lr,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            global_clipnorm=global_clipnorm,
            skip_nonfinite=skip_nonfinite,
        ),
    )


def momentum_multi(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    velocities: Sequence[np.ndarray],
    *,
    lr: float,
    momentum: float,
    nesterov: bool = False,
    clipnorm: Optional[float] = None,
    global_clipnorm: Optional[float] = None,
    weight_decay: WeightDecay = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """:func:`momentum` on every tensor in one call (see :func:`gradient_descent_multi`)."""
    return _core.momentum(
        _list(params, "params"),
        _list(grads, "grads"),
        _list(velocities, "velocities"),
        **_hyper(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            global_clipnorm=global_clipnorm,
            skip_nonfinite=skip_nonfinite,
        ),
    )


def adam_multi(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    ms: Sequence[np.ndarray],
    vs: Sequence[np.ndarray],
    *,
    lr: float,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
    step: int,
    vhats: Optional[Sequence[np.ndarray]] = None,
    clipnorm: Optional[float] = None,
    global_clipnorm: Optional[float] = None,
    weight_decay: WeightDecay = 0.0,
    skip_nonfinite: bool = False,
) -> bool:
    """:func:`adam` on every tensor in one call (amsgrad when ``vhats`` is given)."""
    return _core.adam(
        _list(params, "params"),
        _list(grads, "grads"),
        _list(ms, "ms"),
        _list(vs, "vs"),
        None if vhats is None else _list(vhats, "vhats"),
        **_hyper(
            lr=lr,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            step=step,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            global_clipnorm=global_clipnorm,
            skip_nonfinite=skip_nonfinite,
        ),
    )


def _list(arrays, name: str) -> list:
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{name} must be a list of numpy arrays, got {type(arrays).__name__}")
    return list(arrays)


# --- Hyperparameter types ---------------------------------------------------------------
# Checked here, before the core is called, so that a wrong type raises "lr must be a real
# number, got str: '0.1'" instead of pybind11's "incompatible function arguments" dump of
# the whole signature. Only types (and what the core's C types can hold) are checked here;
# the ranges are checked by the core, whose messages name the argument too. bool is not a
# number (lr=True is a mistake); the flags take bool or numpy.bool_.

_INT64_MAX = 2**63 - 1


def _show(value) -> str:
    """``type: repr`` for messages, the repr cut to 80 characters."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long for str()
        text = "..."
    return f"{type(value).__name__}: {text if len(text) <= 80 else text[:77] + '...'}"


def _real(name: str, value, what: str = "a real number") -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {_show(value)}")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float64 range
        raise ValueError(f"{name} must be a finite number, got {_show(value)}") from None


def _optional_real(name: str, value):
    return None if value is None else _real(name, value, "a real number or None")


def _weight_decay(name: str, value):
    """A number, or one per tensor (list, tuple or 1-d array); the core checks the count."""
    if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1):
        return [_real(f"{name}[{i}]", w) for i, w in enumerate(value)]
    return _real(name, value, "a real number or a list of real numbers")


def _step(name: str, value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_show(value)}")
    if not -_INT64_MAX - 1 <= int(value) <= _INT64_MAX:  # the core's int64; >= 1 is checked there
        raise ValueError(f"{name} must be an int in [1, 2**63 - 1], got {_show(value)}")
    return int(value)


def _flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {_show(value)}")
    return bool(value)


_HYPER_TYPES = {
    "lr": _real,
    "momentum": _real,
    "beta_1": _real,
    "beta_2": _real,
    "epsilon": _real,
    "step": _step,
    "weight_decay": _weight_decay,
    "clipnorm": _optional_real,
    "global_clipnorm": _optional_real,
    "nesterov": _flag,
    "skip_nonfinite": _flag,
    "lazy": _flag,
}


def _hyper(**hyper) -> dict:
    """The keyword arguments of a core call: each hyperparameter type-checked by its name
    (TypeError/ValueError starting with the name) and converted to what the core takes."""
    return {name: _HYPER_TYPES[name](name, value) for name, value in hyper.items()}


# --- Row-sparse gradients -------------------------------------------------------------
# `values[k]` is the gradient of row `indices[k]` of `param` (shape (nnz,) + param.shape[1:]),
# as in tf.IndexedSlices. Duplicate indices are summed. By default the step equals the dense
# step with the densified gradient (Keras semantics: slots of absent rows decay, weight decay
# applies to all rows); ``lazy=True`` moves only the rows present (lazy Adam). Out-of-range
# indices raise ValueError before anything is written.


def gradient_descent_sparse(param, values, indices, *, lr, clipnorm=None, weight_decay=0.0, lazy=False,
                            skip_nonfinite=False) -> bool:
    """:func:`gradient_descent` with a row-sparse gradient ``(values, indices)``."""
    return _core.gradient_descent_sparse([param], [values], [indices], **_hyper(
        lr=lr, weight_decay=weight_decay, clipnorm=clipnorm, skip_nonfinite=skip_nonfinite, lazy=lazy))


def momentum_sparse(param, values, indices, velocity, *, lr, momentum, nesterov=False, clipnorm=None,
                    weight_decay=0.0, lazy=False, skip_nonfinite=False) -> bool:
    """:func:`momentum` with a row-sparse gradient ``(values, indices)``."""
    return _core.momentum_sparse([param], [values], [indices], [velocity], **_hyper(
        lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, clipnorm=clipnorm,
        skip_nonfinite=skip_nonfinite, lazy=lazy))


def adam_sparse(param, values, indices, m, v, *, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step, vhat=None,
                clipnorm=None, weight_decay=0.0, lazy=False, skip_nonfinite=False) -> bool:
    """:func:`adam` with a row-sparse gradient ``(values, indices)``; ``lazy=True`` is lazy Adam."""
    return _core.adam_sparse([param], [values], [indices], [m], [v], None if vhat is None else [vhat], **_hyper(
        lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, step=step, weight_decay=weight_decay,
        clipnorm=clipnorm, skip_nonfinite=skip_nonfinite, lazy=lazy))


__all__ += ["gradient_descent_sparse", "momentum_sparse", "adam_sparse"]
