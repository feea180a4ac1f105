"""The update rules composed from plain TensorFlow ops: the fallback backend and the reference.

This is the chapter's way of writing an optimizer: a few elementwise TF ops per variable,
assigned back. It runs anywhere TensorFlow runs, inside ``tf.function`` and under XLA
(``jit_compile=True``). Per-step scalars are computed in float64 and rounded once, and
float16/bfloat16 variables are updated with float32 maths, as the compiled kernels do.

Row-sparse gradients (``tf.IndexedSlices``) have the semantics of the fused sparse ops:
rows listed twice are summed first; ``lazy=False`` is the dense step with the densified
gradient (absent rows get g = 0), ``lazy=True`` updates only the rows present (gather the
rows, apply the rule, scatter them back). Clipping uses the norm of the summed gradient.
An index outside ``[0, rows)`` raises InvalidArgumentError before anything is written
(under XLA the check cannot raise: there, out-of-range rows are dropped).

Signatures are those of :mod:`pyopt.ops._fused` (see :mod:`pyopt.ops`), plus ``lazy``.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


def _compute_dtype(dtype: tf.DType) -> tf.DType:
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _read(x, dtype):
    return tf.cast(tf.convert_to_tensor(x), dtype)


def _write(variable, value, use_locking):
    value = tf.cast(value, variable.dtype)
    if isinstance(variable, tf.Variable):
        return variable.assign(value, use_locking=use_locking, read_value=False)
    return variable.assign(value)  # keras.Variable


def _tf_variable(variable):
    """The ``tf.Variable`` behind a Keras 3 variable (itself for a ``tf.Variable``)."""
    return variable if isinstance(variable, tf.Variable) else getattr(variable, "_value", variable)


def _scalar64(x):
    """``x`` as a float64 scalar; a Python number exactly (``tf.cast(0.1, ...)`` would go through float32)."""
    if isinstance(x, (int, float)):
        return tf.constant(float(x), tf.float64)
    return tf.cast(x, tf.float64)


def _one_minus64(x):
    """``1 - x`` in float64: in Python for a number (one rounding, as the core), else as a TF op."""
    if isinstance(x, (int, float)):
        return _scalar64(1.0 - x)
    return 1.0 - _scalar64(x)


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
    for i, (var, g) in enumerate(zip(variables, grads)):
        if not isinstance(g, tf.IndexedSlices):
            continue
        indices, rows = tf.cast(g.indices, tf.int64), _shape(var)[0]
        where = f"grads[{i}]" if names is None else names[i]
        checks += [
            tf.debugging.assert_non_negative(indices, message=f"{where}: indices must lie in [0, rows), got a "
                                                              "negative index"),
            tf.debugging.assert_less(indices, rows, message=f"{where}: indices must lie in [0, rows) of the "
                                                            "variable"),
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
    for var, g in zip(variables, grads):
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
    grads = [g if isinstance(g, Rows) else _sum_rows(g) if isinstance(g, tf.IndexedSlices)
             else tf.convert_to_tensor(g) for g in grads]
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
    for g, s in zip(grads, scales):
        if isinstance(g, tf.IndexedSlices):
            out.append(tf.IndexedSlices(_scaled(g.values, s, g.values.dtype), g.indices, g.dense_shape))
        else:
            g = tf.convert_to_tensor(g)
            out.append(_scaled(g, s, g.dtype))
    return out, ok


def _scaled(g, scale, ct):
    g = tf.cast(g, ct)
    return g if scale is None else g * tf.cast(scale, ct)


def _decayed(p, lr64, wd, ct):
    # p = p - lr*wd*p  (decoupled weight decay, before the update; skipped when wd == 0)
    return p if not wd else p - p * tf.cast(lr64 * wd, ct)


def _run(ok, apply_fn):
    if ok is None:
        return apply_fn()
    return tf.cond(ok, lambda: tf.group([op for op in apply_fn() if op is not None]), tf.no_op)


def _apply(variables, grads, slot_lists, weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking, lazy,
           rule):
    """Runs ``rule(p, g, slots, wd, ct) -> (p, slots)`` on every variable and writes the results
    back: whole tensors, or for a :class:`Rows` gradient only its rows (gather, scatter).
    Every write waits for the index checks of every gradient: a bad index writes nothing."""
    with tf.control_dependencies(index_checks(variables, grads)):
        return _apply_checked(variables, grads, slot_lists, weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                              use_locking, lazy, rule)


def _apply_checked(variables, grads, slot_lists, weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                   use_locking, lazy, rule):
    grads, scales, ok = _prepare_gradients(_gradients(variables, grads, lazy), clipnorm, global_clipnorm,
                                           skip_nonfinite)

    def apply():
        ops = []
        for i, (var, g, scale, wd) in enumerate(zip(variables, grads, scales, weight_decay)):
            ct = _compute_dtype(var.dtype)
            slots = [lst[i] for lst in slot_lists if lst is not None]
            if isinstance(g, Rows):
                def read(x, rows=g.indices):
                    return tf.cast(tf.gather(_tf_variable(x), rows), ct)

                def write(x, value, rows=g.indices):
                    x = _tf_variable(x)
                    return x.scatter_update(tf.IndexedSlices(tf.cast(value, x.dtype), rows), use_locking=use_locking)
                g = g.values
            else:
                read = lambda x: _read(x, ct)  # noqa: E731
                write = lambda x, value: _write(x, value, use_locking)  # noqa: E731
            p, new_slots = rule(read(var), _scaled(g, scale, ct), [read(s) for s in slots], wd, ct)
            ops += [write(s, value) for s, value in zip(slots, new_slots)]
            ops.append(write(var, p))
        return ops

    return _run(ok, apply)


def gradient_descent_multi(variables, grads, *, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                           use_locking, lazy=False):
    """p = p - lr*wd*p - lr*g  for every variable."""
    lr64 = _scalar64(lr)

    def rule(p, g, slots, wd, ct):
        return _decayed(p, lr64, wd, ct) - g * tf.cast(lr64, ct), []

    return _apply(variables, grads, [], weight_decay, clipnorm, global_clipnorm, skip_nonfinite, use_locking, lazy,
                  rule)


def momentum_multi(variables, grads, velocities, *, lr, momentum, nesterov, weight_decay, clipnorm, global_clipnorm,
                   skip_nonfinite, use_locking, lazy=False):
    """m = mu*m - lr*g;  p = p - lr*wd*p + m  (nesterov: + mu*m - lr*g)."""
    lr64 = _scalar64(lr)

    def rule(p, g, slots, wd, ct):
        lr_c, mu = tf.cast(lr64, ct), tf.cast(_scalar64(momentum), ct)
        m = slots[0] * mu - g * lr_c
        p = _decayed(p, lr64, wd, ct)
        return (p + (m * mu - g * lr_c) if nesterov else p + m), [m]

    return _apply(variables, grads, [velocities], weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                  use_locking, lazy, rule)


def adam_multi(variables, grads, ms, vs, *, lr, beta_1, beta_2, epsilon, step, vhats, weight_decay, clipnorm,
               global_clipnorm, skip_nonfinite, use_locking, lazy=False):
    """alpha = lr*sqrt(1-b2^t)/(1-b1^t); m += (g-m)*(1-b1); v += (g^2-v)*(1-b2);
    [vhat = max(vhat, v)]; p = p - lr*wd*p - alpha*m/(sqrt(v)+eps)."""
    lr64, t = _scalar64(lr), _scalar64(step)
    alpha64 = lr64 * tf.sqrt(1.0 - tf.pow(_scalar64(beta_2), t)) / (1.0 - tf.pow(_scalar64(beta_1), t))

    def rule(p, g, slots, wd, ct):
        m, v = slots[0], slots[1]
        m = m + (g - m) * tf.cast(_one_minus64(beta_1), ct)
        v = v + (g * g - v) * tf.cast(_one_minus64(beta_2), ct)
        new_slots = [m, v]
        if vhats is not None:
            v = tf.maximum(slots[2], v)
            new_slots.append(v)
        p = _decayed(p, lr64, wd, ct)
        return p - (m * tf.cast(alpha64, ct)) / (tf.sqrt(v) + tf.cast(_scalar64(epsilon), ct)), new_slots

    return _apply(variables, grads, [ms, vs, vhats], weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                  use_locking, lazy, rule)
