import importlib

"""pyopt.models.MLP and pyopt.training against NumPy float64 references and the Keras built-ins."""

import gc
import weakref

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from pyopt import training
from pyopt.models import MLP
from pyopt.training import (
    BackendUnavailable,
    compiled_steps,
    constant_baseline_mse,
    dead_hidden_units,
    histories_to_frame,
    lr_experiments,
    make_optimizer,
    test_step,
    train,
    train_step,
)


def _backends():
    """Every implementation make_optimizer can give here: Keras's, and pyopt's when present."""
    names = ["keras"]
    try:
        importlib.import_module("pyopt.optimizers")
    except ImportError:
        return names
    names += ["tf", "auto"]
    from pyopt import _loader

    if _loader.unavailable_reason() is None:
        names.append("fused")
    return names


BACKENDS = _backends()


def _data(n=37, features=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features))
    y = x @ rng.normal(size=(features, 1)) + 0.5 * rng.normal(size=(n, 1)) + 3.0
    return x.astype(np.float32), y.astype(np.float32)


def _weights64(model):
    return [np.asarray(v, dtype=np.float64) for v in model.trainable_variables]


def _forward64(weights, x):
    """relu(x W1 + b1) ... W_out + b_out in float64, and the pre-activations of every layer."""
    a, pre = np.asarray(x, np.float64), []
    for i in range(0, len(weights) - 2, 2):
        pre.append(a @ weights[i] + weights[i + 1])
        a = np.maximum(pre[-1], 0)
    return a @ weights[-2] + weights[-1], pre


