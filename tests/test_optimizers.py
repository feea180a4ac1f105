"""pyopt.optimizers against the Keras 3 built-ins, on both backends.

Every numeric case runs the pyopt optimizer and ``keras.optimizers.Adam``/``SGD`` with the
same arguments on the same initial values and gradient sequence, and compares the model
variables and all optimizer variables (slots, EMA averages, accumulators, iterations).

Tolerances (absolute + relative, ``np.testing.assert_allclose``), variables of order 1:
- float32, 200 steps: rtol=atol=2e-5. The two differ only in rounding: pyopt computes the
  per-step scalars (Adam's alpha, lr*wd, clip factors) in float64 and rounds once, Keras in
  float32.
- float64, 200 steps, against the NumPy float64 reference (``tests/reference.py``):
  rtol=atol=1e-11.
- float16 200 steps, bfloat16 20 steps: Keras does the maths in the variable's 16-bit type, pyopt in
  float32 with one rounding at the end, so they differ by a few units in the last place per
  step: atol=rtol=2e-2 (float16), 1e-1 (bfloat16). A single step is checked tightly: it
  equals Keras's float32 step rounded to the 16-bit type within 1 ulp (2^-10, 2^-7 relative).
- fused vs tf backend, 200 float32 steps: rtol=atol=1e-5.
"""

from __future__ import annotations

import copy
import re

import keras
import ml_dtypes
import numpy as np
import pytest
import reference
import tensorflow as tf
from backends import fused_unavailable_reason

import pyopt.optimizers as po

SHAPES = [(), (1,), (7,), (1023,), (3, 17)]
STEPS = 200
TOL = {"float32": 2e-5, "float64": 1e-11, "float16": 2e-2, "bfloat16": 1e-1}


# ---------------------------------------------------------------------------------------
# One trajectory: same initial values and gradients for a pyopt and a Keras optimizer.

RULES = {
    "adam": ("Adam", dict(learning_rate=0.01)),
    "adam_amsgrad": ("Adam", dict(learning_rate=0.01, amsgrad=True)),
    "sgd": ("SGD", dict(learning_rate=0.01)),
    "momentum": ("SGD", dict(learning_rate=0.01, momentum=0.9)),
    "nesterov": ("SGD", dict(learning_rate=0.01, momentum=0.9, nesterov=True)),
}


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=10, decay_rate=0.9)


FEATURES = {
    "plain": {},
    "clipnorm": dict(clipnorm=1.0),
    "global_clipnorm": dict(global_clipnorm=2.0),
    "clipvalue": dict(clipvalue=0.5),
    "weight_decay": dict(weight_decay=0.05),  # with v1 and v3 excluded, see run()
    "schedule": dict(learning_rate=_schedule),
    "ema": dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=7),
    "accumulation": dict(gradient_accumulation_steps=3),
    "loss_scale": dict(loss_scale_factor=128.0),  # the gradients are scaled by 128 too
}


def make_pair(rule: str, backend: str, **extra):
    """A pyopt optimizer and the Keras built-in with the same arguments."""
    name, kwargs = RULES[rule]
    kwargs = {**kwargs, **extra}
    fresh = lambda: {k: (v() if callable(v) else v) for k, v in kwargs.items()}
    return getattr(po, name)(**fresh(), backend=backend), getattr(keras.optimizers, name)(**fresh())


