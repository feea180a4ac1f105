"""pyopt optimizers with XLA, ``.keras`` files, SavedModel export and CheckpointManager.

XLA: custom ops have no XLA kernel, so ``backend="auto"`` runs the pure-TF maths inside an
XLA-compiled step by itself (``last_backend == "tf"``); ``backend="fused"`` refuses with a
clear error. XLA vs the non-XLA (fused) run: rtol=atol=1e-5 (float32; XLA fuses the model's
own ops differently, the optimizer maths is the same up to rounding; observed ~1e-7), but
for Lion's near ties (its sign may flip there, 2*lr; ``test_optimizers.lion_near_ties``).

Saving: a model trained with pyopt reloads with equal predictions (``.keras``: exactly, the
same weights run through the same ops; SavedModel: rtol=atol=1e-6, a different graph of the
same float32 ops), the optimizer comes back with its class, config and slots, and training
goes on with the same numbers as training that never stopped: bit-for-bit on the fused path
(the same ops on the same values), rtol=atol=1e-6 on the pure-TF path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from backends import fused_unavailable_reason
from test_optimizers import assert_close, gradient_sequence, lion_near_ties, lion_slack, small_model

import pyopt.optimizers as po
from pyopt.ops import FusedBackendError

XLA_TOL = 1e-5
SAVEDMODEL_TOL = 1e-6
RESUME_TOL = {"fused": 0.0, "tf": 1e-6}

OPTIMIZERS = {
    "adam": lambda b: po.Adam(0.01, amsgrad=True, weight_decay=0.01, global_clipnorm=1.0, backend=b),
    "momentum": lambda b: po.Momentum(0.05, beta=0.8, nesterov=True, clipnorm=0.5, weight_decay=0.01, backend=b),
    "gradient_descent": lambda b: po.GradientDescent(lr=0.05, clipnorm=1.0, backend=b),
}
# The new rules' pure-TF maths under XLA, in the custom loop: RMSprop's optional slots,
# Adamax's max and bias correction, Nadam's schedule (powers of 0.96) and running product.
# (AdamW is Adam's maths; Adagrad's ops are a subset of RMSprop's; Lion, whose sign may flip
# at near ties, on fixed gradients: test_lion_xla_step_matches_fused_step.)
XLA_OPTIMIZERS = {
    **OPTIMIZERS,
    "rmsprop": lambda b: po.RMSprop(0.01, momentum=0.5, centered=True, global_clipnorm=1.0, backend=b),
    "adamax": lambda b: po.Adamax(0.01, clipnorm=1.0, backend=b),
    "nadam": lambda b: po.Nadam(0.01, weight_decay=0.01, backend=b),
}


def data(n=64):
    rng = np.random.default_rng(41)
    return rng.standard_normal((n, 6)).astype("float32"), rng.standard_normal((n, 3)).astype("float32")


AUTO_BACKEND = "tf" if fused_unavailable_reason() else "fused"  # what backend="auto" runs outside XLA


def needs_fused():
    reason = fused_unavailable_reason()
    if reason:
        pytest.skip(reason)


def fit(model, optimizer, epochs=2, jit_compile=False, initial_epoch=0):
    x, y = data()
    if not model.compiled:
        model.compile(optimizer=optimizer, loss="mse", jit_compile=jit_compile)
    model.fit(x, y, batch_size=16, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0)
    return model.get_weights()


def train_loop(model, optimizer, steps, jit_compile):
    """A custom loop: ``steps`` batches of 16 through one ``tf.function(jit_compile=...)`` step."""
    x, y = data()

    @tf.function(jit_compile=jit_compile)
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(xb, training=True) - yb))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

    for i in range(steps):
        j = 16 * (i % 4)
        step(tf.constant(x[j : j + 16]), tf.constant(y[j : j + 16]))
    return model.get_weights()


def exact_or_close(actual, expected, tol, what):
    if tol == 0.0:
        assert len(actual) == len(expected), what
        for i, (a, e) in enumerate(zip(actual, expected)):
            np.testing.assert_array_equal(a, e, err_msg=f"{what} #{i} (bit-for-bit)")
    else:
        assert_close(actual, expected, tol, what)


# ---------------------------------------------------------------------------------------
# XLA.


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_model_compile_jit_runs_tf_path_and_matches_non_xla(which):
    plain = OPTIMIZERS[which]("auto")
    want = fit(small_model(seed=5), plain)
    assert plain.last_backend == AUTO_BACKEND

    xla = OPTIMIZERS[which]("auto")
    model = small_model(seed=5)
    got = fit(model, xla, jit_compile=True)
    assert model.jit_compile is True
    assert xla.last_backend == "tf"
    assert int(xla.iterations.numpy()) == 8
    assert_close(got, want, XLA_TOL, f"{which} XLA fit vs fused fit")


@pytest.mark.parametrize("which", list(XLA_OPTIMIZERS))
def test_tf_function_jit_loop_runs_tf_path_and_matches_non_xla(which):
    results = {}
    for jit in (False, True):
        optimizer = XLA_OPTIMIZERS[which]("auto")
        results[jit] = train_loop(small_model(seed=6), optimizer, steps=8, jit_compile=jit)
        assert optimizer.last_backend == ("tf" if jit else AUTO_BACKEND)
    assert_close(results[True], results[False], XLA_TOL, f"{which} XLA loop vs fused loop")


def test_lion_xla_step_matches_fused_step():
    # On fixed gradients Lion's m and g do not depend on the params, so near ties of its sign
    # are known (test_optimizers.lion_near_ties): only there may XLA and the fused op differ.
    shapes = [(), (7,), (4, 3)]
    rng = np.random.default_rng(42)
    init = [rng.standard_normal(s) for s in shapes]
    grads = gradient_sequence(shapes, 20, seed=43)
    stacked = [tf.constant(np.stack(per_var), tf.float32) for per_var in zip(*grads)]

    def run(jit):
        optimizer = po.Lion(0.01, weight_decay=0.1, global_clipnorm=2.0)
        variables = [keras.Variable(x, dtype="float32") for x in init]
        optimizer.build(variables)

        @tf.function(jit_compile=jit)
        def loop():
            for t in tf.range(len(grads)):
                optimizer.apply_gradients(zip([g[t] for g in stacked], variables))

        loop()
        assert optimizer.last_backend == ("tf" if jit else AUTO_BACKEND)
        return [v.numpy() for v in variables], [v.numpy() for v in optimizer.variables]

    results = {jit: run(jit) for jit in (False, True)}
    ties = lion_near_ties(grads, global_clipnorm=2.0)
    slack = lion_slack(ties, 0.01, 20 * sum(int(np.prod(s)) for s in shapes))
    assert_close(results[True][0], results[False][0], XLA_TOL, "Lion XLA vs fused", slack=slack)
    assert_close(results[True][1], results[False][1], XLA_TOL, "Lion XLA vs fused, optimizer variables")


def test_default_compile_on_cpu_uses_fused_path():
    # Keras's jit_compile="auto" turns XLA off on CPU-only machines, so the default compile
    # gets the fused ops here (on a GPU machine "auto" means XLA, hence the pure-TF maths).
    if any(d.device_type != "CPU" for d in tf.config.list_physical_devices()):
        pytest.skip("jit_compile='auto' means XLA where an accelerator is visible")
    optimizer = po.Adam(0.01)
    model = small_model()
    fit(model, optimizer, epochs=1, jit_compile="auto")
    assert model.jit_compile is False and optimizer.last_backend == AUTO_BACKEND


FUSED_UNDER_XLA = r"backend='fused' cannot run this step: inside an XLA-compiled function"


def test_fused_backend_under_xla_fit_raises_clear_error():
    needs_fused()
    with pytest.raises(FusedBackendError, match=FUSED_UNDER_XLA):
        fit(small_model(), OPTIMIZERS["adam"]("fused"), epochs=1, jit_compile=True)
    assert issubclass(FusedBackendError, RuntimeError)


def test_fused_backend_under_xla_tf_function_raises_clear_error():
    # Raised while autograph traces the step: it must keep its type (not become a StagingError).
    needs_fused()
    with pytest.raises(FusedBackendError, match=FUSED_UNDER_XLA):
        train_loop(small_model(), OPTIMIZERS["momentum"]("fused"), steps=1, jit_compile=True)


# ---------------------------------------------------------------------------------------
# .keras files.


def optimizer_values(optimizer):
    return [np.array(v.numpy()) for v in optimizer.variables]


@pytest.mark.parametrize("which", ["momentum", "gradient_descent"])
def test_keras_file_restores_optimizer_and_training_continues(which, backend, tmp_path):
    x, _ = data()
    model = small_model(seed=8)
    fit(model, OPTIMIZERS[which](backend), epochs=1)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    exact_or_close(optimizer_values(loaded.optimizer), optimizer_values(model.optimizer), 0.0, "restored slots")
    for m in (model, loaded):
        fit(m, None, epochs=2, initial_epoch=1)
    exact_or_close(loaded.get_weights(), model.get_weights(), RESUME_TOL[backend], f"{which} after reloading")
    exact_or_close(
        optimizer_values(loaded.optimizer),
        optimizer_values(model.optimizer),
        RESUME_TOL[backend],
        f"{which} slots after reloading",
    )
    assert loaded.optimizer.last_backend == backend


def test_keras_file_with_loss_scale_optimizer_and_mixed_policy(tmp_path):
    x, _ = data()
    keras.utils.set_random_seed(9)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", dtype="mixed_float16"),
            keras.layers.Dense(3, dtype="mixed_float16"),
            keras.layers.Activation("linear", dtype="float32"),
        ]
    )
    fit(model, keras.optimizers.LossScaleOptimizer(po.Adam(0.01, weight_decay=0.01)), epochs=1)
    path = tmp_path / "mixed.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    assert type(loaded.optimizer.inner_optimizer) is po.Adam
    assert loaded.optimizer.inner_optimizer.get_config() == model.optimizer.inner_optimizer.get_config()
    exact_or_close(optimizer_values(loaded.optimizer), optimizer_values(model.optimizer), 0.0, "restored LSO state")
    for m in (model, loaded):
        fit(m, None, epochs=2, initial_epoch=1)
    exact_or_close(
        loaded.get_weights(), model.get_weights(), RESUME_TOL[AUTO_BACKEND], "mixed precision after reloading"
    )
    assert loaded.optimizer.inner_optimizer.last_backend == AUTO_BACKEND


# ---------------------------------------------------------------------------------------
# SavedModel export: served without pyopt.

LOAD_SAVEDMODELS = """
import json, sys
import numpy as np
import tensorflow as tf
x = np.load(sys.argv[1])
out = {}
for name, path in json.loads(sys.argv[2]).items():
    loaded = tf.saved_model.load(path)
    fn = loaded.serve if name == "export" else loaded.signatures["serving_default"]
    y = fn(tf.constant(x))
    out[name] = (y if name == "export" else next(iter(y.values()))).numpy().tolist()
