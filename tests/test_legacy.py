"""pyopt.legacy: the chapter's tf_keras (Keras 2) optimizers against tf_keras' own legacy ones.

References: ``tf_keras.optimizers.legacy.SGD`` / ``Adam`` / ``Adagrad`` / ``RMSprop`` (float32/float64,
same steps from the same start), and float64 NumPy rules: ``tests/reference.py``'s, and for
Adagrad/RMSprop this file's ``_adagrad_f64`` / ``_rmsprop_f64``, written from the formulas in both
placements of epsilon (pyopt's, under the square root; legacy's, after it), for float16/bfloat16
(legacy Keras does half-precision maths in half precision, pyopt in float32).

Tolerances (float32; float64: rtol=1e-12, atol=1e-14): pyopt computes the decayed learning rate and
Adam's bias correction in float64 and rounds once, legacy Keras in float32, and pyopt's Adam
writes ``m + (g-m)*(1-b1)`` where TF writes ``b1*m + (1-b1)*g``: a few float32 ulps per step,
``rtol=1e-5, atol=1e-6`` after 4 steps (measured: a few 1e-7 absolute at most). GD and momentum do the
same operations in the same order (equal up to the float64 learning rate, atol 1e-6).

Adagrad and RMSprop: ours against the float64 rule with epsilon under the root and legacy Keras
against the one with legacy's placement, each at the tolerances above; ours against legacy Keras at
those tolerances plus, elementwise, the float64 difference of the two placements (0 for RMSprop with
momentum, whose TF kernels put epsilon under the root). For Adagrad that difference is at most
1.84e-7 of a step (accumulators >= 0.1, epsilon 1e-7): float32 runs must match legacy at the plain
tolerances. For RMSprop without momentum it is not rounding
(test_epsilon_placement_differences_are_as_documented).

Every test runs on both backends where it matters ("tf": pure-TF maths; "fused": the custom
op, skipped when the op library is not built). ``TF_USE_LEGACY_KERAS`` is not set: tf_keras
is imported explicitly, so the other test files keep Keras 3.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

tf_keras = pytest.importorskip("tf_keras", reason='pyopt.legacy needs tf_keras: pip install "pyopt[legacy]"')
import reference
import tensorflow as tf

import pyopt.legacy as pl
import pyopt.ops

legacy = tf_keras.optimizers.legacy


def _fused_reason():
    try:
        return pyopt.ops.fused_unsupported_reason([tf.Variable([0.0])], [tf.constant([0.0])])
    except ImportError as exc:  # the fused backend's Python module is missing
        return str(exc)


@pytest.fixture(params=["tf", "fused"])
def backend(request):
    if request.param == "fused" and _fused_reason() is not None:
        pytest.skip(f"fused backend unavailable: {_fused_reason()}")
    return request.param


# name -> (pyopt.legacy factory, tf_keras legacy factory); both take the extra keyword arguments.
CASES = {
    "gd": (lambda **kw: pl.GradientDescent(0.1, **kw), lambda **kw: legacy.SGD(0.1, **kw)),
    "momentum": (lambda **kw: pl.Momentum(0.05, beta=0.9, **kw), lambda **kw: legacy.SGD(0.05, momentum=0.9, **kw)),
    "nesterov": (
        lambda **kw: pl.Momentum(0.05, beta=0.8, nesterov=True, **kw),
        lambda **kw: legacy.SGD(0.05, momentum=0.8, nesterov=True, **kw),
    ),
    "adam": (lambda **kw: pl.Adam(0.01, **kw), lambda **kw: legacy.Adam(0.01, **kw)),
    "amsgrad": (
        lambda **kw: pl.Adam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-5, amsgrad=True, **kw),
        lambda **kw: legacy.Adam(0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-5, amsgrad=True, **kw),
    ),
}
# Adagrad and RMSprop (one per slot combination); compared with float64 references besides tf_keras.
RULE_CASES = {
    "adagrad": (lambda **kw: pl.Adagrad(0.1, **kw), lambda **kw: legacy.Adagrad(0.1, **kw)),
    "rmsprop": (lambda **kw: pl.RMSprop(0.01, **kw), lambda **kw: legacy.RMSprop(0.01, **kw)),
    "rmsprop_centered": (
        lambda **kw: pl.RMSprop(0.02, rho=0.8, epsilon=1e-6, centered=True, **kw),
        lambda **kw: legacy.RMSprop(0.02, rho=0.8, epsilon=1e-6, centered=True, **kw),
    ),
    "rmsprop_momentum": (
        lambda **kw: pl.RMSprop(0.01, momentum=0.9, **kw),
        lambda **kw: legacy.RMSprop(0.01, momentum=0.9, **kw),
    ),
    "rmsprop_centered_momentum": (
        lambda **kw: pl.RMSprop(0.005, rho=0.95, momentum=0.5, epsilon=1e-5, centered=True, **kw),
        lambda **kw: legacy.RMSprop(0.005, rho=0.95, momentum=0.5, epsilon=1e-5, centered=True, **kw),
    ),
}
ALL_CASES = {**CASES, **RULE_CASES}
SHAPES = [(0,), (1,), (7,), (17,), (1023,), (3, 5)]
TOL = {tf.float32: dict(rtol=1e-5, atol=1e-6), tf.float64: dict(rtol=1e-12, atol=1e-14)}


def _make(case, backend, **kwargs):
    ours, ref = ALL_CASES[case]
    return ours(backend=backend, **kwargs), ref(**kwargs)


def _variables(shapes, dtype, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=s) for s in shapes]
    return [tf.Variable(v, dtype=dtype) for v in values], [tf.Variable(v, dtype=dtype) for v in values]


def _gradients(shapes, dtype, rng, scale=1.0):
    # signs vary and some entries are tiny, so Adam's v and amsgrad's max matter
    return [tf.constant(scale * rng.normal(size=s) * rng.choice([1e-3, 1.0], size=s), dtype=dtype) for s in shapes]


def _slots(opt, var):
    return [opt.get_slot(var, name).numpy() for name in opt.get_slot_names()]


def _assert_same_state(ours, ref, our_vars, ref_vars, tol):
    for a, b in zip(our_vars, ref_vars):
        np.testing.assert_allclose(a.numpy(), b.numpy(), **tol)
        for sa, sb in zip(_slots(ours, a), _slots(ref, b)):
            np.testing.assert_allclose(sa, sb, **tol)
    assert int(ours.iterations.numpy()) == int(ref.iterations.numpy())


def _compiled_step(opt, variables):
    """A tf.function applying a list of gradients to ``variables`` (one per optimizer)."""

    @tf.function(reduce_retracing=True)
    def step(grads):
        opt.apply_gradients(zip(grads, variables))

    return step


def _run_steps(ours, ref, shapes, dtype, *, steps=4, compiled=False, scale=1.0, seed=1):
    our_vars, ref_vars = _variables(shapes, dtype)
    if compiled:
        apply_ours, apply_ref = _compiled_step(ours, our_vars), _compiled_step(ref, ref_vars)
    else:
        apply_ours = lambda gs: ours.apply_gradients(zip(gs, our_vars))
        apply_ref = lambda gs: ref.apply_gradients(zip(gs, ref_vars))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        grads = _gradients(shapes, dtype, rng, scale)
        apply_ours(grads)
        apply_ref(grads)
    return our_vars, ref_vars


# --- defaults and configuration -------------------------------------------------------------


def test_defaults_match_legacy():
    ours, ref = pl.Adam().get_config(), legacy.Adam().get_config()
    for key in ("learning_rate", "beta_1", "beta_2", "epsilon", "amsgrad", "decay"):
        assert ours[key] == ref[key], key
    sgd = legacy.SGD().get_config()
    assert pl.GradientDescent().get_config()["learning_rate"] == sgd["learning_rate"]
    momentum = pl.Momentum().get_config()
    assert momentum["learning_rate"] == sgd["learning_rate"] and momentum["nesterov"] is False
    assert momentum["beta"] == pytest.approx(0.9)
    assert all(pl_opt().get_config()["backend"] == "auto" for pl_opt in (pl.GradientDescent, pl.Momentum, pl.Adam))


@pytest.mark.parametrize(
    "ours, ref, keys",
    [
        (pl.Adagrad, legacy.Adagrad, ("name", "learning_rate", "decay", "initial_accumulator_value", "epsilon")),
        (pl.RMSprop, legacy.RMSprop, ("name", "learning_rate", "decay", "rho", "momentum", "epsilon", "centered")),
    ],
    ids=["adagrad", "rmsprop"],
)
def test_adagrad_rmsprop_defaults_and_config_match_legacy(ours, ref, keys):
    """Same defaults and config keys as legacy Keras (ours adds only "backend"), so configs move
    between them: legacy's config builds ours, ours less "backend" builds legacy's."""
    for kwargs in ({}, dict(learning_rate=0.05, epsilon=1e-5, clipnorm=2.0)):
        config, ref_config = ours(**kwargs).get_config(), ref(**kwargs).get_config()
        assert set(config) == set(ref_config) | {"backend"}
        for key in keys:
            assert config[key] == pytest.approx(ref_config[key]), key
        assert ours.from_config(ref_config).get_config() == config
        assert ref.from_config({k: v for k, v in config.items() if k != "backend"}).get_config() == ref_config
    rms = pl.RMSprop(rho=0.8, momentum=0.5, centered=True).get_config()
    assert (rms["rho"], rms["momentum"], rms["centered"]) == (0.8, 0.5, True)
    assert pl.Adagrad(initial_accumulator_value=0.0, epsilon=None).get_config()["initial_accumulator_value"] == 0.0
    assert pl.Adagrad(epsilon=None).epsilon == pl.RMSprop(epsilon=0).epsilon == tf_keras.backend.epsilon()


@pytest.mark.parametrize("case", ALL_CASES)
def test_get_config_from_config_round_trip(case):
    kwargs = dict(clipnorm=1.5, decay=0.01)
    opt = ALL_CASES[case][0](backend="tf", **kwargs)
    config = opt.get_config()
    assert config["clipnorm"] == 1.5 and config["decay"] == 0.01 and config["backend"] == "tf"
    clone = type(opt).from_config(config)
    assert type(clone) is type(opt) and clone.get_config() == config
    # through tf_keras' own (de)serialization, which finds the class by its registered name
    restored = tf_keras.optimizers.deserialize(tf_keras.optimizers.serialize(opt), use_legacy_optimizer=True)
    assert type(restored) is type(opt) and restored.get_config() == config


def test_from_config_accepts_lr_and_schedules():
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5)
    opt = pl.Momentum(schedule, beta=0.5)
    clone = pl.Momentum.from_config(opt.get_config())
    assert isinstance(clone.learning_rate, tf_keras.optimizers.schedules.ExponentialDecay)
    assert clone.learning_rate.get_config() == schedule.get_config()
    assert pl.Adam.from_config({"lr": 0.25}).get_config()["learning_rate"] == 0.25


def test_lr_alias_and_hyper_attributes():
    with pytest.warns(UserWarning, match="lr"):
        opt = pl.Adam(lr=0.02)
    assert opt.lr == opt.learning_rate == 0.02
    opt.lr = 0.03
    assert opt.learning_rate == 0.03
    momentum = pl.Momentum(beta=0.7)
    assert momentum.beta == momentum.momentum == 0.7
    momentum.beta = 0.6
    assert momentum.momentum == 0.6


# --- dense updates against tf_keras' legacy optimizers ---------------------------------------


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES)
def test_dense_matches_legacy(case, dtype, compiled, backend):
    ours, ref = _make(case, backend)
    our_vars, ref_vars = _run_steps(ours, ref, SHAPES, dtype, compiled=compiled)
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[dtype])


@pytest.mark.parametrize("case", ["momentum", "adam", "amsgrad"])
def test_large_tensor_matches_legacy(case, backend):
    ours, ref = _make(case, backend)
    our_vars, ref_vars = _run_steps(ours, ref, [(2**20 + 3,)], tf.float32, steps=2, compiled=True)
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(clipnorm=0.5),
        dict(clipvalue=0.3),
        dict(global_clipnorm=1.0),
        dict(decay=0.05),
        dict(clipvalue=0.4, clipnorm=0.5),
    ],
    ids=["clipnorm", "clipvalue", "global_clipnorm", "decay", "clipvalue+clipnorm"],
)
@pytest.mark.parametrize("case", ["gd", "nesterov", "amsgrad"])
def test_clipping_and_decay_match_legacy(case, kwargs, backend):
    # gradients of norm ~10: every clip is active; (1,) and (0,) tensors clip too (eager: the
    # traced path is the same code, covered by test_dense_matches_legacy and test_model_fit_*)
    ours, ref = _make(case, backend, **kwargs)
    our_vars, ref_vars = _run_steps(ours, ref, SHAPES, tf.float32, scale=3.0)
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])


def test_schedule_matches_legacy(backend):
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.7)
    for case in ("momentum", "adam"):
        ours, ref = CASES[case][0](backend=backend), CASES[case][1]()
        ours.learning_rate, ref.learning_rate = schedule, schedule
        our_vars, ref_vars = _run_steps(ours, ref, [(7,), (3, 5)], tf.float32, compiled=True)
        _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])


def test_learning_rate_change_is_seen_by_traced_step(backend):
    ours, ref = _make("adam", backend)
    our_vars, ref_vars = _variables([(7,)], tf.float32)
    step_ours, step_ref = _compiled_step(ours, our_vars), _compiled_step(ref, ref_vars)
    for lr in (0.01, 0.5, 0.0):
        ours.learning_rate, ref.learning_rate = lr, lr
        g = tf.constant(np.linspace(-1.0, 1.0, 7), tf.float32)
        step_ours([g]), step_ref([g])
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", CASES)
def test_half_precision_matches_float64_reference(case, dtype, backend):
    """Each step against the float64 rule from the same state: within one rounding to the dtype."""
    opt = CASES[case][0](backend=backend)
    shapes = [(1,), (17,), (3, 5)]
    variables, _ = _variables(shapes, dtype)
    rng = np.random.default_rng(2)
    f32 = lambda x: float(np.float32(x))  # hyperparameters live in float32 variables
    ulp = {tf.float16: 2.0**-10, tf.bfloat16: 2.0**-7}[dtype]  # relative spacing of the dtype
    for step in range(1, 4):
        grads = _gradients(shapes, dtype, rng)
        before = [
            (v.numpy().astype(np.float64), [s.astype(np.float64) for s in _slots(opt, v)])
            if opt.weights
            else (v.numpy().astype(np.float64), None)
            for v in variables
        ]
        opt.apply_gradients(zip(grads, variables))
        for var, g, (p0, slots0) in zip(variables, grads, before):
            g = g.numpy().astype(np.float64)
            lr = f32(opt._hyper["learning_rate"].numpy())
            if case == "gd":
                expected = reference.step("gradient_descent", p0, g, lr=lr)
            elif case in ("momentum", "nesterov"):
                slots0 = slots0 or [np.zeros_like(p0)]
                expected = reference.step(
                    "momentum", p0, g, slots0, lr=lr, momentum=f32(opt.beta.numpy()), nesterov=opt.nesterov
                )
            else:
                slots0 = slots0 or [np.zeros_like(p0)] * (3 if opt.amsgrad else 2)
                expected = reference.step(
                    "adam_amsgrad" if opt.amsgrad else "adam",
                    p0,
                    g,
                    slots0,
                    lr=lr,
                    beta_1=f32(opt.beta_1.numpy()),
                    beta_2=f32(opt.beta_2.numpy()),
                    epsilon=opt.epsilon,
                    step=step,
                )
            got = [var.numpy()] + _slots(opt, var)
            for a, b in zip(got, expected):
                np.testing.assert_allclose(a.astype(np.float64), b, rtol=ulp, atol=ulp * 1e-3)


# --- sparse gradients -----------------------------------------------------------------------


def _sparse_grad(rows, cols, indices, dtype, rng, scale=1.0):
    values = tf.constant(scale * rng.normal(size=(len(indices), cols)), dtype)
    return tf.IndexedSlices(values, tf.constant(indices, tf.int32), tf.constant([rows, cols]))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("kwargs", [{}, dict(clipnorm=0.5)], ids=["plain", "clipnorm"])
@pytest.mark.parametrize("case", CASES)
def test_sparse_matches_legacy(case, kwargs, compiled, backend):
    """IndexedSlices with repeated indices, next to a dense gradient in the same step.

    GD/momentum touch only the indexed rows, Adam moves every row: legacy SGD's and Adam's
    semantics. clipnorm of a sparse gradient is of its values before duplicates are summed.
    """
    ours, ref = _make(case, backend, **kwargs)
    shapes = [(11, 3), (5,)]
    our_vars, ref_vars = _variables(shapes, tf.float32)
    rng = np.random.default_rng(3)
    if compiled:
        step_ours, step_ref = _compiled_step(ours, our_vars), _compiled_step(ref, ref_vars)
    else:
        step_ours = lambda gs: ours.apply_gradients(zip(gs, our_vars))
        step_ref = lambda gs: ref.apply_gradients(zip(gs, ref_vars))
    for indices in ([2, 7, 2, 0, 10, 7, 2], [4], [1, 1], [9, 3, 5]):
        sparse = _sparse_grad(11, 3, indices, tf.float32, rng, scale=2.0)
        dense = tf.constant(rng.normal(size=5), tf.float32)
        step_ours([sparse, dense])
        step_ref([sparse, dense])
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])
    if case in ("gd", "momentum", "nesterov"):  # row 6 was never touched
        np.testing.assert_array_equal(our_vars[0].numpy()[6], _variables(shapes, tf.float32)[0][0].numpy()[6])


@pytest.mark.parametrize("case, lr", [("adam", 0.05), ("rmsprop_momentum", 0.01)])
def test_embedding_model_fit_matches_legacy(case, lr, backend):
    """model.fit through an Embedding (sparse gradients) and a Dense layer."""
    results = []
    for opt in _make(case, backend):
        opt.learning_rate = lr
        tf_keras.utils.set_random_seed(0)
        model = tf_keras.Sequential(
            [tf_keras.layers.Embedding(30, 4), tf_keras.layers.GlobalAveragePooling1D(), tf_keras.layers.Dense(1)]
        )
        model.compile(optimizer=opt, loss="mse")
        rng = np.random.default_rng(4)
        x, y = rng.integers(0, 30, size=(64, 5)), rng.normal(size=(64, 1))
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# --- Adagrad and RMSprop: float64 references and legacy Keras ----------------------------------


def _adagrad_f64(p, g, slots, *, lr, epsilon, legacy_form, **_):
    # acc = acc + g^2;  p = p - lr*g/sqrt(acc + eps)   (legacy: lr*g/(sqrt(acc) + eps))
    (acc,) = slots
    acc = acc + g * g
    return p - lr * g / (np.sqrt(acc) + epsilon if legacy_form else np.sqrt(acc + epsilon)), [acc]


def _rmsprop_f64(p, g, slots, *, lr, rho, momentum, epsilon, centered, with_momentum, legacy_form):
    # v = rho*v + (1-rho)*g^2;  [a = rho*a + (1-rho)*g;  d = v - a^2, else d = v]
    # inc = lr*g/sqrt(d + eps), legacy without momentum lr*g/(sqrt(d) + eps);  [b = mu*b + inc];  p -= b or inc
    slots = list(slots)  # legacy's order: rms, [momentum], [mg]
    v = rho * slots.pop(0) + (1 - rho) * g * g
    b = slots.pop(0) if with_momentum else None
    a = rho * slots.pop(0) + (1 - rho) * g if centered else None
    d = v - a * a if centered else v
    inc = lr * g / (np.sqrt(d) + epsilon if legacy_form and not with_momentum else np.sqrt(d + epsilon))
    if with_momentum:
        b = momentum * b + inc
        inc = b
    return p - inc, [v] + ([b] if with_momentum else []) + ([a] if centered else [])


def _f64_step(opt, p, g, slots, *, legacy_form, rows=None):
    """One float64 step of ``opt``'s rule (pyopt's, or legacy's with ``legacy_form``), from
    ``slots`` (None: the initial ones), on the ``rows`` of ``p`` only when given (lazy)."""
    f32 = lambda x: float(np.float32(x))  # the hyperparameters live in float32 variables
    hyper = dict(lr=f32(opt._decayed_lr(tf.float32).numpy()), epsilon=opt.epsilon, legacy_form=legacy_form)
    if isinstance(opt, (pl.Adagrad, legacy.Adagrad)):
        rule, initial = _adagrad_f64, [np.full_like(p, opt._initial_accumulator_value)]
    else:
        rule, with_momentum = _rmsprop_f64, bool(opt._momentum)
        hyper.update(rho=f32(opt._get_hyper("rho")), momentum=f32(opt._get_hyper("momentum")))
        hyper.update(centered=opt.centered, with_momentum=with_momentum)
        initial = [np.zeros_like(p)] * (1 + with_momentum + opt.centered)
    slots = initial if slots is None else slots
    if rows is None:
        return rule(p, g, slots, **hyper)
    new_p, new_slots = p.copy(), [s.copy() for s in slots]
    new_p[rows], rows_slots = rule(p[rows], g[rows], [s[rows] for s in slots], **hyper)
    for s, r in zip(new_slots, rows_slots):
        s[rows] = r
    return new_p, new_slots


def _assert_state(opt, variables, state, tol, slack=None):
    """Variables and slots of ``opt`` against ``state`` [(p, slots)]: |got - want| <= atol +
    rtol*|want| + slack (elementwise, the same structure as ``state``, default 0)."""
    slack = slack or [(0.0, [0.0] * len(slots)) for _, slots in state]
    for var, (p, slots), (sp, sslots) in zip(variables, state, slack):
        names = opt.get_slot_names()
        for name, got, want, extra in zip(
            ["var"] + names, [var] + [opt.get_slot(var, n) for n in names], [p] + slots, [sp] + sslots
        ):
            got = got.numpy().astype(np.float64)
            bad = np.abs(got - want) > tol["atol"] + tol["rtol"] * np.abs(want) + extra
            slack_bad = np.broadcast_to(extra, want.shape)[bad]
            assert not bad.any(), f"{name}: got {got[bad][:5]}, want {want[bad][:5]} (slack {slack_bad[:5]})"


def _run_rule_case(case, dtype, backend, *, compiled=False, shapes=SHAPES, steps=4, scale=1.0, **kwargs):
    """``steps`` steps of ours and legacy Keras from the same start and the float64 rules
    (pyopt's form, legacy's form) alongside: (ours, ref, our_vars, ref_vars, {legacy_form: state})."""
    ours, ref = _make(case, backend, **kwargs)
    our_vars, ref_vars = _variables(shapes, dtype)
    if compiled:
        apply_ours, apply_ref = _compiled_step(ours, our_vars), _compiled_step(ref, ref_vars)
    else:
        apply_ours = lambda gs: ours.apply_gradients(zip(gs, our_vars))
        apply_ref = lambda gs: ref.apply_gradients(zip(gs, ref_vars))
    states = {form: [(v.numpy().astype(np.float64), None) for v in our_vars] for form in (False, True)}
    rng = np.random.default_rng(1)
    for _ in range(steps):
        grads = _gradients(shapes, dtype, rng, scale)
        for form, state in states.items():  # before the step: the decayed lr of this step
            opt = ref if form else ours
            states[form] = [
                _f64_step(opt, p, g.numpy().astype(np.float64), slots, legacy_form=form)
                for (p, slots), g in zip(state, grads)
            ]
        apply_ours(grads)
        apply_ref(grads)
    return ours, ref, our_vars, ref_vars, states


def _placement_slack(states):
    """Elementwise |pyopt's form - legacy's form| of the float64 states."""
    return [
        (np.abs(p - q), [np.abs(s - t) for s, t in zip(slots, other)])
        for (p, slots), (q, other) in zip(states[False], states[True])
    ]


# Cases whose float32 results must be legacy Keras' up to rounding: Adagrad (the placement of
# epsilon changes a step by at most 1.84e-7 of itself) and RMSprop with momentum (same formula).
SAME_UP_TO_ROUNDING = ("adagrad", "rmsprop_momentum", "rmsprop_centered_momentum")


@pytest.mark.parametrize(
    "case, dtype, compiled",
    [(case, dtype, False) for case in RULE_CASES for dtype in (tf.float32, tf.float64)]
    # traced: the cases model.fit below does not run (Adagrad and RMSprop with momentum it does)
    + [("rmsprop", tf.float32, True), ("rmsprop_centered", tf.float32, True)],
    ids=lambda x: x.name if isinstance(x, tf.DType) else {False: "eager", True: "tf_function"}.get(x, x),
)
def test_adagrad_rmsprop_dense_match_references_and_legacy(case, dtype, compiled, backend):
    ours, ref, our_vars, ref_vars, states = _run_rule_case(case, dtype, backend, compiled=compiled)
    tol = TOL[dtype]
    _assert_state(ours, our_vars, states[False], tol)  # pyopt's rule
    _assert_state(ref, ref_vars, states[True], tol)  # legacy Keras' rule, as read from its source
    _assert_state(ours, our_vars, [(r.numpy(), _slots(ref, r)) for r in ref_vars], tol, _placement_slack(states))
    if dtype == tf.float32 and case in SAME_UP_TO_ROUNDING:
        _assert_same_state(ours, ref, our_vars, ref_vars, tol)
    if case == "adagrad":  # the documented bound: 1.84e-7 of each step (|step| <= lr), 4 steps
        assert max(np.max(s[0], initial=0.0) for s in _placement_slack(states)) <= 4 * 1.84e-7 * 0.1


@pytest.mark.parametrize("kwargs", [{}, dict(clipnorm=0.5)], ids=["plain", "clipnorm"])
@pytest.mark.parametrize("case", RULE_CASES)
def test_adagrad_rmsprop_sparse_match_references_and_legacy(case, kwargs, backend):
    """IndexedSlices with repeated indices next to a dense gradient. Adagrad and RMSprop with
    momentum move only the indexed rows and their slots (legacy's sparse kernels); RMSprop without
    momentum decays rms (and mg) everywhere and moves the indexed rows (legacy's sparse path, the
    dense step). clipnorm of a sparse gradient is of its values before duplicates are summed."""
    ours, ref = _make(case, backend, **kwargs)
    lazy = case in ("adagrad", "rmsprop_momentum", "rmsprop_centered_momentum")
    shapes = [(11, 3), (5,)]
    our_vars, ref_vars = _variables(shapes, tf.float32)
    start = [v.numpy().astype(np.float64) for v in our_vars]
    states = {form: [(p, None) for p in start] for form in (False, True)}
    clip = lambda g: g * min(1.0, kwargs["clipnorm"] / np.linalg.norm(g)) if kwargs else g  # g*c/max(|g|, c)
    rng = np.random.default_rng(3)
    for indices in ([2, 7, 2, 0, 10, 7, 2], [4], [1, 1], [9, 3, 5]):
        sparse = _sparse_grad(11, 3, indices, tf.float32, rng, scale=2.0)
        dense = tf.constant(rng.normal(size=5), tf.float32)
        summed = np.zeros((11, 3))
        np.add.at(summed, indices, clip(sparse.values.numpy().astype(np.float64)))
        for form, ((p0, s0), (p1, s1)) in list(states.items()):
            opt = ref if form else ours
            states[form] = [
                _f64_step(opt, p0, summed, s0, legacy_form=form, rows=np.unique(indices) if lazy else None),
                _f64_step(opt, p1, clip(dense.numpy().astype(np.float64)), s1, legacy_form=form),
            ]
        ours.apply_gradients(zip([sparse, dense], our_vars))
        ref.apply_gradients(zip([sparse, dense], ref_vars))
    tol = TOL[tf.float32]
    _assert_state(ours, our_vars, states[False], tol)
    _assert_state(ref, ref_vars, states[True], tol)
    _assert_state(ours, our_vars, [(r.numpy(), _slots(ref, r)) for r in ref_vars], tol, _placement_slack(states))
    if case in SAME_UP_TO_ROUNDING:
        _assert_same_state(ours, ref, our_vars, ref_vars, tol)
    np.testing.assert_array_equal(our_vars[0].numpy()[6], start[0][6].astype(np.float32))  # row 6: no gradient
    rms_row = ours.get_slot(our_vars[0], ours.get_slot_names()[0]).numpy()[6]
    assert (rms_row == np.float32(0.1)).all() if case == "adagrad" else (rms_row == 0).all()


@pytest.mark.parametrize(
    "kwargs",
    [dict(clipnorm=0.5), dict(global_clipnorm=1.0), dict(clipvalue=0.4, clipnorm=0.5), dict(decay=0.05)],
    ids=["clipnorm", "global_clipnorm", "clipvalue+clipnorm", "decay"],
)
@pytest.mark.parametrize("case", ["adagrad", "rmsprop_centered_momentum"])
def test_adagrad_rmsprop_clipping_and_decay_match_legacy(case, kwargs, backend):
    # gradients of norm ~10: every clip is active (clipnorm of dense gradients fused into the op)
    ours, ref = _make(case, backend, **kwargs)
    our_vars, ref_vars = _run_steps(ours, ref, SHAPES, tf.float32, scale=3.0)
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])


@pytest.mark.parametrize("case", RULE_CASES)
def test_adagrad_rmsprop_slot_variables_match_legacy(case):
    """The slots legacy Keras has, in its order and under its names: legacy weights load into ours."""
    ours, ref = _make(case, "tf")
    rng = np.random.default_rng(9)
    variables = {
        opt: [tf.Variable(tf.zeros(s), name=n) for n, s in (("w", (3, 2)), ("b", (2,)))] for opt in (ours, ref)
    }
    grads = _gradients([(3, 2), (2,)], tf.float32, rng)
    for opt, vs in variables.items():
        opt.apply_gradients(zip(grads, vs))
    assert ours.get_slot_names() == ref.get_slot_names()
    assert [(w.name, w.shape) for w in ours.variables()] == [(w.name, w.shape) for w in ref.variables()]
    weights = [w + (0.5 if w.dtype.kind == "f" else 3) for w in ref.get_weights()]  # iterations is an int
    ours.set_weights(weights)
    for a, b in zip(ours.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "case, d",
    [
        ("adagrad", lambda g: 0.1 + g**2),  # the default start: the same to rounding everywhere
        ("adagrad_zero_start", lambda g: g**2),
        ("rmsprop", lambda g: 0.1 * g**2),
        ("rmsprop_centered", lambda g: 0.2 * g**2 - (0.2 * g) ** 2),
    ],
)
def test_epsilon_placement_differences_are_as_documented(case, d, backend):
    """One step from the start: ours lr*g/sqrt(d + eps), legacy lr*g/(sqrt(d) + eps) for the
    denominator d (rho as float32: 1 - rho = 0.1 or 0.2 up to 3e-8). Equal to rounding where
    d >> eps; for small gradients with no accumulator start ours moves less (~sqrt(d/eps))."""
    if case == "adagrad_zero_start":
        ours, ref = pl.Adagrad(0.1, initial_accumulator_value=0.0, backend=backend), legacy.Adagrad(0.1, 0.0)
    else:
        ours, ref = _make(case, backend)
    g = np.array([1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, -3.0])
    steps = []
    for opt in (ours, ref):
        var = tf.Variable(tf.zeros(len(g)))
        opt.apply_gradients([(tf.constant(g, tf.float32), var)])
        steps.append(-var.numpy().astype(np.float64))
    lr, eps = float(np.float32(ours._get_hyper("learning_rate"))), ours.epsilon
    np.testing.assert_allclose(steps[0], lr * g / np.sqrt(d(g) + eps), rtol=2e-6)
    np.testing.assert_allclose(steps[1], lr * g / (np.sqrt(d(g)) + eps), rtol=2e-6)
    ratio = steps[0] / steps[1]
    if case == "adagrad":
        np.testing.assert_allclose(ratio, 1.0, rtol=5e-7)
    else:
        np.testing.assert_allclose(ratio[-2:], 1.0, rtol=2e-6)  # d >= 0.09: rounding
        assert (ratio[:2] < 0.35).all()  # d <= 1e-8 = eps/10: not rounding


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", ["adagrad", "rmsprop_centered", "rmsprop_centered_momentum"])
def test_adagrad_rmsprop_half_precision_match_float64_reference(case, dtype, backend):
    """Each step against pyopt's float64 rule from the same state: within one rounding to the dtype."""
    opt = RULE_CASES[case][0](backend=backend)
    shapes = [(1,), (17,), (3, 5)]
    variables, _ = _variables(shapes, dtype)
    rng = np.random.default_rng(2)
    ulp = {tf.float16: 2.0**-10, tf.bfloat16: 2.0**-7}[dtype]  # relative spacing of the dtype
    for _ in range(3):
        grads = _gradients(shapes, dtype, rng)
        before = [
            (v.numpy().astype(np.float64), [s.astype(np.float64) for s in _slots(opt, v)] if opt.weights else None)
            for v in variables
        ]
        opt.apply_gradients(zip(grads, variables))
        for var, g, (p0, slots0) in zip(variables, grads, before):
            p, slots = _f64_step(opt, p0, g.numpy().astype(np.float64), slots0, legacy_form=False)
            for got, want in zip([var.numpy()] + _slots(opt, var), [p] + slots, strict=True):
                np.testing.assert_allclose(got.astype(np.float64), want, rtol=ulp, atol=ulp * 1e-3)


@pytest.mark.parametrize("case", ["adagrad", "rmsprop_centered_momentum"])
def test_adagrad_rmsprop_traced_step_is_one_fused_op_per_variable(case):
    """In a tf.function each variable's update, clipnorm included, is one pyopt op (legacy Keras
    updates variable by variable); the only other variable write is the iteration counter."""
    reason = _fused_reason()
    if reason:
        pytest.skip(f"fused backend unavailable: {reason}")
    opt, _ = _make(case, "fused", clipnorm=1.0)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.Input(shape=(6,)), tf_keras.layers.Dense(8, activation="tanh"), tf_keras.layers.Dense(1)]
    )

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    types = [op.type for op in step.get_concrete_function(tf.TensorSpec((None, 6), tf.float32)).graph.get_operations()]
    op_type = {"adagrad": "Pyopt>ApplyAdagradMulti", "rmsprop_centered_momentum": "Pyopt>ApplyRmspropMulti"}[case]
    assert [t for t in types if t.startswith("Pyopt>")] == [op_type] * 4
    assert [t for t in types if t.startswith(("Assign", "ResourceApply", "ResourceScatter"))] == ["AssignAddVariableOp"]