def gradient_sequence(shapes, steps, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    return [[scale * rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def run(optimizer, init, grads, dtype, *, compiled=True, exclude=()):
    """Applies ``grads`` (a list per step) to fresh variables; returns (variables, optimizer variables).

    ``compiled``: all steps in one ``tf.function`` (a ``tf.range`` loop over the stacked
    gradients), else one eager ``apply_gradients`` per step.
    """
    variables = [keras.Variable(x, dtype=dtype, name=f"v{i}") for i, x in enumerate(init)]
    if exclude:
        optimizer.exclude_from_weight_decay(var_names=list(exclude))
    optimizer.build(variables)
    if compiled:
        stacked = [tf.constant(np.stack(per_var), dtype=dtype) for per_var in zip(*grads)]

        @tf.function
        def loop():
            for t in tf.range(len(grads)):
                optimizer.apply_gradients(zip([g[t] for g in stacked], variables))

        loop()
    else:
        for gs in grads:
            optimizer.apply_gradients(zip([tf.constant(g, dtype=dtype) for g in gs], variables))
    return [v.numpy() for v in variables], [v.numpy() for v in optimizer.variables]


def assert_close(actual, expected, tol, what=""):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=tol, atol=tol, err_msg=f"{what} #{i}"
        )


_KERAS_RESULTS: dict = {}  # Keras's trajectories, computed once for both backends


def compare_with_keras(rule, feature, backend, dtype="float32", steps=STEPS, shapes=SHAPES, seed=0, compiled=True):
    extra = FEATURES[feature]
    mine, ref = make_pair(rule, backend, **extra)
    rng = np.random.default_rng(seed + 1)
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, steps, seed, scale=3.0 * extra.get("loss_scale_factor", 1.0))
    exclude = ("v1", "v3") if "weight_decay" in extra else ()
    got = run(mine, init, grads, dtype, compiled=compiled, exclude=exclude)
    key = (rule, feature, dtype, steps, tuple(shapes), seed, compiled)
    if key not in _KERAS_RESULTS:
        _KERAS_RESULTS[key] = run(ref, init, grads, dtype, compiled=compiled, exclude=exclude)
    want = _KERAS_RESULTS[key]
    assert_close(got[0], want[0], TOL[dtype], f"{rule}/{feature} variable")
    assert_close(got[1], want[1], TOL[dtype], f"{rule}/{feature} optimizer variable")
    assert mine.last_backend == backend


# ---------------------------------------------------------------------------------------
# Numbers: the rules times the base-optimizer features, against Keras.


# Every feature with Adam and Nesterov momentum; the other rules with the features that
# reach into their update (weight decay, global norm).
TRAJECTORY_CASES = [(rule, feature) for rule in ("adam", "nesterov") for feature in FEATURES] + [
    (rule, feature)
    for rule in ("adam_amsgrad", "momentum", "sgd")
    for feature in ("plain", "weight_decay", "global_clipnorm")
]


@pytest.mark.parametrize("rule, feature", TRAJECTORY_CASES, ids=[f"{r}-{f}" for r, f in TRAJECTORY_CASES])
def test_trajectory_matches_keras(rule, feature, backend):
    compare_with_keras(rule, feature, backend)


@pytest.mark.parametrize("rule", ["adam", "adam_amsgrad", "sgd", "momentum", "nesterov"])
def test_single_eager_step_matches_keras(rule, backend):
    compare_with_keras(rule, "weight_decay", backend, steps=1, compiled=False)
    compare_with_keras(rule, "clipnorm", backend, steps=1, compiled=False)


@pytest.mark.parametrize(
    "rule, kwargs",
    [
        ("adam", dict(learning_rate=0.01, clipnorm=1.0, weight_decay=0.05)),
        ("adam_amsgrad", dict(learning_rate=0.01, amsgrad=True, global_clipnorm=2.0)),
        ("momentum", dict(learning_rate=0.01, momentum=0.9, nesterov=True, weight_decay=0.05)),
        ("gradient_descent", dict(learning_rate=0.01, global_clipnorm=2.0)),
    ],
)
def test_float64_matches_numpy_reference(rule, kwargs, backend):
    # Keras's float64 maths rounds its Python constants (1 - beta_1, ...) to float32, so float64
    # is checked against the NumPy float64 reference instead.
    optimizer = (po.Adam if rule.startswith("adam") else po.SGD)(**kwargs, backend=backend)
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = gradient_sequence(SHAPES, STEPS, seed=3)
    got = run(optimizer, params, grads, "float64", exclude=("v1", "v3"))[0]
    lr = float(np.float32(kwargs["learning_rate"]))  # Keras keeps the learning rate in a float32 variable
    hyper = dict(
        lr=lr,
        clipnorm=kwargs.get("clipnorm"),
        global_clipnorm=kwargs.get("global_clipnorm"),
        weight_decay=[0.0 if i in (1, 3) else kwargs.get("weight_decay", 0.0) for i in range(len(SHAPES))],
    )
    if rule == "momentum":
        hyper.update(momentum=kwargs["momentum"], nesterov=kwargs["nesterov"])
    slots = [tuple(np.zeros(s) for _ in reference.SLOTS[rule]) for s in SHAPES]
    for t, gs in enumerate(grads, start=1):
        step_hyper = dict(hyper, step=t) if rule.startswith("adam") else hyper
        out = reference.step_multi(rule, params, gs, slots, **step_hyper)
        params, slots = [o[0] for o in out], [o[1:] for o in out]
    assert_close(got, params, TOL["float64"], f"{rule} float64")
    assert optimizer.last_backend == backend


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("rule", ["adam", "momentum", "sgd"])
def test_half_precision_matches_keras(rule, dtype, backend):
    # float16: 200 steps. bfloat16: 20; Keras does its maths in bfloat16 (8 bits of mantissa),
    # pyopt in float32 rounded once, and after 200 steps Keras's drift reaches 30% (measured).
    steps = STEPS if dtype == "float16" else 20
    compare_with_keras(rule, "plain", backend, dtype=dtype, steps=steps, shapes=[(), (7,), (100,)])


HALF_ULP = {"float16": 2.0**-10, "bfloat16": 2.0**-7}  # relative spacing of the 16-bit types near 1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("rule", ["adam_amsgrad", "nesterov", "sgd"])
def test_half_precision_step_is_float32_maths_rounded_once(rule, dtype, backend):
    # pyopt updates 16-bit variables with float32 maths and one rounding: one step equals the
    # Keras float32 step on the same (16-bit) values, rounded to the 16-bit type (1 ulp).
    half = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    shapes = [(), (7,), (100,)]
    rng = np.random.default_rng(14)
    init = [rng.standard_normal(s).astype(half).astype(np.float64) for s in shapes]
    grads = [[g.astype(half).astype(np.float64) for g in gradient_sequence(shapes, 1, seed=15)[0]]]
    mine, ref = make_pair(rule, backend, weight_decay=0.1, clipnorm=2.0)
    got = run(mine, init, grads, dtype, compiled=False)[0]
    want = [np.asarray(x, np.float32).astype(half) for x in run(ref, init, grads, "float32", compiled=False)[0]]
    assert_close(got, want, HALF_ULP[dtype], f"{rule} {dtype} one step")


def test_fused_equals_tf_backend():
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    for rule, feature in [("adam_amsgrad", "weight_decay"), ("nesterov", "global_clipnorm"), ("sgd", "clipnorm")]:
        rng = np.random.default_rng(3)
        init = [rng.standard_normal(s) for s in SHAPES]
        grads = gradient_sequence(SHAPES, STEPS, seed=4)
        results = []
        for backend in ("fused", "tf"):
            optimizer, _ = make_pair(rule, backend, **FEATURES[feature])
            results.append(run(optimizer, init, grads, "float32", exclude=("v1",)))
            assert optimizer.last_backend == backend
        assert_close(results[0][0], results[1][0], 1e-5, f"{rule}/{feature} fused vs tf")
        assert_close(results[0][1], results[1][1], 1e-5, f"{rule}/{feature} fused vs tf slots")


# ---------------------------------------------------------------------------------------
# The chapter's names, the lr alias, skip_nonfinite.


@pytest.mark.parametrize(
    "make_mine, make_keras",
    [
        (lambda b: po.GradientDescent(0.1, backend=b), lambda: keras.optimizers.SGD(0.1)),
        (
            lambda b: po.GradientDescent(lr=0.1, clipnorm=0.5, backend=b),
            lambda: keras.optimizers.SGD(0.1, clipnorm=0.5),
        ),
        (lambda b: po.Momentum(0.05, backend=b), lambda: keras.optimizers.SGD(0.05, momentum=0.9)),
        (
            lambda b: po.Momentum(lr=0.05, beta=0.5, clipnorm=1.0, nesterov=True, backend=b),
            lambda: keras.optimizers.SGD(0.05, momentum=0.5, nesterov=True, clipnorm=1.0),
        ),
        (lambda b: po.Adam(lr=0.02, beta_1=0.8, backend=b), lambda: keras.optimizers.Adam(0.02, beta_1=0.8)),
        (lambda b: po.SGD(lr=0.02, momentum=0.7, backend=b), lambda: keras.optimizers.SGD(0.02, momentum=0.7)),
    ],
    ids=["gd", "gd_lr_clipnorm", "momentum_default_beta", "momentum_nesterov", "adam_lr", "sgd_lr"],
)
def test_chapter_names_and_lr_alias(make_mine, make_keras, backend):
    rng = np.random.default_rng(5)
    shapes = [(), (7,), (4, 3)]
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, 30, seed=6)
    mine = make_mine(backend)
    assert_close(run(mine, init, grads, "float32")[0], run(make_keras(), init, grads, "float32")[0], TOL["float32"])
    assert mine.last_backend == backend


