"""The update rules, one row each: the one place every Python front end reads a rule from.

A row (:class:`Rule`) holds a rule's name, its hyperparameters (defaults, ranges), flags and
slots (which are optional, and the flag that gives them), the names of its fused TF ops and
of its ``pyopt._core`` functions, and its maths for the pure-TF backend: per-step scalars in
float64 and the elementwise update. It mirrors the rule's C++ trait
(``cpp/include/pyopt/rules/<rule>.h``): the same names, ranges and messages.

Checks of Python numbers live here once: :func:`check` (type and range of one value,
TypeError/ValueError starting with the argument's name) and :meth:`Param.error` (the C++
core's words, ``"beta_1 must be in [0, 1), got 1.5"``); :func:`dtype_error` words a
variable of an unsupported dtype. This module imports neither TensorFlow nor ``pyopt._core``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

# The dtypes every front end updates (float16/bfloat16 with float32 maths).
SUPPORTED_DTYPES = ("float16", "bfloat16", "float32", "float64")
_INT64_MAX = 2**63 - 1


def is_number(x) -> bool:
    """A real number (Python or NumPy scalar) that is not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _fmt(x: float) -> str:
    return f"{x:.17g}"  # the C++ core's fmt(): precision 17


def show(value) -> str:
    """``type: repr`` for messages, the repr cut to 80 characters."""
    try:
        text = repr(value)
    except Exception:  # e.g. an int too long for str()
        text = "..."
    return f"{type(value).__name__}: {text if len(text) <= 80 else text[:77] + '...'}"


def dtype_error(name: str, dtype_name: str) -> str | None:
    """ "variables[0] has dtype int32; supported: ..." (the words of pyopt._core), or None."""
    if dtype_name in SUPPORTED_DTYPES:
        return None
    return f"{name} has dtype {dtype_name}; supported: {', '.join(SUPPORTED_DTYPES)}"


