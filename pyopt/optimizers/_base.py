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
global_clipnorm, weight decay and the update run as ONE ``pyopt.ops`` step of the rule
(:mod:`pyopt._rules`), one fused op per (device, dtype) group of variables, or the same
maths as plain TF ops (``backend="tf"``, under XLA, or when the op library is missing).
The step's checks of the variables, slots and options run once per set of variables
(a :class:`pyopt.ops._api.Step` kept until they change); each call checks the gradients
and hyperparameters. ``clipvalue`` stays Keras's own pass; gradient accumulation and EMA
are Keras's, around the fused call.
``_clip_gradients`` and ``_apply_weight_decay`` are Keras's and do their work when called.
Under a strategy, Keras's step runs unchanged and ``update_step`` updates one variable
with the same ``pyopt.ops`` rule.
"""

from __future__ import annotations

from dataclasses import replace

import keras
import tensorflow as tf
from keras import ops as keras_ops

from .. import _rules
from .. import ops as pyopt_ops
from ..ops._api import Step
from ..ops._variables import tf_variable


class _Default(float):
    """A float default that can be told apart from the same value passed by the caller.

    Used for ``learning_rate`` so that ``lr=`` (its alias) can be refused when both are given,
    while the signature still reads ``learning_rate=0.001``.
    """


# Keras's base-class options, which pyopt checks where Keras does not: 0 (or None) is off.
_KERAS_OPTIONS = (
    replace(_rules.CLIPNORM, range=_rules.at_least(0)),
    replace(_rules.GLOBAL_CLIPNORM, range=_rules.at_least(0)),
    _rules.CLIPVALUE,
    _rules.WEIGHT_DECAY,
)


def _learning_rate(learning_rate, lr):
    """The learning rate from ``learning_rate`` or its alias ``lr``; a number as a float (Keras takes floats only)."""
    if lr is not None:
        if not isinstance(learning_rate, _Default):
            raise ValueError("pass the learning rate as learning_rate or as its alias lr, not both")
        learning_rate = lr
    return float(learning_rate) if _rules.is_number(learning_rate) else learning_rate


def _check_base_arguments(learning_rate, kwargs: dict) -> None:
    """Clear errors for base-optimizer numbers that Keras accepts and then ignores or fails on later."""
    if _rules.is_number(learning_rate):
        _rules.check(_rules.LR, learning_rate, name="learning_rate")
    for param in _KERAS_OPTIONS:
        if kwargs.get(param.name) is not None:
            _rules.check(param, kwargs[param.name])


def _dense(grad, dtype):
    """The gradient in the variable's dtype. IndexedSlices (Embedding gradients) stay sparse:
    pyopt.ops runs the fused sparse op (by default the step of the densified gradient, as Keras)."""
    if grad.dtype == dtype:
        return grad
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(tf.cast(grad.values, dtype), grad.indices, grad.dense_shape)
    return tf.cast(grad, dtype)


class _KeptStep:
    """The step of one list of variables, kept between steps: a plain object, in which Keras's
    attribute tracking finds no variables to add to the optimizer's."""

    __slots__ = ("variables", "built_from", "step")

    def __init__(self, variables: tuple, built_from: tuple, step: Step):
        self.variables, self.built_from, self.step = variables, built_from, step


