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
    AdamW             Adam with a weight decay of 0.004 unless given
    Adagrad           acc = acc + g*g;  p = p - lr*g / sqrt(acc + eps)
    RMSprop           v = rho*v + (1 - rho)*g*g
                      a = rho*a + (1 - rho)*g              (centered; d = v - a*a + eps)
                      inc = lr*g / sqrt(d)                 (d = v + eps when not centered)
                      b = mu*b + inc;  p = p - b           (with a momentum buffer b)
                      p = p - inc                          (without)
    Adamax            m = m + (g - m)*(1 - b1);  u = max(b2*u, |g|)
                      p = p - lr/(1 - b1**t) * m / (u + eps)
    Nadam             u_t = b1*(1 - 0.5*0.96**t);  u_next = b1*(1 - 0.5*0.96**(t+1))
                      m, v as Adam's;  P = u_1*...*u_t (the running product, ``u_product``)
                      m_hat = u_next*m / (1 - P*u_next) + (1 - u_t)*g / (1 - P)
                      p = p - lr*m_hat / (sqrt(v / (1 - b2**t)) + eps)
    Lion              p = p - lr*sign(b1*m + (1 - b1)*g);  m = b2*m + (1 - b2)*g

``step`` applies one rule by name to one tensor, ``step_multi`` to a list of tensors with
``global_clipnorm`` and per-tensor weight decay, the way the ``*_multi`` kernels do.
NaN/Inf propagate exactly as NumPy float64 arithmetic does (warnings silenced).

Lion's sign is discontinuous: where ``b1*m + (1 - b1)*g`` is within rounding error of 0, a
float32 evaluation may legitimately take another sign than float64 (see :func:`lion_ties`).
Given the param a kernel wrote (``ties=``), the reference takes, on those elements only,
the sign in {-1, 0, 1} nearest to it, and counts them in ``SIGN_TIES``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

# Slot names of each case, in the order the tests hold them: the rule's required slots, then
# the optional ones given (as keywords, in the rule's order).
SLOTS = {
    "gradient_descent": (),
    "momentum": ("velocity",),
    "adam": ("m", "v"),
    "adam_amsgrad": ("m", "v", "vhat"),
    "adagrad": ("accumulator",),
    "rmsprop": ("velocity",),
    "rmsprop_momentum": ("velocity", "momentum_buffer"),
    "rmsprop_centered": ("velocity", "average_gradient"),
    "rmsprop_centered_momentum": ("velocity", "momentum_buffer", "average_gradient"),
    "adamax": ("m", "u"),
    "nadam": ("m", "v"),
    "lion": ("m",),
}
# Rules that are another case's maths with defaults of their own (not in SLOTS: the case covers them).
ALIASES = {"adamw": "adam"}

# Lion's tie elements seen by the reference: "calls" with ties=, "elements" taken from the kernel.
SIGN_TIES: Counter = Counter()
# A direction within this many eps (of the kernel's compute dtype) of 0, relative to its terms, is a tie.
TIE_ULPS = 4.0
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def slot_names(rule: str) -> tuple:
    """The slots of a case of SLOTS or of an alias of ALIASES."""
    return SLOTS[ALIASES.get(rule, rule)]


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


def _decayed(p, lr, weight_decay):
    return p - lr * weight_decay * p if weight_decay else p


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


def adamw(param, grad, m, v, vhat=None, *, weight_decay=0.004, **hyper):
    """Adam with Keras's AdamW default weight decay (0.004)."""
    return adam(param, grad, m, v, vhat, weight_decay=weight_decay, **hyper)


def adagrad(param, grad, accumulator, *, lr, epsilon=1e-7, weight_decay=0.0, clipnorm=None):
    """Returns ``(param, accumulator)``: ``acc = acc + g*g``; ``p = p - lr*wd*p - lr*g/sqrt(acc + eps)``."""
    p, g, acc = _f64(param), clip_by_norm(grad, clipnorm), _f64(accumulator)
    with np.errstate(all="ignore"):
        acc = acc + g * g
        p = _decayed(p, lr, weight_decay) - lr * g / np.sqrt(acc + epsilon)
    return p, acc


