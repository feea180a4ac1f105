"""Adam and AdamW as drop-ins for ``keras.optimizers.Adam`` / ``AdamW``, on ``pyopt.ops.adam_multi``."""

from __future__ import annotations

import keras

from .. import _rules
from .._rules import ADAM, ADAMW
from ._base import PyoptOptimizer, _Default

_LR = _Default(0.001)  # Keras's default, told apart from a learning_rate the caller gives


@keras.saving.register_keras_serializable(package="pyopt")
class Adam(PyoptOptimizer, keras.optimizers.Adam):
    """Adam, Keras 3's "epsilon hat" form, one fused call per step::

        t = iterations + 1
        alpha = lr*sqrt(1 - beta_2^t) / (1 - beta_1^t)
        m = m + (g - m)*(1 - beta_1)
        v = v + (g^2 - v)*(1 - beta_2)
        vhat = max(vhat, v)                       (amsgrad; used in place of v)
        p = p - lr*wd*p - alpha*m / (sqrt(v) + epsilon)

    Same arguments, defaults, slots and results as ``keras.optimizers.Adam`` (``beta_1``,
    ``beta_2`` in [0, 1), ``epsilon`` > 0 are checked; Keras accepts ``epsilon=0``, whose
    first step divides 0 by 0 where a gradient is 0), plus ``lr`` (alias of
    ``learning_rate``), ``backend`` and ``skip_nonfinite`` (see :class:`PyoptOptimizer`).
    All other keyword arguments (``weight_decay``, ``clipnorm``, ``global_clipnorm``,
    ``clipvalue``, ``use_ema``, ``loss_scale_factor``, ``gradient_accumulation_steps``, ...)
    are Keras's.
    """

    def __init__(
        self,
        learning_rate=_LR,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
        *,
        lr=None,
        backend="auto",
        skip_nonfinite=False,
        **kwargs,
    ):
        super().__init__(
            learning_rate,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            lr=lr,
            backend=backend,
            skip_nonfinite=skip_nonfinite,
            **kwargs,
        )
        # Keras checks none of these (the core divides by sqrt(v)+eps)
        self._check_rule_arguments(beta_1=beta_1, beta_2=beta_2, epsilon=epsilon)
        _rules.check_flag("amsgrad", amsgrad)

    def _rule(self):
        return ADAM

    def _slot_lists(self, variables):
        # Keras's m, v and (amsgrad) vhat: the table's slots, in its order
        ms, vs = self._slots(variables, self._momentums, self._velocities)
        return [ms, vs, self._slots(variables, self._velocity_hats)[0] if self.amsgrad else None]


@keras.saving.register_keras_serializable(package="pyopt")
class AdamW(Adam, keras.optimizers.AdamW):
    """AdamW: :class:`Adam` with decoupled weight decay, by default 0.004, as
    ``keras.optimizers.AdamW`` (same arguments in the same order; ``weight_decay=None`` is
    Keras's error)::

        p = p - lr*weight_decay*p - alpha*m / (sqrt(v) + epsilon)     (m, v, alpha: Adam's)

    The weight decay runs inside Adam's one fused call.
    """

    def __init__(
        self, learning_rate=_LR, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs)

    def _rule(self):
        return ADAMW
