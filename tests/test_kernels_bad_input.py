"""Bad input to pyopt.kernels: a TypeError/ValueError naming the argument, nothing written.

Each case starts from a valid call (single-tensor form, or a 2-tensor *_multi call whose
SECOND tensor is spoiled, so that writing the first tensor before checking would show),
changes one thing, and expects the exception type and a message naming the argument.
Every array of the call must be bitwise unchanged afterwards.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import reference as ref
from kernel_cases import (
    HYPER,
    call,
    call_multi,
    call_multi_lists,
    call_sparse,
    copies,
    random_state,
    same_bits,
    table_row,
)

from pyopt import kernels

SLOT_ARG = {  # names in messages
    "velocity": "velocities",
    "m": "ms",
    "v": "vs",
    "vhat": "vhats",
    "accumulator": "accumulators",
    "momentum_buffer": "momentum_buffers",
    "average_gradient": "average_gradients",
    "u": "us",
}
RULES = list(ref.SLOTS)
SIZE = 40


@dataclasses.dataclass
class Call:
    """A kernel call under construction: tensor i is (params[i], grads[i], slots[i])."""

    rule: str
    multi: bool
    params: list
    grads: list
    slots: list
    hyper: dict
    indices: np.ndarray = None  # set: a *_sparse call, grads[0] holding the values of these rows

    @classmethod
    def valid(cls, rule, multi, dtype=np.float32, sparse=False):
        rng = np.random.default_rng(0)
        tensors = [random_state(rule, SIZE + 2 * i, dtype, rng) for i in range(2 if multi else 1)]
        c = cls(rule, multi, *map(list, zip(*tensors)), dict(HYPER[rule]))
        if sparse:
            assert not multi
            c.indices = np.array([0, 3, 3, 7, 20, SIZE - 1])  # a duplicate, the last row
            c.grads[0] = c.grads[0][: c.indices.size].copy()
        return c

    @property
    def last(self) -> int:
        return len(self.params) - 1

    def name(self, kind, i=None) -> str:
        """Regex for the argument name in messages: "params[1]", "vs[0]", ..."""
        arg = {"param": "params", "grad": "grads"}.get(kind) or SLOT_ARG[kind]
        return rf"{arg}\[{self.last if i is None else i}\]"

    def run(self):
        if self.indices is not None:
            return call_sparse(self.rule, self.params[0], self.grads[0], self.indices, self.slots[0], **self.hyper)
        if self.multi:
            return call_multi(self.rule, self.params, self.grads, self.slots, **self.hyper)
        return call(self.rule, self.params[0], self.grads[0], self.slots[0], **self.hyper)

    def arrays(self) -> list:
        lists = [self.params, self.grads, *self.slots, [self.indices]]
        return [a for lst in lists if isinstance(lst, list) for a in lst if isinstance(a, np.ndarray)]


def expect_clean_error(c: Call, exc, pattern):
    """The call raises `exc` matching `pattern`, and no array changed."""
    arrays = c.arrays()
    snapshot = [a.copy() for a in arrays]
    with pytest.raises(exc, match=pattern):
        c.run()
    for a, b in zip(arrays, snapshot):
        assert same_bits(a, b), "an array was modified by a call that raised"


def slot_kinds(rule):
    return ref.SLOTS[rule]


def optional_slot(rule, kind) -> bool:
    """Whether slot `kind` is optional in the rule (None: not given)."""
    return any(slot.name == kind and slot.optional for slot in table_row(rule).slots)


FORMS = [pytest.param(False, id="single"), pytest.param(True, id="multi")]


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize(
    "dtype",
    [
        np.int32,
        np.int64,
        np.complex64,
        np.complex128,
        object,
        np.bool_,
        np.float128 if hasattr(np, "float128") else np.uint8,
    ],
)
@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_unsupported_dtype(rule, multi, dtype):
    for kind in ("param", "grad", *slot_kinds(rule)):
        c = Call.valid(rule, multi)
        i = c.last
        if kind == "param":
            c.params[i] = c.params[i].astype(dtype)
        elif kind == "grad":
            c.grads[i] = c.grads[i].astype(dtype)
        else:
            k = slot_kinds(rule).index(kind)
            c.slots[i][k] = c.slots[i][k].astype(dtype)
        expect_clean_error(c, TypeError, c.name(kind) + ".*dtype")


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_grad_dtype_differs_from_param(rule, multi):
    c = Call.valid(rule, multi)
    c.grads[c.last] = c.grads[c.last].astype(np.float64)  # float64 grad, float32 param
    expect_clean_error(c, TypeError, c.name("grad") + ".*float64")
    c = Call.valid(rule, multi, np.float64)
    c.grads[c.last] = c.grads[c.last].astype(np.float32)
    expect_clean_error(c, TypeError, c.name("grad") + ".*float32")


@pytest.mark.parametrize("rule", [r for r in RULES if r != "gradient_descent"])
def test_slot_dtype_differs_from_param(rule):
    for k, kind in enumerate(slot_kinds(rule)):
        c = Call.valid(rule, multi=False)
        c.slots[0][k] = c.slots[0][k].astype(np.float16)
        expect_clean_error(c, TypeError, c.name(kind) + ".*float16")


@pytest.mark.parametrize("rule", RULES)
def test_mixed_dtypes_across_tensors(rule):
    """A multi call shares one dtype: tensor 1 all float64 while tensor 0 is float32."""
    c = Call.valid(rule, multi=True)
    c.params[1], c.grads[1] = c.params[1].astype(np.float64), c.grads[1].astype(np.float64)
    c.slots[1] = [s.astype(np.float64) for s in c.slots[1]]
    expect_clean_error(c, TypeError, r"params\[1\].*float64.*one dtype")


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_non_native_byte_order(rule, multi):
    """A big-endian float32 array is still named "float32" by NumPy; the kernels must not read
    its bytes as native floats (silent garbage) but refuse it."""
    c = Call.valid(rule, multi)
    c.params[c.last] = c.params[c.last].astype(c.params[c.last].dtype.newbyteorder(">"))
    expect_clean_error(c, TypeError, c.name("param"))


# --------------------------------------------------------------------------- shapes and layout


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_shape_mismatch(rule, multi):
    i = 0 if not multi else 1
    for kind in ("grad", *slot_kinds(rule)):
        for bad in (
            lambda a: a[:-1].copy(),
            lambda a: a.reshape(2, -1).copy(),
            lambda a: a.reshape(1, -1).copy(),
            lambda a: np.concatenate([a, a]),
        ):
            c = Call.valid(rule, multi)
            if kind == "grad":
                c.grads[i] = bad(c.grads[i])
            else:
                k = slot_kinds(rule).index(kind)
                c.slots[i][k] = bad(c.slots[i][k])
            expect_clean_error(c, ValueError, c.name(kind) + ".*shape.*" + c.name("param"))


def _non_contiguous(a):
    """Three non-C-contiguous views holding the values of `a` (strided, transposed, Fortran)."""
    return [np.repeat(a, 2)[::2], np.asfortranarray(a.reshape(2, -1)), a.reshape(2, -1).copy().T]


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_non_contiguous(rule, multi):
    for kind in ("param", "grad", *slot_kinds(rule)):
        for view in range(3):
            c = Call.valid(rule, multi)
            i = c.last
            if view > 0:  # 2-d views: give every array of the tensor the view's shape
                shape = _non_contiguous(c.params[i])[view].shape
                c.params[i], c.grads[i] = c.params[i].reshape(shape), c.grads[i].reshape(shape)
                c.slots[i] = [s.reshape(shape) for s in c.slots[i]]
            if kind == "param":
                c.params[i] = _non_contiguous(c.params[i].reshape(-1))[view]
            elif kind == "grad":
                c.grads[i] = _non_contiguous(c.grads[i].reshape(-1))[view]
            else:
                k = slot_kinds(rule).index(kind)
                c.slots[i][k] = _non_contiguous(c.slots[i][k].reshape(-1))[view]
            expect_clean_error(c, ValueError, c.name(kind) + ".*contiguous")


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_read_only_param_or_slot(rule, multi):
    for kind in ("param", *slot_kinds(rule)):
        c = Call.valid(rule, multi)
        a = c.params[c.last] if kind == "param" else c.slots[c.last][slot_kinds(rule).index(kind)]
        a.flags.writeable = False
        expect_clean_error(c, ValueError, c.name(kind) + ".*read-only")


@pytest.mark.parametrize("rule", RULES)
def test_read_only_grad_is_fine(rule):
    c = Call.valid(rule, multi=False)
    c.grads[0].flags.writeable = False
    expected = ref.step(rule, c.params[0], c.grads[0], c.slots[0], **c.hyper)
    assert c.run() is True
    np.testing.assert_allclose(c.params[0], expected[0], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- aliasing


def _aliasing_cases(rule):
    """(description, mutate(c) -> (arg kind a, arg kind b)) pairs that make two arrays overlap."""
    kinds = ("param", "grad", *slot_kinds(rule))
    out = []
    for x in range(len(kinds)):
        for y in range(x + 1, len(kinds)):
            if {kinds[x], kinds[y]} == {"grad"}:
                continue
            out.append((kinds[x], kinds[y]))
    return out


def _get(c, kind, i):
    if kind == "param":
        return c.params[i]
    if kind == "grad":
        return c.grads[i]
    return c.slots[i][slot_kinds(c.rule).index(kind)]


def _set(c, kind, i, a):
    if kind == "param":
        c.params[i] = a
    elif kind == "grad":
        c.grads[i] = a
    else:
        c.slots[i][slot_kinds(c.rule).index(kind)] = a


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_same_array_twice(rule, multi):
    """Any written array passed twice (param as its own slot, slot as the grad, ...)."""
    for a, b in _aliasing_cases(rule):
        c = Call.valid(rule, multi)
        _set(c, b, c.last, _get(c, a, c.last))
        expect_clean_error(c, ValueError, "overlap")


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_overlapping_views(rule, multi):
    """Two views of one buffer that share some elements (not the same start)."""
    for a, b in _aliasing_cases(rule):
        for shift in (1, SIZE // 2, SIZE - 1):
            c = Call.valid(rule, multi)
            i = c.last
            n = _get(c, a, i).size
            buf = np.concatenate([_get(c, a, i), _get(c, b, i)])  # values stay valid
            _set(c, a, i, buf[:n])
            _set(c, b, i, buf[shift : shift + n])
            expect_clean_error(c, ValueError, "overlap")


@pytest.mark.parametrize("rule", RULES)
def test_same_param_in_two_tensors(rule):
    c = Call.valid(rule, multi=True)
    c.params[1] = c.params[0]
    c.grads[1], c.slots[1] = c.grads[1][:SIZE].copy(), [s[:SIZE].copy() for s in c.slots[1]]
    expect_clean_error(c, ValueError, r"params\[0\].*params\[1\].*overlap")


@pytest.mark.parametrize("rule", RULES)
def test_adjacent_views_and_shared_grads_are_fine(rule):
    """Views of one buffer that touch but don't overlap, and one gradient used by two tensors
    (read only), are valid: the result equals the reference."""
    c = Call.valid(rule, multi=True)
    n = SIZE
    c.params[1], c.slots[1] = c.params[1][:n].copy(), [s[:n].copy() for s in c.slots[1]]
    buf = np.concatenate([c.params[0], c.params[1]])
    c.params[0], c.params[1] = buf[:n], buf[n:]
    c.grads[1] = c.grads[0]
    expected = ref.step_multi(c.rule, c.params, c.grads, c.slots, **c.hyper)
    assert c.run() is True
    for got, want in zip(c.params, expected):
        np.testing.assert_allclose(got, want[0], rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- non-arrays, list lengths


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_not_an_array(rule, multi):
    for kind in ("param", "grad", *slot_kinds(rule)):
        for bad in ("list", 1.0, None, "abc"):
            if optional_slot(rule, kind) and not multi and bad is None:
                continue  # adam(vhat=None) is valid: no amsgrad (likewise RMSprop's optional slots)
            c = Call.valid(rule, multi)
            _set(c, kind, c.last, _get(c, kind, c.last).tolist() if bad == "list" else bad)
            expect_clean_error(c, TypeError, c.name(kind) + ".*numpy.ndarray")


@pytest.mark.parametrize("rule", RULES)
def test_multi_needs_lists(rule):
    """A single array, None or a number where a list of arrays is expected."""
    for bad in ("array", None, 3.0):
        c = Call.valid(rule, multi=True)
        c.grads = c.grads[0] if bad == "array" else bad
        expect_clean_error(c, TypeError, "grads.*list")


@pytest.mark.parametrize("rule", RULES)
def test_wrong_list_lengths(rule):
    """One list of a multi call one array short: grads, or any slot list."""
    for drop in range(1 + len(slot_kinds(rule))):
        c = Call.valid(rule, multi=True)
        lists = [c.grads] + [[s[k] for s in c.slots] for k in range(len(slot_kinds(rule)))]
        snapshot = [a.copy() for a in c.arrays()]
        lists[drop] = lists[drop][:1]
        name = "grads" if drop == 0 else SLOT_ARG[slot_kinds(rule)[drop - 1]]
        with pytest.raises(ValueError, match=rf"{name} has 1 arrays but params has 2"):
            call_multi_lists(rule, c.params, lists[0], lists[1:], **c.hyper)
        assert all(same_bits(a, b) for a, b in zip(c.arrays(), snapshot))


# --------------------------------------------------------------------------- hyperparameters

NAN, INF = math.nan, math.inf

# argument: (bad values raising ValueError, values of a wrong type raising TypeError).
# Every message must START with the argument's name ("lr must be a real number, got str:
# '0.1'"), not merely contain it somewhere (pybind11's "incompatible function arguments"
# error lists the whole signature, so it contains every name). bool is not a number; a
# flag takes only bool / numpy.bool_.
BAD_HYPER = {
    "lr": ([-1e-3, -INF, NAN, INF, 10**400], ["0.1", None, True, [0.1], 1j, np.array([0.1])]),
    "momentum": ([-0.1, 1.0001, NAN, INF, -INF], ["0.9", None, [0.9], False, np.bool_(True)]),
    "beta_1": ([-0.1, 1.0, 1.5, NAN, INF], ["0.9", None, True, (0.9,)]),
    "beta_2": ([-0.1, 1.0, 1.5, NAN, -INF], ["0.999", None, False]),
    "epsilon": ([0.0, -1e-7, NAN, INF], ["1e-7", None, True]),
    "step": (
        [0, -1, -(2**40), 2**63, 2**70, -(2**70), np.uint64(2**63)],
        [1.5, 2.0, np.float64(3.0), "1", None, True, np.bool_(True), [1]],
    ),
    "rho": ([-0.1, 1.0001, NAN, INF, -INF], ["0.9", None, True, [0.9]]),
    "u_product": ([-0.1, 1.0, 1.5, NAN, INF], ["0.5", None, True, np.array([0.5])]),
    "clipnorm": ([0.0, -1.0, NAN, INF], ["1.0", True, [1.0]]),
    "global_clipnorm": ([0.0, -1.0, NAN, INF], ["1.0", True, [1.0]]),
    "weight_decay": ([-1e-4, NAN, INF, -INF], ["0.1", "x", None, True, np.array(0.1), {0.1}]),
    "nesterov": ([], ["yes", None, 1, 0.0, [True]]),
    "skip_nonfinite": ([], ["no", None, 0, 1.0]),
    "lazy": ([], ["yes", None, 1]),
}
# Ranges of their own: Adamax's beta_2 and Lion's beta_2 in [0, 1] (1 is valid), Lion's beta_1 in (0, 1].
BAD_HYPER_OF = {
    ("adamax", "beta_2"): ([-0.1, 1.0001, 1.5, NAN, -INF], BAD_HYPER["beta_2"][1]),
    ("lion", "beta_1"): ([0.0, -0.1, 1.0001, NAN, INF], BAD_HYPER["beta_1"][1]),
    ("lion", "beta_2"): ([-0.1, 1.0001, NAN, -INF], BAD_HYPER["beta_2"][1]),
}
_ADAM_ARGS = ["lr", "beta_1", "beta_2", "epsilon", "step", "clipnorm", "weight_decay", "skip_nonfinite"]
_RMSPROP_ARGS = ["lr", "rho", "momentum", "epsilon", "clipnorm", "weight_decay", "skip_nonfinite"]
RULE_ARGS = {
    "gradient_descent": ["lr", "clipnorm", "weight_decay", "skip_nonfinite"],
    "momentum": ["lr", "momentum", "nesterov", "clipnorm", "weight_decay", "skip_nonfinite"],
    "adam": _ADAM_ARGS,
    "adam_amsgrad": _ADAM_ARGS,
    "adagrad": ["lr", "epsilon", "clipnorm", "weight_decay", "skip_nonfinite"],
    "rmsprop": _RMSPROP_ARGS,
    "rmsprop_momentum": _RMSPROP_ARGS,
    "rmsprop_centered": _RMSPROP_ARGS,
    "rmsprop_centered_momentum": _RMSPROP_ARGS,
    "adamax": _ADAM_ARGS,
    "nadam": [*_ADAM_ARGS[:5], "u_product", *_ADAM_ARGS[5:]],
    "lion": ["lr", "beta_1", "beta_2", "clipnorm", "weight_decay", "skip_nonfinite"],
}
# The RMSprop cases with the same hyperparameters as rmsprop and rmsprop_centered_momentum
# (plain, and with both optional slots) are not run through every bad value again.
HYPER_RULES = [rule for rule in RULES if rule not in ("rmsprop_momentum", "rmsprop_centered")]
HYPER_FORMS = ["single", "multi", "sparse"]


def form_args(rule, form) -> list:
    """Every hyperparameter of the kernel function of (rule, form)."""
    extra = {"single": [], "multi": ["global_clipnorm"], "sparse": ["lazy"]}[form]
    return RULE_ARGS[rule] + extra


def _value_id(value) -> str:
    text = repr(value)
    return text if len(text) <= 20 else text[:17] + "..."


def _hyper_call(rule, form) -> Call:
    return Call.valid(rule, multi=form == "multi", sparse=form == "sparse")


HYPER_CASES = [
    pytest.param(form, rule, arg, value, exc, id=f"{form}-{rule}-{arg}={_value_id(value)}")
    for form in HYPER_FORMS
    for rule in HYPER_RULES
    for arg in form_args(rule, form)
    for exc, values in zip((ValueError, TypeError), BAD_HYPER_OF.get((rule, arg), BAD_HYPER[arg]))
    for value in values
]


@pytest.mark.parametrize("form, rule, arg, value, exc", HYPER_CASES)
def test_bad_hyperparameter(form, rule, arg, value, exc):
    c = _hyper_call(rule, form)
    c.hyper[arg] = value
    expect_clean_error(c, exc, rf"^{arg} must be ")


def test_wrong_type_messages():
    """The exact wording for a few types: the argument, what it must be, the type and value."""
    for arg, value, exc, message in (
        ("lr", "0.1", TypeError, "lr must be a real number, got str: '0.1'"),
        ("lr", None, TypeError, "lr must be a real number, got NoneType: None"),
        ("beta_1", True, TypeError, "beta_1 must be a real number, got bool: True"),
        ("step", 1.5, TypeError, "step must be an int, got float: 1.5"),
        ("step", 2**70, ValueError, f"step must be an int in [1, 2**63 - 1], got int: {2**70}"),
        ("clipnorm", "1.0", TypeError, "clipnorm must be a real number or None, got str: '1.0'"),
        ("weight_decay", "x", TypeError, "weight_decay must be a real number or a list of real numbers, got str: 'x'"),
        ("skip_nonfinite", "no", TypeError, "skip_nonfinite must be a bool, got str: 'no'"),
    ):
        c = Call.valid("adam", multi=False)
        c.hyper[arg] = value
        expect_clean_error(c, exc, "^" + re.escape(message) + "$")
    c = Call.valid("momentum", multi=False)
    c.hyper["nesterov"] = "yes"
    expect_clean_error(c, TypeError, "^" + re.escape("nesterov must be a bool, got str: 'yes'") + "$")


@pytest.mark.parametrize("form", HYPER_FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_numpy_scalar_hyperparameters_are_valid(rule, form):
    """NumPy scalars (np.float32, np.int64, np.bool_, ...) are accepted and give bitwise the
    result of the equal Python float/int/bool; Python ints are accepted for the reals."""
    numpy_values = {
        "lr": np.float32(0.01),
        "momentum": np.float64(0.9),
        "beta_1": np.float16(0.875),
        "beta_2": np.float32(0.99),
        "epsilon": np.float64(1e-7),
        "step": np.int64(3),
        "rho": np.float32(0.875),
        "u_product": np.float64(0.5),
        "clipnorm": np.float32(2.5),
        "global_clipnorm": np.int32(3),
        "weight_decay": np.float32(0.01),
        "nesterov": np.bool_(True),
        "skip_nonfinite": np.bool_(True),
        "lazy": np.bool_(True),
    }
    python = {"step": int, "nesterov": bool, "skip_nonfinite": bool, "lazy": bool}
    args = [a for a in form_args(rule, form) if a != ("clipnorm" if form == "multi" else "global_clipnorm")]
    if "momentum_buffer" not in slot_kinds(rule):
        numpy_values["momentum"] = np.float64(0.0)  # RMSprop without a momentum buffer
    a, b = _hyper_call(rule, form), _hyper_call(rule, form)
    a.hyper.update({k: numpy_values[k] for k in args})
    b.hyper.update({k: python.get(k, float)(numpy_values[k]) for k in args})
    if form == "multi":  # one decay per tensor, as a NumPy array
        a.hyper["weight_decay"] = np.array([0.01, 0.02], np.float32)
        b.hyper["weight_decay"] = [float(np.float32(0.01)), float(np.float32(0.02))]
    assert a.run() is True and b.run() is True
    assert all(same_bits(x, y) for x, y in zip(a.arrays(), b.arrays()))
    c = _hyper_call(rule, form)
    c.hyper.update(lr=1, weight_decay=0, clipnorm=None)  # Python ints for the reals
    assert c.run() is True


@pytest.mark.parametrize("rule", RULES)
def test_clipnorm_and_global_clipnorm_exclusive(rule):
    c = Call.valid(rule, multi=True)
    c.hyper.update(clipnorm=1.0, global_clipnorm=1.0)
    expect_clean_error(c, ValueError, "clipnorm and global_clipnorm")


@pytest.mark.parametrize("rule", RULES)
def test_weight_decay_list(rule):
    for decays, exc, pattern in (
        ([0.1], ValueError, "weight_decay has 1 values but there are 2"),
        ([0.1, 0.1, 0.1], ValueError, "weight_decay has 3 values"),
        ([0.1, -0.1], ValueError, "weight_decay"),
        ([0.1, NAN], ValueError, "weight_decay"),
        ([0.1, "x"], TypeError, r"^weight_decay\[1\] must be a real number, got str: 'x'$"),
        ((0.1, None), TypeError, r"^weight_decay\[1\] must be a real number, got NoneType"),
        ([True, 0.1], TypeError, r"^weight_decay\[0\] must be a real number, got bool"),
    ):
        c = Call.valid(rule, multi=True)
        c.hyper["weight_decay"] = decays
        expect_clean_error(c, exc, pattern)


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule", RULES)
def test_weight_decay_wrong_type(rule, multi):
    """None or a string as weight_decay: a TypeError naming weight_decay (not pybind11's
    RuntimeError "Unable to cast Python instance ...")."""
    for value in (None, "0.1"):
        c = Call.valid(rule, multi)
        c.hyper["weight_decay"] = value
        expect_clean_error(c, TypeError, r"^weight_decay must be a real number or a list of real numbers, got ")


@pytest.mark.parametrize("rule", RULES)
def test_edge_hyperparameters_are_valid(rule):
    """The closed ends of each range are accepted: lr=0, momentum and rho 0 and 1, betas 0
    (and 1 where the range is closed there), u_product 0, step 1 as a NumPy integer,
    weight_decay=0 per tensor."""
    edges = {
        "gradient_descent": [dict(lr=0.0)],
        "momentum": [dict(momentum=0.0), dict(momentum=1.0), dict(lr=0.0)],
        "adam": [dict(beta_1=0.0, beta_2=0.0), dict(step=np.int64(1)), dict(epsilon=1e-30)],
        "adam_amsgrad": [dict(beta_1=0.0), dict(step=np.int32(3))],
        "adagrad": [dict(lr=0.0), dict(epsilon=1e-30)],
        "rmsprop": [dict(rho=0.0), dict(rho=1.0), dict(momentum=0.0)],
        "rmsprop_momentum": [dict(momentum=0.0), dict(momentum=1.0), dict(rho=1.0)],
        "rmsprop_centered": [dict(rho=0.0), dict(rho=1.0)],
        "rmsprop_centered_momentum": [dict(rho=0.0, momentum=1.0), dict(rho=1.0, momentum=0.0)],
        "adamax": [dict(beta_1=0.0, beta_2=0.0), dict(beta_2=1.0), dict(step=np.int64(1))],
        "nadam": [dict(beta_1=0.0, beta_2=0.0), dict(u_product=0.0), dict(step=np.int32(2))],
        "lion": [dict(beta_1=1.0), dict(beta_2=0.0), dict(beta_2=1.0), dict(lr=0.0)],
    }[rule]
    for hyper in edges:
        c = Call.valid(rule, multi=True)
        c.hyper.update(hyper, weight_decay=[0.0, 0.0])
        before = [[p, *s] for p, s in zip(copies(c.params), copies(c.slots))]
        assert c.run() is True
        expected = ref.step_multi(
            rule, [b[0] for b in before], c.grads, [b[1:] for b in before], ties=c.params, **c.hyper
        )
        for got, want in zip(c.params, expected):
            np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- optional slots


@pytest.mark.parametrize("form", HYPER_FORMS)
@pytest.mark.parametrize("centered", [False, True], ids=["plain", "centered"])
def test_rmsprop_momentum_needs_momentum_buffers(centered, form):
    """Keras keeps RMSprop's momentum buffers only when momentum > 0: a momentum other than 0
    without them is refused in the core's words, centered or not, and nothing is written."""
    for momentum in (0.5, 1.0, 5e-324):
        c = _hyper_call("rmsprop_centered_momentum", form)
        hyper = dict(c.hyper, momentum=momentum)
        velocities, averages = [s[0] for s in c.slots], [s[2] for s in c.slots]
        snapshot = [a.copy() for a in c.arrays()]
        message = f"momentum must be 0 when no momentum_buffers are given, got {momentum:.17g}"
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            if form == "multi":
                kernels.rmsprop_multi(
                    c.params, c.grads, velocities, average_gradients=averages if centered else None, **hyper
                )
            elif form == "sparse":
                optional = dict(average_gradient=averages[0]) if centered else {}
                kernels.rmsprop_sparse(c.params[0], c.grads[0], c.indices, velocities[0], **optional, **hyper)
            else:
                optional = dict(average_gradient=averages[0]) if centered else {}
                kernels.rmsprop(c.params[0], c.grads[0], velocities[0], **optional, **hyper)
        assert all(same_bits(a, b) for a, b in zip(c.arrays(), snapshot))


