"""The checks of pyopt.ops (pyopt/ops/_api.py) that run before either backend.

- No variable twice among the variables and slots: a Python check, eagerly and when a
  tf.function is traced, the same ValueError on both backends.
- Hyperparameters: Python numbers checked when the step is built (the core's words, compared
  here with pyopt._core's checks); tensors and variables checked when the step runs, on the
  pure-TF backend by one assertion each (the fused ops check their inputs themselves), with
  nothing written; none under XLA, which compiles assertions into no-ops.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from test_tf_ops import snapshot
from test_tf_sparse import call

from pyopt import _loader, _rules, ops
from pyopt._rules import RULES

BACKENDS = ["tf"] + (["fused"] if _loader._try_load() is not None else [])
MODES = ["eager", "tf.function"]


def _run(mode, call):
    if mode == "eager":
        return call()

    @tf.function
    def run():
        call()

    return run()


def _vars(*values):
    return [tf.Variable(np.array(v, np.float64)) for v in values]


def _unchanged(variables, before):
    return all(np.array_equal(v.numpy(), b) for v, b in zip(variables, before))


# --------------------------------------------------------------------------- the same variable twice


def _alias_cases():
    """name -> build(): (variables to watch, call, exact message)."""
    g = lambda: tf.constant([1.0, 2.0], tf.float64)

    def adam_m_is_v(backend):
        v, m = _vars([1.0, 2.0], [0.0, 0.0])
        return (
            [v, m],
            lambda: ops.adam_multi([v], [g()], [m], [m], lr=0.1, step=1, backend=backend),
            "ms[0] and vs[0] are the same variable; each must be separate",
        )

    def momentum_own_velocity(backend):
        (v,) = _vars([1.0, 2.0])
        return (
            [v],
            lambda: ops.momentum_multi([v], [g()], [v], lr=0.1, momentum=0.9, backend=backend),
            "variables[0] and velocities[0] are the same variable; each must be separate",
        )

    def variable_twice(backend):
        v, w = _vars([1.0, 2.0], [3.0, 4.0])
        return (
            [v, w],
            lambda: ops.gradient_descent_multi([v, w, v], [g(), g(), g()], lr=0.1, backend=backend),
            "variables[0] and variables[2] are the same variable; each must be separate",
        )

    def amsgrad_vhat_is_m(backend):
        v, w, m0, m1, s0, s1, h0 = _vars(*([[1.0, 2.0]] * 7))

        def call():
            return ops.adam_multi(
                [v, w], [g(), g()], [m0, m1], [s0, s1], vhats=[h0, m1], lr=0.1, step=1, backend=backend
            )

        return [v, w, m0, m1, s0, s1, h0], call, "ms[1] and vhats[1] are the same variable; each must be separate"

    def keras_variable_and_its_tf_variable(backend):
        keras = pytest.importorskip("keras")
        v = keras.Variable(np.array([1.0, 2.0]), dtype="float64")
        m = keras.Variable(np.zeros(2), dtype="float64")

        def call():
            return ops.momentum_multi([v], [g()], [v._value], lr=0.1, momentum=0.9, backend=backend)

        return [v, m], call, "variables[0] and velocities[0] are the same variable; each must be separate"

    return {
        f.__name__: f
        for f in (
            adam_m_is_v,
            momentum_own_velocity,
            variable_twice,
            amsgrad_vhat_is_m,
            keras_variable_and_its_tf_variable,
        )
    }


ALIAS = _alias_cases()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(ALIAS))
def test_the_same_variable_twice_is_refused_on_both_backends(case, backend, mode):
    watch, call, message = ALIAS[case](backend)
    before = snapshot(watch)
    with pytest.raises(ValueError) as info:
        _run(mode, call)
    assert message in str(info.value)
    assert _unchanged(watch, before), "a refused step must not write"


@pytest.mark.parametrize("backend", BACKENDS)
def test_distinct_variables_with_equal_values_are_accepted(backend):
    v, m, s = _vars([1.0], [0.0], [0.0])  # m and s equal, and not the same variable
    assert ops.adam_multi([v], [tf.constant([1.0], tf.float64)], [m], [s], lr=0.1, step=1, backend=backend) == backend
    assert v.numpy()[0] < 1.0


# --------------------------------------------------------------------------- Python-number hyperparameters


def test_python_checks_say_what_the_core_says():
    """The rule table's checks (pyopt._rules; the TF API needs no pyopt._core) word their
    messages as the core does, for every hyperparameter of every rule."""
    core = pytest.importorskip("pyopt._core")
    values = [-1.0, -0.5, -0.0, 0.0, 5e-324, 1e-7, 0.1, 0.5, 0.999, 1.0, 1.5, 1e300, math.inf, -math.inf, math.nan]
    steps = [-(2**40), -3, 0, 1, 2, 2**40]
    for rule in RULES.values():
        check = getattr(core, rule.core_check)
        valid = {p.name: VALID[p.name] for p in rule.params}
        for param in rule.params:
            for x in steps if param.range.integer else values:
                assert (param.error(x) or "") == check(**dict(valid, **{param.name: x})), (rule.name, param.name, x)
    for x in values:
        assert (_rules.WEIGHT_DECAY.error(x) or "") == core.check_weight_decay(x), x


def test_a_number_is_checked_even_when_another_hyperparameter_is_a_tensor():
    """The Keras optimizers pass lr and step as tensors and the betas as numbers."""
    v, m, s = _vars([1.0], [0.0], [0.0])
    with pytest.raises(ValueError, match=r"beta_1 must be in \[0, 1\), got 1.5"):
        ops.adam_multi(
            [v],
            [tf.constant([1.0], tf.float64)],
            [m],
            [s],
            lr=tf.constant(0.1),
            beta_1=1.5,
            step=tf.constant(1),
            backend="tf",
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_static_errors(backend):
    v, w = _vars([1.0], [2.0])
    g = [tf.constant([1.0], tf.float64)] * 2
    with pytest.raises(ValueError, match=r"lr must be a scalar, got shape \[2\]"):
        ops.gradient_descent_multi([v], g[:1], lr=tf.constant([0.1, 0.2]), backend=backend)
    with pytest.raises(TypeError, match=r"clipnorm must be a Python number > 0 or None, got EagerTensor"):
        ops.gradient_descent_multi([v], g[:1], lr=0.1, clipnorm=tf.constant(1.0), backend=backend)
    with pytest.raises(ValueError, match=r"weight_decay\[1\] must be a finite number >= 0, got -0.5"):
        ops.gradient_descent_multi([v, w], g, lr=0.1, weight_decay=[0.0, -0.5], backend=backend)
    with pytest.raises(ValueError, match=r"^weight_decay must be a finite number >= 0, got nan"):
        ops.gradient_descent_multi([v, w], g, lr=0.1, weight_decay=math.nan, backend=backend)
    assert v.numpy()[0] == 1.0 and w.numpy()[0] == 2.0


# --------------------------------------------------------------------------- tensor hyperparameters

# (rule, hyperparameter, bad value, message as both backends write it: the fused op
# "lr must be a finite number >= 0, got -1", the assertion "[lr must be ..., got] [-1]")
BAD_TENSORS = [
    ("gradient_descent", "lr", -1.0, r"lr must be a finite number >= 0, got\]? \[?-1"),
    ("gradient_descent", "lr", math.nan, r"lr must be a finite number >= 0, got\]? \[?nan"),
    ("momentum", "lr", math.inf, r"lr must be a finite number >= 0, got\]? \[?inf"),
    ("momentum", "momentum", 1.5, r"momentum must be in \[0, 1\], got\]? \[?1.5"),
    ("momentum", "momentum", -0.25, r"momentum must be in \[0, 1\], got\]? \[?-0.25"),
    ("adam", "beta_1", 1.0, r"beta_1 must be in \[0, 1\), got\]? \[?1"),
    ("adam", "beta_2", math.nan, r"beta_2 must be in \[0, 1\), got\]? \[?nan"),
    ("adam", "epsilon", 0.0, r"epsilon must be a finite number > 0, got\]? \[?0"),
    ("adam", "step", 0, r"step must be an integer >= 1, got\]? \[?0"),
    ("adam", "step", -5, r"step must be an integer >= 1, got\]? \[?-5"),
    ("adagrad", "epsilon", -1.0, r"epsilon must be a finite number > 0, got\]? \[?-1"),
    ("rmsprop", "rho", 1.5, r"rho must be in \[0, 1\], got\]? \[?1.5"),
    ("rmsprop", "momentum", 0.5, r"momentum must be 0 when no momentum_buffers are given, got\]? \[?0.5"),
    ("adamax", "beta_2", 1.5, r"beta_2 must be in \[0, 1\], got\]? \[?1.5"),
    ("nadam", "u_product", 1.0, r"u_product must be in \[0, 1\), got\]? \[?1"),
    ("nadam", "step", 0, r"step must be an integer >= 1, got\]? \[?0"),
    ("lion", "beta_1", 0.0, r"beta_1 must be in \(0, 1\], got\]? \[?0"),
    ("lion", "beta_2", -0.5, r"beta_2 must be in \[0, 1\], got\]? \[?-0.5"),
]
VALID = dict(lr=0.1, momentum=0.9, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=3, rho=0.9, u_product=0.5)
NAMES = {name: rule.param_names for name, rule in RULES.items()}


def _valid(rule):
    """VALID for ``rule`` as _step calls it (required slots only: RMSprop without momentum buffers)."""
    return dict(VALID, momentum=0.0) if rule == "rmsprop" else VALID


def _step(rule, hyper, backend, variables=None):
    """One step of ``rule`` on fresh float64 variables (or ``variables``): (variables, call)."""
    variables = variables or _vars([1.0, -2.0, 3.0], [0.1, 0.2, -0.3], [0.01, 0.02, 0.03])
    v, *slots = variables
    g = [tf.constant([0.5, -1.0, 2.0], tf.float64)]
    slot_lists = [[x] for x in slots[: len(RULES[rule].required_slots)]]
    return variables, lambda: call(rule, [v], g, slot_lists, backend=backend, **{k: hyper[k] for k in NAMES[rule]})


def _tensor(name, value, variable=False):
    t = tf.constant(int(value), tf.int64) if name == "step" else tf.constant(value, tf.float64)
    return tf.Variable(t) if variable else t


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule, name, value, match", BAD_TENSORS, ids=[f"{n}={v}" for _, n, v, _ in BAD_TENSORS])
def test_bad_tensor_hyperparameter_raises_when_the_step_runs(rule, name, value, match, backend, mode):
    hyper = dict(_valid(rule), **{name: _tensor(name, value, variable=mode == "eager")})
    variables, call = _step(rule, hyper, backend)
    before = snapshot(variables)
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        _run(mode, call)
    assert _unchanged(variables, before), "a failed step must not write"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", list(NAMES))
def test_tensor_hyperparameters_give_the_number_result(rule, backend, mode):
    """Every hyperparameter as a float64 tensor (step int64) gives bit for bit the step with numbers."""
    expected, call = _step(rule, _valid(rule), backend)
    call()
    got, call = _step(rule, {k: _tensor(k, v) for k, v in _valid(rule).items()}, backend)
    _run(mode, call)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def _op_types(function, *args):
    return [op.type for op in function.get_concrete_function(*args).graph.get_operations()]


def test_one_assertion_per_tensor_hyperparameter_and_none_under_xla():
    v, m, s = _vars([1.0, 2.0], [0.0, 0.0], [0.0, 0.0])
    lr = tf.Variable(0.01, dtype=tf.float64)

    def step(lr, step_count, beta_1):
        ops.adam_multi(
            [v], [tf.constant([1.0, 1.0], tf.float64)], [m], [s], lr=lr, beta_1=beta_1, step=step_count, backend="tf"
        )

    t, beta_1 = tf.constant(1, tf.int64), tf.constant(0.9, tf.float64)
    assert _op_types(tf.function(lambda: step(lr, t, 0.9))).count("Assert") == 2  # lr, step (Keras' case)
    assert _op_types(tf.function(lambda: step(lr, t, beta_1))).count("Assert") == 3
    assert _op_types(tf.function(lambda: step(0.01, 1, 0.9))).count("Assert") == 0  # numbers: checked when traced
    assert _op_types(tf.function(lambda: step(lr, t, beta_1), jit_compile=True)).count("Assert") == 0


def test_tensor_hyperparameters_under_xla():
    """XLA compiles the pure-TF step with tensor hyperparameters (no assertions there: XLA
    compiles them into no-ops) and gives the result of the step outside XLA."""
    expected, call = _step("adam", {k: _tensor(k, v) for k, v in VALID.items()}, "tf")
    call()
    got = _vars([1.0, -2.0, 3.0], [0.1, 0.2, -0.3], [0.01, 0.02, 0.03])
    v, m, s = got

    @tf.function(jit_compile=True)
    def step(lr, beta_1, beta_2, epsilon, t):
        used = ops.adam_multi(
            [v],
            [tf.constant([0.5, -1.0, 2.0], tf.float64)],
            [m],
            [s],
            lr=lr,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            step=t,
        )
        assert used == "tf"  # "auto" inside XLA

    step(*(_tensor(k, VALID[k]) for k in ("lr", "beta_1", "beta_2", "epsilon", "step")))
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-13, atol=1e-15)


def test_rmsprop_momentum_tensor_is_asserted_0_without_momentum_buffers():
    """A tensor momentum: one assertion for its range and, without momentum buffers, one that it
    is 0 (RMSprop then has no buffer to apply it to); a 0 passes both."""
    v, s, b = _vars([1.0, 2.0], [0.1, 0.1], [0.0, 0.0])
    momentum = tf.Variable(0.0, dtype=tf.float64)
    g = tf.constant([1.0, -1.0], tf.float64)

    def step(**buffers):
        ops.rmsprop_multi([v], [g], [s], lr=0.1, momentum=momentum, backend="tf", **buffers)

    assert _op_types(tf.function(lambda: step())).count("Assert") == 2
    assert _op_types(tf.function(lambda: step(momentum_buffers=[b]))).count("Assert") == 1
    step()
    w, t = _vars([1.0, 2.0], [0.1, 0.1])
    ops.rmsprop_multi([w], [g], [t], lr=0.1, backend="tf")
    assert np.array_equal(v.numpy(), w.numpy()) and np.array_equal(s.numpy(), t.numpy())


SUBNORMAL = [("lion", "beta_1"), ("adam", "epsilon"), ("rmsprop", "epsilon")]


@pytest.mark.parametrize("backend", ["tf", "fused"])
@pytest.mark.parametrize("rule, name", SUBNORMAL)
def test_subnormal_hyperparameters_are_in_range(rule, name, backend):
    """5e-324 > 0: in range for Lion's beta_1 in (0, 1] and every epsilon > 0, as the rule table
    and pyopt._core say; the step runs and gives the step with the number 1e-300 in its place
    for Lion (sign(b1*m + (1 - b1)*g) with m = 0) and for epsilon where it is negligible."""
    if backend == "fused" and _loader._try_load() is None:
        pytest.skip("no op library")
    core = pytest.importorskip("pyopt._core")
    valid = {p.name: _valid(rule)[p.name] for p in RULES[rule].params}
    assert getattr(core, RULES[rule].core_check)(**dict(valid, **{name: 5e-324})) == ""
    assert RULES[rule].param(name).error(5e-324) is None
    results = []
    for value in (5e-324, 1e-300):
        variables, call_step = _step(rule, dict(_valid(rule), **{name: value}), backend)
        call_step()
        results.append([x.numpy() for x in variables])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)
