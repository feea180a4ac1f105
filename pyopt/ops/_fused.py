"""Thin calls into pyopt's fused TensorFlow ops (``_pyopt_ops.so``, see ``cpp/tf/ops.cc``).

Each ``*_multi`` function updates a list of resource variables of one dtype on the CPU in
ONE op call, clipping fused in; each ``*_sparse_multi`` function does the same for
row-sparse gradients (``tf.IndexedSlices``, e.g. from ``Embedding`` layers) with the
``Pyopt>SparseApply*Multi`` ops: duplicate rows summed, ``lazy=False`` the dense-equivalent
step, ``lazy=True`` only the rows present. The caller (``_api.py``) has validated
hyperparameters, checked :func:`supports` and grouped the variables by device, dtype and
gradient kind. The functions work eagerly and inside ``tf.function``; they return the op in
graph mode and None eagerly.

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

    Needs the loaded library, resource variables on the CPU, dense gradients or
    ``tf.IndexedSlices`` with int32/int64 indices, and one supported dtype (float16,
    bfloat16, float32, float64) for all variables and gradients.
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
        if isinstance(grad, tf.IndexedSlices) and grad.indices.dtype not in (tf.int32, tf.int64):
            return f"grads[{i}] is a tf.IndexedSlices with {grad.indices.dtype.name} indices; int32 or int64 needed"
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
        grad=list(grads),
        lr=_lr(lr),
        weight_decay=_weight_decays(weight_decay),
        clipnorm=_f64(clipnorm or 0.0),
        global_clipnorm=_f64(global_clipnorm or 0.0),
        skip_nonfinite=bool(skip_nonfinite),
        use_locking=bool(use_locking),
    )


def _sparse(variables, grads, lazy) -> dict:
    """The ``values``/``indices`` lists of the sparse ops (and ``lazy``), from IndexedSlices.

    Indices keep their dtype when all are int32 or all int64; a mix goes in as int64.
    """
    for i, g in enumerate(grads):
        if not isinstance(g, tf.IndexedSlices):
            raise TypeError(f"grads[{i}] must be a tf.IndexedSlices, got {type(g).__name__}")
    indices = [g.indices for g in grads]
    if len({i.dtype for i in indices}) > 1:
        indices = [tf.cast(i, tf.int64) for i in indices]
    return dict(values=[g.values for g in grads], indices=indices, lazy=bool(lazy))


def _call(op_name, variables, grads, lazy, slot_args, hyper, common):
    """One dense op (``lazy`` None) or sparse op call of ``op_name`` ("gradient_descent", ...)."""
    ops = _ops()
    if lazy is None:
        common["grad"] = [tf.convert_to_tensor(g) for g in common["grad"]]
        op = getattr(ops, f"pyopt_apply_{op_name}_multi")
    else:
        del common["grad"]
        common.update(_sparse(variables, grads, lazy))
        op = getattr(ops, f"pyopt_sparse_apply_{op_name}_multi")
    return op(var=_handles(variables, "variables"), **slot_args, **hyper, **common)


def gradient_descent_multi(variables, grads, *, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                           use_locking, lazy=None):
    """``Pyopt>ApplyGradientDescentMulti``: ``p = p - lr*wd*p - lr*clip(g)`` for every variable.

    ``lazy`` None: dense gradients; a bool: IndexedSlices, through
    ``Pyopt>SparseApplyGradientDescentMulti`` (see :func:`gradient_descent_sparse_multi`).
    """
    return _call("gradient_descent", variables, grads, lazy, {}, {},
                 _common(variables, grads, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking))


def momentum_multi(variables, grads, velocities, *, lr, momentum, nesterov, weight_decay, clipnorm, global_clipnorm,
                   skip_nonfinite, use_locking, lazy=None):
    """``Pyopt>ApplyMomentumMulti``: ``m = mu*m - lr*g; p = p - lr*wd*p + m`` (nesterov: ``+ mu*m - lr*g``).

    ``lazy`` as in :func:`gradient_descent_multi`.
    """
    _check_lengths(variables, velocities=velocities)
    return _call("momentum", variables, grads, lazy, dict(velocity=_handles(velocities, "velocities")),
                 dict(momentum=_f64(momentum), nesterov=bool(nesterov)),
                 _common(variables, grads, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking))


def adam_multi(variables, grads, ms, vs, *, lr, beta_1, beta_2, epsilon, step, vhats, weight_decay, clipnorm,
               global_clipnorm, skip_nonfinite, use_locking, lazy=None):
    """``Pyopt>ApplyAdamMulti`` (amsgrad when ``vhats`` is a list)::

        alpha = lr*sqrt(1-beta_2^t)/(1-beta_1^t)
        m = m + (g-m)*(1-beta_1);  v = v + (g^2-v)*(1-beta_2);  [vhat = max(vhat, v)]
        p = p - lr*wd*p - alpha*m/(sqrt(v or vhat)+epsilon)

    ``lazy`` as in :func:`gradient_descent_multi`.
    """
    _check_lengths(variables, ms=ms, vs=vs, vhats=vhats)
    slots = dict(m=_handles(ms, "ms"), v=_handles(vs, "vs"), vhat=[] if vhats is None else _handles(vhats, "vhats"))
    hyper = dict(beta_1=_f64(beta_1), beta_2=_f64(beta_2), epsilon=_f64(epsilon), step=_step(step))
    return _call("adam", variables, grads, lazy, slots, hyper,
                 _common(variables, grads, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking))


def gradient_descent_sparse_multi(variables, grads, *, lazy=False, **kwargs):
    """``Pyopt>SparseApplyGradientDescentMulti``: :func:`gradient_descent_multi` with
    ``tf.IndexedSlices`` gradients. Rows listed twice are summed; ``lazy=False``: the dense step
    with the densified gradient (every row decays); ``lazy=True``: only the rows present move."""
    return gradient_descent_multi(variables, grads, lazy=bool(lazy), **kwargs)


def momentum_sparse_multi(variables, grads, velocities, *, lazy=False, **kwargs):
    """``Pyopt>SparseApplyMomentumMulti``: :func:`momentum_multi` with IndexedSlices gradients
    (``lazy=False``: absent rows get g = 0, their velocity decays; ``lazy=True``: untouched)."""
    return momentum_multi(variables, grads, velocities, lazy=bool(lazy), **kwargs)


def adam_sparse_multi(variables, grads, ms, vs, *, lazy=False, **kwargs):
    """``Pyopt>SparseApplyAdamMulti``: :func:`adam_multi` with IndexedSlices gradients
    (``lazy=False``: Keras's densified step; ``lazy=True``: lazy Adam, only rows present)."""
    return adam_multi(variables, grads, ms, vs, lazy=bool(lazy), **kwargs)
