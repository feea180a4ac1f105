"""The smoke subset CI runs against the installed wheel, from a directory outside the source tree.

``.ci/run`` copies this file and ``reference.py`` into an empty directory and runs pytest there
with a fresh venv that holds only the repaired wheel, tensorflow-cpu and pytest. It also runs
as part of the normal suite. Each check is a real value: every rule's step on the NumPy
kernels and on the fused TF op against the float64 reference, and the Keras optimizer in
``model.fit`` against the Keras built-in.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import reference as ref

RULES = {
    "gradient_descent": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9, nesterov=True),
    "adam": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=3),
    "adamw": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=3),  # weight_decay 0.004 by default
    "adagrad": dict(lr=0.05, epsilon=1e-7),
    "rmsprop_centered_momentum": dict(lr=0.01, rho=0.9, momentum=0.9, epsilon=1e-7),
    "adamax": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=3),
    "nadam": dict(lr=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-7, step=3, u_product=ref.nadam_u_product(3)),
    "lion": dict(lr=0.01, beta_1=0.9, beta_2=0.99),
}
FUNCTION = {"rmsprop_centered_momentum": "rmsprop"}  # the function of each case of reference.SLOTS
OPTIONAL = ("momentum_buffer", "average_gradient", "vhat")  # slots given by keyword
SIZE = 1027  # fills several SIMD vectors and leaves a tail


def _state(rule, dtype):
    """Random param, gradient and slots; second moments >= 0, RMSprop's a*a < v."""
    rng = np.random.default_rng(7)
    param, grad = (rng.standard_normal(SIZE).astype(dtype) for _ in range(2))
    slots = {name: rng.standard_normal(SIZE).astype(dtype) for name in ref.slot_names(rule)}
    for name in ("v", "velocity", "accumulator", "u"):
        if name in slots:
            slots[name] = np.abs(slots[name])
    if "average_gradient" in slots:
        slots["average_gradient"] = (0.5 * np.sqrt(slots["velocity"]) * np.tanh(slots["average_gradient"])).astype(
            dtype
        )
    return param, grad, list(slots.values())


def _expected(rule, param, grad, slots):
    return ref.step(rule, param, grad, slots, clipnorm=1.5, **RULES[rule])


def _arguments(rule, slots):
    """The slots as the functions take them: required ones positional, optional ones by keyword."""
    names = ref.slot_names(rule)
    positional = [s for name, s in zip(names, slots) if name not in OPTIONAL]
    return positional, {name: s for name, s in zip(names, slots) if name in OPTIONAL}


def test_installed_where_expected():
    """Under CI's wheel check pyopt must come from the venv's site-packages, not a checkout."""
    import pyopt

    if os.environ.get("PYOPT_EXPECT_INSTALLED"):
        assert os.path.join("site-packages", "pyopt") in pyopt.__file__, pyopt.__file__
    info = pyopt.config()
    assert info["tf_ops"] == "loaded", info
    assert info["isa"] in info["supported_isas"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rule", sorted(RULES))
def test_numpy_kernels_step(rule, dtype):
    import pyopt.kernels as kernels

    param, grad, slots = _state(rule, dtype)
    expected = _expected(rule, param, grad, slots)
    positional, optional = _arguments(rule, slots)
    function = getattr(kernels, FUNCTION.get(rule, rule))
    assert function(param, grad, *positional, **optional, clipnorm=1.5, **RULES[rule]) is True
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip([param, *slots], expected):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_fused_tf_op_step(rule):
    import tensorflow as tf

    import pyopt.ops

    param, grad, slots = _state(rule, np.float32)
    expected = _expected(rule, param, grad, slots)
    variables = [tf.Variable(x) for x in [param, *slots]]
    positional, optional = _arguments(rule, variables[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a loader warning would mean the fused op did not load
        used = getattr(pyopt.ops, FUNCTION.get(rule, rule))(
            variables[0], tf.constant(grad), *positional, **optional, clipnorm=1.5, backend="fused", **RULES[rule]
        )
    assert used == "fused"
    for got, want in zip(variables, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_keras_optimizer_in_model_fit(name):
    """``model.fit`` with pyopt's optimizer follows the Keras built-in's trajectory."""
    import keras

    import pyopt.optimizers as po

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 13)).astype(np.float32)
    y = (x @ rng.standard_normal((13, 1)) + 0.1 * rng.standard_normal((64, 1))).astype(np.float32)
    kwargs = dict(learning_rate=0.01, clipnorm=1.0) | (dict(momentum=0.9) if name == "SGD" else {})
    losses, weights = {}, {}
    for source in (po, keras.optimizers):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
        optimizer = getattr(source, name)(**kwargs)
        model.compile(optimizer=optimizer, loss="mse")
        history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        losses[source.__name__] = history.history["loss"]
        weights[source.__name__] = [w.numpy() for w in model.trainable_variables]
        if source is po:
            assert optimizer.last_backend == "fused"
    ours, keras_losses = losses[po.__name__], losses[keras.optimizers.__name__]
    assert ours[-1] < ours[0]  # it trains
    np.testing.assert_allclose(ours, keras_losses, rtol=1e-4)
    for got, want in zip(weights[po.__name__], weights[keras.optimizers.__name__]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
