"""Bad input to pyopt.kernels: a TypeError/ValueError naming the argument, nothing written.

Each case starts from a valid call (single-tensor form, or a 2-tensor *_multi call whose
SECOND tensor is spoiled, so that writing the first tensor before checking would show),
changes one thing, and expects the exception type and a message naming the argument.
Every array of the call must be bitwise unchanged afterwards.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import reference as ref
from kernel_cases import HYPER, call, call_multi, call_multi_lists, random_state, same_bits

SLOT_ARG = {"velocity": "velocities", "m": "ms", "v": "vs", "vhat": "vhats"}  # names in messages
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

    @classmethod
    def valid(cls, rule, multi, dtype=np.float32):
        rng = np.random.default_rng(0)
        tensors = [random_state(rule, SIZE + 2 * i, dtype, rng) for i in range(2 if multi else 1)]
        return cls(rule, multi, *map(list, zip(*tensors)), dict(HYPER[rule]))

    @property
    def last(self) -> int:
        return len(self.params) - 1

    def name(self, kind, i=None) -> str:
        """Regex for the argument name in messages: "params[1]", "vs[0]", ..."""
        arg = {"param": "params", "grad": "grads"}.get(kind) or SLOT_ARG[kind]
        return rf"{arg}\[{self.last if i is None else i}\]"

    def run(self):
        if self.multi:
            return call_multi(self.rule, self.params, self.grads, self.slots, **self.hyper)
        return call(self.rule, self.params[0], self.grads[0], self.slots[0], **self.hyper)

    def arrays(self) -> list:
        lists = [self.params, self.grads, *self.slots]
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


FORMS = [pytest.param(False, id="single"), pytest.param(True, id="multi")]


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.complex64, np.complex128, object, np.bool_, np.float128
                                   if hasattr(np, "float128") else np.uint8])
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
        for bad in (lambda a: a[:-1].copy(), lambda a: a.reshape(2, -1).copy(), lambda a: a.reshape(1, -1).copy(), lambda a: np.concatenate([a, a])):
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
            if kind == "vhat" and not multi and bad is None:
                continue  # adam(vhat=None) is valid: no amsgrad
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

BAD_HYPER = {  # argument: (bad values raising ValueError, bad values raising TypeError)
    "lr": ([-1e-3, -INF, NAN, INF], ["0.1", None]),
    "momentum": ([-0.1, 1.0001, NAN, INF, -INF], ["0.9", None]),
    "beta_1": ([-0.1, 1.0, 1.5, NAN, INF], ["0.9", None]),
    "beta_2": ([-0.1, 1.0, 1.5, NAN, -INF], ["0.999", None]),
    "epsilon": ([0.0, -1e-7, NAN, INF], ["1e-7", None]),
    "step": ([0, -1, -(2**40)], [1.5, 2.0, "1", None, True]),
    "clipnorm": ([0.0, -1.0, NAN, INF], ["1.0"]),
    "weight_decay": ([-1e-4, NAN, INF, -INF], ["0.1", None]),
}
RULE_ARGS = {
    "gradient_descent": ["lr", "clipnorm", "weight_decay"],
    "momentum": ["lr", "momentum", "clipnorm", "weight_decay"],
    "adam": ["lr", "beta_1", "beta_2", "epsilon", "step", "clipnorm", "weight_decay"],
    "adam_amsgrad": ["lr", "beta_1", "beta_2", "epsilon", "step", "clipnorm", "weight_decay"],
}
HYPER_CASES = [
    pytest.param(rule, arg, value, exc, id=f"{rule}-{arg}={value!r}")
    for rule in RULES
    for arg in RULE_ARGS[rule]
    for exc, values in zip((ValueError, TypeError), BAD_HYPER[arg])
    for value in values
]


@pytest.mark.parametrize("multi", FORMS)
@pytest.mark.parametrize("rule, arg, value, exc", HYPER_CASES)
def test_bad_hyperparameter(rule, arg, value, exc, multi):
    c = Call.valid(rule, multi)
    c.hyper[arg] = value
    expect_clean_error(c, exc, arg)


@pytest.mark.parametrize("rule", RULES)
def test_bad_global_clipnorm(rule):
    for value in (0.0, -1.0, NAN, INF):
        c = Call.valid(rule, multi=True)
        c.hyper["global_clipnorm"] = value
        expect_clean_error(c, ValueError, "global_clipnorm")


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
        ([0.1, "x"], (TypeError, ValueError), "weight_decay|could not convert"),
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
        expect_clean_error(c, TypeError, "weight_decay")


@pytest.mark.parametrize("rule", RULES)
def test_edge_hyperparameters_are_valid(rule):
    """The closed ends of each range are accepted: lr=0, momentum 0 and 1, betas 0, step 1
    as a NumPy integer, weight_decay=0 per tensor."""
    edges = {
        "gradient_descent": [dict(lr=0.0)],
        "momentum": [dict(momentum=0.0), dict(momentum=1.0), dict(lr=0.0)],
        "adam": [dict(beta_1=0.0, beta_2=0.0), dict(step=np.int64(1)), dict(epsilon=1e-30)],
        "adam_amsgrad": [dict(beta_1=0.0), dict(step=np.int32(3))],
    }[rule]
    for hyper in edges:
        c = Call.valid(rule, multi=True)
        c.hyper.update(hyper, weight_decay=[0.0, 0.0])
        expected = ref.step_multi(rule, c.params, c.grads, c.slots, **c.hyper)
        assert c.run() is True
        for got, want in zip(c.params, expected):
            np.testing.assert_allclose(got, want[0], rtol=1e-5, atol=1e-6)