def rmsprop(
    param,
    grad,
    velocity,
    momentum_buffer=None,
    average_gradient=None,
    *,
    lr,
    rho=0.9,
    momentum=0.0,
    epsilon=1e-7,
    weight_decay=0.0,
    clipnorm=None,
):
    """Returns ``(param, velocity)`` and, when given, the new ``momentum_buffer`` and
    ``average_gradient`` (in that order). Keras keeps a momentum buffer only when momentum > 0:
    a momentum without one is refused here too."""
    if momentum_buffer is None and momentum != 0:
        raise ValueError(f"momentum {momentum} without a momentum buffer")
    p, g, v = _f64(param), clip_by_norm(grad, clipnorm), _f64(velocity)
    out = []
    with np.errstate(all="ignore"):
        v = rho * v + (1.0 - rho) * g * g
        if average_gradient is not None:
            a = rho * _f64(average_gradient) + (1.0 - rho) * g
            denominator = v - a * a + epsilon
        else:
            denominator = v + epsilon
        increment = lr * g / np.sqrt(denominator)
        if momentum_buffer is not None:
            increment = momentum * _f64(momentum_buffer) + increment
            out.append(increment)
        if average_gradient is not None:
            out.append(a)
        p = _decayed(p, lr, weight_decay) - increment
    return (p, v, *out)


def adamax(param, grad, m, u, *, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step, weight_decay=0.0, clipnorm=None):
    """Returns ``(param, m, u)``: ``m = m + (g-m)*(1-b1)``; ``u = max(b2*u, |g|)`` (NaN wins, as
    tf.maximum); ``p = p - lr*wd*p - lr/(1-b1**t) * m/(u + eps)``."""
    p, g, m, u = _f64(param), clip_by_norm(grad, clipnorm), _f64(m), _f64(u)
    with np.errstate(all="ignore"):
        m = m + (g - m) * (1.0 - beta_1)
        u = np.maximum(beta_2 * u, np.abs(g))
        p = _decayed(p, lr, weight_decay) - lr / (1.0 - beta_1**step) * m / (u + epsilon)
    return p, m, u


def nadam_u(step, beta_1=0.9) -> float:
    """Nadam's momentum schedule ``u_t = b1*(1 - 0.5*0.96**t)``."""
    return beta_1 * (1.0 - 0.5 * 0.96**step)


def nadam_u_product(step, beta_1=0.9) -> float:
    """``u_1*...*u_t``, the running product as Keras keeps it (from 1.0, times u_t each step)."""
    product = 1.0
    for t in range(1, step + 1):
        product *= nadam_u(t, beta_1)
    return product


def nadam(
    param, grad, m, v, *, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step, u_product, weight_decay=0.0, clipnorm=None
):
    """Returns ``(param, m, v)``; ``u_product`` is u_1*...*u_t, this step's u_t included."""
    p, g, m, v = _f64(param), clip_by_norm(grad, clipnorm), _f64(m), _f64(v)
    u_t, u_next = nadam_u(step, beta_1), nadam_u(step + 1, beta_1)
    with np.errstate(all="ignore"):
        m = m + (g - m) * (1.0 - beta_1)
        v = v + (g * g - v) * (1.0 - beta_2)
        m_hat = u_next * m / (1.0 - u_product * u_next) + (1.0 - u_t) * g / (1.0 - u_product)
        v_hat = v / (1.0 - beta_2**step)
        p = _decayed(p, lr, weight_decay) - lr * m_hat / (np.sqrt(v_hat) + epsilon)
    return p, m, v


def lion_ties(grad, m, *, beta_1=0.9, clipnorm=None, eps=FLOAT32_EPS, **_) -> np.ndarray:
    """The elements where Lion's direction ``c = b1*m + (1-b1)*g`` is a tie: ``|c| <
    TIE_ULPS*eps*(|b1*m| + |(1-b1)*g|)`` in float64. A kernel evaluating c with precision
    ``eps`` rounds each product and the sum (and b1, 1-b1, the clipped g), an error of at most
    ~2.5 eps of the terms: there its sign may differ from float64's. Exact zeros (both terms
    0) are no ties (sign 0 on every side)."""
    g, m = clip_by_norm(grad, clipnorm), _f64(m)
    with np.errstate(all="ignore"):
        c = beta_1 * m + (1.0 - beta_1) * g
        return np.abs(c) < TIE_ULPS * eps * (np.abs(beta_1 * m) + np.abs((1.0 - beta_1) * g))