def test_chapter_names_are_the_right_rules():
    gd = po.GradientDescent(0.1)
    assert isinstance(gd, keras.optimizers.SGD) and gd.momentum == 0.0 and not gd.nesterov
    mom = po.Momentum(0.1)
    assert mom.momentum == mom.beta == 0.9 and not mom.nesterov
    assert po.Momentum(0.1, 0.5, 1.0, True).get_config()["beta"] == 0.5
    assert po.Momentum(0.1, 0.5, 1.0, True).clipnorm == 1.0
    assert isinstance(po.Adam(), keras.optimizers.Adam)
    assert float(po.Adam().learning_rate.numpy()) == pytest.approx(0.001)
    assert float(po.SGD().learning_rate.numpy()) == pytest.approx(0.01)
    assert float(po.Adam(lr=0.5).learning_rate.numpy()) == 0.5


@pytest.mark.parametrize("rule", ["adam_amsgrad", "momentum", "sgd"])
def test_skip_nonfinite(rule, backend):
    shapes = [(), (7,), (33,)]
    rng = np.random.default_rng(7)
    variables = [keras.Variable(rng.standard_normal(s), dtype="float32") for s in shapes]
    good = gradient_sequence(shapes, 2, seed=8)
    nan_step = [g.copy() for g in good[1]]
    nan_step[2][5] = np.nan
    inf_step = [g.copy() for g in good[1]]
    inf_step[0] = np.array(-np.inf)
    name, kwargs = RULES[rule]
    optimizer = getattr(po, name)(**kwargs, clipnorm=1.0, skip_nonfinite=True, backend=backend)

    def apply(grads):
        optimizer.apply_gradients(zip([tf.constant(g, tf.float32) for g in grads], variables))
        # Everything but the iteration counter (which counts every call, as in Keras).
        return [v.numpy() for v in variables] + [
            v.numpy() for v in optimizer.variables if v is not optimizer._iterations
        ]

    before = apply(good[0])
    assert_close(apply(nan_step), before, 0.0, "NaN step changed state")
    assert_close(apply(inf_step), before, 0.0, "Inf step changed state")
    after = apply(good[1])
    assert not np.allclose(after[2], before[2]) and all(np.isfinite(x).all() for x in after)
    assert optimizer.last_backend == backend


