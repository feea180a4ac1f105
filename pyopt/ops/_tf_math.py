"""The update rules composed from plain TensorFlow ops: the fallback backend and the reference.

This is the chapter's way of writing an optimizer: a few elementwise TF ops per variable,
assigned back. It runs anywhere TensorFlow runs, inside ``tf.function`` and under XLA
(``jit_compile=True``). Per-step scalars are computed in float64 and rounded once, and
float16/bfloat16 variables are updated with float32 maths, as the compiled kernels do.

Signatures are those of :mod:`pyopt.ops._fused` (see :mod:`pyopt.ops`).
"""

from __future__ import annotations

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


def _scalar64(x):
    return tf.cast(x, tf.float64)


def _sum_of_squares(g):
    return tf.reduce_sum(tf.square(tf.cast(g, tf.float64)))


def _clip_factor(sum_of_squares, clip):
    """c / max(||g||, c), NaN if the norm is NaN (Keras semantics)."""
    norm = tf.sqrt(sum_of_squares)
    return clip / tf.maximum(norm, clip) + (norm - norm)


def _prepare_gradients(grads, clipnorm, global_clipnorm, skip_nonfinite):
    """Scale factors per gradient (float64) and whether the step should be applied."""
    grads = [tf.convert_to_tensor(g) for g in grads]
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


def gradient_descent_multi(variables, grads, *, lr, weight_decay, clipnorm, global_clipnorm, skip_nonfinite,
                           use_locking):
    """p = p - lr*wd*p - lr*g  for every variable."""
    grads, scales, ok = _prepare_gradients(grads, clipnorm, global_clipnorm, skip_nonfinite)
    lr64 = _scalar64(lr)

    def apply():
        ops = []
        for var, g, scale, wd in zip(variables, grads, scales, weight_decay):
            ct = _compute_dtype(var.dtype)
            p = _decayed(_read(var, ct), lr64, wd, ct)
            ops.append(_write(var, p - _scaled(g, scale, ct) * tf.cast(lr64, ct), use_locking))
        return ops

    return _run(ok, apply)


def momentum_multi(variables, grads, velocities, *, lr, momentum, nesterov, weight_decay, clipnorm, global_clipnorm,
                   skip_nonfinite, use_locking):
    """m = mu*m - lr*g;  p = p - lr*wd*p + m  (nesterov: + mu*m - lr*g)."""
    grads, scales, ok = _prepare_gradients(grads, clipnorm, global_clipnorm, skip_nonfinite)
    lr64 = _scalar64(lr)

    def apply():
        ops = []
        for var, g, vel, scale, wd in zip(variables, grads, velocities, scales, weight_decay):
            ct = _compute_dtype(var.dtype)
            lr_c, mu = tf.cast(lr64, ct), tf.constant(momentum, ct)
            g = _scaled(g, scale, ct)
            m = _read(vel, ct) * mu - g * lr_c
            p = _decayed(_read(var, ct), lr64, wd, ct)
            p = p + (m * mu - g * lr_c) if nesterov else p + m
            ops += [_write(vel, m, use_locking), _write(var, p, use_locking)]
        return ops

    return _run(ok, apply)


def adam_multi(variables, grads, ms, vs, *, lr, beta_1, beta_2, epsilon, step, vhats, weight_decay, clipnorm,
               global_clipnorm, skip_nonfinite, use_locking):
    """alpha = lr*sqrt(1-b2^t)/(1-b1^t); m += (g-m)*(1-b1); v += (g^2-v)*(1-b2);
    [vhat = max(vhat, v)]; p = p - lr*wd*p - alpha*m/(sqrt(v)+eps)."""
    grads, scales, ok = _prepare_gradients(grads, clipnorm, global_clipnorm, skip_nonfinite)
    lr64, t = _scalar64(lr), _scalar64(step)
    alpha64 = lr64 * tf.sqrt(1.0 - tf.pow(tf.constant(beta_2, tf.float64), t)) / (
        1.0 - tf.pow(tf.constant(beta_1, tf.float64), t)
    )
    vhats = vhats if vhats is not None else [None] * len(variables)

    def apply():
        ops = []
        for var, g, m_slot, v_slot, vh_slot, scale, wd in zip(variables, grads, ms, vs, vhats, scales, weight_decay):
            ct = _compute_dtype(var.dtype)
            g = _scaled(g, scale, ct)
            m = _read(m_slot, ct)
            v = _read(v_slot, ct)
            m = m + (g - m) * tf.constant(1.0 - beta_1, ct)
            v = v + (g * g - v) * tf.constant(1.0 - beta_2, ct)
            ops += [_write(m_slot, m, use_locking), _write(v_slot, v, use_locking)]
            if vh_slot is not None:
                v = tf.maximum(_read(vh_slot, ct), v)
                ops.append(_write(vh_slot, v, use_locking))
            p = _decayed(_read(var, ct), lr64, wd, ct)
            p = p - (m * tf.cast(alpha64, ct)) / (tf.sqrt(v) + tf.constant(epsilon, ct))
            ops.append(_write(var, p, use_locking))
        return ops

    return _run(ok, apply)