def lion(param, grad, m, *, lr, beta_1=0.9, beta_2=0.99, weight_decay=0.0, clipnorm=None, ties=None):
    """Returns ``(param, m)``: ``p = p - lr*wd*p - lr*sign(b1*m + (1-b1)*g)``; ``m = b2*m + (1-b2)*g``.

    ``ties``: the param a kernel wrote from these inputs; on the tie elements of
    :func:`lion_ties` (eps of the kernel's maths: float64 for float64 arrays, else float32)
    the sign is the one of {-1, 0, 1} whose param is nearest to it. At most 1 in 1000 elements
    (plus one) may be ties: random inputs have far fewer.
    """
    p, g, m_old = _f64(param), clip_by_norm(grad, clipnorm), _f64(m)
    with np.errstate(all="ignore"):
        direction = np.sign(beta_1 * m_old + (1.0 - beta_1) * g)
        p = _decayed(p, lr, weight_decay)
        if ties is not None:
            ties = np.asarray(ties)
            eps = np.finfo(np.float64 if ties.dtype == np.float64 else np.float32).eps
            tie = lion_ties(g, m_old, beta_1=beta_1, eps=float(eps))
            SIGN_TIES["calls"] += 1
            SIGN_TIES["elements"] += int(tie.sum())
            assert tie.sum() <= 1 + tie.size // 1000, f"{tie.sum()} of {tie.size} Lion directions are ties"
            if tie.any():
                written = ties.astype(np.float64)[tie]
                signs = np.array([-1.0, 0.0, 1.0])
                candidates = p[tie][:, None] - lr * signs
                direction[tie] = signs[np.argmin(np.abs(candidates - written[:, None]), axis=1)]
        p = p - lr * direction
        m_new = beta_2 * m_old + (1.0 - beta_2) * g
    return p, m_new


_RULES = {
    "gradient_descent": gradient_descent,
    "momentum": momentum,
    "adam": adam,
    "adam_amsgrad": adam,
    "adamw": adamw,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "rmsprop_momentum": rmsprop,
    "rmsprop_centered": rmsprop,
    "rmsprop_centered_momentum": rmsprop,
    "adamax": adamax,
    "nadam": nadam,
    "lion": lion,
}


def step(rule: str, param, grad, slots: Sequence = (), *, ties=None, **hyper) -> tuple:
    """One step of ``rule`` (a key of SLOTS or ALIASES); returns ``(param, *slots)`` in float64.

    ``ties``: the param the kernel under test wrote, for Lion's sign ties (ignored by the others).
    """
    if rule == "lion":
        hyper["ties"] = ties
    out = _RULES[rule](param, grad, **dict(zip(slot_names(rule), slots, strict=True)), **hyper)
    return out if isinstance(out, tuple) else (out,)


def step_multi(
    rule: str, params, grads, slots=None, *, global_clipnorm=None, clipnorm=None, weight_decay=None, ties=None, **hyper
) -> list:
    """One step over many tensors; ``slots[i]`` are tensor i's slots, ``weight_decay`` one value or
    a list (None: the rule's default), ``ties`` (Lion) the params the kernel wrote.

    ``global_clipnorm=c`` scales every gradient by ``c / max(sqrt(sum_i ||g_i||^2), c)``.
    Returns a list of ``(param, *slots)`` tuples.
    """
    n = len(params)
    slots = slots if slots is not None else [()] * n
    decays = list(weight_decay) if isinstance(weight_decay, (list, tuple)) else [weight_decay] * n
    ties = ties if ties is not None else [None] * n
    scale = 1.0
    if global_clipnorm is not None:
        with np.errstate(all="ignore"):
            total = sum(float(np.sum(_f64(g) ** 2)) for g in grads)
        scale = clip_scale(total, global_clipnorm)
    out = []
    for p, g, s, wd, written in zip(params, grads, slots, decays, ties, strict=True):
        with np.errstate(all="ignore"):
            g = _f64(g) * scale
        decay = {} if wd is None else dict(weight_decay=wd)
        out.append(step(rule, p, g, s, clipnorm=clipnorm, ties=written, **decay, **hyper))
    return out