@pytest.mark.parametrize("rule", ["adam", "nesterov", "sgd"])
def test_nan_propagates_by_default(rule, backend):
    shapes = [(), (7,), (33,)]
    init = [np.ones(s) for s in shapes]
    grads = gradient_sequence(shapes, 2, seed=8)
    grads[1][2][5] = np.nan
    mine, ref = make_pair(rule, backend)
    got, want = run(mine, init, grads, "float32", compiled=False), run(ref, init, grads, "float32", compiled=False)
    for g, w in zip(got[0] + got[1], want[0] + want[1]):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
    assert np.isnan(got[0][2][5])


# ---------------------------------------------------------------------------------------
# Keras integration: model.fit, IndexedSlices, XLA, tf.distribute, one op call per step.


VOCABULARY = 100


def small_model(seed=0, embedding=False):
    keras.utils.set_random_seed(seed)
    if embedding:
        layers = [keras.Input((5,), dtype="int32"), keras.layers.Embedding(VOCABULARY, 4), keras.layers.Flatten()]
    else:
        layers = [keras.Input((6,))]
    layers += [keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)]
    return keras.Sequential(layers)


def fit_data(embedding=False, n=64, batch_size=16):
    rng = np.random.default_rng(11)
    if embedding:  # 5 tokens per sample, no token twice in a batch (see test_embedding_duplicate_rows)
        x = np.concatenate(
            [rng.permutation(VOCABULARY)[: 5 * batch_size].reshape(batch_size, 5) for _ in range(n // batch_size)]
        ).astype("int32")
    else:
        x = rng.standard_normal((n, 6)).astype("float32")
    return x, rng.standard_normal((n, 3)).astype("float32")


def fit_weights(optimizer, *, embedding=False, jit_compile=False, epochs=2):
    x, y = fit_data(embedding)
    model = small_model(embedding=embedding)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model.get_weights()


_KERAS_FITS: dict = {}


def keras_fit_weights(name, kwargs, **fit_kwargs):
    """``fit_weights`` with the Keras built-in ``name(**kwargs)``, computed once per session."""
    key = (name, tuple(sorted(kwargs.items())), tuple(sorted(fit_kwargs.items())))
    if key not in _KERAS_FITS:
        _KERAS_FITS[key] = fit_weights(getattr(keras.optimizers, name)(**kwargs), **fit_kwargs)
    return _KERAS_FITS[key]


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(name="Adam", learning_rate=0.01, weight_decay=0.01, clipnorm=1.0),
        dict(name="SGD", learning_rate=0.05, momentum=0.9, nesterov=True, global_clipnorm=1.0),
    ],
    ids=["adam", "nesterov"],
)
def test_model_fit_matches_keras(kwargs, backend):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    mine = getattr(po, name)(**kwargs, backend=backend)
    assert_close(fit_weights(mine), keras_fit_weights(name, kwargs), 1e-5)
    assert mine.last_backend == backend


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_embedding_indexed_slices(name, backend):
    # Embedding gradients are IndexedSlices; pyopt's default sparse step equals the densified one.
    kwargs = dict(learning_rate=0.05, **({"momentum": 0.9} if name == "SGD" else {}))
    mine = getattr(po, name)(**kwargs, backend=backend)
    want = keras_fit_weights(name, kwargs, embedding=True, epochs=1)
    assert_close(fit_weights(mine, embedding=True, epochs=1), want, 1e-5)
    assert mine.last_backend == backend


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_embedding_duplicate_rows(name, backend):
    # A row that appears twice in IndexedSlices gets the sum of its slices, as the dense
    # gradient does. (Keras's own Adam squares the slices before summing them, so its v
    # differs from pyopt's for such rows; SGD/momentum and unique rows agree with Keras.)
    kwargs = dict(learning_rate=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    sparse = tf.IndexedSlices(
        tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), tf.constant([0, 2, 0]), tf.constant([4, 2])
    )
    results = []
    for grad, optimizer in [
        (sparse, getattr(po, name)(**kwargs, backend=backend)),
        (tf.convert_to_tensor(sparse), getattr(keras.optimizers, name)(**kwargs)),
    ]:
        variable = keras.Variable(np.ones((4, 2), "float32"))
        for _ in range(3):
            optimizer.apply_gradients([(grad, variable)])
        results.append(variable.numpy())
    assert_close([results[0]], [results[1]], TOL["float32"])


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_lazy_moves_only_present_rows(name, backend):
    # lazy=True: rows absent from the IndexedSlices, and their slots, keep their exact values;
    # present rows get the dense rule applied to the summed slices.
    kwargs = dict(learning_rate=0.1, **({"momentum": 0.9} if name == "SGD" else {}))
    sparse = tf.IndexedSlices(
        tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), tf.constant([0, 2, 0]), tf.constant([4, 2])
    )
    lazy = getattr(po, name)(**kwargs, backend=backend, lazy=True)
    assert lazy.get_config()["lazy"] is True
    variable = keras.Variable(np.ones((4, 2), "float32"))
    dense_rows = keras.Variable(np.ones((2, 2), "float32"))
    reference = getattr(keras.optimizers, name)(**kwargs)
    summed = tf.constant([[6.0, 8.0], [3.0, 4.0]])  # rows 0 and 2
    for _ in range(2):
        lazy.apply_gradients([(sparse, variable)])
        reference.apply_gradients([(summed, dense_rows)])
    got = variable.numpy()
    np.testing.assert_array_equal(got[[1, 3]], 1.0)
    assert_close([got[[0, 2]]], [dense_rows.numpy()], TOL["float32"])
    for slot in lazy.variables[1:]:
        if tuple(slot.shape) == (4, 2):
            np.testing.assert_array_equal(slot.numpy()[[1, 3]], 0.0)


