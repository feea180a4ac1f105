"""Property tests of the TF API (pyopt.ops) on both backends, with hypothesis.

Random shapes (including empty ones and sizes that don't fill a vector), dtypes and valid
hyperparameters give the float64 reference's result (tolerances of test_tf_ops.py, with the
pure-TF backend allowed the same k*eps bound, relative to the param update's operands as
well: reference.param_operand_scale); random bad calls (wrong list lengths, shape or
dtype mismatch, out-of-range or non-finite hyperparameters) raise a clear Python exception and
leave every variable untouched: the same variable twice among variables and slots, and
tensor-valued hyperparameters out of range (InvalidArgumentError when the step runs), too.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

tf = pytest.importorskip("tensorflow")

import reference as ref
from kernel_cases import DTYPES, random_state
from test_tf_ops import assert_close
from test_tf_sparse import call

from pyopt import _loader, ops

BACKENDS = ["tf"] + (["fused"] if _loader._try_load() is not None else [])
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.lists(st.integers(0, 40), min_size=0, max_size=3).map(tuple)
hyper_rules = st.sampled_from(list(ref.SLOTS))
TINY = float(np.finfo(np.float64).tiny)  # the smallest normal float64


@st.composite
def valid_steps(draw):
    """Hyperparameter ranges as tests/test_kernels_property.py draws them (beta_2 of the second
    moments and rho >= 0.5, so that v and v - a*a do not cancel to ~0; see there)."""
    rule = draw(hyper_rules)
    hyper = dict(lr=draw(st.floats(0.0, 0.5)))
    if rule == "momentum":
        hyper.update(momentum=draw(st.floats(0.0, 1.0)), nesterov=draw(st.booleans()))
    elif rule.startswith("adam") or rule in ("adamax", "nadam"):
        hyper.update(
            beta_1=draw(st.floats(0.0, 0.99)),
            beta_2=draw(st.floats(0.0, 1.0) if rule == "adamax" else st.floats(0.5, 0.9999)),
            epsilon=draw(st.floats(1e-8, 1e-2)),
            step=draw(st.integers(1, 1000)),
        )
        if rule == "nadam":
            hyper["u_product"] = draw(st.floats(0.0, 0.99))
    elif rule == "adagrad":
        hyper["epsilon"] = draw(st.floats(1e-8, 1e-2))
    elif rule.startswith("rmsprop"):
        hyper.update(rho=draw(st.floats(0.5, 1.0)), epsilon=draw(st.floats(1e-8, 1e-2)))
        if "momentum_buffer" in ref.SLOTS[rule]:
            hyper["momentum"] = draw(st.floats(0.0, 1.0))
    elif rule == "lion":
        # beta_1 in (0, 1], not subnormal: the fused op refuses those (test_tf_api_checks.py,
        # test_subnormal_hyperparameters_are_in_range)
        hyper.update(beta_1=draw(st.floats(TINY, 1.0)), beta_2=draw(st.floats(0.0, 1.0)))
    clip = draw(st.sampled_from([None, "clipnorm", "global_clipnorm"]))
    if clip:
        hyper[clip] = draw(st.floats(0.1, 10.0))
    hyper["weight_decay"] = draw(st.sampled_from([0.0, 0.01, 0.3]))
    return rule, hyper, draw(st.lists(shapes, min_size=1, max_size=4)), draw(st.sampled_from(list(DTYPES)))


@pytest.mark.parametrize("backend", BACKENDS)
@SETTINGS
@given(step=valid_steps(), seed=st.integers(0, 2**16))
# beta_1 = 0: m + (g - m)*1 cancels to g with an error ~eps*|m_old| >> eps*|g|, which the
# step divides by a small sqrt(v) (found by hypothesis in CI).
@example(
    step=(
        "adam",
        dict(lr=0.5, beta_1=0.0, beta_2=0.5, epsilon=6.103515625e-05, step=1, clipnorm=0.5, weight_decay=0.0),
        [(3, 12, 27)],
        "float32",
    ),
    seed=0,
)
def test_random_valid_steps_match_reference(backend, step, seed):
    rule, hyper, shape_list, dtype = step
    rng = np.random.default_rng(seed)
    states = [random_state(rule, s, DTYPES[dtype], rng) for s in shape_list]
    variables = [tf.Variable(p) for p, _, _ in states]
    slots = [[tf.Variable(s[k]) for _, _, s in states] for k in range(len(ref.SLOTS[rule]))]
    assert call(rule, variables, [tf.constant(g) for _, g, _ in states], slots, backend=backend, **hyper) == backend
    written = [v.numpy() for v in variables]  # Lion: a sign tie of the reference follows the step
    expected = ref.step_multi(
        rule, [p for p, _, _ in states], [g for _, g, _ in states], [s for _, _, s in states], ties=written, **hyper
    )
    for i, (p, g, s) in enumerate(states):
        got = [variables[i].numpy(), *(lst[i].numpy() for lst in slots)]
        operands = ref.param_operand_scale(rule, g, s, expected[i][1:], **hyper)
        for k, before in enumerate([p, *s]):
            assert_close(
                got[k],
                expected[i][k],
                before,
                dtype,
                f"{backend} {rule} array {k} of tensor {i}",
                scale=operands if k == 0 else 0.0,
            )


BAD = [
    ("lengths", ValueError, r"grads has 1 entries but variables has 2|has 1"),
    ("shape", Exception, r"shape"),
    ("dtype", Exception, r"dtype|float"),
    ("lr", ValueError, r"lr"),
    ("clip", ValueError, r"clipnorm"),
    ("step", (TypeError, ValueError), r"step"),
    ("beta", ValueError, r"beta_1"),
    # One variable twice: a slot list given twice, or a variable as its own slot.
    ("alias slots", ValueError, r"ms\[\d\] and vs\[\d\] are the same variable; each must be separate"),
    ("alias variable", ValueError, r"variables\[1\] and (ms|vs)\[1\] are the same variable; each must be separate"),
    ("alias velocity", ValueError, r"variables\[0\] and velocities\[1\] are the same variable"),
    # Tensor-valued hyperparameters: checked when the step runs, with the fused op's words.
    ("tensor lr", tf.errors.InvalidArgumentError, r"lr must be a finite number >= 0"),
    ("tensor step", tf.errors.InvalidArgumentError, r"step must be an integer >= 1"),
    ("tensor beta_2", tf.errors.InvalidArgumentError, r"beta_2 must be in \[0, 1\)"),
    ("tensor epsilon", tf.errors.InvalidArgumentError, r"epsilon must be a finite number > 0"),
    ("tensor momentum", tf.errors.InvalidArgumentError, r"momentum must be in \[0, 1\]"),
    ("tensor u_product", tf.errors.InvalidArgumentError, r"u_product must be in \[0, 1\)"),
    ("tensor rho", tf.errors.InvalidArgumentError, r"rho must be in \[0, 1\]"),
    # RMSprop's momentum needs momentum buffers: a number when the step is built, a tensor when it runs.
    ("rmsprop momentum", ValueError, r"momentum must be 0 when no momentum_buffers are given, got"),
    ("tensor rmsprop momentum", tf.errors.InvalidArgumentError, r"momentum must be 0 when no momentum_buffers"),
    ("alias average", ValueError, r"variables\[1\] and average_gradients\[1\] are the same variable"),
]
# The rule each kind calls (Adam when not named).
RULE_OF = {
    "tensor momentum": "momentum",
    "alias velocity": "momentum",
    "tensor u_product": "nadam",
    "tensor rho": "rmsprop",
    "rmsprop momentum": "rmsprop",
    "tensor rmsprop momentum": "rmsprop",
    "alias average": "rmsprop",
}


def _every_kind(test):
    """One explicit example of each kind (eager and in a tf.function), besides the random ones."""
    for k, which in enumerate(BAD):
        test = example(which=which, size=k + 1, nan=k % 2 == 0, function=k % 2 == 1)(test)
    return test


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20, deadline=None)
@given(which=st.sampled_from(BAD), size=st.integers(1, 30), nan=st.booleans(), function=st.booleans())
@_every_kind
def test_random_bad_calls_raise_and_write_nothing(backend, which, size, nan, function):
    kind, error, match = which
    variables = [tf.Variable(np.ones(size, np.float32)), tf.Variable(np.ones(3, np.float32))]
    ms = [tf.Variable(np.zeros(size, np.float32)), tf.Variable(np.zeros(3, np.float32))]
    vs = [tf.Variable(np.zeros(size, np.float32)), tf.Variable(np.zeros(3, np.float32))]
    grads = [tf.ones(size), tf.ones(3)]
    hyper = dict(lr=0.1, step=1)
    watched = variables + ms + vs
    call_ms, call_vs = ms, vs
    if kind == "lengths":
        grads = grads[:1]
    elif kind == "shape":
        grads = [tf.ones(size + 1), tf.ones(3)]
    elif kind == "dtype":
        grads = [tf.ones(size, tf.float64), tf.ones(3, tf.float64)]
    elif kind == "lr":
        hyper["lr"] = float("nan") if nan else -0.5
    elif kind == "clip":
        hyper["clipnorm"] = float("inf") if nan else -1.0
    elif kind == "step":
        hyper["step"] = 0 if nan else 1.5
    elif kind == "beta":
        hyper["beta_1"] = float("nan") if nan else 1.0
    elif kind == "alias slots":
        call_vs = ms if nan else [vs[0], ms[1]]
    elif kind == "alias variable":
        call_ms, call_vs = ([ms[0], variables[1]], vs) if nan else (ms, [vs[0], variables[1]])
    elif kind == "alias velocity":
        call_ms = [ms[0], variables[0]]
    elif kind == "tensor lr":
        value = float("nan") if nan else -0.5
        hyper["lr"] = tf.Variable(value) if size % 2 else tf.constant(value, tf.float64)
    elif kind == "tensor step":
        hyper["step"] = tf.constant(0 if nan else -3, tf.int64 if size % 2 else tf.int32)
    elif kind == "tensor beta_2":
        hyper["beta_2"] = tf.constant(float("nan") if nan else 1.0)
    elif kind == "tensor epsilon":
        hyper["epsilon"] = tf.constant(float("inf") if nan else 0.0, tf.float64)
    elif kind == "tensor momentum":
        hyper = dict(lr=tf.constant(0.1), momentum=tf.Variable(float("nan") if nan else 1.5))
    elif kind == "tensor u_product":
        value = float("nan") if nan else 1.0
        hyper["u_product"] = tf.Variable(value, dtype=tf.float64) if size % 2 else tf.constant(value, tf.float64)
    elif kind == "tensor rho":
        hyper = dict(lr=0.1, rho=tf.constant(float("nan") if nan else 1.5, tf.float64))
    elif kind == "rmsprop momentum":
        hyper = dict(lr=0.1, momentum=0.5 if nan else 5e-324)
    elif kind == "tensor rmsprop momentum":
        hyper = dict(lr=0.1, momentum=tf.Variable(0.5) if nan else tf.constant(1e-3, tf.float64))
    elif kind == "alias average":
        hyper, call_vs = dict(lr=0.1), [vs[0], variables[1]]
    rule = RULE_OF.get(kind, "adam")
    before = [v.numpy().copy() for v in watched]

    def step(hyper):
        if rule == "momentum":
            ops.momentum_multi(
                variables, grads, call_ms, backend=backend, lr=hyper["lr"], momentum=hyper.get("momentum", 0.9)
            )
        elif rule == "rmsprop":  # ms as the velocities, vs as the average gradients (centered) when aliased
            averages = call_vs if kind == "alias average" else None
            ops.rmsprop_multi(variables, grads, call_ms, average_gradients=averages, backend=backend, **hyper)
        elif rule == "nadam":
            ops.nadam_multi(variables, grads, call_ms, call_vs, backend=backend, **dict(dict(u_product=0.5), **hyper))
        else:
            ops.adam_multi(variables, grads, call_ms, call_vs, backend=backend, **hyper)

    with pytest.raises(error, match=match):
        (tf.function(step) if function else step)(hyper)
    for v, b in zip(watched, before):
        np.testing.assert_array_equal(v.numpy(), b)
