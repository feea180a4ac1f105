"""pyopt optimizers with Keras mixed precision and 16-bit models, against the Keras built-ins.

Every numeric case trains the same model (same seed, data, batches) once with a pyopt
optimizer and once with the Keras built-in of the same arguments, and compares weights
(``np.testing.assert_allclose``, rtol = atol = the stated tolerance):

- ``mixed_float16`` / ``mixed_bfloat16`` policies (float32 variables, 16-bit compute), the
  optimizer wrapped in ``keras.optimizers.LossScaleOptimizer``, 2 epochs of 4 steps:
  the optimizers differ only in float32 rounding (~1e-7), but the next forward pass rounds
  the weights to 16 bits, so a 1-ulp difference can flip a rounding and propagate.
  Tolerance 1e-4 (observed: <= 9e-6 for float16 compute, <= 7e-7 for bfloat16), far below
  one step's change (~1e-2).
- float16 / bfloat16 variables (``dtype="float16"`` model, no loss scaling), 1 epoch:
  Keras does the update maths in the 16-bit type, pyopt in float32 with one rounding
  (see ``pyopt.optimizers.PyoptOptimizer``), so weights differ by a few 16-bit ulps per
  step: tolerance 1e-2 (float16, ulp 2^-10; observed <= 1.5e-3), 6e-2 (bfloat16, ulp 2^-7;
  observed <= 3.9e-2, i.e. ~10 bfloat16 ulps of weights ~0.5 after 4 steps). Adam uses
  ``epsilon=1e-3`` there: with the default 1e-7, Keras's float16 maths underflows ``v``
  (g^2 < 6e-8 becomes 0) and its step ``m / (sqrt(v) + eps)`` explodes (weights of ~20 after
  4 steps), while pyopt's float32 maths does not; the comparison would only show Keras's
  overflow.
- Skipped steps are checked exactly (nothing may change).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from backends import fused_unavailable_reason

import pyopt.optimizers as po

MIXED_TOL = {"mixed_float16": 1e-4, "mixed_bfloat16": 1e-4}
HALF_TOL = {"float16": 1e-2, "bfloat16": 6e-2}

# (pyopt class, Keras class, arguments both take)
OPTIMIZERS = {
    "adam": (po.Adam, keras.optimizers.Adam, dict(learning_rate=0.01, weight_decay=0.01)),
    "momentum": (po.SGD, keras.optimizers.SGD, dict(learning_rate=0.05, momentum=0.9, nesterov=True, clipnorm=1.0)),
    "gradient_descent": (po.GradientDescent, keras.optimizers.SGD, dict(learning_rate=0.05, global_clipnorm=1.0)),
}


# backend="auto" picks the fused ops for float32 and 16-bit CPU variables; where they cannot
# run (PYOPT_BACKEND=tf, no op library) the same checks hold on the pure-TF path.
AUTO_BACKEND = "tf" if fused_unavailable_reason() else "fused"


def make_model(dtype, seed=0):
    """Dense(8, tanh) -> Dense(3) under ``dtype`` (a policy name); float32 output for the loss."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", dtype=dtype),
            keras.layers.Dense(3, dtype=dtype),
            keras.layers.Activation("linear", dtype="float32"),
        ]
    )


def data(n=64):
    rng = np.random.default_rng(31)
    return rng.standard_normal((n, 6)).astype("float32"), rng.standard_normal((n, 3)).astype("float32")


def make_optimizer(which, mine: bool, **extra):
    pyopt_class, keras_class, kwargs = OPTIMIZERS[which]
    return (pyopt_class if mine else keras_class)(**{**kwargs, **extra})


def fit(model, optimizer, epochs):
    x, y = data()
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model.get_weights()


def assert_close(actual, expected, tol, what):
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(e, np.float64), rtol=tol, atol=tol, err_msg=f"{what} #{i}"
        )


_KERAS_RUNS: dict = {}


def keras_reference(key, make):
    if key not in _KERAS_RUNS:
        _KERAS_RUNS[key] = make()
    return _KERAS_RUNS[key]


# ---------------------------------------------------------------------------------------
# Mixed precision: float32 master weights, 16-bit compute, LossScaleOptimizer.


MIXED_CASES = [(which, "mixed_float16") for which in OPTIMIZERS] + [
    ("adam", "mixed_bfloat16"),
    ("momentum", "mixed_bfloat16"),
]


@pytest.mark.parametrize("which, policy", MIXED_CASES)
def test_mixed_policy_with_loss_scale_optimizer_matches_keras(which, policy):
    def run(mine):
        model = make_model(policy)
        optimizer = keras.optimizers.LossScaleOptimizer(make_optimizer(which, mine))
        return model, optimizer, fit(model, optimizer, epochs=2)

    model, optimizer, got = run(mine=True)
    _, keras_optimizer, want = keras_reference(("mixed", which, policy), lambda: run(mine=False))
    assert_close(got, want, MIXED_TOL[policy], f"{which} {policy}")
    # Float32 master weights, 16-bit compute; the inner pyopt optimizer ran the fused op on them.
    compute = policy.split("_")[1]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert [layer.compute_dtype for layer in model.layers[:2]] == [compute, compute]
    assert optimizer.inner_optimizer.last_backend == AUTO_BACKEND
    assert int(optimizer.inner_optimizer.iterations.numpy()) == 8
    # The loss scale evolved the same way (same number of skipped steps, if any).
    assert float(optimizer.dynamic_scale.numpy()) == float(keras_optimizer.dynamic_scale.numpy())


