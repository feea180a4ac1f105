"""The update rules composed from plain TensorFlow ops: the fallback backend and the reference.

This is the chapter's way of writing an optimizer: a few elementwise TF ops per variable,
assigned back. It runs anywhere TensorFlow runs, inside ``tf.function`` and under XLA
(``jit_compile=True``). Per-step scalars are computed in float64 and rounded once, and
float16/bfloat16 variables are updated with float32 maths, as the compiled kernels do. The
maths of each rule is its row's in :mod:`pyopt._rules` (``scalars`` and ``update``).

Row-sparse gradients (``tf.IndexedSlices``) have the semantics of the fused sparse ops:
rows listed twice are summed first; ``lazy=False`` is the dense step with the densified
gradient (absent rows get g = 0), ``lazy=True`` updates only the rows present (gather the
rows, apply the rule, scatter them back). Clipping uses the norm of the summed gradient.
An index outside ``[0, rows)`` raises InvalidArgumentError before anything is written
(under XLA the check cannot raise: there, out-of-range rows are dropped).
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from ._variables import tf_variable


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


class _Scalar64:
    """Float64 scalar maths for a rule's ``scalars``: Python numbers exactly (``tf.cast(0.1,
    ...)`` would go through float32; ``1 - x`` is rounded once, as in the core), tensors as TF ops."""

    sqrt = staticmethod(tf.sqrt)
    pow = staticmethod(tf.pow)

    @staticmethod
    def f64(x):
        if isinstance(x, (int, float)):
            return tf.constant(float(x), tf.float64)
        return tf.cast(x, tf.float64)

    @staticmethod
    def one_minus(x):
        if isinstance(x, (int, float)):
            return _Scalar64.f64(1.0 - x)
        return 1.0 - _Scalar64.f64(x)


class Rows(NamedTuple):
    """A row-sparse gradient with its duplicate rows summed: ``values[k]`` is row ``indices[k]``."""

    values: tf.Tensor  # [unique rows] + row shape, in the compute dtype
    indices: tf.Tensor  # unique row numbers


def _shape(variable):
    """The static shape when known (reading a variable's value for tf.shape may copy it)."""
    if variable.shape.is_fully_defined():
        return tf.constant(variable.shape.as_list(), tf.int64)
    return tf.shape(variable, out_type=tf.int64)


def index_checks(variables, grads, names=None) -> list:
    """Assertions that the indices of every IndexedSlices gradient lie in ``[0, rows)`` of its
    variable (InvalidArgumentError naming ``grads[i]`` otherwise); empty for dense gradients."""
    checks = []
    for i, (var, g) in enumerate(zip(variables, grads, strict=True)):
        if not isinstance(g, tf.IndexedSlices):
            continue
        indices, rows = tf.cast(g.indices, tf.int64), _shape(var)[0]
        where = f"grads[{i}]" if names is None else names[i]
        checks += [
            tf.debugging.assert_non_negative(
                indices, message=f"{where}: indices must lie in [0, rows), got a negative index"
            ),
            tf.debugging.assert_less(indices, rows, message=f"{where}: indices must lie in [0, rows) of the variable"),
        ]
    return checks


def _sum_rows(grad: tf.IndexedSlices) -> Rows:
    """The unique rows of ``grad`` and their summed values (compute dtype); indices unchecked."""
    unique, position = tf.unique(tf.cast(grad.indices, tf.int64))
    values = tf.cast(grad.values, _compute_dtype(grad.values.dtype))
    return Rows(tf.math.unsorted_segment_sum(values, position, tf.size(unique)), unique)


def _densify(grad: tf.IndexedSlices, variable):
    """``grad`` as a dense tensor shaped like ``variable`` (duplicate rows summed, compute dtype)."""
    rows = _sum_rows(grad)
    return tf.scatter_nd(rows.indices[:, None], rows.values, _shape(variable))


def _gradients(variables, grads, lazy):
    """Dense gradients as tensors; IndexedSlices as :class:`Rows` (lazy) or densified."""
    out = []
    for var, g in zip(variables, grads, strict=True):
        if isinstance(g, tf.IndexedSlices):
            out.append(_sum_rows(g) if lazy else _densify(g, var))
        else:
            out.append(tf.convert_to_tensor(g))
    return out


def _sum_of_squares(g):
    return tf.reduce_sum(tf.square(tf.cast(g.values if isinstance(g, Rows) else g, tf.float64)))


def _clip_factor(sum_of_squares, clip):
    """c / max(||g||, c), NaN if the norm is NaN (Keras semantics)."""
    norm = tf.sqrt(sum_of_squares)
    return clip / tf.maximum(norm, clip) + (norm - norm)


def _prepare_gradients(grads, clipnorm, global_clipnorm, skip_nonfinite):
    """Scale factors per gradient (float64) and whether the step should be applied.

    ``grads``: tensors or :class:`Rows` (IndexedSlices are summed per row for their norm).
    """
    grads = [
        g if isinstance(g, Rows) else _sum_rows(g) if isinstance(g, tf.IndexedSlices) else tf.convert_to_tensor(g)
        for g in grads
    ]
    need_norms = bool(clipnorm) or bool(global_clipnorm) or skip_nonfinite
    sums = [_sum_of_squares(g) for g in grads] if need_norms else []
    total = tf.add_n(sums) if sums else tf.constant(0.0, tf.float64)
    if global_clipnorm:
        scales = [_clip_factor(total, global_clipnorm)] * len(grads)
    elif clipnorm:
        scales = [_clip_factor(s, clipnorm) for s in sums]
    else:
        scales = [None] * len(grads)
    ok = tf.math.is_finite(total) if skip_nonfinite else None
    return grads, scales, ok


def scaled_gradients(grads, global_clipnorm, skip_nonfinite):
    """Gradients pre-scaled by the joint clip factor (IndexedSlices stay sparse), and the
    skip condition: for a step split over several op calls that must share one norm."""
    _, scales, ok = _prepare_gradients(grads, None, global_clipnorm, skip_nonfinite)
    out = []
    for g, s in zip(grads, scales, strict=True):
        if isinstance(g, tf.IndexedSlices):
            out.append(tf.IndexedSlices(_scaled(g.values, s, g.values.dtype), g.indices, g.dense_shape))
        else:
            g = tf.convert_to_tensor(g)
            out.append(_scaled(g, s, g.dtype))
    return out, ok


def _scaled(g, scale, ct):
    g = tf.cast(g, ct)
    return g if scale is None else g * tf.cast(scale, ct)


def run_if(ok, apply_fn):
    """``apply_fn()`` (a list of ops or Nones), under ``tf.cond(ok, ...)`` unless ``ok`` is None."""
    if ok is None:
        return apply_fn()
    return tf.cond(ok, lambda: tf.group([op for op in apply_fn() if op is not None]), tf.no_op)


def _write(x, value, use_locking):
    """``x = value`` (whole tensor) on the variable's ``tf.Variable``."""
    variable = tf_variable(x)
    return variable.assign(tf.cast(value, variable.dtype), use_locking=use_locking, read_value=False)


def apply(rule, variables, grads, slot_lists, hyper: dict, flags: dict, options) -> None:
    """One step of ``rule`` (a :class:`pyopt._rules.Rule`) on every variable: the row's
    ``update`` on whole tensors, or for an IndexedSlices gradient with ``options.lazy`` on
    its rows only (gather, scatter). ``slot_lists`` follow ``rule.slots`` (None: an optional
    slot not given); ``hyper`` and ``flags`` by name; ``options`` a
    :class:`pyopt.ops._api.StepOptions`. Every write waits for the index checks of every
    gradient: a bad index writes nothing."""
    with tf.control_dependencies(index_checks(variables, grads)):
        _apply_checked(rule, variables, grads, slot_lists, hyper, flags, options)


def _apply_checked(rule, variables, grads, slot_lists, hyper, flags, options):
    grads, scales, ok = _prepare_gradients(
        _gradients(variables, grads, options.lazy), options.clipnorm, options.global_clipnorm, options.skip_nonfinite
    )
    scalars = rule.scalars(hyper, _Scalar64)
    lr64 = scalars["lr"]
    slot_lists = [lst for lst in slot_lists if lst is not None]

    def apply_all():
        ops, cast = [], {}
        for i, (var, g, scale, wd) in enumerate(zip(variables, grads, scales, options.weight_decay, strict=True)):
            ct = _compute_dtype(var.dtype)
            if ct not in cast:  # the scalars in the compute dtype, once per dtype
                cast[ct] = {name: tf.cast(value, ct) for name, value in scalars.items()}
            slots = [lst[i] for lst in slot_lists]
            if isinstance(g, Rows):

                def read(x, rows=g.indices, ct=ct):
                    return tf.cast(tf.gather(tf_variable(x), rows), ct)

                def write(x, value, rows=g.indices):
                    x = tf_variable(x)
                    return x.scatter_update(
                        tf.IndexedSlices(tf.cast(value, x.dtype), rows), use_locking=options.use_locking
                    )

                g = g.values
            else:

                def read(x, ct=ct):
                    return tf.cast(tf.convert_to_tensor(x), ct)

                def write(x, value):
                    return _write(x, value, options.use_locking)

            p = read(var)
            if wd:  # p = p - lr*wd*p  (decoupled weight decay, before the update)
                p = p - p * tf.cast(lr64 * wd, ct)
            p, new_slots = rule.update(p, _scaled(g, scale, ct), [read(s) for s in slots], cast[ct], flags, tf.math)
            ops += [write(s, value) for s, value in zip(slots, new_slots, strict=True)]
            ops.append(write(var, p))
        return ops

    return run_if(ok, apply_all)
