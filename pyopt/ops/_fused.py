"""Thin calls into pyopt's fused TensorFlow ops (``_pyopt_ops.so``, see ``cpp/tf/ops.cc``).

:func:`run` updates a list of resource variables of one dtype on the CPU in ONE call of a
rule's multi-tensor op (``Pyopt>Apply<Rule>Multi``), clipping fused in; with ``sparse=True``
the gradients are row-sparse (``tf.IndexedSlices``, e.g. from ``Embedding`` layers) and the
op is ``Pyopt>SparseApply<Rule>Multi``: duplicate rows summed, ``options.lazy`` False the
dense-equivalent step, True only the rows present. The caller (``_api.py``) has validated
the call (list lengths, hyperparameters, options), checked :func:`supports` and grouped the
variables by device, dtype and gradient kind. It works eagerly and inside ``tf.function``;
it returns the op in graph mode and None eagerly.

Variables may be ``tf.Variable`` (resource variables) or Keras 3 ``keras.Variable`` objects
(which wrap a ``tf.Variable``). Hyperparameters go in as float64 scalars (exact for Python
floats), ``lr`` in its own float dtype (Keras keeps it in a float32 variable), ``step`` as
int64. ``clipnorm``/``global_clipnorm`` None means off.
"""

from __future__ import annotations

import tensorflow as tf

from .. import _loader, _rules
from ._variables import tf_variable

SUPPORTED_DTYPES = tuple(tf.as_dtype(name) for name in _rules.SUPPORTED_DTYPES)


def _device_type(var) -> str:
    """"CPU", "GPU", ... of the variable's device ("CPU" when unplaced, the default device here)."""
    if not var.device:
        return "CPU"
    return tf.DeviceSpec.from_string(var.device).device_type or "CPU"


def supports(variables, grads) -> str | None:
    """Why the fused ops cannot take this step, or None if they can.

    Needs the loaded library, resource variables on the CPU, dense gradients or
    ``tf.IndexedSlices`` with int32/int64 indices, and one supported dtype (float16,
    bfloat16, float32, float64) for all variables and gradients.
    """
    if _loader.load() is None:
        return f"the fused op library is unavailable ({_loader.unavailable_reason()})"
    dtype = None
    for i, (var, grad) in enumerate(zip(variables, grads, strict=True)):
        tf_var = tf_variable(var)
        if tf_var is None or not hasattr(tf_var, "handle"):
            return f"variables[{i}] is a {type(var).__name__}, not a resource variable"
        if _device_type(tf_var) != "CPU":
            return f"variables[{i}] is on {tf_var.device}; the fused ops have CPU kernels only"
        if tf_var.dtype not in SUPPORTED_DTYPES:
            return _rules.dtype_error(f"variables[{i}]", tf_var.dtype.name)
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


def _handles(variables) -> list:
    return [tf_variable(var).handle for var in variables]


def _tensor_or_none(x) -> tf.Tensor | None:
    """``x`` as a tensor if it is a tensor or a (TF or Keras) variable, else None."""
    tf_var = tf_variable(x)
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


def _int64(x) -> tf.Tensor:
    t = _tensor_or_none(x)
    return tf.constant(int(x), tf.int64) if t is None else tf.cast(t, tf.int64)


def _sparse_inputs(grads) -> dict:
    """The ``values``/``indices`` lists of the sparse ops, from IndexedSlices.

    Indices keep their dtype when all are int32 or all int64; a mix goes in as int64.
    """
    for i, g in enumerate(grads):
        if not isinstance(g, tf.IndexedSlices):
            raise TypeError(f"grads[{i}] must be a tf.IndexedSlices, got {type(g).__name__}")
    indices = [g.indices for g in grads]
    if len({i.dtype for i in indices}) > 1:
        indices = [tf.cast(i, tf.int64) for i in indices]
    return dict(values=[g.values for g in grads], indices=indices)


def run(rule, variables, grads, slot_lists, hyper: dict, flags: dict, options, *, sparse: bool):
    """One call of ``rule``'s multi-tensor op (``rule.fused_op``; ``rule.fused_sparse_op``
    when ``sparse``, for IndexedSlices gradients, with ``lazy=options.lazy``).

    ``rule`` is a :class:`pyopt._rules.Rule`; ``slot_lists`` follow ``rule.slots`` (None: an
    optional slot not given, M = 0); ``hyper`` and ``flags`` by name (numbers, tensors or
    variables); ``options`` a :class:`pyopt.ops._api.StepOptions` with one weight decay per
    variable. Each hyperparameter goes in as float64 (int64 for an integer one; ``lr`` in its
    own float dtype), exact for Python floats.
    """
    args = dict(var=_handles(variables), lr=_lr(hyper["lr"]))
    for slot, items in zip(rule.slots, slot_lists, strict=True):
        args[slot.name] = [] if items is None else _handles(items)
    for param in rule.params[1:]:
        args[param.name] = (_int64 if param.range.integer else _f64)(hyper[param.name])
    for flag in rule.flags:
        args[flag] = bool(flags[flag])
    args.update(
        weight_decay=tf.constant(options.weight_decay, tf.float64),
        clipnorm=_f64(options.clipnorm or 0.0),
        global_clipnorm=_f64(options.global_clipnorm or 0.0),
        skip_nonfinite=options.skip_nonfinite,
        use_locking=options.use_locking,
    )
    if sparse:
        args.update(_sparse_inputs(grads), lazy=options.lazy)
        return getattr(_ops(), rule.fused_sparse_op)(**args)
    return getattr(_ops(), rule.fused_op)(grad=[tf.convert_to_tensor(g) for g in grads], **args)
