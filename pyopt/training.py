"""The chapter's training loop: MSE regression with a custom ``tf.GradientTape`` loop.

One step is exactly the chapter's::

    with tf.GradientTape() as tape:
        loss = mean((y - model(x))**2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

:func:`train` runs it full-batch or over minibatches and records the training and test MSE
every ``his_freq`` epochs; :func:`lr_experiments` repeats a run for several learning rates.
Any Keras 3 optimizer works, pyopt's or Keras' own; :func:`make_optimizer` builds one from a
short name (``gd``, ``sgd``, ``momentum``, ``adam``) and a backend (``auto``, ``fused``,
``tf`` for ``pyopt.optimizers``, or ``keras`` for the Keras built-in).
"""

from __future__ import annotations

import functools
import numbers
import sys
import time
import weakref
from collections.abc import Callable, Iterable

import numpy as np

from ._deps import missing

try:
    import keras
    import pandas as pd
    import tensorflow as tf
    from tqdm.auto import tqdm
except ImportError as exc:
    raise missing("pyopt.training", exc) from exc

from .data import Dataset

__all__ = [
    "OPTIMIZERS",
    "BACKENDS",
    "BackendUnavailable",
    "make_optimizer",
    "mse",
    "train_step",
    "test_step",
    "compiled_steps",
    "CompiledStep",
    "train",
    "lr_experiments",
    "histories_to_frame",
    "constant_baseline_mse",
    "dead_hidden_units",
]

# --- optimizers by name: the one place that maps names to implementations -----------------
# name -> (pyopt.optimizers class, Keras built-in factory). "gd" and "sgd" are the same rule
# (p -= lr*g); they differ in how the loop feeds it (full batch vs minibatches).
# Momentum's ``beta`` is Keras' SGD ``momentum``.
OPTIMIZERS: dict[str, tuple[str, Callable]] = {
    "gd": ("GradientDescent", lambda lr, clipnorm: keras.optimizers.SGD(lr, clipnorm=clipnorm)),
    "sgd": ("SGD", lambda lr, clipnorm: keras.optimizers.SGD(lr, clipnorm=clipnorm)),
    "momentum": (
        "Momentum",
        lambda lr, clipnorm, beta=0.9: keras.optimizers.SGD(lr, momentum=beta, clipnorm=clipnorm),
    ),
}
# The Keras optimizers pyopt.optimizers replaces under the same class name, by lower-case name.
for _class_name in ("Adam", "AdamW", "Adagrad", "RMSprop", "Adamax", "Nadam", "Lion"):
    OPTIMIZERS[_class_name.lower()] = (
        _class_name,
        lambda lr, clipnorm, _class_name=_class_name, **hyper: getattr(keras.optimizers, _class_name)(
            lr, clipnorm=clipnorm, **hyper
        ),
    )
del _class_name
BACKENDS = ("auto", "fused", "tf", "keras")


class BackendUnavailable(RuntimeError):
    """The requested optimizer implementation cannot be used here (not built or not installed)."""


