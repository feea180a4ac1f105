"""Saving and restoring pyopt optimizers: ``.keras`` files and ``tf.train.Checkpoint``, both backends.

"Resumes exactly" means: training that stops, saves, restores into fresh objects and goes on
ends with the same numbers as training that never stopped (rtol=atol=1e-6, float32: the two
runs execute the same ops on the same values, so they agree to rounding noise at most).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_optimizers import assert_close, small_model

import pyopt.optimizers as po

TOL = 1e-6
OPTIMIZERS = {
    "adam": lambda b: po.Adam(0.01, amsgrad=True, weight_decay=0.01, clipnorm=1.0, backend=b),
    "momentum": lambda b: po.Momentum(0.05, beta=0.9, nesterov=True, global_clipnorm=1.0, backend=b),
    "gradient_descent": lambda b: po.GradientDescent(lr=0.05, clipnorm=1.0, backend=b),
    # RMSprop with both optional slots; Nadam with Keras's running product u_1*...*u_t (an
    # optimizer variable, not a slot). The other new classes have one or two plain slots.
    "rmsprop": lambda b: po.RMSprop(0.01, momentum=0.5, centered=True, global_clipnorm=1.0, backend=b),
    "nadam": lambda b: po.Nadam(0.01, weight_decay=0.01, clipnorm=1.0, backend=b),
}


def data(n=48):
    rng = np.random.default_rng(21)
    return rng.standard_normal((n, 6)).astype("float32"), rng.standard_normal((n, 3)).astype("float32")


@pytest.mark.parametrize("which", ["adam", "momentum", "nadam"])
def test_keras_file_round_trip(which, backend, tmp_path):
    x, y = data()
    model = small_model(seed=1)
    model.compile(optimizer=OPTIMIZERS[which](backend), loss="mse", jit_compile=False)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)

    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.backend == backend
    saved_slots = [v.numpy() for v in model.optimizer.variables]
    assert len(saved_slots) > 2  # iterations, learning rate, and the slots
    assert_close([v.numpy() for v in loaded.optimizer.variables], saved_slots, 0.0, "optimizer variable")

    # Both go on training identically.
    for m in (model, loaded):
        m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert_close(loaded.get_weights(), model.get_weights(), TOL, "weights after resuming")
    assert loaded.optimizer.last_backend == backend


def train_steps(model, optimizer, batches):
    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for x, y in batches:
        step(x, y)


def batches():
    x, y = data()
    return [(tf.constant(x[i : i + 8]), tf.constant(y[i : i + 8])) for i in range(0, len(x), 8)]


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_checkpoint_resume_equals_uninterrupted(which, backend, tmp_path):
    steps = batches()
    # Uninterrupted.
    model, optimizer = small_model(seed=2), OPTIMIZERS[which](backend)
    train_steps(model, optimizer, steps)
    want = model.get_weights()

    # Stopped half way, saved, restored into fresh objects, continued.
    model, optimizer = small_model(seed=2), OPTIMIZERS[which](backend)
    train_steps(model, optimizer, steps[:3])
    saved = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    fresh_model, fresh_optimizer = small_model(seed=99), OPTIMIZERS[which](backend)
    fresh_optimizer.build(fresh_model.trainable_variables)
    tf.train.Checkpoint(model=fresh_model, optimizer=fresh_optimizer).restore(saved).assert_consumed()
    assert int(fresh_optimizer.iterations.numpy()) == 3
    assert_close([v.numpy() for v in fresh_optimizer.variables], [v.numpy() for v in optimizer.variables], 0.0)
    train_steps(fresh_model, fresh_optimizer, steps[3:])
    assert_close(fresh_model.get_weights(), want, TOL, "weights after resuming")
    assert fresh_optimizer.last_backend == backend


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("Adam", dict(learning_rate=0.01)),
        ("RMSprop", dict(learning_rate=0.01, momentum=0.5, centered=True)),
        ("Nadam", dict(learning_rate=0.01)),
    ],
    ids=["adam", "rmsprop", "nadam"],
)
def test_keras_checkpoint_restores_into_pyopt(name, kwargs, backend, tmp_path):
    # Same slot variables and names as the Keras built-in (RMSprop's optional slots, Nadam's
    # running product included): a Keras checkpoint resumes in pyopt.
    steps = batches()
    model, optimizer = small_model(seed=3), getattr(keras.optimizers, name)(**kwargs)
    train_steps(model, optimizer, steps[:3])
    saved = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))
    train_steps(model, optimizer, steps[3:])

    fresh_model, fresh_optimizer = small_model(seed=4), getattr(po, name)(**kwargs, backend=backend)
    fresh_optimizer.build(fresh_model.trainable_variables)
    tf.train.Checkpoint(model=fresh_model, optimizer=fresh_optimizer).restore(saved).assert_consumed()
    train_steps(fresh_model, fresh_optimizer, steps[3:])
    assert_close(fresh_model.get_weights(), model.get_weights(), 1e-5, "pyopt after a Keras checkpoint")
    assert_close([v.numpy() for v in fresh_optimizer.variables], [v.numpy() for v in optimizer.variables], 1e-5)
    assert fresh_optimizer.last_backend == backend