@dataclass(frozen=True)
class Range:
    """Finite values from ``low`` to ``high`` (each end open or closed; ``high`` inf: no bound)."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    integer: bool = False  # an int64 in every front end (step)

    @property
    def text(self) -> str:
        """What a value must be: "a finite number >= 0", "in [0, 1)", "an integer >= 1"."""
        if self.high == math.inf:
            kind = "an integer" if self.integer else "a finite number"
            return f"{kind} {'>' if self.low_open else '>='} {_fmt(self.low)}"
        return f"in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}{')' if self.high_open else ']'}"

    def contains(self, x, both=lambda a, b: a and b):
        """Whether ``x`` (a float; a tensor with ``both=tf.logical_and``) lies in the range; False
        for NaN and, the ends being finite or open at inf, for +-inf."""
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return both(above, below)


def at_least(low):
    return Range(low)


def above(low):
    return Range(low, low_open=True)


def closed(low, high):
    return Range(low, high, high_open=False)


def closed_open(low, high):
    return Range(low, high)


def open_closed(low, high):
    return Range(low, high, low_open=True, high_open=False)


@dataclass(frozen=True)
class Param:
    """A hyperparameter: a float64 scalar in every front end (an int64 when its range is integer)."""

    name: str
    range: Range
    default: float | None = None  # None: the argument is required
    doc: str = ""
    optional: bool = False  # may be None (off): clipnorm
    needs: str | None = None  # the flag of an optional slot that a value other than 0 needs

    def error(self, x: float, name: str | None = None) -> str | None:
        """The message for a number outside the range (the core's words), else None."""
        if self.range.contains(x):
            return None
        return (
            f"{name or self.name} must be {self.range.text}{' (or None)' if self.optional else ''}, "
            f"got {_fmt(float(x))}"
        )


def check(param: Param, value, *, name: str | None = None, what: str | None = None):
    """``value`` as a float (an int for an integer range) if it is a number in ``param``'s
    range; else a TypeError (not a number; ``what`` it must be, by default "a real number" or
    "an int") or a ValueError (outside the range), both starting with ``name`` (default the
    parameter's). bool is not a number."""
    name = name or param.name
    if param.range.integer:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be {what or 'an int'}, got {show(value)}")
        if not -_INT64_MAX - 1 <= int(value) <= _INT64_MAX:
            raise ValueError(f"{name} must be an int in [{_fmt(param.range.low)}, 2**63 - 1], got {show(value)}")
        x = int(value)
    else:
        if not is_number(value):
            raise TypeError(f"{name} must be {what or 'a real number'}, got {show(value)}")
        try:
            x = float(value)
        except OverflowError:  # an int beyond the float64 range
            raise ValueError(f"{name} must be a finite number, got {show(value)}") from None
    error = param.error(x, name)
    if error:
        raise ValueError(error)
    return x


def check_flag(name: str, value) -> bool:
    """``bool(value)`` for a bool or ``numpy.bool_``, else a TypeError naming the flag."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {show(value)}")
    return bool(value)


# Every rule's first hyperparameter, and the rule-generic options.
LR = Param("lr", at_least(0), doc="learning rate")
WEIGHT_DECAY = Param("weight_decay", at_least(0), 0.0, "decoupled weight decay p -= lr*weight_decay*p")
CLIPNORM = Param("clipnorm", above(0), None, "clip each gradient by its own L2 norm", optional=True)
GLOBAL_CLIPNORM = Param("global_clipnorm", above(0), None, "clip all gradients by their joint L2 norm", optional=True)
# The Keras optimizers' own (clipping by value is theirs, not the kernels'; Adagrad's
# accumulators start at initial_accumulator_value, which the update does not take).
CLIPVALUE = Param(
    "clipvalue", at_least(0), None, "clip each gradient element to [-clipvalue, clipvalue]", optional=True
)
INITIAL_ACCUMULATOR = Param("initial_accumulator_value", at_least(0), 0.1, "Adagrad's accumulators' start")


@dataclass(frozen=True)
class Slot:
    """An array per variable, shaped like it: ``name`` is the TF op input and the single-tensor
    argument ("m"), ``list`` the ``*_multi`` argument ("ms"); ``given`` names the flag that an
    optional slot stands for (given for every variable or for none)."""

    name: str
    list: str
    doc: str = ""
    given: str | None = None

    @property
    def optional(self) -> bool:
        return self.given is not None


@dataclass(frozen=True)
class Rule:
    """One update rule. ``params`` start with ``lr`` (a ``default`` of None: the functions'
    keyword has no default); ``flags`` are bool attrs of the TF ops and keywords of the
    NumPy functions (default False). ``pyopt.kernels`` and ``pyopt.ops`` make their public
    functions, signatures and docstrings from the row (``title``, ``formula``, the docs of
    params and slots).

    ``scalars(h, s)``: the per-step scalars in float64 from the hyperparameters ``h`` (by
    name; numbers or tensors), with ``s`` the float64 scalar maths (:mod:`pyopt.ops._tf_math`);
    ``lr`` among them (the weight decay ``p = p - lr*wd*p`` uses it).
    ``update(p, g, slots, c, flags, m)``: the new ``(p, slots)`` of one tensor, ``p`` already
    weight-decayed, ``g`` clipped, ``slots`` the slots given (an optional one only when its
    flag is set), ``c`` the scalars in the compute dtype, ``flags`` by name (each optional
    slot's flag included), ``m`` the elementwise maths (``sqrt``, ``maximum``, ``sign``).

    ``core_name`` names the C++ trait that runs the rule when it is not ``name``: AdamW is
    Adam's kernels and ops with a ``weight_decay`` default of its own.
    """

    name: str  # "adam": the pyopt.ops / pyopt.kernels functions <name>[_multi|_sparse]
    short: str  # "gd": the benchmarks' and the chapter's name
    title: str  # the first words of the functions' docstrings: 'Adam ("epsilon hat" form, as Keras)'
    formula: str  # the update of one tensor, lines of plain text, for the docstrings
    params: tuple
    slots: tuple
    flags: tuple
    scalars: Callable
    update: Callable
    weight_decay: float = 0.0  # the functions' default
    core_name: str | None = None

    @property
    def param_names(self) -> tuple:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    @property
    def defaults(self) -> dict:
        return {p.name: p.default for p in self.params if p.default is not None}

    @property
    def required_slots(self) -> tuple:
        return tuple(s for s in self.slots if not s.optional)

    def needs_text(self, param: Param) -> str:
        """What a hyperparameter that needs an optional slot (:attr:`Param.needs`) must be
        without it, in the core's words: "momentum must be 0 when no momentum_buffers are given"."""
        slot = next(s for s in self.slots if s.given == param.needs)
        return f"{param.name} must be 0 when no {slot.list} are given"

    def slot_error(self, hyper: dict, flags: dict) -> str | None:
        """The core's message for a number other than 0 whose optional slot is not given
        (:attr:`Param.needs`; ``flags`` by name, each optional slot's included), else None."""
        for p in self.params:
            value = hyper.get(p.name)
            if p.needs and not flags[p.needs] and is_number(value) and value != 0:
                return f"{self.needs_text(p)}, got {_fmt(float(value))}"
        return None

    # The fused TF ops (cpp/tf/ops.cc): Pyopt>Apply<Rule>, Pyopt>Apply<Rule>Multi and
    # Pyopt>SparseApply<Rule>Multi, as TF names their generated Python wrappers.
    @property
    def fused_single_op(self) -> str:
        return f"pyopt_apply_{self.core}"

    @property
    def fused_op(self) -> str:
        return f"pyopt_apply_{self.core}_multi"

    @property
    def fused_sparse_op(self) -> str:
        return f"pyopt_sparse_apply_{self.core}_multi"

    @property
    def fused_ops(self) -> tuple:
        """Every op wrapper the rule's library defines (the loader checks them)."""
        return (self.fused_single_op, self.fused_op, self.fused_sparse_op)

    # pyopt._core (cpp/python/module.cpp): <name>(params, grads, *slot lists, ...),
    # <name>_sparse(params, values, indices, *slot lists, ...), check_<name>(**params).
    @property
    def core(self) -> str:
        return self.core_name or self.name

    @property
    def core_sparse(self) -> str:
        return f"{self.core}_sparse"

    @property
    def core_check(self) -> str:
        return f"check_{self.core}"


def _float64(h, s, *names, one_minus=()) -> dict:
    """The hyperparameters ``names`` as float64 scalars, and ``one_minus_<name>`` (1 - name,
    rounded once) for each of ``one_minus``: the per-step scalars most rules need."""
    out = {name: s.f64(h[name]) for name in names}
    out.update((f"one_minus_{name}", s.one_minus(h[name])) for name in one_minus)
    return out


def _gd_scalars(h, s):
    return _float64(h, s, "lr")


def _gd_update(p, g, slots, c, flags, m):
    # p = p - lr*g
    return p - g * c["lr"], []


def _momentum_scalars(h, s):
    return _float64(h, s, "lr", "momentum")


def _momentum_update(p, g, slots, c, flags, m):
    # m = mu*m - lr*g;  p = p + m  (nesterov: p = p + mu*m - lr*g, with the new m)
    mu, lr = c["momentum"], c["lr"]
    velocity = slots[0] * mu - g * lr
    return (p + (velocity * mu - g * lr) if flags["nesterov"] else p + velocity), [velocity]


def _adam_scalars(h, s):
    # alpha = lr*sqrt(1-b2^t)/(1-b1^t)
    c, t = _float64(h, s, "lr", "epsilon", one_minus=("beta_1", "beta_2")), s.f64(h["step"])
    c["alpha"] = c["lr"] * s.sqrt(1.0 - s.pow(s.f64(h["beta_2"]), t)) / (1.0 - s.pow(s.f64(h["beta_1"]), t))
    return c


def _adam_update(p, g, slots, c, flags, m):
    # m = m + (g-m)*(1-b1);  v = v + (g^2-v)*(1-b2);  [vhat = max(vhat, v)];  p = p - alpha*m/(sqrt(v)+eps)
    first = slots[0] + (g - slots[0]) * c["one_minus_beta_1"]
    second = slots[1] + (g * g - slots[1]) * c["one_minus_beta_2"]
    new_slots = [first, second]
    if flags["amsgrad"]:
        second = m.maximum(slots[2], second)
        new_slots.append(second)
    return p - (first * c["alpha"]) / (m.sqrt(second) + c["epsilon"]), new_slots


def _adagrad_scalars(h, s):
    return _float64(h, s, "lr", "epsilon")


def _adagrad_update(p, g, slots, c, flags, m):
    # acc = acc + g*g;  p = p - lr*g/sqrt(acc + eps)
    accumulator = slots[0] + g * g
    return p - (g * c["lr"]) / m.sqrt(accumulator + c["epsilon"]), [accumulator]


def _rmsprop_scalars(h, s):
    return _float64(h, s, "lr", "rho", "momentum", "epsilon", one_minus=("rho",))


def _rmsprop_update(p, g, slots, c, flags, m):
    # v = rho*v + (1-rho)*g^2;  [a = rho*a + (1-rho)*g, d = v - a^2 + eps; else d = v + eps]
    # inc = lr*g/sqrt(d);  [b = mu*b + inc, p = p - b; else p = p - inc]
    velocity, *optional = slots
    buffer = optional.pop(0) if flags["with_momentum"] else None
    average = optional.pop(0) if flags["centered"] else None
    velocity = c["rho"] * velocity + c["one_minus_rho"] * (g * g)
    new_slots = [velocity]
    denominator = velocity + c["epsilon"]
    if average is not None:
        average = c["rho"] * average + c["one_minus_rho"] * g
        denominator = velocity - average * average + c["epsilon"]
    step = (c["lr"] * g) / m.sqrt(denominator)
    if buffer is not None:
        step = c["momentum"] * buffer + step
        new_slots.append(step)
    if average is not None:
        new_slots.append(average)
    return p - step, new_slots


def _adamax_scalars(h, s):
    # alpha = lr/(1-b1^t)
    c = _float64(h, s, "lr", "beta_2", "epsilon", one_minus=("beta_1",))
    c["alpha"] = c["lr"] / (1.0 - s.pow(s.f64(h["beta_1"]), s.f64(h["step"])))
    return c


def _adamax_update(p, g, slots, c, flags, m):
    # m = m + (g-m)*(1-b1);  u = max(b2*u, |g|);  p = p - alpha*m/(u+eps)
    first = slots[0] + (g - slots[0]) * c["one_minus_beta_1"]
    norm = m.maximum(c["beta_2"] * slots[1], m.abs(g))
    return p - (first * c["alpha"]) / (norm + c["epsilon"]), [first, norm]


def _nadam_scalars(h, s):
    # u_t = b1*(1 - 0.5*0.96^t); the coefficients of m and g in the step, and 1/(1-b2^t)
    c = _float64(h, s, "lr", "epsilon", one_minus=("beta_1", "beta_2"))
    lr, t, beta_1, u_product = c["lr"], s.f64(h["step"]), s.f64(h["beta_1"]), s.f64(h["u_product"])
    u_t = beta_1 * (1.0 - 0.5 * s.pow(s.f64(0.96), t))
    u_next = beta_1 * (1.0 - 0.5 * s.pow(s.f64(0.96), t + 1.0))
    c["m_coefficient"] = lr * u_next / (1.0 - u_product * u_next)
    c["g_coefficient"] = lr * (1.0 - u_t) / (1.0 - u_product)
    c["v_scale"] = 1.0 / (1.0 - s.pow(s.f64(h["beta_2"]), t))
    return c


def _nadam_update(p, g, slots, c, flags, m):
    # m = m + (g-m)*(1-b1);  v = v + (g^2-v)*(1-b2);  p = p - (m*cm + g*cg)/(sqrt(v/(1-b2^t)) + eps)
    first = slots[0] + (g - slots[0]) * c["one_minus_beta_1"]
    second = slots[1] + (g * g - slots[1]) * c["one_minus_beta_2"]
    step = (first * c["m_coefficient"] + g * c["g_coefficient"]) / (m.sqrt(second * c["v_scale"]) + c["epsilon"])
    return p - step, [first, second]


def _lion_scalars(h, s):
    return _float64(h, s, "lr", "beta_1", "beta_2", one_minus=("beta_1", "beta_2"))


def _lion_update(p, g, slots, c, flags, m):
    # p = p - lr*sign(m*b1 + g*(1-b1));  m = m*b2 + g*(1-b2)
    direction = m.sign(slots[0] * c["beta_1"] + g * c["one_minus_beta_1"])
    return p - c["lr"] * direction, [slots[0] * c["beta_2"] + g * c["one_minus_beta_2"]]


GRADIENT_DESCENT = Rule(
    name="gradient_descent",
    short="gd",
    title="Gradient descent",
    formula="p = p - lr*wd*p - lr*g",
    params=(LR,),
    slots=(),
    flags=(),
    scalars=_gd_scalars,
    update=_gd_update,
)

MOMENTUM = Rule(
    name="momentum",
    short="momentum",
    title="Momentum, Keras form",
    formula=(
        "m = momentum*m - lr*g\n"
        "p = p - lr*wd*p + m                    # nesterov=False\n"
        "p = p - lr*wd*p + momentum*m - lr*g    # nesterov=True, with the updated m"
    ),
    params=(LR, Param("momentum", closed(0, 1), None, "mu")),
    slots=(Slot("velocity", "velocities", "momentum buffer m"),),
    flags=("nesterov",),
    scalars=_momentum_scalars,
    update=_momentum_update,
)

ADAM = Rule(
    name="adam",
    short="adam",
    title='Adam ("epsilon hat" form, as Keras)',
    formula=(
        "alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)\n"
        "m = m + (g - m) * (1 - beta_1)\n"
        "v = v + (g*g - v) * (1 - beta_2)\n"
        "vhat = max(vhat, v)                       # amsgrad, when vhat is given\n"
        "p = p - lr*wd*p - alpha * m / (sqrt(v or vhat) + epsilon)"
    ),
    params=(
        LR,
        Param("beta_1", closed_open(0, 1), 0.9, "decay rate of the first moment m"),
        Param("beta_2", closed_open(0, 1), 0.999, "decay rate of the second moment v"),
        Param("epsilon", above(0), 1e-7, "added to sqrt(v) in the denominator"),
        Param("step", Range(1, integer=True), None, "t, the 1-based step number (Keras: iterations + 1)"),
    ),
    slots=(
        Slot("m", "ms", "first moment"),
        Slot("v", "vs", "second moment"),
        Slot("vhat", "vhats", "amsgrad maxima of v", given="amsgrad"),
    ),
    flags=(),
    scalars=_adam_scalars,
    update=_adam_update,
)

ADAGRAD = Rule(
    name="adagrad",
    short="adagrad",
    title="Adagrad (Keras form)",
    formula="acc = acc + g*g\np = p - lr*wd*p - lr*g / sqrt(acc + epsilon)",
    params=(LR, Param("epsilon", above(0), 1e-7, "added to the accumulator under the square root")),
    slots=(Slot("accumulator", "accumulators", "sum of squared gradients (Keras starts it at 0.1)"),),
    flags=(),
    scalars=_adagrad_scalars,
    update=_adagrad_update,
)

RMSPROP = Rule(
    name="rmsprop",
    short="rmsprop",
    title="RMSprop (Keras form, optionally centered and with momentum)",
    formula=(
        "v = rho*v + (1 - rho)*g*g\n"
        "a = rho*a + (1 - rho)*g                   # centered, when a (average_gradient) is given\n"
        "inc = lr*g / sqrt(v + epsilon)            # centered: sqrt(v - a*a + epsilon)\n"
        "b = momentum*b + inc                      # when b (momentum_buffer) is given; inc = b\n"
        "p = p - lr*wd*p - inc"
    ),
    params=(
        LR,
        Param("rho", closed(0, 1), 0.9, "decay rate of the mean square v (and of the mean gradient a)"),
        Param("momentum", closed(0, 1), 0.0, "mu of the momentum buffer b (0 without one)", needs="with_momentum"),
        Param("epsilon", above(0), 1e-7, "added to v under the square root"),
    ),
    slots=(
        Slot("velocity", "velocities", "mean square v of the gradient"),
        Slot("momentum_buffer", "momentum_buffers", "momentum buffer b", given="with_momentum"),
        Slot("average_gradient", "average_gradients", "mean gradient a", given="centered"),
    ),
    flags=(),
    scalars=_rmsprop_scalars,
    update=_rmsprop_update,
)

ADAMAX = Rule(
    name="adamax",
    short="adamax",
    title="Adamax (Keras form)",
    formula=(
        "alpha = lr / (1 - beta_1**t)\n"
        "m = m + (g - m) * (1 - beta_1)\n"
        "u = max(beta_2*u, |g|)\n"
        "p = p - lr*wd*p - alpha * m / (u + epsilon)"
    ),
    params=(
        LR,
        Param("beta_1", closed_open(0, 1), 0.9, "decay rate of the first moment m"),
        Param("beta_2", closed(0, 1), 0.999, "decay rate of the infinity norm u"),
        Param("epsilon", above(0), 1e-7, "added to u in the denominator"),
        Param("step", Range(1, integer=True), None, "t, the 1-based step number (Keras: iterations + 1)"),
    ),
    slots=(Slot("m", "ms", "first moment"), Slot("u", "us", "exponentially weighted infinity norm")),
    flags=(),
    scalars=_adamax_scalars,
    update=_adamax_update,
)

NADAM = Rule(
    name="nadam",
    short="nadam",
    title="Nadam (Keras form)",
    formula=(
        "u_t = beta_1 * (1 - 0.5 * 0.96**t);  u_next = beta_1 * (1 - 0.5 * 0.96**(t+1))\n"
        "m = m + (g - m) * (1 - beta_1)\n"
        "v = v + (g*g - v) * (1 - beta_2)\n"
        "m_hat = u_next*m / (1 - u_product*u_next) + (1 - u_t)*g / (1 - u_product)\n"
        "p = p - lr*wd*p - lr * m_hat / (sqrt(v / (1 - beta_2**t)) + epsilon)"
    ),
    params=(
        LR,
        Param("beta_1", closed_open(0, 1), 0.9, "decay rate of the first moment m"),
        Param("beta_2", closed_open(0, 1), 0.999, "decay rate of the second moment v"),
        Param("epsilon", above(0), 1e-7, "added to sqrt(v/(1-beta_2^t)) in the denominator"),
        Param("step", Range(1, integer=True), None, "t, the 1-based step number (Keras: iterations + 1)"),
        Param(
            "u_product",
            closed_open(0, 1),
            None,
            "u_1*...*u_t, the running product of the momentum schedule including this step's u_t "
            "(Keras: Nadam._u_product after its update)",
        ),
    ),
    slots=(Slot("m", "ms", "first moment"), Slot("v", "vs", "second moment")),
    flags=(),
    scalars=_nadam_scalars,
    update=_nadam_update,
)

LION = Rule(
    name="lion",
    short="lion",
    title="Lion (Keras form)",
    formula="p = p - lr*wd*p - lr * sign(beta_1*m + (1 - beta_1)*g)\nm = beta_2*m + (1 - beta_2)*g",
    params=(
        LR,
        Param("beta_1", open_closed(0, 1), 0.9, "weight of m in the update's direction"),
        Param("beta_2", closed(0, 1), 0.99, "decay rate of the momentum m"),
    ),
    slots=(Slot("m", "ms", "momentum"),),
    flags=(),
    scalars=_lion_scalars,
    update=_lion_update,
)

# AdamW is Adam with decoupled weight decay (Keras's AdamW only changes the default): Adam's
# kernels and ops, a weight_decay of 0.004 unless given.
ADAMW = replace(
    ADAM,
    name="adamw",
    short="adamw",
    title='AdamW (Adam, "epsilon hat" form, with decoupled weight decay, as Keras)',
    weight_decay=0.004,
    core_name=ADAM.name,
)

# Every rule, by name: the C++ list's (cpp/include/pyopt/rules.h) in its order, then AdamW.
RULES = {rule.name: rule for rule in (GRADIENT_DESCENT, MOMENTUM, ADAM, ADAGRAD, RMSPROP, ADAMAX, NADAM, LION, ADAMW)}