def make_optimizer(name: str, lr: float, *, backend: str = "auto", clipnorm: float | None = None, **hyper):
    """A Keras 3 optimizer from a short name.

    Args:
        name: ``gd`` / ``sgd`` (``p -= lr*g``), ``momentum`` (``m = beta*m - lr*g; p += m``,
            ``beta=0.9``), or ``adam``, ``adamw``, ``adagrad``, ``rmsprop``, ``adamax``, ``nadam``,
            ``lion``: the Keras optimizer of that name, with its hyperparameters.
        lr: learning rate.
        backend: ``auto``, ``fused`` or ``tf`` for ``pyopt.optimizers`` with that backend, or
            ``keras`` for the Keras built-in.
        clipnorm: clip each gradient to this L2 norm, ``g *= c / max(||g||, c)``.
        **hyper: other hyperparameters of the rule (``beta`` for momentum, ``beta_1`` ... for adam).

    Raises:
        ValueError: unknown name or backend.
        BackendUnavailable: ``pyopt.optimizers`` or the requested backend is not available.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    class_name, keras_factory = OPTIMIZERS[name]
    if backend == "keras":
        return keras_factory(lr, clipnorm, **hyper)
    try:
        from . import optimizers as pyopt_optimizers

        cls = getattr(pyopt_optimizers, class_name)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(f"pyopt.optimizers.{class_name} is not available: {exc}") from exc
    if backend == "fused":
        from . import _loader

        reason = _loader.unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"the fused ops are unavailable: {reason}")
    return cls(lr=lr, clipnorm=clipnorm, backend=backend, **hyper)


# --- one step ------------------------------------------------------------------------------
def mse(y, pred):
    """Mean squared error ``mean((y - pred)**2)``; ``y`` and ``pred`` must have the same rank
    (a ``(n,)`` target against a ``(n, 1)`` output would broadcast to ``(n, n)``)."""
    y = tf.convert_to_tensor(y, dtype=pred.dtype)
    if y.shape.rank != pred.shape.rank:
        raise ValueError(
            f"targets of shape {tuple(y.shape)} do not match model outputs of shape {tuple(pred.shape)}; "
            "pass targets as columns (y.reshape(-1, 1))"
        )
    return tf.reduce_mean(tf.square(y - pred))


def train_step(model, optimizer, x, y):
    """One gradient step on the MSE of ``model(x)`` against ``y``; returns the loss before it."""
    with tf.GradientTape() as tape:
        loss = mse(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss


def test_step(model, x, y):
    """The MSE of ``model(x)`` against ``y``."""
    return mse(y, model(x, training=False))


test_step.__test__ = False  # not a pytest test, despite the name

# model -> optimizer -> (train, test) tf.functions. Weak on both sides, and the functions only
# hold weak references, so a cached pair never keeps a model or an optimizer alive.
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_steps(model, optimizer, x=None):
    """``(train_step, test_step)`` for this model and optimizer as ``tf.function`` s of ``(x, y)``.

    The same pair is returned for the same model and optimizer, so each is traced once (and at
    most once more for a second batch shape: ``reduce_retracing=True``). If ``x`` is given and
    the model or the optimizer is not built yet, they are built eagerly first, so that no
    variable is created inside a traced function.
    """
    if x is not None:
        if not model.built:
            model(x[:1])
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
    per_model = _COMPILED.setdefault(model, weakref.WeakKeyDictionary())
    if optimizer not in per_model:
        # partial objects, not closures: TF's "frequent retracing" warning counts traces per
        # code object, and would add up the first traces of every (model, optimizer) pair.
        refs = (weakref.ref(model), weakref.ref(optimizer))
        per_model[optimizer] = (
            tf.function(functools.partial(_train_step_by_ref, *refs), reduce_retracing=True),
            tf.function(functools.partial(_test_step_by_ref, refs[0]), reduce_retracing=True),
        )
    train_fn, test_fn = per_model[optimizer]
    return CompiledStep(train_fn, model, optimizer), CompiledStep(test_fn, model)


class CompiledStep:
    """A cached ``tf.function`` step, called as ``step(x, y)``, that keeps its model (and
    optimizer) alive for as long as it is held. ``function`` is the ``tf.function`` itself,
    the same object for every :func:`compiled_steps` call with the same model and optimizer."""

    def __init__(self, function, *owners):
        self.function = function
        self._owners = owners

    def __call__(self, x, y):
        return self.function(x, y)

    def tracing_count(self) -> int:
        """How many times the function has been traced (at most 2 for one input dtype)."""
        return self.function.experimental_get_tracing_count()


def _train_step_by_ref(model_ref, optimizer_ref, x, y):
    return train_step(model_ref(), optimizer_ref(), x, y)


def _test_step_by_ref(model_ref, x, y):
    return test_step(model_ref(), x, y)


# --- training loops ------------------------------------------------------------------------
def _as_xy(data, name: str, dtype):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"{name} must be a pair (x, y) of arrays or tensors")
    x, y = (np.asarray(a, dtype=dtype) for a in data)
    if y.ndim == 1:
        y = y.reshape(-1, 1)  # one target per row, as a column
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"{name} must be x of shape (n, features) and y of shape (n,) or (n, targets), "
            f"n >= 1, got {x.shape} and {y.shape}"
        )
    return x, y


def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def train(
    model,
    optimizer,
    train_data,
    test_data,
    epochs: int,
    batch_size: int | None = None,
    his_freq: int = 10,
    seed: int | None = None,
    progress: bool = False,
    jit: bool = True,
    description: str | None = None,
):
    """Train ``model`` on the MSE with ``optimizer``; the chapter's loop.

    Args:
        model: a Keras model (e.g. :class:`pyopt.models.MLP`), built here if it is not yet.
            Its initial weights are fixed by its own seed (``MLP(..., seed=s)``), or by
            ``keras.utils.set_random_seed`` before it is made (as :func:`lr_experiments` does).
        optimizer: any Keras 3 optimizer (``pyopt.optimizers`` or ``keras.optimizers``).
        train_data, test_data: ``(x, y)`` pairs of arrays or tensors; 1-D targets are taken
            as one column. Cast to ``model.compute_dtype`` (float32).
        epochs: number of passes over the training data.
        batch_size: ``None`` for full-batch gradient descent (one step per epoch), or the
            minibatch size (rows reshuffled every epoch, the last batch may be smaller).
        his_freq: record the losses every ``his_freq`` epochs (and at epochs 0 and ``epochs``).
        seed: ``keras.utils.set_random_seed(seed)`` first (randomness during training), and
            the seed of the minibatch shuffling.
        progress: show a tqdm progress bar on stderr.
        jit: run the steps as ``tf.function`` s (see :func:`compiled_steps`); else eagerly.
        description: label of the progress bar.

    Returns:
        ``(model, history)``: ``history`` is a DataFrame with columns ``epoch``,
        ``training_loss`` and ``testing_loss`` (MSE of the model on the whole training and
        test sets after that epoch; epoch 0 is before training). ``history.attrs`` holds
        ``steps`` (optimizer steps), ``seconds`` (wall time of the whole call) and
        ``ms_per_step`` (mean time of a step, the first epoch, which traces, left out when
        there is more than one).
    """
    _check_positive_int("epochs", epochs)
    _check_positive_int("his_freq", his_freq)
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    if seed is not None:
        _check_positive_int("seed", seed, minimum=0)
        keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    dtype = model.compute_dtype
    # NumPy in, tensors for whole sets: slicing NumPy minibatches is ~10x cheaper than eager TF.
    x_train, y_train = _as_xy(train_data, "train_data", dtype)
    if batch_size is not None:
        batches: Iterable = Dataset((x_train, y_train), batch_size=batch_size, shuffle=True, seed=seed)
    x_train, y_train = tf.constant(x_train), tf.constant(y_train)
    x_test, y_test = (tf.constant(a) for a in _as_xy(test_data, "test_data", dtype))
    if batch_size is None:
        batches = [(x_train, y_train)]
    if jit:
        step, evaluate = compiled_steps(model, optimizer, x_train)
    else:

        def step(x, y):
            return train_step(model, optimizer, x, y)

        def evaluate(x, y):
            return test_step(model, x, y)

    rows = []

    def record(epoch):
        rows.append((epoch, float(evaluate(x_train, y_train)), float(evaluate(x_test, y_test))))

    record(0)
    steps, step_seconds = 0, []
    bar = tqdm(range(1, epochs + 1), desc=description, disable=not progress, file=sys.stderr, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        for x, y in batches:
            # (a tf.function called with NumPy arrays is ~4x slower than converting first)
            loss = step(tf.convert_to_tensor(x), tf.convert_to_tensor(y))
            steps += 1
        loss.numpy()  # wait for the last step before reading the clock
        step_seconds.append((time.perf_counter() - t0, len(batches)))
        if epoch % his_freq == 0 or epoch == epochs:
            record(epoch)
            bar.set_postfix(test_mse=f"{rows[-1][2]:.4g}", refresh=False)
    bar.close()

    timed = step_seconds[1:] or step_seconds
    history = pd.DataFrame(rows, columns=["epoch", "training_loss", "testing_loss"])
    history.attrs.update(
        steps=steps,
        seconds=time.perf_counter() - start,
        ms_per_step=1e3 * sum(s for s, _ in timed) / max(1, sum(n for _, n in timed)),
    )
    return model, history


def lr_experiments(
    learning_rates: Iterable[float],
    optimizer_factory: Callable[[float], object],
    *,
    model_factory: Callable[[], object],
    train_data,
    test_data,
    epochs: int,
    batch_size: int | None = None,
    his_freq: int = 10,
    seed: int | None = None,
    progress: bool = False,
    jit: bool = True,
) -> dict:
    """Train a fresh model per learning rate: ``optimizer_factory(lr)``, ``model_factory()``.

    With ``seed`` set, every run starts from the same weights (the seed is set before the
    model is made) and sees the same minibatches. Returns ``{lr: history}`` in the order given
    (see :func:`train`; :func:`histories_to_frame` makes one long DataFrame of it).
    """
    histories = {}
    for lr in learning_rates:
        if seed is not None:
            keras.utils.set_random_seed(seed)
        _, histories[lr] = train(
            model_factory(),
            optimizer_factory(lr),
            train_data,
            test_data,
            epochs,
            batch_size=batch_size,
            his_freq=his_freq,
            seed=seed,
            progress=progress,
            jit=jit,
            description=f"lr={lr:g}",
        )
    return histories


def histories_to_frame(histories: dict, key: str = "lr") -> pd.DataFrame:
    """``{value: history}`` as one long DataFrame with a column ``key`` in front."""
    if not histories:
        return pd.DataFrame(columns=[key, "epoch", "training_loss", "testing_loss"])
    return pd.concat([h.assign(**{key: value}) for value, h in histories.items()], ignore_index=True)[
        [key, "epoch", "training_loss", "testing_loss"]
    ]


# --- diagnostics ---------------------------------------------------------------------------
def constant_baseline_mse(y_train, y_test) -> float:
    """The test MSE of the best constant predictor fitted on the training targets:
    ``mean((y_test - mean(y_train))**2)`` (in float64)."""
    y_train = np.asarray(y_train, dtype=np.float64)
    y_test = np.asarray(y_test, dtype=np.float64)
    return float(np.mean((y_test - y_train.mean()) ** 2))


def dead_hidden_units(model, x) -> int:
    """How many units of the model's last hidden layer output exactly 0 on every row of ``x``
    (a ReLU unit in that state gets no gradient and stays dead). Needs ``model.hidden_features``
    (as :class:`pyopt.models.MLP`)."""
    features = np.asarray(model.hidden_features(tf.convert_to_tensor(x, dtype=model.compute_dtype)))
    return int(np.sum(np.all(features == 0, axis=0)))