def param_operand_scale(rule: str, grad, slots_before: Sequence, slots_after: Sequence, *, lr, **hyper) -> float:
    """Magnitude of the operands of the param update, other than the param itself.

    A working-precision evaluation rounds each operand, so the new param's error is relative
    to them, not only to the param. ``grad`` is the unclipped gradient (clipping only shrinks
    it); the slots in SLOTS order. The largest over the elements of ``lr*|g|`` and, per rule:

    - momentum: ``|m|`` before and after (p sums m).
    - Adam (AdamW): ``alpha*(|m_old| + |g|)/(sqrt(v)+eps)``, since rounding ``m + (g - m)*(1 - b1)``
      leaves an error ``~eps*(|m_old| + |g|)`` even where the new m is far smaller (it cancels
      when beta_1 is near 0), and the step divides it by ``sqrt(v)+eps`` (v or vhat, after the
      update: ``slots_after[-1]``).
    - Adamax: the same m, divided by ``u + eps`` (u after the update), times ``lr/(1 - b1**t)``.
    - Nadam: ``(cm*(|m_old| + |g|) + cg*|g|)/(sqrt(v/(1 - b2**t)) + eps)`` with the step's
      coefficients ``cm = lr*u_next/(1 - P*u_next)``, ``cg = lr*(1 - u_t)/(1 - P)``: m's error as
      Adam's, and the rounding of the sum ``cm*m + cg*g``.
    - Adagrad: the step ``lr*|g|/sqrt(acc + eps)`` (acc after; a sum of squares, no cancellation).
    - RMSprop: the increment ``inc = lr*|g|/sqrt(d)``, ``d = v + eps``, times ``D/d`` where ``D``
      bounds the operands of d: ``v + eps`` (no cancellation), centered ``v + a^2 +
      2|a|*(rho*|a_old| + (1 - rho)|g|) + eps``, since rounding v, a (a sum that may cancel) and
      ``a*a`` leaves an error ``~eps*D`` in ``d = v - a^2 + eps``, which may be far smaller, and
      sqrt(d) passes half of it on relative to inc; with a momentum buffer also ``|b|`` before
      and after (p moves by ``b = mu*b + inc``).
    - Lion: ``lr`` (the step is ``lr*sign(...)``).
    """
    g = np.abs(_f64(grad))
    if g.size == 0:
        return 0.0
    case = ALIASES.get(rule, rule)
    before = {name: np.abs(_f64(x)) for name, x in zip(SLOTS[case], slots_before, strict=True)}
    after = {name: _f64(x) for name, x in zip(SLOTS[case], slots_after, strict=True)}
    beta_1, beta_2, eps = hyper.get("beta_1", 0.9), hyper.get("beta_2", 0.999), hyper.get("epsilon", 1e-7)
    t = hyper.get("step", 1)
    terms = [lr * g]
    with np.errstate(all="ignore"):
        if case == "momentum":
            terms += [before["velocity"], np.abs(after["velocity"])]
        elif case in ("adam", "adam_amsgrad"):
            alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
            terms.append(alpha * (before["m"] + g) / (np.sqrt(_f64(slots_after[-1])) + eps))
        elif case == "adamax":
            terms.append(lr / (1 - beta_1**t) * (before["m"] + g) / (after["u"] + eps))
        elif case == "nadam":
            u_t, u_next, product = nadam_u(t, beta_1), nadam_u(t + 1, beta_1), hyper["u_product"]
            cm, cg = lr * u_next / (1 - product * u_next), lr * (1 - u_t) / (1 - product)
            v_hat = after["v"] / (1 - beta_2**t)
            terms.append((cm * (before["m"] + g) + cg * g) / (np.sqrt(v_hat) + eps))
        elif case == "adagrad":
            terms.append(lr * g / np.sqrt(after["accumulator"] + eps))
        elif case.startswith("rmsprop"):
            rho, v = hyper.get("rho", 0.9), after["velocity"]
            d = operands = v + eps
            if "average_gradient" in after:
                a = after["average_gradient"]
                d = v - a * a + eps
                operands = v + a * a + 2 * np.abs(a) * (rho * before["average_gradient"] + (1 - rho) * g) + eps
            terms.append(lr * g / np.sqrt(d) * operands / d)
            if "momentum_buffer" in after:
                terms += [before["momentum_buffer"], np.abs(after["momentum_buffer"])]
        elif case == "lion":
            terms.append(np.full_like(g, lr))
    return max(float(np.max(x)) for x in terms)
