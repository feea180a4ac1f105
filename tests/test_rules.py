"""The rule table (pyopt/_rules.py): it agrees with the C++ traits, its one check words every
message, and every front end refuses a variable of an unsupported dtype with its one message.

Front ends: pyopt.kernels (NumPy), pyopt.ops on both backends, the Keras 3 optimizers
(pyopt.optimizers) and the tf_keras ones (pyopt.legacy); for every rule, an int32 and a
complex64 variable raise the same TypeError, naming the supported dtypes, and nothing is
written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from kernel_cases import HYPER, call_multi

from pyopt import _loader, _rules
from pyopt._rules import RULES

BAD_DTYPES = ["int32", "complex64"]


# --------------------------------------------------------------------------- the table


def test_the_table_is_the_core_s():
    """Names, order, hyperparameters (integer or not, range, the optional slot a value other
    than 0 needs), slots and flags as in the C++ traits (pyopt._core.rules); Python's defaults
    where it has one. A row that runs another trait (``rule.core``: AdamW runs Adam's) is
    compared with that trait, and the core lists exactly the rows that are traits, in order."""
    core = pytest.importorskip("pyopt._core")
    assert list(core.rules) == [name for name, rule in RULES.items() if rule.core == name]
    assert [name for name, rule in RULES.items() if rule.core != name] == ["adamw"]
    for name, rule in RULES.items():
        described = core.rules[rule.core]
        assert [p["name"] for p in described["params"]] == list(rule.param_names), name
        for param, p in zip(rule.params, described["params"], strict=True):
            assert p["integer"] == param.range.integer and p["must_be"] == param.range.text, (name, param.name)
            assert p["needs"] == param.needs, (name, param.name)
            if param.default is not None:
                assert p["default"] == param.default, (name, param.name)
        assert [(s["name"], s["list"], s["given_flag"]) for s in described["slots"]] == [
            (s.name, s.list, s.given) for s in rule.slots
        ], name
        assert described["flags"] == list(rule.flags), name


def test_aliases_differ_only_by_their_weight_decay():
    """AdamW is Adam's row with Keras's AdamW default weight decay (0.004); every other row 0."""
    adam, adamw = RULES["adam"], RULES["adamw"]
    assert (adamw.core, adamw.weight_decay) == ("adam", 0.004)
    assert (adamw.params, adamw.slots, adamw.flags) == (adam.params, adam.slots, adam.flags)
    assert (adamw.scalars, adamw.update, adamw.fused_ops) == (adam.scalars, adam.update, adam.fused_ops)
    assert all(rule.weight_decay == 0.0 for name, rule in RULES.items() if name != "adamw")


def test_needs_names_an_optional_slot_s_flag():
    """RMSprop's momentum needs its momentum buffers; no other hyperparameter needs a slot."""
    needs = {(name, p.name): p.needs for name, rule in RULES.items() for p in rule.params if p.needs}
    assert needs == {("rmsprop", "momentum"): "with_momentum"}
    assert RULES["rmsprop"].slot_error(dict(momentum=0.5), dict(with_momentum=False, centered=True)) == (
        "momentum must be 0 when no momentum_buffers are given, got 0.5"
    )
    assert RULES["rmsprop"].slot_error(dict(momentum=0.5), dict(with_momentum=True, centered=False)) is None
    assert RULES["rmsprop"].slot_error(dict(momentum=0.0), dict(with_momentum=False, centered=False)) is None


def test_every_rule_starts_with_lr_and_names_its_ops():
    for rule in RULES.values():
        assert rule.params[0] is _rules.LR
        assert rule.fused_ops == (
            f"pyopt_apply_{rule.core}",
            f"pyopt_apply_{rule.core}_multi",
            f"pyopt_sparse_apply_{rule.core}_multi",
        )
        assert all(not s.optional for s in rule.required_slots) and rule.param("lr") is _rules.LR
    traits = [rule for name, rule in RULES.items() if rule.core == name]
    assert _loader.op_functions() == tuple(op for rule in traits for op in rule.fused_ops)


CHECKS = [
    (-1, ValueError, "lr must be a finite number >= 0, got -1"),
    (math.nan, ValueError, "lr must be a finite number >= 0, got nan"),
    (math.inf, ValueError, "lr must be a finite number >= 0, got inf"),
    (10**400, ValueError, f"lr must be a finite number, got int: {str(10**400)[:77]}..."),
    ("0.1", TypeError, "lr must be a real number, got str: '0.1'"),
    (True, TypeError, "lr must be a real number, got bool: True"),
    (None, TypeError, "lr must be a real number, got NoneType: None"),
]


@pytest.mark.parametrize("value, error, message", CHECKS, ids=[message for _, _, message in CHECKS])
def test_one_check_words_every_message(value, error, message):
    with pytest.raises(error) as info:
        _rules.check(_rules.LR, value)
    assert str(info.value) == message


def test_check_returns_floats_and_ints():
    assert _rules.check(_rules.LR, np.float32(0.5)) == 0.5 and type(_rules.check(_rules.LR, 1)) is float
    step = RULES["adam"].param("step")
    assert _rules.check(step, np.int64(3)) == 3 and type(_rules.check(step, np.int64(3))) is int
    with pytest.raises(TypeError, match=r"^step must be an int, got float: 1.0$"):
        _rules.check(step, 1.0)
    with pytest.raises(ValueError, match=r"^step must be an integer >= 1, got 0$"):
        _rules.check(step, 0)
    with pytest.raises(ValueError, match=r"^beta must be in \[0, 1\], got 1.5$"):
        _rules.check(RULES["momentum"].param("momentum"), 1.5, name="beta")
    with pytest.raises(ValueError, match=r"^clipnorm must be a finite number > 0 \(or None\), got 0$"):
        _rules.check(_rules.CLIPNORM, 0.0)
    assert _rules.check_flag("nesterov", np.bool_(True)) is True
    with pytest.raises(TypeError, match=r"^nesterov must be a bool, got int: 1$"):
        _rules.check_flag("nesterov", 1)


def test_dtype_message_is_the_core_s():
    core = pytest.importorskip("pyopt._core")
    for dtype in BAD_DTYPES:
        p = np.ones(3, dtype)
        with pytest.raises(TypeError) as info:
            core.gradient_descent([p], [p.copy()], lr=0.1)
        assert str(info.value) == _rules.dtype_error("params[0]", dtype)
    assert _rules.dtype_error("x", "float32") is None
    assert _rules.dtype_error("x", "int32") == "x has dtype int32; supported: float16, bfloat16, float32, float64"


# --------------------------------------------------------------------------- unsupported dtypes


def _kernels(rule, dtype):
    pytest.importorskip("pyopt._core")
    arrays = [np.array([10, 20], dtype) for _ in range(2 + len(RULES[rule].required_slots))]

    def step():
        call_multi(rule, arrays[:1], arrays[1:2], [arrays[2:]], **HYPER[rule])

    return step, lambda: [a.copy() for a in arrays], "params[0]"


def _tf_variables(rule, dtype):
    tf = pytest.importorskip("tensorflow")
    return tf, [tf.Variable(tf.constant([10, 20], dtype)) for _ in range(1 + len(RULES[rule].required_slots))]


def _ops(backend):
    def build(rule, dtype):
        from test_tf_sparse import call

        tf, (var, *slots) = _tf_variables(rule, dtype)
        grads = [tf.constant([1, 1], dtype)]
        step = lambda: call(rule, [var], grads, [[s] for s in slots], backend=backend)
        return step, lambda: [v.numpy() for v in (var, *slots)], "variables[0]"

    return build


def _keras(rule, dtype):
    keras = pytest.importorskip("keras")
    tf = pytest.importorskip("tensorflow")
    import pyopt.optimizers as po

    make = {
        "gradient_descent": po.GradientDescent,
        "momentum": po.Momentum,
        "adam": po.Adam,
        "adagrad": po.Adagrad,
        "rmsprop": po.RMSprop,
        "adamax": po.Adamax,
        "nadam": po.Nadam,
        "lion": po.Lion,
        "adamw": po.AdamW,
    }[rule]
    var = keras.Variable(np.array([10, 20], dtype), dtype=dtype)
    optimizer = make(0.1)
    optimizer.build([var])  # its slots, of the variable's dtype, and the iteration counter

    def step():
        optimizer.apply_gradients([(tf.constant([1, 1], dtype), var)])

    return step, lambda: [v.numpy() for v in (var, *optimizer.variables)], "variables[0]"


def _legacy(rule, dtype):
    pytest.importorskip("tf_keras")
    import pyopt.legacy as pl

    tf, (var, *_) = _tf_variables(rule, dtype)
    make = {
        "gradient_descent": pl.GradientDescent,
        "momentum": pl.Momentum,
        "adam": pl.Adam,
        "adagrad": pl.Adagrad,
        "rmsprop": pl.RMSprop,
    }[rule]
    optimizer = make(0.1, backend="tf")

    def step():
        optimizer.apply_gradients([(tf.constant([1, 1], dtype), var)])

    return step, lambda: [var.numpy()], var.name


FRONT_ENDS = {"kernels": _kernels, "ops-tf": _ops("tf"), "ops-fused": _ops("fused"), "keras": _keras, "legacy": _legacy}
LEGACY_RULES = ("gradient_descent", "momentum", "adam", "adagrad", "rmsprop")  # pyopt.legacy's optimizers


def _front_end_cases():
    out = []
    for rule in RULES:
        for front_end in FRONT_ENDS:
            if front_end == "legacy" and rule not in LEGACY_RULES:
                continue
            for dtype in BAD_DTYPES:
                out.append(pytest.param(rule, front_end, dtype, id=f"{rule}-{front_end}-{dtype}"))
    return out


@pytest.mark.parametrize("rule, front_end, dtype", _front_end_cases())
def test_an_unsupported_dtype_is_refused_alike(rule, front_end, dtype):
    """pyopt.ops refuses it on both backends before choosing one (the pure-TF path would run
    integer maths, 10 - 2.0*1 = 8, and Adam's sqrt would fail in TF's words)."""
    step, values, name = FRONT_ENDS[front_end](rule, dtype)
    before = values()
    with pytest.raises(TypeError) as info:
        step()
    assert str(info.value) == _rules.dtype_error(name, dtype)
    for a, b in zip(values(), before, strict=True):
        np.testing.assert_array_equal(a, b)