def test_global_mixed_float16_policy_auto_wraps_pyopt_optimizer():
    # The usual recipe: set the global policy, compile; Keras wraps the optimizer itself.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:

        def run(mine):
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((6,)),
                    keras.layers.Dense(8, activation="tanh"),
                    keras.layers.Dense(3),
                    keras.layers.Activation("linear", dtype="float32"),
                ]
            )
            return model, fit(model, make_optimizer("adam", mine), epochs=2)

        model, got = run(mine=True)
        _, want = run(mine=False)
    finally:
        keras.config.set_dtype_policy(previous)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, po.Adam)
    assert model.optimizer.inner_optimizer.last_backend == AUTO_BACKEND
    assert_close(got, want, MIXED_TOL["mixed_float16"], "global mixed_float16 adam")


# ---------------------------------------------------------------------------------------
# 16-bit variables directly.


HALF_CASES = [(which, "float16") for which in OPTIMIZERS] + [("adam", "bfloat16"), ("gradient_descent", "bfloat16")]


@pytest.mark.parametrize("which, dtype", HALF_CASES)
def test_half_precision_model_matches_keras(which, dtype):
    def run(mine):
        model = make_model(dtype)
        optimizer = make_optimizer(which, mine, **({"epsilon": 1e-3} if which == "adam" else {}))
        return model, optimizer, fit(model, optimizer, epochs=1)

    model, optimizer, got = run(mine=True)
    _, _, want = keras_reference(("half", which, dtype), lambda: run(mine=False))
    assert all(v.dtype == dtype for v in model.trainable_variables)
    assert optimizer.last_backend == AUTO_BACKEND
    assert all(np.isfinite(np.asarray(w, np.float32)).all() for w in got)
    assert_close(got, want, HALF_TOL[dtype], f"{which} {dtype} model")


# ---------------------------------------------------------------------------------------
# Non-finite gradients.


def optimizer_state(optimizer, skip=("iteration",)):
    """Every optimizer variable except those named in ``skip``, as NumPy arrays keyed by path."""
    return {v.path: np.array(v.numpy()) for v in optimizer.variables if v.path.split("/")[-1] not in skip}


def assert_same_state(actual: dict, expected: dict, what):
    assert actual.keys() == expected.keys(), what
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=f"{what}: {key}")


def bad_batch(x, y):
    """A batch whose loss and gradients are NaN (one NaN input feature reaches every weight)."""
    x = x[:16].copy()
    x[5, 0] = np.nan
    return x, y[:16]


@pytest.mark.parametrize("which", ["adam", "momentum"])
def test_loss_scale_optimizer_skips_non_finite_step(which):
    x, y = data()
    results = []
    for mine in (True, False):
        model = make_model("mixed_float16")
        optimizer = keras.optimizers.LossScaleOptimizer(make_optimizer(which, mine), initial_scale=2.0**10)
        model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
        model.train_on_batch(x[:16], y[:16])
        weights, inner = model.get_weights(), optimizer_state(optimizer.inner_optimizer, skip=())
        scale = float(optimizer.dynamic_scale.numpy())

        loss = model.train_on_batch(*bad_batch(x, y))
        assert not np.isfinite(loss)
        assert_close(model.get_weights(), weights, 0.0, f"{which} weights after a skipped step")
        # Inner optimizer untouched, its iteration counter included; the scale halves.
        assert_same_state(optimizer_state(optimizer.inner_optimizer, skip=()), inner, f"{which} inner optimizer")
        assert float(optimizer.dynamic_scale.numpy()) == scale / 2

        model.train_on_batch(x[16:32], y[16:32])  # and training goes on
        assert int(optimizer.inner_optimizer.iterations.numpy()) == 2
        results.append(model.get_weights())
        if mine:
            assert optimizer.inner_optimizer.last_backend == AUTO_BACKEND
    assert_close(results[0], results[1], MIXED_TOL["mixed_float16"], f"{which} pyopt vs Keras around a skipped step")


@pytest.mark.parametrize(
    "which, dtype",
    [("adam", "float16"), ("momentum", "bfloat16"), ("gradient_descent", "float32"), ("adam", "float32")],
)
def test_skip_nonfinite_leaves_model_and_slots_untouched(which, dtype):
    x, y = data()
    model = make_model(dtype)
    optimizer = make_optimizer(which, True, skip_nonfinite=True)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    model.train_on_batch(x[:16], y[:16])
    weights, state = model.get_weights(), optimizer_state(optimizer)

    assert not np.isfinite(model.train_on_batch(*bad_batch(x, y)))
    assert_close(model.get_weights(), weights, 0.0, f"{which} {dtype} weights after a non-finite step")
    assert_same_state(optimizer_state(optimizer), state, f"{which} {dtype} slots after a non-finite step")
    assert int(optimizer.iterations.numpy()) == 2  # Keras's counter counts every call
    assert optimizer.last_backend == AUTO_BACKEND

    model.train_on_batch(x[16:32], y[16:32])
    after = model.get_weights()
    assert all(np.isfinite(np.asarray(w, np.float32)).all() for w in after)
    assert any(not np.array_equal(a, w) for a, w in zip(after, weights))
