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
  step: tolerance 1e-2 (float16, ulp 2^-10; observed <= 1.5e-3), 2e-2 (bfloat16, ulp 2^-7;
  observed <= 5.1e-3, i.e. ~1.3 bfloat16 ulps of weights ~0.5 after 4 steps). Adam uses
  ``epsilon=1e-3`` there: with the default 1e-7, Keras's float16 maths underflows ``v``
  (g^2 < 6e-8 becomes 0) and its step ``m / (sqrt(v) + eps)`` explodes (weights of ~20 after
  4 steps), while pyopt's float32 maths does not; the comparison would only show Keras's
  overflow. For bfloat16 Adam also uses betas that bfloat16 holds exactly (0.875,
  1 - 2^-7): Keras casts beta_2 to the variables' type, where 0.999 is 1.0, and its
  ``alpha = lr*sqrt(1 - beta_2^t)/(1 - beta_1^t)`` is 0 (its weights never move). Keras's
  weights must move beyond the tolerance. Nadam is not in this comparison: Keras's float16
  ``v = v + (g^2 - v)*(1 - beta_2)`` is ~1e-6 here, subnormal in float16 (below 6.1e-5,
  steps of 6e-8), and its weights moved 40% further than float32 maths moves them (measured,
  with epsilon=1e-3 too).
- Skipped steps are checked exactly (nothing may change).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from backends import fused_unavailable_reason

import pyopt.optimizers as po

MIXED_TOL = {"mixed_float16": 1e-4, "mixed_bfloat16": 1e-4}
HALF_TOL = {"float16": 1e-2, "bfloat16": 2e-2}

# (pyopt class, Keras class, arguments both take)
OPTIMIZERS = {
    "adam": (po.Adam, keras.optimizers.Adam, dict(learning_rate=0.01, weight_decay=0.01)),
    "momentum": (po.SGD, keras.optimizers.SGD, dict(learning_rate=0.05, momentum=0.9, nesterov=True, clipnorm=1.0)),
    "gradient_descent": (po.GradientDescent, keras.optimizers.SGD, dict(learning_rate=0.05, global_clipnorm=1.0)),
    # RMSprop with both optional slots; Nadam with its running product (a variable of the
    # variables' dtype: float16 for a float16 model)
    "rmsprop": (
        po.RMSprop,
        keras.optimizers.RMSprop,
        dict(learning_rate=0.01, momentum=0.5, centered=True, clipnorm=1.0),
    ),
    "nadam": (po.Nadam, keras.optimizers.Nadam, dict(learning_rate=0.01, weight_decay=0.01)),
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


HALF_CASES = [(which, "float16") for which in OPTIMIZERS if which != "nadam"] + [
    ("adam", "bfloat16"),
    ("gradient_descent", "bfloat16"),
    ("rmsprop", "bfloat16"),
]


@pytest.mark.parametrize("which, dtype", HALF_CASES)
def test_half_precision_model_matches_keras(which, dtype):
    extra = {}
    if which == "adam":
        extra = dict(epsilon=1e-3, **(dict(beta_1=0.875, beta_2=1 - 2**-7) if dtype == "bfloat16" else {}))

    def run(mine):
        model = make_model(dtype)
        initial = model.get_weights()
        optimizer = make_optimizer(which, mine, **extra)
        return model, optimizer, fit(model, optimizer, epochs=1), initial

    model, optimizer, got, _ = run(mine=True)
    _, _, want, initial = keras_reference(("half", which, dtype), lambda: run(mine=False))
    tol = HALF_TOL[dtype]
    moved = [np.abs(np.float64(w) - np.float64(i)) > tol * (1 + np.abs(np.float64(w))) for w, i in zip(want, initial)]
    assert any(m.any() for m in moved), f"Keras's {which} {dtype} weights did not move beyond the tolerance"
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


@pytest.mark.parametrize("which", ["adam", "momentum", "nadam"])
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
    [
        ("adam", "float16"),
        ("momentum", "bfloat16"),
        ("gradient_descent", "float32"),
        ("adam", "float32"),
        ("rmsprop", "float16"),
        ("nadam", "float32"),
    ],
)
def test_skip_nonfinite_leaves_model_and_slots_untouched(which, dtype):
    x, y = data()
    model = make_model(dtype)
    optimizer = make_optimizer(which, True, skip_nonfinite=True)
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    model.train_on_batch(x[:16], y[:16])
    # The counters: Keras's iterations and Nadam's running product u_1*...*u_t, which follows them
    counters = ("iteration",) + ((optimizer._u_product.path.split("/")[-1],) if which == "nadam" else ())
    weights, state = model.get_weights(), optimizer_state(optimizer, skip=counters)

    assert not np.isfinite(model.train_on_batch(*bad_batch(x, y)))
    assert_close(model.get_weights(), weights, 0.0, f"{which} {dtype} weights after a non-finite step")
    assert_same_state(optimizer_state(optimizer, skip=counters), state, f"{which} {dtype} slots, non-finite step")
    assert int(optimizer.iterations.numpy()) == 2  # Keras's counter counts every call
    if which == "nadam":  # u_1*u_2, u_t = 0.9*(1 - 0.5*0.96^t)
        u_1, u_2 = 0.9 * (1 - 0.5 * 0.96), 0.9 * (1 - 0.5 * 0.96**2)
        np.testing.assert_allclose(optimizer._u_product.numpy(), u_1 * u_2, rtol=1e-6)
    assert optimizer.last_backend == AUTO_BACKEND

    model.train_on_batch(x[16:32], y[16:32])
    after = model.get_weights()
    assert all(np.isfinite(np.asarray(w, np.float32)).all() for w in after)
    assert any(not np.array_equal(a, w) for a, w in zip(after, weights))