def test_xla_uses_tf_path():
    # backend="auto" under XLA picks the pure-TF ops itself; results match Keras.
    mine = po.Adam(learning_rate=0.01, clipnorm=1.0)
    want = keras_fit_weights("Adam", dict(learning_rate=0.01, clipnorm=1.0), epochs=1)
    assert_close(fit_weights(mine, jit_compile=True, epochs=1), want, 1e-5)
    assert mine.last_backend == "tf"

    variables = [keras.Variable(np.ones(5, "float32"))]
    sgd = po.SGD(0.1, momentum=0.9)
    sgd.build(variables)
    tf.function(lambda g: sgd.apply_gradients([(g, variables[0])]), jit_compile=True)(tf.ones(5))
    assert sgd.last_backend == "tf"
    np.testing.assert_allclose(variables[0].numpy(), 0.9, rtol=1e-6)


def test_auto_picks_fused_when_available():
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    mine = po.Adam(0.01)
    fit_weights(mine, epochs=1)
    assert mine.last_backend == "fused"


def test_one_op_call_per_step(monkeypatch):
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    from pyopt.ops import _fused

    model = small_model()
    x = tf.constant(np.random.default_rng(0).standard_normal((8, 6)), tf.float32)
    original = _fused.OpCall.__call__
    for rule, optimizer in [
        ("adam", po.Adam(0.01, weight_decay=0.1, global_clipnorm=1.0)),
        ("momentum", po.Momentum(0.01, clipnorm=1.0)),
        ("gradient_descent", po.GradientDescent(0.01)),
    ]:
        calls = []

        def counting(op_call, *args, calls=calls, **kwargs):
            calls.append((op_call.rule.name, len(op_call.variables)))
            return original(op_call, *args, **kwargs)

        monkeypatch.setattr(_fused.OpCall, "__call__", counting)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
        assert calls == [(rule, 4)] * 3, f"{rule}: one call per step for all 4 variables"
        assert optimizer.last_backend == "fused"


