"""RMSprop as a drop-in for ``keras.optimizers.RMSprop``, on ``pyopt.ops.rmsprop_multi``."""

from __future__ import annotations

import keras

from .. import _rules
from .._rules import RMSPROP
from ._base import PyoptOptimizer, _Default

_LR = _Default(0.001)  # Keras's default, told apart from a learning_rate the caller gives


@keras.saving.register_keras_serializable(package="pyopt")
class RMSprop(PyoptOptimizer, keras.optimizers.RMSprop):
    """RMSprop, Keras 3's form, one fused call per step::

        v = rho*v + (1 - rho)*g^2
        a = rho*a + (1 - rho)*g                    (centered; v - a^2 in place of v below)
        inc = lr*g / sqrt(v + epsilon)
        b = momentum*b + inc;  inc = b             (momentum > 0)
        p = p - lr*wd*p - inc

    Same arguments, defaults, slots and results as ``keras.optimizers.RMSprop`` (``rho`` and
    ``momentum`` in [0, 1] and ``epsilon`` > 0 are checked; Keras checks none), plus
    :class:`PyoptOptimizer`'s keywords (``lr``, ``backend``, ``lazy``, ``skip_nonfinite``).
    Other keyword arguments are Keras's.
    """

    def __init__(self, learning_rate=_LR, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, rho=rho, momentum=momentum, epsilon=epsilon, centered=centered, **kwargs)
        self._check_rule_arguments(rho=rho, momentum=momentum, epsilon=epsilon)
        _rules.check_flag("centered", centered)

    def _rule(self):
        return RMSPROP

    def _slot_lists(self, variables):
        # Keras keeps momentums only when momentum > 0, average gradients only when centered
        (velocities,) = self._slots(variables, self._velocities)
        momentums = self._slots(variables, self._momentums)[0] if self.momentum > 0 else None
        averages = self._slots(variables, self._average_gradients)[0] if self.centered else None
        return [velocities, momentums, averages]