print(json.dumps(dict(out, pyopt_imported=any(m.startswith("pyopt") for m in sys.modules))))
"""


def test_saved_model_export_serves_without_pyopt(tmp_path):
    x, _ = data()
    model = small_model(seed=10)
    fit(model, OPTIMIZERS["adam"]("auto"), epochs=1)
    want = model.predict(x, verbose=0)

    paths = {"export": tmp_path / "exported", "saved_model": tmp_path / "saved_model"}
    model.export(str(paths["export"]), format="tf_saved_model")
    serve = tf.function(
        lambda inputs: model(inputs, training=False), input_signature=[tf.TensorSpec((None, 6), tf.float32)]
    )
    tf.saved_model.save(model, str(paths["saved_model"]), signatures={"serving_default": serve})
    for path in paths.values():  # no pyopt op inside: serving needs only TensorFlow
        assert b"Pyopt" not in (path / "saved_model.pb").read_bytes()

    # In this process...
    exported = tf.saved_model.load(str(paths["export"]))  # kept alive: .serve uses its variables
    assert_close([exported.serve(tf.constant(x)).numpy()], [want], SAVEDMODEL_TOL, "model.export")
    # ...and in a fresh one that never imports pyopt (its op library is never loaded).
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SAVEDMODELS,
            str(tmp_path / "x.npy"),
            json.dumps({k: str(v) for k, v in paths.items()}),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served.pop("pyopt_imported") is False
    for name, y in served.items():
        assert_close([np.array(y, np.float32)], [want], SAVEDMODEL_TOL, name)


# ---------------------------------------------------------------------------------------
# tf.train.CheckpointManager mid-training.


def train_two_epochs_with_checkpoints(which, backend, directory):
    """2 epochs of model.fit, a CheckpointManager save after each; returns (model, optimizer, manager)."""
    model, optimizer = small_model(seed=11), OPTIMIZERS[which](backend)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, optimizer=optimizer), str(directory), max_to_keep=1
    )
    save_each_epoch = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: manager.save(epoch + 1))
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    x, y = data()
    model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0, callbacks=[save_each_epoch])
    assert manager.latest_checkpoint.endswith("-2") and len(manager.checkpoints) == 1
    return model, optimizer, manager


def uninterrupted(which, backend):
    """3 epochs of model.fit without stopping: (weights, optimizer variables)."""
    model, optimizer = small_model(seed=11), OPTIMIZERS[which](backend)
    return fit(model, optimizer, epochs=3), optimizer_values(optimizer)


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_checkpoint_manager_resume_equals_uninterrupted(which, backend, tmp_path):
    want, want_slots = uninterrupted(which, backend)

    # Interrupted after 2 epochs; fresh objects restore the latest checkpoint and run the third.
    _, optimizer, _ = train_two_epochs_with_checkpoints(which, backend, tmp_path)
    fresh_model, fresh_optimizer = small_model(seed=12), OPTIMIZERS[which](backend)
    fresh_optimizer.build(fresh_model.trainable_variables)
    fresh_manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=fresh_model, optimizer=fresh_optimizer), str(tmp_path), max_to_keep=1
    )
    fresh_manager.checkpoint.restore(fresh_manager.latest_checkpoint).assert_consumed()
    assert int(fresh_optimizer.iterations.numpy()) == 8
    exact_or_close(optimizer_values(fresh_optimizer), optimizer_values(optimizer), 0.0, "restored optimizer")
    got = fit(fresh_model, fresh_optimizer, epochs=3, initial_epoch=2)

    exact_or_close(got, want, RESUME_TOL[backend], f"{which} resumed vs uninterrupted")
    exact_or_close(optimizer_values(fresh_optimizer), want_slots, RESUME_TOL[backend], f"{which} slots")
    assert fresh_optimizer.last_backend == backend


def test_checkpoint_manager_resume_in_a_new_process_is_bit_for_bit(tmp_path):
    # A real interruption: the process that resumes is not the one that saved.
    needs_fused()
    want, want_slots = uninterrupted("adam", "fused")
    train_two_epochs_with_checkpoints("adam", "fused", tmp_path / "ckpt")
    script = Path(__file__).parent / "integration_workers" / "resume_checkpoint.py"
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ckpt"), "adam", "fused", str(tmp_path / "out.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = np.load(tmp_path / "out.npz")
    assert str(out["last_backend"]) == "fused"
    exact_or_close([out[f"w{i}"] for i in range(len(want))], want, 0.0, "resumed in a new process")
    exact_or_close([out[f"opt{i}"] for i in range(len(want_slots))], want_slots, 0.0, "slots, new process")