@pytest.mark.parametrize(
    "clip",
    [dict(clipnorm=1.0), dict(global_clipnorm=2.0), dict(clipvalue=0.5)],
    ids=["clipnorm", "global_clipnorm", "clipvalue"],
)
@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_clip_gradients_called_directly_equals_keras(name, clip):
    # _clip_gradients is Keras's own: called directly it clips (the fused step does not call it).
    rng = np.random.default_rng(16)
    grads = [tf.constant(3.0 * rng.standard_normal(s), tf.float32) for s in [(), (7,), (4, 3)]]
    got = getattr(po, name)(**clip)._clip_gradients(grads)
    want = getattr(keras.optimizers, name)(**clip)._clip_gradients(grads)
    assert_close([g.numpy() for g in got], [w.numpy() for w in want], 1e-7, f"{name} {clip}")
    assert not np.allclose(got[2].numpy(), grads[2].numpy())


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_apply_weight_decay_called_directly_equals_keras(name):
    results = []
    for optimizer in (getattr(po, name)(0.1, weight_decay=0.5), getattr(keras.optimizers, name)(0.1, weight_decay=0.5)):
        variables = [
            keras.Variable(np.full(3, 2.0, "float32"), name="decayed"),
            keras.Variable(np.full(3, 2.0, "float32"), name="excluded"),
        ]
        optimizer.exclude_from_weight_decay(var_names=["excluded"])
        optimizer._apply_weight_decay(variables)
        results.append([v.numpy() for v in variables])
    assert_close(results[0], results[1], 0.0)
    np.testing.assert_allclose(results[0][0], 2.0 - 2.0 * 0.5 * 0.1, rtol=1e-7)  # p = p - lr*wd*p


FUSED_STEP_CASES = [  # (the table's rule, the optimizer of make_pair, its options)
    ("adam", "adam", dict(weight_decay=0.1, global_clipnorm=1.0)),
    ("adam", "adam", dict(weight_decay=0.1, clipnorm=0.5)),
    ("momentum", "nesterov", dict(weight_decay=0.1, clipnorm=0.5)),
    ("gradient_descent", "sgd", dict(weight_decay=0.1, global_clipnorm=1.0)),
]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize(
    "table_rule, rule, kwargs", FUSED_STEP_CASES, ids=[f"{r}-{min(k)}" for _, r, k in FUSED_STEP_CASES]
)
def test_fused_step_clips_and_decays_inside_its_one_call(monkeypatch, table_rule, rule, kwargs, compiled, backend):
    # Outside a strategy a step is one pyopt.ops step, clipping and weight decay included: Keras's
    # separate _clip_gradients / _apply_weight_decay passes do not run, and the result is Keras's.
    from pyopt.ops._api import Step

    passes = []
    for method in ("_clip_gradients", "_apply_weight_decay"):
        keras_pass = getattr(keras.optimizers.Optimizer, method)
        monkeypatch.setattr(
            po.PyoptOptimizer, method, lambda self, arg, _m=method, _f=keras_pass: passes.append(_m) or _f(self, arg)
        )
    calls = []
    step_call = Step.__call__
    monkeypatch.setattr(
        Step, "__call__", lambda step, *a: calls.append((step.rule.name, len(step.variables))) or step_call(step, *a)
    )
    shapes = [(), (7,), (4, 3)]
    rng = np.random.default_rng(17)
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, 3, seed=18)
    mine, ref = make_pair(rule, backend, **kwargs)
    got = run(mine, init, grads, "float32", compiled=compiled, exclude=("v1",))
    # a tf.function traces the loop body once
    assert passes == [] and calls == [(table_rule, 3)] * (1 if compiled else 3)
    want = run(ref, init, grads, "float32", compiled=compiled, exclude=("v1",))
    assert_close(got[0], want[0], TOL["float32"], f"{rule} {kwargs} variable")
    assert_close(got[1], want[1], TOL["float32"], f"{rule} {kwargs} optimizer variable")
    assert mine.last_backend == backend


