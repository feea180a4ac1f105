"""Adamax as a drop-in for ``keras.optimizers.Adamax``, on ``pyopt.ops.adamax_multi``."""

from __future__ import annotations

import keras

from .._rules import ADAMAX
from ._base import PyoptOptimizer, _Default

_LR = _Default(0.001)  # Keras's default, told apart from a learning_rate the caller gives


@keras.saving.register_keras_serializable(package="pyopt")
class Adamax(PyoptOptimizer, keras.optimizers.Adamax):
    """Adamax, Keras 3's form, one fused call per step::

        t = iterations + 1
        m = m + (g - m)*(1 - beta_1)
        u = max(beta_2*u, |g|)
        p = p - lr*wd*p - lr/(1 - beta_1^t) * m / (u + epsilon)

    Same arguments, defaults, slots and results as ``keras.optimizers.Adamax`` (``beta_1`` in
    [0, 1), ``beta_2`` in [0, 1] and ``epsilon`` > 0 are checked; Keras checks none), plus
    :class:`PyoptOptimizer`'s keywords (``lr``, ``backend``, ``lazy``, ``skip_nonfinite``).
    Other keyword arguments are Keras's.
    """

    def __init__(self, learning_rate=_LR, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)
        self._check_rule_arguments(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)

    def _rule(self):
        return ADAMAX

    def _slot_lists(self, variables):
        return self._slots(variables, self._m, self._u)  # Keras's momentums m and norms u