def _next_step(iterations):
    """``iterations + 1`` as a tensor of its dtype (int64), by raw ops (a Keras variable's ``+``
    goes through Keras's op dispatch)."""
    var = tf_variable(iterations)
    read = tf.raw_ops.ReadVariableOp(resource=var.handle, dtype=var.dtype)
    return tf.raw_ops.AddV2(x=read, y=tf.constant(1, var.dtype))


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

    Subclasses name their rule and its inputs: ``_rule()`` (a row of :mod:`pyopt._rules`),
    ``_flags()``, ``_slot_lists(variables)`` (Keras's slot variables of ``variables``, one
    list per slot of the rule, None for an optional slot not kept) and
    ``_hyperparameters(learning_rate, step)`` (by name; by default ``lr``, ``step`` and the
    attributes named as the rule's other hyperparameters). ``_check_rule_arguments`` checks
    the constructor's numbers against the rule's ranges.
    """

    def __init__(self, learning_rate, *, lr=None, backend="auto", skip_nonfinite=False, lazy=False, **kwargs):
        learning_rate = _learning_rate(learning_rate, lr)
        super().__init__(learning_rate=learning_rate, **kwargs)  # Keras's checks, with its messages, first
        _check_base_arguments(learning_rate, kwargs)
        pyopt_ops.check_backend(backend)
        self._backend = backend
        self.skip_nonfinite = _rules.check_flag("skip_nonfinite", skip_nonfinite)
        self.lazy = _rules.check_flag("lazy", lazy)
        self.last_backend = None
        self._kept_step = None

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
                mean = [(g + acc) / steps for g, acc in zip(grads, acc_grads, strict=True)]
                self._fused_update(mean, trainable_variables)
                self._backend_reset_gradient_accumulators()

            keras_ops.cond(
                (self._iterations + 1) % steps == 0,
                update,
                lambda: self._backend_increment_gradient_accumulators(grads, acc_grads),
            )
        else:
            self._fused_update(grads, trainable_variables)
        if self.use_ema:
            self._update_model_variables_moving_average(self._trainable_variables)
            if self.ema_overwrite_frequency:
                keras_ops.cond(
                    (self.iterations + 1) % self.ema_overwrite_frequency == 0,
                    lambda: self._overwrite_model_variables_with_average_value(self._trainable_variables),
                    lambda: None,
                )

    def _clip_option(self, name: str):
        value = getattr(self, name)
        return value if value and value > 0 else None  # Keras: 0 / None mean "off"

    def _fused_update(self, grads, trainable_variables, **given):
        """clipnorm / global_clipnorm, ``p = p - lr*wd*p`` and the rule's update of every variable, one call.

        ``given``: hyperparameters the caller computed for this step (Nadam's advanced running product).
        """
        if self.clipvalue:
            grads = self._clip_gradients(grads)  # clip by value is Keras's own pass
        step = self._step(trainable_variables)
        # t = iterations + 1, iterations counting updates (calls // gradient_accumulation_steps)
        t = self.iterations + 1 if self.gradient_accumulation_steps else _next_step(self._iterations)
        self.last_backend = step(
            [_dense(g, v.dtype) for g, v in zip(grads, step.variables, strict=True)],
            {**self._hyperparameters(self.learning_rate, t), **given},
        )

    def _step(self, trainable_variables) -> Step:
        """The :class:`~pyopt.ops._api.Step` of these variables with the current rule and options,
        built (and checked) when either changed since the last step."""
        wd = self.weight_decay or 0.0
        built_from = (
            self._rule(),
            self._flags(),
            wd,
            self._clip_option("clipnorm"),
            self._clip_option("global_clipnorm"),
            self.skip_nonfinite,
            self.lazy,
        )
        kept = self._kept_step
        if (
            kept is not None
            and kept.built_from == built_from
            and len(kept.variables) == len(trainable_variables)
            and all(a is b for a, b in zip(kept.variables, trainable_variables, strict=True))
        ):
            return kept.step
        rule, flags, _, clipnorm, global_clipnorm, skip_nonfinite, lazy = built_from
        step = Step(
            rule,
            [tf_variable(v) for v in trainable_variables],
            self._slot_lists(trainable_variables),
            flags=flags,
            backend=self._backend,
            weight_decay=[wd if wd and self._use_weight_decay(v) else 0.0 for v in trainable_variables],
            clipnorm=clipnorm,
            global_clipnorm=global_clipnorm,
            skip_nonfinite=skip_nonfinite,
            lazy=lazy,
        )
        self._kept_step = _KeptStep(tuple(trainable_variables), built_from, step)
        return step

    def update_step(self, gradient, variable, learning_rate):
        """One variable (the ``tf.distribute`` path): Keras has already clipped and decayed.

        With ``skip_nonfinite`` a variable whose own gradient is not finite is left alone.
        """
        step = Step(
            self._rule(),
            [tf_variable(variable)],
            self._slot_lists([variable]),
            flags=self._flags(),
            backend=self._backend,
            skip_nonfinite=self.skip_nonfinite,
            lazy=self.lazy,
        )
        self.last_backend = step(
            [_dense(gradient, step.variables[0].dtype)], self._hyperparameters(learning_rate, self.iterations + 1)
        )

    def _rule(self) -> _rules.Rule:
        raise NotImplementedError

    def _flags(self) -> dict:
        return {}

    def _slot_lists(self, variables) -> list:
        raise NotImplementedError

    def _hyperparameters(self, learning_rate, step) -> dict:
        """The rule's hyperparameters by name: ``lr``, ``step``, the others from this optimizer's
        attributes of the same name."""
        given = dict(lr=learning_rate, step=step)
        return {p.name: given[p.name] if p.name in given else getattr(self, p.name) for p in self._rule().params}

    def _check_rule_arguments(self, **values) -> None:
        """Each of the rule's hyperparameters given (numbers Keras does not check), kept as a
        float attribute of the same name (what the update call reads)."""
        rule = self._rule()
        for name, value in values.items():
            setattr(self, name, _rules.check(rule.param(name), value))

    def _slots(self, variables, *slot_lists):
        """For each list of Keras slot variables, those of ``variables`` (as ``tf.Variable``), in order."""
        idx = [self._get_variable_index(v) for v in variables]
        return [[tf_variable(slots[i]) for i in idx] for slots in slot_lists]

    def get_config(self):
        config = super().get_config()
        config.update(backend=self._backend, skip_nonfinite=self.skip_nonfinite, lazy=self.lazy)
        return config
