"""Nadam as a drop-in for ``keras.optimizers.Nadam``, on ``pyopt.ops.nadam_multi``."""

from __future__ import annotations

import keras
from keras import ops as keras_ops

from .._rules import NADAM
from ._base import PyoptOptimizer, _Default

_LR = _Default(0.001)  # Keras's default, told apart from a learning_rate the caller gives


@keras.saving.register_keras_serializable(package="pyopt")
class Nadam(PyoptOptimizer, keras.optimizers.Nadam):
    """Nadam, Keras 3's form, one fused call per step::

        t = iterations + 1
        u_t = beta_1*(1 - 0.5*0.96^t)
        u_product = u_product*u_t                  (Keras's running product, a variable)
        m = m + (g - m)*(1 - beta_1)
        v = v + (g^2 - v)*(1 - beta_2)
        m_hat = u_{t+1}*m/(1 - u_product*u_{t+1}) + (1 - u_t)*g/(1 - u_product)
        p = p - lr*wd*p - lr*m_hat / (sqrt(v/(1 - beta_2^t)) + epsilon)

    Same arguments, defaults, slots and results as ``keras.optimizers.Nadam`` (``beta_1``,
    ``beta_2`` in [0, 1) and ``epsilon`` > 0 are checked; Keras checks none), plus
    :class:`PyoptOptimizer`'s keywords (``lr``, ``backend``, ``lazy``, ``skip_nonfinite``).
    Other keyword arguments are Keras's. The running product is Keras's own variable,
    advanced as Keras advances it: the fused call takes the advanced value.
    """

    def __init__(self, learning_rate=_LR, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)
        self._check_rule_arguments(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)

    def _rule(self):
        return NADAM

    @property
    def u_product(self):
        """The running product u_1*...*u_t (Keras's variable), a hyperparameter of the update."""
        return self._u_product

    def _fused_update(self, grads, trainable_variables):
        # Keras's Nadam._backend_update_step: u_product *= u_t (in its dtype), then the update with
        # it. Written after the fused call, so that a step refused by its checks leaves it as it was.
        dtype = self._u_product.dtype
        advanced = (
            self._u_product
            * self.beta_1
            * (1.0 - 0.5 * keras_ops.power(0.96, keras_ops.cast(self.iterations + 1, dtype)))
        )
        super()._fused_update(grads, trainable_variables, u_product=advanced)
        self.assign(self._u_product, advanced)

    def _slot_lists(self, variables):
        return self._slots(variables, self._momentums, self._velocities)
