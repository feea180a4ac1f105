"""Optimizer updates on TensorFlow variables: pyopt's fused custom ops, or pure-TF ops.

Every function updates the variables (and slot variables) in place and returns the
backend that ran the step: ``"fused"`` (one custom-op call per device/dtype group,
clipping fused in) or ``"tf"`` (the same formulas as plain TF ops; works under XLA).
``backend="auto"`` (default) picks fused where it can; ``PYOPT_BACKEND=tf`` forces the
pure-TF path everywhere.

The ``*_multi`` functions take lists; the single-variable forms take one of each.
Gradients may be dense or ``tf.IndexedSlices`` (row-sparse, e.g. from ``Embedding``
layers); ``lazy=True`` then updates only the rows present (lazy Adam), the default gives
the dense-equivalent step as Keras does.

Both backends validate a call the same way before anything is written (the same variable
twice among variables and slots, out-of-range hyperparameters, ... raise). Only TensorFlow
is needed: without pyopt's compiled core (``pyopt._core``, used by ``pyopt.kernels``) this
API still runs, on the pure-TF backend or on the fused ops if their library loads.
"""

from .._deps import missing

try:
    import tensorflow  # noqa: F401  (imported first only to say what to install when it is missing)
except ImportError as exc:
    raise missing("pyopt.ops", exc) from exc

from .._rules import ADAM
from ._api import (
    BACKENDS,
    FusedBackendError,
    adam_multi,
    check_backend,
    fused_unsupported_reason,
    gradient_descent_multi,
    in_xla_context,
    momentum_multi,
    resolve_backend,
)

_ADAM = ADAM.defaults


def gradient_descent(
    variable, grad, *, lr, weight_decay=0.0, clipnorm=None, use_locking=True, backend="auto", lazy=False
):
    """Single-variable :func:`gradient_descent_multi`: ``p = p - lr*wd*p - lr*g``."""
    return gradient_descent_multi(
        [variable],
        [grad],
        lr=lr,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        use_locking=use_locking,
        backend=backend,
        lazy=lazy,
    )


def momentum(
    variable,
    grad,
    velocity,
    *,
    lr,
    momentum,
    nesterov=False,
    weight_decay=0.0,
    clipnorm=None,
    use_locking=True,
    backend="auto",
    lazy=False,
):
    """Single-variable :func:`momentum_multi`: ``m = mu*m - lr*g; p = p - lr*wd*p + m``."""
    return momentum_multi(
        [variable],
        [grad],
        [velocity],
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        use_locking=use_locking,
        backend=backend,
        lazy=lazy,
    )


def adam(
    variable,
    grad,
    m,
    v,
    *,
    lr,
    beta_1=_ADAM["beta_1"],
    beta_2=_ADAM["beta_2"],
    epsilon=_ADAM["epsilon"],
    step,
    vhat=None,
    weight_decay=0.0,
    clipnorm=None,
    use_locking=True,
    backend="auto",
    lazy=False,
):
    """Single-variable :func:`adam_multi` (amsgrad when ``vhat`` is given; ``lazy=True``: lazy Adam)."""
    return adam_multi(
        [variable],
        [grad],
        [m],
        [v],
        lr=lr,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        step=step,
        vhats=None if vhat is None else [vhat],
        weight_decay=weight_decay,
        clipnorm=clipnorm,
        use_locking=use_locking,
        backend=backend,
        lazy=lazy,
    )


__all__ = [
    "BACKENDS",
    "FusedBackendError",
    "adam",
    "adam_multi",
    "check_backend",
    "fused_unsupported_reason",
    "gradient_descent",
    "gradient_descent_multi",
    "in_xla_context",
    "momentum",
    "momentum_multi",
    "resolve_backend",
]
