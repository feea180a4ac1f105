"""Thin calls into pyopt's fused TensorFlow ops (``_pyopt_ops.so``, see ``cpp/tf/ops.cc``).

Each ``*_multi`` function updates a list of resource variables of one dtype on the CPU in
ONE op call, clipping fused in. The caller (``_api.py``) has validated hyperparameters,
checked :func:`supports` and grouped the variables by device and dtype. The functions work
eagerly and inside ``tf.function``; they return the op in graph mode and None eagerly.

Variables may be ``tf.Variable`` (resource variables) or Keras 3 ``keras.Variable`` objects
(which wrap a ``tf.Variable``). Hyperparameters go in as float64 scalars (exact for Python
floats), ``lr`` in its own float dtype (Keras keeps it in a float32 variable), ``step`` as
int64. ``clipnorm``/``global_clipnorm`` None means off.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from .. import _loader

SUPPORTED_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)


def _tf_variable(var):
    """The resource ``tf.Variable`` behind ``var`` (itself, or a Keras 3 variable's ``_value``)."""
    if isinstance(var, tf.Variable):
        return var
    inner = getattr(var, "_value", None)
    if isinstance(inner, tf.Variable):
        return inner
    return None


def _device_type(var) -> str:
    """"CPU", "GPU", ... of the variable's device ("CPU" when unplaced, the default device here)."""
    if not var.device:
        return "CPU"
    return tf.DeviceSpec.from_string(var.device).device_type or "CPU"


def supports(variables, grads) -> Optional[str]:
    """Why the fused ops cannot take this step, or None if they can.

    Needs the loaded library, resource variables on the CPU, dense gradients, and one
    supported dtype (float16, bfloat16, float32, float64) for all variables and gradients.
    """
    if _loader.load() is None:
        return f"the fused op library is unavailable ({_loader.unavailable_reason()})"
    dtype = None
    for i, (var, grad) in enumerate(zip(variables, grads)):
        tf_var = _tf_variable(var)
        if tf_var is None or not hasattr(tf_var, "handle"):
            return f"variables[{i}] is a {type(var).__name__}, not a resource variable"
        if _device_type(tf_var) != "CPU":
            return f"variables[{i}] is on {tf_var.device}; the fused ops have CPU kernels only"
        if tf_var.dtype not in SUPPORTED_DTYPES:
            return (f"variables[{i}] has dtype {tf_var.dtype.name}; "
                    "the fused ops support float16, bfloat16, float32, float64")
        if isinstance(grad, tf.IndexedSlices):
            return f"grads[{i}] is a tf.IndexedSlices (sparse); the fused ops take dense gradients"
        if grad is None or getattr(grad, "dtype", None) != tf_var.dtype:
            got = getattr(getattr(grad, "dtype", None), "name", type(grad).__name__)
            return f"grads[{i}] has dtype {got} but variables[{i}] has dtype {tf_var.dtype.name}"
        if dtype is None:
            dtype = tf_var.dtype
        elif tf_var.dtype != dtype:
            return f"mixed dtypes: variables[{i}] is {tf_var.dtype.name} but variables[0] is {dtype.name}"
    return None


def _ops():
    ops = _loader.load()
    if ops is None:
        raise RuntimeError(f"pyopt's fused ops are unavailable: {_loader.unavailable_reason()}")
    return ops


def _handles(variables, name: str) -> list:
    handles = []
    for i, var in enumerate(variables):
        tf_var = _tf_variable(var)
        if tf_var is None:
            raise TypeError(f"{name}[{i}] must be a tf.Variable or keras.Variable, got {type(var).__name__}")
        handles.append(tf_var.handle)
    return handles


def _tensor_or_none(x) -> Optional[tf.Tensor]:
    """``x`` as a tensor if it is a tensor or a (TF or Keras) variable, else None."""
    tf_var = _tf_variable(x)
    if tf_var is not None:
        return tf_var.value()
    return x if isinstance(x, tf.Tensor) else None


def _f64(x) -> tf.Tensor:
    t = _tensor_or_none(x)
    return tf.constant(float(x), tf.float64) if t is None else tf.cast(t, tf.float64)


def _lr(lr) -> tf.Tensor:
    t = _tensor_or_none(lr)
    if t is None:
        return tf.constant(float(lr), tf.float64)
    return t if t.dtype in SUPPORTED_DTYPES else tf.cast(t, tf.float64)


def _step(step) -> tf.Tensor:
    t = _tensor_or_none(step)
    return tf.constant(int(step), tf.int64) if t is None else tf.cast(t, tf.int64)


def _weight_decays(weight_decay) -> tf.Tensor:
    """One float64 per variable (a list), or one for all (a number)."""
    if isinstance(weight_decay, (list, tuple)):
        return tf.constant([float(w) for w in weight_decay], tf.float64)
    return tf.constant(float(weight_decay), tf.float64)


def _check_lengths(variables, **lists) -> None:
    """Every list has one entry per variable (TF's own error for this names no input)."""
    for name, items in lists.items():
        if items is not None and len(items) != len(variables):
            raise ValueError(f"{name} has {len(items)} entries but variables has {len(variables)}")


def _common(variables, grads, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking) -> dict:
    _check_lengths(variables, grads=grads,
                   weight_decay=weight_decay if isinstance(weight_decay, (list, tuple)) else None)
    return dict(
        grad=[tf.convert_to_tensor(g) for g in grads],
        lr=_lr(lr),
        weight_decay=_weight_decays(weight_decay),
        clipnorm=_f64(clipnorm or 0.0),
        global_clipnorm=_f64(global_clipnorm or 0.0),
        skip_nonfinite=bool(skip_nonfinite),
        use_locking=bool(use_locking),
    )


def gradient_descent_multi(variables, grads, *, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                           use_locking):
    """``Pyopt>ApplyGradientDescentMulti``: ``p = p - lr*wd*p - lr*clip(g)`` for every variable."""
    return _ops().pyopt_apply_gradient_descent_multi(
        var=_handles(variables, "variables"),
        **_common(variables, grads, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking),
    )


def momentum_multi(variables, grads, velocities, *, lr, momentum, nesterov, weight_decay, clipnorm, global_clipnorm,
                   skip_nonfinite, use_locking):
    """``Pyopt>ApplyMomentumMulti``: ``m = mu*m - lr*g; p = p - lr*wd*p + m`` (nesterov: ``+ mu*m - lr*g``)."""
    _check_lengths(variables, velocities=velocities)
    return _ops().pyopt_apply_momentum_multi(
        var=_handles(variables, "variables"),
        velocity=_handles(velocities, "velocities"),
        momentum=_f64(momentum),
        nesterov=bool(nesterov),
        **_common(variables, grads, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking),
    )


def adam_multi(variables, grads, ms, vs, *, lr, beta_1, beta_2, epsilon, step, vhats, weight_decay, clipnorm,
               global_clipnorm, skip_nonfinite, use_locking):
    """``Pyopt>ApplyAdamMulti`` (amsgrad when ``vhats`` is a list)::

        alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t)
        m = m + (g-m)*(1-beta_1);  v = v + (g^2-v)*(1-beta_2);  [vhat = max(vhat, v)]
        p = p - lr*wd*p - alpha*m/(sqrt(v or vhat)+epsilon)
    """
    _check_lengths(variables, ms=ms, vs=vs, vhats=vhats)
    return _ops().pyopt_apply_adam_multi(
        var=_handles(variables, "variables"),
        m=_handles(ms, "ms"),
        v=_handles(vs, "vs"),
        vhat=[] if vhats is None else _handles(vhats, "vhats"),
        beta_1=_f64(beta_1),
        beta_2=_f64(beta_2),
        epsilon=_f64(epsilon),
        step=_step(step),
        **_common(variables, grads, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking),
    )