def _mse_and_grads64(weights, x, y):
    """MSE and its gradients for a ReLU MLP, by hand in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    out, pre = _forward64(weights, x)
    d = 2 * (out - y) / out.size
    grads = [None] * len(weights)
    acts = [x] + [np.maximum(z, 0) for z in pre]
    for layer in range(len(weights) // 2 - 1, -1, -1):
        grads[2 * layer] = acts[layer].T @ d
        grads[2 * layer + 1] = d.sum(axis=0)
        if layer:
            d = (d @ weights[2 * layer].T) * (pre[layer - 1] > 0)
    return float(np.mean((out - y) ** 2)), grads


def _clip64(g, c):
    return g * c / max(np.linalg.norm(g), c)


# --- MLP ------------------------------------------------------------------------------------
@pytest.mark.parametrize("hidden, targets", [(4, 1), ([8], 1), ([8, 3], 2), ([], 1), (1, 3)])
def test_mlp_forward_matches_numpy(hidden, targets):
    x, _ = _data(n=11)
    model = MLP(hidden, num_targets=targets, seed=1)
    out = model(x).numpy()
    assert out.shape == (11, targets) and out.dtype == np.float32
    expected, _ = _forward64(_weights64(model), x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    sizes = [hidden] if isinstance(hidden, int) else hidden
    assert [tuple(v.shape) for v in model.trainable_variables[::2]] == list(zip([5, *sizes], [*sizes, targets]))
    if sizes:
        assert np.all(model.hidden_features(x).numpy() >= 0)  # ReLU


def test_mlp_seed_fixes_the_initial_weights():
    x, _ = _data()
    a, b, c = MLP([6, 4], seed=3), MLP([6, 4], seed=3), MLP([6, 4], seed=4)
    np.testing.assert_array_equal(a(x), b(x))
    assert not np.allclose(a(x), c(x))
    w = _weights64(a)
    assert not np.allclose(w[0][:4, :4], w[2][:4, :4])  # layers do not repeat each other's values
    assert all(np.all(bias == 0) for bias in w[1::2])


def test_mlp_other_activation():
    x, _ = _data()
    model = MLP(4, hidden_activation="tanh", seed=0)
    w = _weights64(model(x) is not None and model)
    expected = np.tanh(x @ w[0] + w[1]) @ w[2] + w[3]
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


def test_mlp_config_and_saving_round_trip(tmp_path):
    x, _ = _data()
    model = MLP([5, 3], num_targets=2, hidden_activation="tanh", seed=7)
    model(x)
    config = model.get_config()
    assert {k: config[k] for k in ("num_hidden_units", "num_targets", "hidden_activation", "seed")} == {
        "num_hidden_units": [5, 3],
        "num_targets": 2,
        "hidden_activation": "tanh",
        "seed": 7,
    }
    clone = MLP.from_config(config)
    np.testing.assert_array_equal(clone(x), model(x))  # same seed, same weights
    path = tmp_path / "mlp.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is MLP and loaded.num_hidden_units == [5, 3]
    np.testing.assert_array_equal(loaded(x), model(x))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_hidden_units": 0}, ValueError, "num_hidden_units"),
        ({"num_hidden_units": [4, -1]}, ValueError, "num_hidden_units"),
        ({"num_hidden_units": 2.5}, TypeError, "num_hidden_units"),
        ({"num_hidden_units": [True]}, TypeError, "num_hidden_units"),
        ({"num_hidden_units": 4, "num_targets": 0}, ValueError, "num_targets"),
        ({"num_hidden_units": 4, "seed": "1"}, TypeError, "seed"),
    ],
)
def test_mlp_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        MLP(**kwargs)


# --- one step -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("clipnorm", [None, 3.0])
@pytest.mark.parametrize("jit", [False, True])
def test_train_step_is_one_gradient_descent_step(backend, clipnorm, jit):
    """p - lr * clip(dMSE/dp) with the gradient derived by hand in float64."""
    x, y = _data()
    model = MLP([6, 3], seed=2)
    model(x)
    before = _weights64(model)
    loss64, grads = _mse_and_grads64(before, x, y)
    optimizer = make_optimizer("gd", 0.05, backend=backend, clipnorm=clipnorm)
    step = compiled_steps(model, optimizer, x)[0] if jit else (lambda a, b: train_step(model, optimizer, a, b))
    loss = step(tf.constant(x), tf.constant(y))
    np.testing.assert_allclose(float(loss), loss64, rtol=1e-5)
    if clipnorm:
        assert any(np.linalg.norm(g) > clipnorm for g in grads) and any(np.linalg.norm(g) < clipnorm for g in grads)
        grads = [_clip64(g, clipnorm) for g in grads]
    for after, p, g in zip(_weights64(model), before, grads):
        np.testing.assert_allclose(after, p - 0.05 * g, rtol=1e-5, atol=1e-6)


def test_test_step_and_mse():
    x, y = _data()
    model = MLP(4, seed=0)
    expected = np.mean((_forward64(_weights64(model(x) is not None and model), x)[0] - y) ** 2)
    np.testing.assert_allclose(float(test_step(model, x, y)), expected, rtol=1e-5)
    with pytest.raises(ValueError, match=r"reshape\(-1, 1\)"):
        test_step(model, x, y[:, 0])  # (n,) against (n, 1) would broadcast to (n, n)


def test_compiled_steps_are_cached_and_traced_at_most_twice():
    x, y = _data(n=40)
    model = MLP(4, seed=0)
    optimizer = keras.optimizers.SGD(1e-3)
    step, evaluate = compiled_steps(model, optimizer, x)
    again, _ = compiled_steps(model, optimizer)
    assert again.function is step.function
    other, _ = compiled_steps(model, keras.optimizers.SGD(1e-3))
    assert other.function is not step.function
    for size in (40, 32, 8, 32, 8, 40, 17):
        step(tf.constant(x[:size]), tf.constant(y[:size]))
        evaluate(tf.constant(x[:size]), tf.constant(y[:size]))
    assert step.tracing_count() <= 2 and evaluate.tracing_count() <= 2
    assert int(optimizer.iterations) == 7


def test_compiled_steps_keep_models_alive_only_while_held():
    x, y = _data()
    model, optimizer = MLP(4, seed=0), keras.optimizers.SGD(1e-3)
    step, evaluate = compiled_steps(model, optimizer, x)
    model_ref, optimizer_ref = weakref.ref(model), weakref.ref(optimizer)
    del model, optimizer
    gc.collect()
    step(tf.constant(x), tf.constant(y))  # still usable: the steps hold them
    evaluate(tf.constant(x), tf.constant(y))
    del step
    gc.collect()
    assert model_ref() is not None and optimizer_ref() is None
    del evaluate
    gc.collect()
    assert model_ref() is None and optimizer_ref() is None


# --- optimizers by name ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_make_optimizer(backend):
    gd = make_optimizer("gd", 0.1, backend=backend, clipnorm=2.0)
    momentum = make_optimizer("momentum", 0.1, backend=backend, beta=0.8)
    adam = make_optimizer("adam", 0.01, backend=backend, beta_1=0.8)
    assert float(gd.learning_rate) == pytest.approx(0.1) and gd.clipnorm == 2.0
    assert momentum.momentum == pytest.approx(0.8) and adam.beta_1 == pytest.approx(0.8)
    if backend == "keras":
        assert type(gd) is keras.optimizers.SGD and type(adam) is keras.optimizers.Adam
    else:
        import pyopt.optimizers as po

        assert isinstance(gd, po.GradientDescent) and isinstance(momentum, po.Momentum)
        assert isinstance(adam, po.Adam) and isinstance(make_optimizer("sgd", 0.1, backend=backend), po.SGD)
        assert adam.backend == backend


def test_make_optimizer_errors(monkeypatch):
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("adadelta", 0.1)
    with pytest.raises(ValueError, match="backend must be one of"):
        make_optimizer("gd", 0.1, backend="cuda")
    pytest.importorskip("pyopt.optimizers")
    from pyopt import _loader

    monkeypatch.setattr(_loader, "unavailable_reason", lambda: "no op library")
    with pytest.raises(BackendUnavailable, match="no op library"):
        make_optimizer("adam", 0.1, backend="fused")


# --- train ----------------------------------------------------------------------------------
def test_train_history_and_final_losses():
    x, y = _data(n=50)
    xt, yt = _data(n=20, seed=1)
    model, history = train(MLP(4, seed=0), keras.optimizers.SGD(0.01), (x, y[:, 0]), (xt, yt), 25, his_freq=10)
    assert list(history.columns) == ["epoch", "training_loss", "testing_loss"]
    assert history.epoch.tolist() == [0, 10, 20, 25]
    assert history.attrs["steps"] == 25 and history.attrs["ms_per_step"] > 0
    w = _weights64(model)
    np.testing.assert_allclose(history.training_loss.iloc[-1], _mse_and_grads64(w, x, y)[0], rtol=1e-5)
    np.testing.assert_allclose(history.testing_loss.iloc[-1], _mse_and_grads64(w, xt, yt)[0], rtol=1e-5)
    assert history.testing_loss.iloc[-1] < history.testing_loss.iloc[0]


def test_train_epoch_zero_is_the_initial_model():
    x, y = _data(n=30)
    model = MLP(4, seed=5)
    model(x)
    initial = _mse_and_grads64(_weights64(model), x, y)[0]
    _, history = train(model, keras.optimizers.SGD(0.01), (x, y), (x, y), 3, his_freq=5)
    assert history.epoch.tolist() == [0, 3]
    np.testing.assert_allclose(history.training_loss.iloc[0], initial, rtol=1e-5)
    assert history.training_loss.iloc[0] == history.testing_loss.iloc[0]


@pytest.mark.parametrize("n, batch_size", [(50, 16), (48, 16), (7, 32)])
def test_train_minibatches(n, batch_size):
    x, y = _data(n=n)
    optimizer = keras.optimizers.SGD(0.01)
    _, history = train(MLP(4, seed=0), optimizer, (x, y), (x, y), 4, batch_size=batch_size, seed=1)
    assert history.attrs["steps"] == int(optimizer.iterations) == 4 * -(-n // batch_size)


def test_train_jit_and_eager_agree():
    x, y = _data(n=40)
    runs = [
        train(
            MLP(4, seed=0), keras.optimizers.SGD(0.01, momentum=0.9), (x, y), (x, y), 10, batch_size=8, seed=3, jit=jit
        )[1]
        for jit in (True, False)
    ]
    np.testing.assert_allclose(runs[0].testing_loss, runs[1].testing_loss, rtol=1e-5)


def test_train_is_reproducible_with_a_seed():
    x, y = _data(n=40)
    runs = [
        train(MLP(6, seed=1), keras.optimizers.Adam(0.01), (x, y), (x, y), 15, batch_size=8, seed=11)[1]
        for _ in range(2)
    ]
    pd.testing.assert_frame_equal(runs[0], runs[1])
    # the same initial weights, other minibatches
    other = train(MLP(6, seed=1), keras.optimizers.Adam(0.01), (x, y), (x, y), 15, batch_size=8, seed=12)[1]
    assert other.testing_loss.iloc[0] == runs[0].testing_loss.iloc[0]
    assert not np.allclose(other.testing_loss, runs[0].testing_loss)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"epochs": 2.0}, TypeError, "epochs"),
        ({"his_freq": 0}, ValueError, "his_freq"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"seed": -1}, ValueError, "seed"),
        ({"train_data": np.zeros((4, 5))}, TypeError, "train_data"),
        ({"test_data": (np.zeros((4, 5)), np.zeros(3))}, ValueError, "test_data"),
        ({"train_data": (np.zeros((0, 5)), np.zeros(0))}, ValueError, "train_data"),
    ],
)
def test_train_bad_arguments(kwargs, error, match):
    x, y = _data(n=8)
    args = {"train_data": (x, y), "test_data": (x, y), "epochs": 1, **kwargs}
    with pytest.raises(error, match=match):
        train(MLP(2, seed=0), keras.optimizers.SGD(0.1), **args)


@pytest.mark.parametrize(
    "name, clipnorm, epochs", [("gd", 2.0, 60), ("sgd", None, 5), ("momentum", 2.0, 60), ("adam", 2.0, 60)]
)
def test_implementations_give_the_same_histories(name, clipnorm, epochs):
    """pyopt's backends against the Keras built-in on the chapter's setting, short runs."""
    from pyopt.data import boston_housing

    (x, y), (xt, yt) = boston_housing.load_data(dtype="float32")
    histories = {}
    for backend in BACKENDS:
        _, histories[backend] = train(
            MLP(4, seed=0),
            make_optimizer(name, 1e-3, backend=backend, clipnorm=clipnorm),
            (x, y),
            (xt, yt),
            epochs,
            batch_size=32 if name == "sgd" else None,
            seed=0,
        )
    for backend, history in histories.items():
        np.testing.assert_allclose(history.testing_loss, histories["keras"].testing_loss, rtol=2e-4, err_msg=backend)


def test_lr_experiments():
    x, y = _data(n=30)
    results = lr_experiments(
        [0.0, 1e-2, 1e-3],
        lambda lr: keras.optimizers.SGD(lr),
        model_factory=lambda: MLP(4),
        train_data=(x, y),
        test_data=(x, y),
        epochs=20,
        his_freq=5,
        seed=4,
    )
    assert list(results) == [0.0, 1e-2, 1e-3]
    initial = {h.training_loss.iloc[0] for h in results.values()}
    assert len(initial) == 1  # same seed, same initial weights
    assert results[0.0].training_loss.nunique() == 1  # lr 0 changes nothing
    assert results[1e-2].training_loss.iloc[-1] < results[1e-3].training_loss.iloc[-1] < initial.pop()
    frame = histories_to_frame(results)
    assert list(frame.columns) == ["lr", "epoch", "training_loss", "testing_loss"] and len(frame) == 15
    assert histories_to_frame({}).empty


# --- diagnostics ----------------------------------------------------------------------------
def test_constant_baseline_mse():
    y_train, y_test = np.array([1.0, 2.0, 6.0]), np.array([[0.0], [5.0]])
    assert constant_baseline_mse(y_train, y_test) == pytest.approx((9 + 4) / 2)


def test_dead_hidden_units():
    x, _ = _data()
    model = MLP(5, seed=0)
    model(x)
    kernel, bias = model.trainable_variables[:2]
    bias.assign([-1e3, -1e3, 0, 0, 0])
    assert dead_hidden_units(model, x) == 2
    kernel.assign(np.zeros(kernel.shape))
    assert dead_hidden_units(model, x) == 5  # ReLU(0) is 0 on every row as well


def test_optimizer_names_are_one_table():
    keras_names = {"adam", "adamw", "adagrad", "rmsprop", "adamax", "nadam", "lion"}
    assert set(training.OPTIMIZERS) == {"gd", "sgd", "momentum"} | keras_names
    assert training.BACKENDS == ("auto", "fused", "tf", "keras")


@pytest.mark.parametrize("name", ["adamw", "adagrad", "rmsprop", "adamax", "nadam", "lion"])
def test_keras_named_optimizers_are_pyopt_s_and_keras_s(name):
    """``pyopt train --optimizer <name>``: pyopt's class of that name, or with backend "keras"
    the Keras built-in, with the learning rate, clipnorm and extra hyperparameters passed."""
    hyper = {"rmsprop": dict(momentum=0.5, centered=True), "lion": dict(beta_2=0.95)}.get(name, {})
    keras_opt = make_optimizer(name, 0.02, backend="keras", clipnorm=2.0, **hyper)
    assert type(keras_opt).__module__.startswith("keras") and type(keras_opt).__name__.lower() == name
    po = pytest.importorskip("pyopt.optimizers")
    opt = make_optimizer(name, 0.02, backend="tf", clipnorm=2.0, **hyper)
    assert isinstance(opt, type(keras_opt)) and type(opt) is getattr(po, type(keras_opt).__name__)
    assert float(opt.learning_rate) == pytest.approx(0.02) and opt.clipnorm == 2.0
    for key, value in hyper.items():
        assert getattr(opt, key) == value
