"""What every pyopt Keras optimizer shares: argument checks, the backend choice, the one-call step.

A pyopt optimizer is the Keras 3 built-in it replaces (``class Adam(PyoptOptimizer,
keras.optimizers.Adam)``): constructor, ``build`` (slot variables, their names and order),
``get_config``, loss scaling, gradient accumulation, EMA, constraints and the iteration
counter all stay Keras's own. Only the update itself changes.

Keras's TF optimizer runs a step (``BaseOptimizer._backend_apply_gradients``) as separate
passes::

    grads = _clip_gradients(grads)            # clipnorm / global_clipnorm / clipvalue
    _apply_weight_decay(variables)            # p = p - lr*wd*p, one op per variable
    _backend_update_step(grads, variables)    # update_step(g, p) per variable

Outside ``tf.distribute`` strategies, :class:`PyoptOptimizer` overrides that step: clipnorm,
global_clipnorm, weight decay and the update run as ONE ``pyopt.ops.*_multi`` call, one
fused op per (device, dtype) group of variables, or the same maths as plain TF ops
(``backend="tf"``, under XLA, or when the op library is missing). ``clipvalue`` stays
Keras's own pass; gradient accumulation and EMA are Keras's, around the fused call.
``_clip_gradients`` and ``_apply_weight_decay`` are Keras's and do their work when called.
Under a strategy, Keras's step runs unchanged and ``update_step`` updates one variable
with the same ``pyopt.ops`` rule.
"""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf
from keras import ops as keras_ops

from .. import ops as pyopt_ops


class _Default(float):
    """A float default that can be told apart from the same value passed by the caller.

    Used for ``learning_rate`` so that ``lr=`` (its alias) can be refused when both are given,
    while the signature still reads ``learning_rate=0.001``.
    """


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_number(name: str, value, *, low: float = 0.0, high: float = math.inf, high_open: bool = False,
                 low_open: bool = False) -> float:
    """``float(value)`` if it is a real number in ``[low, high]`` (``(low``, ``high)`` when open), else a clear error."""
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}: {value!r}")
    value = float(value)
    above_low = low < value if low_open else low <= value
    if not (math.isfinite(value) and above_low and (value < high if high_open else value <= high)):
        if high == math.inf:
            bounds = f"{'>' if low_open else '>='} {low:g}"
        else:
            bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return value


def _learning_rate(learning_rate, lr):
    """The learning rate from ``learning_rate`` or its alias ``lr``; a number as a float (Keras takes floats only)."""
    if lr is not None:
        if not isinstance(learning_rate, _Default):
            raise ValueError("pass the learning rate as learning_rate or as its alias lr, not both")
        learning_rate = lr
    return float(learning_rate) if _is_number(learning_rate) else learning_rate


def _check_base_arguments(learning_rate, kwargs: dict) -> None:
    """Clear errors for base-optimizer numbers that Keras accepts and then ignores or fails on later."""
    if _is_number(learning_rate):
        check_number("learning_rate", learning_rate)
    for name in ("clipnorm", "global_clipnorm", "clipvalue", "weight_decay"):
        if kwargs.get(name) is not None:
            check_number(name, kwargs[name])