def test_clipvalue_and_strategy_steps_use_keras_passes(monkeypatch):
    # clipvalue stays Keras's own pass before the fused call; under a tf.distribute strategy
    # the whole step is Keras's (its clip and weight-decay passes, then update_step per variable).
    passes = []
    for method in ("_clip_gradients", "_apply_weight_decay"):
        keras_pass = getattr(keras.optimizers.Optimizer, method)
        monkeypatch.setattr(
            po.PyoptOptimizer, method, lambda self, arg, _m=method, _f=keras_pass: passes.append(_m) or _f(self, arg)
        )
    variable = keras.Variable(np.ones(3, "float32"))
    po.SGD(0.1, clipvalue=0.5, weight_decay=0.1).apply_gradients([(tf.constant([2.0, -2.0, 0.25]), variable)])
    assert passes == ["_clip_gradients"]
    np.testing.assert_allclose(variable.numpy(), [0.94, 1.04, 0.965], rtol=1e-6)  # p - lr*wd*p - lr*clip(g)
    passes.clear()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    with strategy.scope():
        optimizer = po.SGD(0.1, clipnorm=1.0, weight_decay=0.1)
        variable = keras.Variable(np.ones(3, "float32"))
    strategy.run(lambda: optimizer.apply_gradients([(tf.constant([2.0, -2.0, 1.0]), variable)]))
    assert passes == ["_clip_gradients", "_apply_weight_decay"]
    np.testing.assert_allclose(variable.numpy(), [0.99 - 0.1 * 2 / 3, 0.99 + 0.1 * 2 / 3, 0.99 - 0.1 / 3], rtol=1e-6)


@pytest.mark.parametrize(
    "make, op_type",
    [
        (lambda: po.Adam(0.01, amsgrad=True, weight_decay=0.1, global_clipnorm=1.0), "Pyopt>ApplyAdamMulti"),
        (lambda: po.SGD(0.01, momentum=0.9, weight_decay=0.1, clipnorm=1.0), "Pyopt>ApplyMomentumMulti"),
        (lambda: po.GradientDescent(0.01, clipnorm=1.0), "Pyopt>ApplyGradientDescentMulti"),
    ],
    ids=["adam", "momentum", "gradient_descent"],
)
def test_traced_step_is_one_fused_op(make, op_type):
    # In a tf.function the whole update of a 4-variable model, weight decay and clipping
    # included, is one fused op; the only other variable write is Keras's iteration counter.
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)
    model, optimizer = small_model(), make()

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x) ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    graph = step.get_concrete_function(tf.TensorSpec((None, 6), tf.float32)).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count(op_type) == 1
    writes = [t for t in types if t.startswith(("Assign", "ResourceApply", "ResourceScatter"))]
    assert len(writes) == 1, writes
    assert optimizer.last_backend == "fused"


def test_distribute_strategy_per_variable_path(backend):
    # Under a tf.distribute strategy Keras's per-variable path runs (clipping and weight decay
    # by Keras, update_step by pyopt.ops); results still match the Keras built-in.
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    shapes = [(), (7,), (4, 3)]
    rng = np.random.default_rng(12)
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, 20, seed=13)

    def train(make):
        with strategy.scope():
            optimizer = make()
            variables = [keras.Variable(x, dtype="float32") for x in init]
            optimizer.build(variables)

        @tf.function
        def step(gs):
            strategy.run(lambda g: optimizer.apply_gradients(zip(g, variables)), args=(gs,))

        for gs in grads:
            step([tf.constant(g, tf.float32) for g in gs])
        return [v.numpy() for v in variables]

    results = [
        train(lambda: po.Adam(0.01, weight_decay=0.05, clipnorm=1.0, backend=backend)),
        train(lambda: keras.optimizers.Adam(0.01, weight_decay=0.05, clipnorm=1.0)),
    ]
    assert_close(results[0], results[1], TOL["float32"])


# ---------------------------------------------------------------------------------------
# Arguments and config.


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: po.Adam(backend="cuda"), "backend"),
        (lambda: po.Adam(learning_rate=0.1, lr=0.1), "lr"),
        (lambda: po.SGD(0.1, lr=0.2), "lr"),
        (lambda: po.GradientDescent(-0.1), "learning_rate"),
        (lambda: po.Momentum(lr=float("nan")), "learning_rate"),
        (lambda: po.Adam(beta_1=1.0), "beta_1"),
        (lambda: po.Adam(beta_2=-0.1), "beta_2"),
        (lambda: po.Adam(epsilon=-1e-7), "epsilon"),
        (lambda: po.Adam(epsilon=0.0), r"epsilon must be a finite number > 0"),
        (lambda: po.SGD(momentum=1.5), re.escape("`momentum` must be a float between [0, 1].")),  # Keras's
        (lambda: po.SGD(momentum=float("nan")), r"momentum must be in \[0, 1\], got nan"),  # Keras takes NaN
        (lambda: po.Momentum(0.1, beta=-0.5), "beta"),
        (lambda: po.Adam(clipnorm=-1.0), "clipnorm"),
        (lambda: po.SGD(weight_decay=-0.1), "weight_decay"),
        (
            lambda: po.Adam(clipnorm=1.0, global_clipnorm=1.0),
            re.escape("Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set."),
        ),  # Keras's
        (lambda: po.SGD(learning_rate=True), re.escape("Argument `learning_rate` should be float")),  # Keras's
    ],
)
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: po.Adam(beta_1="0.9"), "beta_1"),
        (lambda: po.Adam(amsgrad=1), "amsgrad"),
        (lambda: po.SGD(skip_nonfinite="yes"), "skip_nonfinite"),
    ],
)
def test_bad_argument_types_raise_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()


