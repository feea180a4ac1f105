"""Lion as a drop-in for ``keras.optimizers.Lion``, on ``pyopt.ops.lion_multi``."""

from __future__ import annotations

import keras

from .._rules import LION
from ._base import PyoptOptimizer, _Default

_LR = _Default(0.001)  # Keras's default, told apart from a learning_rate the caller gives


@keras.saving.register_keras_serializable(package="pyopt")
class Lion(PyoptOptimizer, keras.optimizers.Lion):
    """Lion, Keras 3's form, one fused call per step::

        p = p - lr*wd*p - lr*sign(beta_1*m + (1 - beta_1)*g)
        m = beta_2*m + (1 - beta_2)*g

    Same arguments, defaults, slots and results as ``keras.optimizers.Lion`` (``beta_1`` in
    (0, 1] is Keras's check, with its message; ``beta_2`` in [0, 1] is checked too), plus
    :class:`PyoptOptimizer`'s keywords (``lr``, ``backend``, ``lazy``, ``skip_nonfinite``).
    Other keyword arguments are Keras's.
    """

    def __init__(self, learning_rate=_LR, beta_1=0.9, beta_2=0.99, **kwargs):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, **kwargs)
        self._check_rule_arguments(beta_1=beta_1, beta_2=beta_2)

    def _rule(self):
        return LION

    def _slot_lists(self, variables):
        return self._slots(variables, self._momentums)