def tf_variable(variable):
    """The ``tf.Variable`` behind a Keras variable (what ``pyopt.ops`` and TF's ops update)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


def _dense(grad, dtype):
    """The gradient in the variable's dtype. IndexedSlices (Embedding gradients) stay sparse:
    pyopt.ops runs the fused sparse op (by default the step of the densified gradient, as Keras)."""
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(tf.cast(grad.values, dtype), grad.indices, grad.dense_shape)
    return tf.cast(grad, dtype)


class PyoptOptimizer(keras.optimizers.Optimizer):
    """Base of pyopt's Keras 3 optimizers: one ``pyopt.ops`` call per step.

    Args (on top of the Keras optimizer's own):
        lr: alias of ``learning_rate`` (give one of the two).
        backend: ``"auto"`` (fused ops where they can run, else pure TF), ``"fused"`` (the
            fused ops; an error if a step cannot use them) or ``"tf"`` (pure TF ops).
        lazy: for sparse gradients (``tf.IndexedSlices``, e.g. from ``Embedding``): if True
            only the rows present move (lazy Adam / lazy momentum; slots of other rows are
            untouched). The default gives the step of the densified gradient, as Keras.
        skip_nonfinite: if True, a step whose gradients hold NaN or Inf leaves the variables
            and slots untouched (Keras's iteration counter still counts it). The default
            lets NaN propagate, as Keras does.

    Attributes:
        backend: the requested backend.
        last_backend: the backend the most recent step ran on (``"fused"`` or ``"tf"``;
            None before the first step). In a ``tf.function`` it is set when the step is
            traced, i.e. it names the path that the compiled function runs.

    Where results can differ from the Keras built-in (beyond float32 rounding):
        - float16/bfloat16 variables are updated with float32 maths and rounded once (Keras
          computes in the 16-bit type). For float64 the fused path uses exact float64
          constants (Keras rounds ``1 - beta_1``, ``epsilon``... to float32 first).
        - ``tf.IndexedSlices`` gradients go to the fused sparse ops, which give the step of
          the densified gradient (``lazy=False``). For a row listed twice in one gradient,
          Adam's ``v`` gets the square of the summed row (the dense gradient's) where Keras's
          Adam sums the squared slices, and clipping uses the norm of the summed rows where
          Keras takes the raw slices'. Rows listed once agree.
        - Bad hyperparameters that Keras accepts (negative lr or clipnorm, beta outside
          [0, 1), ...) raise ValueError/TypeError. What Keras refuses (``momentum``
          outside [0, 1], a ``learning_rate`` that is no number, schedule or callable, two
          of ``clipnorm`` / ``global_clipnorm`` / ``clipvalue``, unknown arguments, ...)
          raises Keras's own error: Keras's constructor runs before pyopt's checks.

    Subclasses implement ``_apply_rule(variables, grads, learning_rate, **options)``: one
    ``pyopt.ops.*_multi`` call over ``tf.Variable`` lists, returning the backend that ran.
    """

    def __init__(self, learning_rate, *, lr=None, backend="auto", skip_nonfinite=False, lazy=False, **kwargs):
        learning_rate = _learning_rate(learning_rate, lr)
        super().__init__(learning_rate=learning_rate, **kwargs)  # Keras's checks, with its messages, first
        _check_base_arguments(learning_rate, kwargs)
        pyopt_ops.check_backend(backend)
        for name, flag in (("skip_nonfinite", skip_nonfinite), ("lazy", lazy)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        self._backend = backend
        self.skip_nonfinite = skip_nonfinite
        self.lazy = lazy
        self.last_backend = None

    @property
    def backend(self) -> str:
        """The requested backend: "auto", "fused" or "tf"."""
        return self._backend

    def _one_call_step(self) -> bool:
        """True when clipping, weight decay and the update run as one ``pyopt.ops`` call.

        That is everywhere except under a ``tf.distribute`` strategy, where Keras's
        per-variable ``distribution.extended.update`` path is kept.
        """
        return not tf.distribute.has_strategy() and self._distribution_strategy is tf.distribute.get_strategy()

    def _backend_apply_gradients(self, grads, trainable_variables):
        """Keras's step (accumulation, update, EMA) with its clip and weight-decay passes fused into the update.

        Same structure as ``BaseOptimizer._backend_apply_gradients``, whose separate
        ``_clip_gradients`` / ``_apply_weight_decay`` passes are left out: ``_fused_update``
        does both inside its one call. Under a strategy it is Keras's step as is.
        """
        if not self._one_call_step():
            return super()._backend_apply_gradients(grads, trainable_variables)
        steps = self.gradient_accumulation_steps
        if steps:
            # Every steps-th call updates with the mean of the accumulated gradients and this one.
            acc_grads = [self._accumulated_gradients[self._get_variable_index(v)] for v in trainable_variables]

            def update():
                self._fused_update([(g + acc) / steps for g, acc in zip(grads, acc_grads)], trainable_variables)
                self._backend_reset_gradient_accumulators()

            keras_ops.cond((self._iterations + 1) % steps == 0, update,
                           lambda: self._backend_increment_gradient_accumulators(grads, acc_grads))
        else:
            self._fused_update(grads, trainable_variables)
        if self.use_ema:
            self._update_model_variables_moving_average(self._trainable_variables)
            if self.ema_overwrite_frequency:
                keras_ops.cond((self.iterations + 1) % self.ema_overwrite_frequency == 0,
                               lambda: self._overwrite_model_variables_with_average_value(self._trainable_variables),
                               lambda: None)

    def _clip_option(self, name: str):
        value = getattr(self, name)
        return value if value and value > 0 else None  # Keras: 0 / None mean "off"

    def _fused_update(self, grads, trainable_variables):
        """clipnorm / global_clipnorm, ``p = p - lr*wd*p`` and the rule's update of every variable, one call."""
        if self.clipvalue:
            grads = self._clip_gradients(grads)  # clip by value is Keras's own pass
        variables = [tf_variable(v) for v in trainable_variables]
        wd = self.weight_decay or 0.0
        self.last_backend = self._apply_rule(
            variables,
            [_dense(g, v.dtype) for g, v in zip(grads, variables)],
            _lr_value(self.learning_rate),
            weight_decay=[wd if wd and self._use_weight_decay(v) else 0.0 for v in variables],
            clipnorm=self._clip_option("clipnorm"),
            global_clipnorm=self._clip_option("global_clipnorm"),
            skip_nonfinite=self.skip_nonfinite,
            lazy=self.lazy,
        )

    def update_step(self, gradient, variable, learning_rate):
        """One variable (the ``tf.distribute`` path): Keras has already clipped and decayed.

        With ``skip_nonfinite`` a variable whose own gradient is not finite is left alone.
        """
        variable = tf_variable(variable)
        self.last_backend = self._apply_rule([variable], [_dense(gradient, variable.dtype)], _lr_value(learning_rate),
                                             skip_nonfinite=self.skip_nonfinite, lazy=self.lazy)

    def _apply_rule(self, variables, grads, learning_rate, **options) -> str:
        raise NotImplementedError

    def _slots(self, variables, *slot_lists):
        """For each list of slot variables, the ``tf.Variable`` slots of ``variables``, in order."""
        idx = [self._get_variable_index(v) for v in variables]
        return [[tf_variable(slots[i]) for i in idx] for slots in slot_lists]

    def get_config(self):
        config = super().get_config()
        config.update(backend=self._backend, skip_nonfinite=self.skip_nonfinite, lazy=self.lazy)
        return config


def _lr_value(learning_rate):
    """A Python number as is, anything else (variable, schedule output) as a tensor."""
    return learning_rate if _is_number(learning_rate) else tf.convert_to_tensor(learning_rate)