KERAS_REFUSALS = [
    ("SGD", dict(momentum=-1.0)),
    ("SGD", dict(momentum=2.0)),
    ("SGD", dict(momentum=float("inf"))),
    ("SGD", dict(momentum="0.5")),
    ("SGD", dict(momentum=True)),
    ("SGD", dict(momentum=None)),
    ("SGD", dict(learning_rate=True)),
    ("Adam", dict(learning_rate="0.1")),
    ("Adam", dict(learning_rate=None)),
    ("Adam", dict(clipnorm=1.0, clipvalue=1.0)),
    ("SGD", dict(global_clipnorm=1.0, clipvalue=0.5)),
    ("Adam", dict(clipnorm=-1.0, global_clipnorm=1.0)),  # pyopt refuses clipnorm < 0 too; Keras's check is first
    ("Adam", dict(beta_1=2.0, clipnorm=1.0, clipvalue=1.0)),
    ("SGD", dict(momentum=5.0, weight_decay=-1.0)),
    ("Adam", dict(gradient_accumulation_steps=1)),
    ("Adam", dict(use_ema=True, ema_momentum=1.5)),
    ("SGD", dict(use_ema=True, ema_overwrite_frequency=2.5)),
    ("Adam", dict(betas=(0.9, 0.99))),
]


@pytest.mark.parametrize("name, kwargs", KERAS_REFUSALS, ids=[f"{n}-{k}" for n, k in KERAS_REFUSALS])
def test_keras_refusals_raise_keras_errors(name, kwargs):
    # What the Keras built-in refuses, pyopt refuses with the same exception type and message.
    with pytest.raises(Exception) as keras_error:
        getattr(keras.optimizers, name)(**kwargs)
    with pytest.raises(Exception) as pyopt_error:
        getattr(po, name)(**kwargs)
    assert type(pyopt_error.value) is type(keras_error.value)
    assert str(pyopt_error.value) == str(keras_error.value)


def test_ints_accepted_where_keras_takes_floats_only():
    sgd = po.SGD(1, momentum=1)  # Keras's SGD refuses both ints
    assert sgd.momentum == 1.0 and isinstance(sgd.momentum, float)
    assert float(sgd.learning_rate.numpy()) == 1.0
    assert isinstance(po.Adam(beta_1=0).beta_1, float)


@pytest.mark.parametrize(
    "optimizer",
    [
        po.Adam(0.01, amsgrad=True, weight_decay=0.1, clipnorm=2.0, backend="tf", skip_nonfinite=True),
        po.Adam(learning_rate=_schedule(), use_ema=True, gradient_accumulation_steps=2),
        po.SGD(0.1, momentum=0.5, nesterov=True, global_clipnorm=1.0, backend="fused"),
        po.GradientDescent(lr=0.3, clipnorm=1.0, loss_scale_factor=8.0),
        po.Momentum(0.2, beta=0.8, clipvalue=0.1),
    ],
    ids=["adam", "adam_schedule", "sgd", "gradient_descent", "momentum"],
)
def test_config_round_trip(optimizer):
    config = optimizer.get_config()
    assert config["backend"] == optimizer.backend
    again = type(optimizer).from_config(copy.deepcopy(config))  # Keras's from_config edits its argument
    assert type(again) is type(optimizer)
    assert again.get_config() == config
    # Through Keras's own serialization (registered as "pyopt>ClassName").
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is type(optimizer) and restored.get_config() == config


def test_keras_config_keys_are_kept():
    # The drop-ins report every key the Keras built-ins report, plus backend, skip_nonfinite and lazy.
    for mine, ref in [(po.Adam(), keras.optimizers.Adam()), (po.SGD(), keras.optimizers.SGD())]:
        extra = set(mine.get_config()) - set(ref.get_config())
        assert extra == {"backend", "skip_nonfinite", "lazy"}
        for key, value in ref.get_config().items():
            if key != "name":
                assert mine.get_config()[key] == value, key
