"""Thin calls into pyopt's fused TensorFlow ops (``_pyopt_ops.so``, see ``cpp/tf/ops.cc``).

An :class:`OpCall` updates a list of resource variables of one dtype on the CPU in ONE call
of a rule's multi-tensor op (``Pyopt>Apply<Rule>Multi``), clipping fused in; with
``sparse=True`` the gradients are row-sparse (``tf.IndexedSlices``, e.g. from ``Embedding``
layers) and the op is ``Pyopt>SparseApply<Rule>Multi``: duplicate rows summed,
``options.lazy`` False the dense-equivalent step, True only the rows present. The caller
(``_api.py``) has validated the call (list lengths, hyperparameters, options), checked
:func:`supports` and grouped the variables by device, dtype and gradient kind. It works
eagerly and inside ``tf.function``; it returns the op in graph mode and None eagerly.

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
    """ "CPU", "GPU", ... of the variable's device ("CPU" when unplaced, the default device here)."""
    if not var.device:
        return "CPU"
    return tf.DeviceSpec.from_string(var.device).device_type or "CPU"


def supports(variables, grads) -> str | None:
    """Why the fused ops cannot take this step, or None if they can.

    Needs the loaded library, resource variables on the CPU, dense gradients or
    ``tf.IndexedSlices`` with int32/int64 indices, and one supported dtype (float16,
    bfloat16, float32, float64) for all variables and gradients.
    """
    return library_reason() or variables_reason(variables) or gradients_reason(variables, grads)


def library_reason() -> str | None:
    if _loader.load() is None:
        return f"the fused op library is unavailable ({_loader.unavailable_reason()})"
    return None


def variables_reason(variables) -> str | None:
    """What of the variables alone keeps the fused ops from a step (None: nothing)."""
    dtype = None
    for i, var in enumerate(variables):
        tf_var = tf_variable(var)
        if tf_var is None or not hasattr(tf_var, "handle"):
            return f"variables[{i}] is a {type(var).__name__}, not a resource variable"
        if _device_type(tf_var) != "CPU":
            return f"variables[{i}] is on {tf_var.device}; the fused ops have CPU kernels only"
        if tf_var.dtype not in SUPPORTED_DTYPES:
            return _rules.dtype_error(f"variables[{i}]", tf_var.dtype.name)
        if dtype is None:
            dtype = tf_var.dtype
        elif tf_var.dtype != dtype:
            return f"mixed dtypes: variables[{i}] is {tf_var.dtype.name} but variables[0] is {dtype.name}"
    return None


def gradients_reason(variables, grads) -> str | None:
    """What of the gradients keeps the fused ops from a step (None: nothing); the variables
    are resource variables (:func:`variables_reason` found nothing)."""
    for i, (var, grad) in enumerate(zip(variables, grads, strict=True)):
        dtype = tf_variable(var).dtype
        if isinstance(grad, tf.IndexedSlices) and grad.indices.dtype not in (tf.int32, tf.int64):
            return f"grads[{i}] is a tf.IndexedSlices with {grad.indices.dtype.name} indices; int32 or int64 needed"
        if grad is None or getattr(grad, "dtype", None) != dtype:
            got = getattr(getattr(grad, "dtype", None), "name", type(grad).__name__)
            return f"grads[{i}] has dtype {got} but variables[{i}] has dtype {dtype.name}"
    return None


def _ops():
    ops = _loader.load()
    if ops is None:
        raise RuntimeError(f"pyopt's fused ops are unavailable: {_loader.unavailable_reason()}")
    return ops


def _tensor_or_none(x) -> tf.Tensor | None:
    """``x`` as a tensor if it is a tensor or a (TF or Keras) variable, else None."""
    tf_var = tf_variable(x)
    if tf_var is not None:
        return tf_var.value()
    return x if isinstance(x, tf.Tensor) else None


def _as(t: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    return t if t.dtype == dtype else tf.cast(t, dtype)


class OpCall:
    """One call of ``rule``'s multi-tensor op on fixed variables and slots, for any number of steps.

    ``rule`` is a :class:`pyopt._rules.Rule`; ``slot_lists`` follow ``rule.slots`` (None: an
    optional slot not given, M = 0); ``flags`` by name; ``options`` a
    :class:`pyopt.ops._api.StepOptions` with one weight decay per variable; ``sparse``:
    IndexedSlices gradients, through ``rule.fused_sparse_op`` with ``lazy=options.lazy``.
    Calling it with the gradients and the hyperparameters (by name: numbers, tensors or
    variables) runs the op. Each hyperparameter goes in as float64 (int64 for an integer one;
    ``lr`` in its own float dtype), exact for Python floats.

    Executing eagerly, the inputs that do not change from step to step (handles, weight
    decays, thresholds, flags) are made once, and a number hyperparameter's tensor is kept
    while its value stays; in a graph they are made in the graph being built.
    """

    def __init__(self, rule, variables, slot_lists, flags: dict, options, *, sparse: bool):
        self.rule, self.variables, self.slot_lists, self.flags = rule, variables, slot_lists, flags
        self.options, self.sparse = options, sparse
        self._eager_inputs = None
        self._numbers: dict = {}  # name -> (the last number, its eager tensor)

    def _fixed_inputs(self) -> dict:
        args = dict(var=[tf_variable(v).handle for v in self.variables])
        for slot, items in zip(self.rule.slots, self.slot_lists, strict=True):
            args[slot.name] = [] if items is None else [tf_variable(v).handle for v in items]
        for flag in self.rule.flags:
            args[flag] = self.flags[flag]
        args.update(
            weight_decay=tf.constant(self.options.weight_decay, tf.float64),
            clipnorm=tf.constant(self.options.clipnorm or 0.0, tf.float64),
            global_clipnorm=tf.constant(self.options.global_clipnorm or 0.0, tf.float64),
            skip_nonfinite=self.options.skip_nonfinite,
            use_locking=self.options.use_locking,
        )
        if self.sparse:
            args["lazy"] = self.options.lazy
        return args

    def _scalar(self, name: str, value, dtype: tf.DType, eager: bool) -> tf.Tensor:
        """A hyperparameter as a scalar of ``dtype`` (``lr``: of its own float dtype)."""
        t = _tensor_or_none(value)
        if t is not None:
            return t if name == "lr" and t.dtype in SUPPORTED_DTYPES else _as(t, dtype)
        if not eager:
            return tf.constant(value, dtype)
        kept = self._numbers.get(name)
        if kept is None or kept[0] != value:
            kept = self._numbers[name] = (value, tf.constant(value, dtype))
        return kept[1]

    def __call__(self, grads, hyper: dict):
        eager = tf.executing_eagerly()
        if not eager:
            args = self._fixed_inputs()
        else:
            if self._eager_inputs is None:
                self._eager_inputs = self._fixed_inputs()
            args = dict(self._eager_inputs)
        for param in self.rule.params:
            integer = param.range.integer
            args[param.name] = self._scalar(param.name, hyper[param.name], tf.int64 if integer else tf.float64, eager)
        if self.sparse:
            args.update(_sparse_inputs(grads))
            return getattr(_ops(), self.rule.fused_sparse_op)(**args)
        return getattr(_ops(), self.rule.fused_op)(grad=[tf.convert_to_tensor(g) for g in grads], **args)


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
    """One call of ``rule``'s op (see :class:`OpCall`)."""
    return OpCall(rule, variables, slot_lists, flags, options, sparse=sparse)(grads, hyper)