OPTIONAL_LISTS = [
    ("adam_amsgrad", "vhats"),
    ("rmsprop_momentum", "momentum_buffers"),
    ("rmsprop_centered_momentum", "momentum_buffers"),
    ("rmsprop_centered_momentum", "average_gradients"),
]


@pytest.mark.parametrize("rule, name", OPTIONAL_LISTS)
def test_an_optional_slot_given_for_some_tensors_only(rule, name):
    """An optional slot is given for every tensor or for none: a None in its list is a
    TypeError naming the entry, a shorter list a ValueError; nothing is written."""
    k = [SLOT_ARG[kind] for kind in slot_kinds(rule)].index(name)
    for i in (0, 1):
        c = Call.valid(rule, multi=True)
        lists = [[s[j] for s in c.slots] for j in range(len(slot_kinds(rule)))]
        lists[k][i] = None
        snapshot = [a.copy() for a in c.arrays()]
        with pytest.raises(TypeError, match=rf"^{name}\[{i}\] must be a numpy.ndarray, got NoneType"):
            call_multi_lists(rule, c.params, c.grads, lists, **c.hyper)
        assert all(same_bits(a, b) for a, b in zip(c.arrays(), snapshot))
    c = Call.valid(rule, multi=True)
    lists = [[s[j] for s in c.slots] for j in range(len(slot_kinds(rule)))]
    lists[k] = lists[k][1:]
    with pytest.raises(ValueError, match=rf"^{name} has 1 arrays but params has 2$"):
        call_multi_lists(rule, c.params, c.grads, lists, **c.hyper)