# --- Keras integration: fit, custom loops, XLA, checkpoints, saving ---------------------------


def _dense_model(seed=0):
    tf_keras.utils.set_random_seed(seed)
    return tf_keras.Sequential(
        [
            tf_keras.Input(shape=(6,)),
            tf_keras.layers.Dense(8, activation="tanh", kernel_constraint=tf_keras.constraints.MaxNorm(1.0)),
            tf_keras.layers.Dense(1),
        ]
    )


def _data(n=96):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x @ rng.normal(size=(6, 1)) + 0.1 * rng.normal(size=(n, 1))).astype(np.float32)


@pytest.mark.parametrize(
    "case, jit_compile",
    [
        ("gd", False),
        ("nesterov", False),
        ("amsgrad", False),
        ("adagrad", False),
        ("rmsprop_centered_momentum", False),
        ("nesterov", True),
        ("amsgrad", True),
    ],
)
def test_model_fit_matches_legacy(case, jit_compile, backend):
    """model.fit (clipnorm, a kernel constraint) against legacy Keras; with jit_compile=True ours
    runs inside XLA (pure-TF maths: the fused op has no XLA kernel), the reference without XLA
    (legacy amsgrad has none). RMSprop only with momentum: without, legacy places epsilon otherwise."""
    if jit_compile and backend == "fused":
        pytest.skip("inside XLA backend='auto' runs the pure-TF maths; covered by the 'tf' run")
    x, y = _data()
    weights, losses = [], []
    for opt, jit in zip(_make(case, "auto" if jit_compile else backend, clipnorm=1.0), (jit_compile, False)):
        model = _dense_model()
        model.compile(optimizer=opt, loss="mse", jit_compile=jit)
        history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
        losses.append(history.history["loss"])
    assert losses[0][-1] < losses[0][0]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mixed_precision_loss_scale_optimizer_matches_legacy(backend):
    """Under the mixed_float16 policy compile() wraps the optimizer in a LossScaleOptimizer."""
    x, y = _data()
    weights = []
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for opt in _make("adam", backend):
            model = _dense_model()
            model.compile(optimizer=opt, loss="mse")
            assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
            model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
            weights.append(model.get_weights())
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_custom_training_loop_matches_legacy(backend):
    x, y = _data()
    results = []
    for opt in _make("adam", backend):
        model = _dense_model(seed=1)
        loss_fn = tf_keras.losses.MeanSquaredError()

        @tf.function
        def train_step(xb, yb, model=model, opt=opt, loss_fn=loss_fn):
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            opt.minimize(loss, model.trainable_variables, tape=tape)
            return loss

        for i in range(0, len(x), 16):
            train_step(x[i : i + 16], y[i : i + 16])
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["momentum", "amsgrad", "adagrad", "rmsprop_centered"])
def test_checkpoint_resume_equals_uninterrupted(case, backend, tmp_path):
    shapes = [(7,), (3, 5)]
    rng = np.random.default_rng(6)
    grads = [_gradients(shapes, tf.float32, rng) for _ in range(5)]

    def run(opt, variables, steps):
        for gs in steps:
            opt.apply_gradients(zip(gs, variables))

    straight, _ = _make(case, backend)
    straight_vars, _ = _variables(shapes, tf.float32)
    run(straight, straight_vars, grads)

    first, _ = _make(case, backend)
    first_vars, _ = _variables(shapes, tf.float32)
    run(first, first_vars, grads[:3])
    path = tf.train.Checkpoint(optimizer=first, variables=first_vars).save(str(tmp_path / "ckpt"))

    resumed, _ = _make(case, backend)
    resumed_vars = [tf.Variable(tf.zeros(s)) for s in shapes]
    tf.train.Checkpoint(optimizer=resumed, variables=resumed_vars).restore(path).assert_existing_objects_matched()
    run(resumed, resumed_vars, grads[3:])  # slots are created and restored on the first step
    assert int(resumed.iterations.numpy()) == 5
    _assert_same_state(resumed, straight, resumed_vars, straight_vars, dict(rtol=0, atol=0))


