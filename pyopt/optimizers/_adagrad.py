"""Adagrad as a drop-in for ``keras.optimizers.Adagrad``, on ``pyopt.ops.adagrad_multi``."""

from __future__ import annotations

import keras

from .. import _rules
from .._rules import ADAGRAD
from ._base import PyoptOptimizer, _Default

_LR = _Default(0.001)  # Keras's default, told apart from a learning_rate the caller gives


@keras.saving.register_keras_serializable(package="pyopt")
class Adagrad(PyoptOptimizer, keras.optimizers.Adagrad):
    """Adagrad, Keras 3's form, one fused call per step::

        acc = acc + g^2                            (acc starts at initial_accumulator_value)
        p = p - lr*wd*p - lr*g / sqrt(acc + epsilon)

    Same arguments, defaults, slots and results as ``keras.optimizers.Adagrad``
    (``initial_accumulator_value`` >= 0 and ``epsilon`` > 0 are checked; Keras checks
    neither), plus :class:`PyoptOptimizer`'s keywords (``lr``, ``backend``, ``lazy``,
    ``skip_nonfinite``). Other keyword arguments are Keras's.
    """

    def __init__(self, learning_rate=_LR, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, initial_accumulator_value=initial_accumulator_value, epsilon=epsilon, **kwargs)
        _rules.check(_rules.INITIAL_ACCUMULATOR, initial_accumulator_value)
        self._check_rule_arguments(epsilon=epsilon)

    def _rule(self):
        return ADAGRAD

    def _slot_lists(self, variables):
        return self._slots(variables, self._accumulators)
