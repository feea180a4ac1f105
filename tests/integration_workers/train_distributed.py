"""Trains a small model with pyopt optimizers under tf.distribute; started by the integration tests.

Run as a script (never imported by pytest), because the device setup must happen before
TensorFlow initialises its devices::

    python train_distributed.py mirrored OUT.npz      # 2 logical CPUs, MirroredStrategy
    python train_distributed.py multiworker OUT.npz   # one worker of MultiWorkerMirroredStrategy (TF_CONFIG)

For every optimizer in ``optimizers()`` and every run (``single``: ``model.fit`` without a
strategy, the reference; ``mirrored_fit``; ``multiworker_loop``: a custom training loop;
``multiworker_fit``), on the same data, seed and global batch, it writes to OUT.npz the
final weights ``<run>/<optimizer>/w<i>``, every replica's copy of them
``<run>/<optimizer>/replica<r>/w<i>``, and a JSON ``report`` per run and optimizer (backend
of the last step, iterations, slot and variable devices, how often the traced step called
``apply`` and ``ReplicaContext.all_reduce``, or the error that stopped the run).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import tensorflow as tf

EPOCHS = 2
GLOBAL_BATCH = 16
N_SAMPLES = 64
SEED = 0


def configure_devices(mode: str):
    """The strategy for ``mode``; must run before anything else touches TensorFlow devices."""
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    if mode == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise SystemExit(f"unknown mode {mode!r}")


def optimizers():
    """Fresh optimizers by name (created inside the caller's strategy scope)."""
    import pyopt.optimizers as po

    return {
        "adam": lambda: po.Adam(0.01, weight_decay=0.01),
        "nesterov": lambda: po.SGD(0.05, momentum=0.9, nesterov=True),
        "gradient_descent": lambda: po.GradientDescent(lr=0.05),
        # both optional slots (momentum buffer, mean gradient), each placed by its variable
        "rmsprop": lambda: po.RMSprop(0.01, momentum=0.5, centered=True),
    }


def dataset():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((N_SAMPLES, 6)).astype("float32")
    y = rng.standard_normal((N_SAMPLES, 3)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # Each global batch of 16 is split into two replica batches of 8 (the union is the global
    # batch, as in the single-device run); with 2 workers, worker w gets every other half.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def model():
    import keras

    keras.utils.set_random_seed(SEED)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)])


class AllReduceCounter:
    """Counts ``ReplicaContext.all_reduce`` calls (and the tensors they reduce) until ``restore()``."""

    def __init__(self):
        self.all_reduce_calls = 0
        self.all_reduced_tensors = 0
        self._original = tf.distribute.ReplicaContext.all_reduce
        counter = self

        def counting(context, reduce_op, value, options=None):
            counter.all_reduce_calls += 1
            counter.all_reduced_tensors += len(tf.nest.flatten(value))
            return counter._original(context, reduce_op, value, options)

        tf.distribute.ReplicaContext.all_reduce = counting

    def restore(self):
        tf.distribute.ReplicaContext.all_reduce = self._original


def components(variable) -> list:
    """The per-device ``tf.Variable`` copies of a (Keras) variable, one per local replica."""
    tf_var = getattr(variable, "value", variable)
    return list(getattr(tf_var, "values", [tf_var]))


def fit(net, strategy):
    """Keras's own loop."""
    net.fit(dataset(), epochs=EPOCHS, verbose=0, shuffle=False)


def custom_loop(net, strategy):
    """The tf.distribute custom training loop (loss averaged over the global batch)."""
    data = strategy.experimental_distribute_dataset(dataset())

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            per_example = tf.reduce_mean(tf.square(net(x, training=True) - y), axis=-1)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
        net.optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))

    step = tf.function(lambda x, y: strategy.run(replica_step, args=(x, y)))
    for _ in range(EPOCHS):
        for x, y in data:
            step(x, y)


def train(make_optimizer, strategy, loop):
    """Trains a fresh model with ``loop``; returns (weights, per-replica weights, report)."""
    with strategy.scope():
        net, optimizer = model(), make_optimizer()
        net.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    applies = []
    original_apply = optimizer.apply

    def counting_apply(*args, **kwargs):
        applies.append(1)
        return original_apply(*args, **kwargs)

    optimizer.apply = counting_apply
    counter = AllReduceCounter()
    try:
        loop(net, strategy)
    finally:
        counter.restore()
    replicas = {}
    for i, variable in enumerate(net.weights):
        replicas.update({f"replica{r}/w{i}": c.numpy() for r, c in enumerate(components(variable))})
    slots = [v for v in optimizer.variables if v.path.split("/")[-1] not in ("iteration", "learning_rate")]
    report = dict(
        last_backend=optimizer.last_backend,
        iterations=int(optimizer.iterations.numpy()),
        num_replicas=strategy.num_replicas_in_sync,
        slot_devices={s.path: [c.device for c in components(s)] for s in slots},
        variable_devices={v.path: [c.device for c in components(v)] for v in net.trainable_variables},
        optimizer_applies_traced=len(applies),
        all_reduce_calls_traced=counter.all_reduce_calls,
        all_reduced_tensors_traced=counter.all_reduced_tensors,
    )
    return {f"w{i}": w for i, w in enumerate(net.get_weights())}, replicas, report


def main(mode: str, out: str) -> None:
    strategy = configure_devices(mode)
    import keras  # after the device setup

    keras.config.disable_traceback_filtering()  # full tracebacks in the test's failure output
    runs = [("single", tf.distribute.get_strategy(), fit)]
    if mode == "mirrored":
        runs.append(("mirrored_fit", strategy, fit))
    else:
        # model.fit last: under 2 workers Keras 3.15 fails before its first step (see the test).
        runs += [("multiworker_loop", strategy, custom_loop), ("multiworker_fit", strategy, fit)]
    arrays, reports = {}, {}
    for run_name, run_strategy, loop in runs:
        for name, make in optimizers().items():
            key = f"{run_name}/{name}"
            try:
                weights, replicas, report = train(make, run_strategy, loop)
            except Exception as exc:  # recorded for the test, which decides what it means
                traceback.print_exc()
                message = str(exc) if len(str(exc)) < 600 else f"{str(exc)[:200]} ... {str(exc)[-400:]}"
                reports[key] = dict(error=f"{type(exc).__name__}: {message}")
                break
            arrays.update({f"{key}/{k}": v for k, v in {**weights, **replicas}.items()})
            reports[key] = report
    arrays["report"] = np.array(json.dumps(reports))
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
