"""Float64 NumPy reference of every pyopt update rule (Keras 3 formulas), for the tests.

Written from the formulas, independently of the C++ core. Every function takes arrays of
any float dtype, computes in float64 and returns new float64 arrays (inputs untouched):

    clip by norm      g = g * c / max(||g||_2, c)          (Keras ``clip_by_norm``)
    weight decay      p = p - lr*wd*p                      (decoupled, before the update)
    gradient descent  p = p - lr*g
    momentum          m = mu*m - lr*g;  p = p + m          (nesterov: p = p + mu*m - lr*g)
    Adam              alpha = lr*sqrt(1 - b2**t) / (1 - b1**t)
                      m = m + (g - m)*(1 - b1);  v = v + (g*g - v)*(1 - b2)
                      vhat = max(vhat, v) (amsgrad; used in place of v)
                      p = p - alpha*m / (sqrt(v) + eps)

``step`` applies one rule by name to one tensor, ``step_multi`` to a list of tensors with
``global_clipnorm`` and per-tensor weight decay, the way the ``*_multi`` kernels do.
NaN/Inf propagate exactly as NumPy float64 arithmetic does (warnings silenced).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Slot names of each rule, in the order the kernels take them.
SLOTS = {
    "gradient_descent": (),
    "momentum": ("velocity",),
    "adam": ("m", "v"),
    "adam_amsgrad": ("m", "v", "vhat"),
}


def _f64(x) -> np.ndarray:
    return np.array(x, dtype=np.float64)  # always a copy


def clip_scale(sum_of_squares: float, clipnorm: float | None) -> float:
    """The factor ``c / max(sqrt(sum_of_squares), c)`` (1 when ``clipnorm`` is None)."""
    if clipnorm is None:
        return 1.0
    with np.errstate(all="ignore"):
        return float(clipnorm / np.maximum(np.sqrt(sum_of_squares), clipnorm))


def clip_by_norm(grad, clipnorm: float | None) -> np.ndarray:
    """``g * c / max(||g||_2, c)`` in float64."""
    g = _f64(grad)
    with np.errstate(all="ignore"):
        return g * clip_scale(np.sum(g * g), clipnorm)


def gradient_descent(param, grad, *, lr, weight_decay=0.0, clipnorm=None):
    """Returns the new param: ``p = p - lr*wd*p - lr*clip(g)``."""
    p, g = _f64(param), clip_by_norm(grad, clipnorm)
    with np.errstate(all="ignore"):
        if weight_decay:
            p = p - lr * weight_decay * p
        return p - lr * g


def momentum(param, grad, velocity, *, lr, momentum, nesterov=False, weight_decay=0.0, clipnorm=None):
    """Returns ``(param, velocity)``: ``m = mu*m - lr*g``; ``p = p - lr*wd*p + m`` (or ``+ mu*m - lr*g``)."""
    p, g, m = _f64(param), clip_by_norm(grad, clipnorm), _f64(velocity)
    with np.errstate(all="ignore"):
        m = momentum * m - lr * g
        if weight_decay:
            p = p - lr * weight_decay * p
        p = p + (momentum * m - lr * g if nesterov else m)
    return p, m


def adam(
    param, grad, m, v, vhat=None, *, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step, weight_decay=0.0, clipnorm=None
):
    """Returns ``(param, m, v)``, or ``(param, m, v, vhat)`` when ``vhat`` is given (amsgrad)."""
    p, g, m, v = _f64(param), clip_by_norm(grad, clipnorm), _f64(m), _f64(v)
    alpha = lr * np.sqrt(1.0 - beta_2**step) / (1.0 - beta_1**step)
    with np.errstate(all="ignore"):
        m = m + (g - m) * (1.0 - beta_1)
        v = v + (g * g - v) * (1.0 - beta_2)
        denominator_v = v
        if vhat is not None:
            vhat = np.maximum(_f64(vhat), v)
            denominator_v = vhat
        if weight_decay:
            p = p - lr * weight_decay * p
        p = p - alpha * m / (np.sqrt(denominator_v) + epsilon)
    return (p, m, v) if vhat is None else (p, m, v, vhat)


_RULES = {"gradient_descent": gradient_descent, "momentum": momentum, "adam": adam, "adam_amsgrad": adam}


def step(rule: str, param, grad, slots: Sequence = (), **hyper) -> tuple:
    """One step of ``rule`` (a key of SLOTS); returns ``(param, *slots)`` in float64."""
    out = _RULES[rule](param, grad, *slots, **hyper)
    return out if isinstance(out, tuple) else (out,)


def step_multi(
    rule: str, params, grads, slots=None, *, global_clipnorm=None, clipnorm=None, weight_decay=0.0, **hyper
) -> list:
    """One step over many tensors; ``slots[i]`` are tensor i's slots, ``weight_decay`` one value or a list.

    ``global_clipnorm=c`` scales every gradient by ``c / max(sqrt(sum_i ||g_i||^2), c)``.
    Returns a list of ``(param, *slots)`` tuples.
    """
    n = len(params)
    slots = slots if slots is not None else [()] * n
    decays = list(weight_decay) if isinstance(weight_decay, (list, tuple)) else [weight_decay] * n
    scale = 1.0
    if global_clipnorm is not None:
        with np.errstate(all="ignore"):
            total = sum(float(np.sum(_f64(g) ** 2)) for g in grads)
        scale = clip_scale(total, global_clipnorm)
    out = []
    for p, g, s, wd in zip(params, grads, slots, decays):
        with np.errstate(all="ignore"):
            g = _f64(g) * scale
        out.append(step(rule, p, g, s, clipnorm=clipnorm, weight_decay=wd, **hyper))
    return out


def param_operand_scale(
    rule: str,
    grad,
    slots_before: Sequence,
    slots_after: Sequence,
    *,
    lr,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    step=1,
    **_,
) -> float:
    """Magnitude of the operands of the param update, other than the param itself.

    A working-precision evaluation rounds each operand, so the new param's error is relative
    to them, not only to the param: ``lr*|g|``; for momentum ``|m|`` before and after; for
    Adam ``alpha*(|m_old| + |g|)/(sqrt(v)+eps)``, since rounding ``m + (g - m)*(1 - b1)``
    leaves an error ``~eps*(|m_old| + |g|)`` even where the new m is far smaller (it cancels
    when beta_1 is near 0), and the step divides it by ``sqrt(v)+eps`` (v or vhat, after the
    update: ``slots_after[-1]``). ``grad`` is the unclipped gradient (clipping only shrinks it).
    """
    g = np.abs(_f64(grad))
    if g.size == 0:
        return 0.0
    scale = lr * float(np.max(g))
    if rule == "momentum":
        scale = max(scale, *(float(np.max(np.abs(_f64(x)))) for x in (slots_before[0], slots_after[0])))
    elif rule.startswith("adam"):
        alpha = lr * np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
        with np.errstate(all="ignore"):
            den = np.sqrt(_f64(slots_after[-1])) + epsilon
            scale = max(scale, float(np.max(alpha * (np.abs(_f64(slots_before[0])) + g) / den)))
    return scale
