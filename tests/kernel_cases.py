"""Shared helpers of the kernel tests: random inputs, and one way to call each NumPy kernel.

Rules are named as the cases of ``reference.SLOTS``: a row of the rule table (:func:`table_row`)
with some of its optional slots given: ``adam_amsgrad`` (Adam with a ``vhat`` slot),
``rmsprop_momentum``, ``rmsprop_centered`` and ``rmsprop_centered_momentum`` (RMSprop with a
``momentum_buffer``, an ``average_gradient`` or both), and every other row by its name
(``adamw``, an alias of ALIASES, too). ``call``/``call_multi`` take the same arguments as
``reference.step``/``reference.step_multi``, so a test can run both sides with one set of
keyword arguments; they reach each rule's function through its table row (its name, its
slots: required ones positional, optional ones by keyword).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from reference import SLOTS, nadam_u_product, slot_names

from pyopt import kernels
from pyopt._rules import RULES

DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}

# The table row of each case that is not a row's name.
ROWS = {
    "adam_amsgrad": "adam",
    "rmsprop_momentum": "rmsprop",
    "rmsprop_centered": "rmsprop",
    "rmsprop_centered_momentum": "rmsprop",
}

# Typical hyperparameters of each case (no options); a step's own (step, u_product) set by at_step.
HYPER = {
    "gradient_descent": dict(lr=0.1),
    "momentum": dict(lr=0.05, momentum=0.9),
    "adam": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1),
    "adam_amsgrad": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1),
    "adamw": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1),
    "adagrad": dict(lr=0.05, epsilon=1e-7),
    "rmsprop": dict(lr=0.01, rho=0.9, epsilon=1e-7),
    "rmsprop_momentum": dict(lr=0.01, rho=0.9, momentum=0.9, epsilon=1e-7),
    "rmsprop_centered": dict(lr=0.01, rho=0.9, epsilon=1e-7),
    "rmsprop_centered_momentum": dict(lr=0.01, rho=0.9, momentum=0.9, epsilon=1e-7),
    "adamax": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1),
    "nadam": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=1, u_product=nadam_u_product(1)),
    "lion": dict(lr=0.01, beta_1=0.9, beta_2=0.99),
}
# The cases of reference.SLOTS whose rule counts steps (bias corrections, Nadam's schedule).
STEPPED = [rule for rule in SLOTS if "step" in HYPER[rule]]


def at_step(rule: str, hyper: dict, step: int) -> dict:
    """``hyper`` at step ``step``: for Nadam also ``u_product = u_1*...*u_t`` of its beta_1."""
    hyper = dict(hyper, step=step)
    if "u_product" in hyper:
        hyper["u_product"] = nadam_u_product(step, hyper.get("beta_1", 0.9))
    return hyper


def random_state(rule: str, shape, dtype, rng: np.random.Generator) -> tuple:
    """``(param, grad, slots)`` in ``dtype``: values of order 1, slots as after a few steps:
    momenta (velocity, m, momentum_buffer) of either sign, second moments (v, RMSprop's
    velocity, Adagrad's accumulator) >= 0, vhat >= v on half the elements, Adamax's u >= 0,
    RMSprop's average gradient a with a*a <= 0.81*v (so that v - a*a > 0 stays so: it is
    rho*(v - a*a) + rho*(1 - rho)*(a - g)**2 after a step)."""
    dtype = np.dtype(dtype)
    param = rng.standard_normal(shape)
    grad = rng.standard_normal(shape)
    slots = {}
    names = slot_names(rule)
    for name in names:
        if name == "m" or (name == "velocity" and not rule.startswith("rmsprop")):
            slots[name] = 0.1 * rng.standard_normal(shape)
        elif name in ("v", "velocity"):
            slots[name] = 0.01 * rng.standard_normal(shape) ** 2
        elif name == "vhat":
            slots[name] = slots["v"] + 0.01 * np.maximum(rng.standard_normal(shape), 0.0) ** 2
        elif name == "accumulator":
            slots[name] = 0.1 * rng.standard_normal(shape) ** 2
        elif name == "momentum_buffer":
            slots[name] = 0.01 * rng.standard_normal(shape)
        elif name == "average_gradient":
            slots[name] = np.sqrt(slots["velocity"]) * rng.uniform(-0.9, 0.9, shape)
        else:  # u
            slots[name] = np.abs(rng.standard_normal(shape))
    cast = lambda a: np.array(a, dtype=dtype, order="C")
    return cast(param), cast(grad), [cast(slots[name]) for name in names]


def table_row(rule: str):
    """The rule table's row of a case of reference.SLOTS (or of an alias)."""
    return RULES[ROWS.get(rule, rule)]


def slot_arguments(rule: str, slots, keyword) -> tuple:
    """``(positional, keywords)``: the row's required slots in order, then each optional one of
    the case (``slots`` in reference.SLOTS order) by ``keyword(slot)`` (its name or its list)."""
    row = table_row(rule)
    given = dict(zip(slot_names(rule), slots, strict=True))
    positional = [given[slot.name] for slot in row.required_slots]
    return positional, {keyword(slot): given[slot.name] for slot in row.slots if slot.optional and slot.name in given}


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
    return call_multi_lists(rule, params, grads, [[s[k] for s in slots] for k in range(len(slot_names(rule)))], **kw)


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
