"""pyopt.legacy: the chapter's tf_keras (Keras 2) optimizers against tf_keras' own legacy ones.

References: ``tf_keras.optimizers.legacy.SGD`` / ``Adam`` (float32/float64, same steps from the
same start), and the float64 NumPy rules of ``tests/reference.py`` for float16/bfloat16 (legacy
Keras does half-precision maths in half precision, pyopt in float32).

Tolerances (float32; float64: rtol=1e-12, atol=1e-14): pyopt computes the decayed learning rate and
Adam's bias correction in float64 and rounds once, legacy Keras in float32, and pyopt's Adam
writes ``m + (g-m)*(1-b1)`` where TF writes ``b1*m + (1-b1)*g``: a few float32 ulps per step,
``rtol=1e-5, atol=1e-6`` after 4 steps (measured: a few 1e-7 absolute at most). GD and momentum do the
same operations in the same order (equal up to the float64 learning rate, atol 1e-6).

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
SHAPES = [(0,), (1,), (7,), (17,), (1023,), (3, 5)]
TOL = {tf.float32: dict(rtol=1e-5, atol=1e-6), tf.float64: dict(rtol=1e-12, atol=1e-14)}


def _make(case, backend, **kwargs):
    ours, ref = CASES[case]
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


@pytest.mark.parametrize("case", CASES)
def test_get_config_from_config_round_trip(case):
    kwargs = dict(clipnorm=1.5, decay=0.01)
    opt = CASES[case][0](backend="tf", **kwargs)
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


def test_embedding_model_fit_matches_legacy(backend):
    """model.fit through an Embedding (sparse gradients) and a Dense layer."""
    results = []
    for ours in (True, False):
        opt = pl.Adam(0.05, backend=backend) if ours else legacy.Adam(0.05)
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
    "case, jit_compile", [("gd", False), ("nesterov", False), ("amsgrad", False), ("nesterov", True), ("amsgrad", True)]
)
def test_model_fit_matches_legacy(case, jit_compile, backend):
    """model.fit (clipnorm, a kernel constraint) against legacy Keras; with jit_compile=True ours
    runs inside XLA (pure-TF maths: the fused op has no XLA kernel), the reference without XLA
    (legacy amsgrad has none)."""
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


@pytest.mark.parametrize("case", ["momentum", "amsgrad"])
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


@pytest.mark.parametrize("case", ["nesterov", "amsgrad"])
def test_checkpoint_of_legacy_optimizer_restores(case, backend, tmp_path):
    """Same slot and hyperparameter names as legacy SGD/Adam: their checkpoints restore into ours."""
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