@pytest.mark.parametrize("case", ["nesterov", "amsgrad", "adagrad", "rmsprop_centered_momentum"])
def test_checkpoint_of_legacy_optimizer_restores(case, backend, tmp_path):
    """Same slot and hyperparameter names as legacy SGD/Adam/Adagrad/RMSprop: their checkpoints restore into ours."""
    shapes = [(7,), (3, 5)]
    rng = np.random.default_rng(7)
    grads = [_gradients(shapes, tf.float32, rng) for _ in range(4)]
    ours, ref = _make(case, backend)
    ref_vars, _ = _variables(shapes, tf.float32)
    for gs in grads[:2]:
        ref.apply_gradients(zip(gs, ref_vars))
    path = tf.train.Checkpoint(optimizer=ref, variables=ref_vars).save(str(tmp_path / "legacy"))
    our_vars = [tf.Variable(tf.zeros(s)) for s in shapes]
    tf.train.Checkpoint(optimizer=ours, variables=our_vars).restore(path)
    for gs in grads[2:]:
        ours.apply_gradients(zip(gs, our_vars))
        ref.apply_gradients(zip(gs, ref_vars))
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])


def test_model_save_and_load_keeps_optimizer(backend, tmp_path):
    """HDF5 keeps the optimizer's class, config and state; training goes on exactly. (tf_keras'
    .keras format restores the class and config but, for every legacy optimizer, not its state.)"""
    x, y = _data()
    model = _dense_model()
    model.compile(optimizer=pl.Momentum(0.05, beta=0.8, nesterov=True, clipnorm=2.0, backend=backend), loss="mse")
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 is a legacy format"
        model.save(tmp_path / "model.h5")
    model.save(tmp_path / "model.keras")
    loaded = tf_keras.models.load_model(tmp_path / "model.h5")
    assert type(loaded.optimizer) is pl.Momentum
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations.numpy()) == 3
    for a, b in zip(loaded.optimizer.variables(), model.optimizer.variables(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for m in (model, loaded):
        m.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    from_keras = tf_keras.models.load_model(tmp_path / "model.keras")
    assert type(from_keras.optimizer) is pl.Momentum
    assert from_keras.optimizer.get_config() == model.optimizer.get_config()


# --- constant hyperparameters -----------------------------------------------------------------


def test_beta_change_applies_eagerly_like_legacy(backend):
    ours, ref = _make("nesterov", backend)
    our_vars, ref_vars = _variables([(17,)], tf.float32)
    rng = np.random.default_rng(8)
    for beta in (0.8, 0.3, 0.95):
        ours.beta, ref.momentum = beta, beta
        g = _gradients([(17,)], tf.float32, rng)
        ours.apply_gradients(zip(g, our_vars)), ref.apply_gradients(zip(g, ref_vars))
    _assert_same_state(ours, ref, our_vars, ref_vars, TOL[tf.float32])


def test_beta_change_after_tracing_fails_clearly(backend):
    opt = pl.Adam(0.01, backend=backend)
    var = tf.Variable(tf.ones(7))

    @tf.function
    def step():
        opt.apply_gradients([(tf.ones(7), var)])

    step()
    opt.beta_1 = 0.5
    with pytest.raises(tf.errors.InvalidArgumentError, match="beta_1 changed after this step was traced"):
        step()


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: pl.Adam(learning_rate=-0.1), ValueError, "learning_rate"),
        (lambda: pl.Adam(learning_rate=float("nan")), ValueError, "learning_rate"),
        (lambda: pl.Adam(learning_rate=True), TypeError, "learning_rate"),
        (lambda: pl.Adam(beta_1=1.0), ValueError, "beta_1"),
        (lambda: pl.Adam(beta_2=-0.1), ValueError, "beta_2"),
        (lambda: pl.Adam(beta_1="0.9"), TypeError, "beta_1"),
        (lambda: pl.Adam(beta_2=tf.constant(0.9)), TypeError, "beta_2"),
        (lambda: pl.Adam(epsilon=-1e-7), ValueError, "epsilon"),
        (lambda: pl.Adam(amsgrad=1), TypeError, "amsgrad"),
        (lambda: pl.Momentum(beta=1.5), ValueError, "beta"),
        (lambda: pl.Momentum(beta=None), TypeError, "beta"),
        (lambda: pl.Momentum(nesterov="yes"), TypeError, "nesterov"),
        (lambda: pl.GradientDescent(clipnorm=0.0), ValueError, "clipnorm"),
        (lambda: pl.GradientDescent(clipnorm=-1.0), ValueError, "clipnorm"),
        (lambda: pl.Adam(global_clipnorm=float("inf")), ValueError, "global_clipnorm"),
        (lambda: pl.Adam(clipvalue=-1.0), ValueError, "clipvalue"),
        (lambda: pl.Adam(clipnorm=1.0, global_clipnorm=1.0), ValueError, "clipnorm"),
        (lambda: pl.Adam(decay=-0.5), ValueError, "decay"),
        (lambda: pl.Adam(backend="gpu"), ValueError, "backend"),
        (lambda: pl.Adam(momentum=0.9), TypeError, "momentum"),
        (lambda: pl.Adagrad(initial_accumulator_value=-0.1), ValueError, "initial_accumulator_value"),
        (lambda: pl.Adagrad(initial_accumulator_value="0.1"), TypeError, "initial_accumulator_value"),
        (lambda: pl.Adagrad(epsilon=-1e-7), ValueError, "epsilon"),
        (lambda: pl.Adagrad(learning_rate=-1.0), ValueError, "learning_rate"),
        (lambda: pl.RMSprop(rho=1.5), ValueError, "rho"),
        (lambda: pl.RMSprop(rho=tf.constant(0.9)), TypeError, "rho"),
        (lambda: pl.RMSprop(momentum=-0.1), ValueError, "momentum"),
        (lambda: pl.RMSprop(momentum=tf.constant(0.9)), TypeError, "momentum"),
        (lambda: pl.RMSprop(epsilon=-1e-7), ValueError, "epsilon"),
        (lambda: pl.RMSprop(centered=1), TypeError, "centered"),
        (lambda: pl.RMSprop(clipnorm=0.0), ValueError, "clipnorm"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_hyperparameter_set_later():
    opt = pl.Momentum()
    with pytest.raises(ValueError, match="momentum"):
        opt.beta = 2.0
    with pytest.raises(TypeError, match="beta_1"):
        pl.Adam().beta_1 = lambda: 0.9
    with pytest.raises(ValueError, match="rho"):
        pl.RMSprop().rho = 1.5
    rms = pl.RMSprop()  # momentum=0: no momentum slots, so momentum stays 0 (legacy ignores a new value)
    with pytest.raises(ValueError, match="momentum must stay 0 in an RMSprop made without momentum"):
        rms.momentum = 0.5
    rms.momentum = 0.0
    with_momentum = pl.RMSprop(momentum=0.9)
    with_momentum.momentum = 0.0  # as legacy: the momentum slots stay, b = 0*b + inc
    assert with_momentum.momentum == 0.0


def test_non_float_variable_is_refused():
    var = tf.Variable([1, 2], dtype=tf.int32)
    with pytest.raises(TypeError, match="int32"):
        pl.GradientDescent(backend="tf").apply_gradients([(tf.constant([1, 1]), var)])


def test_import_without_tf_keras_gives_install_hint():
    code = textwrap.dedent("""
        import sys
        sys.modules["tf_keras"] = None  # as if tf_keras were not installed
        import pyopt, pyopt.ops
        try:
            import pyopt.legacy
        except ImportError as exc:
            print("ImportError:", exc)
        else:
            print("imported")
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ImportError: pyopt.legacy needs tf_keras" in out.stdout
    assert "pip install 'pyopt[legacy]'" in out.stdout and "pip install --no-deps 'tf_keras" in out.stdout


@pytest.mark.slow
def test_mirrored_strategy_fit_matches_legacy():
    """Two CPU replicas (a subprocess: logical devices must be set before TF starts)."""
    code = textwrap.dedent("""
        import numpy as np, tensorflow as tf, tf_keras
        import pyopt.legacy as pl
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        rng = np.random.default_rng(5)
        x = rng.normal(size=(96, 6)).astype(np.float32)
        y = x @ rng.normal(size=(6, 1)).astype(np.float32)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        weights = []
        for make in (lambda: pl.Adam(0.01, amsgrad=True, clipnorm=1.0),
                     lambda: tf_keras.optimizers.legacy.Adam(0.01, amsgrad=True, clipnorm=1.0)):
            with strategy.scope():
                tf_keras.utils.set_random_seed(0)
                model = tf_keras.Sequential([tf_keras.Input(shape=(6,)), tf_keras.layers.Dense(8, activation="tanh"),
                                             tf_keras.layers.Dense(1)])
                model.compile(optimizer=make(), loss="mse")
            model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
            weights.append(model.get_weights())
        print("max_abs_diff", max(float(np.abs(a - b).max()) for a, b in zip(*weights)))
    """)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    diff = float(out.stdout.split("max_abs_diff")[-1])
    assert diff < 1e-5, out.stdout
