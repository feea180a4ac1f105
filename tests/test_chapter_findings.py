"""The optimizer chapter's findings, reproduced on short seeded runs with pyopt's optimizers.

Setting (the chapter's): Boston housing with the raw, unnormalised features (TAX ~ 300-700,
B ~ 400), an MLP 13 -> 4 ReLU -> 1, full-batch MSE, learning rate 1e-3.

1. Gradient descent without clipping collapses to the constant predictor: the first steps are
   huge, push every hidden pre-activation below zero on all the data, the ReLUs die, and from
   then on only the output bias learns, converging to mean(y_train).
2. The same run with clipnorm=2 learns: test MSE well below the constant predictor's.
3. Momentum and Adam, also clipped, get further in fewer epochs.

How robust (exploration, hidden 4, 8, 16 x seeds 0-7, 24 runs): every hidden unit was dead
after 50 epochs in all 24 runs without clipping. With hidden 4 and seeds 0-7, the clipped GD's
test MSE after 2000 epochs was 0.65-0.93 x the baseline (seed 0: 0.67); momentum after 1000
epochs beat clipped GD after 1000 epochs by >= 0.06 x baseline and after 2000 epochs in every
seed; Adam after 500 epochs (0.41-0.67 x) beat clipped GD after 2000 epochs in every seed.
The thresholds below leave margins of at least ~0.1 x baseline at seed 0.
"""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from pyopt.data import boston_housing
from pyopt.models import MLP
from pyopt.training import constant_baseline_mse, dead_hidden_units, make_optimizer, train

HIDDEN = 4
LR = 1e-3
SEED = 0

try:
    importlib.import_module("pyopt.optimizers")

    BACKEND = "auto"  # pyopt's optimizers (fused ops where built, else pure TF)
except ImportError:  # pragma: no cover - only before pyopt.optimizers existed
    BACKEND = "keras"


@pytest.fixture(scope="module")
def data():
    return boston_housing.load_data(dtype="float32", targets_as_columns=True)


@pytest.fixture(scope="module")
def baseline(data):
    (_, y_train), (_, y_test) = data
    return constant_baseline_mse(y_train, y_test)


def _run(data, name, epochs, *, clipnorm=None, seed=SEED, model=None, optimizer=None, his_freq=50):
    (x_train, y_train), test = data
    if model is None:
        model = MLP(HIDDEN, seed=seed)
        optimizer = make_optimizer(name, LR, backend=BACKEND, clipnorm=clipnorm)
    model, history = train(model, optimizer, (x_train, y_train), test, epochs, his_freq=his_freq, seed=seed)
    return model, optimizer, history.set_index("epoch")


def _gradient_norm(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(y - model(x)))
    return float(tf.linalg.global_norm(tape.gradient(loss, model.trainable_variables)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gd_without_clipping_kills_every_hidden_unit(data, seed):
    (x_train, y_train), (x_test, _) = data
    initial = MLP(HIDDEN, seed=seed)
    assert _gradient_norm(initial, x_train, y_train) > 500  # raw features: a huge first step
    model, _, _ = _run(data, "gd", 50, seed=seed)
    assert dead_hidden_units(model, x_train) == HIDDEN
    assert not np.any(model.hidden_features(x_test).numpy())  # dead on unseen rows too
    bias = model.last_linear.bias.numpy()
    np.testing.assert_array_equal(model(x_test).numpy(), np.broadcast_to(bias, (len(x_test), 1)))


def test_after_the_collapse_only_the_output_bias_learns(data):
    """With every ReLU dead the loss is mean((y - b)**2): GD moves b alone, and
    b_k - mean(y) = (1 - 2 lr)**k (b_0 - mean(y)) exactly (up to float32 rounding)."""
    (_, y_train), _ = data
    model, optimizer, _ = _run(data, "gd", 50)
    frozen = [v.numpy().copy() for v in model.trainable_variables[:-1]]
    b0 = float(model.last_linear.bias.numpy()[0])
    k = 300
    model, _, _ = _run(data, "gd", k, model=model, optimizer=optimizer, his_freq=k)
    for before, after in zip(frozen, model.trainable_variables[:-1]):
        np.testing.assert_array_equal(after.numpy(), before)
    mean = float(np.mean(y_train, dtype=np.float64))
    expected = mean + (1 - 2 * LR) ** k * (b0 - mean)
    assert abs(b0 - mean) > 1  # the check below is not vacuous
    np.testing.assert_allclose(float(model.last_linear.bias.numpy()[0]), expected, rtol=1e-4)


def test_gd_without_clipping_ends_as_the_constant_predictor(data, baseline):
    (x_train, y_train), _ = data
    model, _, history = _run(data, "gd", 3000, seed=1, his_freq=500)
    assert dead_hidden_units(model, x_train) == HIDDEN
    assert abs(float(model.last_linear.bias.numpy()[0]) - float(y_train.mean())) < 0.2
    assert history.testing_loss.iloc[-1] == pytest.approx(baseline, rel=0.01)


@pytest.fixture(scope="module")
def clipped_gd(data):
    return _run(data, "gd", 2000, clipnorm=2.0)


def test_clipnorm_lets_gd_learn(data, baseline, clipped_gd):
    (x_train, _), _ = data
    model, _, history = clipped_gd
    assert dead_hidden_units(model, x_train) < HIDDEN
    assert history.testing_loss[2000] < 0.8 * baseline
    assert history.testing_loss[2000] < history.testing_loss[1000] < history.testing_loss[500]


def test_momentum_trains_further_in_fewer_epochs(data, baseline, clipped_gd):
    _, _, gd = clipped_gd
    _, _, momentum = _run(data, "momentum", 1000, clipnorm=2.0)
    assert momentum.testing_loss[1000] < gd.testing_loss[1000] - 0.05 * baseline
    assert momentum.testing_loss[1000] < gd.testing_loss[2000]  # in half the epochs


def test_adam_trains_further_in_fewer_epochs(data, baseline, clipped_gd):
    _, _, gd = clipped_gd
    _, _, adam = _run(data, "adam", 500, clipnorm=2.0)
    assert adam.testing_loss[500] < 0.6 * baseline
    assert adam.testing_loss[500] < gd.testing_loss[2000] - 0.1 * baseline  # in a quarter of the epochs
