"""Shared helpers of the kernel tests: random inputs, and one way to call each NumPy kernel.

Rules are named as in ``reference.SLOTS``: ``gradient_descent``, ``momentum``, ``adam`` and
``adam_amsgrad`` (Adam with a ``vhat`` slot), each a row of the rule table
(:func:`table_row`). ``call``/``call_multi`` take the same arguments as
``reference.step``/``reference.step_multi``, so a test can run both sides with one set of
keyword arguments; they reach each rule's function through its table row (its name, its
slots: required ones positional, an optional one by keyword).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from reference import SLOTS

from pyopt import kernels
from pyopt._rules import RULES

DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}

# Typical hyperparameters of each rule (no options).
HYPER = {
    "gradient_descent": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "adam": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1),
    "adam_amsgrad": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1),
}


def random_state(rule: str, shape, dtype, rng: np.random.Generator) -> tuple:
    """``(param, grad, slots)`` in ``dtype``: values of order 1, slots as after a few steps
    (velocity/m of either sign, v >= 0, vhat >= v on half the elements)."""
    dtype = np.dtype(dtype)
    param = rng.standard_normal(shape)
    grad = rng.standard_normal(shape)
    slots = []
    for name in SLOTS[rule]:
        if name in ("velocity", "m"):
            slots.append(0.1 * rng.standard_normal(shape))
        elif name == "v":
            slots.append(0.01 * rng.standard_normal(shape) ** 2)
        else:  # vhat
            slots.append(slots[1] + 0.01 * np.maximum(rng.standard_normal(shape), 0.0) ** 2)
    cast = lambda a: np.array(a, dtype=dtype, order="C")
    return cast(param), cast(grad), [cast(s) for s in slots]


def table_row(rule: str):
    """The rule table's row of a rule of reference.SLOTS."""
    return RULES["adam" if rule == "adam_amsgrad" else rule]


def slot_arguments(rule: str, slots, keyword) -> tuple:
    """``(positional, keywords)``: the required slots in order, then each optional one given
    (those of ``slots`` past the required ones) by ``keyword(slot)`` (its name or its list)."""
    row = table_row(rule)
    n = len(row.required_slots)
    return list(slots[:n]), {keyword(slot): x for slot, x in zip(row.slots[n:], slots[n:], strict=False)}


def call(rule: str, param, grad, slots=(), **kw) -> bool:
    """Runs the single-tensor NumPy kernel of ``rule`` in place."""
    positional, optional = slot_arguments(rule, slots, lambda slot: slot.name)
    return getattr(kernels, table_row(rule).name)(param, grad, *positional, **optional, **kw)


def call_sparse(rule: str, param, values, indices, slots=(), **kw) -> bool:
    """Runs the row-sparse NumPy kernel of ``rule`` in place."""
    positional, optional = slot_arguments(rule, slots, lambda slot: slot.name)
    return getattr(kernels, f"{table_row(rule).name}_sparse")(param, values, indices, *positional, **optional, **kw)


def call_multi(rule: str, params, grads, slots=None, **kw) -> bool:
    """Runs the multi-tensor NumPy kernel; ``slots[i]`` are tensor i's slots."""
    slots = slots if slots is not None else [()] * len(params)
    return call_multi_lists(rule, params, grads, [[s[k] for s in slots] for k in range(len(SLOTS[rule]))], **kw)


def call_multi_lists(rule: str, params, grads, per_slot, **kw) -> bool:
    """Runs the multi-tensor NumPy kernel; ``per_slot[k]`` is the list of slot k of every tensor."""
    positional, optional = slot_arguments(rule, per_slot, lambda slot: slot.list)
    return getattr(kernels, f"{table_row(rule).name}_multi")(params, grads, *positional, **optional, **kw)


def copies(arrays) -> list:
    """Deep copies of a (nested) list of arrays, for 'unchanged afterwards' checks."""
    return [copies(a) if isinstance(a, (list, tuple)) else np.array(a, copy=True) for a in arrays]


def same_bits(a, b) -> bool:
    """Bitwise equality (NaN payloads included) of two arrays of one dtype."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
